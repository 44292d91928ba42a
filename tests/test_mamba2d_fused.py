"""The Mamba2 mixer on the Triton path (interpreted) passes D and z to the fused SSD kernel and matches the
PyTorch reference path (separate D skip, gate inside the RMSNorm) in outputs and every gradient."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import rel_err

from earthcast.models.backbone import Mamba2Mixer2d
from earthcast.models.backbone import mamba2d as mamba2d_module

TINY = dict(d_state=4, headdim=8, expand=2, chunk_size=16)  # width 8 -> d_inner 16 -> 2 heads
TOL = 1e-5  # float32 on both paths, relative L2 error; observed: at most 2e-6


def _pair(scan: str, merge: str, ngroups: int) -> tuple[Mamba2Mixer2d, Mamba2Mixer2d]:
    """Two mixers with identical weights, D far from its init of 1 and a non-uniform norm weight."""
    tri = Mamba2Mixer2d(8, scan=scan, merge=merge, ngroups=ngroups, backend="triton", **TINY)
    with torch.no_grad():
        tri.D.copy_(torch.tensor([0.7, -1.3]))
        tri.norm_weight.uniform_(0.5, 1.5)
        tri.in_proj.weight.mul_(2.0)  # z of order 1, so silu(z) is far from linear and far from 0
    ref = Mamba2Mixer2d(8, scan=scan, merge=merge, ngroups=ngroups, backend="reference", **TINY)
    ref.load_state_dict(tri.state_dict())
    return tri, ref


def _recording_ssd_scan(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the mixer's ssd_scan with a wrapper that records its keyword arguments."""
    calls: list[dict] = []
    real = mamba2d_module.ssd_scan

    def recorder(*args: torch.Tensor, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(mamba2d_module, "ssd_scan", recorder)
    return calls


@pytest.mark.parametrize(
    ("scan", "merge", "ngroups"), [("bidirectional", "sum", 1), ("cross", "mean", 2), ("hilbert", "sum", 1)]
)
def test_triton_mixer_matches_reference(
    scan: str, merge: str, ngroups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = (3, 4)
    tri, ref = _pair(scan, merge, ngroups)
    calls = _recording_ssd_scan(monkeypatch)
    x = torch.randn(1, 12, 8)
    x_tri, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_tri, y_ref = tri(x_tri, grid), ref(x_ref, grid)

    # the Triton path hands D and z to the kernel; the reference path keeps its separate skip and gate
    assert calls[0]["backend"] == "triton" and calls[0]["D"] is not None and calls[0]["z"] is not None
    assert calls[1]["backend"] == "reference" and calls[1]["D"] is None and calls[1]["z"] is None
    assert tri.last_backends == {"ssd_scan": "triton", "gated_rms_norm": "triton"}

    assert rel_err(y_tri, y_ref) <= TOL
    w = torch.randn_like(y_ref)
    (y_tri * w).sum().backward()
    (y_ref * w).sum().backward()
    assert rel_err(x_tri.grad, x_ref.grad) <= TOL
    for (name, p_tri), p_ref in zip(tri.named_parameters(), ref.parameters()):
        assert p_tri.grad is not None and p_ref.grad is not None, name
        assert rel_err(p_tri.grad, p_ref.grad) <= TOL, name


def test_fused_scan_equals_separate_skip_and_gate() -> None:
    """scan_directions with z (the fused kernel epilogue) equals (scan without z + D x) * silu(z), per element."""
    grid = (3, 4)
    tri, _ = _pair("cross", "sum", 1)
    z, xs, B, C, dt = tri.project(torch.randn(1, 12, 8), grid)
    fused = tri.scan_directions(xs, dt, B, C, grid, z)
    separate = (tri.scan_directions(xs, dt, B, C, grid) + tri.D[:, None] * xs) * torch.nn.functional.silu(z)
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-6)

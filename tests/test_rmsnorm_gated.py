"""Gated RMSNorm: the reference against a float64 hand formula, the Triton kernels against the reference."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import poison_empty, rel_err

from earthcast.kernels import gated_rms_norm, gated_rms_norm_reference
from earthcast.kernels.rmsnorm_gated import gated_rms_norm_triton


@pytest.fixture(autouse=True)
def _nan_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    poison_empty(monkeypatch)


def _by_hand(x, w, z, eps, gs, norm_before_gate):
    """Row by row, group by group, in float64 with plain Python loops over the groups."""
    x, w = x.double(), w.double()
    silu = None if z is None else z.double() * torch.sigmoid(z.double())
    u = x * silu if (silu is not None and not norm_before_gate) else x.clone()
    out = torch.empty_like(u)
    for k in range(0, x.shape[-1], gs):
        seg = u[..., k : k + gs]
        out[..., k : k + gs] = seg / torch.sqrt((seg**2).sum(-1, keepdim=True) / gs + eps)
    out = out * w
    return out * silu if (silu is not None and norm_before_gate) else out


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("with_z", [True, False])
@pytest.mark.parametrize("group_size", [None, 6])
def test_reference_matches_hand_formula(norm_before_gate, with_z, group_size) -> None:
    x, z, w = torch.randn(2, 3, 18), torch.randn(2, 3, 18), torch.randn(18)
    z = z if with_z else None
    got = gated_rms_norm_reference(
        x, w, z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate
    )
    want = _by_hand(x, w, z, 1e-5, group_size or 18, norm_before_gate)
    assert rel_err(got, want) <= 1e-6


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("with_z", [True, False])
@pytest.mark.parametrize(("shape", "group_size"), [((3, 5, 24), 12), ((70, 40), None), ((130, 16), 4)])
def test_triton_matches_reference_fp32(norm_before_gate, with_z, shape, group_size) -> None:
    """Outputs and dx, dw, dz to 1e-5 relative; odd row counts and non-power-of-two groups exercise masks."""
    x = torch.randn(*shape, requires_grad=True)
    z = torch.randn(*shape, requires_grad=True) if with_z else None
    w = torch.randn(shape[-1], requires_grad=True)
    kw = dict(eps=1e-6, group_size=group_size, norm_before_gate=norm_before_gate)
    out = gated_rms_norm_triton(x, w, z, **kw)
    ref = gated_rms_norm_reference(x, w, z, **kw)
    assert rel_err(out, ref) <= 1e-5
    inputs = [x, w] + ([z] if with_z else [])
    go = torch.randn_like(ref)
    for g_t, g_r in zip(torch.autograd.grad(out, inputs, go), torch.autograd.grad(ref, inputs, go)):
        assert torch.isfinite(g_t).all()
        assert rel_err(g_t, g_r) <= 1e-5


@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_triton_fp64_gradcheck(norm_before_gate) -> None:
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, dtype=torch.float64, requires_grad=True)

    def fn(x, w, z):
        return gated_rms_norm_triton(x, w, z, eps=1e-5, group_size=4, norm_before_gate=norm_before_gate)

    assert torch.autograd.gradcheck(fn, (x, w, z), eps=1e-6, atol=1e-7)


def test_public_op_dispatches_to_triton_and_upcasts_bf16() -> None:
    x, z, w = torch.randn(4, 32), torch.randn(4, 32), torch.randn(32)
    with pytest.warns(UserWarning, match="upcast to float32"):
        out = gated_rms_norm(x.bfloat16(), w, z.bfloat16(), group_size=16, backend="triton")
    assert out.dtype == torch.bfloat16
    ref = gated_rms_norm_reference(x.bfloat16().float(), w, z.bfloat16().float(), group_size=16)
    assert rel_err(out.float(), ref) <= 1e-2


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_bad_group_size_and_weight_raise(backend) -> None:
    x = torch.randn(2, 12)
    with pytest.raises(ValueError, match="group_size 5 must be a positive divisor of the feature size 12"):
        gated_rms_norm(x, torch.ones(12), group_size=5, backend=backend)
    with pytest.raises(ValueError, match=r"weight has shape \(10,\), expected \(d,\)"):
        gated_rms_norm(x, torch.ones(10), backend=backend)
    with pytest.raises(ValueError, match="z has shape"):
        gated_rms_norm(x, torch.ones(12), torch.ones(2, 6), backend=backend)

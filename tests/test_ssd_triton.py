"""The Triton SSD kernels (interpreted on CPU) against the naive recurrence: outputs and every gradient.

Output buffers come from NaN-poisoned torch.empty/empty_like, so any element a kernel fails to write shows up.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from kernel_cases import decay_term_mass, grads_of, make_ssd_inputs, poison_empty, rel_err

from earthcast.kernels import ssd_chunked, ssd_naive, ssd_scan
from earthcast.kernels.ssd_triton import ssd_triton
from earthcast.kernels.ssd_triton_bwd import _chunk_bwd_kernel, _dstates_local_kernel
from earthcast.kernels.ssd_triton_fwd import _chunk_cumsum_kernel, _chunk_scan_kernel, _chunk_state_kernel


@pytest.fixture(autouse=True)
def _nan_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    poison_empty(monkeypatch)


CASES = [
    # (b, L, chunk, h, p, g, n, options, dt_limit)
    pytest.param(2, 70, 16, 4, 8, 2, 12, {}, (0.01, 2.0), id="ragged-5chunks-g2-all-options-clamped"),
    pytest.param(
        1,
        50,
        16,
        2,
        16,
        1,
        16,
        {"d_per_p": False, "with_z": False, "with_init": False, "with_bias": False},
        (0.0, math.inf),
        id="ragged-4chunks-Dh-bare",
    ),
    pytest.param(1, 40, 32, 3, 5, 3, 7, {"with_d": False}, (0.0, math.inf), id="odd-dims-g3-2chunks"),
]


@pytest.mark.parametrize(("b", "L", "chunk", "h", "p", "g", "n", "opts", "dt_limit"), CASES)
def test_triton_matches_recurrence(b, L, chunk, h, p, g, n, opts, dt_limit) -> None:
    inp = make_ssd_inputs(b, L, h, p, g, n, **opts)
    kw = {k: inp[k] for k in ("D", "z", "dt_bias", "initial_states")}
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    y_ref, f_ref = ssd_naive(*args, **kw, dt_limit=dt_limit, return_final_states=True)
    y, f = ssd_triton(*args, **kw, chunk_size=chunk, dt_limit=dt_limit, return_final_states=True)
    assert not torch.isnan(y).any() and not torch.isnan(f).any()
    assert rel_err(y, y_ref) <= 1e-5
    assert rel_err(f, f_ref) <= 1e-5
    w = (torch.randn_like(y_ref), torch.randn_like(f_ref))
    g_ref = grads_of((y_ref, f_ref), w, inp)
    g_tri = grads_of((y, f), w, inp)
    assert set(g_tri) == set(g_ref)
    for name, grad in g_ref.items():
        assert torch.isfinite(g_tri[name]).all(), name
        assert rel_err(g_tri[name], grad) <= 1e-5, name


PAPER_CASES = [
    # (b, L, chunk, h, p, g, n, options, dt_limit): the default chunk 64, chunk 128 and the paper sizes' d_state
    # 128 (models/tritoncast.py SIZES), with the other dims tiny so each case runs in a few seconds
    pytest.param(1, 100, 64, 2, 4, 1, 4, {}, (0.0, math.inf), id="chunk64-ragged-2chunks"),
    pytest.param(
        1, 200, 128, 2, 8, 2, 4, {"d_per_p": False}, (0.01, 2.0), id="chunk128-ragged-2chunks-g2-Dh-clamped"
    ),
    pytest.param(1, 130, 64, 2, 8, 2, 128, {}, (0.0, math.inf), id="dstate128-chunk64-ragged-3chunks-g2"),
    pytest.param(1, 160, 128, 1, 4, 1, 128, {"d_per_p": False}, (0.0, math.inf), id="dstate128-chunk128"),
]
# float32 kernels against the float64 recurrence: relative L2 error <= PAPER_TOL for y, the final state and the
# gradients of x, dt, B, C, D, z and the initial state. dA and ddt_bias sum one term per token and cancel heavily
# (|sum| / sum of |terms| is 0.04-0.4 for dA and down to 7e-4 for ddt_bias here), so their error per head is
# judged against the L1 mass of their terms: <= SUM_TOL of it. Observed: at most 3.1e-6 relative, 2.3e-5 of the
# mass (dA at chunk 128, which is ~30x the fp32 chunked reference's error there).
PAPER_TOL, SUM_TOL = 1e-5, 1e-4


@pytest.mark.parametrize(("b", "L", "chunk", "h", "p", "g", "n", "opts", "dt_limit"), PAPER_CASES)
def test_triton_paper_chunks_and_state_match_fp64_recurrence(b, L, chunk, h, p, g, n, opts, dt_limit) -> None:
    """Forward and backward with D and z at chunk 64 / 128 and d_state 128, against ``ssd_naive`` in float64."""
    inp = make_ssd_inputs(b, L, h, p, g, n, **opts)
    ref = {k: v.detach().double().requires_grad_() for k, v in inp.items() if v is not None}
    names, kw = ("x", "dt", "A", "B", "C"), ("D", "z", "dt_bias", "initial_states")
    y, f = ssd_triton(
        *[inp[k] for k in names], **{k: inp[k] for k in kw}, chunk_size=chunk, dt_limit=dt_limit,
        return_final_states=True,
    )  # fmt: skip
    y_ref, f_ref = ssd_naive(
        *[ref[k] for k in names], **{k: ref[k] for k in kw}, dt_limit=dt_limit, return_final_states=True
    )
    assert y.dtype == torch.float32 and torch.isfinite(y).all() and torch.isfinite(f).all()
    assert rel_err(y, y_ref) <= PAPER_TOL
    assert rel_err(f, f_ref) <= PAPER_TOL
    w = (torch.randn_like(y_ref), torch.randn_like(f_ref))
    g_tri, g_ref = grads_of((y, f), w, inp), grads_of((y_ref, f_ref), w, ref)
    assert set(g_tri) == set(g_ref) == set(ref)
    mass = {"A": decay_term_mass(inp, w, dt_limit), "dt_bias": g_ref["dt"].abs().sum((0, 1))}
    for name, grad in g_ref.items():
        assert torch.isfinite(g_tri[name]).all(), name
        if name in mass:
            assert ((g_tri[name] - grad).abs() / mass[name]).max() <= SUM_TOL, name
        else:
            assert rel_err(g_tri[name], grad) <= PAPER_TOL, name


def test_triton_fp64_gradcheck() -> None:
    """Finite differences through the interpreted kernels (float64, 2 chunks, g = 2, every input)."""
    inp = make_ssd_inputs(1, 20, 2, 4, 2, 4, dtype=torch.float64)
    names = [k for k, v in inp.items() if v is not None]

    def fn(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = dict(zip(names, tensors))
        return ssd_triton(
            t["x"],
            t["dt"],
            t["A"],
            t["B"],
            t["C"],
            chunk_size=16,
            D=t["D"],
            z=t["z"],
            dt_bias=t["dt_bias"],
            initial_states=t["initial_states"],
            return_final_states=True,
        )

    assert torch.autograd.gradcheck(fn, [inp[k] for k in names], eps=1e-6, atol=1e-6, fast_mode=True)


def test_ssd_scan_triton_path_without_final_state_matches_chunked() -> None:
    """Through the public API (output only, so the final-state gradient is absent) vs the chunked reference."""
    inp = make_ssd_inputs(1, 33, 2, 8, 1, 8, with_init=False)
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    kw = {k: inp[k] for k in ("D", "z", "dt_bias")}
    y = ssd_scan(*args, **kw, chunk_size=16, backend="triton")
    y_ref = ssd_chunked(*args, **kw, chunk_size=16)
    assert rel_err(y, y_ref) <= 1e-5
    w = torch.randn_like(y)
    g_tri, g_ref = grads_of((y,), (w,), inp), grads_of((y_ref,), (w,), inp)
    for name, grad in g_ref.items():
        assert rel_err(g_tri[name], grad) <= 1e-5, name


def test_half_precision_storage_in_kernels() -> None:
    """fp16 operands go straight into the kernels (as bf16 does on CUDA): fp32 accumulation, fp16 outputs/grads."""
    inp = make_ssd_inputs(1, 50, 2, 16, 1, 16, dtype=torch.float16)
    ref = {k: v.detach().double().requires_grad_() for k, v in inp.items()}
    names = ("x", "dt", "A", "B", "C")
    kw = ("D", "z", "dt_bias", "initial_states")
    y, f = ssd_triton(
        *[inp[k] for k in names], **{k: inp[k] for k in kw}, chunk_size=16, return_final_states=True
    )
    y_ref, f_ref = ssd_chunked(
        *[ref[k] for k in names], **{k: ref[k] for k in kw}, chunk_size=16, return_final_states=True
    )
    assert y.dtype == torch.float16 and f.dtype == torch.float32
    assert rel_err(y, y_ref) <= 2e-3 and rel_err(f, f_ref) <= 1e-5
    w = (torch.randn_like(y_ref), torch.randn_like(f_ref))
    g_tri, g_ref = grads_of((y, f), w, inp), grads_of((y_ref, f_ref), w, ref)
    for name, grad in g_ref.items():
        assert g_tri[name].dtype == torch.float16, name
        assert rel_err(g_tri[name], grad) <= 2e-3, name


def test_bf16_on_interpreter_is_upcast_with_warning() -> None:
    inp = make_ssd_inputs(1, 20, 2, 8, 1, 8, with_init=False, with_z=False)
    args = [inp[k].detach().bfloat16() for k in ("x", "dt", "A", "B", "C")]
    with pytest.warns(UserWarning, match="upcast to float32"):
        y = ssd_scan(*args, chunk_size=16, backend="triton")
    assert y.dtype == torch.bfloat16
    y_ref = ssd_chunked(*[a.float() for a in args], chunk_size=16)
    assert rel_err(y.float(), y_ref) <= 1e-2  # bf16 rounding of the output only


def test_float32_on_interpreter_does_not_warn() -> None:
    inp = make_ssd_inputs(1, 16, 2, 8, 1, 8, with_init=False, with_z=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ssd_scan(*[inp[k].detach() for k in ("x", "dt", "A", "B", "C")], chunk_size=16, backend="triton")


def test_poisoning_is_active() -> None:
    assert torch.isnan(torch.empty(4)).all() and torch.isnan(torch.empty_like(torch.zeros(2))).all()


def test_autotuners_have_one_config_while_interpreting() -> None:
    for kernel in (
        _chunk_cumsum_kernel,
        _chunk_state_kernel,
        _chunk_scan_kernel,
        _dstates_local_kernel,
        _chunk_bwd_kernel,
    ):
        assert len(kernel.configs) == 1

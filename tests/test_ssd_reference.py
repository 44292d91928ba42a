"""The PyTorch SSD references: the naive recurrence against hand values, and chunked SSD against the recurrence."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import grads_of, make_ssd_inputs, rel_err

from earthcast.kernels import ssd_chunked, ssd_naive
from earthcast.kernels.ssd_reference import decay_matrix_t, exp_floored, pass_states


def test_naive_recurrence_matches_hand_computation() -> None:
    """Two steps, one head, p = n = 1, softplus off: H1 = Δ1·x1·B1, H2 = e^{Δ2·A}·H1 + Δ2·x2·B2, y = H·C + D·x."""
    x = torch.tensor([2.0, -1.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    dt = torch.tensor([0.5, 0.25], dtype=torch.float64).reshape(1, 2, 1)
    A = torch.tensor([-2.0], dtype=torch.float64)
    B = torch.tensor([3.0, 4.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    C = torch.tensor([0.5, -2.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    D = torch.tensor([0.1], dtype=torch.float64)
    y, final = ssd_naive(x, dt, A, B, C, D=D, dt_softplus=False, return_final_states=True)
    h1 = 0.5 * 2.0 * 3.0
    h2 = math.exp(0.25 * -2.0) * h1 + 0.25 * -1.0 * 4.0
    expected = [h1 * 0.5 + 0.1 * 2.0, h2 * -2.0 + 0.1 * -1.0]
    assert y.flatten().tolist() == pytest.approx(expected, rel=1e-12)
    assert final.item() == pytest.approx(h2, rel=1e-12)


def test_decay_matrix_is_stable_and_exact() -> None:
    """out[s, t] = exp(Σ_{s<k≤t} a_k) (float64 sums), 1 for t < s, and no cancellation after large decays.

    Float32, with ten steps of −50 first: a difference of cumsums would carry an error of ~500·eps in the
    exponent of every later entry; summing each segment on its own keeps them at a few eps."""
    a = torch.cat([torch.full((2, 10), -50.0), -torch.rand(2, 30) * 0.1], dim=1)
    out = decay_matrix_t(a).double()
    a64 = a.double()
    for s in (0, 9, 10, 17, 39):
        for t in (0, 5, 10, 11, 25, 39):
            want = torch.exp(a64[:, s + 1 : t + 1].sum(-1)) if t >= s else torch.ones(2, dtype=torch.float64)
            torch.testing.assert_close(out[:, s, t], want, rtol=1e-6, atol=1e-37)  # atol: the floor


def test_exp_floored_stays_normal() -> None:
    """exp down to e·finfo.tiny, that floor (a normal float: no subnormals, no 0) below, zero gradient there."""
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([0.0, -1.0, -80.0, -86.0, -88.0, -200.0, -math.inf], requires_grad=True)
    out = exp_floored(x)
    assert out.tolist()[:4] == torch.exp(x[:4]).tolist()
    assert out[4:].tolist() == pytest.approx([math.e * tiny] * 3, rel=1e-5)
    assert bool((out >= tiny).all())
    out.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist()[4:] == [0.0] * 3


@pytest.mark.parametrize("nchunks", [1, 2, 3, 7, 13, 30])
@pytest.mark.parametrize("with_init", [True, False])
def test_state_passing_matches_a_loop(nchunks, with_init) -> None:
    """pass_states equals S̄_{c+1} = exp(a_c)·S̄_c + S_c stepped in float64."""
    states = torch.randn(2, nchunks, 3, 4, 5, dtype=torch.float64)
    decay = -torch.rand(2, nchunks, 3, dtype=torch.float64) * 3
    init = torch.randn(2, 3, 4, 5, dtype=torch.float64) if with_init else None
    entering, final = pass_states(states, decay, init)
    run = init.clone() if with_init else torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    for c in range(nchunks):
        torch.testing.assert_close(entering[:, c], run, rtol=1e-12, atol=1e-12)
        run = torch.exp(decay[:, c])[..., None, None] * run + states[:, c]
    torch.testing.assert_close(final, run, rtol=1e-12, atol=1e-12)


def test_references_ignore_autocast() -> None:
    """Under CPU bf16 autocast the references still compute in float32 (same result as without autocast)."""
    inp = make_ssd_inputs(1, 40, 2, 8, 1, 8, with_init=False)
    args = [inp[k].detach() for k in ("x", "dt", "A", "B", "C")]
    plain = ssd_chunked(*args, chunk_size=16), ssd_naive(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = ssd_chunked(*args, chunk_size=16), ssd_naive(*args)
    for a, b in zip(under, plain):
        assert a.dtype == torch.float32
        assert rel_err(a, b) <= 1e-6


CASES = [
    # (L, chunk, h, p, g, n, options)
    pytest.param(100, 32, 4, 8, 2, 6, {}, id="ragged-4chunks-g2-all-options"),
    pytest.param(96, 16, 2, 4, 1, 5, {"d_per_p": False, "with_z": False}, id="exact-6chunks-Dh-noz"),
    pytest.param(37, 8, 6, 3, 3, 4, {"with_init": False, "with_bias": False}, id="ragged-g3-noinit"),
    pytest.param(5, 64, 2, 4, 2, 3, {"with_d": False}, id="shorter-than-chunk"),
]


@pytest.mark.parametrize(("L", "chunk", "h", "p", "g", "n", "opts"), CASES)
@pytest.mark.parametrize("dt_limit", [(0.0, math.inf), (0.05, 1.0)], ids=["nolimit", "clamped"])
def test_chunked_matches_recurrence_fp32(L, chunk, h, p, g, n, opts, dt_limit) -> None:
    """Outputs, final state and every gradient agree to ≤1e-5 relative in float32."""
    inp = make_ssd_inputs(2, L, h, p, g, n, **opts)
    kw = {k: inp[k] for k in ("D", "z", "dt_bias", "initial_states")}
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    y_ref, f_ref = ssd_naive(*args, **kw, dt_limit=dt_limit, return_final_states=True)
    y, f = ssd_chunked(*args, **kw, chunk_size=chunk, dt_limit=dt_limit, return_final_states=True)
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) <= 1e-5
    assert rel_err(f, f_ref) <= 1e-5
    w = (torch.randn_like(y_ref), torch.randn_like(f_ref))
    g_ref = grads_of((y_ref, f_ref), w, inp)
    g_chk = grads_of((y, f), w, inp)
    for name, grad in g_ref.items():
        assert rel_err(g_chk[name], grad) <= 1e-5, name


def test_softplus_off_and_large_dt_pass_through() -> None:
    """dt_softplus=False uses dt as Δ; softplus(v) = v for v > 20 in both paths."""
    inp = make_ssd_inputs(1, 24, 2, 4, 1, 4, with_bias=False, with_init=False)
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    dt_pos = torch.rand(1, 24, 2) * 0.3
    y1 = ssd_naive(args[0], dt_pos, *args[2:], dt_softplus=False)
    y2 = ssd_chunked(args[0], dt_pos, *args[2:], chunk_size=8, dt_softplus=False)
    assert rel_err(y2, y1) <= 1e-5
    big = torch.full((1, 24, 2), 25.0)
    torch.testing.assert_close(
        ssd_naive(args[0], big, *args[2:]), ssd_naive(args[0], big, *args[2:], dt_softplus=False)
    )


def test_state_handoff_equals_one_long_scan() -> None:
    """Scanning [0, 40) then [40, 90) seeded with the first final state equals scanning [0, 90) at once."""
    inp = make_ssd_inputs(2, 90, 4, 4, 2, 6, with_z=False, with_init=False, with_d=False)
    x, dt, A, B, C = (inp[k].detach() for k in ("x", "dt", "A", "B", "C"))
    y_all, f_all = ssd_chunked(x, dt, A, B, C, chunk_size=16, return_final_states=True)
    y1, f1 = ssd_chunked(
        x[:, :40], dt[:, :40], A, B[:, :40], C[:, :40], chunk_size=16, return_final_states=True
    )
    y2, f2 = ssd_chunked(
        x[:, 40:],
        dt[:, 40:],
        A,
        B[:, 40:],
        C[:, 40:],
        chunk_size=16,
        initial_states=f1,
        return_final_states=True,
    )
    assert rel_err(torch.cat([y1, y2], dim=1), y_all) <= 1e-5
    assert rel_err(f2, f_all) <= 1e-5


def test_chunked_fp64_gradcheck() -> None:
    """Autograd of the chunked path is consistent with finite differences (float64, tiny shape, 3 chunks)."""
    inp = make_ssd_inputs(1, 11, 2, 2, 2, 3, dtype=torch.float64)
    names = [k for k, v in inp.items() if v is not None]

    def fn(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = dict(zip(names, tensors))
        return ssd_chunked(
            t["x"],
            t["dt"],
            t["A"],
            t["B"],
            t["C"],
            chunk_size=4,
            D=t["D"],
            z=t["z"],
            dt_bias=t["dt_bias"],
            initial_states=t["initial_states"],
            return_final_states=True,
        )

    assert torch.autograd.gradcheck(fn, [inp[k] for k in names], eps=1e-6, atol=1e-6)

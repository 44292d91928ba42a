"""Shared helpers for the kernel tests (and ``benchmarks/gpu_check.py``, hence no pytest import at run time):
random SSD operands, relative error, the L1 mass of the dA terms, NaN-poisoned allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from earthcast.kernels.ssd_reference import apply_skip_and_gate, prepare_dt

if TYPE_CHECKING:
    import pytest

SSD_INPUT_NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    denom = b.norm().item()
    return (a - b).norm().item() / denom if denom > 0 else (a - b).norm().item()


def make_ssd_inputs(
    b: int,
    L: int,
    h: int,
    p: int,
    g: int,
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    d_per_p: bool = True,
    with_z: bool = True,
    with_bias: bool = True,
    with_init: bool = True,
    with_d: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """SSD operands with Mamba2-like magnitudes (A in [−4, −0.5], raw dt around −1), all requiring grad."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    t: dict[str, torch.Tensor | None] = {
        "x": rnd(b, L, h, p),
        "dt": rnd(b, L, h) - 1.0,
        "A": -(0.5 + 3.5 * torch.rand(h, generator=gen, dtype=torch.float64)).to(dtype),
        "B": rnd(b, L, g, n),
        "C": rnd(b, L, g, n),
        "D": (rnd(h, p) if d_per_p else rnd(h)) if with_d else None,
        "z": rnd(b, L, h, p) if with_z else None,
        "dt_bias": 0.5 * rnd(h) if with_bias else None,
        "initial_states": rnd(b, h, p, n) if with_init else None,
    }
    for v in t.values():
        if v is not None:
            v.requires_grad_(True)
    return t


def grads_of(outputs: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor, ...], inputs: dict) -> dict:
    """Gradients of Σ_i ⟨outputs_i, weights_i⟩ w.r.t. every non-None input."""
    names = [k for k, v in inputs.items() if v is not None]
    loss = sum((o.double() * w.double()).sum() for o, w in zip(outputs, weights))
    gs = torch.autograd.grad(loss, [inputs[k] for k in names])
    return dict(zip(names, gs))


def decay_term_mass(
    inp: dict, weights: tuple[torch.Tensor, torch.Tensor], dt_limit: tuple[float, float]
) -> torch.Tensor:
    """Per-head L1 mass Σ_{b,t} |Δ_t · ∂ℓ/∂a_t| (h,) in float64 of the terms that dA sums, where a_t = A·Δ_t is
    the log decay and ℓ = ⟨y, weights[0]⟩ + ⟨final state, weights[1]⟩: the scale for dA's rounding error.

    A naive recurrence with the log decays a (b, L, h) as their own leaf; inputs as from ``make_ssd_inputs``."""
    t = {k: (v.detach().double() if v is not None else None) for k, v in inp.items()}
    x, A, B, C = t["x"], t["A"], t["B"], t["C"]
    b, length, h, p = x.shape
    delta = prepare_dt(t["dt"], t["dt_bias"], True, dt_limit, torch.float64)
    a = (A * delta).requires_grad_()
    Bh, Ch = (m.repeat_interleave(h // m.shape[2], dim=2) for m in (B, C))
    state = t["initial_states"] if t["initial_states"] is not None else x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for i in range(length):
        inject = (delta[:, i, :, None] * x[:, i])[..., None] * Bh[:, i, :, None, :]
        state = torch.exp(a[:, i])[..., None, None] * state + inject
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, i]))
    y = apply_skip_and_gate(torch.stack(ys, dim=1), x, t["D"], t["z"])
    loss = (y * weights[0].double()).sum() + (state * weights[1].double()).sum()
    (grad_a,) = torch.autograd.grad(loss, [a])
    return (delta * grad_a).abs().sum((0, 1))


def poison_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch.empty / torch.empty_like return NaN-filled floating tensors, so unwritten outputs show up."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan_fill(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(real_empty_like(*a, **k)))

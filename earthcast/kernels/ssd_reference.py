"""Pure-PyTorch SSD (Mamba2 state-space duality): the naive recurrence (oracle) and the chunked algorithm.

Shapes (b = batch, L = sequence length, h = heads, p = head dim, g = B/C groups with h % g == 0, n = state dim):

- ``x``: (b, L, h, p); ``dt``: (b, L, h) raw step sizes; ``A``: (h,) negative decay rates;
- ``B``, ``C``: (b, L, g, n); ``D``: (h,) or (h, p); ``z``: (b, L, h, p); ``dt_bias``: (h,);
- ``initial_states``: (b, h, p, n). Outputs ``y``: (b, L, h, p) in ``x.dtype`` and, on request, the final
  state (b, h, p, n) in the compute dtype (float32, or float64 for float64 inputs).

Recurrence per head: Δ_t = clamp(softplus(dt_t + dt_bias)), H_t = exp(Δ_t·A)·H_{t−1} + Δ_t·x_t·B_tᵀ,
y_t = H_t·C_t + D·x_t, then y ← y·silu(z) when ``z`` is given. All intermediates are float32 (or float64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise (half-precision inputs are accumulated in fp32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def prepare_dt(
    dt: Tensor,
    dt_bias: Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    dtype: torch.dtype,
) -> Tensor:
    """Δ = clamp(softplus(dt + dt_bias), *dt_limit) in ``dtype``; dt (b, L, h), dt_bias (h,)."""
    out = dt.to(dtype)
    if dt_bias is not None:
        out = out + dt_bias.to(dtype)
    if dt_softplus:
        out = F.softplus(out)  # passes x > 20 through, like the kernel
    lo, hi = dt_limit
    if lo > 0.0 or hi < math.inf:
        out = out.clamp(min=lo, max=hi)
    return out


def apply_skip_and_gate(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D·x, then y·silu(z); y, x, z (b, L, h, p) in the compute dtype, D (h,) or (h, p)."""
    if D is not None:
        d = D.to(y.dtype)
        y = y + x.to(y.dtype) * (d[:, None] if d.dim() == 1 else d)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def segsum(a: Tensor) -> Tensor:
    """Stable segment sum: out[..., i, j] = Σ_{k=j+1..i} a[..., k] for i ≥ j, −inf above the diagonal.

    Cumulates a masked, repeated copy of ``a`` instead of differencing one long cumsum, so no catastrophic
    cancellation. a (..., T) -> (..., T, T).
    """
    T = a.size(-1)
    rep = a[..., :, None].expand(*a.shape, T)  # rep[..., i, j] = a_i
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(rep.masked_fill(~strict, 0.0), dim=-2)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=0)
    return out.masked_fill(~causal, -math.inf)


def ssd_naive(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    *,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The oracle: the SSD recurrence stepped one token at a time (O(L) Python steps; differentiable)."""
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    ct = compute_dtype(x)
    delta = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, ct)  # (b, L, h)
    decay = torch.exp(delta * A.to(ct))  # (b, L, h)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, L, h, n)
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)
    xc = x.to(ct)
    if initial_states is None:
        state = torch.zeros(b, h, p, n, dtype=ct, device=x.device)
    else:
        state = initial_states.to(ct)
    ys = []
    for t in range(L):
        inject = (delta[:, t, :, None] * xc[:, t])[..., None] * Bh[:, t, :, None, :]  # (b, h, p, n)
        state = decay[:, t, :, None, None] * state + inject
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else xc.new_zeros(b, 0, h, p)
    y = apply_skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, state) if return_final_states else y


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    *,
    chunk_size: int = 64,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD (the four-step algorithm of the Mamba2 paper) with B/C groups; any L via zero padding.

    Padded steps get Δ = 0, so they neither decay nor inject into the state and the final state is exact.
    """
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, Q = h // g, chunk_size
    ct = compute_dtype(x)
    nc = max(1, -(-L // Q))
    pad = nc * Q - L
    delta = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
    xc, Bc, Cc = x.to(ct), B.to(ct), C.to(ct)
    if pad:
        delta = F.pad(delta, (0, 0, 0, pad))
        xc = F.pad(xc, (0, 0, 0, 0, 0, pad))
        Bc = F.pad(Bc, (0, 0, 0, 0, 0, pad))
        Cc = F.pad(Cc, (0, 0, 0, 0, 0, pad))
    xc = xc.reshape(b, nc, Q, g, r, p)
    Bc = Bc.reshape(b, nc, Q, g, n)
    Cc = Cc.reshape(b, nc, Q, g, n)
    delta = delta.reshape(b, nc, Q, g, r)
    xdt = xc * delta[..., None]  # (b, c, Q, g, r, p)
    dA = (delta * A.to(ct).reshape(g, r)).permute(0, 3, 4, 1, 2)  # (b, g, r, c, Q)
    cs = torch.cumsum(dA, dim=-1)

    # 1. intra-chunk (diagonal blocks): y_t += Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·Δ_s·x_s
    Lmask = torch.exp(segsum(dA))  # (b, g, r, c, Q, Q)
    y_diag = torch.einsum("bclgn,bcsgn,bgrcls,bcsgrp->bclgrp", Cc, Bc, Lmask, xdt)
    # 2. per-chunk states: S_c = Σ_s exp(cs_end − cs_s)·Δ_s·x_s·B_sᵀ
    decay_states = torch.exp(cs[..., -1:] - cs)
    states = torch.einsum("bcsgn,bgrcs,bcsgrp->bcgrpn", Bc, decay_states, xdt)
    # 3. state passing across chunks (the state entering each chunk, plus the final state)
    if initial_states is None:
        init = states.new_zeros(b, 1, g, r, p, n)
    else:
        init = initial_states.to(ct).reshape(b, 1, g, r, p, n)
    states = torch.cat([init, states], dim=1)  # (b, c+1, g, r, p, n)
    decay_chunk = torch.exp(segsum(F.pad(cs[..., -1], (1, 0))))  # (b, g, r, c+1, c+1)
    passed = torch.einsum("bgrzc,bcgrpn->bzgrpn", decay_chunk, states)
    states_in, final = passed[:, :-1], passed[:, -1]
    # 4. state -> output: y_t += exp(cs_t)·C_tᵀ·S̄_c
    y_off = torch.einsum("bclgn,bcgrpn,bgrcl->bclgrp", Cc, states_in, torch.exp(cs))
    y = (y_diag + y_off).reshape(b, nc * Q, h, p)[:, :L]
    y = apply_skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, final.reshape(b, h, p, n)) if return_final_states else y

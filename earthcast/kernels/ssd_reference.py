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
    """The oracle: the SSD recurrence stepped one token at a time (O(L) Python steps; differentiable).

    Autocast is disabled inside: the compute dtype is float32 (float64 for float64 inputs).
    """
    with torch.autocast(x.device.type, enabled=False):
        return _naive_scan(
            x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_states, return_final_states
        )


def _naive_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    initial_states: Tensor | None,
    return_final_states: bool,
) -> Tensor | tuple[Tensor, Tensor]:
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


def pass_states(states: Tensor, chunk_decay: Tensor, init: Tensor | None) -> tuple[Tensor, Tensor]:
    """Chunk-entry states S̄_c and the final state, from S̄_0 = init and S̄_{c+1} = exp(a_c)·S̄_c + S_c.

    states: (b, c, h, p, n) per-chunk states S_c; chunk_decay: (b, c, h) log decays a_c ≤ 0; init (b, h, p, n).
    Two levels, no Python loop: chunks are grouped in blocks of K ≈ (2c)^⅓; states pass within each block by
    one segsum-weighted sum, then between blocks by another: O(c·K + (c/K)²) instead of O(c²).
    Returns (S̄ (b, c, h, p, n), final (b, h, p, n)).
    """
    b, c, h, p, n = states.shape
    K = max(1, round((2 * c) ** (1 / 3)))
    m = -(-c // K)
    pad = m * K - c  # padded chunks have a = 0 and S = 0, so they pass the state through unchanged
    S = F.pad(states, (0, 0, 0, 0, 0, 0, 0, pad)).reshape(b, m, K, h, p, n)
    a = F.pad(chunk_decay, (0, 0, 0, pad)).reshape(b, m, K, h).permute(0, 3, 1, 2)  # (b, h, m, K)
    # within each block, from a zero entry state: local[:, j, k] = state entering chunk k of block j
    seg = torch.exp(segsum(F.pad(a, (1, 0))))[..., 1:]  # (b, h, m, K+1, K); the zero entry column dropped
    local = torch.einsum("bhmzk,bmkhpn->bmzhpn", seg, S)
    # between blocks: the state entering each block (and, last, the final state)
    block_in = torch.cat(
        [init[:, None] if init is not None else S.new_zeros(b, 1, h, p, n), local[:, :, K]], 1
    )
    entry = torch.einsum("bhzj,bjhpn->bzhpn", torch.exp(segsum(F.pad(a.sum(-1), (1, 0)))), block_in)
    within = torch.exp(torch.cumsum(a, -1) - a).permute(0, 2, 3, 1)  # (b, m, K, h): decay from block start
    states_in = local[:, :, :K] + within[..., None, None] * entry[:, :m, None]
    return states_in.reshape(b, m * K, h, p, n)[:, :c], entry[:, m]


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

    Works chunk-major, (b, c, g, r, Q, ·) with heads h = g·r, so every step is a batched matmul or an
    elementwise op. Padded steps get Δ = 0, so they neither decay nor inject and the final state is exact.
    Autocast is disabled inside: the compute dtype is float32 (float64 for float64 inputs).
    """
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, Q = h // g, chunk_size
    ct = compute_dtype(x)
    nc = max(1, -(-L // Q))
    pad = nc * Q - L
    with torch.autocast(x.device.type, enabled=False):
        delta = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
        delta = F.pad(delta, (0, 0, 0, pad)).reshape(b, nc, Q, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, Q)
        xc = F.pad(x.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, r, p).permute(0, 1, 3, 4, 2, 5)
        Bc = (
            F.pad(B.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, n).permute(0, 1, 3, 2, 4)
        )  # (b, c, g, Q, n)
        Cc = F.pad(C.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, n).permute(0, 1, 3, 2, 4)
        xdt = xc * delta[..., None]  # (b, c, g, r, Q, p)
        dA = delta * A.to(ct).reshape(g, r, 1)
        cs = torch.cumsum(dA, dim=-1)  # (b, c, g, r, Q)

        # 1. intra-chunk (diagonal blocks): y_t += Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·Δ_s·x_s
        cb = (Cc @ Bc.transpose(-1, -2))[:, :, :, None]  # (b, c, g, 1, Q, Q)
        y = (cb * torch.exp(segsum(dA))) @ xdt  # (b, c, g, r, Q, p)
        # 2. per-chunk states: S_c = Σ_s exp(cs_end − cs_s)·Δ_s·x_s·B_sᵀ -> (b, c, g, r, p, n)
        states = (xdt * torch.exp(cs[..., -1:] - cs)[..., None]).transpose(-1, -2) @ Bc[:, :, :, None]
        # 3. state passing across chunks (the state entering each chunk, plus the final state)
        init = initial_states.to(ct) if initial_states is not None else None
        states_in, final = pass_states(states.reshape(b, nc, h, p, n), cs[..., -1].reshape(b, nc, h), init)
        # 4. state -> output: y_t += exp(cs_t)·C_tᵀ·S̄_c
        c_s = Cc[:, :, :, None] @ states_in.reshape(b, nc, g, r, p, n).transpose(-1, -2)  # (b, c, g, r, Q, p)
        y = y + c_s * torch.exp(cs)[..., None]
        y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, nc * Q, h, p)[:, :L]
        y = apply_skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, final) if return_final_states else y

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


def exp_floor_log(dtype: torch.dtype) -> float:
    """log of the floor of :func:`exp_floored`: log(finfo.tiny) + 1, so the floor e·tiny (3.2e-38 in float32)
    is a normal float even after rounding (exp(log(tiny)) itself rounds to a subnormal)."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def exp_floored(x: Tensor) -> Tensor:
    """exp(x), floored at e·finfo.tiny (3.2e-38 in float32, 6.1e-308 in float64), differentiable.

    ATen's vectorised exp takes a scalar slow path, 10-30× slower, for every input whose result is subnormal
    or underflows to 0 (−inf included); clamping the input first keeps it on the fast path. The results
    differ from exp by less than 3.2e-38 (float32).
    """
    return x.clamp_min(exp_floor_log(x.dtype)).exp()


def decay_matrix_t(a: Tensor) -> Tensor:
    """Transposed decay matrix: out[..., s, t] = exp(Σ_{s<k≤t} a_k) for t ≥ s, and 1 for t < s (mask it).

    a (..., T) -> (..., T, T). Stable: each sum is a masked copy of ``a`` cumulated in order, never a difference
    of two long cumsums (no catastrophic cancellation); one (T, T) buffer, cumulated in place along the
    contiguous last dim; floored like :func:`exp_floored`. Not differentiable (see :class:`_IntraChunk`).
    """
    T = a.size(-1)
    later = torch.ones(T, T, dtype=torch.bool, device=a.device).triu(1)
    out = torch.where(later, a[..., None, :], 0.0).cumsum_(-1)  # out[..., s, t] = Σ_{s<k≤t} a_k
    return out.clamp_min_(exp_floor_log(out.dtype)).exp_()


def pass_states(states: Tensor, chunk_decay: Tensor, init: Tensor | None) -> tuple[Tensor, Tensor]:
    """Chunk-entry states S̄_c and the final state, from S̄_0 = init and S̄_{c+1} = exp(a_c)·S̄_c + S_c.

    states: (b, c, h, p, n) per-chunk states S_c; chunk_decay: (b, c, h) log decays a_c ≤ 0; init (b, h, p, n).
    Stepped chunk by chunk: O(c) work on (b, h, p, n) states. Returns (S̄ (b, c, h, p, n), final (b, h, p, n)).
    """
    run = init if init is not None else states.new_zeros(states[:, 0].shape)
    entering = []
    # unbind, not indexing: one backward node per tensor instead of a full-size zero gradient per chunk
    for decay, state in zip(exp_floored(chunk_decay)[..., None, None].unbind(1), states.unbind(1)):
        entering.append(run)
        run = decay * run + state
    return torch.stack(entering, 1), run


class _IntraChunk(torch.autograd.Function):
    """Diagonal blocks of chunked SSD, per head: y_t = Σ_{s≤t} (C_t·B_s)·exp(Σ_{s<k≤t} a_k)·v_s.

    cbt (..., 1, Q, Q) with cbt[s, t] = B_s·C_t for t ≥ s and 0 for t < s, shared by the r heads of a group;
    a (..., r, Q) log decays; v (..., r, Q, p). Returns y (..., r, Q, p). The backward is written out, so
    autograd keeps one (Q, Q) tensor per head (the decays) instead of a chain of masks, cumsums and flips.
    """

    @staticmethod
    def forward(ctx, cbt: Tensor, a: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        decay = decay_matrix_t(a)
        ctx.save_for_backward(cbt, decay, v)
        return (decay * cbt).mT @ v

    @staticmethod
    def backward(ctx, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        cbt, decay, v = ctx.saved_tensors
        weights = decay * cbt  # Wᵀ[s, t], the weight of v_s in y_t
        g_v = weights @ gy
        g_w = v @ gy.mT  # dL/dWᵀ[s, t]
        g_seg = weights.mul_(g_w)  # dL/d(Σ_{s<k≤t} a_k) at [s, t]; zero for t < s
        g_cbt = g_w.mul_(decay).sum(-3, keepdim=True)
        # d a_k = Σ_{s<k≤t} g_seg[s, t]: prefix sums over s, then row k − 1 right of the diagonal
        g_a = g_seg.cumsum_(-2).triu_(1).sum(-1)
        return g_cbt, F.pad(g_a[..., :-1], (1, 0)), g_v


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

    Works chunk-major with heads h = g·r. The heads of a group share B and C, so the chunk states and the
    state-to-output step are one matmul per (batch, chunk, group) with the r·p head channels stacked, and only
    the diagonal blocks (:class:`_IntraChunk`) are per head. Padded steps get Δ = 0, so they neither decay nor
    inject and the final state is exact. Autocast is disabled inside: the compute dtype is float32 (float64 for
    float64 inputs).
    """
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r, Q = h // g, chunk_size
    ct = compute_dtype(x)
    nc = max(1, -(-L // Q))
    pad = nc * Q - L
    with torch.autocast(x.device.type, enabled=False):
        delta = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, ct)
        delta = F.pad(delta, (0, 0, 0, pad)).reshape(b, nc, Q, g, r).transpose(2, 3)  # (b, c, g, Q, r)
        dA = (delta * A.to(ct).reshape(g, 1, r)).mT.contiguous()  # (b, c, g, r, Q)
        cs = torch.cumsum(dA, dim=-1)
        xc = F.pad(x.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, r, p).transpose(2, 3)  # (b,c,g,Q,r,p)
        Bc = F.pad(B.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, n).transpose(2, 3)  # (b, c, g, Q, n)
        Cc = F.pad(C.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, nc, Q, g, n).transpose(2, 3)

        # 1. intra-chunk (diagonal blocks): y_t += Σ_{s≤t} (C_t·B_s)·exp(cs_t − cs_s)·Δ_s·x_s
        xdt = (xc * delta[..., None]).transpose(3, 4)  # (b, c, g, r, Q, p)
        cbt = (Bc @ Cc.mT).triu_()[:, :, :, None]  # (b, c, g, 1, Q, Q): B_s·C_t at [s, t], 0 for t < s
        y = _IntraChunk.apply(cbt, dA, xdt)  # (b, c, g, r, Q, p)
        # 2. per-chunk states S_c = Σ_s exp(cs_end − cs_s)·Δ_s·x_s·B_sᵀ, the r heads stacked: (b, c, g, r·p, n)
        to_end = delta * exp_floored(cs[..., -1:] - cs).mT  # (b, c, g, Q, r)
        states = (xc * to_end[..., None]).reshape(b, nc, g, Q, r * p).mT @ Bc
        # 3. state passing across chunks (the state entering each chunk, plus the final state)
        init = initial_states.to(ct) if initial_states is not None else None
        states_in, final = pass_states(states.reshape(b, nc, h, p, n), cs[..., -1].reshape(b, nc, h), init)
        # 4. state -> output: y_t += exp(cs_t)·C_tᵀ·S̄_c, one (Q, n) @ (n, r·p) matmul per group
        c_s = (Cc @ states_in.reshape(b, nc, g, r * p, n).mT).reshape(b, nc, g, Q, r, p)
        y = c_s * exp_floored(cs).mT[..., None] + y.transpose(3, 4)  # (b, c, g, Q, r, p)
        y = y.transpose(2, 3).reshape(b, nc * Q, h, p)[:, :L]
        y = apply_skip_and_gate(y, x, D, z).to(x.dtype)
    return (y, final) if return_final_states else y

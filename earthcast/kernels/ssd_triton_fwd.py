"""Triton forward kernels of the chunked SSD (see ``ssd_reference`` for the maths and operand shapes).

Four launches, all accumulating in ACC (float32, or float64 for fp64 inputs):

1. ``_chunk_cumsum_kernel``: Δ = clamp(softplus(dt + bias)) and cs = per-chunk cumsum(Δ·A) -> (b, h, c, Q);
2. ``_chunk_state_kernel``: S_c = Σ_s exp(cs_end − cs_s)·Δ_s·x_s·B_sᵀ -> (b, c, h, p, n);
3. ``_state_passing_kernel``: S̄_c (the state entering chunk c; in place over S_c) and the final state;
4. ``_chunk_scan_kernel``: y = (CBᵀ ∘ decay)·(Δx) + exp(cs)·C·S̄ᵀ + D·x, then ·silu(z).

Every tensor the kernels touch is contiguous; offsets are computed from the shapes. Padded steps (t ≥ L)
load as zeros and get Δ = 0, so they neither decay nor inject.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from earthcast.kernels.dispatch import autotune_configs, device_context, dot_precision

Tensor = torch.Tensor

# One program holds whole tiles, so the only knobs are warps and stages (largest first for the interpreter).
TILE_CONFIGS = autotune_configs(
    [
        triton.Config({}, num_warps=8, num_stages=2),
        triton.Config({}, num_warps=4, num_stages=2),
        triton.Config({}, num_warps=4, num_stages=1),
    ]
)


def tl_acc(dtype: torch.dtype) -> tl.dtype:
    """The Triton accumulation dtype for a torch compute dtype."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def block(size: int) -> int:
    """Power-of-two tile extent >= 16 (the minimum tl.dot extent on GPUs) covering ``size``."""
    return max(16, triton.next_power_of_2(size))


@triton.jit
def softplus_tl(v):
    """log(1 + exp(v)) without libdevice (log1p via Goldberg's trick); passes v > 20 through like torch."""
    e = tl.exp(tl.minimum(v, 20.0))
    w = 1.0 + e
    exact = tl.where(w == 1.0, e, tl.log(w) * e / tl.where(w == 1.0, 1.0, w - 1.0))
    return tl.where(v > 20.0, v, exact)


@triton.jit
def load_rows(ptr, base, t_idx, mask_t, offs_c, mask_c, row_stride, ACC: tl.constexpr):
    """A (Q, cols) tile of a (…, L, …, cols) tensor: rows t_idx at ``row_stride``, columns contiguous."""
    offs = base + t_idx[:, None].to(tl.int64) * row_stride + offs_c[None, :]
    return tl.load(ptr + offs, mask=mask_t[:, None] & mask_c[None, :], other=0.0).to(ACC)


@triton.jit
def load_state(ptr, base, offs_p, mask_p, offs_n, mask_n, N, ACC: tl.constexpr):
    """A (P, N) state tile stored contiguously (p-major) at ``base``."""
    offs = base + offs_p[:, None] * N + offs_n[None, :]
    return tl.load(ptr + offs, mask=mask_p[:, None] & mask_n[None, :], other=0.0).to(ACC)


@triton.autotune(
    configs=autotune_configs([triton.Config({"BLOCK_H": 16}), triton.Config({"BLOCK_H": 4})]), key=["CHUNK"]
)
@triton.jit
def _chunk_cumsum_kernel(
    dt_ptr,
    A_ptr,
    bias_ptr,
    dt_out_ptr,
    cs_ptr,
    L,
    H,
    NC,
    dt_min,
    dt_max,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    CLAMP: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_b, pid_c, pid_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_t = tl.arange(0, CHUNK)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    t_idx = pid_c * CHUNK + offs_t
    mask_h = offs_h < H
    m = (t_idx < L)[:, None] & mask_h[None, :]
    dt = tl.load(dt_ptr + (pid_b.to(tl.int64) * L + t_idx[:, None]) * H + offs_h[None, :], mask=m, other=0.0)
    dt = dt.to(ACC)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_h, mask=mask_h, other=0.0).to(ACC)[None, :]
    if SOFTPLUS:
        dt = softplus_tl(dt)
    if CLAMP:
        dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    dt = tl.where(m, dt, 0.0)
    A = tl.load(A_ptr + offs_h, mask=mask_h, other=0.0).to(ACC)
    cs = tl.cumsum(dt * A[None, :], axis=0)
    out = ((pid_b * H + offs_h[None, :]).to(tl.int64) * NC + pid_c) * CHUNK + offs_t[:, None]
    om = (offs_t[:, None] < CHUNK) & mask_h[None, :]
    tl.store(dt_out_ptr + out, dt, mask=om)
    tl.store(cs_ptr + out, cs, mask=om)


@triton.autotune(configs=TILE_CONFIGS, key=["CHUNK", "BLOCK_P", "BLOCK_N"])
@triton.jit
def _chunk_state_kernel(
    x_ptr,
    B_ptr,
    dt_ptr,
    cs_ptr,
    states_ptr,
    L,
    H,
    G,
    P,
    N,
    NC,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    pid_bc, pid_h = tl.program_id(0), tl.program_id(1)
    pid_b, pid_c = pid_bc // NC, pid_bc % NC
    offs_t = tl.arange(0, CHUNK)
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < P, offs_n < N
    t_idx = pid_c * CHUNK + offs_t
    mask_t = t_idx < L
    x = load_rows(x_ptr, (pid_b.to(tl.int64) * L * H + pid_h) * P, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
    Bm = load_rows(
        B_ptr, (pid_b.to(tl.int64) * L * G + pid_h // (H // G)) * N, t_idx, mask_t, offs_n, mask_n, G * N, ACC
    )
    row = ((pid_b * H + pid_h).to(tl.int64) * NC + pid_c) * CHUNK
    dt = tl.load(dt_ptr + row + offs_t).to(ACC)
    cs = tl.load(cs_ptr + row + offs_t).to(ACC)
    cs_last = tl.load(cs_ptr + row + CHUNK - 1).to(ACC)
    scale = tl.exp(cs_last - cs) * dt
    states = tl.dot(tl.trans(x * scale[:, None]), Bm, input_precision=PREC)
    base = ((pid_b * NC + pid_c).to(tl.int64) * H + pid_h) * P * N
    tl.store(
        states_ptr + base + offs_p[:, None] * N + offs_n[None, :],
        states,
        mask=mask_p[:, None] & mask_n[None, :],
    )


@triton.jit
def _state_passing_kernel(
    states_ptr,
    init_ptr,
    final_ptr,
    cs_ptr,
    H,
    PN,
    NC,
    HAS_INIT: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """S̄_0 = init, S̄_{c+1} = exp(cs_end,c)·S̄_c + S_c; overwrites S_c with S̄_c, writes S̄_NC as final."""
    pid_b, pid_h, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs = pid_k * BLOCK + tl.arange(0, BLOCK)
    mask = offs < PN
    bh = (pid_b * H + pid_h).to(tl.int64)
    if HAS_INIT:
        running = tl.load(init_ptr + bh * PN + offs, mask=mask, other=0.0).to(ACC)
    else:
        running = tl.zeros([BLOCK], dtype=ACC)
    for c in range(NC):
        ptr = states_ptr + ((pid_b * NC + c).to(tl.int64) * H + pid_h) * PN + offs
        s = tl.load(ptr, mask=mask, other=0.0)
        tl.store(ptr, running, mask=mask)
        decay = tl.exp(tl.load(cs_ptr + (bh * NC + c) * CHUNK + CHUNK - 1).to(ACC))
        running = decay * running + s
    tl.store(final_ptr + bh * PN + offs, running, mask=mask)


@triton.autotune(configs=TILE_CONFIGS, key=["CHUNK", "BLOCK_P", "BLOCK_N", "HAS_D", "D_PER_P", "HAS_Z"])
@triton.jit
def _chunk_scan_kernel(
    x_ptr,
    B_ptr,
    C_ptr,
    dt_ptr,
    cs_ptr,
    states_ptr,
    D_ptr,
    z_ptr,
    y_ptr,
    L,
    H,
    G,
    P,
    N,
    NC,
    HAS_D: tl.constexpr,
    D_PER_P: tl.constexpr,
    HAS_Z: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    pid_bc, pid_h = tl.program_id(0), tl.program_id(1)
    pid_b, pid_c = pid_bc // NC, pid_bc % NC
    offs_t = tl.arange(0, CHUNK)
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < P, offs_n < N
    t_idx = pid_c * CHUNK + offs_t
    mask_t = t_idx < L
    xbase = (pid_b.to(tl.int64) * L * H + pid_h) * P
    bbase = (pid_b.to(tl.int64) * L * G + pid_h // (H // G)) * N
    x = load_rows(x_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
    Bm = load_rows(B_ptr, bbase, t_idx, mask_t, offs_n, mask_n, G * N, ACC)
    Cm = load_rows(C_ptr, bbase, t_idx, mask_t, offs_n, mask_n, G * N, ACC)
    row = ((pid_b * H + pid_h).to(tl.int64) * NC + pid_c) * CHUNK
    dt = tl.load(dt_ptr + row + offs_t).to(ACC)
    cs = tl.load(cs_ptr + row + offs_t).to(ACC)
    s_in = load_state(
        states_ptr,
        ((pid_b * NC + pid_c).to(tl.int64) * H + pid_h) * P * N,
        offs_p,
        mask_p,
        offs_n,
        mask_n,
        N,
        ACC,
    )
    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], -float("inf")))
    cb = tl.dot(Cm, tl.trans(Bm), input_precision=PREC)
    y = tl.dot(cb * decay * dt[None, :], x, input_precision=PREC)
    y += tl.exp(cs)[:, None] * tl.dot(Cm, tl.trans(s_in), input_precision=PREC)
    if HAS_D:
        if D_PER_P:
            y += x * tl.load(D_ptr + pid_h * P + offs_p, mask=mask_p, other=0.0).to(ACC)[None, :]
        else:
            y += x * tl.load(D_ptr + pid_h).to(ACC)
    if HAS_Z:
        z = load_rows(z_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
        y *= z * tl.sigmoid(z)
    offs = xbase + t_idx[:, None].to(tl.int64) * (H * P) + offs_p[None, :]
    tl.store(y_ptr + offs, y, mask=mask_t[:, None] & mask_p[None, :])


def chunk_cumsum(
    dt: Tensor,
    A: Tensor,
    dt_bias: Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    chunk: int,
    acc: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Δ and per-chunk cumsum(Δ·A), both (b, h, nchunks, chunk) in ``acc``."""
    b, L, h = dt.shape
    nc = triton.cdiv(L, chunk)
    dt_out = torch.empty(b, h, nc, chunk, device=dt.device, dtype=acc)
    cs = torch.empty_like(dt_out)
    lo, hi = dt_limit
    clamp = lo > 0.0 or hi < math.inf
    grid = lambda meta: (b, nc, triton.cdiv(h, meta["BLOCK_H"]))  # noqa: E731
    _chunk_cumsum_kernel[grid](
        dt,
        A,
        dt_bias if dt_bias is not None else A,
        dt_out,
        cs,
        L,
        h,
        nc,
        float(lo),
        float(min(hi, 3.0e38)),
        HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus,
        CLAMP=clamp,
        CHUNK=chunk,
        ACC=tl_acc(acc),
    )
    return dt_out, cs


def chunk_states_passed(
    x: Tensor, B: Tensor, dt_out: Tensor, cs: Tensor, init: Tensor | None, chunk: int
) -> tuple[Tensor, Tensor]:
    """The state entering every chunk, (b, nchunks, h, p, n), and the final state (b, h, p, n), in dt_out.dtype."""
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    nc = dt_out.shape[2]
    acc = dt_out.dtype
    states = torch.empty(b, nc, h, p, n, device=x.device, dtype=acc)
    _chunk_state_kernel[(b * nc, h)](
        x,
        B,
        dt_out,
        cs,
        states,
        L,
        h,
        g,
        p,
        n,
        nc,
        CHUNK=chunk,
        BLOCK_P=block(p),
        BLOCK_N=block(n),
        ACC=tl_acc(acc),
        PREC=dot_precision(x),
    )
    final = torch.empty(b, h, p, n, device=x.device, dtype=acc)
    blk = min(triton.next_power_of_2(p * n), 2048)
    _state_passing_kernel[(b, h, triton.cdiv(p * n, blk))](
        states,
        init if init is not None else final,
        final,
        cs,
        h,
        p * n,
        nc,
        HAS_INIT=init is not None,
        CHUNK=chunk,
        BLOCK=blk,
        ACC=tl_acc(acc),
    )
    return states, final


def ssd_forward(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    init: Tensor | None,
    chunk: int,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
) -> tuple[Tensor, Tensor]:
    """y (b, L, h, p) in x.dtype and the final state (b, h, p, n) in the accumulation dtype; contiguous inputs."""
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    with device_context(x):
        dt_out, cs = chunk_cumsum(dt, A, dt_bias, dt_softplus, dt_limit, chunk, acc)
        states, final = chunk_states_passed(x, B, dt_out, cs, init, chunk)
        nc = dt_out.shape[2]
        y = torch.empty_like(x)
        _chunk_scan_kernel[(b * nc, h)](
            x,
            B,
            C,
            dt_out,
            cs,
            states,
            D if D is not None else A,
            z if z is not None else x,
            y,
            L,
            h,
            g,
            p,
            n,
            nc,
            HAS_D=D is not None,
            D_PER_P=D is not None and D.dim() == 2,
            HAS_Z=z is not None,
            CHUNK=chunk,
            BLOCK_P=block(p),
            BLOCK_N=block(n),
            ACC=tl_acc(acc),
            PREC=dot_precision(x),
        )
    return y, final

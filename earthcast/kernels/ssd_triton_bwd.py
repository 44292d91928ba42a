"""Triton backward kernels of the chunked SSD.

The backward recomputes Δ, cs and the chunk-entry states S̄ with the forward kernels (cheap: three launches,
no (Q×Q) intermediates), then runs three kernels:

1. ``_dstates_local_kernel``: ∂ℓ/∂S̄_c from the state→output term, Σ_t exp(cs_t)·dy_t·C_tᵀ (dy = dout·silu(z));
2. ``_state_passing_bwd_kernel``: reverse scan over chunks giving ∂ℓ/∂S_c (in place), ∂ℓ/∂initial_states and
   the cs_end gradient of the passing step;
3. ``_chunk_bwd_kernel``: everything per (chunk, head) in one program: it recomputes C·Bᵀ, the decay mask and
   the pre-gate output, then writes dz, dx, dB, dC (per head), d(raw dt) through clamp and softplus, and
   per-chunk partial sums for dA and dD.

Group sums (dB, dC over the heads sharing a group) and the dA, dD and dt_bias reductions are torch sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from earthcast.kernels.dispatch import device_context, dot_precision
from earthcast.kernels.ssd_triton_fwd import (
    TILE_CONFIGS,
    block,
    chunk_cumsum,
    chunk_states_passed,
    load_rows,
    load_state,
    softplus_tl,
    tl_acc,
)

Tensor = torch.Tensor


@triton.autotune(configs=TILE_CONFIGS, key=["CHUNK", "BLOCK_P", "BLOCK_N", "HAS_Z"])
@triton.jit
def _dstates_local_kernel(
    dout_ptr,
    z_ptr,
    C_ptr,
    cs_ptr,
    dstates_ptr,
    L,
    H,
    G,
    P,
    N,
    NC,
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
    dy = load_rows(dout_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
    if HAS_Z:
        z = load_rows(z_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
        dy *= z * tl.sigmoid(z)
    bbase = (pid_b.to(tl.int64) * L * G + pid_h // (H // G)) * N
    Cm = load_rows(C_ptr, bbase, t_idx, mask_t, offs_n, mask_n, G * N, ACC)
    cs = tl.load(cs_ptr + ((pid_b * H + pid_h).to(tl.int64) * NC + pid_c) * CHUNK + offs_t).to(ACC)
    ds = tl.dot(tl.trans(dy * tl.exp(cs)[:, None]), Cm, input_precision=PREC)
    base = ((pid_b * NC + pid_c).to(tl.int64) * H + pid_h) * P * N
    tl.store(
        dstates_ptr + base + offs_p[:, None] * N + offs_n[None, :], ds, mask=mask_p[:, None] & mask_n[None, :]
    )


@triton.jit
def _state_passing_bwd_kernel(
    dstates_ptr,
    states_ptr,
    dfinal_ptr,
    dinit_ptr,
    cs_ptr,
    dcs_end_ptr,
    H,
    PN,
    NC,
    NBLK,
    HAS_DFINAL: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Reverse of S̄_{c+1} = exp(cs_end,c)·S̄_c + S_c. dstates holds ∂ℓ/∂S̄_c (local) on entry, ∂ℓ/∂S_c on exit."""
    pid_b, pid_h, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs = pid_k * BLOCK + tl.arange(0, BLOCK)
    mask = offs < PN
    bh = (pid_b * H + pid_h).to(tl.int64)
    if HAS_DFINAL:
        running = tl.load(dfinal_ptr + bh * PN + offs, mask=mask, other=0.0).to(ACC)
    else:
        running = tl.zeros([BLOCK], dtype=ACC)
    for i in range(NC):
        c = NC - 1 - i
        off = ((pid_b * NC + c).to(tl.int64) * H + pid_h) * PN + offs
        local = tl.load(dstates_ptr + off, mask=mask, other=0.0).to(ACC)
        s_in = tl.load(states_ptr + off, mask=mask, other=0.0).to(ACC)
        decay = tl.exp(tl.load(cs_ptr + (bh * NC + c) * CHUNK + CHUNK - 1).to(ACC))
        tl.store(dstates_ptr + off, running, mask=mask)
        tl.store(dcs_end_ptr + (bh * NC + c) * NBLK + pid_k, tl.sum(s_in * running, axis=0) * decay)
        running = local + decay * running
    tl.store(dinit_ptr + bh * PN + offs, running, mask=mask)


@triton.autotune(configs=TILE_CONFIGS, key=["CHUNK", "BLOCK_P", "BLOCK_N", "HAS_D", "D_PER_P", "HAS_Z"])
@triton.jit
def _chunk_bwd_kernel(
    x_ptr,
    B_ptr,
    C_ptr,
    dt_raw_ptr,
    bias_ptr,
    A_ptr,
    D_ptr,
    z_ptr,
    dout_ptr,
    dt_ptr,
    cs_ptr,
    states_ptr,
    dstates_ptr,
    dcs_end_ptr,
    dx_ptr,
    dz_ptr,
    dB_ptr,
    dC_ptr,
    ddt_ptr,
    dA_part_ptr,
    dD_part_ptr,
    L,
    H,
    G,
    P,
    N,
    NC,
    dt_min,
    dt_max,
    HAS_D: tl.constexpr,
    D_PER_P: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    CLAMP: tl.constexpr,
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
    hbase = (pid_b.to(tl.int64) * L * H + pid_h) * N  # dB, dC are written per head: (b, L, h, n)
    x = load_rows(x_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
    dout = load_rows(dout_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
    Bm = load_rows(B_ptr, bbase, t_idx, mask_t, offs_n, mask_n, G * N, ACC)
    Cm = load_rows(C_ptr, bbase, t_idx, mask_t, offs_n, mask_n, G * N, ACC)
    row = ((pid_b * H + pid_h).to(tl.int64) * NC + pid_c) * CHUNK
    dt = tl.load(dt_ptr + row + offs_t).to(ACC)
    cs = tl.load(cs_ptr + row + offs_t).to(ACC)
    cs_last = tl.load(cs_ptr + row + CHUNK - 1).to(ACC)
    sbase = ((pid_b * NC + pid_c).to(tl.int64) * H + pid_h) * P * N
    s_in = load_state(states_ptr, sbase, offs_p, mask_p, offs_n, mask_n, N, ACC)
    ds = load_state(dstates_ptr, sbase, offs_p, mask_p, offs_n, mask_n, N, ACC)
    if HAS_D:
        if D_PER_P:
            d_skip = tl.load(D_ptr + pid_h * P + offs_p, mask=mask_p, other=0.0).to(ACC)[None, :]
        else:
            d_skip = tl.load(D_ptr + pid_h).to(ACC)

    causal = offs_t[:, None] >= offs_t[None, :]
    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], -float("inf")))  # [t, s]
    kmat = tl.dot(Cm, tl.trans(Bm), input_precision=PREC) * decay  # (C_t·B_s)·exp(cs_t − cs_s)
    exp_cs = tl.exp(cs)
    c_s = tl.dot(Cm, tl.trans(s_in), input_precision=PREC)  # (Q, P): C_t·S̄ᵀ, before the exp(cs_t) factor
    xdt = x * dt[:, None]
    dy = dout
    if HAS_Z:
        z = load_rows(z_ptr, xbase, t_idx, mask_t, offs_p, mask_p, H * P, ACC)
        y_pre = tl.dot(kmat * dt[None, :], x, input_precision=PREC) + exp_cs[:, None] * c_s
        if HAS_D:
            y_pre += x * d_skip
        sig = tl.sigmoid(z)
        dz = dout * y_pre * sig * (1.0 + z * (1.0 - sig))
        tl.store(
            dz_ptr + xbase + t_idx[:, None].to(tl.int64) * (H * P) + offs_p[None, :],
            dz,
            mask=mask_t[:, None] & mask_p[None, :],
        )
        dy = dout * z * sig

    gmat = tl.dot(dy, tl.trans(xdt), input_precision=PREC)  # [t, s] = dy_t · Δ_s x_s
    w = gmat * kmat  # ∂ℓ/∂(cs_t − cs_s) of the intra-chunk term
    e_end = tl.exp(cs_last - cs)
    dC = tl.dot(gmat * decay, Bm, input_precision=PREC) + exp_cs[:, None] * tl.dot(
        dy, s_in, input_precision=PREC
    )
    dB = tl.dot(tl.trans(gmat * decay), Cm, input_precision=PREC) + e_end[:, None] * tl.dot(
        xdt, ds, input_precision=PREC
    )
    b_ds = tl.dot(Bm, tl.trans(ds), input_precision=PREC)  # (Q, P)
    dxdt = tl.dot(tl.trans(kmat), dy, input_precision=PREC) + e_end[:, None] * b_ds
    dx = dxdt * dt[:, None]
    if HAS_D:
        dx += dy * d_skip
        dd_base = (pid_b * NC + pid_c).to(tl.int64) * H + pid_h
        if D_PER_P:
            tl.store(dD_part_ptr + dd_base * P + offs_p, tl.sum(dy * x, axis=0), mask=mask_p)
        else:
            tl.store(dD_part_ptr + dd_base, tl.sum(tl.sum(dy * x, axis=1), axis=0))
    ddt = tl.sum(dxdt * x, axis=1)

    # gradient w.r.t. cs_t, then dA_k = Σ_{t ≥ k} dcs_t (reverse cumsum within the chunk)
    v = e_end * tl.sum(xdt * b_ds, axis=1)
    dcs = tl.sum(w, axis=1) - tl.sum(w, axis=0) + exp_cs * tl.sum(dy * c_s, axis=1) - v
    dcs_end = tl.sum(v, axis=0) + tl.load(dcs_end_ptr + (pid_b * H + pid_h).to(tl.int64) * NC + pid_c).to(ACC)
    dcs += tl.where(offs_t == CHUNK - 1, dcs_end, 0.0)
    ddA = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs
    A = tl.load(A_ptr + pid_h).to(ACC)
    ddt += ddA * A
    tl.store(dA_part_ptr + (pid_b * NC + pid_c).to(tl.int64) * H + pid_h, tl.sum(ddA * dt, axis=0))

    # back through Δ = clamp(softplus(dt_raw + bias))
    dt_off = (pid_b.to(tl.int64) * L + t_idx) * H + pid_h
    if SOFTPLUS or CLAMP:
        raw = tl.load(dt_raw_ptr + dt_off, mask=mask_t, other=0.0).to(ACC)
        if HAS_BIAS:
            raw += tl.load(bias_ptr + pid_h).to(ACC)
        pre = raw
        if SOFTPLUS:
            pre = softplus_tl(raw)
            ddt *= tl.where(raw > 20.0, 1.0, tl.sigmoid(raw))
        if CLAMP:
            ddt = tl.where((pre >= dt_min) & (pre <= dt_max), ddt, 0.0)
    tl.store(ddt_ptr + dt_off, ddt, mask=mask_t)
    pm = mask_t[:, None] & mask_p[None, :]
    tl.store(dx_ptr + xbase + t_idx[:, None].to(tl.int64) * (H * P) + offs_p[None, :], dx, mask=pm)
    nm = mask_t[:, None] & mask_n[None, :]
    noffs = hbase + t_idx[:, None].to(tl.int64) * (H * N) + offs_n[None, :]
    tl.store(dB_ptr + noffs, dB, mask=nm)
    tl.store(dC_ptr + noffs, dC, mask=nm)


def ssd_backward(
    dout: Tensor,
    dfinal: Tensor | None,
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
) -> tuple[Tensor, ...]:
    """Gradients (dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinit), None where the input is None; contiguous inputs."""
    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    lo, hi = dt_limit
    clamp = lo > 0.0 or hi < float("inf")
    kw = dict(CHUNK=chunk, BLOCK_P=block(p), BLOCK_N=block(n), ACC=tl_acc(acc))
    with device_context(x):
        dt_out, cs = chunk_cumsum(dt, A, dt_bias, dt_softplus, dt_limit, chunk, acc)
        states, _ = chunk_states_passed(x, B, dt_out, cs, init, chunk)
        nc = dt_out.shape[2]
        dstates = torch.empty(b, nc, h, p, n, device=x.device, dtype=acc)
        _dstates_local_kernel[(b * nc, h)](
            dout,
            z if z is not None else dout,
            C,
            cs,
            dstates,
            L,
            h,
            g,
            p,
            n,
            nc,
            HAS_Z=z is not None,
            PREC=dot_precision(x),
            **kw,
        )
        blk = min(triton.next_power_of_2(p * n), 2048)
        nblk = triton.cdiv(p * n, blk)
        dinit = torch.empty(b, h, p, n, device=x.device, dtype=acc)
        dcs_end = torch.empty(b, h, nc, nblk, device=x.device, dtype=acc)
        _state_passing_bwd_kernel[(b, h, nblk)](
            dstates,
            states,
            dfinal if dfinal is not None else dinit,
            dinit,
            cs,
            dcs_end,
            h,
            p * n,
            nc,
            nblk,
            HAS_DFINAL=dfinal is not None,
            CHUNK=chunk,
            BLOCK=blk,
            ACC=tl_acc(acc),
        )
        dcs_end = dcs_end.sum(-1).contiguous()
        dx = torch.empty_like(x)
        dz = torch.empty_like(z) if z is not None else None
        dB_h = torch.empty(b, L, h, n, device=x.device, dtype=acc)
        dC_h = torch.empty_like(dB_h)
        ddt = torch.empty(b, L, h, device=x.device, dtype=acc)
        dA_part = torch.empty(b, nc, h, device=x.device, dtype=acc)
        d_per_p = D is not None and D.dim() == 2
        dD_part = (
            torch.empty(b, nc, h, p if d_per_p else 1, device=x.device, dtype=acc) if D is not None else None
        )
        _chunk_bwd_kernel[(b * nc, h)](
            x,
            B,
            C,
            dt,
            dt_bias if dt_bias is not None else A,
            A,
            D if D is not None else A,
            z if z is not None else x,
            dout,
            dt_out,
            cs,
            states,
            dstates,
            dcs_end,
            dx,
            dz if dz is not None else dx,
            dB_h,
            dC_h,
            ddt,
            dA_part,
            dD_part if dD_part is not None else dA_part,
            L,
            h,
            g,
            p,
            n,
            nc,
            float(lo),
            float(min(hi, 3.0e38)),
            HAS_D=D is not None,
            D_PER_P=d_per_p,
            HAS_Z=z is not None,
            HAS_BIAS=dt_bias is not None,
            SOFTPLUS=dt_softplus,
            CLAMP=clamp,
            PREC=dot_precision(x),
            **kw,
        )
    r = h // g
    dB = dB_h.view(b, L, g, r, n).sum(3).to(B.dtype)
    dC = dC_h.view(b, L, g, r, n).sum(3).to(C.dtype)
    dA = dA_part.sum((0, 1)).to(A.dtype)
    dD = None
    if D is not None and dD_part is not None:
        dD = dD_part.sum((0, 1)).reshape(D.shape).to(D.dtype)
    ddt_bias = ddt.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
    dinit_out = dinit.to(init.dtype) if init is not None else None
    return dx, ddt.to(dt.dtype), dA, dB, dC, dD, dz, ddt_bias, dinit_out

"""Gated RMSNorm: PyTorch reference and fused Triton forward/backward kernels in an autograd.Function.

out = RMSNorm_group(x·silu(z))·w            (norm_before_gate=False, Mamba2's default)
out = RMSNorm_group(x)·w·silu(z)            (norm_before_gate=True)

RMSNorm_group normalises each contiguous group of ``group_size`` features of the last dim separately:
u / sqrt(mean(u², group) + eps). x, z: (..., d); weight: (d,). Statistics are float32 (float64 for fp64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from earthcast.kernels.dispatch import device_context

Tensor = torch.Tensor


def gated_rms_norm_reference(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    *,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """Differentiable PyTorch gated RMSNorm; returns (..., d) in ``x.dtype``."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    d = x.shape[-1]
    gs = d if group_size is None else group_size
    u = x.to(ct)
    gate = F.silu(z.to(ct)) if z is not None else None
    if gate is not None and not norm_before_gate:
        u = u * gate
    ug = u.reshape(*u.shape[:-1], d // gs, gs)
    rstd = torch.rsqrt(ug.pow(2).mean(dim=-1, keepdim=True) + eps)
    out = (ug * rstd).reshape(u.shape) * weight.to(ct)
    if gate is not None and norm_before_gate:
        out = out * gate
    return out.to(x.dtype)


@triton.jit
def _rmsnorm_gated_fwd_kernel(
    x_ptr,
    z_ptr,
    w_ptr,
    out_ptr,
    rstd_ptr,
    M,
    D,
    GS,
    NG,
    eps,
    HAS_Z: tl.constexpr,
    NORM_BEFORE_GATE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
):
    """One (BLOCK_M rows × one group) tile: out = RMSNorm(x·silu(z))·w or RMSNorm(x)·w·silu(z)."""
    pid_m, pid_g = tl.program_id(0), tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_g * GS + tl.arange(0, BLOCK_N)
    mask_c = tl.arange(0, BLOCK_N) < GS
    mask = (rows < M)[:, None] & mask_c[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_Z:
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
        gate = z * tl.sigmoid(z)
        if not NORM_BEFORE_GATE:
            u *= gate
    rstd = 1.0 / tl.sqrt(tl.sum(u * u, axis=1) / GS + eps)
    out = u * rstd[:, None] * tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(ACC)[None, :]
    if HAS_Z and NORM_BEFORE_GATE:
        out *= gate
    tl.store(out_ptr + offs, out, mask=mask)
    tl.store(rstd_ptr + rows.to(tl.int64) * NG + pid_g, rstd, mask=rows < M)


@triton.jit
def _rmsnorm_gated_bwd_kernel(
    x_ptr,
    z_ptr,
    w_ptr,
    rstd_ptr,
    dout_ptr,
    dx_ptr,
    dz_ptr,
    dw_part_ptr,
    M,
    D,
    GS,
    NG,
    HAS_Z: tl.constexpr,
    NORM_BEFORE_GATE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
):
    """dx, dz for one tile and this tile's partial dw (summed over its rows); recomputes the normalised input."""
    pid_m, pid_g = tl.program_id(0), tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_g * GS + tl.arange(0, BLOCK_N)
    mask_c = tl.arange(0, BLOCK_N) < GS
    mask = (rows < M)[:, None] & mask_c[None, :]
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    dout = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(ACC)
    w = tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(ACC)[None, :]
    rstd = tl.load(rstd_ptr + rows.to(tl.int64) * NG + pid_g, mask=rows < M, other=0.0).to(ACC)[:, None]
    u = x
    if HAS_Z:
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
        sig = tl.sigmoid(z)
        gate = z * sig
        dgate = sig * (1.0 + z * (1.0 - sig))
        if not NORM_BEFORE_GATE:
            u = x * gate
    xhat = u * rstd
    dxhat = dout * w
    if HAS_Z and NORM_BEFORE_GATE:
        tl.store(dz_ptr + offs, dout * xhat * w * dgate, mask=mask)
        dxhat *= gate
        dw = tl.sum(dout * xhat * gate, axis=0)
    else:
        dw = tl.sum(dout * xhat, axis=0)
    du = rstd * (dxhat - xhat * (tl.sum(dxhat * xhat, axis=1) / GS)[:, None])
    if HAS_Z and not NORM_BEFORE_GATE:
        tl.store(dz_ptr + offs, du * x * dgate, mask=mask)
        du *= gate
    tl.store(dx_ptr + offs, du, mask=mask)
    tl.store(dw_part_ptr + pid_m.to(tl.int64) * D + cols, dw, mask=mask_c)


def _tiles(m: int, group_size: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): a whole group per row, about 4096 elements per tile."""
    block_n = triton.next_power_of_2(group_size)
    return max(1, min(64, triton.next_power_of_2(max(1, m)), 4096 // block_n)), block_n


class GatedRMSNormFunction(torch.autograd.Function):
    """Fused gated RMSNorm on (M, d) rows; see the module docstring for the two gate placements."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        z: Tensor | None,
        eps: float,
        group_size: int,
        norm_before_gate: bool,
    ) -> Tensor:
        shape = x.shape
        d = shape[-1]
        x2 = x.reshape(-1, d).contiguous()
        z2 = z.reshape(-1, d).contiguous() if z is not None else None
        w = weight.contiguous()
        m, ng = x2.shape[0], d // group_size
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = torch.empty_like(x2)
        rstd = torch.empty(m, ng, device=x.device, dtype=acc)
        bm, bn = _tiles(m, group_size)
        with device_context(x):
            _rmsnorm_gated_fwd_kernel[(triton.cdiv(m, bm), ng)](
                x2,
                z2 if z2 is not None else x2,
                w,
                out,
                rstd,
                m,
                d,
                group_size,
                ng,
                eps,
                HAS_Z=z is not None,
                NORM_BEFORE_GATE=norm_before_gate,
                BLOCK_M=bm,
                BLOCK_N=bn,
                ACC=tl.float64 if acc == torch.float64 else tl.float32,
            )
        ctx.save_for_backward(x2, z2, w, rstd)
        ctx.config = (shape, group_size, norm_before_gate)
        return out.reshape(shape)

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        x2, z2, w, rstd = ctx.saved_tensors
        shape, group_size, norm_before_gate = ctx.config
        m, d = x2.shape
        dout2 = dout.reshape(m, d).contiguous()
        bm, bn = _tiles(m, group_size)
        nm = triton.cdiv(m, bm)
        dx = torch.empty_like(x2)
        dz = torch.empty_like(z2) if z2 is not None else None
        dw_part = torch.empty(nm, d, device=x2.device, dtype=rstd.dtype)
        with device_context(x2):
            _rmsnorm_gated_bwd_kernel[(nm, d // group_size)](
                x2,
                z2 if z2 is not None else x2,
                w,
                rstd,
                dout2,
                dx,
                dz if dz is not None else dx,
                dw_part,
                m,
                d,
                group_size,
                d // group_size,
                HAS_Z=z2 is not None,
                NORM_BEFORE_GATE=norm_before_gate,
                BLOCK_M=bm,
                BLOCK_N=bn,
                ACC=tl.float64 if rstd.dtype == torch.float64 else tl.float32,
            )
        dz_out = dz.reshape(shape) if dz is not None else None
        return dx.reshape(shape), dw_part.sum(0).to(w.dtype), dz_out, None, None, None


def gated_rms_norm_triton(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    *,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """Fused Triton gated RMSNorm; same contract as ``gated_rms_norm_reference`` (inputs validated upstream)."""
    gs = x.shape[-1] if group_size is None else group_size
    return GatedRMSNormFunction.apply(x, weight, z, eps, gs, norm_before_gate)

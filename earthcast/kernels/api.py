"""Public ops: ``ssd_scan`` (Mamba2 SSD) and ``gated_rms_norm``, each validating input and dispatching."""

from __future__ import annotations

import math
import warnings

import torch

from earthcast.kernels.dispatch import select_backend
from earthcast.kernels.rmsnorm_gated import gated_rms_norm_reference
from earthcast.kernels.ssd_reference import ssd_chunked
from earthcast.kernels.validate import (
    check_chunk_size,
    check_norm_inputs,
    check_ssd_inputs,
    check_triton_ssd_supported,
    norm_group_size,
)

Tensor = torch.Tensor
_HALF = (torch.bfloat16, torch.float16)


def _upcast_for_interpreter(op: str, tensors: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    """Half-precision tensors on the interpreted Triton path become float32 (bf16 tl.dot is broken there)."""
    halves = [k for k, t in tensors.items() if t is not None and t.dtype in _HALF]
    if not halves:
        return tensors
    warnings.warn(
        f"{op}: {', '.join(halves)} in half precision on the interpreted (CPU) Triton path are upcast to "
        "float32 because the Triton interpreter cannot do bf16 matmuls; pass float32 tensors, run on CUDA, "
        "or use backend='reference' to silence this",
        stacklevel=3,
    )
    return {k: (t.float() if t is not None and t.dtype in _HALF else t) for k, t in tensors.items()}


def ssd_scan(
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
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba2 SSD scan, causal along L.

    x (b, L, h, p); dt (b, L, h) raw (bias, softplus and clamp applied here); A (h,) negative; B, C (b, L, g, n)
    with h % g == 0; D (h,) or (h, p); z (b, L, h, p) gate (y·silu(z)); dt_bias (h,); initial_states (b, h, p, n).
    Returns y (b, L, h, p) in x.dtype [and the final state (b, h, p, n) in float32 / float64].
    ``backend``: None (automatic, see ``earthcast.kernels.dispatch``), "triton" or "reference".
    """
    check_ssd_inputs(x, dt, A, B, C, D, z, dt_bias, initial_states)
    check_chunk_size(chunk_size)
    kwargs = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=tuple(dt_limit))
    choice = select_backend(x, backend, op="ssd_scan")
    if choice == "reference":
        return ssd_chunked(
            x,
            dt,
            A,
            B,
            C,
            chunk_size=chunk_size,
            initial_states=initial_states,
            return_final_states=return_final_states,
            **kwargs,
        )
    from earthcast.kernels.ssd_triton import ssd_triton

    check_triton_ssd_supported(x.shape[-1], B.shape[-1], chunk_size)
    out_dtype = x.dtype
    t = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states)
    if not x.is_cuda:
        t = _upcast_for_interpreter("ssd_scan", t)
    y, final = ssd_triton(
        t["x"],
        t["dt"],
        t["A"],
        t["B"],
        t["C"],
        chunk_size=chunk_size,
        D=t["D"],
        z=t["z"],
        dt_bias=t["dt_bias"],
        dt_softplus=dt_softplus,
        dt_limit=tuple(dt_limit),
        initial_states=t["initial_states"],
        return_final_states=return_final_states,
    )
    y = y.to(out_dtype)
    return (y, final) if return_final_states else y


def gated_rms_norm(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    *,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = False,
    backend: str | None = None,
) -> Tensor:
    """Gated RMSNorm over groups of the last dim; x, z (..., d), weight (d,) -> (..., d) in x.dtype.

    norm_before_gate=False: RMSNorm(x·silu(z))·w (Mamba2); True: RMSNorm(x)·w·silu(z).
    """
    check_norm_inputs(x, weight, z)
    gs = norm_group_size(x.shape[-1], group_size)
    choice = select_backend(x, backend, op="gated_rms_norm")
    if choice == "reference":
        return gated_rms_norm_reference(
            x, weight, z, eps=eps, group_size=gs, norm_before_gate=norm_before_gate
        )
    from earthcast.kernels.rmsnorm_gated import gated_rms_norm_triton

    out_dtype = x.dtype
    t = dict(x=x, weight=weight, z=z)
    if not x.is_cuda:
        t = _upcast_for_interpreter("gated_rms_norm", t)
    out = gated_rms_norm_triton(
        t["x"], t["weight"], t["z"], eps=eps, group_size=gs, norm_before_gate=norm_before_gate
    )
    return out.to(out_dtype)

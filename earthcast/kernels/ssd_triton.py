"""The fused Triton SSD as a ``torch.autograd.Function`` (kernels in ``ssd_triton_fwd`` / ``ssd_triton_bwd``).

Forward: 4 launches (chunk cumsum, chunk states, state passing, chunk scan incl. D skip and z gate).
Backward: recomputes cumsum, chunk states and state passing (3 launches), then 3 backward launches; the
pre-gate output needed for dz is recomputed inside the backward chunk kernel, not stored.
Inputs are made contiguous; shapes as in ``earthcast.kernels.ssd_reference``. Callers go through
``earthcast.kernels.ssd_scan``, which validates the shapes and the supported kernel sizes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from earthcast.kernels.ssd_triton_bwd import ssd_backward
from earthcast.kernels.ssd_triton_fwd import ssd_forward

Tensor = torch.Tensor


def _c(t: Tensor | None) -> Tensor | None:
    return t.contiguous() if t is not None else None


class SSDTritonFunction(torch.autograd.Function):
    """y, final_state = SSD(x, dt, A, B, C, D, z, dt_bias, initial_states)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        dt_bias: Tensor | None,
        initial_states: Tensor | None,
        chunk_size: int,
        dt_softplus: bool,
        dt_limit: tuple[float, float],
    ) -> tuple[Tensor, Tensor]:
        args = [_c(t) for t in (x, dt, A, B, C, D, z, dt_bias, initial_states)]
        y, final = ssd_forward(*args, chunk_size, dt_softplus, dt_limit)
        ctx.save_for_backward(*args)
        ctx.config = (chunk_size, dt_softplus, dt_limit)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, dfinal: Tensor | None) -> tuple[Tensor | None, ...]:
        x, dt, A, B, C, D, z, dt_bias, init = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        grads = ssd_backward(dy, _c(dfinal), x, dt, A, B, C, D, z, dt_bias, init, *ctx.config)
        return (*grads, None, None, None)


def ssd_triton(
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
) -> tuple[Tensor, Tensor | None]:
    """(y, final_state or None) from the Triton kernels; see ``earthcast.kernels.ssd_scan`` for the contract."""
    y, final = SSDTritonFunction.apply(
        x, dt, A, B, C, D, z, dt_bias, initial_states, chunk_size, dt_softplus, tuple(dt_limit)
    )
    return y, (final if return_final_states else None)

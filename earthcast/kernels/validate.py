"""Input checks for the SSD and gated-RMSNorm ops: each error names the problem and the fix."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# Triton SSD limits: the head dim p and state dim n are padded to a power of two >= 16 inside the kernels,
# and one program holds whole (chunk x p), (chunk x n) and (chunk x chunk) tiles, hence the upper bounds.
TRITON_MAX_HEADDIM = 128
TRITON_MAX_DSTATE = 128
TRITON_CHUNK_SIZES = (16, 32, 64, 128)
TRITON_MAX_NORM_GROUP = 16384


def _shape_error(name: str, got: tuple[int, ...], want: str) -> ValueError:
    return ValueError(f"ssd_scan: {name} has shape {tuple(got)}, expected {want}")


def check_ssd_inputs(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    initial_states: Tensor | None,
) -> None:
    """Shapes of the SSD operands (see ``earthcast.kernels.ssd_reference`` for their meaning)."""
    if x.dim() != 4:
        raise _shape_error("x", x.shape, "(batch, length, heads, headdim)")
    b, L, h, p = x.shape
    if dt.shape != (b, L, h):
        raise _shape_error("dt", dt.shape, f"(batch, length, heads) = {(b, L, h)}")
    if A.shape != (h,):
        raise _shape_error("A", A.shape, f"(heads,) = {(h,)}")
    if B.dim() != 4 or B.shape[:2] != (b, L):
        raise _shape_error("B", B.shape, f"(batch, length, groups, d_state) with batch, length = {(b, L)}")
    if C.shape != B.shape:
        raise _shape_error("C", C.shape, f"the shape of B, {tuple(B.shape)}")
    g, n = B.shape[2], B.shape[3]
    if g < 1 or h % g != 0:
        raise ValueError(
            f"ssd_scan: heads ({h}) must be divisible by the number of B/C groups ({g}); "
            "choose ngroups that divides the head count"
        )
    if D is not None and D.shape not in ((h,), (h, p)):
        raise _shape_error("D", D.shape, f"(heads,) = {(h,)} or (heads, headdim) = {(h, p)}")
    if z is not None and z.shape != x.shape:
        raise _shape_error("z", z.shape, f"the shape of x, {tuple(x.shape)}")
    if dt_bias is not None and dt_bias.shape != (h,):
        raise _shape_error("dt_bias", dt_bias.shape, f"(heads,) = {(h,)}")
    if initial_states is not None and initial_states.shape != (b, h, p, n):
        raise _shape_error(
            "initial_states", initial_states.shape, f"(batch, heads, headdim, d_state) = {(b, h, p, n)}"
        )
    devices = {t.device for t in (x, dt, A, B, C, D, z, dt_bias, initial_states) if t is not None}
    if len(devices) > 1:
        raise ValueError(
            f"ssd_scan: operands are on different devices {sorted(map(str, devices))}; move them to one"
        )


def check_chunk_size(chunk_size: int) -> None:
    """Any positive chunk size works for the reference."""
    if chunk_size < 1:
        raise ValueError(f"ssd_scan: chunk_size must be positive, got {chunk_size}")


def check_triton_ssd_supported(headdim: int, d_state: int, chunk_size: int) -> None:
    """The Triton SSD kernel's supported set; the fix is another config or ``backend="reference"``."""
    fix = "or pass backend='reference' (or set EARTHCAST_KERNELS=reference) to use the PyTorch path"
    if not 1 <= headdim <= TRITON_MAX_HEADDIM:
        raise ValueError(
            f"ssd_scan: headdim {headdim} is not supported by the Triton SSD kernel (supported: 1..{TRITON_MAX_HEADDIM}, "
            f"best as a power of two >= 16); change headdim in the model config {fix}"
        )
    if not 1 <= d_state <= TRITON_MAX_DSTATE:
        raise ValueError(
            f"ssd_scan: d_state {d_state} is not supported by the Triton SSD kernel (supported: 1..{TRITON_MAX_DSTATE}, "
            f"best as a power of two >= 16); change d_state in the model config {fix}"
        )
    if chunk_size not in TRITON_CHUNK_SIZES:
        raise ValueError(
            f"ssd_scan: chunk_size {chunk_size} is not supported by the Triton SSD kernel (supported: "
            f"{', '.join(map(str, TRITON_CHUNK_SIZES))}); change chunk_size {fix}"
        )


def norm_group_size(d: int, group_size: int | None) -> int:
    """Normalise ``group_size`` (None -> d) and check that it divides the feature size d."""
    gs = d if group_size is None else int(group_size)
    if gs < 1 or d % gs != 0:
        raise ValueError(
            f"gated_rms_norm: group_size {group_size} must be a positive divisor of the feature size {d}; "
            "pick a divisor (e.g. d_inner // ngroups) or None for one group"
        )
    return gs


def check_norm_inputs(x: Tensor, weight: Tensor, z: Tensor | None) -> None:
    """x, z (..., d) and weight (d,)."""
    if x.dim() < 1:
        raise ValueError("gated_rms_norm: x must have at least one dimension (..., d)")
    d = x.shape[-1]
    if weight.shape != (d,):
        raise ValueError(f"gated_rms_norm: weight has shape {tuple(weight.shape)}, expected (d,) = {(d,)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(
            f"gated_rms_norm: z has shape {tuple(z.shape)}, expected the shape of x {tuple(x.shape)}"
        )

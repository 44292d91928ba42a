"""earthcast.kernels: the Mamba2 SSD scan and gated RMSNorm, as Triton kernels with PyTorch references.

``ssd_scan`` and ``gated_rms_norm`` validate their inputs and dispatch (``select_backend``): Triton for CUDA
tensors, interpreted Triton for CPU tensors under ``TRITON_INTERPRET=1`` (tests), the PyTorch reference
otherwise or when ``EARTHCAST_KERNELS=reference`` / ``backend="reference"``.
"""

from earthcast.kernels.api import gated_rms_norm, ssd_scan
from earthcast.kernels.dispatch import last_backend, select_backend
from earthcast.kernels.rmsnorm_gated import gated_rms_norm_reference
from earthcast.kernels.ssd_reference import ssd_chunked, ssd_naive

__all__ = [
    "gated_rms_norm",
    "gated_rms_norm_reference",
    "last_backend",
    "select_backend",
    "ssd_chunked",
    "ssd_naive",
    "ssd_scan",
]

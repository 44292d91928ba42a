"""Which implementation runs (Triton or the PyTorch reference), and device-agnostic launch helpers.

Selection rule (``select_backend``):

- ``backend="reference"`` or ``EARTHCAST_KERNELS=reference`` -> PyTorch reference, always;
- CUDA tensor and ``import triton`` works -> Triton (compiled);
- CPU tensor, ``TRITON_INTERPRET=1`` and ``import triton`` works -> Triton (interpreted; for tests);
- anything else -> PyTorch reference.

``backend="triton"`` (or ``EARTHCAST_KERNELS=triton``) forces Triton and raises if it cannot run.
The path taken is recorded (``last_backend()``) and logged once per (op, backend) through ``logging``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import torch

Backend = Literal["triton", "reference"]
ENV_BACKEND = "EARTHCAST_KERNELS"
ENV_DOT_PRECISION = "EARTHCAST_TRITON_DOT_PRECISION"
_VALID_REQUESTS = ("triton", "reference", "auto")

_log = logging.getLogger(__name__)
_logged: set[tuple[str, str]] = set()
_last: dict[str, Backend] = {}

T = TypeVar("T")


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _requested(backend: str | None) -> str:
    req = backend if backend is not None else os.environ.get(ENV_BACKEND, "auto") or "auto"
    req = req.strip().lower()
    if req not in _VALID_REQUESTS:
        source = "backend argument" if backend is not None else f"environment variable {ENV_BACKEND}"
        raise ValueError(
            f"unknown kernel backend {req!r} from the {source}; use one of {', '.join(_VALID_REQUESTS)} "
            f"(or unset {ENV_BACKEND})"
        )
    return req


def _triton_can_run(tensor: torch.Tensor) -> tuple[bool, str]:
    if not triton_available():
        return False, "triton is not installed (pip install 'triton>=3.8,<3.10')"
    if tensor.is_cuda:
        return True, ""
    if tensor.device.type == "cpu" and interpreting():
        return True, ""
    return False, (
        f"tensor is on {tensor.device.type!r}; Triton runs CUDA tensors, or CPU tensors only with "
        "TRITON_INTERPRET=1 set before earthcast is imported"
    )


def select_backend(tensor: torch.Tensor, backend: str | None = None, *, op: str = "kernel") -> Backend:
    """Pick "triton" or "reference" for an op on ``tensor``; records and logs (once) the choice."""
    req = _requested(backend)
    can_run, why_not = _triton_can_run(tensor)
    if req == "reference":
        choice: Backend = "reference"
    elif req == "triton":
        if not can_run:
            raise RuntimeError(f"backend='triton' requested for {op} but {why_not}; use backend='reference'")
        choice = "triton"
    else:
        choice = "triton" if can_run else "reference"
    _last[op] = choice
    _last["*"] = choice
    if (op, choice) not in _logged:
        _logged.add((op, choice))
        mode = " (interpreted)" if choice == "triton" and not tensor.is_cuda else ""
        _log.info("earthcast.kernels: %s uses the %s path%s", op, choice, mode)
    return choice


def last_backend(op: str | None = None) -> Backend | None:
    """The backend chosen by the latest ``select_backend`` call (for ``op``, or for any op)."""
    return _last.get(op if op is not None else "*")


def device_context(tensor: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """``torch.cuda.device`` for CUDA tensors, a no-op context for anything else (no torch.cuda calls)."""
    if tensor.is_cuda:
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


def autotune_configs(configs: Sequence[T]) -> list[T]:
    """All configs when compiling; only the first (put the largest block first) when interpreting."""
    return list(configs[:1]) if interpreting() else list(configs)


def dot_precision(tensor: torch.Tensor) -> str:
    """``tl.dot`` input precision: exact "ieee" for the interpreter and fp64, else env override or "tf32"."""
    if interpreting() or tensor.dtype == torch.float64 or not tensor.is_cuda:
        return "ieee"
    value = os.environ.get(ENV_DOT_PRECISION, "tf32").strip().lower()
    if value not in ("tf32", "ieee", "tf32x3"):
        raise ValueError(f"{ENV_DOT_PRECISION}={value!r} is not one of tf32, tf32x3, ieee")
    return value

"""The one checkpoint loader: read an earthcast checkpoint, and load the Lightning module that wrote it.

Checkpoints hold only tensors and plain Python types, so they load with ``weights_only=True``. Their
``"earthcast"`` entry carries the manifest, the statistics, the model settings, the run's config and the
class that wrote them (``module``: :class:`~earthcast.training.ForecastModule` or a planner built on it);
:func:`load_module` loads that class.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from earthcast.errors import CheckpointError

DEFAULT_MODULE = "earthcast.training.module.ForecastModule"
"""The writer of checkpoints that do not name one (written before planners existed)."""


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (memory-mapped, so large files cost little) and check
    that it carries earthcast metadata. Raises :class:`CheckpointError` naming the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint file at {str(path)!r}; check the path (or use --ckpt_path last)"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or corrupt: "
            f"{path.stat().st_size} bytes, no zip directory). It was probably cut off while being written; "
            "use an earlier checkpoint, e.g. the epoch=…-step=….ckpt next to it."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises RuntimeError/UnpicklingError/EOFError for damaged files
        raise CheckpointError(
            f"{str(path)!r} could not be loaded with weights_only=True ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). The file is damaged or holds arbitrary Python "
            "objects; use a checkpoint written by `earthcast fit`."
        ) from err
    if not isinstance(checkpoint, dict) or "earthcast" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{str(path)!r} is a PyTorch file but not an earthcast checkpoint (no 'earthcast' metadata "
            "with the channel manifest and statistics); use a checkpoint written by `earthcast fit`."
        )
    return checkpoint


def module_class_path(checkpoint: dict[str, Any]) -> str:
    """The import path of the LightningModule class that wrote a checkpoint."""
    return str(checkpoint["earthcast"].get("module", DEFAULT_MODULE))


def module_class(checkpoint: dict[str, Any]) -> type:
    """The LightningModule class named by a checkpoint read with :func:`read_checkpoint` (a ForecastModule
    or a subclass of it, from earthcast's own packages only)."""
    from earthcast.training.module import ForecastModule

    name = module_class_path(checkpoint)
    where, _, attr = name.rpartition(".")
    if not where.startswith("earthcast."):
        raise CheckpointError(f"the checkpoint names the module {name!r}, which is not earthcast's")
    try:
        cls = getattr(importlib.import_module(where), attr)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f"the checkpoint was written by {name!r}, which this earthcast does not have ({err}); "
            "install the earthcast version that wrote it"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, ForecastModule)):
        raise CheckpointError(f"the checkpoint names {name!r}, which is not a ForecastModule")
    return cls


def load_module(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Load the module that wrote the checkpoint at ``path``, in eval mode, on ``device``.

    Raises:
        CheckpointError: missing, truncated or foreign file, or an unknown writer
            (:class:`~earthcast.training.checks.IncompatibleCheckpointError` when it does not match the data).
    """
    checkpoint = read_checkpoint(path)
    cls = module_class(checkpoint)
    del checkpoint
    try:
        module = cls.load_from_checkpoint(path, map_location=torch.device(device), weights_only=True)
    except RuntimeError as err:
        if "state_dict" not in str(err):
            raise
        first = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise CheckpointError(
            f"the weights in {str(path)!r} do not fit the model this earthcast builds from the checkpoint's "
            f"settings ({first}). It was written by an earthcast whose layers differ (e.g. before the V-cycle's "
            "prolongation became bilinear; that layer remains available as model_settings.upsample: transposed "
            "for new runs): retrain, or load it with the earthcast version that wrote it."
        ) from err
    return module.eval()

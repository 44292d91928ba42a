"""Build any forecast model by name from a channel manifest and normalisation statistics.

Names: ``"tritoncast"`` (sizes in :data:`~earthcast.models.tritoncast.SIZES`, ablations via
``ablation=...``), ``"unet"``, ``"persistence"`` and ``"climatology"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.store import open_store
from earthcast.models.baselines import Climatology, Persistence, UNet
from earthcast.models.tritoncast import TritonCast, size_config

MODEL_NAMES: tuple[str, ...] = ("tritoncast", "unet", "persistence", "climatology")


def pole_fold_of(manifest: ChannelManifest) -> str:
    """``"whole"`` if the grid has pole rows (first or last latitude at ±90°), else ``"half"``."""
    lat = np.asarray(manifest.latitude)
    return "whole" if lat.size and max(abs(lat[0]), abs(lat[-1])) > 90.0 - 1e-6 else "half"


def build_model(
    name: str,
    manifest: ChannelManifest,
    stats: NormStats,
    *,
    n_input: int = 1,
    size: str = "tiny",
    **overrides: Any,
) -> nn.Module:
    """A one-step predictor with the shared signature ``model(state, static, forcings, time)``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        manifest, stats: the data's channels/grid and statistics (channel counts, residual scaling, pole fold).
        n_input: input time steps.
        size: named size for ``tritoncast`` and ``unet``.
        overrides: ``TritonCastConfig`` fields for ``tritoncast``/``unet`` (``core`` entries are merged);
            for ``climatology`` either ``climatology_store`` (a WB2 climatology store) or ``truth_store``
            with optional ``start``, ``end`` and ``window`` (computed from that period of the truth).
    """
    if name in ("tritoncast", "unet"):
        overrides.setdefault("pole_fold", pole_fold_of(manifest))
        config = size_config(size, **overrides)
        scale = np.asarray(stats.tendency_std) / np.asarray(stats.state_std)
        cls = TritonCast if name == "tritoncast" else UNet
        return cls(
            len(manifest.state), len(manifest.static), len(manifest.forcing), n_input, config, scale.tolist()
        )
    if name == "persistence":
        if overrides:
            raise ValueError(f"persistence takes no settings, got {sorted(overrides)}")
        return Persistence()
    if name == "climatology":
        store, truth = overrides.pop("climatology_store", None), overrides.pop("truth_store", None)
        if (store is None) == (truth is None):
            raise ValueError(
                "the climatology baseline needs exactly one of climatology_store= (a WB2 climatology store) "
                "or truth_store= (a truth store to compute it from, with optional start/end/window)"
            )
        if store is not None:
            if overrides:
                raise ValueError(
                    f"unexpected climatology settings {sorted(overrides)} with climatology_store"
                )
            return Climatology.from_dataset(open_store(store), manifest, stats)
        unknown = sorted(set(overrides) - {"start", "end", "window"})
        if unknown:
            raise ValueError(f"unknown climatology settings {unknown}; valid: start, end, window")
        return Climatology.from_truth(open_store(truth), manifest, stats, **overrides)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")

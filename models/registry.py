"""Build any forecast model by name from a channel manifest and normalisation statistics.

Names: ``"tritoncast"`` (sizes in :data:`~earthcast.models.tritoncast.SIZES`, ablations via
``ablation=...``), ``"unet"``, ``"persistence"`` and ``"climatology"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from earthcast.datasets.channels import VECTOR_COMPONENTS, ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.store import open_store
from earthcast.errors import ConfigError
from earthcast.models.baselines import Climatology, Persistence, UNet
from earthcast.models.tritoncast import TritonCast, size_config

MODEL_NAMES: tuple[str, ...] = ("tritoncast", "unet", "persistence", "climatology")


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
        manifest, stats: the data's channels, grid geometry (padding, sign flips of vector components across
            the poles) and statistics (residual scaling).
        n_input: input time steps.
        size: named size for ``tritoncast`` and ``unet``.
        overrides: ``TritonCastConfig`` fields for ``tritoncast``/``unet`` (``core`` entries are merged);
            for ``climatology`` either ``climatology_store`` (a WB2 climatology store) or ``truth_store``
            with optional ``start``, ``end`` and ``window`` (computed from that period of the truth).
    """
    if name in ("tritoncast", "unet"):
        geometry = manifest.grid_geometry.kind
        if overrides.setdefault("geometry", geometry) != geometry:
            raise ConfigError(
                f"model_settings.geometry is {overrides['geometry']!r} but the data's grid is {geometry!r}; "
                "remove it from model_settings (it comes from the data) or set data.geometry instead"
            )
        config = size_config(size, **overrides)
        scale = np.asarray(stats.tendency_std) / np.asarray(stats.state_std)
        cls = TritonCast if name == "tritoncast" else UNet
        return cls(
            len(manifest.state),
            len(manifest.static),
            len(manifest.forcing),
            n_input,
            config,
            scale.tolist(),
            manifest.vector_channels(),
            boundary=manifest.boundary_width > 0,
            latitudes=np.asarray(manifest.latitude).tolist(),
            width=len(manifest.longitude),
            channel_names=manifest.names("state"),
            meridional_channels=[
                i
                for i in manifest.vector_channels()
                if manifest.state[i].variable in VECTOR_COMPONENTS.values()
            ],
        )
    if name == "persistence":
        if overrides:
            raise ConfigError(f"persistence takes no settings, got {sorted(overrides)}")
        return Persistence()
    if name == "climatology":
        store, truth = overrides.pop("climatology_store", None), overrides.pop("truth_store", None)
        if (store is None) == (truth is None):
            raise ConfigError(
                "the climatology baseline needs exactly one of climatology_store= (a WB2 climatology store) "
                "or truth_store= (a truth store to compute it from, with optional start/end/window)"
            )
        if store is not None:
            if overrides:
                raise ConfigError(
                    f"unexpected climatology settings {sorted(overrides)} with climatology_store"
                )
            return Climatology.from_dataset(open_store(store), manifest, stats)
        unknown = sorted(set(overrides) - {"start", "end", "window"})
        if unknown:
            raise ConfigError(f"unknown climatology settings {unknown}; valid: start, end, window")
        return Climatology.from_truth(open_store(truth), manifest, stats, **overrides)
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")

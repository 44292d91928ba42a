"""Shared pieces of the rollout tests: a real tiny checkpoint on a synthetic store, and an independent
manual rollout loop (reads the truth with xarray, normalises with numpy, calls the model step by step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from lightning_helpers import quiet_trainer

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.forcings import coordinate_statics, forcing_fields
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid
from earthcast.training import ForecastModule

MICRO = {
    "widths": [8, 16],
    "core": {"width": 16, "pattern": "AM", "heads": 2, "headdim": 8, "d_state": 8, "backend": "reference"},
}
VARIABLES = {"geopotential": [500, 850], "temperature": [500], "2m_temperature": None}
STEP = np.timedelta64(6, "h")


def make_checkpoint(root: Path, *, n_input: int = 2, steps: int = 1) -> tuple[Path, Path]:
    """Train a micro TritonCast for ``steps`` optimiser steps on a synthetic store; return (store, ckpt)."""
    store = root / "truth.zarr"
    times = pd.date_range("2020-01-01", periods=60, freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500, 850))
    dm = WB2DataModule(
        str(store),
        VARIABLES,
        static=["land_sea_mask", "latitude"],
        forcings=["hour_of_day", "toa_insolation"],
        n_input=n_input,
        n_target=1,
        batch_size=2,
        train=("2020-01-01", "2020-01-10"),
        val=("2020-01-11", "2020-01-15"),
        test=("2020-01-11", "2020-01-15"),
        stats_cache_dir=str(root / "stats"),
    )
    module = ForecastModule(
        "tritoncast", "tiny", MICRO, manifest=dm.manifest.to_dict(), stats=dm.stats.to_dict(), n_input=n_input
    )
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return store, ckpt


def manual_rollout(ckpt: Path, store: Path, inits: list[str], n_steps: int, n_input: int = 2) -> np.ndarray:
    """(I, L, C, H, W) float32 physical forecasts computed with a plain loop, one init at a time."""
    module = ForecastModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    man, stats = module.manifest, module.stats
    ds = xr.open_zarr(store)
    lat, lon = ds["latitude"].values, ds["longitude"].values
    mean = np.asarray(stats.state_mean, np.float32)[:, None, None]
    std = np.asarray(stats.state_std, np.float32)[:, None, None]
    static = np.concatenate(
        [
            ((ds["land_sea_mask"].values - stats.static_mean[0]) / (stats.static_std[0] or 1.0))[None],
            coordinate_statics(["sin_latitude", "cos_latitude"], lat, lon),
        ]
    ).astype(np.float32)
    out = []
    for init in inits:
        t0 = np.datetime64(pd.Timestamp(init), "ns")
        times = [t0 - (n_input - 1 - n) * STEP for n in range(n_input)]
        chans = []
        for c in man.state:
            da = ds[c.variable].sel(time=times)
            chans.append((da.sel(level=c.level) if c.level is not None else da).values)
        window = torch.from_numpy(((np.stack(chans, axis=1) - mean) / std).astype(np.float32))[None]
        leads = []
        with torch.no_grad():
            for k in range(n_steps):
                frame_times = np.array([t0 + (k + 1 - n_input + j) * STEP for j in range(n_input + 1)])
                forc = torch.from_numpy(forcing_fields(man.names("forcing"), frame_times, lat, lon))[None]
                valid = torch.tensor([int((t0 + (k + 1) * STEP).astype(np.int64))])
                nxt = module.eval_model(window, torch.from_numpy(static)[None], forc, valid)
                window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
                leads.append(nxt[0].numpy() * std + mean)
        out.append(np.stack(leads))
    return np.stack(out).astype(np.float32)


def store_to_channels(ds: xr.Dataset, names: list[tuple[str, int | None]]) -> np.ndarray:
    """(time, [number], lead, C, H, W) array of a forecast store in manifest channel order."""
    parts = []
    for variable, level in names:
        da = ds[variable]
        parts.append((da.sel(level=level) if level is not None else da).values)
    return np.stack(parts, axis=-3)

"""The embedded demo stores: generated once from real physics, cached, and reused.

``ensure_demo_store("atmosphere")`` runs the Held–Suarez model (``held_suarez.py``) and
``ensure_demo_store("ocean")`` the two-layer QG model (``qg_ocean.py``); both write WB2-layout Zarr v2 stores
with consolidated metadata. The cache lives in ``platformdirs.user_cache_dir("earthcast")/demo`` unless
``EARTHCAST_CACHE_DIR`` or ``cache_dir`` says otherwise, and the store name carries a hash of the kind, the
settings and the generator version, so a changed generator never reuses stale data. Generation writes to a
temporary sibling and renames it at the end: nothing half-written is ever left under the final name.

Importing this module does not import JAX; only generating does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import pandas as pd
import xarray as xr

from earthcast.datasets.sim.held_suarez import GENERATOR_VERSION as HS_VERSION
from earthcast.datasets.sim.held_suarez import HeldSuarezConfig, generate_held_suarez
from earthcast.datasets.sim.qg_ocean import GENERATOR_VERSION as QG_VERSION
from earthcast.datasets.sim.qg_ocean import QGOceanConfig, generate_qg_ocean
from earthcast.datasets.zarr_store import append_wb2_store, atomic_store, write_wb2_store
from earthcast.errors import DataError

DemoKind = Literal["atmosphere", "ocean"]
CACHE_ENV_VAR = "EARTHCAST_CACHE_DIR"
TIME_CHUNK = {"atmosphere": 40, "ocean": 73}
"""Time steps per Zarr chunk (10 days of 6-hourly atmosphere, 73 days of daily ocean)."""
BLOCK_OUTPUTS = {"atmosphere": 120, "ocean": 73}
"""Outputs generated per compiled call and appended per write; a multiple of the time chunk."""


def demo_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where demo stores live: ``cache_dir``, else ``$EARTHCAST_CACHE_DIR``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    import platformdirs

    return Path(platformdirs.user_cache_dir("earthcast")) / "demo"


def _config(kind: str, seed: int, spinup_days: int | None) -> HeldSuarezConfig | QGOceanConfig:
    if kind == "atmosphere":
        config: HeldSuarezConfig | QGOceanConfig = HeldSuarezConfig(seed=seed)
    elif kind == "ocean":
        config = QGOceanConfig(seed=seed)
    else:
        raise DataError(
            f"Unknown demo kind {kind!r}; use 'atmosphere' (Held-Suarez) or 'ocean' (two-layer QG)."
        )
    return config if spinup_days is None else replace(config, spinup_days=spinup_days)


def _n_outputs(config: HeldSuarezConfig | QGOceanConfig, years: float) -> int:
    """Outputs covering ``years`` calendar years from the start date (whole years exact, the rest × 365 d)."""
    if not years > 0:
        raise DataError(f"years={years} must be positive, e.g. 3.0 (train 2017-2018, hold out 2019).")
    start = pd.Timestamp(config.start_time)
    whole = int(years)
    days = (start + pd.DateOffset(years=whole) - start).days + round((years - whole) * 365)
    return max(1, days * 24 // config.output_hours)


def demo_store_path(
    kind: DemoKind = "atmosphere",
    *,
    years: float = 3.0,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    spinup_days: int | None = None,
) -> Path:
    """The cache path ``ensure_demo_store`` uses for these settings (the store may not exist yet)."""
    config = _config(kind, seed, spinup_days)
    key = {
        "kind": kind,
        "version": HS_VERSION if kind == "atmosphere" else QG_VERSION,
        "config": asdict(config),
        "n_outputs": _n_outputs(config, years),
        "time_chunk": TIME_CHUNK[kind],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return demo_cache_dir(cache_dir) / f"{kind}-{years:g}y-seed{seed}-{digest}.zarr"


def _blocks(
    kind: str, config: HeldSuarezConfig | QGOceanConfig, n_outputs: int, on_days: Callable[[float], None]
) -> Iterator[xr.Dataset]:
    if isinstance(config, HeldSuarezConfig):
        return generate_held_suarez(config, n_outputs, block_outputs=BLOCK_OUTPUTS[kind], on_days=on_days)
    return generate_qg_ocean(config, n_outputs, block_outputs=BLOCK_OUTPUTS[kind], on_days=on_days)


def ensure_demo_store(
    kind: DemoKind = "atmosphere",
    *,
    years: float = 3.0,
    cache_dir: Path | None = None,
    seed: int = 0,
    force: bool = False,
    spinup_days: int | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of the cached demo store, generating it first if needed.

    Args:
        kind: ``"atmosphere"`` (Held–Suarez, 6-hourly, WB2 64x32 grid) or ``"ocean"`` (two-layer QG, daily,
            regional 0.25° grid).
        years: simulated years after spin-up; the first output is 2017-01-01T00, so 3 years gives
            2017–2019 (train 2017–2018, hold out 2019).
        cache_dir: directory for the store; default ``$EARTHCAST_CACHE_DIR`` or the user cache dir.
        seed: seed of the initial perturbation (different seeds give different weather, same climate).
        force: regenerate even if a cached store exists.
        spinup_days: override the model's default spin-up (200 days atmosphere, 1095 days ocean).
        progress: show a progress bar with model days, throughput and ETA.

    Raises:
        ImportError: the ``sim`` extra (JAX, dinosaur, pyqg-jax) is missing; install ``earthcast[sim]``.
    """
    config = _config(kind, seed, spinup_days)
    n_outputs = _n_outputs(config, years)
    path = demo_store_path(kind, years=years, cache_dir=cache_dir, seed=seed, spinup_days=spinup_days)
    if path.exists() and not force:
        return path
    total_days = config.spinup_days + n_outputs * config.output_hours / 24
    from tqdm.auto import tqdm

    bar = tqdm(
        total=round(total_days, 2),
        unit="model day",
        desc=f"earthcast demo {kind} (spin-up {config.spinup_days} d + {years:g} y)",
        disable=not progress,
    )
    with bar, atomic_store(path, overwrite=True) as tmp:
        for index, block in enumerate(_blocks(kind, config, n_outputs, bar.update)):
            if index == 0:
                write_wb2_store(block, tmp, chunks={"time": TIME_CHUNK[kind]})
            else:
                append_wb2_store(block, tmp)
    return path

"""Synthetic WB2-layout stores for tests, benchmarks and docs.

Fields are smooth in space (a few low zonal/meridional modes) and red in time (AR(1)), around magnitudes of
the corresponding ERA5 variables, so statistics, windows and metrics behave as on real data. They carry no
physics; the physics demo data lives in :mod:`earthcast.datasets.sim`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.datasets.zarr_store import append_wb2_store, write_wb2_store
from earthcast.grids import Grid

TYPICAL: dict[str, tuple[float, float, str]] = {
    "geopotential": (5.4e4, 3.0e3, "m**2 s**-2"),
    "temperature": (250.0, 15.0, "K"),
    "u_component_of_wind": (5.0, 10.0, "m s**-1"),
    "v_component_of_wind": (0.0, 8.0, "m s**-1"),
    "specific_humidity": (3e-3, 2e-3, "kg kg**-1"),
    "2m_temperature": (285.0, 15.0, "K"),
    "mean_sea_level_pressure": (1.01e5, 1.0e3, "Pa"),
    "10m_u_component_of_wind": (0.5, 5.0, "m s**-1"),
    "10m_v_component_of_wind": (0.0, 4.0, "m s**-1"),
}
"""Variable -> (mean, spread, units) used to scale the synthetic fields."""


def _fields(rng: np.random.Generator, n: int, grid: Grid, state: np.ndarray, rho: float) -> np.ndarray:
    """AR(1) in time of smooth random modal fields; ``state`` (M, 2) holds the modal amplitudes, updated in place."""
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    modes = np.stack(
        [
            np.cos(m * lon + p) * np.cos(lat) ** (1 + m % 3)
            for m, p in zip(range(state.shape[0]), range(7, 99))
        ]
    )
    out = np.empty((n, grid.latitude.size, grid.longitude.size))
    for t in range(n):
        state[:] = rho * state + np.sqrt(1 - rho**2) * rng.standard_normal(state.shape)
        out[t] = np.tensordot(state[:, 0], modes, 1) + 0.3 * np.tensordot(state[:, 1], modes, 1) * np.sin(lat)
    return out / np.sqrt(state.shape[0])


def synthetic_dataset(
    grid: Grid,
    times: pd.DatetimeIndex,
    *,
    pressure_variables: Sequence[str] = ("geopotential", "temperature"),
    surface_variables: Sequence[str] = ("2m_temperature",),
    levels: Sequence[int] = (500, 850),
    seed: int = 0,
    states: dict | None = None,
) -> xr.Dataset:
    """A dataset with WB2 names and units on ``grid`` at ``times``, plus a static ``land_sea_mask``.

    Args:
        pressure_variables: variables on ``levels`` (hPa); surface_variables: without a level;
            names must be in TYPICAL.
        states: modal AR(1) states carried between calls (for writing long stores block by block).
    """
    rng = np.random.default_rng([seed, int(times[0].value // 10**9)])
    states = {} if states is None else states
    data = {}
    variables = {name: list(levels) for name in pressure_variables} | {
        name: None for name in surface_variables
    }
    for name, layers in variables.items():
        mean, spread, units = TYPICAL[name]
        layers = layers or [None]
        arrays = []
        for level in layers:
            state = states.setdefault((name, level), rng.standard_normal((8, 2)))
            scale = 1.0 if level is None else (1.0 + (1000 - level) / 1000.0)
            arrays.append(mean * scale + spread * _fields(rng, len(times), grid, state, rho=0.95))
        surface = layers == [None]
        dims = ("time", "latitude", "longitude") if surface else ("time", "level", "latitude", "longitude")
        values = arrays[0] if surface else np.stack(arrays, axis=1)
        data[name] = (dims, values.astype(np.float32), {"units": units})
    coords = {"time": times, "latitude": grid.latitude, "longitude": grid.longitude}
    if pressure_variables:
        coords["level"] = np.asarray(levels, dtype=np.int64)
    ds = xr.Dataset(data, coords=coords)
    ds["land_sea_mask"] = (
        ("latitude", "longitude"),
        (np.cos(3 * np.deg2rad(ds.longitude.values))[None] > 0.5)
        * np.ones((grid.latitude.size, 1), np.float32),
    )
    ds["land_sea_mask"].attrs["units"] = "1"
    return ds


def write_synthetic_store(
    path: str | os.PathLike,
    grid: Grid,
    times: pd.DatetimeIndex,
    *,
    time_chunk: int = 16,
    block: int = 256,
    **fields: Sequence[str] | Sequence[int] | int,
) -> None:
    """Write a synthetic WB2 store block by block (memory stays flat for long stores).

    ``fields`` are :func:`synthetic_dataset`'s keyword arguments (variables, levels, seed).
    """
    states: dict = {}
    for i in range(0, len(times), block):
        ds = synthetic_dataset(grid, times[i : i + block], states=states, **fields)
        if i == 0:
            write_wb2_store(ds, path, chunks={"time": time_chunk})
        else:
            append_wb2_store(ds.drop_vars("land_sea_mask"), path)

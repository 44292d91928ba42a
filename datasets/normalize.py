"""Normalise the legitimate variants of WB2-layout datasets to one canonical form.

Canonical form: dimensions named ``time``, ``prediction_timedelta``, ``level`` (int hPa, or metres for ocean
depth), ``latitude`` (ascending, degrees north) and ``longitude`` (ascending, degrees east: 0…360 on a global
grid; a regional box stays contiguous, e.g. −10…2 across the prime meridian). Variables
stored one level per name (``geopotential_500``) are folded into a ``level`` dimension. Everything stays lazy.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import xarray as xr

from earthcast.errors import DataError
from earthcast.grids import GRID_TOLERANCE_DEG

DIM_ALIASES: dict[str, str] = {
    "lat": "latitude",
    "lon": "longitude",
    "pressure_level": "level",
    "isobaricInhPa": "level",
    "plev": "level",
    "depth": "level",
    "lead_time": "prediction_timedelta",
    "init_time": "time",
    "valid_time": "time",
}
"""Alternative dimension/coordinate names -> WB2 names."""

THREE_D_VARIABLES = frozenset(
    {
        "geopotential",
        "temperature",
        "u_component_of_wind",
        "v_component_of_wind",
        "specific_humidity",
        "vertical_velocity",
        "wind_speed",
        "relative_humidity",
        "specific_cloud_liquid_water_content",
        "specific_cloud_ice_water_content",
    }
)
"""WB2 atmospheric variables that live on pressure levels."""

_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<level>\d+)$")


def rename_to_wb2(ds: xr.Dataset) -> xr.Dataset:
    """Rename alias dimensions and coordinates (``lat``, ``lon``, ``pressure_level``, …) to WB2 names."""
    names = set(ds.dims) | set(ds.coords)
    mapping = {old: new for old, new in DIM_ALIASES.items() if old in names and new not in names}
    return ds.rename(mapping) if mapping else ds


def _suffix_groups(ds: xr.Dataset) -> dict[str, list[tuple[int, str]]]:
    """Group ``var_LEVEL`` data variables by base name, keeping only real level suffixes."""
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in ds.data_vars:
        match = _SUFFIX.match(str(name))
        if match and "level" not in ds[name].dims:
            groups[match["base"]].append((int(match["level"]), str(name)))
    return {
        base: sorted(members)
        for base, members in groups.items()
        if base in THREE_D_VARIABLES or len(members) > 1
    }


def decode_level_suffixes(ds: xr.Dataset) -> xr.Dataset:
    """Fold ``geopotential_500``-style variables into ``geopotential`` with a ``level`` dimension.

    A base name is decoded when it is a known WB2 pressure-level variable or when at least two suffixed
    variables share it; a lone ``foo_1`` of unknown meaning is left alone.
    """
    groups = _suffix_groups(ds)
    if not groups:
        return ds
    out = ds.drop_vars([name for members in groups.values() for _, name in members])
    decoded = []
    for base, members in groups.items():
        levels = np.array([level for level, _ in members], dtype=np.int64)
        stacked = xr.concat([ds[name] for _, name in members], dim=xr.Variable("level", levels))
        stacked.attrs = dict(ds[members[0][1]].attrs)
        if base in out.data_vars:
            stacked = xr.concat([out[base], stacked], dim="level").sortby("level")
            out = out.drop_vars(base)
        decoded.append(stacked.rename(base))
    # An outer join on level keeps every level; variables lacking one of them are NaN there.
    return xr.merge([out, *decoded], join="outer", combine_attrs="override", compat="no_conflicts")


def make_latitude_increasing(ds: xr.Dataset) -> xr.Dataset:
    """Flip a descending latitude axis (ERA5 0.25°, Pangu) to ascending, lazily."""
    if "latitude" not in ds.dims or ds.sizes["latitude"] < 2:
        return ds
    lat = ds["latitude"].values
    if np.all(np.diff(lat) > 0):
        return ds
    if np.all(np.diff(lat) < 0):
        return ds.isel(latitude=slice(None, None, -1))
    raise DataError(
        "latitude is neither strictly ascending nor strictly descending "
        f"(first values {lat[:4].tolist()}); the store's grid is irregular. Regrid it to a WB2 grid first."
    )


def contiguous_longitudes(lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index order and values that make a longitude axis contiguous.

    Global axes (n·Δλ = 360°) come out ascending in 0…360, as WB2 lays them out. A regional box stays in one
    piece: it starts after the largest gap between its longitudes on the circle and ascends from there;
    a box across the prime meridian runs from below 0 (e.g. −10…2), any other box lies in 0…360 (a box
    across the date line may run past 180 up to 360 and beyond, e.g. 170…190).

    Returns:
        (W,) int64 index order, and (W,) float64 new longitudes in degrees east.
    """
    wrapped = np.mod(lon, 360.0)
    order = np.argsort(wrapped, kind="stable")
    ring = wrapped[order]
    if ring.size < 2:
        return order, ring
    gaps = np.diff(np.concatenate([ring, [ring[0] + 360.0]]))
    step = float(np.median(gaps[:-1])) if ring.size > 2 else float(gaps[0])
    if abs(ring.size * step - 360.0) <= GRID_TOLERANCE_DEG:
        return order, ring
    start = (int(np.argmax(gaps)) + 1) % ring.size
    order = np.roll(order, -start)
    values = np.unwrap(np.roll(ring, -start), period=360.0)
    if values[-1] >= 360.0:
        values -= 360.0
    return order, values


def make_longitude_contiguous(ds: xr.Dataset) -> xr.Dataset:
    """Reorder and relabel longitudes lazily: global grids ascending in 0…360, regional boxes contiguous
    (see :func:`contiguous_longitudes`)."""
    if "longitude" not in ds.dims:
        return ds
    lon = ds["longitude"].values.astype(np.float64)
    order, values = contiguous_longitudes(lon)
    if np.array_equal(order, np.arange(lon.size)) and np.array_equal(values, lon):
        return ds
    out = ds.isel(longitude=order)
    return out.assign_coords(longitude=("longitude", values, ds["longitude"].attrs))


def normalize_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Apply every normalisation: WB2 names, level suffixes, ascending latitude, contiguous longitude (0…360
    on global grids).

    Dimension order is left as stored; readers select dimensions by name.
    """
    ds = rename_to_wb2(ds)
    ds = decode_level_suffixes(ds)
    ds = make_latitude_increasing(ds)
    ds = make_longitude_contiguous(ds)
    if "level" in ds.coords and np.issubdtype(ds["level"].dtype, np.floating):
        levels = ds["level"].values
        if np.allclose(levels, np.round(levels)):
            ds = ds.assign_coords(level=levels.round().astype(np.int64))
    return ds

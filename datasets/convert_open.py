"""Open one ERA5 (CDS netCDF or GRIB) or CMEMS netCDF file as a lazy dataset in WB2 layout.

The result of :func:`open_input` has dimensions ``time`` (valid time), optionally ``level`` (hPa, or metres of
depth), ``latitude`` (ascending) and ``longitude``; WB2 variable names; only dimension coordinates; a
``units`` attribute on every variable; and time-invariant fields (``land_sea_mask``, …) without ``time``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from earthcast.datasets.convert_names import (
    DEPTH_DIMS,
    KEPT_ATTRS,
    PRESSURE_DIMS,
    STATIC_VARIABLES,
    TIME_DIMS,
    wb2_variable_names,
)
from earthcast.datasets.normalize import normalize_dataset
from earthcast.errors import CorruptChunkError, DataError, EarthcastError, GridError, MissingDependencyError

NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
"""netCDF-3 (classic, 64-bit offset, 64-bit data) and netCDF-4/HDF5 file signatures."""

GRIB_MAGIC = b"GRIB"
ONE_STEP_CHUNKS = {"time": 1, "valid_time": 1}
"""Dask chunks when opening: one time step (all levels), so reading a block of times reads only those steps
even through the ``expver`` merge (netCDF-3 files have no on-disk chunks to go by)."""
ZIP_MAGIC = b"PK\x03\x04"
"""New-CDS netCDF requests that mix instantaneous and accumulated variables arrive as a zip of netCDF files."""

WB2_DIMS = ("time", "level", "latitude", "longitude")


def file_kind(path: Path, *, label: str) -> str:
    """``"netcdf"``, ``"grib"`` or ``"zip"``, from the file's first bytes (extensions are not trusted)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(NETCDF_MAGIC):
        return "netcdf"
    if head.startswith(GRIB_MAGIC):
        return "grib"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    raise CorruptChunkError(
        f"{label} is neither netCDF nor GRIB (it starts with {head!r}); the download may be incomplete or an "
        "error page. Download it again from the Climate Data Store / Copernicus Marine."
    )


def _open_grib(path: Path, label: str) -> xr.Dataset:
    """All hypercubes of a GRIB file, indexed by valid time, merged into one dataset."""
    try:
        import cfgrib
    except (ImportError, RuntimeError) as err:  # RuntimeError: cfgrib without the ecCodes library
        raise MissingDependencyError(
            f"Reading GRIB ({label}) needs cfgrib and ecCodes ({type(err).__name__}: {err}). "
            'Install them with `pip install "earthcast[convert]"`, or download netCDF from the CDS instead.'
        ) from err
    cubes = cfgrib.open_datasets(
        os.fspath(path),
        backend_kwargs={"indexpath": "", "time_dims": ("valid_time",), "squeeze": False},
        chunks=ONE_STEP_CHUNKS,
    )
    if not cubes:
        raise CorruptChunkError(f"{label} holds no GRIB messages cfgrib can read; download it again.")
    # cfgrib splits a file by level type and value (t2m at 2 m, u10 at 10 m): squeeze each, then merge.
    cubes = [_squeeze_bookkeeping(cube, label) for cube in cubes]
    return xr.merge(cubes, compat="override", join="outer", combine_attrs="drop_conflicts")


def _merge_expver(ds: xr.Dataset) -> xr.Dataset:
    """Combine an old-CDS ``expver`` dimension (ERA5 = 1, ERA5T = 5; NaN where the other is valid) into one series.

    Where several versions hold a value, the lowest ``expver`` (final ERA5 over preliminary ERA5T) wins.
    """
    versions = np.sort(ds["expver"].values)
    out = ds.sel(expver=versions[0], drop=True)
    for version in versions[1:]:
        out = out.fillna(ds.sel(expver=version, drop=True))
    return out


def _to_valid_time(ds: xr.Dataset) -> xr.Dataset:
    """Index the dataset by valid time, named ``time``."""
    if "valid_time" in ds.dims:
        if "time" in ds.variables:  # a forecast reference time next to the valid time: not WB2's time
            ds = ds.drop_vars("time")
        return ds.rename({"valid_time": "time"})
    if "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):
        return ds.assign_coords(time=ds["valid_time"].values).drop_vars("valid_time")
    return ds


def _squeeze_bookkeeping(ds: xr.Dataset, label: str) -> xr.Dataset:
    """Drop length-1 GRIB/CDS dimensions (``number``, ``surface``, ``heightAboveGround``, …)."""
    keep = {"expver", "latitude", "longitude", "lat", "lon", *TIME_DIMS, *PRESSURE_DIMS, *DEPTH_DIMS}
    for dim in [d for d in ds.dims if d not in keep]:
        if ds.sizes[dim] != 1:
            values = ds[dim].values[:5].tolist() if dim in ds.coords else "?"
            raise DataError(
                f"{label} has a dimension {dim!r} of length {ds.sizes[dim]} (first values {values}); WB2 stores "
                "hold one deterministic value per time, level and grid point. Ensemble members (`number`) and "
                "several forecast steps or levels of one kind cannot be converted: download one member/level "
                "type per file, or select it with xarray first."
            )
        ds = ds.isel({dim: 0}, drop=True)
    return ds


def _check_regular_grid(ds: xr.Dataset, label: str) -> None:
    for axis in ("latitude", "longitude"):
        if axis not in ds.dims:
            raise GridError(
                f"{label} has no {axis} dimension (dimensions {sorted(map(str, ds.dims))}); it is not on a "
                "regular latitude/longitude grid (native ERA5 GRIB is reduced Gaussian). Request a regular "
                "grid from the CDS (e.g. `grid: [0.25, 0.25]`) or regrid the file first."
            )


def canonicalize(ds: xr.Dataset, label: str) -> xr.Dataset:
    """Turn one opened CDS/cfgrib/CMEMS dataset into WB2 layout (lazily; see the module docstring).

    Args:
        ds: the dataset as xarray/cfgrib opened it.
        label: the file's name, used in error messages.
    """
    ds = _to_valid_time(_squeeze_bookkeeping(ds, label))
    if "expver" in ds.dims:
        ds = _merge_expver(ds)
    ds = ds.rename(wb2_variable_names(ds))
    ds = normalize_dataset(ds)
    _check_regular_grid(ds, label)
    if "level" in ds.dims:  # WB2 order: ascending pressure (50 … 1000 hPa) or depth (surface first)
        ds = ds.sortby("level")
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims])  # expver, number, step, surface, …
    out = {}
    for name, da in ds.data_vars.items():
        extra = [d for d in da.dims if d not in WB2_DIMS]
        if extra:
            raise DataError(
                f"{label}: variable {name!r} has dimensions {list(da.dims)}; earthcast converts "
                f"(time, [level], latitude, longitude) fields only. Drop or select {extra} first."
            )
        if "units" not in da.attrs:
            raise DataError(
                f"{label}: variable {name!r} has no 'units' attribute; WB2 stores carry units on every "
                "variable. Set it in the file (e.g. with `ncatted -a units,VAR,c,c,K FILE`) and convert again."
            )
        if name in STATIC_VARIABLES and "time" in da.dims:
            da = da.isel(time=0, drop=True)
        da = da.transpose(*[d for d in WB2_DIMS if d in da.dims]).astype(np.float32)
        da.attrs = {k: da.attrs[k] for k in KEPT_ATTRS if k in da.attrs}
        out[name] = da.drop_encoding()
    if not out:
        raise DataError(f"{label} holds no data variables; check that the download is complete.")
    return xr.Dataset(out, attrs={})


def open_input(path: Path, kind: str, *, label: str) -> xr.Dataset:
    """Open one netCDF or GRIB file lazily (Dask) and return it in WB2 layout.

    Raises:
        MissingDependencyError: a GRIB file without cfgrib/ecCodes installed.
        CorruptChunkError: the file cannot be opened or decoded.
        DataError, GridError: the file opens but does not hold gridded (time, level, lat, lon) fields.
    """
    try:
        ds = (
            _open_grib(path, label)
            if kind == "grib"
            else xr.open_dataset(path, chunks=ONE_STEP_CHUNKS, decode_timedelta=True)
        )
    except EarthcastError:  # already says what is wrong (missing cfgrib, ensemble members, …)
        raise
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as err:
        raise CorruptChunkError(
            f"Could not open {label} ({type(err).__name__}: {err}). The file is truncated or corrupt: "
            "download it again."
        ) from err
    return canonicalize(ds, label)

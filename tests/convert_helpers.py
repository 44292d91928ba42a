"""Shared inputs of the conversion tests: netCDF files laid out as the Climate Data Store writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "CDS_ATTRS",
    "LAT_DESC",
    "LON",
    "UNITS",
    "WB2",
    "H",
    "W",
    "field",
    "new_cds",
    "series",
    "six_hourly",
]

LAT_DESC = np.array([60.0, 55.0, 50.0, 45.0])  # CDS order: north to south
LON = np.arange(0.0, 16.0, 2.0)
H, W = LAT_DESC.size, LON.size
CDS_ATTRS = {
    "GRIB_paramId": 130,
    "GRIB_shortName": "t",
    "GRIB_typeOfLevel": "isobaricInhPa",
    "GRIB_units": "K",
}
UNITS = {
    "t": "K",
    "z": "m**2 s**-2",
    "q": "kg kg**-1",
    "t2m": "K",
    "msl": "Pa",
    "u10": "m s**-1",
    "lsm": "(0 - 1)",
    "tp": "m",
}
WB2 = {
    "t": "temperature",
    "z": "geopotential",
    "q": "specific_humidity",
    "t2m": "2m_temperature",
    "msl": "mean_sea_level_pressure",
    "u10": "10m_u_component_of_wind",
    "lsm": "land_sea_mask",
}


def six_hourly(start: str, n: int) -> pd.DatetimeIndex:
    """``n`` 6-hourly times from ``start``."""
    return pd.date_range(start, periods=n, freq="6h")


def field(rng: np.random.Generator, shape: tuple[int, ...], offset: float) -> np.ndarray:
    return (offset + 10.0 * rng.random(shape)).astype(np.float32)


def new_cds(path: Path, times: pd.DatetimeIndex, names: list[str], *, seed: int, levels=None, lat=LAT_DESC):
    """A netCDF file as the new CDS (since 2024) writes it; returns the data written, by short name."""
    rng = np.random.default_rng(seed)
    coords = {
        "valid_time": ("valid_time", times.values, {"standard_name": "time"}),
        "latitude": ("latitude", lat, {"units": "degrees_north"}),
        "longitude": ("longitude", LON, {"units": "degrees_east"}),
        "number": ((), 0),
        "expver": ("valid_time", np.array(["0001"] * (times.size - 1) + ["0005"])),
    }
    dims = ["valid_time", "latitude", "longitude"]
    if levels is not None:
        coords["pressure_level"] = ("pressure_level", np.asarray(levels, float), {"units": "hPa"})
        dims.insert(1, "pressure_level")
    shape = (times.size, lat.size, W) if levels is None else (times.size, len(levels), lat.size, W)
    data = {name: field(rng, shape, 1000.0 if name in ("z", "msl") else 270.0) for name in names}
    ds = xr.Dataset(
        {
            n: (dims, v, {**CDS_ATTRS, "GRIB_shortName": n, "units": UNITS[n], "long_name": n})
            for n, v in data.items()
        },
        coords=coords,
        attrs={"GRIB_centre": "ecmf", "Conventions": "CF-1.7", "institution": "ECMWF"},
    )
    ds.to_netcdf(path, encoding={n: {"zlib": True, "chunksizes": (1, *v.shape[1:])} for n, v in data.items()})
    return data


def series(tmp_path: Path, starts: list[str]) -> tuple[list[Path], dict[pd.Timestamp, np.ndarray]]:
    """Single-level files of three 6-hourly steps each; returns the paths and the t2m field at each time."""
    paths, truth = [], {}
    for i, start in enumerate(starts):
        path = tmp_path / "in" / f"part{i}.nc"
        path.parent.mkdir(exist_ok=True)
        times = six_hourly(start, 3)
        data = new_cds(path, times, ["t2m", "msl"], seed=10 + i)
        for k, when in enumerate(times):
            truth.setdefault(when, data["t2m"][k, ::-1])  # the first file in time order wins a duplicate
        paths.append(path)
    return paths, truth

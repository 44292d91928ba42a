"""Checking and aligning the forecast, truth and climatology before scoring.

Legitimate variants are normalised (``lat``/``lon`` names, ``init_time``/``lead_time`` names, descending
latitude, longitudes in −180…180, grids equal within 1e-3°); everything else fails with a message that
names the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.datasets.normalize import make_latitude_increasing, make_longitude_contiguous
from earthcast.errors import DataError
from earthcast.grids import grid_mismatch
from earthcast.scoring.climatology import check_climatology, climatology_positions
from earthcast.scoring.ensemble import ENSEMBLE_DIMS

_RENAMES = {"lat": "latitude", "lon": "longitude", "init_time": "time", "lead_time": "prediction_timedelta"}
FORECAST_DIMS = ("time", "prediction_timedelta", "latitude", "longitude")


def normalise(ds: xr.Dataset) -> xr.Dataset:
    """Rename WB2 variants, make latitude ascending and longitude contiguous (0…360 on global grids; the
    data layer's rules, :mod:`earthcast.datasets.normalize`), lazily."""
    ds = ds.rename({k: v for k, v in _RENAMES.items() if k in ds.dims or k in ds.coords})
    if "valid_time" in ds.coords and ds["valid_time"].dims != ("time", "prediction_timedelta"):
        ds = ds.drop_vars("valid_time")  # WB2's derived by-valid coordinate; (init, lead) ones are kept
    return make_longitude_contiguous(make_latitude_increasing(ds))


def _same_grid(ds: xr.Dataset, ref: xr.Dataset, what: str) -> xr.Dataset:
    problem = grid_mismatch(ds["latitude"], ds["longitude"], ref["latitude"], ref["longitude"])
    if problem:
        raise DataError(
            f"The {what} grid does not match the truth grid: {problem}. Regrid the {what} to the truth's "
            "grid (WB2 uses first-order conservative regridding) or score against a truth on the same grid."
        )
    return ds.assign_coords(latitude=ref["latitude"], longitude=ref["longitude"])


def time_step(times: np.ndarray) -> np.timedelta64 | None:
    """The truth's time step: the smallest positive spacing of its times (None for a single time)."""
    diffs = np.diff(np.sort(np.asarray(times, dtype="datetime64[ns]")))
    diffs = diffs[diffs > np.timedelta64(0, "ns")]
    return diffs.min() if diffs.size else None


def truth_positions(
    truth_times: np.ndarray, valid_times: np.ndarray, what: str = "valid times"
) -> np.ndarray:
    """Index of each of ``valid_times`` in ``truth_times``; raises listing the first few that are missing."""
    index = pd.DatetimeIndex(np.asarray(truth_times, dtype="datetime64[ns]"))
    flat = np.asarray(valid_times, dtype="datetime64[ns]").ravel()
    pos = index.get_indexer(flat)
    if (pos < 0).any():
        missing = pd.DatetimeIndex(np.unique(flat[pos < 0]))
        shown = ", ".join(str(t) for t in missing[:5])
        raise DataError(
            f"The truth lacks {missing.size} of the forecast's {what}, e.g. {shown}. The truth covers "
            f"{index.min()} … {index.max()}: extend it to cover every init + lead (WB2: ERA5 through "
            "2021-01-10 for 2020 inits at 10 days), or restrict the inits (--init-start/--init-end)."
        )
    return pos.reshape(np.shape(valid_times))


@dataclass
class Aligned:
    """Forecast, truth and climatology checked and aligned for scoring.

    Attributes:
        forecast: (time, prediction_timedelta, [level], [member], latitude, longitude) per variable.
        truth: (time, [level], latitude, longitude) per variable, on the same grid.
        climatology: (hour, dayofyear, [level], latitude, longitude) or None.
        variables: names to score, present in forecast and truth.
        ensemble_dim: member dimension of the forecast, or None.
        init_times: (I,) datetime64[ns]; lead_times: (L,) timedelta64[ns].
        valid_pos: (I, L) index of init + lead in ``truth.time``.
        clim_pos: (I, L) flat (hour, dayofyear) index into the climatology, or None.
        land_sea_mask: (H, W) land fraction or None.
    """

    forecast: xr.Dataset
    truth: xr.Dataset
    climatology: xr.Dataset | None
    variables: list[str]
    ensemble_dim: str | None
    init_times: np.ndarray
    lead_times: np.ndarray
    valid_pos: np.ndarray
    clim_pos: np.ndarray | None
    land_sea_mask: np.ndarray | None


def _select_variables(forecast: xr.Dataset, truth: xr.Dataset, requested: list[str] | None) -> list[str]:
    scorable = [
        n
        for n, v in forecast.data_vars.items()
        if set(FORECAST_DIMS) <= set(v.dims) and n in truth.data_vars and "time" in truth[n].dims
    ]
    if not requested:
        if not scorable:
            raise DataError(
                f"No variable of the forecast ({sorted(forecast.data_vars)}) is also a time-dependent "
                f"variable of the truth ({sorted(truth.data_vars)}); check that both use WB2 names."
            )
        return scorable
    unknown = [n for n in requested if n not in scorable]
    if unknown:
        raise DataError(
            f"Unknown variable(s) {unknown}. Valid variables (in forecast and truth): {scorable}."
        )
    return list(dict.fromkeys(requested))


def _select_levels(ds: xr.Dataset, levels: list[int] | None, what: str) -> xr.Dataset:
    if levels is None or "level" not in ds.dims:
        return ds
    have = [int(v) for v in ds["level"].values]
    missing = [lv for lv in levels if lv not in have]
    if missing:
        raise DataError(f"Level(s) {missing} hPa are not in the {what}; it has {have}. Pick from those.")
    return ds.sel(level=list(levels))


def _ensemble_dim(forecast: xr.Dataset, requested: str | None) -> str | None:
    if requested is not None:
        if requested not in forecast.dims:
            raise DataError(
                f"Ensemble dimension {requested!r} is not in the forecast dims {list(forecast.dims)}; "
                f"use one of {ENSEMBLE_DIMS} or omit it for a deterministic forecast."
            )
        return requested
    found = [d for d in ENSEMBLE_DIMS if d in forecast.dims]
    if len(found) > 1:
        raise DataError(f"The forecast has both {found}; pass ensemble_dim to say which holds the members.")
    return found[0] if found else None


def align(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    climatology: xr.Dataset | None = None,
    *,
    variables: list[str] | None = None,
    levels: list[int] | None = None,
    ensemble_dim: str | None = None,
    land_sea_mask: xr.DataArray | None = None,
) -> Aligned:
    """Check and align the inputs; see :class:`Aligned`. Nothing is loaded except coordinates."""
    forecast, truth = normalise(forecast), normalise(truth)
    missing_dims = [d for d in FORECAST_DIMS if d not in forecast.dims]
    if missing_dims:
        raise DataError(
            f"The forecast lacks dims {missing_dims} (has {list(forecast.dims)}). earthcast scores the WB2 "
            "by-init layout: time = init, prediction_timedelta = lead, [level], [number], latitude, longitude."
        )
    if "time" not in truth.dims:
        raise DataError(
            f"The truth needs a 'time' dimension (has {list(truth.dims)}), like WB2's ERA5 stores."
        )
    forecast = _same_grid(forecast, truth, "forecast")
    names = _select_variables(forecast, truth, variables)
    member = _ensemble_dim(forecast, ensemble_dim)
    forecast = _select_levels(forecast[names], levels, "forecast")
    if "level" in forecast.dims:
        levels = [int(v) for v in forecast["level"].values]
    lsm = land_sea_mask if land_sea_mask is not None else truth.get("land_sea_mask")
    truth = _select_levels(truth[names], levels, "truth")
    inits = np.asarray(forecast["time"].values, dtype="datetime64[ns]")
    leads = np.asarray(forecast["prediction_timedelta"].values, dtype="timedelta64[ns]")
    step = time_step(truth["time"].values)
    if "valid_time" in forecast.coords:  # a calendar-month forecast: true valid times per (init, lead)
        valid = np.asarray(forecast["valid_time"].values, dtype="datetime64[ns]")
    else:
        valid = inits[:, None] + leads[None, :]
    if step is not None and "valid_time" not in forecast.coords:
        bad = [lead for lead in leads if lead % step != np.timedelta64(0, "ns")]
        if bad:
            raise DataError(
                f"Lead(s) {[str(pd.Timedelta(b)) for b in bad[:5]]} are not multiples of the truth's time step "
                f"{pd.Timedelta(step)}; score only leads on the truth's step (e.g. forecast.sel("
                "prediction_timedelta=...)) or use a truth with a finer time step."
            )
    valid_pos = truth_positions(truth["time"].values, valid)
    clim_pos = None
    if climatology is not None:
        climatology = _same_grid(check_climatology(normalise(climatology)), truth, "climatology")
        climatology = _select_levels(climatology, levels, "climatology")
        clim_pos = climatology_positions(climatology, valid)
    if lsm is not None:
        lsm_ds = _same_grid(normalise(lsm.squeeze(drop=True).to_dataset(name="lsm")), truth, "land-sea mask")
        lsm = np.asarray(lsm_ds["lsm"].transpose("latitude", "longitude").values, dtype=np.float64)
    return Aligned(forecast, truth, climatology, names, member, inits, leads, valid_pos, clim_pos, lsm)

"""WB2-style climatology: builder, look-up at valid times, and the climatology/persistence baselines.

Builder recipe (WB2 ``utils.compute_hourly_stat`` → ``compute_rolling_stat``), per hour of day h and per
grid point: stack the years by day of year (1…366; non-leap years have no day 366), fill every gap with
the same year's day 365, pad the day axis periodically by half a window, and take the weighted mean over
a ``window``-day triangular window × all years, skipping NaNs. The triangular weights are
``linspace(0, 1, n+1)`` followed by ``linspace(1, 0, n+1)[1:]`` with n = window // 2 (so the two end
weights are 0). Output dims ``(hour, dayofyear, [level], latitude, longitude)``, float32, under the
truth's variable names.

Deviation: the day axis is always 1…366. WB2 uses the union of days present, which is the same for any
period containing a leap year (the published 1990–2019 climatologies) but differs for a single non-leap
year.
"""

from __future__ import annotations

from collections.abc import Iterator

import dask
import numpy as np
import pandas as pd
import xarray as xr

from earthcast.distributed import compute
from earthcast.errors import DataError

N_DAYS = 366


def triangular_window_weights(window: int) -> np.ndarray:
    """WB2 ``create_window_weights``: (window,) linearly rising then falling weights with mean 1."""
    if window < 1 or window % 2 == 0:
        raise DataError(f"window must be a positive odd number of days (WB2 uses 61), got {window}.")
    if window == 1:
        return np.ones(1)
    half = window // 2
    weights = np.concatenate([np.linspace(0, 1, half + 1), np.linspace(1, 0, half + 1)[1:]])
    return weights / weights.mean()


def rolling_hour_climatology(
    values: np.ndarray, years: np.ndarray, dayofyear: np.ndarray, window: int
) -> np.ndarray:
    """Windowed climatology of one hour of day.

    Args:
        values: (T, P) samples of one hour of day at P points.
        years, dayofyear: (T,) integer year and day of year (1…366) of each sample.
        window: odd window length in days.

    Returns:
        (366, P) float64 climatological mean per day of year.
    """
    unique_years, year_pos = np.unique(years, return_inverse=True)
    stacked = np.full((unique_years.size, N_DAYS, values.shape[1]), np.nan)
    stacked[year_pos, dayofyear - 1] = values
    stacked = np.where(np.isnan(stacked), stacked[:, 364:365], stacked)
    half = window // 2
    valid = ~np.isnan(stacked)
    total = np.where(valid, stacked, 0.0).sum(axis=0)
    count = valid.sum(axis=0).astype(np.float64)
    idx = np.arange(-half, N_DAYS + half) % N_DAYS
    total, count = total[idx], count[idx]
    weights = triangular_window_weights(window)
    num = np.zeros((N_DAYS, values.shape[1]))
    den = np.zeros((N_DAYS, values.shape[1]))
    for k, w in enumerate(weights):
        if w:
            num += w * total[k : k + N_DAYS]
            den += w * count[k : k + N_DAYS]
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.where(den > 0, den, np.nan)


def _block_climatology(
    block: np.ndarray, at_hour: np.ndarray, years: np.ndarray, dayofyear: np.ndarray, window: int
) -> np.ndarray:
    """Climatology of one slice of the truth, every hour of day: one Dask task.

    Args:
        block: (T, *S) samples of the kept times at the slice's points.
        at_hour: (n_hours, T) which samples fall on each climatology hour.
        years, dayofyear: (T,) integer year and day of year of each sample.
        window: odd window length in days.

    Returns:
        (n_hours, 366, *S) float32 climatology.
    """
    flat = np.asarray(block, dtype=np.float64).reshape(block.shape[0], -1)
    out = np.empty((at_hour.shape[0], N_DAYS, flat.shape[1]), dtype=np.float32)
    for h, mask in enumerate(at_hour):
        out[h] = rolling_hour_climatology(flat[mask], years[mask], dayofyear[mask], window)
    return out.reshape(at_hour.shape[0], N_DAYS, *block.shape[1:])


def _slices(da: xr.DataArray, max_bytes: int) -> Iterator[dict[str, object]]:
    """isel dicts over level and latitude bands so that one (time, band) slice stays under max_bytes."""
    levels = range(da.sizes["level"]) if "level" in da.dims else [None]
    row_bytes = da.sizes["time"] * da.sizes["longitude"] * 8
    band = max(1, min(da.sizes["latitude"], max_bytes // max(row_bytes, 1)))
    for level in levels:
        for start in range(0, da.sizes["latitude"], band):
            sel: dict[str, object] = {"latitude": slice(start, start + band)}
            if level is not None:
                sel["level"] = level
            yield sel


def build_climatology(
    truth: xr.Dataset,
    *,
    start_year: int | None = None,
    end_year: int | None = None,
    hour_interval: int | None = None,
    window: int = 61,
    variables: list[str] | None = None,
    max_bytes: int = 256 * 2**20,
    progress: bool = False,
) -> xr.Dataset:
    """Compute a WB2 hour × dayofyear climatology of ``truth``.

    Args:
        truth: (time, [level], latitude, longitude) dataset, e.g. ERA5.
        start_year, end_year: inclusive year range (default: all years in ``truth``).
        hour_interval: hours between the climatology's hours of day (6 → 0, 6, 12, 18); default: from the
            truth's hours of day (6 for 6-hourly data, 24 for daily or monthly data stamped at 00 UTC).
        window: odd window length in days (61).
        variables: names to include (default: every variable with a time dimension).
        max_bytes: memory bound of one slice read from ``truth`` (one Dask task); slices run in parallel,
            one per thread (threaded scheduler) or per worker thread (``dask.distributed``).
        progress: show a progress bar.

    Returns:
        Dataset (hour, dayofyear, [level], latitude, longitude), float32, attrs copied.
    """
    if "time" not in truth.dims:
        raise DataError("build_climatology needs a truth dataset with a 'time' dimension (e.g. ERA5).")
    times = pd.DatetimeIndex(truth["time"].values)
    if hour_interval is None:  # the spacing of the hours of day present: gcd of their gaps around the clock
        present = np.unique(times.hour)
        hour_interval = int(np.gcd.reduce(np.diff(np.append(present, present[0] + 24))))
    if 24 % hour_interval:
        raise DataError(f"hour_interval must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24), got {hour_interval}.")
    first, last = times.year.min(), times.year.max()
    start_year = first if start_year is None else start_year
    end_year = last if end_year is None else end_year
    in_years = (times.year >= start_year) & (times.year <= end_year)
    if not in_years.any():
        raise DataError(
            f"No truth times in {start_year}–{end_year}; the truth covers {first}–{last}. "
            "Choose --start-year/--end-year inside that range."
        )
    names = variables or [n for n, v in truth.data_vars.items() if "time" in v.dims]
    missing = [n for n in names if n not in truth.data_vars]
    if missing:
        raise DataError(f"Variables {missing} are not in the truth; valid ones: {sorted(truth.data_vars)}.")
    hours = np.arange(0, 24, hour_interval)
    kept = np.flatnonzero(in_years)
    t = times[kept]
    for hour in hours:
        if not (t.hour == hour).any():
            raise DataError(f"The truth has no samples at {hour:02d} UTC; use a larger --hour-interval.")
    # one graph key each, shared by every task (not copied into each one)
    at_hour, years, days = (
        dask.delayed(x, pure=True)
        for x in (t.hour.values[None, :] == hours[:, None], t.year.values, t.day_of_year.values)
    )
    block_climatology = dask.delayed(_block_climatology, pure=True)
    jobs, tasks, out = [], [], {}
    for n in names:
        da = truth[n].transpose("time", ..., "latitude", "longitude")
        shape = (hours.size, N_DAYS, *[da.sizes[d] for d in da.dims[1:]])
        out[n] = xr.DataArray(
            np.full(shape, np.nan, dtype=np.float32),
            dims=("hour", "dayofyear", *da.dims[1:]),
            coords={d: da[d] for d in da.dims[1:]},
            attrs=da.attrs,
        )
        rows = da if kept.size == times.size else da.isel(time=kept)
        for sel in _slices(da, max_bytes):
            jobs.append((n, sel))
            tasks.append(block_climatology(rows.isel(sel).data, at_hour, years, days, window))
    for (name, sel), clim in zip(jobs, compute(tasks, progress=progress, desc="climatology")):
        out[name][sel] = clim
    result = xr.Dataset(out).assign_coords(hour=hours, dayofyear=np.arange(1, N_DAYS + 1))
    result.attrs = {
        "description": f"WB2-style climatology {start_year}-{end_year}, {window}-day triangular window",
        "start_year": int(start_year),
        "end_year": int(end_year),
        "window_days": int(window),
        "hour_interval": int(hour_interval),
    }
    return result


def check_climatology(climatology: xr.Dataset) -> xr.Dataset:
    """Validate a climatology's layout; a missing ``hour`` dim (daily climatology) is broadcast as WB2 does.

    Returns:
        The climatology with an ``hour`` dimension.
    """
    if "dayofyear" not in climatology.dims:
        hint = (
            " It has a 'time' dimension, so it looks like a truth store."
            if "time" in climatology.dims
            else ""
        )
        raise DataError(
            f"The climatology has dims {dict(climatology.sizes)} but needs 'hour' and 'dayofyear' dims "
            f"(WB2 layout (hour, dayofyear, [level], latitude, longitude)).{hint} Build one with "
            "`earthcast climatology --truth T --out C.zarr`."
        )
    if "hour" not in climatology.dims:
        climatology = climatology.expand_dims(hour=[0])
    return climatology


def climatology_variable(climatology: xr.Dataset, name: str) -> xr.DataArray:
    """The climatological mean of ``name``, also found as ``{name}_mean`` (WB2 accepts both)."""
    for key in (name, f"{name}_mean"):
        if key in climatology.data_vars:
            return climatology[key]
    raise DataError(
        f"The climatology has no {name!r} (nor {name}_mean); it holds {sorted(climatology.data_vars)}. "
        "Build one for this variable with `earthcast climatology`, or drop ACC/climatology for it."
    )


def climatology_positions(climatology: xr.Dataset, valid_times: np.ndarray) -> np.ndarray:
    """Flat (hour, dayofyear) positions of each valid time: ``hour_pos * n_dayofyear + doy_pos``.

    A climatology with a single hour (daily) matches every hour. Raises if a valid time's hour or day of
    year is not in the climatology.
    """
    times = pd.DatetimeIndex(np.asarray(valid_times).ravel())
    hours = np.asarray(climatology["hour"].values)
    days = pd.Index(np.asarray(climatology["dayofyear"].values))
    doy_pos = days.get_indexer(times.day_of_year)
    hour_pos = (
        np.zeros(times.size, dtype=np.int64) if hours.size == 1 else pd.Index(hours).get_indexer(times.hour)
    )
    bad = (doy_pos < 0) | (hour_pos < 0)
    if bad.any():
        raise DataError(
            f"The climatology has hours {hours.tolist()} and days {days.min()}…{days.max()}, which do not "
            f"cover valid time {times[bad][0]}; rebuild it with a matching --hour-interval."
        )
    return (hour_pos * days.size + doy_pos).reshape(np.shape(valid_times))


def persistence_forecast(truth: xr.Dataset, init_times: np.ndarray, lead_times: np.ndarray) -> xr.Dataset:
    """Persistence baseline in the by-init layout: the truth at each init, repeated over every lead.

    Returns:
        (time=init, prediction_timedelta, [level], latitude, longitude), lazy if ``truth`` is.
    """
    fields = truth[[n for n, v in truth.data_vars.items() if "time" in v.dims]]
    at_init = fields.sel(time=np.asarray(init_times))
    leads = xr.DataArray(np.asarray(lead_times, dtype="timedelta64[ns]"), dims="prediction_timedelta")
    out = at_init.expand_dims(prediction_timedelta=leads.size).assign_coords(prediction_timedelta=leads)
    return out.transpose("time", "prediction_timedelta", ...)


def climatology_forecast(
    climatology: xr.Dataset, init_times: np.ndarray, lead_times: np.ndarray, variables: list[str]
) -> xr.Dataset:
    """Climatology baseline in the by-init layout: the climatology at each valid time's (dayofyear, hour).

    Returns:
        (time=init, prediction_timedelta, [level], latitude, longitude) for ``variables``.
    """
    clim = check_climatology(climatology)
    inits = np.asarray(init_times, dtype="datetime64[ns]")
    leads = np.asarray(lead_times, dtype="timedelta64[ns]")
    valid = inits[:, None] + leads[None, :]
    pos = climatology_positions(clim, valid)
    hour_idx = xr.DataArray(pos // clim.sizes["dayofyear"], dims=("time", "prediction_timedelta"))
    doy_idx = xr.DataArray(pos % clim.sizes["dayofyear"], dims=("time", "prediction_timedelta"))
    data = {}
    for name in variables:
        da = climatology_variable(clim, name).isel(hour=hour_idx, dayofyear=doy_idx)
        data[name] = da.drop_vars(["hour", "dayofyear"], errors="ignore")
    out = xr.Dataset(data).assign_coords(time=inits, prediction_timedelta=leads)
    return out.transpose("time", "prediction_timedelta", ...)

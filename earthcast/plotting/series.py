"""Global-mean time series of long (e.g. year-long) rollouts against the truth.

The global mean is WB2's area mean (sin-difference cell weights, :mod:`earthcast.scoring.weights`). The
truth is drawn with a ±1σ band, where σ is the climatological standard deviation of the truth's global
mean: the standard deviation over the plotted valid times of the truth's global mean minus the
climatology's global mean at the same (dayofyear, hour). Without a climatology the seasonal cycle stays
in, and σ is the plain standard deviation of the truth's global mean over the plotted period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from earthcast.errors import DataError
from earthcast.grids import GEOMETRY_ATTR, grid_geometry
from earthcast.plotting.figures import (
    field_name,
    fields_of,
    file_stem,
    new_figure,
    save_png,
    select_field,
    units_label,
)
from earthcast.plotting.maps import ENSEMBLE_DIMS, pick_init
from earthcast.scoring.weights import latitude_weights


def global_mean(field: xr.DataArray) -> xr.DataArray:
    """Area mean over ``latitude`` and ``longitude`` with the grid's weights (WB2's on a global grid;
    ascending latitude; NaNs propagate)."""
    geometry = grid_geometry(
        field["latitude"].values, field["longitude"].values, field.attrs.get(GEOMETRY_ATTR)
    )
    weights = xr.DataArray(latitude_weights(field["latitude"].values, geometry), dims="latitude")
    return field.weighted(weights).mean(("latitude", "longitude"), skipna=False)


@dataclass(frozen=True)
class GlobalMeanSeries:
    """Global means along valid time for one field.

    Attributes:
        init_time: init of the forecast run.
        forecast: (valid_time, [member]) forecast global mean, in the field's units.
        truth: (valid_time,) truth global mean at the forecast valid times the truth holds.
        sigma: climatological standard deviation of the truth's global mean (same units).
        anomaly_based: True when ``sigma`` was measured about a climatology, False about the period mean.
    """

    init_time: pd.Timestamp
    forecast: xr.DataArray
    truth: xr.DataArray
    sigma: float
    anomaly_based: bool


def _climatology_field(climatology: xr.Dataset, variable: str, level: int | None) -> xr.DataArray:
    name = variable if variable in climatology.data_vars else f"{variable}_mean"
    missing = [d for d in ("hour", "dayofyear") if d not in climatology.dims]
    if missing:
        raise DataError(
            f"The climatology lacks the {'/'.join(missing)} dim(s); it needs WB2's (hour, dayofyear, …) layout. "
            "Build one with `earthcast climatology`."
        )
    if name not in climatology.data_vars:
        raise DataError(f"The climatology has neither {variable!r} nor {variable + '_mean'!r}.")
    return select_field(climatology.rename({name: variable}), variable, level)


def global_mean_series(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variable: str,
    *,
    level: int | None = None,
    init: str | pd.Timestamp | None = None,
    climatology: xr.Dataset | None = None,
) -> GlobalMeanSeries:
    """Global means of one init's forecast (default: the first) and of the truth at its valid times.

    Raises:
        ValueError: the truth shares no valid time with the forecast, or the climatology lacks
            ``hour``/``dayofyear`` or a valid time's hour.
    """
    fc = select_field(forecast, variable, level)
    init_time = pick_init(fc, init)
    fc = fc.sel(time=init_time)
    valid = init_time + pd.to_timedelta(fc["prediction_timedelta"].values)
    fc_mean = global_mean(fc).rename(prediction_timedelta="valid_time").assign_coords(valid_time=valid.values)
    members = [d for d in ENSEMBLE_DIMS if d in fc_mean.dims]
    fc_mean = fc_mean.transpose("valid_time", *members).compute()
    tr = select_field(truth, variable, level)
    common = valid[valid.isin(pd.DatetimeIndex(tr["time"].values))]
    if common.empty:
        times = pd.DatetimeIndex(tr["time"].values)
        raise DataError(
            f"The truth ({times[0]} to {times[-1]}) holds none of the forecast valid times ({valid[0]} to "
            f"{valid[-1]}); pass the truth for the forecast period."
        )
    tr_mean = global_mean(tr.sel(time=common)).rename(time="valid_time").compute()
    if climatology is None:
        return GlobalMeanSeries(init_time, fc_mean, tr_mean, float(tr_mean.std()), anomaly_based=False)
    clim_mean = global_mean(_climatology_field(climatology, variable, level)).compute()
    hours = [int(h) for h in clim_mean["hour"].values]
    if not set(common.hour).issubset(hours):
        raise DataError(
            f"The climatology holds hours {hours}, but valid times fall at hours {sorted(set(common.hour))}; "
            "use a climatology with those hours of day."
        )
    at_valid = clim_mean.sel(
        dayofyear=xr.DataArray(common.day_of_year.to_numpy(), dims="valid_time"),
        hour=xr.DataArray(common.hour.to_numpy(), dims="valid_time"),
    )
    anomaly = tr_mean.values - at_valid.values
    return GlobalMeanSeries(init_time, fc_mean, tr_mean, float(np.std(anomaly)), anomaly_based=True)


def plot_global_mean_series(series: GlobalMeanSeries, *, title: str, units: str = "") -> Figure:
    """Forecast global mean (members thin, their mean thick) over the truth and its ±1σ band."""
    fig = new_figure(9.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    truth_t = series.truth["valid_time"].values
    band = "±1σ (climatological anomaly)" if series.anomaly_based else "±1σ (over the period)"
    ax.fill_between(
        truth_t, series.truth - series.sigma, series.truth + series.sigma, color="0.8", label=f"truth {band}"
    )
    ax.plot(truth_t, series.truth, color="black", linewidth=1.2, label="truth")
    fc = series.forecast
    fc_t = fc["valid_time"].values
    members = [d for d in fc.dims if d != "valid_time"]
    if members:
        ax.plot(fc_t, fc.values.reshape(fc_t.size, -1), color="tab:blue", linewidth=0.5, alpha=0.5)
        fc = fc.mean(members)
    ax.plot(
        fc_t, fc.values, color="tab:blue", linewidth=1.6, label="forecast" + (" (mean)" if members else "")
    )
    ax.set_xlabel("valid time")
    ax.set_ylabel(f"global mean {units}".strip())
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_series_plots(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variables: Iterable[str],
    out: str | Path,
    *,
    levels: Iterable[int] | None = None,
    init: str | pd.Timestamp | None = None,
    climatology: xr.Dataset | None = None,
) -> list[Path]:
    """Write ``series_{field}.png`` for each field; return the paths."""
    written: list[Path] = []
    for variable, level in fields_of(forecast, variables, levels):
        series = global_mean_series(
            forecast, truth, variable, level=level, init=init, climatology=climatology
        )
        title = f"{field_name(variable, level)}: global mean (run from {series.init_time:%Y-%m-%d %H:%M})"
        fig = plot_global_mean_series(series, title=title, units=units_label(forecast[variable]))
        written.append(save_png(fig, Path(out) / f"series_{file_stem(variable, level)}.png"))
    return written

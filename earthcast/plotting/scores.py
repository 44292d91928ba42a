"""Skill against lead time (RMSE, ACC, bias, …) for a model and its baselines, from WB2 results files.

A results Dataset has one data variable per field and dims ``(metric, [region], lead_time, [level])``
with string ``metric``/``region`` coordinates and a timedelta64 ``lead_time``, as ``earthcast score`` and
WB2's ``evaluate`` write it. WB2 stores ``mse`` and users take its square root; so when ``rmse`` is
asked for and only ``mse`` is stored, ``rmse = sqrt(mse)`` (the square root after the time mean).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from earthcast.errors import DataError
from earthcast.plotting.figures import field_name, fields_of, file_stem, lead_days, new_figure, save_png

HIGHER_IS_BETTER = frozenset({"acc"})
"""Metrics where a larger value is better skill; every other metric is better when smaller."""

SQUARED_UNITS = frozenset(
    {"mse", "wind_vector_mse", "ensemble_mean_mse", "debiased_ensemble_mean_mse", "ensemble_variance"}
)
"""Metrics whose units are the field's units squared."""

UNITLESS = frozenset({"acc", "seeps_24hr", "seeps_6hr", "spread_skill_ratio"})
"""Metrics without units."""


def metric_values(
    results: xr.Dataset, variable: str, metric: str, *, region: str = "global", level: int | None = None
) -> xr.DataArray:
    """One metric of one field against ``lead_time``: a 1-D DataArray (lead_time,).

    ``rmse`` falls back to ``sqrt(mse)`` when the file stores only ``mse`` (WB2's convention).

    Raises:
        ValueError: the variable, metric, region or level is not in ``results``.
    """
    if variable not in results.data_vars:
        known = ", ".join(map(str, results.data_vars)) or "none"
        raise DataError(f"Variable {variable!r} is not in the results file; it holds: {known}.")
    if "metric" not in results.dims or "lead_time" not in results.dims:
        raise DataError(
            f"Not a WB2 results dataset: dims are {dict(results.sizes)}, expected (metric, region, lead_time, "
            "[level]). Pass the netCDF written by `earthcast score`."
        )
    da = results[variable]
    stored = [str(m) for m in results["metric"].values]
    if metric in stored:
        da = da.sel(metric=metric)
    elif metric == "rmse" and "mse" in stored:
        da = np.sqrt(da.sel(metric="mse"))
    else:
        raise DataError(f"Metric {metric!r} is not in the results file; it holds: {', '.join(stored)}.")
    if "region" in da.dims:
        regions = [str(r) for r in results["region"].values]
        if region not in regions:
            raise DataError(f"Region {region!r} is not in the results file; it holds: {', '.join(regions)}.")
        da = da.sel(region=region)
    if "level" in da.dims:
        if level is None or int(level) not in {int(v) for v in da["level"].values}:
            levels = ", ".join(str(int(v)) for v in da["level"].values)
            raise DataError(f"{variable!r} needs a level from the results file ({levels} hPa); got {level}.")
        da = da.sel(level=int(level))
    elif level is not None:
        raise DataError(f"{variable!r} has no level dimension in the results file; drop the level for it.")
    return da.drop_vars([c for c in ("metric", "region", "level") if c in da.coords])


def has_metric(results: xr.Dataset, metric: str) -> bool:
    """Whether ``results`` stores ``metric`` (``rmse`` also counts as stored when ``mse`` is)."""
    stored = {str(m) for m in results["metric"].values} if "metric" in results.coords else set()
    return metric in stored or (metric == "rmse" and "mse" in stored)


def metric_axis_label(metric: str, units: str | None) -> str:
    """Y-axis label of a metric, with units derived from the field's units."""
    if metric in UNITLESS or not units:
        return metric.upper() if metric in UNITLESS else metric
    return f"{metric} [({units})²]" if metric in SQUARED_UNITS else f"{metric} [{units}]"


def plot_scores(
    results: Mapping[str, xr.Dataset],
    variable: str,
    *,
    metrics: Sequence[str] = ("rmse", "acc"),
    region: str = "global",
    level: int | None = None,
) -> Figure:
    """One panel per metric, skill against lead time [days]; one line per named results Dataset.

    The first entry of ``results`` is the model (solid, thick); the rest are baselines (dashed). A metric
    that none of the files holds is left out (e.g. ``acc`` when scored without a climatology); a file
    that lacks it or the variable is skipped in that panel.
    """
    if not results:
        raise DataError("plot_scores needs at least one results dataset.")
    panels: list[tuple[str, list[tuple[str, xr.DataArray]]]] = []
    for metric in metrics:
        holders = {name: ds for name, ds in results.items() if has_metric(ds, metric) and variable in ds}
        lines = [
            (name, metric_values(ds, variable, metric, region=region, level=level))
            for name, ds in holders.items()
        ]
        if lines:
            panels.append((metric, lines))
    if not panels:
        stored = sorted({str(m) for ds in results.values() for m in ds["metric"].values})
        raise DataError(
            f"None of the metrics {list(metrics)} is in the results; they hold: {', '.join(stored)}."
        )
    fig = new_figure(4.6 * len(panels), 3.6)
    units = next(iter(results.values()))[variable].attrs.get("units")
    for i, (metric, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, (name, values) in enumerate(lines):
            style = (
                {"linewidth": 2.2, "marker": "o", "markersize": 3}
                if j == 0
                else {"linestyle": "--", "linewidth": 1.4}
            )
            ax.plot(lead_days(values["lead_time"].values), values.values, label=name, **style)
        ax.set_xlabel("lead time [days]")
        ax.set_ylabel(metric_axis_label(metric, units))
        ax.set_title(f"{field_name(variable, level)}: {metric.upper()} ({region})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def write_score_plots(
    results: Mapping[str, xr.Dataset],
    out: str | Path,
    *,
    variables: Iterable[str] | None = None,
    levels: Iterable[int] | None = None,
    metrics: Sequence[str] = ("rmse", "acc"),
    region: str = "global",
) -> list[Path]:
    """Write ``scores_{field}.png`` for each field of the first (model) results file; return the paths."""
    model = next(iter(results.values()))
    chosen = list(model.data_vars) if variables is None else list(variables)
    written: list[Path] = []
    for variable, level in fields_of(model, chosen, levels):
        fig = plot_scores(results, variable, metrics=metrics, region=region, level=level)
        written.append(save_png(fig, Path(out) / f"scores_{file_stem(variable, level)}.png"))
    return written

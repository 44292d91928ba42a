"""``engine="weatherbench2"``: the same scoring, with the metric arithmetic done by ``weatherbench2.metrics``.

earthcast still checks and aligns the inputs (:func:`earthcast.scoring.inputs.align`), builds the baselines
and writes the results layout; WB2's own ``Metric.compute`` classes (which import without Beam) produce
every number. weatherbench2 is not on PyPI: install it from a source checkout
(``pip install git+https://github.com/google-research/weatherbench2``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from earthcast.errors import DataError, MissingDependencyError
from earthcast.scoring.climatology import climatology_forecast, persistence_forecast
from earthcast.scoring.evaluate import SOURCES, WIND_VECTORS, results_dataset
from earthcast.scoring.inputs import Aligned, align
from earthcast.scoring.regions import Region, resolve_regions
from earthcast.scoring.seeps import SEEPS_VARIABLES


def _import_weatherbench2() -> tuple[Any, Any]:
    try:
        from weatherbench2 import metrics, regions
    except ImportError as err:
        raise MissingDependencyError(
            "engine='weatherbench2' needs the weatherbench2 package, which is not on PyPI. Install it from "
            "source (pip install git+https://github.com/google-research/weatherbench2) or use "
            "engine='earthcast', which implements the same definitions."
        ) from err
    return metrics, regions


def _wb2_region(region: Region, wr: Any, land_sea_mask: xr.DataArray | None) -> Any:
    box = wr.SliceRegion(
        lat_slice=[slice(lo, hi) for lo, hi in region.lat_slices],
        lon_slice=[slice(lo, hi) for lo, hi in region.lon_slices],
    )
    if not region.land:
        return box
    return wr.CombinedRegion(regions=[box, wr.LandRegion(land_sea_mask=land_sea_mask)])


def _by_init_pair(a: Aligned, source: str) -> tuple[xr.Dataset, xr.Dataset]:
    if source == "persistence":
        forecast = persistence_forecast(a.truth, a.init_times, a.lead_times)
    elif source == "climatology":
        forecast = climatology_forecast(a.climatology, a.init_times, a.lead_times, a.variables)
    else:
        forecast = a.forecast
    index = xr.DataArray(a.valid_pos, dims=("init_time", "lead_time"))
    truth = a.truth.isel(time=index).drop_vars("time")
    coords = {"init_time": a.init_times, "lead_time": a.lead_times}
    forecast = forecast.rename(time="init_time", prediction_timedelta="lead_time").assign_coords(coords)
    truth = truth.assign_coords(coords)
    valid = forecast["init_time"] + forecast["lead_time"]
    return forecast.assign_coords(valid_time=valid).load(), truth.assign_coords(valid_time=valid).load()


def _metric_objects(a: Aligned, source: str, wm: Any, extras: tuple[str, ...]) -> dict[str, Any]:
    if source == "forecast" and a.ensemble_dim is not None:
        dim = a.ensemble_dim
        return {
            "crps": wm.CRPS(ensemble_dim=dim),
            "crps_spread": wm.CRPSSpread(ensemble_dim=dim),
            "crps_skill": wm.CRPSSkill(ensemble_dim=dim),
            "ensemble_mean_mse": wm.EnsembleMeanMSE(ensemble_dim=dim),
            "debiased_ensemble_mean_mse": wm.DebiasedEnsembleMeanMSE(ensemble_dim=dim),
            "ensemble_variance": wm.EnsembleVariance(ensemble_dim=dim),
        }
    winds = [
        wm.WindVectorMSE(u_name=u, v_name=v, vector_name=name)
        for name, (u, v) in WIND_VECTORS.items()
        if u in a.variables and v in a.variables
    ]
    out = {"mse": wm.MSE(wind_vector_mse=winds), "bias": wm.Bias(), "mae": wm.MAE()}
    if "rmse_sqrt_before_time_avg" in extras:
        rmse_winds = [wm.WindVectorRMSESqrtBeforeTimeAvg(w.u_name, w.v_name, w.vector_name) for w in winds]
        out["rmse_sqrt_before_time_avg"] = wm.RMSESqrtBeforeTimeAvg(wind_vector_rmse=rmse_winds)
    if a.climatology is not None:
        out["acc"] = wm.ACC(climatology=a.climatology)
        for name, (metric, dry_mm) in SEEPS_VARIABLES.items():
            if name in a.variables and f"{name}_seeps_threshold" in a.climatology:
                out[metric] = wm.SEEPS(climatology=a.climatology, precip_name=name, dry_threshold_mm=dry_mm)
    return out


def score_with_weatherbench2(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    climatology: xr.Dataset | None = None,
    *,
    source: str = "forecast",
    variables: list[str] | None = None,
    levels: list[int] | None = None,
    regions: list[str] | None = None,
    ensemble_dim: str | None = None,
    land_sea_mask: xr.DataArray | None = None,
    extra_metrics: tuple[str, ...] = (),
) -> xr.Dataset:
    """Like :func:`earthcast.scoring.evaluate.score`, with ``weatherbench2.metrics`` doing the arithmetic."""
    wm, wr = _import_weatherbench2()
    if source not in SOURCES:
        raise DataError(f"Unknown source {source!r}; choose one of {SOURCES}.")
    a = align(
        forecast, truth, climatology, variables=variables, levels=levels,
        ensemble_dim=ensemble_dim, land_sea_mask=land_sea_mask,
    )  # fmt: skip
    region_list = resolve_regions(regions, have_land_sea_mask=a.land_sea_mask is not None)
    lsm = None
    if a.land_sea_mask is not None:
        grid = {"latitude": a.truth["latitude"].values, "longitude": a.truth["longitude"].values}
        lsm = xr.DataArray(a.land_sea_mask, dims=("latitude", "longitude"), coords=grid)
    fc, tr = _by_init_pair(a, source)
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    for metric_name, metric in _metric_objects(a, source, wm, extra_metrics).items():
        for region in region_list:
            result = metric.compute(fc, tr, region=_wb2_region(region, wr, lsm))
            for var in result.data_vars:
                order = ["lead_time", *(["level"] if "level" in result[var].dims else [])]
                scores.setdefault(var, {}).setdefault(metric_name, []).append(
                    result[var].transpose(*order).values
                )
    stacked = {v: {m: np.stack(arrs, axis=-1) for m, arrs in by.items()} for v, by in scores.items()}
    for by_metric in stacked.values():
        if "mse" in by_metric:
            by_metric["rmse"] = np.sqrt(by_metric["mse"])
        if "ensemble_variance" in by_metric:
            var, mse = by_metric["ensemble_variance"], by_metric["ensemble_mean_mse"]
            by_metric["spread_skill"] = np.sqrt(var) / np.sqrt(mse)
            by_metric["unbiased_spread_skill"] = np.sqrt(var / by_metric["debiased_ensemble_mean_mse"])
    out = results_dataset(stacked, a, [r.name for r in region_list])
    out.attrs.update(source=source, n_inits=len(a.init_times), engine="weatherbench2")
    if source == "forecast" and a.ensemble_dim is not None:
        out.attrs["ensemble_size"] = int(a.forecast.sizes[a.ensemble_dim])
    return out

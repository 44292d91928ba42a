"""The scoring pipeline: a by-init forecast (or a baseline) against truth, in WB2's results layout.

The forecast ``(time=init, prediction_timedelta, [level], [number], latitude, longitude)`` is cut into
blocks of inits (and leads, for big grids); each block's truth is gathered exactly at
``valid_time = init + lead``, its climatology at the valid time's (hour, dayofyear), and all metrics of a
variable come out of one NumPy pass per block (:mod:`~earthcast.scoring.metrics`,
:mod:`~earthcast.scoring.ensemble`, :mod:`~earthcast.scoring.seeps`). Blocks are Dask tasks: inputs stay
lazy until they run, they run in parallel on the local scheduler, and on a ``dask.distributed`` cluster
when a Client is active.

Results (``xr.Dataset``): one data variable per field (plus ``wind_vector`` / ``10m_wind_vector``), dims
``(metric, region, lead_time[, level])``, string ``metric`` and ``region`` coords, timedelta64
``lead_time`` — the layout of WB2's ``evaluate.py`` netCDF output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import xarray as xr

from earthcast.distributed import compute
from earthcast.errors import DataError
from earthcast.grids import dataset_geometry
from earthcast.scoring.climatology import climatology_variable
from earthcast.scoring.ensemble import ENSEMBLE_METRICS, ensemble_block, ensemble_time_mean
from earthcast.scoring.inputs import Aligned, align, truth_positions
from earthcast.scoring.metrics import (
    AreaMean,
    deterministic_block,
    deterministic_time_mean,
    wind_vector_block,
)
from earthcast.scoring.regions import region_weights, resolve_regions
from earthcast.scoring.seeps import SEEPS_VARIABLES, seeps_block

SOURCES = ("forecast", "persistence", "climatology")
WIND_VECTORS = {
    "wind_vector": ("u_component_of_wind", "v_component_of_wind"),
    "10m_wind_vector": ("10m_u_component_of_wind", "10m_v_component_of_wind"),
}
BLOCK_BYTES = 16 * 2**20
"""Target float64 size of one forecast block (one Dask task)."""


@dataclass(frozen=True)
class _Job:
    kind: str  # "deterministic" | "ensemble" | "wind" | "seeps"
    output: str  # data variable of the results
    inputs: tuple[str, ...]
    metric: str = ""  # seeps metric name
    dry_mm: float = 0.0


def _canonical(da: xr.DataArray, lead: tuple[str, ...], member: str | None = None) -> Any:
    order = [*lead, *(["level"] if "level" in da.dims else []), *([member] if member in da.dims else [])]
    order += ["latitude", "longitude"]
    extra = [d for d in da.dims if d not in order]
    if extra:
        raise DataError(f"{da.name!r} has unexpected dims {extra}; expected {order}.")
    return da.transpose(*order).data


class _Gather:
    """Lazy rows of an array gathered at (I, L) positions along its first axis: ``rows[inverse]``."""

    def __init__(self, array: Any, positions: np.ndarray) -> None:
        unique, inverse = np.unique(positions, return_inverse=True)
        self.rows = array[unique]
        self.inverse = inverse.reshape(positions.shape)


def _expand(part: Any) -> np.ndarray:
    if isinstance(part, tuple):
        rows, inverse = part
        return np.asarray(rows)[inverse]
    return np.asarray(part)


def _run_block(
    job: _Job, fcs: list, truths: list, clim: Any, p1: Any, area: AreaMean
) -> dict[str, np.ndarray]:
    f = [_expand(x) for x in fcs]
    o = [_expand(x) for x in truths]
    if job.kind == "ensemble":
        return ensemble_block(f[0], o[0], area)
    if job.kind == "wind":
        return wind_vector_block(f[0], f[1], o[0], o[1], area)
    if job.kind == "seeps":
        return seeps_block(f[0], o[0], _expand(clim), p1, job.dry_mm, area)
    return deterministic_block(f[0], o[0], area, None if clim is None else _expand(clim))


class _Blocks:
    """Lazy per-block inputs of one source (forecast, persistence or climatology)."""

    def __init__(self, aligned: Aligned, source: str) -> None:
        self.a = aligned
        self.source = source
        if source == "persistence":
            self.init_pos = truth_positions(aligned.truth["time"].values, aligned.init_times, "init times")
        if source == "climatology" and aligned.climatology is None:
            raise DataError("The climatology baseline needs a climatology (--climatology C.zarr).")

    def truth(self, name: str, positions: np.ndarray) -> tuple:
        g = _Gather(_canonical(self.a.truth[name], ("time",)), positions)
        return (g.rows, g.inverse)

    def clim(self, da: xr.DataArray, positions: np.ndarray) -> tuple:
        arr = _canonical(da, ("hour", "dayofyear"))
        arr = arr.reshape((arr.shape[0] * arr.shape[1], *arr.shape[2:]))
        g = _Gather(arr, positions)
        return (g.rows, g.inverse)

    def forecast(self, name: str, isl: slice, lsl: slice) -> Any:
        if self.source == "persistence":
            pos = np.broadcast_to(self.init_pos[isl, None], self.a.valid_pos[isl, lsl].shape)
            return self.truth(name, pos)
        if self.source == "climatology":
            return self.clim(climatology_variable(self.a.climatology, name), self.a.clim_pos[isl, lsl])
        return _canonical(self.a.forecast[name], ("time", "prediction_timedelta"), self.a.ensemble_dim)[
            isl, lsl
        ]


def _jobs(aligned: Aligned, source: str) -> list[_Job]:
    ensemble = source == "forecast" and aligned.ensemble_dim is not None
    jobs = [_Job("ensemble" if ensemble else "deterministic", n, (n,)) for n in aligned.variables]
    if ensemble:
        return jobs
    for vector, (u, v) in WIND_VECTORS.items():
        if u in aligned.variables and v in aligned.variables:
            jobs.append(_Job("wind", vector, (u, v)))
    clim = aligned.climatology
    for name, (metric, dry_mm) in SEEPS_VARIABLES.items():
        keys = (f"{name}_seeps_threshold", f"{name}_seeps_dry_fraction")
        if name in aligned.variables and clim is not None and all(k in clim for k in keys):
            jobs.append(_Job("seeps", name, (name,), metric, dry_mm))
    return jobs


def _block_shape(aligned: Aligned, block_bytes: int) -> tuple[int, int]:
    n_init, n_lead = aligned.valid_pos.shape
    per_lead = 8
    for name in aligned.variables:
        per_lead = max(per_lead, 8 * int(np.prod(aligned.forecast[name].shape[2:])))
    if per_lead * n_lead <= block_bytes:
        return max(1, min(n_init, block_bytes // (per_lead * n_lead))), n_lead
    return 1, max(1, block_bytes // per_lead)


def _time_mean(job: _Job, per_init: dict[str, np.ndarray], clim: bool, extras: tuple[str, ...]) -> dict:
    if job.kind == "ensemble":
        return ensemble_time_mean(per_init)
    if job.kind == "seeps":
        return {job.metric: per_init["seeps"].mean(0)}
    means = deterministic_time_mean(per_init)
    names = (
        ["mse", "rmse"] if job.kind == "wind" else ["mse", "rmse", "bias", "mae"] + (["acc"] if clim else [])
    )
    names += [m for m in extras if m in means]
    return {m: means[m] for m in names}


def score(
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
    block_bytes: int = BLOCK_BYTES,
    progress: bool = False,
    skipna: bool = False,
) -> xr.Dataset:
    """Score a forecast (or a baseline built from truth/climatology) the WB2 way.

    Args:
        forecast: by-init forecast (time=init, prediction_timedelta, [level], [number|realization], lat, lon).
        truth: (time, [level], latitude, longitude), containing every init + lead.
        climatology: (hour, dayofyear, [level], latitude, longitude); enables ``acc`` (and SEEPS when it holds
            ``{precip}_seeps_threshold``/``_dry_fraction``).
        source: ``"forecast"``, or a baseline on the forecast's inits and leads: ``"persistence"`` (truth at
            init) or ``"climatology"`` (climatology at the valid time).
        variables, levels: subsets to score (default: all shared variables, the forecast's levels).
        regions: WB2 region names, ``["all"]`` or None for ``["global"]``.
        ensemble_dim: member dim (``number``/``realization`` are found automatically).
        land_sea_mask: land fraction for ``*_land`` regions (default: the truth's ``land_sea_mask``).
        extra_metrics: any of ``rmse_sqrt_before_time_avg`` and ``acc_pooled`` (WB-X ACC).
        block_bytes: target size of one Dask task's forecast block.
        progress: show a progress bar.
        skipna: drop NaN points from the area means (WB2's ``skipna``), e.g. land in an ocean product or
            masked points of an earthcast rollout; False (WB2's default) lets a NaN spoil its region's mean.

    Returns:
        Dataset of time-mean scores, dims (metric, region, lead_time[, level]) per variable.
    """
    if source not in SOURCES:
        raise DataError(f"Unknown source {source!r}; choose one of {SOURCES}.")
    a = align(
        forecast, truth, climatology, variables=variables, levels=levels,
        ensemble_dim=ensemble_dim, land_sea_mask=land_sea_mask,
    )  # fmt: skip
    region_list = resolve_regions(regions, have_land_sea_mask=a.land_sea_mask is not None)
    lat, lon = a.truth["latitude"].values, a.truth["longitude"].values
    geometry = dataset_geometry(a.truth)
    area = AreaMean(region_weights(region_list, lat, lon, a.land_sea_mask, geometry=geometry), skipna=skipna)
    blocks = _Blocks(a, source)
    jobs = _jobs(a, source)
    n_init, n_lead = a.valid_pos.shape
    bi, bl = _block_shape(a, block_bytes)
    tasks, keys = [], []
    run = dask.delayed(_run_block, pure=True)
    area_key = dask.delayed(area, pure=True)  # one graph key shared by every task, not a copy per task
    for job in jobs:
        p1 = None
        if job.kind == "seeps":
            p1 = a.climatology[f"{job.inputs[0]}_seeps_dry_fraction"].mean(("hour", "dayofyear"))
            p1 = dask.delayed(np.asarray(p1.transpose("latitude", "longitude").values, dtype=np.float64))
        for i0 in range(0, n_init, bi):
            for l0 in range(0, n_lead, bl):
                isl, lsl = slice(i0, i0 + bi), slice(l0, l0 + bl)
                fcs = [blocks.forecast(n, isl, lsl) for n in job.inputs]
                truths = [blocks.truth(n, a.valid_pos[isl, lsl]) for n in job.inputs]
                clim = None
                if job.kind == "seeps":
                    threshold = a.climatology[f"{job.inputs[0]}_seeps_threshold"]
                    clim = blocks.clim(threshold, a.clim_pos[isl, lsl])
                elif job.kind == "deterministic" and a.climatology is not None:
                    clim = blocks.clim(
                        climatology_variable(a.climatology, job.inputs[0]), a.clim_pos[isl, lsl]
                    )
                tasks.append(run(job, fcs, truths, clim, p1, area_key))
                keys.append((job, isl, lsl))
    results = compute(tasks, progress=progress, desc="scoring")
    per_job: dict[_Job, dict[str, np.ndarray]] = {}
    for (job, isl, lsl), result in zip(keys, results):
        store = per_job.setdefault(job, {})
        for name, values in result.items():
            if name not in store:
                store[name] = np.full((n_init, n_lead, *values.shape[2:]), np.nan)
            store[name][isl, lsl] = values
    scores: dict[str, dict[str, np.ndarray]] = {}
    for job, per_init in per_job.items():
        scores.setdefault(job.output, {}).update(
            _time_mean(job, per_init, a.climatology is not None, extra_metrics)
        )
    out = results_dataset(scores, a, [r.name for r in region_list])
    out.attrs.update(
        source=source,
        n_inits=n_init,
        engine="earthcast",
        grid_geometry=geometry.kind,
        area_weighting=geometry.area_weighting,
        skipna=int(skipna),
    )
    if source == "forecast" and a.ensemble_dim is not None:
        out.attrs["ensemble_size"] = int(a.forecast.sizes[a.ensemble_dim])
    return out


METRIC_ORDER = (
    "mse", "rmse", "acc", "bias", "mae", "rmse_sqrt_before_time_avg", "acc_pooled", "seeps_24hr", "seeps_6hr",
    *ENSEMBLE_METRICS,
)  # fmt: skip


def results_dataset(scores: dict[str, dict[str, np.ndarray]], a: Aligned, regions: list[str]) -> xr.Dataset:
    """Assemble ``{variable: {metric: (lead, [level], region) array}}`` into WB2's results layout."""
    present = {m for by_metric in scores.values() for m in by_metric}
    metrics = [m for m in METRIC_ORDER if m in present]
    data_vars = {}
    for name, by_metric in scores.items():
        shape = next(iter(by_metric.values())).shape
        has_level = len(shape) == 3
        values = np.full((len(metrics), len(regions), shape[0], *shape[1:-1]), np.nan)
        for m, arr in by_metric.items():
            values[metrics.index(m)] = np.moveaxis(arr, -1, 0)
        dims = ("metric", "region", "lead_time", *(("level",) if has_level else ()))
        data_vars[name] = (dims, values)
    coords: dict[str, Any] = {"metric": metrics, "region": regions, "lead_time": a.lead_times}
    if any(len(v[0]) == 4 for v in data_vars.values()):
        coords["level"] = a.forecast["level"].values
    out = xr.Dataset(data_vars, coords=coords)
    for name in scores:
        if name in a.truth and "units" in a.truth[name].attrs:
            out[name].attrs["units"] = a.truth[name].attrs["units"]
    out.attrs["rmse_convention"] = "rmse = sqrt(time-mean mse) (WB2/ECMWF)"
    return out

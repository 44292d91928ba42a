"""``earthcast score``: WB2 scores of a by-init forecast store against truth, written as netCDF.

Example::

    earthcast score --forecast forecast.zarr --truth era5.zarr --climatology clim.zarr \\
        --out results.nc --regions global tropics --levels 500 850 --baselines persistence climatology

Add ``--dask-workers 8`` (a local cluster of 8 worker processes) or ``--dask-address tcp://host:8786`` (a
running dask.distributed scheduler) to score on a cluster; the numbers are identical to the default
threaded run.

Writes ``results.nc`` in WB2's layout (dims ``metric, region, lead_time[, level]``) and, per baseline,
``results_persistence.nc`` / ``results_climatology.nc`` next to it (WB2's ``{eval}_persistence`` naming).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from earthcast.datasets.store import open_store
from earthcast.distributed import add_dask_arguments, dask_client
from earthcast.errors import ConfigError, OutputExistsError

EXTRA_METRICS = ("rmse_sqrt_before_time_avg", "acc_pooled")


def build_parser() -> argparse.ArgumentParser:
    """The ``earthcast score`` argument parser."""
    p = argparse.ArgumentParser(
        prog="earthcast score",
        description="Score a by-init forecast Zarr against truth with WeatherBench2-identical metrics.",
    )
    p.add_argument(
        "--forecast", required=True, help="by-init forecast store (time=init, prediction_timedelta, …)"
    )
    p.add_argument(
        "--truth", required=True, help="truth store (time, [level], latitude, longitude), e.g. ERA5"
    )
    p.add_argument("--climatology", help="hour × dayofyear climatology store; enables ACC (and SEEPS)")
    p.add_argument("--out", required=True, help="results netCDF path, e.g. results.nc")
    p.add_argument("--regions", nargs="+", help="WB2 region names, or 'all' (default: global)")
    p.add_argument("--variables", nargs="+", help="variables to score (default: all shared)")
    p.add_argument("--levels", nargs="+", type=int, help="pressure levels in hPa (default: the forecast's)")
    p.add_argument(
        "--baselines",
        nargs="*",
        default=[],
        choices=("persistence", "climatology"),
        help="baselines to score too",
    )
    p.add_argument("--engine", default="earthcast", choices=("earthcast", "weatherbench2"))
    p.add_argument("--ensemble-dim", help="member dimension (default: number or realization if present)")
    p.add_argument("--extra-metrics", nargs="*", default=[], choices=EXTRA_METRICS, help="also report these")
    p.add_argument("--init-start", help="first init time to score, e.g. 2020-01-01")
    p.add_argument("--init-end", help="last init time to score (inclusive), e.g. 2020-12-31T12")
    p.add_argument("--overwrite", action="store_true", help="replace existing results files")
    p.add_argument(
        "--skipna",
        action="store_true",
        help="drop NaN points (land in ocean products, masked rollout points) from the area means, as WB2's "
        "skipna=True; by default a NaN spoils its region's mean (WB2's default)",
    )
    add_dask_arguments(p)
    return p


def _output_paths(out: Path, sources: list[str]) -> dict[str, Path]:
    return {
        s: out if s == "forecast" else out.with_name(f"{out.stem}_{s}{out.suffix or '.nc'}") for s in sources
    }


def _headline(results: xr.Dataset, label: str) -> str:
    metric = "crps" if "crps" in results["metric"].values else "rmse"
    lines = [f"{label}: global {metric}"]
    for name, da in results.data_vars.items():
        sel = da.sel(metric=metric, region=results["region"].values[0])
        if "level" in sel.dims:
            sel = sel.isel(level=0)
            name = f"{name}@{int(results['level'][0])}"
        values = ", ".join(
            f"{int(lt / np.timedelta64(1, 'h'))}h={v:.4g}"
            for lt, v in zip(sel["lead_time"].values[:6], sel.values[:6])
        )
        lines.append(f"  {name}: {values}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run ``earthcast score``; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    sources = ["forecast", *dict.fromkeys(args.baselines)]
    paths = _output_paths(out, sources)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"{existing} already exist; pass --overwrite or choose another --out.")
    forecast = open_store(args.forecast)
    if args.init_start or args.init_end:
        forecast = forecast.sel(time=slice(args.init_start, args.init_end))
    truth = open_store(args.truth)
    climatology = open_store(args.climatology) if args.climatology else None
    if args.engine == "weatherbench2":
        from earthcast.scoring.wb2_engine import score_with_weatherbench2 as run
    else:
        from earthcast.scoring.evaluate import score as run
    options = dict(
        variables=args.variables, levels=args.levels, regions=args.regions,
        ensemble_dim=args.ensemble_dim, extra_metrics=tuple(args.extra_metrics),
    )  # fmt: skip
    if args.engine == "earthcast":
        options.update(progress=True, skipna=args.skipna)
    elif args.skipna:
        raise ConfigError(
            "--skipna is implemented by the earthcast engine; drop it or use --engine earthcast"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with dask_client(args.dask_address, args.dask_workers):
        for source, path in paths.items():
            results = run(forecast, truth, climatology, source=source, **options)
            results.to_netcdf(path)
            print(_headline(results, source))
            print(f"wrote {path}")
    return 0

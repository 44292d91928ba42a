"""``earthcast plot``: PNG maps, skill curves, spectra, global-mean series and scorecards.

Examples::

    earthcast plot maps --forecast F.zarr --truth T.zarr --variables 2m_temperature geopotential \\
        --levels 500 --leads 1d 5d --out plots/
    earthcast plot scores --results model.nc --baseline persistence=persistence.nc \\
        --baseline climatology=climatology.nc --out plots/
    earthcast plot spectra --forecast F.zarr --truth T.zarr --variables geopotential --levels 500 \\
        --leads 1d 5d 10d --out plots/
    earthcast plot series --forecast year.zarr --truth T.zarr --climatology C.zarr \\
        --variables 2m_temperature --out plots/
    earthcast plot scorecard --results model.nc --reference hres.nc --leads 1d 3d 5d 7d 10d --out plots/

Coastlines come from the Natural Earth data shipped with earthcast: no network is needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from earthcast.errors import ConfigError, StoreNotFoundError


def _open_results(path: str) -> xr.Dataset:
    if not Path(path).exists():
        raise StoreNotFoundError(
            f"No results file at {path!r}; write one with `earthcast score … --out {path}`."
        )
    return xr.open_dataset(path, decode_timedelta=True).load()


def _baselines(specs: Sequence[str]) -> dict[str, xr.Dataset]:
    out: dict[str, xr.Dataset] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(
                f"--baseline {spec!r} must be NAME=PATH, e.g. --baseline persistence=persistence.nc."
            )
        out[name] = _open_results(path)
    return out


def _latitude_range(values: Sequence[float] | None) -> tuple[float, float] | None:
    if values is None:
        return None
    south, north = values
    if south >= north:
        raise ConfigError(f"--latitude-range needs SOUTH < NORTH in degrees, got {south} {north}.")
    return (south, north)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earthcast plot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{maps,scores,spectra,series,scorecard}")

    def fields(p: argparse.ArgumentParser, *, required: bool = True) -> None:
        p.add_argument("--variables", nargs="+", required=required, help="WB2 variable names")
        p.add_argument(
            "--levels", nargs="+", type=int, help="pressure levels [hPa] for 3-D variables (default all)"
        )
        p.add_argument("--out", required=True, help="output folder for the PNGs")

    maps = sub.add_parser("maps", help="forecast | truth | error maps per variable and lead")
    maps.add_argument("--forecast", required=True, help="forecast Zarr, WB2 by-init layout")
    maps.add_argument("--truth", required=True, help="truth Zarr indexed by valid time")
    maps.add_argument("--leads", nargs="+", required=True, help="lead times, e.g. 1d 5d 36h")
    maps.add_argument("--init", help="init time to map (default: the first)")
    maps.add_argument("--projection", default="robinson", choices=["robinson", "platecarree"])
    maps.add_argument(
        "--coastlines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw Earth's coastlines (default); --no-coastlines for idealised planets such as the demo's",
    )
    fields(maps)

    scores = sub.add_parser("scores", help="RMSE/ACC/… against lead time, with baselines")
    scores.add_argument("--results", required=True, help="results netCDF from `earthcast score`")
    scores.add_argument("--name", default="model", help="legend name of --results (default: model)")
    scores.add_argument(
        "--baseline", action="append", default=[], metavar="NAME=PATH", help="baseline results"
    )
    scores.add_argument(
        "--metrics", nargs="+", default=["rmse", "acc"], help="metrics to plot (default rmse acc)"
    )
    scores.add_argument("--region", default="global")
    fields(scores, required=False)

    spectra = sub.add_parser("spectra", help="zonal energy spectra per lead against the truth")
    spectra.add_argument("--forecast", required=True)
    spectra.add_argument("--truth", required=True)
    spectra.add_argument("--leads", nargs="+", required=True)
    spectra.add_argument("--latitude-range", nargs=2, type=float, metavar=("SOUTH", "NORTH"))
    fields(spectra)

    series = sub.add_parser("series", help="global-mean series of a long run, truth ± 1σ")
    series.add_argument("--forecast", required=True)
    series.add_argument("--truth", required=True)
    series.add_argument("--climatology", help="WB2 climatology Zarr (hour, dayofyear, …) for the σ band")
    series.add_argument("--init", help="init time of the run (default: the first)")
    fields(series)

    card = sub.add_parser("scorecard", help="model vs reference, %% difference per variable × lead")
    card.add_argument("--results", required=True)
    card.add_argument("--reference", required=True)
    card.add_argument("--name", default="model")
    card.add_argument("--reference-name", default="reference")
    card.add_argument("--metric", default="rmse")
    card.add_argument("--region", default="global")
    card.add_argument("--leads", nargs="+", help="lead times (default: every lead > 0 in both files)")
    fields(card, required=False)
    return parser


def _run(args: argparse.Namespace) -> list[Path]:
    # Imported here so `earthcast plot --help` stays fast.
    from earthcast.datasets.store import open_store
    from earthcast.plotting import (
        write_maps,
        write_score_plots,
        write_scorecard,
        write_series_plots,
        write_spectra_plots,
    )

    if args.kind == "maps":
        return write_maps(
            open_store(args.forecast),
            open_store(args.truth),
            args.variables,
            args.leads,
            args.out,
            levels=args.levels,
            init=args.init,
            projection_name=args.projection,
            coastlines=args.coastlines,
        )
    if args.kind == "scores":
        results = {args.name: _open_results(args.results), **_baselines(args.baseline)}
        return write_score_plots(
            results,
            args.out,
            variables=args.variables,
            levels=args.levels,
            metrics=args.metrics,
            region=args.region,
        )
    if args.kind == "spectra":
        return write_spectra_plots(
            open_store(args.forecast),
            open_store(args.truth),
            args.variables,
            args.leads,
            args.out,
            levels=args.levels,
            latitude_range=_latitude_range(args.latitude_range),
        )
    if args.kind == "series":
        climatology = open_store(args.climatology) if args.climatology else None
        return write_series_plots(
            open_store(args.forecast),
            open_store(args.truth),
            args.variables,
            args.out,
            levels=args.levels,
            init=args.init,
            climatology=climatology,
        )
    return write_scorecard(
        _open_results(args.results),
        _open_results(args.reference),
        args.out,
        metric=args.metric,
        region=args.region,
        variables=args.variables,
        levels=args.levels,
        leads=args.leads,
        model_name=args.name,
        reference_name=args.reference_name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast plot <kind> …``; print the files written. Returns 0, or 1 on bad input."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        written = _run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"earthcast plot {args.kind}: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0

"""``earthcast climatology``: a WB2-style hour × dayofyear climatology of a truth store.

Example::

    earthcast climatology --truth era5.zarr --out clim.zarr --start-year 1990 --end-year 2019 --dask-workers 8

Writes a Zarr v2 store (consolidated) with dims ``(hour, dayofyear, [level], latitude, longitude)``,
float32, computed with WB2's 61-day triangular window; day 366 is filled from day 365.
"""

from __future__ import annotations

import argparse

from earthcast.datasets.store import open_store
from earthcast.datasets.zarr_store import atomic_store, write_wb2_store
from earthcast.distributed import add_dask_arguments, dask_client
from earthcast.errors import DataError
from earthcast.scoring.climatology import build_climatology


def build_parser() -> argparse.ArgumentParser:
    """The ``earthcast climatology`` argument parser."""
    p = argparse.ArgumentParser(
        prog="earthcast climatology",
        description="Build a WeatherBench2-style hour × dayofyear climatology from a truth store.",
    )
    p.add_argument("--truth", required=True, help="truth store (time, [level], latitude, longitude)")
    p.add_argument("--out", required=True, help="output Zarr path, e.g. clim.zarr")
    p.add_argument("--start-year", type=int, help="first year (default: the truth's first)")
    p.add_argument("--end-year", type=int, help="last year, inclusive (default: the truth's last)")
    p.add_argument(
        "--hour-interval",
        type=int,
        default=None,
        help="hours between climatology hours (default: from the truth: 6 for 6-hourly, 24 for daily/monthly)",
    )
    p.add_argument("--window", type=int, default=61, help="odd window length in days (61)")
    p.add_argument("--variables", nargs="+", help="variables (default: all time-dependent ones)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    add_dask_arguments(p)
    return p


def main(argv: list[str]) -> int:
    """Run ``earthcast climatology``; returns the exit status."""
    args = build_parser().parse_args(argv)
    truth = open_store(args.truth)
    names = args.variables or [n for n, v in truth.data_vars.items() if "time" in v.dims]
    no_units = [n for n in names if n in truth and "units" not in truth[n].attrs]
    if no_units:
        raise DataError(
            f"truth variables {no_units} have no 'units' attribute, which the output "
            "store requires; add units to the truth store or pass --variables without them."
        )
    with atomic_store(args.out, overwrite=args.overwrite) as tmp:
        with dask_client(args.dask_address, args.dask_workers):  # the result is written from this process
            clim = build_climatology(
                truth, start_year=args.start_year, end_year=args.end_year, hour_interval=args.hour_interval,
                window=args.window, variables=names, progress=True,
            )  # fmt: skip
        write_wb2_store(clim, tmp, chunks={"hour": 1, "dayofyear": 61})
    print(f"wrote {args.out}: {dict(clim.sizes)}")
    return 0

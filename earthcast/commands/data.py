"""``earthcast data``: make the embedded demo data, convert ERA5/CMEMS downloads, describe a store, compute its
normalisation statistics."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from earthcast.distributed import add_dask_arguments, dask_client
from earthcast.errors import GridError
from earthcast.grids import dataset_geometry, wb2_grid_name


def _demo(args: argparse.Namespace) -> int:
    from earthcast.datasets.sim.demo import ensure_demo_store

    path = ensure_demo_store(
        args.kind, years=args.years, seed=args.seed, force=args.force, cache_dir=args.cache_dir
    )
    _describe(str(path))
    print(f"\nDemo store ready: {path}")
    return 0


def _grid_name(lat: np.ndarray, lon: np.ndarray) -> str:
    name = wb2_grid_name(lat, lon)
    if name is not None:
        return name
    note = " (crosses the prime meridian; kept contiguous)" if lon[0] < 0 <= lon[-1] else ""
    return (
        f"{lat.size}x{lon.size}, {lat.min():.3f}…{lat.max():.3f}°N, {lon.min():.3f}…{lon.max():.3f}°E{note}"
    )


def _info(args: argparse.Namespace) -> int:
    _describe(args.store)
    return 0


def _describe(store: str) -> None:
    """Print the grid, time axis, levels and variables of a store as earthcast sees it."""
    from earthcast.datasets.store import open_store
    from earthcast.datasets.time_axis import describe_time_axis

    ds = open_store(store)
    times = ds["time"].values if "time" in ds.dims else None
    print(f"store     {store}")
    print(f"grid      {_grid_name(ds['latitude'].values, ds['longitude'].values)}")
    try:
        geometry = dataset_geometry(ds).describe()
    except GridError as err:  # describe the store anyway; training on it would raise this error
        geometry = f"unsupported: {err}"
    print(f"geometry  {geometry}")
    if times is not None:
        first, last = pd.Timestamp(times.min()), pd.Timestamp(times.max())
        print(f"time      {first} … {last}, {times.size} steps, {describe_time_axis(times)}")
    if "level" in ds.coords:
        print(f"levels    {[int(x) for x in ds['level'].values]}")
    for name, da in ds.data_vars.items():
        print(f"  {name:<36} {da.attrs.get('units', '?'):<14} {dict(da.sizes)}")


def _chunk_spec(text: str) -> dict[str, int]:
    """Parse ``--chunks time=8[,level=13]`` into ``{"time": 8, "level": 13}``."""
    chunks = {}
    for part in text.split(","):
        dim, _, value = part.partition("=")
        if not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"expected DIM=N with N >= 1 (e.g. time=8), got {part!r}")
        chunks[dim.strip()] = int(value)
    return chunks


def _convert(args: argparse.Namespace) -> int:
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    from earthcast.datasets.convert import convert_to_wb2

    logger = logging.getLogger("earthcast.datasets.convert")
    logger.setLevel(logging.INFO)
    with logging_redirect_tqdm([logger]):  # notes print above the progress bar
        path = convert_to_wb2(args.inputs, args.out, chunks=args.chunks, overwrite=args.overwrite)
    print()
    _describe(str(path))
    print(f"\nWrote {path}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from earthcast.datasets.datamodule import WB2DataModule

    variables = {name: None for name in args.variables} if args.variables else None
    dm = WB2DataModule(args.store, variables or _all_variables(args.store), step=args.step, train=args.train)
    with dask_client(args.dask_address, args.dask_workers):
        stats = dm.stats
    rows = zip(dm.manifest.names("state"), stats.state_mean, stats.state_std, stats.tendency_std)
    table = {name: {"mean": m, "std": s, "tendency_std": t} for name, m, s, t in rows}
    print(json.dumps(table, indent=1))
    return 0


def _all_variables(store: str) -> dict[str, None]:
    from earthcast.datasets.store import open_store

    ds = open_store(store)
    return {str(name): None for name, da in ds.data_vars.items() if "time" in da.dims}


def build_parser() -> argparse.ArgumentParser:
    """The ``earthcast data`` argument parser."""
    parser = argparse.ArgumentParser(prog="earthcast data", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    demo = sub.add_parser(
        "demo", help="generate (first run) or locate (later runs) the embedded physics store"
    )
    demo.add_argument("--kind", choices=("atmosphere", "ocean"), default="atmosphere")
    demo.add_argument("--years", type=float, default=3.0, help="simulated years after spin-up (default 3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--cache-dir", default=None, help="default: $EARTHCAST_CACHE_DIR or the user cache dir")
    demo.add_argument("--force", action="store_true", help="regenerate even if cached")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="describe a store as earthcast sees it after normalisation")
    info.add_argument("store")
    info.set_defaults(func=_info)
    stats = sub.add_parser("stats", help="compute (or reuse cached) normalisation statistics")
    stats.add_argument("store")
    stats.add_argument("--variables", nargs="*", help="default: every time-dependent variable, all levels")
    stats.add_argument("--step", default="6h")
    stats.add_argument("--train", nargs=2, metavar=("START", "END"), default=None)
    add_dask_arguments(stats)
    stats.set_defaults(func=_stats)
    convert = sub.add_parser(
        "convert",
        help="convert ERA5 (CDS netCDF/GRIB) and CMEMS netCDF files into a WB2 Zarr store (atomic, resumable)",
    )
    convert.add_argument("inputs", nargs="+", metavar="INPUT", help="files, glob patterns or directories")
    convert.add_argument("--out", required=True, help="the new Zarr store")
    convert.add_argument(
        "--chunks", type=_chunk_spec, default=None, help="e.g. time=8 (default: whole fields, ~4 MiB chunks)"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    convert.set_defaults(func=_convert)
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point of ``earthcast data``."""
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))

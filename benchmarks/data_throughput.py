"""Data-loader throughput: earthcast's block-streaming loader against the raw read rate and a naive loader.

Builds synthetic WB2-layout stores with 69 channels (5 pressure variables x 13 levels + 4 surface fields),
then, side by side in one run, measures:

* (a) the raw sequential Zarr read rate (every chunk read once, in order), expressed in samples/s: the rate
  at which the bytes of the served samples (3 steps x 69 channels each) could be read from Zarr;
* earthcast's ``WB2DataModule`` train loader for one epoch, with num_workers 0 and 2 (spawn);
* (b) a naive loader doing ``ds.isel(time=window).load()`` per sample, timed on a subset of windows;
* (c) xbatcher, if installed.

Bytes read are counted by a wrapper around the Zarr store (in every worker process). The stores are deleted
afterwards. Bars:

    BAR loader_vs_raw_read_rate_<grid>_w<N>  >= 0.70
    BAR loader_vs_naive_<grid>               >= 5
    BAR bytes_read_over_store_<grid>_w<N>    <= 1.2
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr
import zarr.storage
from rich.console import Console
from rich.table import Table
from torch.utils.data import get_worker_info

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.normalize import normalize_dataset
from earthcast.datasets.streaming import StoreSource
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid

LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
PRESSURE = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind", "specific_humidity")
SURFACE = ("2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind", "10m_v_component_of_wind")
VARIABLES = {name: None for name in PRESSURE + SURFACE}


class CountingStore(zarr.storage.WrapperStore):
    """Counts the bytes every ``get`` returns; in a DataLoader worker, written to ``count_file`` at exit."""

    def __init__(self, store: zarr.storage.LocalStore, count_file: str) -> None:
        super().__init__(store)
        self.count_file, self.nbytes = count_file, 0
        if get_worker_info() is not None:
            multiprocessing.util.Finalize(self, _flush, args=(self,), exitpriority=10)

    async def get(self, key, prototype, byte_range=None):
        buf = await super().get(key, prototype, byte_range)
        if buf is not None:
            self.nbytes += len(buf)
        return buf


def _flush(store: CountingStore) -> None:
    with open(store.count_file, "a") as f:
        f.write(f"{store.nbytes}\n")


class CountingSource(StoreSource):
    """A StoreSource that opens the store through :class:`CountingStore` (also inside spawned workers)."""

    count_dir: str = ""

    def open(self) -> xr.Dataset:
        if self._ds is None:
            name = os.path.join(self.count_dir, f"{os.getpid()}.txt")
            self.store = CountingStore(zarr.storage.LocalStore(self.path, read_only=True), name)
            self._ds = normalize_dataset(xr.open_zarr(self.store, consolidated=True, chunks={}))
        return self._ds

    def __getstate__(self) -> dict:
        return super().__getstate__() | {"count_dir": self.count_dir}

    def bytes_read(self) -> int:
        """Bytes read in this process plus those reported by exited worker processes."""
        here = self.store.nbytes if self._ds is not None else 0
        return here + sum(int(x) for f in Path(self.count_dir).glob("*.txt") for x in f.read_text().split())


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_steps_mb(path: Path) -> float:
    """MiB of float32 data per time step, over all 69 channels."""
    ds = xr.open_zarr(path)
    return sum(ds[v].isel(time=0).size for v in VARIABLES) * 4 / 2**20


def raw_read(path: Path) -> float:
    """Seconds to read every data array once, chunk by chunk along time, with plain zarr."""
    group = zarr.open_group(str(path), mode="r")
    t0 = time.perf_counter()
    for name in PRESSURE + SURFACE:
        arr = group[name]
        step = arr.chunks[0]
        for i in range(0, arr.shape[0], step):
            arr[i : i + step]
    return time.perf_counter() - t0


def loader_epochs(path: Path, workers: int, count_dir: Path, epochs: int) -> tuple[list[float], int, int]:
    """(seconds of each epoch, samples per epoch, bytes read per epoch) of WB2DataModule's train loader.

    The first epoch includes starting the (spawned, persistent) workers; later epochs are the steady state.
    """
    times = xr.open_zarr(path)["time"].values
    start, end = str(pd.Timestamp(times[0])), str(pd.Timestamp(times[-1]))
    dm = WB2DataModule(
        str(path),
        VARIABLES,
        static=[],
        forcings=["hour_of_day", "toa_insolation"],
        n_input=2,
        n_target=1,
        train=(start, end),
        val=(start, end),
        test=(start, end),
        batch_size=8,
        num_workers=workers,
        stats_cache_dir=str(count_dir / "stats"),
    )
    for f in count_dir.glob("*.txt"):
        f.unlink()
    source = CountingSource(str(path))
    source.count_dir = str(count_dir)
    dm.source = source
    loader = dm.train_dataloader()
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = sum(batch["inputs"].shape[0] for batch in loader)
        seconds.append(time.perf_counter() - t0)
    del loader  # persistent workers exit here and report their byte counts
    gc.collect()
    return seconds, n, source.bytes_read() // epochs


def naive_rate(path: Path, n_samples: int) -> float:
    """Samples per second of per-sample ``isel(...).load()`` windows (random order, as in training)."""
    ds = normalize_dataset(xr.open_zarr(path))[list(VARIABLES)]
    rng = np.random.default_rng(0)
    starts = rng.integers(0, ds.sizes["time"] - 2, n_samples)
    t0 = time.perf_counter()
    for s in starts:
        window = ds.isel(time=[s, s + 1, s + 2]).load()
        np.concatenate([window[v].values.reshape(3, -1) for v in VARIABLES], axis=1)
    return n_samples / (time.perf_counter() - t0)


def build(path: Path, grid_name: str, days: float, time_chunk: int) -> None:
    times = pd.date_range("2019-01-01", periods=int(days * 4), freq="6h")
    write_synthetic_store(
        path,
        wb2_grid(grid_name),
        times,
        time_chunk=time_chunk,
        pressure_variables=PRESSURE,
        surface_variables=SURFACE,
        levels=LEVELS,
        block=64,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stores, < 60 s")
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temp dir)")
    args = parser.parse_args()
    cases = (
        [
            ("64x32_equiangular_conservative", 60, 8, 100),
            ("240x121_equiangular_with_poles_conservative", 4, 2, 20),
        ]
        if args.quick
        else [
            ("64x32_equiangular_conservative", 365, 16, 400),
            ("240x121_equiangular_with_poles_conservative", 60, 2, 60),
        ]
    )
    root = Path(tempfile.mkdtemp(prefix="earthcast-bench-", dir=args.dir))
    console, bars, table = Console(width=150), [], Table(title="earthcast data throughput (one epoch, batch 8)")
    for col in (
        "grid",
        "store MB",
        "method",
        "samples/s",
        "vs raw samples/s",
        "store MB/s",
        "bytes read / store",
    ):
        table.add_column(col)
    try:
        for grid_name, days, chunk, naive_n in cases:
            short = grid_name.split("_")[0]
            path = root / f"{short}.zarr"
            t0 = time.perf_counter()
            build(path, grid_name, days, chunk)
            size = store_bytes(path)
            console.print(f"built {path.name}: {size / 2**20:.0f} MB in {time.perf_counter() - t0:.0f} s")
            raw_mb_s = size / 2**20 / raw_read(path)
            # The raw rate in samples/s: reading each sample's own bytes (3 steps x 69 channels) at the raw rate.
            raw_rate = raw_mb_s / (3 * store_steps_mb(path))
            table.add_row(
                short,
                f"{size / 2**20:.0f}",
                "(a) raw sequential zarr",
                f"{raw_rate:.0f}",
                "1.00",
                f"{raw_mb_s:.0f}",
                "1.000",
            )
            best = 0.0
            for workers in (0, 2):
                seconds, n, nbytes = loader_epochs(path, workers, root, epochs=1 if workers == 0 else 2)
                for i, sec in enumerate(seconds):
                    label = f"earthcast, {workers} workers" + ("" if not workers else f", epoch {i + 1}")
                    table.add_row(
                        short,
                        "",
                        label,
                        f"{n / sec:.0f}",
                        f"{n / sec / raw_rate:.2f}",
                        f"{nbytes / 2**20 / sec:.0f}",
                        f"{nbytes / size:.3f}",
                    )
                rate = n / seconds[-1]  # steady state: persistent workers are already running
                best = max(best, rate)
                bars.append((f"loader_vs_raw_read_rate_{short}_w{workers}", rate / raw_rate, ">=", 0.70))
                bars.append((f"bytes_read_over_store_{short}_w{workers}", nbytes / size, "<=", 1.2))
            naive = naive_rate(path, naive_n)
            table.add_row(short, "", "(b) naive isel().load()", f"{naive:.0f}", "", "", "")
            bars.append((f"loader_vs_naive_{short}", best / naive, ">=", 5.0))
            try:
                import xbatcher  # noqa: F401
            except ImportError:
                table.add_row(short, "", "(c) xbatcher", "not installed", "", "", "")
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    console.print(table)
    for name, value, op, target in bars:
        ok = value >= target if op == ">=" else value <= target
        print(f"BAR {name} {value:.3f} {op} {target} {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

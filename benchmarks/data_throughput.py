"""Data-loader throughput: earthcast's block-streaming loader against the raw Zarr read rate and a naive one.

Builds synthetic WB2-layout stores with 69 channels (5 pressure variables x 13 levels + 4 surface fields) at
64x32 and 240x121, then, side by side in one run, measures:

* raw: the decoded (uncompressed float32) bytes per second of reading every chunk of the 69 channels once
  with plain zarr into numpy (the faster of chunk by chunk along time and whole arrays, best of as many
  passes as there are timed loader epochs);
* earthcast: ``WB2DataModule(...).train_dataloader()`` (block streaming, spawned persistent workers) with
  num_workers 0 and 2; every batch also goes through the data module's ``on_before_batch_transfer``,
  ``transfer_batch_to_device`` and ``on_after_batch_transfer`` hooks (as Lightning calls them, onto CUDA if
  available), so work moved there is timed;
* naive: the best simple loader a user would write: ``xr.open_zarr(store, chunks=None)`` (no Dask), a
  map-style Dataset whose ``__getitem__`` reads ``isel(time=slice(t, t + 3))`` and stacks the variables into
  (3, 69, H, W), in a shuffled ``torch.utils.data.DataLoader`` with the same batch size, 0 and 2 workers.

Units. One sample holds 3 time steps of the 69 state channels (2 inputs + 1 target; the analytic forcings
earthcast also builds are not counted), ``sample_bytes = 3 x 69 x H x W x 4`` decoded bytes. A loader's rate
in decoded MB/s is samples/s x sample_bytes; "vs raw" divides it by the raw decoded MB/s, so 1.0 means
samples arrive as fast as plain zarr could read each sample's own bytes. A loader that reads each step once
and serves it in 3 windows can exceed 1. Loader rates are the best steady-state epoch (the first epoch,
which starts workers and opens the store, is not timed). Bytes read are the compressed bytes the Zarr store
returns (counted by a store wrapper, in every worker process) per epoch, over the store's size on disk.

Bars (``vs_naive`` compares the best earthcast worker count with the best naive worker count)::

    BAR data_<grid>_w<N>_vs_raw   >= 0.8
    BAR data_<grid>_w<N>_bytes    <= 1.1
    BAR data_64x32_vs_naive       >= 5
    BAR data_240x121_vs_naive     >= 2.5
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
import zarr
import zarr.storage
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, RandomSampler, get_worker_info

from earthcast.datasets.normalize import normalize_dataset
from earthcast.datasets.streaming import StoreSource
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid

LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
PRESSURE = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind", "specific_humidity")
SURFACE = ("2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind", "10m_v_component_of_wind")
VARIABLES = {name: None for name in PRESSURE + SURFACE}
N_INPUT, N_TARGET, BATCH = 2, 1, 8
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    """A StoreSource whose two views of the store (normalised with Dask, and plain without Dask for the direct
    block reads) both go through one :class:`CountingStore` per process (also inside spawned workers)."""

    def __init__(self, path: str, count_dir: str) -> None:
        super().__init__(path)
        self.count_dir = count_dir
        self.counting: CountingStore | None = None
        self.views: dict[str, xr.Dataset] = {}

    def _view(self, kind: str) -> xr.Dataset:
        if self.counting is None:
            name = os.path.join(self.count_dir, f"{os.getpid()}.txt")
            self.counting = CountingStore(zarr.storage.LocalStore(self.path, read_only=True), name)
        if kind not in self.views:
            self.views[kind] = (
                normalize_dataset(xr.open_zarr(self.counting, consolidated=True, chunks={}))
                if kind == "dask"
                else xr.open_dataset(self.counting, engine="zarr", chunks=None, cache=False)
            )
        return self.views[kind]

    def open(self) -> xr.Dataset:
        return self._view("dask")

    def open_plain(self) -> xr.Dataset:
        return self._view("plain")

    def __getstate__(self) -> dict:
        return super().__getstate__() | {"count_dir": self.count_dir, "counting": None, "views": {}}

    def bytes_read(self) -> int:
        """Bytes read in this process plus those reported by exited worker processes."""
        here = self.counting.nbytes if self.counting is not None else 0
        return here + sum(int(x) for f in Path(self.count_dir).glob("*.txt") for x in f.read_text().split())


def store_bytes(path: Path) -> int:
    """Bytes of the store on disk (compressed chunks, metadata and coordinates)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def raw_read(path: Path, passes: int) -> tuple[float, int]:
    """(best seconds, decoded bytes) of reading every chunk of the 69 channels once with plain zarr."""
    group = zarr.open_group(str(path), mode="r")
    arrays = [group[name] for name in VARIABLES]
    best = np.inf
    for _ in range(passes):
        for whole in (False, True):
            t0 = time.perf_counter()
            for arr in arrays:
                if whole:
                    arr[:]
                else:
                    for i in range(0, arr.shape[0], arr.chunks[0]):
                        arr[i : i + arr.chunks[0]]
            best = min(best, time.perf_counter() - t0)
    return best, sum(arr.nbytes for arr in arrays)


def earthcast_epochs(
    path: Path, workers: int, count_dir: Path, epochs: int
) -> tuple[list[float], int, float]:
    """(seconds of each epoch, samples per epoch, compressed bytes read per epoch) of WB2DataModule's loader.

    The first epoch includes starting the (spawned, persistent) workers.
    """
    # Imported here, not at the top: spawned workers re-import this script, and this import pulls in
    # Lightning, which would double the (untimed) worker start-up of the quick run.
    from earthcast.datasets.datamodule import WB2DataModule

    times = xr.open_zarr(path)["time"].values
    start, end = str(pd.Timestamp(times[0])), str(pd.Timestamp(times[-1]))
    dm = WB2DataModule(
        str(path),
        VARIABLES,
        static=[],
        forcings=["hour_of_day", "toa_insolation"],
        n_input=N_INPUT,
        n_target=N_TARGET,
        train=(start, end),
        val=(start, end),
        test=(start, end),
        batch_size=BATCH,
        num_workers=workers,
        stats_cache_dir=str(count_dir / "stats"),
    )
    for f in count_dir.glob("*.txt"):
        f.unlink()
    source = CountingSource(str(path), str(count_dir))
    dm.source = source
    dm.setup("fit")
    loader = dm.train_dataloader()
    before = source.bytes_read()  # metadata read in the main process while building the stream
    seconds, n = [], 0
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            batch = dm.on_before_batch_transfer(batch, 0)
            batch = dm.transfer_batch_to_device(batch, DEVICE, 0)
            batch = dm.on_after_batch_transfer(batch, 0)
            n += batch["inputs"].shape[0]
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    del loader  # persistent workers exit here and report their byte counts
    gc.collect()
    return seconds, n, (source.bytes_read() - before) / epochs


class NaiveWindows(Dataset):
    """Sample ``i``: the store steps ``i … i + 2`` of the 69 channels, read with xarray without Dask.

    Returns ((2, 69, H, W), (1, 69, H, W)) float32 tensors: inputs and target.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.ds = path, None
        self.n = xr.open_zarr(path, chunks=None).sizes["time"] - (N_INPUT + N_TARGET) + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ds is None:  # opened in the process that reads (each worker its own)
            self.ds = xr.open_zarr(self.path, chunks=None)
        window = self.ds.isel(time=slice(i, i + N_INPUT + N_TARGET))
        h, w = window.sizes["latitude"], window.sizes["longitude"]
        steps = N_INPUT + N_TARGET
        x = np.concatenate([window[v].values.reshape(steps, -1, h, w) for v in VARIABLES], axis=1)
        return torch.from_numpy(x[:N_INPUT]), torch.from_numpy(x[N_INPUT:])


def naive_epochs(path: Path, workers: int, samples: int | None, epochs: int) -> tuple[list[float], int]:
    """(seconds of each epoch, samples per epoch) of the naive loader; ``samples`` random windows per epoch
    (all windows if None). The first epoch includes starting the (forked, persistent) workers."""
    data = NaiveWindows(path)
    sampler = RandomSampler(data, num_samples=samples, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(
        data,
        batch_size=BATCH,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    seconds, n = [], 0
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
            n += inputs.shape[0]
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    del loader
    gc.collect()
    return seconds, n


def _row(
    table: Table,
    grid: str,
    store_mb: str,
    sample_bytes: int,
    raw_bps: float,
    method: str,
    rate: float,
    read: str,
) -> None:
    """One table row: ``rate`` in samples/s, also as decoded MB/s and as a fraction of the raw rate."""
    decoded = rate * sample_bytes
    table.add_row(
        grid, store_mb, method, f"{rate:.0f}", f"{decoded / 2**20:.0f}", f"{decoded / raw_bps:.2f}", read
    )


def _secs(seconds: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in seconds) + " s (the first is not timed)"


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
    parser.add_argument("--quick", action="store_true", help="small stores and epochs, < 60 s")
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temp dir)")
    args = parser.parse_args()
    # grid, days, time chunk, timed epochs, naive samples per epoch (None: every window)
    cases = (
        [
            ("64x32_equiangular_conservative", 24, 8, 2, 48),
            ("240x121_equiangular_with_poles_conservative", 7, 2, 2, 16),
        ]
        if args.quick
        else [
            ("64x32_equiangular_conservative", 365, 16, 3, None),
            ("240x121_equiangular_with_poles_conservative", 60, 2, 3, None),
        ]
    )
    root = Path(tempfile.mkdtemp(prefix="earthcast-bench-", dir=args.dir))
    console, bars = Console(width=150), []
    console.print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.1f} at the start")
    table = Table(
        title=f"earthcast data throughput (batch {BATCH}, 3 steps x 69 channels per sample, {DEVICE})"
    )
    for col in ("grid", "store MB", "method", "samples/s", "decoded MB/s", "vs raw", "bytes read / store"):
        table.add_column(col)
    try:
        for grid_name, days, chunk, timed, naive_n in cases:
            short = grid_name.split("_")[0]
            path = root / f"{short}.zarr"
            t0 = time.perf_counter()
            build(path, grid_name, days, chunk)
            size = store_bytes(path)
            console.print(
                f"built {path.name}: {size / 2**20:.0f} MB on disk in {time.perf_counter() - t0:.0f} s"
            )
            raw_s, raw_bytes = raw_read(path, passes=timed)
            raw_bps = raw_bytes / raw_s
            h, w = wb2_grid(grid_name).latitude.size, wb2_grid(grid_name).longitude.size
            sample_bytes = (N_INPUT + N_TARGET) * (len(LEVELS) * len(PRESSURE) + len(SURFACE)) * h * w * 4
            row = functools.partial(_row, table, short, f"{size / 2**20:.0f}", sample_bytes, raw_bps)
            row("raw zarr (every chunk once)", raw_bps / sample_bytes, "1.000")
            best = {"earthcast": 0.0, "naive": 0.0}
            for workers in (0, 2):
                seconds, n, nbytes = earthcast_epochs(path, workers, root, epochs=1 + timed)
                console.print(
                    f"{short} earthcast, {workers} workers: epochs of {n} samples in " + _secs(seconds)
                )
                rate = n / min(seconds[1:])
                best["earthcast"] = max(best["earthcast"], rate)
                row(f"earthcast, {workers} workers", rate, f"{nbytes / size:.3f}")
                bars.append((f"data_{short}_w{workers}_vs_raw", rate * sample_bytes / raw_bps, ">=", 0.8))
                bars.append((f"data_{short}_w{workers}_bytes", nbytes / size, "<=", 1.1))
            for workers in (0, 2):
                seconds, n = naive_epochs(path, workers, naive_n, epochs=1 + timed)
                console.print(f"{short} naive, {workers} workers: epochs of {n} samples in " + _secs(seconds))
                rate = n / min(seconds[1:])
                best["naive"] = max(best["naive"], rate)
                row(f"naive open_zarr(chunks=None), {workers} workers", rate, "")
            target = 5.0 if short == "64x32" else 2.5
            bars.append((f"data_{short}_vs_naive", best["earthcast"] / best["naive"], ">=", target))
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    console.print(table)
    for name, value, op, target in bars:
        ok = value >= target if op == ">=" else value <= target
        print(f"BAR {name} {value:.4f} {op} {target} {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

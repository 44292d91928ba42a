"""Stream training windows from contiguous time blocks through a seeded shuffle buffer.

Each DataLoader worker on each DDP rank owns a disjoint set of time blocks. A block is read once per
epoch, in one parallel Dask fetch, and every window starting inside it is served from memory, so the bytes
read per epoch stay close to the store size however many windows overlap. The block order and the buffer
draws depend only on (seed, epoch), which makes an epoch reproducible and a resumed run deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.forcings import forcing_fields
from earthcast.datasets.reader import check_finite, read_block
from earthcast.datasets.store import open_store
from earthcast.datasets.windows import WindowSpec


@dataclass
class StoreSource:
    """Where samples come from; opened lazily once per process (safe to pickle into spawned workers)."""

    path: str
    storage_options: dict[str, Any] | None = None
    _ds: xr.Dataset | None = field(default=None, init=False, repr=False, compare=False)

    def open(self) -> xr.Dataset:
        """The normalised, lazily opened dataset (cached per process)."""
        if self._ds is None:
            self._ds = open_store(self.path, storage_options=self.storage_options)
        return self._ds

    def __getstate__(self) -> dict:
        return {"path": self.path, "storage_options": self.storage_options, "_ds": None}


def _split_counts(counts: np.ndarray, quota: int) -> np.ndarray:
    """Trim per-worker sample counts, one at a time from the largest, so that they sum to ``quota``."""
    counts = counts.copy()
    for _ in range(int(counts.sum()) - quota):
        counts[int(np.argmax(counts))] -= 1
    return counts


class WindowStream(IterableDataset):
    """An iterable of samples (dicts of tensors) for one split.

    Each sample holds, with C = state channels, F = forcing channels, S = static channels:

    - ``inputs``: (n_input, C, H, W) float32, physical units (normalisation happens on the device);
    - ``targets``: (n_target, C, H, W) float32;
    - ``forcings``: (n_input + n_target, F, H, W) float32;
    - ``static``: (S, H, W) float32, physical units;
    - ``mask``: (H, W) float32, 1 where valid (0 on masked land, whose NaNs are replaced by 0);
    - ``time``: int64 nanoseconds since 1970 of the last input step (the init time).
    """

    def __init__(
        self,
        source: StoreSource,
        manifest: ChannelManifest,
        spec: WindowSpec,
        starts: np.ndarray,
        *,
        k: int,
        block_steps: int,
        static: np.ndarray,
        mask: np.ndarray | None,
        shuffle: bool,
        buffer_size: int = 256,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if len(starts) == 0:
            raise ValueError(
                "No complete window fits in this split: widen its date range or shorten n_input/n_target/step."
            )
        self.source, self.manifest, self.spec = source, manifest, spec
        self.starts, self.k, self.block_steps = np.asarray(starts, dtype=np.int64), int(k), int(block_steps)
        self.static, self.mask = static.astype(np.float32), mask
        self.shuffle, self.buffer_size, self.seed = shuffle, max(1, int(buffer_size)), int(seed)
        self.rank, self.world_size, self.epoch = int(rank), int(world_size), 0
        block_ids = self.starts // self.block_steps
        self.blocks = [self.starts[block_ids == b] for b in np.unique(block_ids)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose block order and shuffle this iterator reproduces."""
        self.epoch = int(epoch)

    def _block_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.blocks))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.blocks))

    def _assignment(self, num_workers: int) -> tuple[list[list[int]], np.ndarray]:
        """Blocks per consumer of this rank, and each consumer's sample quota (equal totals across ranks)."""
        order = self._block_order()
        consumers = self.world_size * num_workers
        owned = [[int(b) for b in order[c::consumers]] for c in range(consumers)]
        counts = np.array([sum(len(self.blocks[b]) for b in blocks) for blocks in owned])
        per_rank = counts.reshape(self.world_size, num_workers)
        quota = int(per_rank.sum(axis=1).min())
        mine = slice(self.rank * num_workers, (self.rank + 1) * num_workers)
        return owned[mine], _split_counts(per_rank[self.rank], quota)

    def __len__(self) -> int:
        _, quotas = self._assignment(1)
        return int(quotas.sum())

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        owned, quotas = self._assignment(num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        samples = self._samples(owned[worker], rng)
        yield from _take(
            _shuffle_buffer(samples, self.buffer_size, rng) if self.shuffle else samples, quotas[worker]
        )

    def _samples(self, blocks: list[int], rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        ds = self.source.open()
        times = ds["time"].values
        offsets = np.arange(self.spec.length) * self.k
        lat, lon = np.asarray(self.manifest.latitude), np.asarray(self.manifest.longitude)
        forcing_names = self.manifest.names("forcing")
        static, mask = torch.from_numpy(self.static), self._mask_tensor()
        for b in blocks:
            starts = self.blocks[b]
            lo, hi = int(starts[0]), int(starts[-1] + offsets[-1] + 1)
            data = read_block(ds, self.manifest, lo, hi, where=self.source.path)
            check_finite(data, self.mask, self.manifest, times[lo:hi], where=self.source.path)
            if self.mask is not None:
                data = np.where(self.mask[None, None], data, np.float32(0.0))
            forcing = forcing_fields(forcing_names, times[lo:hi], lat, lon)
            for s in rng.permutation(starts) if self.shuffle else starts:
                idx = int(s) - lo + offsets
                window = torch.from_numpy(data[idx])
                yield {
                    "inputs": window[: self.spec.n_input],
                    "targets": window[self.spec.n_input :],
                    "forcings": torch.from_numpy(forcing[idx]),
                    "static": static,
                    "mask": mask,
                    "time": torch.tensor(
                        times[int(s) + (self.spec.n_input - 1) * self.k]
                        .astype("datetime64[ns]")
                        .astype(np.int64)
                    ),
                }

    def _mask_tensor(self) -> torch.Tensor:
        h, w = self.manifest.grid_shape
        if self.mask is None:
            return torch.ones(h, w)
        return torch.from_numpy(self.mask.astype(np.float32))


def _shuffle_buffer(samples: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Classic reservoir-style buffer: fill to ``size``, then emit a random element for each arrival."""
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = int(rng.integers(len(buffer)))
        yield buffer[i]
        buffer[i] = sample
    order = rng.permutation(len(buffer))
    for i in order:
        yield buffer[i]


def _take(samples: Iterator[dict], n: int) -> Iterator[dict]:
    for i, sample in enumerate(samples):
        if i >= n:
            return
        yield sample


class EpochLoader(DataLoader):
    """A DataLoader that tells its :class:`WindowStream` the current epoch before spawning workers."""

    def __init__(
        self, dataset: WindowStream, *, epoch_fn: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, **kwargs)
        self._epoch_fn = epoch_fn
        self._iterations = 0

    def __iter__(self):
        epoch = self._epoch_fn() if self._epoch_fn is not None else self._iterations
        self.dataset.set_epoch(epoch)
        self._iterations += 1
        return super().__iter__()


def default_block_steps(
    time_chunk: int, n_steps: int, span: int, bytes_per_step: int, budget_bytes: int = 256 * 2**20
) -> int:
    """A block length in store steps: a whole number of time chunks.

    Aim for 8 or more chunks per block (the tail of a block re-reads at most one chunk for windows that
    straddle into the next block, so 8 chunks keep the bytes read per epoch within ~1.125x the store size)
    and for at least 8 blocks per split (parallel workers and a well-mixed shuffle), within ``budget_bytes``
    of memory per block.

    Args:
        time_chunk: the store's chunk length along time; n_steps: time steps in the split;
        span: time steps one window covers; bytes_per_step: float32 bytes of all state channels per step.
    """
    total_chunks = math.ceil(n_steps / time_chunk)
    fit = max(1, budget_bytes // max(1, time_chunk * bytes_per_step))
    n_chunks = min(fit, max(8, math.ceil(total_chunks / 8)))
    return int(max(n_chunks * time_chunk, math.ceil(2 * span / time_chunk) * time_chunk))

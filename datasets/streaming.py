"""Stream training windows from contiguous time blocks through a seeded shuffle buffer.

Each DataLoader worker on each DDP rank owns a disjoint set of time blocks. A block is read once per
epoch, in one parallel Dask fetch, and every window starting inside it is served from memory, so the bytes
read per epoch stay close to the store size however many windows overlap. The block order and the buffer
draws depend only on (seed, epoch), which makes an epoch reproducible and a resumed run deterministic.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from earthcast.datasets import chunk_guard
from earthcast.datasets.boundary import manifest_forcings
from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.reader import (
    canonical_store,
    check_finite,
    read_block,
    read_block_direct,
    state_arrays,
)
from earthcast.datasets.store import open_store
from earthcast.datasets.windows import WindowSpec
from earthcast.errors import DataError

WORKER_KEY = "worker"
"""Batch key of the DataLoader worker that made the batch; :class:`EpochLoader` counts and removes it."""


@dataclass
class StoreSource:
    """Where samples come from; opened lazily once per process (safe to pickle into spawned workers)."""

    path: str
    storage_options: dict[str, Any] | None = None
    _ds: xr.Dataset | None = field(default=None, init=False, repr=False, compare=False)
    _plain: xr.Dataset | None = field(default=None, init=False, repr=False, compare=False)

    def open(self) -> xr.Dataset:
        """The normalised, lazily opened dataset (cached per process)."""
        if self._ds is None:
            self._ds = open_store(self.path, storage_options=self.storage_options)
        return self._ds

    def open_plain(self) -> xr.Dataset:
        """The store as written, without Dask and without normalisation (cached per process), for
        :func:`~earthcast.datasets.reader.read_block_direct`."""
        if self._plain is None:
            chunk_guard.install()
            self._plain = xr.open_dataset(
                self.path,
                engine="zarr",
                chunks=None,
                cache=False,
                decode_timedelta=True,
                backend_kwargs={"storage_options": self.storage_options} if self.storage_options else None,
            )
        return self._plain

    def __getstate__(self) -> dict:
        return {"path": self.path, "storage_options": self.storage_options, "_ds": None, "_plain": None}


def _split_counts(counts: np.ndarray, quota: int) -> np.ndarray:
    """Trim per-worker batch counts, one at a time from the largest, so that they sum to ``quota``."""
    counts = counts.copy()
    for _ in range(int(counts.sum()) - quota):
        counts[int(np.argmax(counts))] -= 1
    return counts


@dataclass(frozen=True)
class _Block:
    """One block in memory: state (T_b, C, H, W) and forcings (T_b, F, H, W) from store index ``start``."""

    start: int
    state: np.ndarray
    forcing: np.ndarray


class WindowStream(IterableDataset):
    """An iterable of batches (dicts of tensors) for one split; use it with ``DataLoader(batch_size=None)``.

    With B the batch size, C state channels, F forcing channels and S static channels, a batch holds:

    - ``inputs``: (B, n_input, C, H, W) float32, physical units (normalisation happens on the device);
    - ``targets``: (B, n_target, C, H, W) float32;
    - ``forcings``: (B, n_input + n_target, F, H, W) float32 (analytic; for a limited-area model then the
      truth in the boundary strip and the strip mask, physical units: :mod:`earthcast.datasets.boundary`);
    - ``static``: (B, S, H, W) float32, physical units;
    - ``mask``: (B, H, W) float32, 1 where valid (0 on masked land, whose NaNs are replaced by 0);
    - ``time``: (B,) int64 nanoseconds since 1970 of the last input step (the init time).

    Batches are assembled straight from the block arrays (one copy per window), so no collate step runs.
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
        batch_size: int,
        drop_last: bool | None = None,
        buffer_size: int = 256,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if len(starts) == 0:
            raise DataError(
                "No complete window fits in this split: widen its date range or shorten n_input/n_target/step."
            )
        self.source, self.manifest, self.spec = source, manifest, spec
        self.starts, self.k, self.block_steps = np.asarray(starts, dtype=np.int64), int(k), int(block_steps)
        self.static, self.mask = static.astype(np.float32), mask
        self.shuffle, self.buffer_size, self.seed = shuffle, max(1, int(buffer_size)), int(seed)
        self.batch_size = int(batch_size)
        self.drop_last = shuffle if drop_last is None else drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self._iterations = 0, 0
        self.skip: list[int] | None = None
        block_ids = self.starts // self.block_steps
        self.blocks = [self.starts[block_ids == b] for b in np.unique(block_ids)]

    def set_epoch(self, epoch: int, skip: list[int] | None = None) -> None:
        """Select the epoch whose block order and shuffle the next iterator reproduces, and (on a mid-epoch
        resume) how many batches each DataLoader worker already served in it: those are passed over without
        reading their data, so the iterator continues at the next unseen batch.

        Persistent DataLoader workers keep their own copy of the stream and never see this call after they
        start; they count their own iterations from the epoch they started at, which gives the same epochs.
        A resume starts new workers, which see the skip counts.
        """
        self.epoch, self._iterations, self.skip = int(epoch), 0, skip

    def _block_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.blocks))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.blocks))

    def _assignment(self, num_workers: int) -> tuple[list[list[int]], np.ndarray]:
        """Blocks per worker of this rank, and each worker's batch quota (equal totals across ranks)."""
        order = self._block_order()
        consumers = self.world_size * num_workers
        owned = [[int(b) for b in order[c::consumers]] for c in range(consumers)]
        windows = np.array([sum(len(self.blocks[b]) for b in blocks) for blocks in owned])
        batches = windows // self.batch_size if self.drop_last else -(-windows // self.batch_size)
        per_rank = batches.reshape(self.world_size, num_workers)
        quota = int(per_rank.sum(axis=1).min())
        if quota == 0:
            raise DataError(
                f"a DDP rank gets no batch of this split: its {len(self.blocks)} time block(s) of "
                f"data.block_steps={self.block_steps} steps do not reach all {self.world_size} rank(s) x "
                f"{num_workers} worker(s), or hold fewer windows than data.batch_size={self.batch_size}; "
                "lower data.block_steps, data.num_workers or the batch size, or widen the split"
            )
        mine = slice(self.rank * num_workers, (self.rank + 1) * num_workers)
        return owned[mine], _split_counts(per_rank[self.rank], quota)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return int(self._assignment(1)[1].sum())

    def worker_order(self, num_workers: int) -> list[int]:
        """The worker of each batch of an epoch, in the order a DataLoader serves them: round robin over the
        workers that still have batches (each worker's count is its quota)."""
        quotas = self._assignment(max(1, num_workers))[1].tolist()
        order, served = [], [0] * len(quotas)
        while len(order) < sum(quotas):
            for w, quota in enumerate(quotas):
                if served[w] < quota:
                    order.append(w)
                    served[w] += 1
        return order

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        skip = self.skip[worker] if self.skip is not None and self._iterations == 0 else 0
        self.epoch, self._iterations = self.epoch + (self._iterations > 0), self._iterations + 1
        owned, quotas = self._assignment(num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        windows = self._windows(owned[worker], rng)
        if self.shuffle:
            windows = _shuffle_buffer(windows, self.buffer_size, rng)
        blocks = _BlockCache(self, owned[worker])
        batch: list[tuple[int, int]] = []
        produced = 0
        for window in windows:
            batch.append(window)
            if len(batch) < self.batch_size:
                continue
            if produced == quotas[worker]:
                return
            if produced < skip:
                blocks.release(batch)
            else:
                yield self._assemble(batch, blocks, worker)
            produced, batch = produced + 1, []
        if batch and not self.drop_last and produced < quotas[worker]:
            yield self._assemble(batch, blocks, worker)

    def _windows(self, blocks: list[int], rng: np.random.Generator) -> Iterator[tuple[int, int]]:
        """(block id, start index) of every window of the given blocks, in the epoch's order; the draws do
        not depend on the data, so a resumed iterator can pass over windows without reading them."""
        for b in blocks:
            starts = self.blocks[b]
            for s in rng.permutation(starts) if self.shuffle else starts:
                yield b, int(s)

    def read(self, b: int) -> _Block:
        """Block ``b`` in memory: one parallel read (without Dask when the store is canonical), finiteness
        checked, masked points set to 0."""
        ds = self.source.open()
        times = ds["time"].values
        starts = self.blocks[b]
        lo, hi = int(starts[0]), int(starts[-1]) + (self.spec.length - 1) * self.k + 1
        if self.direct:
            plain = self.source.open_plain()
            data = read_block_direct(plain, self.manifest, times, lo, hi, where=self.source.path)
        else:
            data = read_block(state_arrays(ds, self.manifest), times, lo, hi, where=self.source.path)
        check_finite(data, self.mask, self.manifest, times[lo:hi], where=self.source.path)
        if self.mask is not None:
            data = np.where(self.mask[None, None], data, np.float32(0.0))
        return _Block(lo, data, manifest_forcings(self.manifest, times[lo:hi], data))

    def _assemble(self, windows: list[tuple[int, int]], blocks: _BlockCache, worker: int) -> dict[str, Any]:
        n, span = len(windows), (self.spec.length - 1) * self.k + 1
        state_t = forcing_t = None
        for i, (b, start) in enumerate(windows):
            block = blocks.get(b)
            if state_t is None or forcing_t is None:
                state_t = _batch_buffer((n, self.spec.length, *block.state.shape[1:]))
                forcing_t = _batch_buffer((n, self.spec.length, *block.forcing.shape[1:]))
            # A basic (strided) slice copies ~3x faster than np.take with an index array.
            steps = slice(start - block.start, start - block.start + span, self.k)
            np.copyto(state_t.numpy()[i], block.state[steps])
            np.copyto(forcing_t.numpy()[i], block.forcing[steps])
        blocks.release(windows)
        assert state_t is not None and forcing_t is not None
        h, w = self.manifest.grid_shape
        mask = np.ones((h, w), np.float32) if self.mask is None else self.mask.astype(np.float32)
        init = np.array([start + (self.spec.n_input - 1) * self.k for _, start in windows])
        return {
            "inputs": state_t[:, : self.spec.n_input],
            "targets": state_t[:, self.spec.n_input :],
            "forcings": forcing_t,
            "static": torch.from_numpy(self.static).expand(n, *self.static.shape),
            "mask": torch.from_numpy(mask).expand(n, h, w),
            "time": torch.from_numpy(self.times[init]),
            WORKER_KEY: worker,
        }

    @functools.cached_property
    def direct(self) -> bool:
        """Whether blocks are read without Dask (:func:`~earthcast.datasets.reader.canonical_store`)."""
        return canonical_store(self.source.open_plain(), self.source.open(), self.manifest)

    @functools.cached_property
    def times(self) -> np.ndarray:
        """(T,) int64 ns: the store's time axis."""
        return self.source.open()["time"].values.astype("datetime64[ns]").astype(np.int64)


class _BlockCache:
    """The blocks one iterator has read, each kept until its last window has been served or passed over.

    Args:
        stream: the stream whose blocks these are; owned: the block ids this iterator serves.
    """

    def __init__(self, stream: WindowStream, owned: list[int]) -> None:
        self.stream = stream
        self.pending = {b: len(stream.blocks[b]) for b in owned}
        self.loaded: dict[int, _Block] = {}

    def get(self, b: int) -> _Block:
        if b not in self.loaded:
            self.loaded[b] = self.stream.read(b)
        return self.loaded[b]

    def release(self, windows: list[tuple[int, int]]) -> None:
        """Count the windows as served; drop blocks with none left."""
        for b, _ in windows:
            self.pending[b] -= 1
            if self.pending[b] == 0:
                self.loaded.pop(b, None)


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty float32 batch tensor; in a DataLoader worker it is allocated in shared memory (as PyTorch's
    own ``default_collate`` does), so handing the batch to the main process costs no extra copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    proto = torch.empty(0, dtype=torch.float32)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.new(storage).resize_(shape)


def _shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Fill a buffer to ``size``, then emit a random element for each arrival; flush it in random order."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(len(buffer)))
        yield buffer[i]
        buffer[i] = item
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


class EpochLoader(DataLoader):
    """A DataLoader that tells its :class:`WindowStream` the current epoch before spawning workers, and that
    is stateful in Lightning's stateful-dataloader protocol (``state_dict``/``load_state_dict``, saved in
    every checkpoint of ``fit``): the state is the epoch and the batches each worker has served in it, so a
    run resumed from a mid-epoch checkpoint continues at the next unseen batch, exactly as the uninterrupted
    run would have. Resuming needs the same ``num_workers`` (the split of blocks over workers depends on it).
    """

    def __init__(
        self, dataset: WindowStream, *, epoch_fn: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, **kwargs)
        self._epoch_fn = epoch_fn
        self._iterations = 0
        self._epoch = 0
        self._served = [0] * max(1, self.num_workers)
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator:
        epoch = self._epoch_fn() if self._epoch_fn is not None else self._iterations
        resume, self._resume = self._resume, None
        skip = resume["served"] if resume is not None and resume["epoch"] == epoch else None
        self.dataset.set_epoch(epoch, skip)
        self._iterations += 1
        self._epoch, self._served = epoch, list(skip or [0] * max(1, self.num_workers))
        order = self.dataset.worker_order(self.num_workers)[sum(self._served) :]
        return self._in_order(super().__iter__(), order)

    def _in_order(self, batches: Iterator[dict[str, Any]], order: list[int]) -> Iterator[dict[str, Any]]:
        """The workers' batches in ``order`` (worker ids), counted as served. The DataLoader serves workers
        round robin from worker 0, which after a resume is not where the epoch left off, so up to
        ``num_workers - 1`` batches wait here until their turn."""
        waiting: dict[int, deque[dict[str, Any]]] = defaultdict(deque)
        position = 0
        for batch in batches:
            waiting[int(batch.pop(WORKER_KEY))].append(batch)
            while position < len(order) and waiting[order[position]]:
                worker = order[position]
                self._served[worker] += 1
                position += 1
                yield waiting[worker].popleft()

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "num_workers", "served"}``: the epoch and the batches each worker served in it."""
        return {"epoch": self._epoch, "num_workers": self.num_workers, "served": list(self._served)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch at its next unseen batch when it is iterated next."""
        if int(state["num_workers"]) != self.num_workers:
            raise DataError(
                f"the checkpoint was taken mid-epoch with data.num_workers={state['num_workers']}, this run has "
                f"{self.num_workers}; resume with data.num_workers={state['num_workers']} (the blocks are split "
                "over workers, so another count would repeat or skip windows)"
            )
        self._resume = {"epoch": int(state["epoch"]), "served": [int(n) for n in state["served"]]}

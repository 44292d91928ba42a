"""LightningDataModule over a WB2-layout store: channel manifest, statistics, splits and streamed windows."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd

from earthcast.datasets.channels import ChannelManifest, build_manifest
from earthcast.datasets.forcings import COORDINATE_STATICS, coordinate_statics
from earthcast.datasets.reader import read_block, state_arrays
from earthcast.datasets.statistics import NormStats, load_or_compute_statistics
from earthcast.datasets.store import resolve_store
from earthcast.datasets.streaming import EpochLoader, StoreSource, WindowStream
from earthcast.datasets.time_axis import time_axis
from earthcast.datasets.windows import WindowSpec, default_block_steps, stride, window_starts
from earthcast.errors import DataError
from earthcast.grids import grid_mismatch, wb2_grid

Split = tuple[str, str]


class WB2DataModule(L.LightningDataModule):
    """Windows of N input steps and K target leads from a WB2 ERA5 or ocean store.

    Args:
        store: path or fsspec URL of the truth store (WB2 layout; normalised on open), or
            ``demo:atmosphere`` / ``demo:ocean`` for the embedded demo data (generated on first use).
        variables: variable -> levels in hPa (or depth levels), ``null`` for all levels or a surface field.
        static: time-invariant store variables (``land_sea_mask``, ``geopotential_at_surface``) and
            coordinate encodings (``latitude``, ``longitude``).
        forcings: ``hour_of_day``, ``day_of_year``, ``toa_insolation``.
        n_input, n_target, step: window shape; ``step`` must be a multiple of the store's spacing: a duration
            ("6h", "1D") on a uniform axis, calendar months ("1MS", "monthly", "3MS") on a monthly one.
        train, val, test: inclusive (start, end) date ranges. Defaults: test = the final 365 days, val = the
            60 days (or, if longer, the 12 time steps: a year of a monthly store) before, train = the rest.
        batch_size, eval_batch_size, num_workers: DataLoader settings; workers use ``multiprocessing_context``
            (``spawn`` by default, since forked Dask thread pools can deadlock); workers persist across epochs.
        block_steps: time steps read per block (default: whole chunks within 128 MiB).
        shuffle_buffer: samples held for shuffling; seed: the base of every random choice.
        masked: treat points that are NaN in the first training step (land, ice) as masked: they are filled
            with 0, flagged in ``mask`` and excluded from losses and metrics.
        grid: if set, a WB2 grid name the store must match within 1e-3°.
        geometry: override the grid geometry (``global_poles``, ``global``, ``band``, ``regional``,
            ``periodic``) that is otherwise declared by the store or derived from its coordinates; it decides
            the model's padding and the area weights, and travels in the manifest and checkpoints.
        boundary_width: on a regional grid, give the model the lateral boundary of a limited-area model: the
            truth state in the ``boundary_width`` outermost rows and columns at every forcing time, as the
            forcing channels ``boundary_<state channel>`` plus ``boundary_mask`` (0 = off;
            :mod:`earthcast.datasets.boundary`).
        stats_cache_dir: where statistics are cached (default: the user cache directory).
        storage_options: fsspec options for remote stores.
    """

    def __init__(
        self,
        store: str,
        variables: dict[str, list[int] | None],
        static: list[str] | None = None,
        forcings: list[str] | None = None,
        n_input: int = 1,
        n_target: int = 1,
        step: str = "6h",
        train: Split | None = None,
        val: Split | None = None,
        test: Split | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        multiprocessing_context: str = "spawn",
        block_steps: int | None = None,
        shuffle_buffer: int = 256,
        seed: int = 0,
        masked: bool = False,
        grid: str | None = None,
        geometry: str | None = None,
        boundary_width: int = 0,
        stats_cache_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source = StoreSource(resolve_store(store), storage_options)
        ds = self.source.open()
        where = f"store {store!r}"
        self.spec = WindowSpec(n_input, n_target, step)
        self.spacing = time_axis(ds["time"].values, where=where)
        self.k = stride(self.spec, self.spacing, where=where)
        self.model_step = self.spacing.scaled(self.k)
        if grid is not None:
            expected = wb2_grid(grid)
            problem = grid_mismatch(
                ds["latitude"].values, ds["longitude"].values, expected.latitude, expected.longitude
            )
            if problem:
                raise DataError(
                    f"{where} is not on the {grid} grid: {problem}. Regrid it or change data.grid."
                )
        self.manifest: ChannelManifest = build_manifest(
            ds,
            variables,
            static=static if static is not None else ["latitude", "longitude"],
            forcings=forcings if forcings is not None else ["hour_of_day", "day_of_year", "toa_insolation"],
            time_step_hours=self.model_step.hours,
            calendar_step=str(self.model_step) if self.model_step.is_calendar else "",
            masked=masked,
            geometry=geometry,
            boundary_width=boundary_width,
            where=where,
        )
        self.splits = self.resolve_splits(ds["time"].values, train, val, test)

    @staticmethod
    def resolve_splits(
        times: np.ndarray, train: Split | None, val: Split | None, test: Split | None
    ) -> dict[str, Split]:
        """Fill unset splits: test = the final calendar year (or final 365 days), val = the 60 days (or, if
        longer, the 12 time steps) before."""
        first, last = pd.Timestamp(times[0]), pd.Timestamp(times[-1])
        year_start = pd.Timestamp(year=last.year, month=1, day=1)
        test_start = (
            year_start
            if last - year_start >= pd.Timedelta("300D")
            else (last - pd.Timedelta("365D")).floor("D")
        )
        test = test or (test_start.isoformat(), last.isoformat())
        val_end = pd.Timestamp(test[0]) - pd.Timedelta("1s")
        before = int(pd.DatetimeIndex(times).searchsorted(pd.Timestamp(test[0])))
        val_start = min(pd.Timestamp(test[0]) - pd.Timedelta("60D"), pd.Timestamp(times[max(before - 12, 0)]))
        val = val or (val_start.isoformat(), val_end.isoformat())
        train = train or (first.isoformat(), (pd.Timestamp(val[0]) - pd.Timedelta("1s")).isoformat())
        return {"train": tuple(map(str, train)), "val": tuple(map(str, val)), "test": tuple(map(str, test))}

    @functools.cached_property
    def stats(self) -> NormStats:
        """Normalisation statistics over the training split (computed once, then cached on disk)."""
        start, end = self.splits["train"]
        ds = self.source.open()
        held = ds["time"].sel(time=slice(start, end)).size
        if held < 2 * self.k:  # statistics (and the tendency std) need at least two model steps
            first, last = (str(t)[:19] for t in ds["time"].values[[0, -1]])
            raise DataError(
                f"the training split {start} … {end} holds {held} time step(s) of {self.source.path} "
                f"({first} … {last}), too few for normalisation statistics (by default the final year is the "
                "test split and the 60 days before it validation); set data.train (and data.val, data.test)"
            )
        cache = self.hparams["stats_cache_dir"]
        return load_or_compute_statistics(
            self.source.open(),
            self.manifest,
            self.source.path,
            start,
            end,
            steps_per_model_step=self.k,
            cache_dir=None if cache is None else Path(cache),
        )

    @functools.cached_property
    def static_fields(self) -> np.ndarray:
        """(S, H, W) float32 static channels in physical units."""
        ds = self.source.open()
        lat, lon = ds["latitude"].values, ds["longitude"].values
        fields = []
        for channel in self.manifest.static:
            if channel.name in COORDINATE_STATICS:
                fields.append(coordinate_statics([channel.name], lat, lon)[0])
            else:
                fields.append(
                    ds[channel.variable].transpose("latitude", "longitude").values.astype(np.float32)
                )
        h, w = self.manifest.grid_shape
        return np.stack(fields) if fields else np.zeros((0, h, w), np.float32)

    @functools.cached_property
    def mask(self) -> np.ndarray | None:
        """(H, W) bool, True where every state channel is finite at the first training step; None if unmasked."""
        if not self.manifest.masked:
            return None
        ds = self.source.open()
        first = int(pd.DatetimeIndex(ds["time"].values).searchsorted(pd.Timestamp(self.splits["train"][0])))
        block = read_block(
            state_arrays(ds, self.manifest), ds["time"].values, first, first + 1, where=self.source.path
        )
        return np.isfinite(block[0]).all(axis=0)

    def stream(self, split: str) -> WindowStream:
        """The :class:`WindowStream` of one split, partitioned for this process's DDP rank."""
        ds = self.source.open()
        times = ds["time"].values
        start, end = self.splits[split]
        starts = window_starts(times, start, end, self.spec, self.k)
        first_var = ds[self.manifest.state[0].variable]
        chunk = int(first_var.chunks[first_var.dims.index("time")][0]) if first_var.chunks else 1
        h, w = self.manifest.grid_shape
        bytes_per_step = 4 * h * w * len(self.manifest.state)
        block = self.hparams["block_steps"] or default_block_steps(
            chunk,
            int(starts[-1] - starts[0]) + 1 if len(starts) else 1,
            self.spec.length * self.k,
            bytes_per_step,
        )
        trainer = self.trainer
        return WindowStream(
            self.source,
            self.manifest,
            self.spec,
            starts,
            k=self.k,
            block_steps=block,
            static=self.static_fields,
            mask=self.mask,
            shuffle=split == "train",
            batch_size=self.hparams["batch_size"]
            if split == "train"
            else (self.hparams["eval_batch_size"] or self.hparams["batch_size"]),
            buffer_size=self.hparams["shuffle_buffer"],
            seed=self.hparams["seed"],
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def _loader(self, split: str) -> EpochLoader:
        workers = self.hparams["num_workers"]
        return EpochLoader(
            self.stream(split),
            epoch_fn=self._epoch if self.trainer is not None else None,
            batch_size=None,
            num_workers=workers,
            multiprocessing_context=self.hparams["multiprocessing_context"] if workers > 0 else None,
            persistent_workers=workers > 0,
        )

    def _epoch(self) -> int:
        """The epoch about to run: finished epochs so far (valid before Lightning counts a resumed epoch)."""
        return self.trainer.fit_loop.epoch_progress.current.processed

    def train_dataloader(self) -> EpochLoader:
        """Shuffled windows of the training split."""
        return self._loader("train")

    def val_dataloader(self) -> EpochLoader:
        """Windows of the validation split in time order."""
        return self._loader("val")

    def test_dataloader(self) -> EpochLoader:
        """Windows of the test split in time order."""
        return self._loader("test")

    def predict_dataloader(self) -> EpochLoader:
        """Windows of the test split in time order."""
        return self._loader("test")

"""Initial conditions and static fields of a rollout, read from the truth store by init time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.datasets.channels import ChannelManifest, build_manifest
from earthcast.datasets.forcings import COORDINATE_STATICS, coordinate_statics
from earthcast.datasets.reader import read_block, state_arrays
from earthcast.datasets.store import open_store
from earthcast.datasets.time_axis import advance_times
from earthcast.errors import ConfigError, TimeAxisError


def _variables(manifest: ChannelManifest) -> dict[str, list[int] | None]:
    out: dict[str, list[int] | None] = {}
    for channel in manifest.state:
        if channel.level is None:
            out[channel.variable] = None
        else:
            levels = out.setdefault(channel.variable, [])
            assert levels is not None
            levels.append(channel.level)
    return out


@dataclass
class TruthSource:
    """The truth store a rollout starts from, checked against the checkpoint's manifest.

    Attributes:
        path: store path or URL.
        ds: the opened, normalised dataset.
        manifest: the checkpoint's manifest (channels, grid, step).
        times: (T,) the store's time axis, datetime64[ns].
    """

    path: str
    ds: xr.Dataset
    manifest: ChannelManifest
    times: pd.DatetimeIndex

    @classmethod
    def open(cls, path: str, manifest: ChannelManifest) -> TruthSource:
        """Open ``path`` and check that it holds the checkpoint's channels on the checkpoint's grid.

        Raises:
            KeyError: a variable, level or static field of the checkpoint is missing from the store.
            ValueError: the store's grid differs from the checkpoint's.
        """
        ds = open_store(path)
        where = f"truth store {path!r}"
        found = build_manifest(
            ds,
            _variables(manifest),
            static=manifest.names("static"),
            forcings=manifest.analytic_forcings,
            time_step_hours=manifest.time_step_hours,
            calendar_step=manifest.calendar_step,
            masked=manifest.masked,
            boundary_width=manifest.boundary_width,
            where=where,
        )
        problems = [d for d in manifest.differences(found) if "grids differ" in d or "geometry differs" in d]
        if problems:
            raise ConfigError(
                f"{where} does not match the checkpoint: {'; '.join(problems)}. Use the store (or grid) the "
                "model was trained on."
            )
        times = pd.DatetimeIndex(ds["time"].values.astype("datetime64[ns]"))
        return cls(str(path), ds, manifest, times)

    def input_times(self, inits: pd.DatetimeIndex, n_input: int) -> np.ndarray:
        """(I, N) datetime64[ns] times of the N input states ending at each init (calendar-aware)."""
        back = -np.arange(n_input)[::-1]
        return advance_times(inits.values[:, None], back[None, :], self.manifest.model_step)

    def check_inits(self, inits: pd.DatetimeIndex, n_input: int) -> None:
        """Raise ValueError naming the init times whose input states are missing from the store."""
        # the inits themselves too: on a calendar axis an init off the stamps' rule is not a stamp
        wanted = np.union1d(self.input_times(inits, n_input).ravel(), inits.values.astype("datetime64[ns]"))
        present = self.times.isin(wanted.ravel())
        missing = sorted(set(wanted.ravel().tolist()) - set(self.times[present].values.tolist()))
        if missing:
            shown = ", ".join(str(np.datetime64(t, "ns"))[:19] for t in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ConfigError(
                f"the truth store {self.path!r} lacks {len(missing)} time(s) needed as initial conditions "
                f"({n_input} input step(s) ending at each init): {shown}{more}. The store covers "
                f"{str(self.times[0])[:19]} … {str(self.times[-1])[:19]}; choose --inits inside that range."
            )

    def initial_states(self, inits: pd.DatetimeIndex, n_input: int) -> np.ndarray:
        """(B, N, C, H, W) float32 physical input states ending at each init (NaN where the store has NaN)."""
        arrays = state_arrays(self.ds, self.manifest)
        index = self.times.get_indexer(self.input_times(inits, n_input).ravel()).reshape(len(inits), n_input)
        out = []
        for rows in index:
            block = read_block(arrays, self.times.values, int(rows[0]), int(rows[-1]) + 1, where=self.path)
            out.append(block[rows - rows[0]])
        return np.stack(out)

    def static_fields(self) -> np.ndarray:
        """(S, H, W) float32 static channels in physical units, in manifest order."""
        lat, lon = self.ds["latitude"].values, self.ds["longitude"].values
        fields = []
        for channel in self.manifest.static:
            if channel.name in COORDINATE_STATICS:
                fields.append(coordinate_statics([channel.name], lat, lon)[0])
            else:
                da = self.ds[channel.variable].transpose("latitude", "longitude")
                fields.append(da.values.astype(np.float32))
        h, w = self.manifest.grid_shape
        return np.stack(fields) if fields else np.zeros((0, h, w), np.float32)

    def check_boundary(self, times: np.ndarray) -> None:
        """Raise :class:`TimeAxisError` naming the first of ``times`` (any shape, datetime64) that the store
        lacks: a limited-area model reads its lateral boundary from the truth at every step."""
        wanted = np.asarray(times, dtype="datetime64[ns]").ravel()
        missing = wanted[self.times.get_indexer(wanted) < 0]
        if missing.size:
            raise TimeAxisError(
                f"the truth store {self.path!r} has no state at {str(missing.min())[:19]}, where this "
                f"limited-area model (boundary_width={self.manifest.boundary_width}) needs the truth as its "
                f"lateral boundary; the store covers {str(self.times[0])[:19]} … {str(self.times[-1])[:19]}. "
                "Shorten --lead or choose earlier --inits so that every valid time is in the store."
            )

    def boundary_states(self, times: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 physical truth at times (B,) datetime64 (NaN where the store has NaN), for
        the boundary forcing; raises like :meth:`check_boundary`."""
        self.check_boundary(times)
        arrays = state_arrays(self.ds, self.manifest)
        rows = self.times.get_indexer(np.asarray(times, dtype="datetime64[ns]"))
        return np.stack([read_block(arrays, self.times.values, i, i + 1, where=self.path)[0] for i in rows])

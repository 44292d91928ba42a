"""WB2 by-init forecast Zarr writer: the full skeleton up front, then one region write per computed step.

Layout: dims ``time`` (init, datetime64[ns]), [``number``], ``prediction_timedelta`` (timedelta64[ns]),
[``level``], ``latitude``, ``longitude``; one float32 variable per store variable with its ``units``
(levels re-assembled from channels such as ``temperature_500``); chunks of one init × one lead (all members,
levels and the whole grid); ``zarr_format=2`` with consolidated metadata; unwritten chunks read as NaN.

The skeleton is written lazily from a Dask-backed NaN template (``to_zarr(compute=False)``) into a temporary
sibling and renamed, so a store under the final name always has complete metadata. Each step is a region
write of whole chunks: every chunk of the step is encoded with the array's own compressor (read from its
``.zarray``) and written to its Zarr v2 chunk key (``i.j.k…``) through a temporary file and a rename, so
a chunk on disk is always complete. This is what ``to_zarr(region=…)`` stores, at a fraction of its
per-call cost (which would otherwise rival a small model's step).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask.array
import numcodecs
import numpy as np
import xarray as xr
import zarr
from numcodecs.abc import Codec

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.zarr_store import ZARR_FORMAT, atomic_store
from earthcast.errors import ConfigError

RUN_ATTR = "earthcast_rollout"
"""Store attribute holding the run identity (JSON) that resumes and re-runs are checked against."""


@dataclass(frozen=True)
class VariableLayout:
    """Where a store variable's channels sit on the state axis: name, channel indices, levels (or None)."""

    name: str
    channels: tuple[int, ...]
    levels: tuple[int, ...] | None
    units: str


def variable_layout(manifest: ChannelManifest) -> list[VariableLayout]:
    """Group the manifest's state channels by store variable (first-appearance order)."""
    order: dict[str, list[int]] = {}
    for i, channel in enumerate(manifest.state):
        order.setdefault(channel.variable, []).append(i)
    out = []
    for name, idx in order.items():
        chans = [manifest.state[i] for i in idx]
        levels = None if chans[0].level is None else tuple(int(c.level) for c in chans)  # type: ignore[arg-type]
        out.append(VariableLayout(name, tuple(idx), levels, chans[0].units))
    return out


def level_axis(layouts: Sequence[VariableLayout]) -> list[int]:
    """The store's ``level`` coordinate: the sorted union of every variable's levels (a variable trained on
    fewer levels is NaN at the others)."""
    return sorted({lvl for lay in layouts for lvl in (lay.levels or ())})


def level_positions(lay: VariableLayout, levels: Sequence[int]) -> list[int]:
    """Positions of a variable's channels on the ``level`` axis."""
    return [list(levels).index(lvl) for lvl in lay.levels or ()]


def store_template(
    manifest: ChannelManifest,
    init_times: np.ndarray,
    leads: np.ndarray,
    members: int | None,
    attrs: dict[str, str],
    valid_times: np.ndarray | None = None,
) -> xr.Dataset:
    """The by-init dataset, Dask-backed and NaN-filled, chunked one init × one lead.

    Args:
        init_times: (I,) datetime64[ns]; leads: (L,) timedelta64[ns]; members: size of ``number`` or None.
        valid_times: (I, L) datetime64[ns] true valid times, stored as the coordinate ``valid_time`` for a
            calendar-month model, whose leads are nominal (mean months) and whose valid times are not
            init + lead; ``earthcast score`` then scores against the truth at those times.
    """
    layouts = variable_layout(manifest)
    levels = level_axis(layouts)
    h, w = manifest.grid_shape
    lead_dims = ("time", "number", "prediction_timedelta") if members else ("time", "prediction_timedelta")
    lead_shape = (len(init_times), members, len(leads)) if members else (len(init_times), len(leads))
    lead_chunks = (1, members, 1) if members else (1, 1)
    data = {}
    for lay in layouts:
        dims, shape, chunks = lead_dims, lead_shape, lead_chunks
        if lay.levels is not None:
            dims, shape, chunks = (*dims, "level"), (*shape, len(levels)), (*chunks, len(levels))
        values = dask.array.full((*shape, h, w), np.nan, dtype=np.float32, chunks=(*chunks, h, w))
        data[lay.name] = ((*dims, "latitude", "longitude"), values, {"units": lay.units})
    coords: dict[str, object] = {
        "time": ("time", init_times.astype("datetime64[ns]")),
        "prediction_timedelta": ("prediction_timedelta", leads.astype("timedelta64[ns]")),
        "latitude": ("latitude", np.asarray(manifest.latitude, np.float64), {"units": "degrees_north"}),
        "longitude": ("longitude", np.asarray(manifest.longitude, np.float64), {"units": "degrees_east"}),
    }
    if levels:
        coords["level"] = ("level", np.asarray(levels, np.int64))
    if members:
        coords["number"] = ("number", np.arange(members, dtype=np.int64))
    if valid_times is not None:
        coords["valid_time"] = (("time", "prediction_timedelta"), valid_times.astype("datetime64[ns]"))
    return xr.Dataset(data, coords=coords, attrs=attrs)


class ForecastWriter:
    """Creates the store skeleton and writes each step's region.

    Args:
        path: the store path (local).
        manifest: the checkpoint's manifest (channels, grid, units).
        ensemble: whether the store has a ``number`` dimension.
    """

    def __init__(self, path: str | os.PathLike, manifest: ChannelManifest, *, ensemble: bool) -> None:
        self.path = os.fspath(path)
        self.layouts = variable_layout(manifest)
        levels = level_axis(self.layouts)
        self.positions = {lay.name: level_positions(lay, levels) for lay in self.layouts}
        self.n_levels = len(levels)
        self.ensemble = ensemble
        self._arrays: dict[str, tuple[Path, Codec | None]] | None = None

    def create(self, template: xr.Dataset) -> None:
        """Write the metadata and coordinates of ``template`` (no data chunks) under ``path``, atomically.

        The Zarr chunks are the template's; the data are handed to ``to_zarr`` as one lazy Dask chunk per
        variable, since nothing of them is written and a graph of one task per Zarr chunk (a year of leads:
        tens of thousands) would take seconds to build."""
        encoding = {
            name: {"chunks": tuple(c[0] for c in da.chunks), "_FillValue": np.float32(np.nan)}  # type: ignore[index]
            for name, da in template.data_vars.items()
        }
        whole = {
            name: da.copy(data=dask.array.full(da.shape, np.nan, dtype=da.dtype, chunks=da.shape))
            for name, da in template.data_vars.items()
        }
        with atomic_store(self.path) as tmp:
            template.assign(whole).to_zarr(
                tmp, mode="w-", compute=False, zarr_format=ZARR_FORMAT, consolidated=True, encoding=encoding
            )

    def _open(self) -> dict[str, tuple[Path, Codec | None]]:
        if self._arrays is None:
            arrays = {}
            for lay in self.layouts:
                meta = json.loads((Path(self.path) / lay.name / ".zarray").read_text())
                if meta.get("filters") or meta["order"] != "C" or meta["dtype"] != "<f4":
                    raise ConfigError(
                        f"{self.path}/{lay.name} is not a float32 C-order Zarr v2 array without filters"
                    )
                codec = numcodecs.get_codec(meta["compressor"]) if meta["compressor"] else None
                arrays[lay.name] = (Path(self.path) / lay.name, codec)
            self._arrays = arrays
        return self._arrays

    @staticmethod
    def _put_chunk(directory: Path, key: str, codec: Codec | None, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype="<f4")
        encoded = codec.encode(data) if codec is not None else data.tobytes()
        tmp = directory / f".{key}.tmp"
        tmp.write_bytes(encoded)
        os.replace(tmp, directory / key)

    def _level_values(self, lay: VariableLayout, fields: np.ndarray) -> np.ndarray:
        """(B, M, [levels], H, W) values of one variable; NaN at levels the model does not predict."""
        if lay.levels is None:
            return fields[:, :, lay.channels[0]]
        values = np.full((*fields.shape[:2], self.n_levels, *fields.shape[3:]), np.nan, np.float32)
        values[:, :, self.positions[lay.name]] = fields[:, :, list(lay.channels)]
        return values

    def write(self, inits: slice, lead_index: int, fields: np.ndarray) -> None:
        """Write one lead of a batch.

        Args:
            inits: the batch's slice of the ``time`` axis.
            lead_index: position on ``prediction_timedelta``.
            fields: (B, M, C, H, W) float32 physical values (M == 1 without ``number``).
        """
        arrays = self._open()
        for lay in self.layouts:
            directory, codec = arrays[lay.name]
            values = self._level_values(lay, fields)  # (B, M, [levels], H, W)
            tail = ".0" * (values.ndim - 2)  # level (if any), latitude and longitude are whole chunks
            for b, init in enumerate(range(inits.start, inits.stop)):
                if self.ensemble:
                    self._put_chunk(directory, f"{init}.0.{lead_index}{tail}", codec, values[b, :, None])
                else:
                    self._put_chunk(directory, f"{init}.{lead_index}{tail}", codec, values[b, 0, None])


def read_run_identity(path: str | os.PathLike) -> dict | None:
    """The run identity stored in an existing store's attributes, or None if it has none."""
    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None
    raw = group.attrs.get(RUN_ATTR)
    return None if raw is None else json.loads(str(raw))


def leads_axis(n_steps: int, step: np.timedelta64) -> np.ndarray:
    """(L,) timedelta64[ns] leads step, 2·step, …, L·step."""
    return (np.arange(1, n_steps + 1) * step).astype("timedelta64[ns]")

"""Read contiguous time blocks of state channels from a store as one float32 array.

Two paths give the same array:

- :func:`read_block` builds one Dask graph over every selected variable and computes it with the threaded
  scheduler, so the Zarr chunks of all variables are fetched and decompressed in parallel, once. It reads any
  store, whatever :func:`~earthcast.datasets.normalize.normalize_dataset` had to change.
- :func:`read_block_direct` reads a store already in canonical form through xarray without Dask: each
  variable's slice goes straight to Zarr, which fetches and decodes its chunks concurrently. On local stores
  this has about twice the decoded throughput (no graph to build, order and schedule per block;
  ``benchmarks/data_throughput.py``), so the training loader uses it whenever :func:`canonical_store`
  allows.
"""

from __future__ import annotations

import itertools

import dask
import dask.array
import numpy as np
import xarray as xr

from earthcast.datasets.channels import ChannelManifest
from earthcast.errors import CorruptChunkError, NaNInWindowError

__all__ = [
    "CorruptChunkError",
    "NaNInWindowError",
    "canonical_store",
    "check_finite",
    "corrupt_chunk_error",
    "read_block",
    "read_block_direct",
    "state_arrays",
]


def state_arrays(ds: xr.Dataset, manifest: ChannelManifest) -> list[tuple[str, xr.DataArray]]:
    """One lazily indexed (time, [channel], latitude, longitude) DataArray per store variable.

    Channels of a variable are contiguous in the manifest, so concatenating the per-variable blocks in
    this order reproduces the manifest's channel order.
    """
    out: list[tuple[str, xr.DataArray]] = []
    for channel in manifest.state:
        if out and out[-1][0] == channel.variable and channel.level is not None:
            continue
        da = ds[channel.variable]
        if channel.level is not None:
            levels = [c.level for c in manifest.state if c.variable == channel.variable]
            positions = [int(i) for i in ds.indexes["level"].get_indexer(levels)]
            run = positions == list(range(positions[0], positions[0] + len(positions)))
            # A contiguous run of levels is a slice: a view, where a list would force a gather copy.
            da = da.isel(level=slice(positions[0], positions[-1] + 1) if run else positions)
            da = da.transpose("time", "level", "latitude", "longitude")
        else:
            da = da.transpose("time", "latitude", "longitude").expand_dims("level", axis=1)
        out.append((channel.variable, da))
    return out


def read_block(
    arrays: list[tuple[str, xr.DataArray]], times: np.ndarray, start: int, stop: int, *, where: str
) -> np.ndarray:
    """State channels for store time indices ``[start, stop)``.

    Args:
        arrays: :func:`state_arrays` of the dataset (build once per process and reuse).
        times: (T,) the store's time coordinate, for error messages.

    Returns:
        (stop − start, C_state, H, W) float32 in physical units (NaN where the store has NaN).

    Raises:
        CorruptChunkError: a chunk is truncated or undecodable; names the variable and time range.
    """
    sizes = [da.shape[1] for _, da in arrays]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty((stop - start, int(bounds[-1]), *arrays[0][1].shape[2:]), dtype=np.float32)
    sources = [da.data[start:stop].astype(np.float32) for _, da in arrays]
    targets = [out[:, lo:hi] for lo, hi in itertools.pairwise(bounds)]
    try:
        # Every chunk is decoded by the thread pool and written straight into its place in ``out``.
        dask.array.store(sources, targets, scheduler="threads", lock=False)
    except Exception:
        for (name, da), target in zip(arrays, targets):
            target[...] = _read_one(times, name, da, start, stop, where)
    return out


def canonical_store(plain: xr.Dataset, normalised: xr.Dataset, manifest: ChannelManifest) -> bool:
    """Whether ``plain`` (the store opened without Dask and without normalisation) already is ``normalised``
    for the manifest's state variables: same names, (time, [level], latitude, longitude) dimensions in that
    order and identical coordinates, so :func:`read_block_direct` may read it."""
    for variable in dict.fromkeys(c.variable for c in manifest.state):
        if variable not in plain.data_vars:
            return False
        a, b = plain[variable], normalised[variable]
        if a.dims != b.dims or a.dims not in (
            ("time", "latitude", "longitude"),
            ("time", "level", "latitude", "longitude"),
        ):
            return False
        if any(not np.array_equal(a[d].values, b[d].values) for d in a.dims):
            return False
    return True


def read_block_direct(
    plain: xr.Dataset, manifest: ChannelManifest, times: np.ndarray, start: int, stop: int, *, where: str
) -> np.ndarray:
    """:func:`read_block`'s array, read from a store opened without Dask that :func:`canonical_store` accepts.

    Returns:
        (stop − start, C_state, H, W) float32 in physical units (NaN where the store has NaN).

    Raises:
        CorruptChunkError: a chunk is truncated or undecodable; names the variable and time range.
    """
    h, w = manifest.grid_shape
    out = np.empty((stop - start, len(manifest.state), h, w), dtype=np.float32)
    c = 0
    for variable in dict.fromkeys(ch.variable for ch in manifest.state):
        var = plain[variable].variable
        levels = [ch.level for ch in manifest.state if ch.variable == variable and ch.level is not None]
        try:
            if levels:
                positions = plain.indexes["level"].get_indexer(levels)
                lo, hi = int(positions[0]), int(positions[-1]) + 1
                run = positions.tolist() == list(range(lo, hi))
                out[:, c : c + len(levels)] = var[start:stop, slice(lo, hi) if run else positions].values
                c += len(levels)
            else:
                out[:, c] = var[start:stop].values
                c += 1
        except Exception as err:
            raise corrupt_chunk_error(times, variable, plain[variable], start, stop, where, err) from err
    return out


def _read_one(
    times: np.ndarray, name: str, da: xr.DataArray, start: int, stop: int, where: str
) -> np.ndarray:
    """Read one variable; on failure, find the first unreadable time chunk and name its time range."""
    try:
        return np.asarray(da.isel(time=slice(start, stop)).values)
    except Exception as err:
        raise corrupt_chunk_error(times, name, da, start, stop, where, err) from err


def corrupt_chunk_error(
    times: np.ndarray, name: str, da: xr.DataArray, start: int, stop: int, where: str, err: Exception
) -> CorruptChunkError:
    """The error for a failed read of ``da`` (time, …) over store indices [start, stop): it names the variable
    and the time range of the first chunk that cannot be read (found by reading chunk by chunk)."""
    lo, hi = _first_bad_chunk(da, start, stop)
    return CorruptChunkError(
        f"Reading {name!r} for {str(times[lo])[:19]} … {str(times[hi - 1])[:19]} from {where} failed "
        f"({type(err).__name__}: {err}). A chunk of that variable is truncated or corrupt: re-download or "
        "re-write that time range of the store."
    )


def _first_bad_chunk(da: xr.DataArray, start: int, stop: int) -> tuple[int, int]:
    """Time-index range [lo, hi) of the first chunk in [start, stop) that cannot be read."""
    if da.chunks:
        sizes = da.chunks[da.dims.index("time")]
    else:  # read without Dask: the store's own chunks
        step = int(da.encoding.get("chunks", (da.sizes["time"],))[da.dims.index("time")])
        sizes = (step,) * -(-da.sizes["time"] // step)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for lo, hi in itertools.pairwise(bounds):
        lo, hi = max(int(lo), start), min(int(hi), stop)
        if lo >= hi:
            continue
        try:
            da.isel(time=slice(lo, hi)).load()
        except Exception:
            return lo, hi
    return start, stop


def check_finite(
    block: np.ndarray,
    mask: np.ndarray | None,
    manifest: ChannelManifest,
    times: np.ndarray,
    *,
    where: str,
) -> None:
    """Raise :class:`NaNInWindowError` for a NaN/Inf outside the mask.

    Args:
        block: (T, C, H, W) state values.
        mask: (H, W) bool, True where values are valid (ocean), or None when nothing is masked.
        times: (T,) datetime64 of the block's time steps.
    """
    bad = ~np.isfinite(block)
    if mask is not None:
        bad &= mask[None, None]
    if not bad.any():
        return
    t, c, i, j = (int(x[0]) for x in np.nonzero(bad))
    lat, lon = manifest.latitude[i], manifest.longitude[j]
    hint = (
        "Set data.masked=true to treat NaN points that are NaN at every time (land, ice) as masked"
        if mask is None
        else "These points are not NaN everywhere, so they are not land"
    )
    raise NaNInWindowError(
        f"Non-finite value in {manifest.state[c].name!r} at {str(times[t])[:19]}, latitude {lat:.4g}, longitude "
        f"{lon:.4g} in {where}, inside a training window. {hint}; otherwise exclude this date from the split or "
        "repair the store."
    )

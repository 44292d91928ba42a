"""Per-channel normalisation statistics, computed out of core with Dask and cached by store and selection.

For every state channel: the mean and standard deviation over (time, latitude, longitude) of the training
period, and the standard deviation of one-step tendencies x(t+Δ) − x(t) at the model step Δ. Static
channels get a mean and a standard deviation over the grid. NaN points (masked land) are skipped.
Means are unweighted over grid points, as in GraphCast and neural-lam. Everything is accumulated in float64.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import platformdirs
import xarray as xr

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.reader import corrupt_chunk_error, state_arrays
from earthcast.distributed import compute
from earthcast.errors import CorruptChunkError

log = logging.getLogger(__name__)

STATS_VERSION = 1


@dataclass(frozen=True)
class NormStats:
    """Normalisation statistics, each a tuple with one value per channel, in physical units.

    Attributes:
        state_mean, state_std, tendency_std: (C_state,) values.
        static_mean, static_std: (C_static,) values.
    """

    state_mean: tuple[float, ...]
    state_std: tuple[float, ...]
    tendency_std: tuple[float, ...]
    static_mean: tuple[float, ...] = ()
    static_std: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable form (also stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(float(x) for x in v) for k, v in data.items()})


def _fingerprint(store: str) -> str:
    """Identify the store's content cheaply: its metadata and, locally, the array directories' mtimes."""
    digest = hashlib.sha256(store.encode())
    local = "://" not in store
    for meta in (".zmetadata", "zarr.json"):
        path = os.path.join(store, meta)
        if local and os.path.exists(path):
            digest.update(Path(path).read_bytes())
    if local and os.path.isdir(store):
        for entry in sorted(os.scandir(store), key=lambda e: e.name):
            digest.update(f"{entry.name}:{entry.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_key(store: str, manifest: ChannelManifest, start: str, end: str, step_hours: float) -> dict:
    """Everything the statistics depend on; a cache entry is reused only if its key is identical."""
    return {
        "version": STATS_VERSION,
        "store": store,
        "store_fingerprint": _fingerprint(store),
        "state": manifest.names("state"),
        "static": manifest.names("static"),
        "start": start,
        "end": end,
        "step_hours": step_hours,
        # a calendar step (months) keys by its rule too; fixed steps keep the keys of earlier caches
        **({"calendar_step": manifest.calendar_step} if manifest.calendar_step else {}),
    }


def default_cache_dir() -> Path:
    """``$EARTHCAST_CACHE_DIR/stats`` or the user cache directory."""
    root = os.environ.get("EARTHCAST_CACHE_DIR") or platformdirs.user_cache_dir("earthcast")
    return Path(root) / "stats"


def _moments(da: xr.DataArray, dims: tuple[str, ...]) -> tuple[xr.DataArray, xr.DataArray]:
    x = da.astype(np.float64)
    return x.mean(dims, skipna=True), x.std(dims, skipna=True)


def compute_statistics(
    ds: xr.Dataset,
    manifest: ChannelManifest,
    start: str,
    end: str,
    *,
    steps_per_model_step: int,
    where: str = "the store",
) -> NormStats:
    """Compute statistics over ``time`` in [start, end] with one Dask pass over the data.

    The pass runs on the active ``dask.distributed`` Client if there is one (see :mod:`earthcast.distributed`),
    else on the threaded scheduler; both run the same reduction tree, so the values are bit-identical.

    Args:
        steps_per_model_step: the model step in units of the store's time spacing (1 for 6 h on WB2).
        where: how to name the store in error messages.

    Raises:
        CorruptChunkError: a chunk cannot be read; names the variable and its time range.
    """
    lazy = []
    for _, da in state_arrays(ds, manifest):
        da = da.sel(time=slice(start, end))
        k = steps_per_model_step
        tendency = da.isel(time=slice(k, None)).data - da.isel(time=slice(None, -k)).data
        mean, std = _moments(da, ("time", "latitude", "longitude"))
        tend = (
            xr.DataArray(tendency, dims=da.dims)
            .astype(np.float64)
            .std(("time", "latitude", "longitude"), skipna=True)
        )
        lazy += [mean.data, std.data, tend.data]
    static_fields = [ds[c.variable] for c in manifest.static if c.variable in ds.data_vars]
    for da in static_fields:
        mean, std = _moments(da, ("latitude", "longitude"))
        lazy += [mean.data, std.data]
    try:
        values = compute(lazy)
    except Exception as err:
        raise _locate_corrupt_chunk(ds, manifest, start, end, err, where) from err
    n_state = 3 * len(state_arrays(ds, manifest))
    state = [np.concatenate([np.atleast_1d(v) for v in values[i:n_state:3]]) for i in range(3)]
    static_mean, static_std = _static_moments(manifest, values[n_state:])
    return NormStats(
        state_mean=tuple(state[0].tolist()),
        state_std=tuple(state[1].tolist()),
        tendency_std=tuple(state[2].tolist()),
        static_mean=static_mean,
        static_std=static_std,
    )


def _locate_corrupt_chunk(
    ds: xr.Dataset, manifest: ChannelManifest, start: str, end: str, err: Exception, where: str
) -> Exception:
    """The :class:`CorruptChunkError` naming the variable and time range that failed, or ``err`` itself when
    every chunk reads (the failure was not a bad chunk)."""
    times = ds["time"].values
    lo = int(np.searchsorted(times, np.datetime64(start, "ns"), side="left"))
    hi = int(np.searchsorted(times, np.datetime64(end, "ns"), side="right"))
    for name, da in state_arrays(ds, manifest):
        try:
            compute([da.isel(time=slice(lo, hi)).data])
        except Exception as inner:
            return corrupt_chunk_error(times, name, da, lo, hi, where, inner)
    for channel in manifest.static:
        if channel.variable in ds.data_vars:
            try:
                ds[channel.variable].load()
            except Exception as inner:
                return CorruptChunkError(
                    f"Reading the static field {channel.variable!r} from {where} failed "
                    f"({type(inner).__name__}: {inner}): "
                    "a chunk of it is truncated or corrupt; re-download or re-write that variable."
                )
    return err


def _static_moments(manifest: ChannelManifest, values: tuple) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Store statics take their computed moments; coordinate encodings (sin/cos) keep mean 0, std 1."""
    means, stds, it = [], [], iter(values)
    store_names = {c.name for c in manifest.static if not c.name.startswith(("sin_", "cos_"))}
    for channel in manifest.static:
        if channel.name in store_names:
            means.append(float(next(it)))
            stds.append(float(next(it)))
        else:
            means.append(0.0)
            stds.append(1.0)
    return tuple(means), tuple(stds)


def load_or_compute_statistics(
    ds: xr.Dataset,
    manifest: ChannelManifest,
    store: str,
    start: str,
    end: str,
    *,
    steps_per_model_step: int,
    cache_dir: Path | None = None,
) -> NormStats:
    """Return cached statistics for exactly this store and selection, computing and caching them if needed.

    A cache file whose recorded key differs from the requested one (another selection, a rewritten store,
    a hash collision) is never reused: the statistics are recomputed and the file replaced.
    """
    key = cache_key(store, manifest, start, end, manifest.time_step_hours)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = (cache_dir or default_cache_dir()) / f"stats-{digest}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                log.info("Reusing normalisation statistics from %s", path)
                return NormStats.from_dict(cached["stats"])
            log.warning("Statistics cache %s was made for another selection or store; recomputing.", path)
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("Statistics cache %s is unreadable; recomputing.", path)
    stats = compute_statistics(
        ds, manifest, start, end, steps_per_model_step=steps_per_model_step, where=f"store {store!r}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "stats": stats.to_dict()}, indent=1))
    os.replace(tmp, path)
    return stats

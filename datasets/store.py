"""Open WB2-layout Zarr stores (local paths or fsspec URLs such as ``gs://`` and ``s3://``) lazily."""

from __future__ import annotations

import os
from typing import Any

import xarray as xr

from earthcast.datasets import chunk_guard
from earthcast.datasets.normalize import normalize_dataset
from earthcast.errors import ConfigError, DataError, StoreNotFoundError

DEMO_PREFIX = "demo:"
DEMO_KINDS = ("atmosphere", "ocean")


def resolve_store(store: str | os.PathLike, *, generate: bool = True) -> str:
    """The path of a store value, the one place where the demo aliases are resolved.

    ``demo:atmosphere`` / ``demo:ocean`` become the cached embedded demo store (generated on first use when
    ``generate``, which needs the ``sim`` extra); anything else is returned unchanged.
    """
    value = os.fspath(store)
    if not value.startswith(DEMO_PREFIX):
        return value
    from earthcast.datasets.sim.demo import demo_store_path, ensure_demo_store

    kind = value[len(DEMO_PREFIX) :]
    if kind not in DEMO_KINDS:
        raise ConfigError(f"unknown demo store {value!r}; use 'demo:atmosphere' or 'demo:ocean'")
    return str(ensure_demo_store(kind) if generate else demo_store_path(kind))  # type: ignore[arg-type]


def open_store(
    path: str | os.PathLike,
    *,
    chunks: dict[str, int] | str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open a WB2 ERA5, forecast, climatology or ocean store lazily and normalise it.

    Args:
        path: local directory, fsspec URL (``gs://weatherbench2/datasets/era5/…``; remote URLs need the
            ``cloud`` extra, gcsfs/s3fs), or ``demo:atmosphere`` / ``demo:ocean`` for the embedded demo
            store once it is generated (``earthcast data demo``).
        chunks: Dask chunks; ``None`` keeps the store's own chunking (one Dask chunk per Zarr chunk).
        storage_options: passed to fsspec, e.g. ``{"token": "anon"}`` for the public WB2 bucket.

    Returns:
        A Dask-backed dataset with WB2 dimension names, ascending latitude and contiguous longitude
        (0…360 on a global grid).

    Raises:
        StoreNotFoundError: the store does not exist (the message says which path was tried).
    """
    alias = os.fspath(path)
    target = resolve_store(alias, generate=False)
    if "://" not in target and not os.path.exists(target):
        if alias.startswith(DEMO_PREFIX):
            raise StoreNotFoundError(
                f"The {alias} store is not generated yet (expected at {target!r}); run "
                f"`earthcast data demo --kind {alias[len(DEMO_PREFIX) :]}` first (needs the `sim` extra)."
            )
        raise StoreNotFoundError(
            f"No Zarr store at {target!r}. Check the path, or run `earthcast data demo` to create the "
            "embedded demo store."
        )
    chunk_guard.install()  # a truncated Blosc chunk raises instead of crashing the process
    try:
        ds = xr.open_zarr(
            target,
            chunks=chunks if chunks is not None else {},
            consolidated=None,
            storage_options=storage_options,
            decode_timedelta=True,
        )
    except (ValueError, KeyError, OSError) as err:
        raise DataError(
            f"Could not open {target!r} as a Zarr store ({type(err).__name__}: {err}). "
            "WB2 stores are Zarr directories (v2 or v3); for gs:// or s3:// install `earthcast[cloud]`."
        ) from err
    ds = normalize_dataset(ds)
    missing = [d for d in ("latitude", "longitude") if d not in ds.dims]
    if missing:
        raise DataError(
            f"{target!r} has no {' or '.join(missing)} dimension (dimensions: {sorted(map(str, ds.dims))}); "
            "earthcast reads gridded WB2-layout stores. Rename the horizontal dimensions to latitude/longitude "
            "(lat/lon are accepted) or regrid the data."
        )
    return ds

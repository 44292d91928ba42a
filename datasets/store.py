"""Open WB2-layout Zarr stores (local paths or fsspec URLs such as ``gs://`` and ``s3://``) lazily."""

from __future__ import annotations

import os
from typing import Any

import xarray as xr

from earthcast.datasets.normalize import normalize_dataset


def open_store(
    path: str | os.PathLike,
    *,
    chunks: dict[str, int] | str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open a WB2 ERA5, forecast, climatology or ocean store lazily and normalise it.

    Args:
        path: local directory or fsspec URL (``gs://weatherbench2/datasets/era5/…``). Remote URLs need the
            ``cloud`` extra (gcsfs/s3fs).
        chunks: Dask chunks; ``None`` keeps the store's own chunking (one Dask chunk per Zarr chunk).
        storage_options: passed to fsspec, e.g. ``{"token": "anon"}`` for the public WB2 bucket.

    Returns:
        A Dask-backed dataset with WB2 dimension names, ascending latitude and longitude in 0…360.

    Raises:
        FileNotFoundError: the store does not exist (the message says which path was tried).
    """
    target = os.fspath(path)
    if "://" not in target and not os.path.exists(target):
        raise FileNotFoundError(
            f"No Zarr store at {target!r}. Check the path, or run `earthcast data demo` to create the "
            "embedded demo store."
        )
    try:
        ds = xr.open_zarr(
            target,
            chunks=chunks if chunks is not None else {},
            consolidated=None,
            storage_options=storage_options,
            decode_timedelta=True,
        )
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(
            f"Could not open {target!r} as a Zarr store ({type(err).__name__}: {err}). "
            "WB2 stores are Zarr directories (v2 or v3); for gs:// or s3:// install `earthcast[cloud]`."
        ) from err
    ds = normalize_dataset(ds)
    missing = [d for d in ("latitude", "longitude") if d not in ds.dims]
    if missing:
        raise ValueError(
            f"{target!r} has no {' or '.join(missing)} dimension (dimensions: {sorted(map(str, ds.dims))}); "
            "earthcast reads gridded WB2-layout stores. Rename the horizontal dimensions to latitude/longitude "
            "(lat/lon are accepted) or regrid the data."
        )
    return ds

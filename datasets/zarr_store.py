"""Writing WB2-layout Zarr stores: ``zarr_format=2``, consolidated metadata, float32 data with units.

WB2's public stores are Zarr v2 with consolidated metadata; with zarr 3 installed xarray would write v3 by
default, which older readers (zarr 2, weatherbench2 pinned environments) cannot open, so we always pin v2.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from earthcast.errors import DataError, OutputExistsError

ZARR_FORMAT = 2


def _float32_with_units(ds: xr.Dataset) -> xr.Dataset:
    missing = [name for name, da in ds.data_vars.items() if "units" not in da.attrs]
    if missing:
        raise DataError(
            f"Variables {missing} have no 'units' attribute. WB2 stores carry units on every variable; "
            "set ds[name].attrs['units'] (e.g. 'K', 'm**2 s**-2', 'm s**-1', 'Pa', '1') before writing."
        )
    out = ds.copy()
    for name, da in ds.data_vars.items():
        if np.issubdtype(da.dtype, np.floating) and da.dtype != np.float32:
            out[name] = da.astype(np.float32)
    return out


def _encoding(ds: xr.Dataset, chunks: Mapping[str, int]) -> dict[str, dict]:
    encoding: dict[str, dict] = {}
    for name, da in ds.data_vars.items():
        encoding[name] = {"chunks": tuple(min(chunks.get(d, da.sizes[d]), da.sizes[d]) for d in da.dims)}
    return encoding


def write_wb2_store(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    chunks: Mapping[str, int] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``ds`` as a new WB2-layout store.

    Args:
        ds: data variables with ``units`` attributes; floats are cast to float32.
        path: local path or fsspec URL of the new store.
        chunks: chunk length per dimension (e.g. ``{"time": 64}`` for a truth store,
            ``{"time": 1, "prediction_timedelta": 1}`` for a forecast); other dimensions are whole.
        overwrite: replace an existing store instead of refusing.
    """
    ds = _float32_with_units(ds).drop_encoding()
    ds = ds.chunk(dict(chunks or {}))
    ds.to_zarr(
        str(path),
        mode="w" if overwrite else "w-",
        zarr_format=ZARR_FORMAT,
        consolidated=True,
        encoding=_encoding(ds, chunks or {}),
    )


def append_wb2_store(ds: xr.Dataset, path: str | os.PathLike, *, dim: str = "time") -> None:
    """Append ``ds`` along ``dim`` to a store made by :func:`write_wb2_store` (same variables and chunks).

    The store's global attributes are kept (xarray would replace them with ``ds.attrs``); ``ds.attrs`` adds to
    or updates them."""
    ds = _float32_with_units(ds).drop_encoding()
    ds.attrs = {**xr.open_zarr(str(path), zarr_format=ZARR_FORMAT).attrs, **ds.attrs}
    ds.to_zarr(str(path), mode="a", append_dim=dim, zarr_format=ZARR_FORMAT, consolidated=True)


@contextlib.contextmanager
def atomic_store(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path``, on failure delete it.

    Readers therefore never see a half-written store under the final name.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists; pass overwrite=True or choose another path.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)

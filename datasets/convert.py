"""Convert ERA5 downloads (CDS netCDF or GRIB) and CMEMS ocean netCDF into one WB2-layout Zarr store.

:func:`convert_to_wb2` joins many input files along time and by variable (single-level and pressure-level
files for the same times become one store), writes float32 variables with units, chunked for training reads
(whole fields, a time chunk of a few MiB), and is atomic and resumable:

1. every input is opened lazily and checked against the others (grid, levels, variables, times) before
   anything is written; exact duplicate times (overlapping downloads) are dropped with a note;
2. the store's metadata is written to a hidden sibling ``.<name>.partial-convert-<key>``, whose key is a hash
   of the inputs (paths, sizes, modification times) and the settings;
3. each input's times are written into their place (region writes), and the input is then recorded as
   finished in a record next to the partial store (``<partial>.json``);
4. the finished store is renamed to its final name, so readers never see a half-written store.

After an interruption the same command finds the partial store with the same key and converts only the inputs
not yet recorded; a partial store left by other inputs or settings is deleted and never reused.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from tqdm.auto import tqdm

from earthcast.datasets.convert_open import file_kind, open_input
from earthcast.datasets.convert_plan import ConversionPlan, Piece, plan_conversion
from earthcast.datasets.zarr_store import ZARR_FORMAT
from earthcast.errors import ConfigError, CorruptChunkError, EarthcastError, StoreNotFoundError

log = logging.getLogger(__name__)

INPUT_SUFFIXES = frozenset(
    {".nc", ".nc4", ".netcdf", ".cdf", ".grib", ".grb", ".grib1", ".grib2", ".grb1", ".grb2", ".zip"}
)
"""File endings picked up from a directory input (explicit files and globs are taken whatever their ending)."""

RECORD_SUFFIX = ".json"
"""The record of finished inputs sits next to the partial store (``<partial>.json``); removed at the end."""

FORMAT_VERSION = 1
"""Part of the resume key: a partial store written by another converter version is not reused."""

READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, EOFError)
"""What netCDF4, h5netcdf and cfgrib raise on a truncated or corrupt file."""


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Files named by paths, glob patterns (``era5/*.nc``) and directories (their netCDF/GRIB/zip files).

    Returns:
        Absolute paths, each once, in the order given (a glob's or directory's files sorted by name).

    Raises:
        StoreNotFoundError: a path that does not exist, a glob without matches or a directory without inputs.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ConfigError(
            "No input files given; pass netCDF/GRIB files, a glob such as 'era5/*.nc' or a directory."
        )
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(
                f
                for f in path.iterdir()
                if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES and not f.name.startswith(".")
            )
            what = f"directory {path} has no netCDF, GRIB or zip files (endings {sorted(INPUT_SUFFIXES)})"
        elif path.is_file():
            files, what = [path], ""
        elif glob.has_magic(os.fspath(item)):
            files = sorted(
                Path(p) for p in glob.glob(os.path.expanduser(os.fspath(item))) if Path(p).is_file()
            )
            what = f"the pattern {os.fspath(item)!r} matches no files"
        else:
            files, what = [], f"there is no input file {os.fspath(item)!r}"
        if not files:
            raise StoreNotFoundError(f"Cannot convert: {what}. Check the path (relative to {Path.cwd()}).")
        found.extend(f.resolve() for f in files)
    return list(dict.fromkeys(found))


def _run_key(paths: Sequence[Path], chunks: Mapping[str, int] | None) -> str:
    """A hash of what decides the store's content: inputs (path, size, mtime) and settings."""
    stats = [(os.fspath(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps({"format": FORMAT_VERSION, "inputs": stats, "chunks": sorted((chunks or {}).items())})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _data_files(paths: Sequence[Path], scratch_parent: Path) -> Iterator[list[tuple[str, Path, str]]]:
    """(label, readable path, kind) per data file; zip archives are extracted to a scratch directory."""
    with contextlib.ExitStack() as stack:
        files: list[tuple[str, Path, str]] = []
        for path in paths:
            kind = file_kind(path, label=str(path))
            if kind != "zip":
                files.append((str(path), path, kind))
                continue
            scratch = Path(
                stack.enter_context(tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".unzip-"))
            )
            try:
                with zipfile.ZipFile(path) as archive:
                    members = sorted(m for m in archive.namelist() if not m.endswith("/"))
                    archive.extractall(scratch, members)
            except (zipfile.BadZipFile, OSError) as err:
                raise CorruptChunkError(f"Cannot unpack {path} ({err}); download it again.") from err
            for member in members:
                label = f"{path}:{member}"
                files.append((label, scratch / member, file_kind(scratch / member, label=label)))
        yield files


def _load(ds: xr.Dataset, label: str, what: str) -> xr.Dataset:
    """Read ``ds`` into memory; a decoding failure names the file and what was being read."""
    try:
        return ds.load()
    except EarthcastError:
        raise
    except READ_ERRORS as err:
        raise CorruptChunkError(
            f"Could not read {what} from {label} ({type(err).__name__}: {err}). The file is truncated or "
            "corrupt: download it again, then re-run the same command (finished inputs are kept)."
        ) from err


def _template(plan: ConversionPlan) -> tuple[xr.Dataset, dict[str, dict]]:
    """The store's lazy skeleton (NaN time-dependent variables, loaded statics) and its Zarr encoding."""
    coords = {"latitude": plan.latitude, "longitude": plan.longitude}
    if plan.times.size:
        coords["time"] = plan.times
    if plan.level is not None:
        coords["level"] = plan.level
    sizes = {"time": plan.times.size, "latitude": plan.latitude.size, "longitude": plan.longitude.size}
    if plan.level is not None:
        sizes["level"] = plan.level.size
    variables, encoding = {}, {}
    for name, (dims, attrs) in plan.variables.items():
        chunks = tuple(min(plan.chunks.get(d, sizes[d]), sizes[d]) for d in dims)
        if name in plan.statics:
            label, ds = plan.statics[name]
            data = _load(ds[[name]], label, f"the time-invariant field {name!r}")[name].values
        else:
            data = da.full(tuple(sizes[d] for d in dims), np.nan, dtype=np.float32, chunks=chunks)
        variables[name] = xr.Variable(dims, data, attrs)
        encoding[name] = {"chunks": chunks, "dtype": "float32", "_FillValue": np.float32(np.nan)}
    attrs = {"history": f"earthcast data convert: {len(plan.pieces)} input file(s)"}
    return xr.Dataset(variables, coords=coords, attrs=attrs), encoding


def _record(partial: Path) -> Path:
    return partial.with_name(partial.name + RECORD_SUFFIX)


def _write_record(partial: Path, key: str, done: list[str]) -> None:
    record = _record(partial)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "done": done}, indent=1))
    os.replace(tmp, record)


def _start_or_resume(partial: Path, key: str, plan: ConversionPlan) -> list[str]:
    """Reuse a partial store with the same key (returning its finished inputs) or write a new skeleton."""
    record = _record(partial)
    if record.exists() and partial.exists():
        state = json.loads(record.read_text())
        if state.get("key") == key:
            return list(state["done"])
    if partial.exists():  # a skeleton whose write was interrupted before its record existed
        shutil.rmtree(partial)
    template, encoding = _template(plan)
    template.to_zarr(
        os.fspath(partial),
        mode="w-",
        compute=False,
        zarr_format=ZARR_FORMAT,
        consolidated=True,
        encoding=encoding,
    )
    _write_record(partial, key, [])
    return []


def _blocks(global_index: np.ndarray, time_chunk: int) -> Iterator[slice]:
    """Split sorted store time indices into runs that are contiguous and stay inside one time chunk."""
    if global_index.size == 0:
        return
    breaks = np.nonzero((np.diff(global_index) != 1) | (np.diff(global_index // time_chunk) != 0))[0] + 1
    bounds = [0, *breaks.tolist(), global_index.size]
    for lo, hi in itertools.pairwise(bounds):
        yield slice(lo, hi)


def _write_piece(piece: Piece, store: zarr.Group, time_chunk: int, bar: tqdm) -> None:
    """Write one input's times into their place in the partial store, block by block and variable by variable
    (memory: one variable's time chunk)."""
    for block in _blocks(piece.global_index, time_chunk):
        index = piece.file_index[block]
        contiguous = bool(np.all(np.diff(index) == 1))  # a slice lets Dask read just those steps
        sub = piece.ds.isel(time=slice(int(index[0]), int(index[-1]) + 1) if contiguous else index)
        times = pd.DatetimeIndex(sub["time"].values)
        start = int(piece.global_index[block.start])
        for name in piece.variables:
            values = _load(sub[[name]], piece.label, f"{name!r} at {times[0]} … {times[-1]}")[name].values
            store[name][start : start + values.shape[0]] = values  # dims in store order: time first
        bar.update(index.size)


def convert_to_wb2(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    chunks: Mapping[str, int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert ERA5 (CDS netCDF/GRIB, single or pressure levels) and CMEMS netCDF files into a WB2 Zarr store.

    Args:
        inputs: files, glob patterns and/or directories (see :func:`expand_inputs`).
        out: the local path of the new store.
        chunks: chunk length per dimension, e.g. ``{"time": 8}``; by default whole (level, latitude,
            longitude) fields and a time chunk of about 4 MiB for the largest variable.
        overwrite: replace an existing store at ``out`` (only once the new one is complete).
        progress: show a progress bar (time steps written).

    Returns:
        ``out`` as a Path. The store has dimensions ``time`` (valid time), ``level`` (hPa, or depth in m),
        ``latitude`` (ascending) and ``longitude``; WB2 names; float32 values with ``units``.

    Raises:
        StoreNotFoundError: an input does not exist. ConfigError: ``out`` exists without ``overwrite``,
        or bad ``chunks``. MissingDependencyError: GRIB input without cfgrib/ecCodes. CorruptChunkError:
        an unreadable input (named). GridError / DataError: an input whose grid, levels, variables or
        times do not fit the others (named).
    """
    out = Path(out).expanduser().absolute()
    paths = expand_inputs(inputs)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = _run_key(paths, chunks)
    partial = out.with_name(f".{out.name}.partial-convert-{key}")
    for stale in out.parent.glob(f".{glob.escape(out.name)}.partial-convert-*"):
        if stale.name.startswith(partial.name):
            continue
        if stale.is_dir():
            log.warning("Removing %s: a partial conversion with other inputs or settings.", stale)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    with _data_files(paths, out.parent) as files:
        opened = [(label, open_input(path, kind, label=label)) for label, path, kind in files]
        plan = plan_conversion(opened, chunks)
        done = _start_or_resume(partial, key, plan)
        todo = [p for p in plan.pieces if p.label not in done]
        if done:
            log.info(
                "Resuming %s: %d of %d input(s) already converted.", out.name, len(done), len(plan.pieces)
            )
        total = sum(int(p.global_index.size) for p in todo)
        store = zarr.open_group(os.fspath(partial), mode="r+")
        with tqdm(total=total, unit="step", desc=f"convert → {out.name}", disable=not progress) as bar:
            for piece in todo:
                _write_piece(piece, store, plan.time_chunk, bar)
                done.append(piece.label)
                _write_record(partial, key, done)
                log.info("Converted %s (%d time steps).", piece.label, piece.global_index.size)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    _record(partial).unlink()
    return out

"""Plan a conversion: check that the inputs fit together and decide where each input's times go.

Inputs are grouped by their set of time-dependent variables (for example the single-level files and the
pressure-level files of one download). Within a group the files are joined along time; the groups are joined
by variable and must cover the same times. Every input must share the first input's grid and levels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.errors import ConfigError, DataError, GridError
from earthcast.grids import grid_mismatch

log = logging.getLogger("earthcast.datasets.convert")

TARGET_CHUNK_BYTES = 4 * 2**20
"""Default size of one chunk of the largest variable: a few MiB, so that a training block (8+ chunks) reads
few, large objects while one chunk still decodes quickly."""

CHUNK_DIMS = ("time", "level", "latitude", "longitude")


@dataclass(frozen=True)
class Piece:
    """One input's share of the store.

    Attributes:
        label: the input's name (path, or ``archive.zip:member``).
        ds: the input in WB2 layout (lazy).
        variables: its time-dependent variables.
        file_index: (n,) int64 positions in ``ds.time`` to write (duplicates of other inputs left out).
        global_index: (n,) int64 ascending positions of those times in the store's time axis.
    """

    label: str
    ds: xr.Dataset
    variables: tuple[str, ...]
    file_index: np.ndarray
    global_index: np.ndarray


@dataclass(frozen=True)
class ConversionPlan:
    """The store to build: coordinates, variables with (dims, attrs), statics with their source, pieces."""

    times: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    level: np.ndarray | None
    variables: dict[str, tuple[tuple[str, ...], dict]]
    statics: dict[str, tuple[str, xr.Dataset]]
    pieces: list[Piece]
    chunks: dict[str, int]
    time_chunk: int


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:3])
    return shown + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")


def _time_vars(ds: xr.Dataset) -> tuple[str, ...]:
    return tuple(str(n) for n, v in ds.data_vars.items() if "time" in v.dims)


def _sort_key(item: tuple[str, xr.Dataset]) -> tuple:
    label, ds = item
    first = ds["time"].values.min() if "time" in ds.dims and ds.sizes["time"] else np.datetime64("NaT")
    return (not np.isnat(first), first if not np.isnat(first) else np.datetime64(0, "ns"), label)


def _check_grid(files: list[tuple[str, xr.Dataset]]) -> np.ndarray | None:
    """Every input on the first one's latitude/longitude grid and levels; returns the levels (or None)."""
    ref_label, ref = files[0]
    level_label, level = None, None
    for label, ds in files:
        problem = grid_mismatch(
            ds["latitude"].values, ds["longitude"].values, ref["latitude"].values, ref["longitude"].values
        )
        if problem:
            raise GridError(
                f"{label} is on another grid than {ref_label}: {problem}. Download every file on the same "
                "grid and area (CDS `grid` and `area`), or regrid it first."
            )
        if "level" not in ds.dims:
            continue
        if level is None:
            level_label, level = label, ds["level"].values
        elif not np.array_equal(ds["level"].values, level):
            raise GridError(
                f"{label} has levels {ds['level'].values.tolist()} but {level_label} has {level.tolist()}. "
                "Every file must hold the same levels; download the missing levels or convert separately."
            )
    return level


def _check_variables(groups: dict[tuple[str, ...], list[tuple[str, xr.Dataset]]]) -> None:
    """No variable in two groups; within a group every variable has the same dimensions."""
    keys = list(groups)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            common = sorted(set(a) & set(b))
            if not common:
                continue
            odd, usual = (b, a) if len(groups[b]) <= len(groups[a]) else (a, b)
            raise DataError(
                f"{_names([lb for lb, _ in groups[odd]])} hold(s) the variables {list(odd)}, but "
                f"{_names([lb for lb, _ in groups[usual]])} hold(s) {list(usual)} ({common} in both). Each file "
                "must hold the same variables as the other files of its kind (single levels, pressure levels, "
                "ocean): download the missing variables, or convert the odd file(s) separately."
            )
    for members in groups.values():
        ref_label, ref = members[0]
        for label, ds in members[1:]:
            for name in ref.data_vars:
                if ds[name].dims != ref[name].dims:
                    raise DataError(
                        f"{label}: {name!r} has dimensions {list(ds[name].dims)} but {list(ref[name].dims)} in "
                        f"{ref_label}. Download the variable with the same levels in every file."
                    )


def _join_times(
    members: list[tuple[str, xr.Dataset]], variables: tuple[str, ...]
) -> list[tuple[str, xr.Dataset, np.ndarray, np.ndarray]]:
    """(label, ds, file positions, times) per file, keeping each time once (first file in time order wins)."""
    seen: dict[int, str] = {}
    out = []
    for label, ds in members:
        times, index = np.unique(ds["time"].values.astype("datetime64[ns]"), return_index=True)
        ticks = times.view(np.int64).tolist()
        fresh = np.array([t not in seen for t in ticks], dtype=bool)
        if not fresh.all():
            owners = sorted({seen[t] for t, new in zip(ticks, fresh) if not new})
            log.warning(
                "%s: %d time step(s) also in %s dropped (overlapping downloads): %s … %s.",
                label,
                int((~fresh).sum()),
                _names(owners),
                pd.Timestamp(times[~fresh][0]),
                pd.Timestamp(times[~fresh][-1]),
            )
        if index.size < ds.sizes["time"]:
            log.warning(
                "%s: %d repeated time step(s) inside the file dropped.", label, ds.sizes["time"] - index.size
            )
        seen.update(dict.fromkeys(times[fresh].view(np.int64).tolist(), label))
        out.append((label, ds, index[fresh].astype(np.int64), times[fresh]))
    return out


def _check_coverage(joined: dict[tuple[str, ...], list], all_times: np.ndarray) -> None:
    """Every group of variables must cover every time of the store."""
    short = {}
    for variables, rows in joined.items():
        have = np.concatenate([t for *_, t in rows]) if rows else np.array([], "datetime64[ns]")
        missing = np.setdiff1d(all_times, have)
        if missing.size:
            short[variables] = (rows, missing)
    if not short:
        return
    variables = min(short, key=lambda k: len(short[k][0]))
    rows, missing = short[variables]
    others = sorted({r[0] for k, rs in joined.items() if k != variables for r in rs})
    raise DataError(
        f"{_names([r[0] for r in rows])} (variables {list(variables)}) lack {missing.size} time step(s) that "
        f"{_names(others)} have ({pd.Timestamp(missing[0])} … {pd.Timestamp(missing[-1])}). Files with "
        "different variables are joined by variable and must cover the same times: download the missing "
        "times, or convert the two sets of files separately."
    )


def _resolve_chunks(
    chunks: Mapping[str, int] | None,
    variables: dict[str, tuple[tuple[str, ...], dict]],
    sizes: dict[str, int],
) -> dict[str, int]:
    chunks = dict(chunks or {})
    for dim, n in chunks.items():
        if dim not in CHUNK_DIMS or not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ConfigError(
                f"Bad chunk setting {dim}={n!r}: give positive integers for {list(CHUNK_DIMS)}, e.g. time=8."
            )
    if "time" not in chunks:
        step_bytes = max(
            (
                4 * int(np.prod([sizes[d] for d in dims if d != "time"]))
                for dims, _ in variables.values()
                if "time" in dims
            ),
            default=1,
        )
        chunks["time"] = int(max(1, min(sizes["time"], TARGET_CHUNK_BYTES // step_bytes)))
    return {d: int(n) for d, n in chunks.items()}


def plan_conversion(
    opened: Sequence[tuple[str, xr.Dataset]], chunks: Mapping[str, int] | None = None
) -> ConversionPlan:
    """Check the inputs against each other and lay out the store.

    Args:
        opened: (label, dataset in WB2 layout) per input file.
        chunks: chunk lengths per dimension; ``time`` defaults to ~:data:`TARGET_CHUNK_BYTES` per chunk.

    Raises:
        GridError: an input on another grid or with other levels. DataError: inputs whose variables overlap
            without being the same, or that do not cover the same times. ConfigError: bad ``chunks``.
    """
    files = sorted(opened, key=_sort_key)
    level = _check_grid(files)
    groups: dict[tuple[str, ...], list[tuple[str, xr.Dataset]]] = {}
    variables: dict[str, tuple[tuple[str, ...], dict]] = {}
    statics: dict[str, tuple[str, xr.Dataset]] = {}
    for label, ds in files:
        key = _time_vars(ds)
        if key:
            groups.setdefault(tuple(sorted(key)), []).append((label, ds))
        for name, var in ds.data_vars.items():
            variables.setdefault(str(name), (tuple(map(str, var.dims)), dict(var.attrs)))
            if "time" not in var.dims:
                statics.setdefault(str(name), (label, ds))
    _check_variables(groups)
    joined = {k: _join_times(members, k) for k, members in groups.items()}
    all_times = np.unique(np.concatenate([t for rows in joined.values() for *_, t in rows] or [[]]))
    all_times = all_times.astype("datetime64[ns]")
    _check_coverage(joined, all_times)
    pieces = [
        Piece(label, ds, k, index, np.searchsorted(all_times, times).astype(np.int64))
        for k, rows in joined.items()
        for label, ds, index, times in rows
    ]
    pieces += [
        Piece(label, ds, (), np.zeros(0, np.int64), np.zeros(0, np.int64))
        for label, ds in files
        if not _time_vars(ds)
    ]
    ref = files[0][1]
    sizes = {"time": all_times.size, "latitude": ref.sizes["latitude"], "longitude": ref.sizes["longitude"]}
    if level is not None:
        sizes["level"] = level.size
    resolved = _resolve_chunks(chunks, variables, sizes)
    return ConversionPlan(
        times=all_times,
        latitude=ref["latitude"].values,
        longitude=ref["longitude"].values,
        level=level,
        variables=variables,
        statics=statics,
        pieces=pieces,
        chunks=resolved,
        time_chunk=resolved["time"],
    )

"""Conversion of many files: joining along time, resume after an interruption, and inputs that are refused
(another grid, other variables, missing or corrupt files), each named in the error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from convert_helpers import LAT_DESC, H, W, new_cds, series, six_hourly

from earthcast.datasets.convert import convert_to_wb2
from earthcast.datasets.store import open_store
from earthcast.errors import (
    CorruptChunkError,
    DataError,
    GridError,
    StoreNotFoundError,
)


def _converted(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Converted ")]


def _break_chunk(path: Path, index: int) -> tuple[bytes, os.stat_result]:
    """Overwrite compressed chunk ``index`` of t2m in a netCDF-4 file (its header still opens), keeping the
    modification time; returns the original bytes and stat to restore it."""
    original, stat = path.read_bytes(), path.stat()
    with h5py.File(path, "r") as f:
        info = f["t2m"].id.get_chunk_info(index)
    broken = bytearray(original)
    broken[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(broken))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return original, stat


def test_many_files_join_and_resume_after_interruption(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="earthcast.datasets.convert")
    # part0 and part1 overlap at 2020-01-01T12 (overlapping downloads): part1's copy is dropped.
    paths, truth = series(tmp_path, ["2020-01-01", "2020-01-01T12", "2020-01-02T06", "2020-01-03"])
    reference = convert_to_wb2(tmp_path / "in", tmp_path / "ref.zarr", chunks={"time": 2}, progress=False)
    assert any(
        "1 time step(s) also in" in r.getMessage() and "part1.nc" in r.getMessage() for r in caplog.records
    )
    ref = open_store(reference)
    assert ref["time"].size == 11
    np.testing.assert_array_equal(ref["time"].values, np.array(sorted(truth), dtype="datetime64[ns]"))
    np.testing.assert_array_equal(ref["2m_temperature"].values, np.stack([truth[t] for t in sorted(truth)]))
    assert ref["2m_temperature"].encoding["chunks"] == (2, H, W)

    # Interrupt: the third file in time order has a corrupt compressed chunk (its header still opens).
    original, stat = _break_chunk(paths[2], 1)
    caplog.clear()
    with pytest.raises(CorruptChunkError, match=r"part2\.nc"):
        convert_to_wb2(tmp_path / "in", tmp_path / "era5.zarr", chunks={"time": 2}, progress=False)
    assert len(_converted(caplog)) == 2
    assert not (tmp_path / "era5.zarr").exists()  # no final store while unfinished
    partial, record = sorted(tmp_path.glob(".era5.zarr.partial-convert-*"))  # the store and its record
    assert partial.is_dir() and record.name == partial.name + ".json"

    # The download is repaired (same bytes, same modification time): only the two remaining files run.
    paths[2].write_bytes(original)
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    out = convert_to_wb2(tmp_path / "in", tmp_path / "era5.zarr", chunks={"time": 2}, progress=False)
    assert [m.split()[1] for m in _converted(caplog)] == [str(paths[2].resolve()), str(paths[3].resolve())]
    assert any(r.getMessage().startswith("Resuming era5.zarr: 2 of 4") for r in caplog.records)
    xr.testing.assert_identical(open_store(out).load(), ref.load())
    assert not list(tmp_path.glob(".era5.zarr.*"))


def test_partial_store_is_not_reused_with_other_settings(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="earthcast.datasets.convert")
    paths, _ = series(tmp_path, ["2020-01-01", "2020-01-02"])
    original, stat = _break_chunk(paths[1], 0)
    with pytest.raises(CorruptChunkError, match=r"part1\.nc"):
        convert_to_wb2(paths, tmp_path / "s.zarr", chunks={"time": 2}, progress=False)
    paths[1].write_bytes(original)
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    convert_to_wb2(
        paths, tmp_path / "s.zarr", chunks={"time": 3}, progress=False
    )  # same inputs, other chunks
    assert len(_converted(caplog)) == 2
    assert any(r.getMessage().startswith("Removing") for r in caplog.records)
    assert not any("Resuming" in r.getMessage() for r in caplog.records)
    assert open_store(tmp_path / "s.zarr")["2m_temperature"].encoding["chunks"] == (3, H, W)
    assert not list(tmp_path.glob(".s.zarr.*"))


def test_file_on_another_grid_or_with_other_variables_is_named(tmp_path):
    new_cds(tmp_path / "a.nc", six_hourly("2020-01-01", 2), ["t2m", "msl"], seed=1)
    new_cds(tmp_path / "b.nc", six_hourly("2020-01-01T12", 2), ["t2m", "msl"], seed=2)
    new_cds(tmp_path / "grid.nc", six_hourly("2020-01-02", 2), ["t2m", "msl"], seed=3, lat=LAT_DESC + 0.25)
    new_cds(tmp_path / "vars.nc", six_hourly("2020-01-01", 4), ["t2m", "u10"], seed=4)  # same times as a + b
    with pytest.raises(GridError, match=r"grid\.nc is on another grid"):
        convert_to_wb2([tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "grid.nc"], tmp_path / "x.zarr")
    with pytest.raises(
        DataError, match=r"vars\.nc hold\(s\) the variables \['10m_u_component_of_wind', '2m_temperature'\]"
    ):
        convert_to_wb2([tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "vars.nc"], tmp_path / "x.zarr")
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".x.zarr*"))


def test_missing_and_corrupt_inputs(tmp_path):
    with pytest.raises(StoreNotFoundError, match=r"nope\.nc"):
        convert_to_wb2(tmp_path / "nope.nc", tmp_path / "x.zarr")
    with pytest.raises(StoreNotFoundError, match="matches no files"):
        convert_to_wb2(str(tmp_path / "*.grib"), tmp_path / "x.zarr")
    (tmp_path / "page.nc").write_text("<html>Service unavailable</html>")
    with pytest.raises(CorruptChunkError, match=r"page\.nc is neither netCDF nor GRIB"):
        convert_to_wb2(tmp_path / "page.nc", tmp_path / "x.zarr")
    (tmp_path / "cut.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CorruptChunkError, match=r"cut\.nc"):
        convert_to_wb2(tmp_path / "cut.nc", tmp_path / "x.zarr")

"""Bad input to the data layer: each case raises an error that names the problem and the fix."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.reader import CorruptChunkError, NaNInWindowError
from earthcast.datasets.statistics import load_or_compute_statistics
from earthcast.datasets.synthetic import synthetic_dataset
from earthcast.datasets.zarr_store import write_wb2_store
from earthcast.errors import DataError, TimeAxisError
from earthcast.grids import grid_mismatch, wb2_grid

GRID = wb2_grid("64x32_equiangular_conservative")
TIMES = pd.date_range("2018-01-01", periods=64, freq="6h")
SPLITS = {
    "train": ("2018-01-01", "2018-01-10"),
    "val": ("2018-01-11", "2018-01-13"),
    "test": ("2018-01-14", "2018-01-16"),
}


def _store(path: Path, ds: xr.Dataset | None = None, chunk: int = 8) -> str:
    ds = synthetic_dataset(GRID, TIMES) if ds is None else ds
    write_wb2_store(ds, path, chunks={"time": chunk})
    return str(path)


def _dm(store: str, tmp_path: Path, **kw) -> WB2DataModule:
    args = {
        "variables": {"temperature": [500, 850], "2m_temperature": None},
        "stats_cache_dir": str(tmp_path),
    }
    return WB2DataModule(store, **(args | SPLITS | kw))


def test_descending_latitude_store_missing_a_level(tmp_path: Path) -> None:
    ds = synthetic_dataset(GRID, TIMES).isel(latitude=slice(None, None, -1))
    store = _store(tmp_path / "desc.zarr", ds)
    with pytest.raises(KeyError, match=r"Level\(s\) \[700\] of 'temperature'.*levels are \[500, 850\]"):
        _dm(store, tmp_path, variables={"temperature": [500, 700]})
    dm = _dm(store, tmp_path)  # the descending latitude itself is fine: normalised on open
    assert np.all(np.diff(dm.manifest.latitude) > 0)


def test_missing_variable_and_static_are_named(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(
        KeyError, match=r"'specific_humidity' is not in .*Available variables: \['2m_temperature'"
    ):
        _dm(store, tmp_path, variables={"specific_humidity": [700]})
    with pytest.raises(KeyError, match="Static field 'orography'"):
        _dm(store, tmp_path, static=["orography"])


def test_non_uniform_time_axis(tmp_path: Path) -> None:
    ds = synthetic_dataset(GRID, TIMES).drop_isel(time=[10, 11])
    store = _store(tmp_path / "gap.zarr", ds)
    with pytest.raises(
        TimeAxisError, match=r"not uniform: 2018-01-03T06:00:00 -> 2018-01-04T00:00:00 is 0 days 18:00"
    ):
        _dm(store, tmp_path)


def test_step_must_be_a_multiple_of_the_spacing(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(TimeAxisError, match="model step 9h is not a multiple"):
        _dm(store, tmp_path, step="9h")
    assert _dm(store, tmp_path, step="12h").k == 2


def test_grid_mismatch_beyond_tolerance(tmp_path: Path) -> None:
    lat = GRID.latitude.copy()
    assert grid_mismatch(lat + 5e-4, GRID.longitude, GRID.latitude, GRID.longitude) is None
    message = grid_mismatch(lat + 2e-3, GRID.longitude, GRID.latitude, GRID.longitude)
    assert message is not None and "latitude differs by 0.002" in message
    shifted = synthetic_dataset(GRID, TIMES).assign_coords(latitude=lat + 2e-3)
    store = _store(tmp_path / "shifted.zarr", shifted)
    with pytest.raises(ValueError, match="not on the 64x32_equiangular_conservative grid: latitude differs"):
        _dm(store, tmp_path, grid="64x32_equiangular_conservative")


def test_nan_inside_an_unmasked_training_window(tmp_path: Path) -> None:
    ds = synthetic_dataset(GRID, TIMES)
    ds["temperature"][5, 1, 3, 7] = np.nan
    dm = _dm(_store(tmp_path / "nan.zarr", ds), tmp_path)
    with pytest.raises(
        NaNInWindowError, match=r"'temperature_850' at 2018-01-02T06:00:00, latitude -70.31, longitude 39.38"
    ):
        list(dm.stream("train"))


def test_masked_land_is_filled_and_flagged_but_ocean_nans_still_fail(tmp_path: Path) -> None:
    ds = synthetic_dataset(GRID, TIMES)
    land = ds["land_sea_mask"].values > 0.5
    for name in ("temperature", "2m_temperature"):
        ds[name] = ds[name].where(~xr.DataArray(land, dims=("latitude", "longitude")))
    dm = _dm(_store(tmp_path / "ocean.zarr", ds), tmp_path, masked=True)
    sample = next(iter(dm.stream("train")))
    np.testing.assert_array_equal(sample["mask"][0].numpy(), (~land).astype(np.float32))
    assert np.isfinite(sample["inputs"].numpy()).all() and (sample["inputs"].numpy()[..., land] == 0).all()
    ds["temperature"].values[20, 0][~land] = np.nan  # an "ocean" point goes bad later on
    dm = _dm(_store(tmp_path / "ocean2.zarr", ds), tmp_path, masked=True)
    with pytest.raises(
        NaNInWindowError, match=r"'temperature_500' at 2018-01-06T00:00:00.*not NaN everywhere"
    ):
        list(dm.stream("train"))


def _corrupt_store(tmp_path: Path) -> str:
    """A store whose temperature chunk of time steps 8…15 (2018-01-03T00 … 2018-01-04T18) is truncated."""
    store = Path(_store(tmp_path / "corrupt.zarr"))
    chunk = store / "temperature" / "1.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    return str(store)


def test_corrupt_chunk_names_variable_and_time_range(tmp_path: Path) -> None:
    dm = _dm(_corrupt_store(tmp_path), tmp_path)
    with pytest.raises(
        CorruptChunkError,
        match=r"'temperature' for 2018-01-03T00:00:00 … 2018-01-04T18:00:00 .*re-write that time range",
    ):
        list(dm.stream("train"))


def test_corrupt_chunk_met_while_computing_statistics_is_named(tmp_path: Path) -> None:
    """The statistics pass (one Dask graph over every variable) names the variable and the chunk's time
    range too, instead of a bare decompression error."""
    dm = _dm(_corrupt_store(tmp_path), tmp_path)
    with pytest.raises(
        CorruptChunkError,
        match=r"'temperature' for 2018-01-03T00:00:00 … 2018-01-04T18:00:00 from store .*corrupt\.zarr",
    ):
        _ = dm.stats


def test_stats_cache_from_another_selection_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path / "s.zarr")
    dm = _dm(store, tmp_path)
    ds, manifest = dm.source.open(), dm.manifest
    a = load_or_compute_statistics(
        ds, manifest, store, "2018-01-01", "2018-01-05", steps_per_model_step=1, cache_dir=tmp_path
    )
    b = load_or_compute_statistics(
        ds, manifest, store, "2018-01-06", "2018-01-12", steps_per_model_step=1, cache_dir=tmp_path
    )
    assert a.state_mean != b.state_mean
    files = sorted(tmp_path.glob("stats-*.json"))
    assert len(files) == 2
    # Plant selection A's cache under selection B's file name: B must not silently reuse it.
    entry_a = next(f for f in files if json.loads(f.read_text())["key"]["end"] == "2018-01-05")
    entry_b = next(f for f in files if f != entry_a)
    shutil.copy(entry_a, entry_b)
    with caplog.at_level(logging.WARNING):
        again = load_or_compute_statistics(
            ds, manifest, store, "2018-01-06", "2018-01-12", steps_per_model_step=1, cache_dir=tmp_path
        )
    assert again == b and "another selection" in caplog.text
    assert json.loads(entry_b.read_text())["key"]["end"] == "2018-01-12"


def test_stats_cache_of_a_rewritten_store_is_not_reused(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.zarr")
    dm = _dm(store, tmp_path)
    first = dm.stats
    shutil.rmtree(store)
    ds = synthetic_dataset(GRID, TIMES)
    ds["temperature"] = ds["temperature"] + 10.0
    ds["temperature"].attrs["units"] = "K"
    _store(Path(store), ds)
    second = _dm(store, tmp_path).stats
    np.testing.assert_allclose(
        np.array(second.state_mean[:2]) - np.array(first.state_mean[:2]), 10.0, rtol=1e-6
    )


def test_a_store_too_short_for_the_default_splits_names_data_train(tmp_path: Path) -> None:
    """16 days: the default test split (the final 365 days) leaves no training steps; statistics over an empty
    split would be NaN, so the data module says so instead."""
    dm = _dm(_store(tmp_path / "short.zarr"), tmp_path, train=None, val=None, test=None)
    with pytest.raises(DataError, match=r"holds 0 time step\(s\).*set data.train"):
        _ = dm.stats

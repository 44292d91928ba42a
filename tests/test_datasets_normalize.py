"""Opening and writing WB2-layout stores: legitimate variants are normalised, not rejected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.datasets.store import open_store
from earthcast.datasets.zarr_store import atomic_store, write_wb2_store
from earthcast.grids import wb2_grid

GRID = wb2_grid("64x32_equiangular_conservative")
TIMES = pd.date_range("2020-01-01", periods=6, freq="6h")


def _canonical(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Reference arrays in canonical order: z (time, level=[500, 850], lat asc, lon 0…360), t2m (time, lat, lon)."""
    return {
        "z": rng.standard_normal((6, 2, 32, 64)).astype(np.float32),
        "t2m": rng.standard_normal((6, 32, 64)).astype(np.float32),
    }


def test_variants_are_normalised(tmp_path: Path) -> None:
    ref = _canonical(np.random.default_rng(1))
    # The variant: descending latitude, longitudes in -180…180, lat/lon names, var_LEVEL suffixes and
    # (time, lon, lat) dimension order, exactly as some WB2 stores (GraphCast, 64x32) lay them out.
    lon_pm = np.where(GRID.longitude >= 180, GRID.longitude - 360, GRID.longitude)
    order = np.argsort(lon_pm)
    lat_desc = GRID.latitude[::-1]

    def variant(a: np.ndarray) -> np.ndarray:
        return np.swapaxes(a[..., ::-1, :][..., order], -1, -2)

    ds = xr.Dataset(
        {
            "geopotential_500": (("time", "lon", "lat"), variant(ref["z"][:, 0]), {"units": "m**2 s**-2"}),
            "geopotential_850": (("time", "lon", "lat"), variant(ref["z"][:, 1]), {"units": "m**2 s**-2"}),
            "2m_temperature": (("time", "lon", "lat"), variant(ref["t2m"]), {"units": "K"}),
        },
        coords={"time": TIMES, "lat": lat_desc, "lon": lon_pm[order]},
    )
    write_wb2_store(ds, tmp_path / "variant.zarr", chunks={"time": 2})
    out = open_store(tmp_path / "variant.zarr")
    np.testing.assert_array_equal(out["latitude"].values, GRID.latitude)
    np.testing.assert_array_equal(out["longitude"].values, GRID.longitude)
    assert out["level"].values.tolist() == [500, 850]
    z = out["geopotential"].transpose("time", "level", "latitude", "longitude").values
    np.testing.assert_array_equal(z, ref["z"])
    np.testing.assert_array_equal(
        out["2m_temperature"].transpose("time", "latitude", "longitude").values, ref["t2m"]
    )
    assert out["geopotential"].attrs["units"] == "m**2 s**-2"


def test_suffixes_merge_into_existing_level_variable() -> None:
    levels = xr.DataArray(np.zeros((2, 3)), dims=("level", "x"), coords={"level": [250, 850]})
    ds = xr.Dataset({"temperature": levels, "temperature_500": (("x",), np.ones(3))})
    from earthcast.datasets.normalize import decode_level_suffixes

    out = decode_level_suffixes(ds)
    assert out["level"].values.tolist() == [250, 500, 850]
    np.testing.assert_array_equal(out["temperature"].sel(level=500).values, np.ones(3))
    lone = decode_level_suffixes(xr.Dataset({"sst_1": (("x",), np.ones(3))}))
    assert "sst_1" in lone.data_vars  # an unknown base with one suffix is not a level


def test_writer_pins_zarr_v2_consolidated_float32(tmp_path: Path) -> None:
    ds = xr.Dataset(
        {"temperature": (("time", "latitude", "longitude"), np.ones((6, 32, 64)), {"units": "K"})},
        coords={"time": TIMES, "latitude": GRID.latitude, "longitude": GRID.longitude},
    )
    write_wb2_store(ds, tmp_path / "t.zarr", chunks={"time": 1})
    assert (tmp_path / "t.zarr" / ".zmetadata").exists()
    meta = json.loads((tmp_path / "t.zarr" / "temperature" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["dtype"] == "<f4" and meta["chunks"] == [1, 32, 64]
    with pytest.raises(FileExistsError):
        write_wb2_store(ds, tmp_path / "t.zarr")
    with pytest.raises(ValueError, match="units"):
        write_wb2_store(
            ds.assign(q=ds["temperature"].copy(data=np.ones((6, 32, 64)))).drop_attrs(), tmp_path / "u.zarr"
        )


def test_atomic_store_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError), atomic_store(target) as tmp:
        tmp.mkdir()
        (tmp / "partial").write_text("x")
        raise RuntimeError("generation failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_store(target) as tmp:
        tmp.mkdir()
    assert target.is_dir()


def test_open_store_names_missing_paths_and_non_grids(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="earthcast data demo"):
        open_store(tmp_path / "nope.zarr")
    xr.Dataset({"a": (("x",), np.ones(2), {"units": "1"})}).to_zarr(tmp_path / "flat.zarr", zarr_format=2)
    with pytest.raises(ValueError, match="latitude or longitude"):
        open_store(tmp_path / "flat.zarr")

"""Data as users bring it: regional boxes that stay contiguous, geometry in `earthcast data info` and in
scores, and the demo-store alias in the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.cli import main as cli_main
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.sim.demo import demo_store_path
from earthcast.datasets.store import open_store
from earthcast.datasets.zarr_store import append_wb2_store, write_wb2_store
from earthcast.errors import StoreNotFoundError
from earthcast.scoring.evaluate import score
from earthcast.scoring.weights import regional_cell_bounds

TIMES = pd.date_range("2020-01-01", periods=12, freq="6h")


def _store(path: Path, lat: np.ndarray, lon: np.ndarray, attrs: dict | None = None) -> xr.Dataset:
    """A (time, latitude, longitude) store whose values encode their own longitude: value = lon + 1000·t."""
    values = np.mod(lon, 360.0)[None, None, :] + 1000.0 * np.arange(TIMES.size)[:, None, None]
    values = np.broadcast_to(values, (TIMES.size, lat.size, lon.size)).astype(np.float32)
    ds = xr.Dataset(
        {"2m_temperature": (("time", "latitude", "longitude"), values, {"units": "K"})},
        coords={"time": TIMES, "latitude": lat, "longitude": lon},
        attrs=attrs or {},
    )
    write_wb2_store(ds, path, chunks={"time": 4})
    return ds


def test_box_across_the_prime_meridian_opens_contiguous(tmp_path: Path) -> None:
    """A box cut from a 0…360 global store arrives as 0…2 then 350…359.75; it opens as −10…2 ascending."""
    lon = np.concatenate([np.arange(0, 2.01, 0.25), np.arange(350, 359.99, 0.25)])
    _store(tmp_path / "box.zarr", np.arange(50, 52.01, 0.5), lon)
    ds = open_store(tmp_path / "box.zarr")
    np.testing.assert_allclose(ds["longitude"].values, np.arange(-10, 2.01, 0.25))
    np.testing.assert_allclose(ds["2m_temperature"].values[0, 0], np.mod(np.arange(-10, 2.01, 0.25), 360.0))
    assert np.all(np.diff(ds["longitude"].values) > 0)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (np.arange(-10, 2.01, 0.5), np.arange(-10, 2.01, 0.5)),  # already contiguous across 0
        (np.array([170.0, 175, 180, -175, -170]), np.arange(170, 190.1, 5.0)),  # across the date line
        (np.arange(-100, -79, 5.0), np.arange(260, 281, 5.0)),  # a western-hemisphere box
        (np.arange(-180, 180, 22.5), np.arange(0, 360, 22.5)),  # a global grid in −180…180
    ],
)
def test_longitudes_normalise_to_one_contiguous_axis(
    tmp_path: Path, stored: np.ndarray, expected: np.ndarray
) -> None:
    _store(tmp_path / "s.zarr", np.array([10.0, 12.0]), stored)
    ds = open_store(tmp_path / "s.zarr")
    np.testing.assert_allclose(ds["longitude"].values, expected)
    np.testing.assert_allclose(ds["2m_temperature"].values[0, 0], np.mod(expected, 360.0))


def test_data_info_names_the_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path / "box.zarr", np.arange(50, 52.01, 0.5), np.arange(-10, 2.01, 0.5))
    _store(tmp_path / "g.zarr", np.linspace(-90, 90, 73), np.arange(144) * 2.5)
    _store(
        tmp_path / "qg.zarr",
        np.arange(30, 31, 0.25),
        np.arange(300, 301, 0.25),
        {"grid_geometry": "periodic"},
    )
    assert cli_main(["data", "info", str(tmp_path / "box.zarr")]) == 0
    out = capsys.readouterr().out
    assert "geometry  regional" in out and "crosses the prime meridian" in out
    assert cli_main(["data", "info", str(tmp_path / "g.zarr")]) == 0
    out = capsys.readouterr().out
    assert "geometry  global_poles" in out and "regional/other" not in out
    assert cli_main(["data", "info", str(tmp_path / "qg.zarr")]) == 0
    assert "geometry  periodic" in capsys.readouterr().out
    gaussian = np.array(
        [-60.0, -20.5, 20.5, 60.0]
    )  # irregular latitudes: described, and named as unsupported
    _store(tmp_path / "gauss.zarr", gaussian, np.arange(8) * 45.0)
    assert cli_main(["data", "info", str(tmp_path / "gauss.zarr")]) == 0
    assert "geometry  unsupported: latitude spacing is irregular" in capsys.readouterr().out


def test_demo_alias_resolves_in_the_python_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``open_store`` and ``WB2DataModule`` take ``demo:ocean`` as the CLI does, through one resolver."""
    monkeypatch.setenv("EARTHCAST_CACHE_DIR", str(tmp_path))
    with pytest.raises(StoreNotFoundError, match="earthcast data demo --kind ocean"):
        open_store("demo:ocean")
    times = pd.date_range("2017-01-01", periods=40, freq="D")
    lat, lon = 24.125 + 0.25 * np.arange(4), 290.125 + 0.25 * np.arange(6)
    sla = np.random.default_rng(0).normal(size=(times.size, lat.size, lon.size)).astype(np.float32)
    ds = xr.Dataset(
        {"sla": (("time", "latitude", "longitude"), sla, {"units": "m"})},
        coords={"time": times, "latitude": lat, "longitude": lon},
        attrs={"grid_geometry": "periodic"},
    )
    write_wb2_store(ds, demo_store_path("ocean"), chunks={"time": 10})
    assert open_store("demo:ocean")["sla"].shape == sla.shape
    dm = WB2DataModule(
        "demo:ocean",
        {"sla": None},
        static=[],
        forcings=[],
        step="24h",
        stats_cache_dir=str(tmp_path / "stats"),
    )
    assert dm.manifest.geometry == "periodic"
    assert dm.hparams["store"] == "demo:ocean"  # the saved config keeps the portable alias


def test_regional_scores_use_the_box_cell_areas(tmp_path: Path) -> None:
    """On a box at 50–58°N each row counts by its own cell area, and the results record the weighting."""
    lat, lon = np.arange(50.125, 58, 0.25), np.arange(0.125, 2, 0.25)
    truth = _store(tmp_path / "truth.zarr", lat, lon)
    rng = np.random.default_rng(1)
    err = rng.normal(size=(2, 2, lat.size, lon.size)) * np.linspace(1, 5, lat.size)[None, None, :, None]
    inits, leads = TIMES[:2], pd.to_timedelta([0, 6], "h")
    valid = truth["2m_temperature"].sel(time=(inits.values[:, None] + leads.values[None, :]).ravel())
    fc = valid.values.reshape(2, 2, lat.size, lon.size) + err
    forecast = xr.Dataset(
        {
            "2m_temperature": (
                ("time", "prediction_timedelta", "latitude", "longitude"),
                fc.astype(np.float32),
            )
        },
        coords={"time": inits, "prediction_timedelta": leads, "latitude": lat, "longitude": lon},
    )
    result = score(forecast, open_store(tmp_path / "truth.zarr"))
    assert result.attrs["area_weighting"] == "cell_area" and result.attrs["grid_geometry"] == "regional"
    bounds = np.deg2rad(regional_cell_bounds(lat))
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    fc32 = fc.astype(np.float32).astype(np.float64) - valid.values.reshape(fc.shape).astype(np.float64)
    mse = ((fc32**2).mean(-1) * area).sum(-1) / area.sum()  # (init, lead)
    got = result["2m_temperature"].sel(metric="rmse", region="global").values
    np.testing.assert_allclose(got, np.sqrt(mse.mean(0)), rtol=1e-6)


def test_appending_blocks_keeps_the_store_attributes(tmp_path: Path) -> None:
    """Demo stores are written block by block: the first block's attributes (generator, grid_geometry)
    must survive the appends, or a β-plane store would silently become a regional one."""
    ds = _store(
        tmp_path / "s.zarr", np.array([30.0, 30.25]), np.array([300.0, 300.25]), {"grid_geometry": "periodic"}
    )
    later = ds.assign_coords(time=ds["time"] + np.timedelta64(3, "D"))
    later.attrs = {}
    append_wb2_store(later, tmp_path / "s.zarr")
    reopened = open_store(tmp_path / "s.zarr")
    assert reopened.sizes["time"] == 2 * TIMES.size and reopened.attrs["grid_geometry"] == "periodic"


def test_skipna_scores_an_ocean_product_with_land(tmp_path: Path) -> None:
    """Land is NaN in ocean products (and in masked rollouts): WB2's default lets it spoil the mean; with
    skipna the area mean runs over the ocean points only, weighted by their cells."""
    lat, lon = np.arange(50.125, 52, 0.25), np.arange(0.125, 2, 0.25)
    truth = _store(tmp_path / "truth.zarr", lat, lon)
    land = np.zeros((lat.size, lon.size), bool)
    land[:2, :3] = True
    values = truth["2m_temperature"].values.astype(np.float64)
    values[:, land] = np.nan
    truth["2m_temperature"].values[:] = values.astype(np.float32)
    write_wb2_store(truth, tmp_path / "ocean.zarr", chunks={"time": 4})
    err = np.random.default_rng(2).normal(size=(2, 1, lat.size, lon.size))
    inits = TIMES[:2]
    fc = values[:2, None] + err
    forecast = xr.Dataset(
        {
            "2m_temperature": (
                ("time", "prediction_timedelta", "latitude", "longitude"),
                fc.astype(np.float32),
            )
        },
        coords={
            "time": inits,
            "prediction_timedelta": pd.to_timedelta([0], "h"),
            "latitude": lat,
            "longitude": lon,
        },
    )
    ocean = open_store(tmp_path / "ocean.zarr")
    wb2_default = score(forecast, ocean)
    assert np.isnan(wb2_default["2m_temperature"].sel(metric="rmse", region="global")).all()
    result = score(forecast, ocean, skipna=True)
    assert result.attrs["skipna"] == 1
    bounds = np.deg2rad(regional_cell_bounds(lat))
    w = np.broadcast_to((np.sin(bounds[1:]) - np.sin(bounds[:-1]))[:, None], land.shape) * ~land
    sq = (fc.astype(np.float32).astype(np.float64) - values[:2, None]) ** 2
    mse = np.nansum(sq * w, axis=(-2, -1)) / w.sum()
    got = result["2m_temperature"].sel(metric="rmse", region="global").values
    np.testing.assert_allclose(got, np.sqrt(mse.mean(0)), rtol=1e-6)

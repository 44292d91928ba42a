"""Climatology builder vs a brute-force loop; the climatology and persistence baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.commands.climatology import main as climatology_main
from earthcast.scoring.climatology import (
    build_climatology,
    check_climatology,
    climatology_forecast,
    persistence_forecast,
    triangular_window_weights,
)
from earthcast.scoring.evaluate import score


def _truth() -> xr.Dataset:
    times = pd.date_range("2019-01-01", "2021-12-31T12", freq="12h")
    times = times[~((times >= "2019-03-01") & (times < "2019-03-04"))]  # a gap, filled from day 365
    rng = np.random.default_rng(0)
    doy = times.day_of_year.values
    seasonal = np.cos(2 * np.pi * doy / 365.25)[:, None, None]
    values = seasonal + 0.1 * times.hour.values[:, None, None] + rng.normal(size=(times.size, 2, 3))
    return xr.Dataset(
        {"2m_temperature": (("time", "latitude", "longitude"), values.astype(np.float32), {"units": "K"})},
        coords={"time": times, "latitude": [-45.0, 45.0], "longitude": [0.0, 120.0, 240.0]},
    )


def _brute_force(truth: xr.Dataset, hour: int, window: int) -> np.ndarray:
    da = truth["2m_temperature"]
    times = pd.DatetimeIndex(da.time.values)
    samples = {
        (t.year, t.day_of_year): da.values[i].astype(np.float64)
        for i, t in enumerate(times)
        if t.hour == hour
    }
    years = sorted({t.year for t in times})
    half = window // 2
    out = np.zeros((366, 2, 3))
    for day in range(1, 367):
        num, den = np.zeros((2, 3)), 0.0
        for k in range(-half, half + 1):
            weight = 1 - abs(k) / half
            source_day = (day - 1 + k) % 366 + 1
            for year in years:
                value = samples.get((year, source_day), samples.get((year, 365)))
                num += weight * value
                den += weight
        out[day - 1] = num / den
    return out


def test_window_weights_are_triangular() -> None:
    np.testing.assert_allclose(triangular_window_weights(5), np.array([0, 0.5, 1, 0.5, 0]) / 0.4)
    with pytest.raises(ValueError, match="odd"):
        triangular_window_weights(60)


def test_builder_matches_brute_force_including_day_366() -> None:
    truth = _truth()
    clim = build_climatology(truth, hour_interval=12, window=61)
    assert clim["2m_temperature"].dims == ("hour", "dayofyear", "latitude", "longitude")
    assert clim["2m_temperature"].dtype == np.float32
    assert list(clim.hour.values) == [0, 12] and clim.dayofyear.values[[0, -1]].tolist() == [1, 366]
    for h_pos, hour in enumerate((0, 12)):
        expected = _brute_force(truth, hour, 61)
        np.testing.assert_allclose(clim["2m_temperature"].values[h_pos], expected, rtol=2e-6, atol=1e-6)


def test_hour_interval_defaults_to_the_truths_hours_of_day() -> None:
    """12-hourly truth gives hours 0 and 12 (the brute-force test above), daily truth (an ocean product, or
    monthly means stamped at 00 UTC) one hour: WB2 broadcasts such a climatology over every hour."""
    truth = _truth()
    assert build_climatology(truth, window=61).hour.values.tolist() == [0, 12]
    daily = truth.sel(time=truth.time.dt.hour == 0)
    clim = build_climatology(daily, window=61)
    assert clim.hour.values.tolist() == [0]
    np.testing.assert_array_equal(
        clim["2m_temperature"].values,
        build_climatology(daily, hour_interval=24, window=61)["2m_temperature"].values,
    )


def test_cli_writes_zarr_v2_climatology(tmp_path) -> None:
    truth = _truth()
    truth.to_zarr(tmp_path / "truth.zarr", zarr_format=2, consolidated=True)
    out = tmp_path / "clim.zarr"
    argv = [
        "--truth",
        str(tmp_path / "truth.zarr"),
        "--out",
        str(out),
        "--hour-interval",
        "12",
        "--window",
        "61",
    ]
    assert climatology_main([*argv, "--start-year", "2020", "--end-year", "2021"]) == 0
    assert (out / ".zmetadata").exists()
    written = xr.open_zarr(out)
    expected = build_climatology(truth, start_year=2020, end_year=2021, hour_interval=12, window=61)
    np.testing.assert_array_equal(written["2m_temperature"].values, expected["2m_temperature"].values)
    assert written["2m_temperature"].attrs["units"] == "K"


def test_climatology_without_hour_dayofyear_is_refused_with_fix() -> None:
    with pytest.raises(ValueError, match=r"needs 'hour' and 'dayofyear'.*earthcast climatology"):
        check_climatology(_truth())


def test_baseline_forecasts_and_their_scores() -> None:
    truth = _truth()
    clim = build_climatology(truth, hour_interval=12, window=61)
    inits = pd.date_range("2021-01-01", periods=6, freq="12h").values
    leads = pd.to_timedelta([0, 12, 36], "h").values
    pers = persistence_forecast(truth, inits, leads)
    for i, init in enumerate(inits):
        for j in range(3):
            np.testing.assert_array_equal(
                pers["2m_temperature"].values[i, j], truth["2m_temperature"].sel(time=init)
            )
    climf = climatology_forecast(clim, inits, leads, ["2m_temperature"])
    for i, init in enumerate(inits):
        for j, lead in enumerate(leads):
            valid = pd.Timestamp(init + lead)
            ref = clim["2m_temperature"].sel(hour=valid.hour, dayofyear=valid.day_of_year)
            np.testing.assert_array_equal(climf["2m_temperature"].values[i, j], ref)
    # The built-in baselines score exactly like the baseline datasets scored as forecasts.
    forecast = pers.copy(data={"2m_temperature": np.zeros(pers["2m_temperature"].shape)})
    for source, as_forecast in (("persistence", pers), ("climatology", climf)):
        builtin = score(forecast, truth, clim, source=source)
        explicit = score(as_forecast, truth, clim)
        xr.testing.assert_allclose(builtin, explicit.assign_attrs(builtin.attrs), rtol=1e-12)
    assert float(score(pers, truth)["2m_temperature"].sel(metric="mse").isel(region=0, lead_time=0)) == 0.0

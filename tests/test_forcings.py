"""Analytic forcings against hand-computed solar geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd

from earthcast.datasets.forcings import coordinate_statics, forcing_fields, toa_insolation


def test_insolation_follows_solar_geometry() -> None:
    # March equinox 2021 (20 Mar 09:37 UTC): at 12:00 UTC the sun is near overhead at (0°N, ~0°E).
    noon = np.array(["2021-03-20T12:00"], dtype="datetime64[ns]")
    lon = np.arange(0.0, 360.0, 1.0)
    s = toa_insolation(noon, np.array([0.0]), lon)[0, 0]
    assert abs(lon[np.argmax(s)] - 1.9) < 1.5  # solar noon leads 12 UTC by the equation of time (~ -7.5 min)
    np.testing.assert_allclose(s.max(), 1.0 * 1.0101, atol=6e-3)  # (r0/r)^2 ≈ 1.0101 on 20 March
    assert (s[(lon > 100) & (lon < 260)] == 0).all()  # night side
    # Day-mean flux at the equator on the equinox is S0·(r0/r)²/π (cos zenith integrated over a day).
    day = pd.date_range("2021-03-20T09:37", periods=24 * 60, freq="1min").values
    mean = toa_insolation(day, np.array([0.0]), np.array([0.0])).mean()
    np.testing.assert_allclose(mean, 1.0101 / np.pi, rtol=5e-3)
    # Polar night and midnight sun at the December solstice: overhead-sun latitude ≈ −23.44°.
    dec = pd.date_range("2021-12-21", periods=24, freq="1h").values
    polar = toa_insolation(dec, np.array([-89.0, 75.0]), np.array([0.0]))
    assert (polar[:, 1] == 0).all() and (polar[:, 0] > 0).all()
    np.testing.assert_allclose(polar[:, 0].mean(), np.sin(np.deg2rad(23.44)) * 1.0335, rtol=0.03)


def test_time_encodings_and_coordinate_statics() -> None:
    times = np.array(["2021-01-01T06:00", "2021-07-02T18:00"], dtype="datetime64[ns]")
    lat, lon = np.array([-45.0, 30.0]), np.array([0.0, 90.0, 180.0])
    f = forcing_fields(["sin_hour_of_day", "cos_hour_of_day", "cos_day_of_year"], times, lat, lon)
    assert f.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(f[0, 0], 1.0, atol=1e-6)  # 06 UTC: sin(2π·6/24) = 1
    np.testing.assert_allclose(f[1, 1], 0.0, atol=1e-6)  # 18 UTC: cos(2π·18/24) = 0
    np.testing.assert_allclose(f[1, 2], np.cos(2 * np.pi * 182 / 365.25), atol=1e-6)  # day 183
    c = coordinate_statics(["sin_latitude", "cos_longitude"], lat, lon)
    np.testing.assert_allclose(c[0, :, 0], np.sin(np.deg2rad(lat)), atol=1e-7)
    np.testing.assert_allclose(c[1, 0], [1.0, 0.0, -1.0], atol=1e-7)

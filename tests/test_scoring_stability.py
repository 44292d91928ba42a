"""Stability figures of a long run (earthcast.scoring.stability) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from earthcast.scoring.stability import stability_figures
from earthcast.scoring.weights import latitude_weights

LAT = np.linspace(-87.1875, 87.1875, 32)
LON = np.arange(64) * 5.625


def _field(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(
        values, dims=("time", "latitude", "longitude"), coords={"latitude": LAT, "longitude": LON}
    )


@pytest.fixture
def truth() -> xr.DataArray:
    rng = np.random.default_rng(0)
    return _field(rng.standard_normal((12, 32, 64)) * 3.0 + 100.0)


def test_offset_and_bias_against_float64_formulas(truth: xr.DataArray) -> None:
    w = latitude_weights(LAT, "global")
    t = truth.values

    def area(a: np.ndarray) -> np.ndarray:  # area mean over the last two axes
        return (a.mean(-1) * w).sum(-1) / w.sum()

    bias = np.where(LAT[:, None] > 0, 0.6, -0.2) * np.ones((32, 64))  # a fixed bias map
    figures = stability_figures(truth + bias, truth)
    spatial_std = np.sqrt(area((t - area(t)[:, None, None]) ** 2)).mean()
    assert figures.drift == pytest.approx(area(bias) / spatial_std, rel=1e-10)
    daily_std = np.sqrt(area(t.var(axis=0, ddof=0)))
    assert figures.bias_rms == pytest.approx(np.sqrt(area(bias**2)) / daily_std, rel=1e-10)
    # a uniform offset only moves the zonal mean: the spectrum at k >= 1 is unchanged
    assert figures.spectrum_ratio_min == pytest.approx(1.0, abs=1e-12)
    assert figures.spectrum_ratio_max == pytest.approx(1.0, abs=1e-12)


def test_amplified_anomalies_scale_the_spectrum_by_the_square(truth: xr.DataArray) -> None:
    zonal = truth.mean("longitude")
    figures = stability_figures(zonal + 2.0 * (truth - zonal), truth)
    assert figures.spectrum_ratio_min == pytest.approx(4.0) and figures.spectrum_ratio_max == pytest.approx(
        4.0
    )
    assert figures.drift == pytest.approx(0.0, abs=1e-12)


def test_non_finite_runs_and_mismatched_windows(truth: xr.DataArray) -> None:
    broken = truth.copy()
    broken[5, 3, 7] = np.nan
    assert np.isnan(stability_figures(broken, truth).drift)
    with pytest.raises(ValueError, match="different points"):
        stability_figures(truth.isel(time=slice(0, 5)), truth)

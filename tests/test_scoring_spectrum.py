"""WB2 zonal energy spectrum: Parseval's relation and coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from earthcast.scoring.spectrum import EARTH_RADIUS_M, zonal_energy_spectrum


def _field(n_lon: int, lats: np.ndarray, values: np.ndarray) -> xr.DataArray:
    lon = np.arange(n_lon) * 360 / n_lon
    return xr.DataArray(
        values, dims=("latitude", "longitude"), coords={"latitude": lats, "longitude": lon}, name="u"
    )


def test_parseval_odd_number_of_longitudes() -> None:
    lats = np.array([-60.0, 0.0, 45.0])
    values = np.random.default_rng(0).normal(size=(3, 63))
    spectrum = zonal_energy_spectrum(_field(63, lats, values))
    circumference = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(lats))
    integral = circumference / 63 * np.sum(values**2, axis=-1)
    np.testing.assert_allclose(spectrum.sum("zonal_wavenumber").values, integral, rtol=1e-12)


def test_single_wave_lands_in_its_wavenumber_with_frequency_coords() -> None:
    lon = np.arange(64) * 360 / 64
    values = 3.0 * np.cos(np.deg2rad(5 * lon))[None, :]
    spectrum = zonal_energy_spectrum(_field(64, np.array([30.0]), values)).isel(latitude=0)
    c = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(30.0))
    assert spectrum.sizes["zonal_wavenumber"] == 33
    assert float(spectrum.sel(zonal_wavenumber=5)) == pytest.approx(2 * c * 1.5**2, rel=1e-12)
    assert float(spectrum.drop_sel(zonal_wavenumber=5).sum()) == pytest.approx(0, abs=1e-6 * c)
    assert float(spectrum.frequency.sel(zonal_wavenumber=5)) == pytest.approx(5 / c, rel=1e-12)
    assert float(spectrum.wavelength.sel(zonal_wavenumber=1)) == pytest.approx(c, rel=1e-12)
    assert spectrum.frequency.attrs["units"] == "1 / m"


def test_lazy_with_dask_and_rejects_irregular_longitudes() -> None:
    field = _field(8, np.array([0.0]), np.ones((1, 8))).chunk()
    assert zonal_energy_spectrum(field).chunks is not None
    bad = field.assign_coords(longitude=[0, 10, 20, 40, 50, 60, 70, 80])
    with pytest.raises(ValueError, match="uniformly spaced"):
        zonal_energy_spectrum(bad)

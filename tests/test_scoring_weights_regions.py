"""WB2 latitude weights (golden values) and regions (inclusive label slices, europe wrap, land)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from earthcast.grids import equiangular_grid
from earthcast.scoring.metrics import AreaMean
from earthcast.scoring.regions import SLICE_REGIONS, region_weights, resolve_regions
from earthcast.scoring.weights import latitude_weights


def test_golden_latitude_weights() -> None:
    w64 = latitude_weights(equiangular_grid(64, 32, with_poles=False).latitude)
    assert w64[0] == pytest.approx(0.0770444, rel=1e-6) and w64[1] == pytest.approx(0.230391, rel=1e-6)
    w121 = latitude_weights(np.linspace(-90, 90, 121))
    assert w121[0] == pytest.approx(0.00518318, rel=1e-6) and w121[60] == pytest.approx(1.58384, rel=1e-6)
    w721 = latitude_weights(np.linspace(-90, 90, 721))
    assert w721[0] == pytest.approx(0.000857926, rel=1e-6)
    for w in (w64, w121, w721):
        assert w.mean() == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_allclose(w, w[::-1], rtol=1e-12)


def test_weights_reject_descending_latitude_with_fix() -> None:
    with pytest.raises(ValueError, match="sortby"):
        latitude_weights(np.linspace(90, -90, 121))


def _wb2_region_mean(da: xr.DataArray, lat_slices: list[slice], lon_slices: list[slice]) -> float:
    """WB2's procedure, re-derived: concatenate label slices, then a lat-weighted xarray mean."""
    lat = np.deg2rad(da.latitude.values)
    bounds = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
    w = xr.DataArray(np.diff(np.sin(bounds)), dims="latitude", coords={"latitude": da.latitude})
    lats = xr.concat([da.latitude.sel(latitude=s) for s in lat_slices], "latitude")
    lons = xr.concat([da.longitude.sel(longitude=s) for s in lon_slices], "longitude")
    sub = da.sel(latitude=lats, longitude=lons)
    return float(sub.weighted(w).mean(["latitude", "longitude"]))


@pytest.fixture
def field_2p5() -> xr.DataArray:
    g = equiangular_grid(144, 73, with_poles=True)  # 2.5°: has ±20, 35, 75, 347.5, 42.5 exactly
    rng = np.random.default_rng(1)
    return xr.DataArray(
        rng.normal(size=(73, 144)),
        dims=("latitude", "longitude"),
        coords={"latitude": g.latitude, "longitude": g.longitude},
    )


def test_regions_inclusive_slices_and_europe_wrap(field_2p5: xr.DataArray) -> None:
    lat, lon = field_2p5.latitude.values, field_2p5.longitude.values
    names = ["tropics", "extra-tropics", "europe", "north-atlantic", "ausnz", "arctic"]
    weights = region_weights([SLICE_REGIONS[n] for n in names], lat, lon)
    tropics, _, europe = weights[0] > 0, weights[1] > 0, weights[2] > 0
    assert tropics[lat == 20].all() and tropics[lat == -20].all() and not tropics[lat == 22.5].any()
    extra = weights[1] > 0
    assert extra[lat == 20].all() and extra[lat == -20].all() and not extra[lat == 17.5].any()
    row = europe[lat == 50][0]
    for kept in (347.5, 355.0, 0.0, 20.0, 42.5):
        assert row[lon == kept].all()
    for dropped in (345.0, 45.0, 180.0):
        assert not row[lon == dropped].any()
    assert europe[lat == 35].any() and europe[lat == 75].any() and not europe[lat == 77.5].any()
    means = AreaMean(weights)(field_2p5.values)
    expected = [
        _wb2_region_mean(field_2p5, [slice(-20, 20)], [slice(None, None)]),
        _wb2_region_mean(field_2p5, [slice(None, -20), slice(20, None)], [slice(None, None)]),
        _wb2_region_mean(field_2p5, [slice(35, 75)], [slice(347.5, None), slice(0, 42.5)]),
        _wb2_region_mean(field_2p5, [slice(25, 65)], [slice(290, 350)]),
        _wb2_region_mean(field_2p5, [slice(-45, -12.5)], [slice(120, 175)]),
        _wb2_region_mean(field_2p5, [slice(60, 90)], [slice(None, None)]),
    ]
    np.testing.assert_allclose(means, expected, rtol=1e-12)


def test_nan_outside_region_is_ignored_and_inside_propagates(field_2p5: xr.DataArray) -> None:
    lat, lon = field_2p5.latitude.values, field_2p5.longitude.values
    area = AreaMean(region_weights([SLICE_REGIONS["tropics"], SLICE_REGIONS["arctic"]], lat, lon))
    x = field_2p5.values.copy()
    x[lat == 80, 3] = np.nan  # inside arctic only
    tropics, arctic = area(x)
    assert np.isnan(arctic) and np.isfinite(tropics)
    assert tropics == pytest.approx(
        _wb2_region_mean(field_2p5, [slice(-20, 20)], [slice(None, None)]), rel=1e-12
    )
    _, skip_arctic = area(x, skipna=True)
    clean = field_2p5.where(~np.isnan(x))
    assert skip_arctic == pytest.approx(
        _wb2_region_mean(clean, [slice(60, 90)], [slice(None, None)]), rel=1e-12
    )
    x[lat == 0, 0] = np.inf
    assert np.isposinf(area(x)[0])


def test_land_region_weights_by_fraction(field_2p5: xr.DataArray) -> None:
    lat, lon = field_2p5.latitude.values, field_2p5.longitude.values
    rng = np.random.default_rng(2)
    lsm = np.clip(rng.uniform(-0.5, 1.5, size=(73, 144)), 0, 1)
    (land_region,) = resolve_regions(["tropics_land"], have_land_sea_mask=True)
    x = field_2p5.values.copy()
    x[lsm == 0] = np.nan  # ocean NaNs must not matter: WB2 zeroes zero-weight values
    value = AreaMean(region_weights([land_region], lat, lon, lsm))(x)[0]
    w = latitude_weights(lat)[:, None] * lsm * (np.abs(lat) <= 20)[:, None]
    keep = w > 0
    assert value == pytest.approx(np.sum(w[keep] * x[keep]) / np.sum(w[keep]), rel=1e-12)


def test_unknown_region_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown region\(s\) \['atlantis'\].*europe"):
        resolve_regions(["global", "atlantis"], have_land_sea_mask=False)
    with pytest.raises(ValueError, match="land_sea_mask"):
        resolve_regions(["global_land"], have_land_sea_mask=False)
    assert [r.name for r in resolve_regions(["all"], have_land_sea_mask=True)][-1] == "tropics_land"

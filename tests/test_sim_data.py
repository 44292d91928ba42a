"""Embedded physics data: short Held–Suarez and two-layer QG generations through the real writer and reader.

Each model runs once per module (spun up, then a short output window) and every test reads the resulting
Zarr store back through ``open_store``. Tolerances are justified next to each assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from earthcast.datasets.sim import demo_store_path, ensure_demo_store
from earthcast.datasets.store import open_store
from earthcast.grids import dataset_geometry, wb2_grid

R_DRY = 1004.0 * 2 / 7  # J kg⁻¹ K⁻¹: dinosaur's dry-air gas constant, c_p·κ
ATMOS = {"years": 30 / 365, "spinup_days": 200, "seed": 0}  # 120 six-hourly outputs after a full spin-up
OCEAN = {"years": 146 / 365, "spinup_days": 1095, "seed": 0}  # 146 daily outputs after 3 years of spin-up


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="module")
def atmosphere(cache_dir: Path) -> tuple[Path, xr.Dataset]:
    pytest.importorskip("dinosaur")
    path = ensure_demo_store("atmosphere", cache_dir=cache_dir, progress=False, **ATMOS)
    return path, open_store(path).load()


@pytest.fixture(scope="module")
def ocean(cache_dir: Path) -> tuple[Path, xr.Dataset]:
    pytest.importorskip("pyqg_jax")
    path = ensure_demo_store("ocean", cache_dir=cache_dir, progress=False, **OCEAN)
    return path, open_store(path).load()


def _area_mean(da: xr.DataArray) -> xr.DataArray:
    """Cell-area-weighted mean over latitude/longitude (sin-difference weights, as WB2)."""
    lat = np.deg2rad(da.latitude.values)
    bounds = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
    weights = xr.DataArray(np.diff(np.sin(bounds)), dims="latitude", coords={"latitude": da.latitude})
    return da.weighted(weights).mean(["latitude", "longitude"])


# ---------------------------------------------------------------- atmosphere


def test_atmosphere_schema_round_trips(atmosphere: tuple[Path, xr.Dataset]) -> None:
    path, ds = atmosphere
    grid = wb2_grid("64x32_equiangular_conservative")
    np.testing.assert_array_equal(ds.latitude.values, grid.latitude)
    np.testing.assert_array_equal(ds.longitude.values, grid.longitude)
    # The WB2 64x32 grid written out by hand: cell centres 5.625° apart, no poles.
    np.testing.assert_allclose(ds.latitude.values, -87.1875 + 5.625 * np.arange(32))
    np.testing.assert_allclose(ds.longitude.values, 5.625 * np.arange(64))
    assert ds.level.dtype == np.int64 and list(ds.level.values) == [100, 200, 250, 300, 500, 700, 850]
    assert ds.time.dtype == np.dtype("datetime64[ns]") and ds.time.size == 120
    assert ds.time.values[0] == np.datetime64("2017-01-01T00:00")
    assert (np.diff(ds.time.values) == np.timedelta64(6, "h")).all()
    units = {
        "geopotential": "m**2 s**-2",
        "temperature": "K",
        "u_component_of_wind": "m s**-1",
        "v_component_of_wind": "m s**-1",
        "surface_pressure": "Pa",
        "land_sea_mask": "(0 - 1)",
        "geopotential_at_surface": "m**2 s**-2",
    }
    for name, unit in units.items():
        assert ds[name].attrs["units"] == unit and ds[name].attrs["long_name"]
    for name in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind"):
        assert ds[name].dims == ("time", "level", "latitude", "longitude")
    assert ds.surface_pressure.dims == ("time", "latitude", "longitude")
    assert ds.land_sea_mask.dims == ("latitude", "longitude") and float(abs(ds.land_sea_mask).max()) == 0
    assert float(abs(ds.geopotential_at_surface).max()) == 0
    on_disk = xr.open_zarr(path, consolidated=True)  # Zarr v2 with consolidated metadata
    assert (path / ".zmetadata").exists() and all(on_disk[v].dtype == np.float32 for v in on_disk.data_vars)
    assert on_disk.attrs["generator_version"].startswith("held-suarez")


def test_atmosphere_values_finite_and_physical(atmosphere: tuple[Path, xr.Dataset]) -> None:
    _, ds = atmosphere
    for name in ds.data_vars:
        assert np.isfinite(ds[name].values).all(), name
    # Held–Suarez climate: T_eq spans 200–315 K; Z500 ≈ 5–6 km of height; jets of tens of m/s.
    assert float(ds.temperature.min()) > 180 and float(ds.temperature.max()) < 320
    z500_m = ds.geopotential.sel(level=500) / 9.80665
    # Bounds of the Held–Suarez climate, not of one sample: the 30 days after a 200-day spin-up are chaotic
    # weather, and which extremes occur depends on floating-point details of the machine (XLA's CPU code);
    # one machine's sample reached 4769 m. A unit slip (m² s⁻² as metres, ×9.8) is far outside either way.
    assert float(z500_m.min()) > 4600 and float(z500_m.max()) < 6100
    # The core conserves mass: the area-mean surface pressure stays at the initial 1000 hPa.
    np.testing.assert_allclose(_area_mean(ds.surface_pressure).values, 1e5, rtol=5e-4)


def _hypsometric_thickness(t: xr.DataArray, levels: tuple[int, int, int]) -> xr.DataArray:
    """Φ(top) − Φ(bottom) = R∫T d ln p by the trapezoid rule over three written levels (hPa, top first)."""
    top, mid, bottom = levels
    return R_DRY * (
        (t.sel(level=top) + t.sel(level=mid)) / 2 * np.log(mid / top)
        + (t.sel(level=mid) + t.sel(level=bottom)) / 2 * np.log(bottom / mid)
    )


def test_atmosphere_is_hydrostatic(atmosphere: tuple[Path, xr.Dataset]) -> None:
    """Layer thicknesses of the written geopotential equal R∫T d ln p of the written temperatures.

    A trapezoid over three written levels only approximates the model's 10-level profile: measured, it is
    within 0.35 % for 500–850 hPa on one machine's sample and within 0.51 % on another's (a deep low, where the
    profile curves most; the sample is chaotic weather and differs between machines), and ~1 % across the
    tropopause kink above 500 hPa, so that layer is not checked here (see the exact column test below). A unit
    slip (height for geopotential, ×9.8) or a level mix-up (500–700 instead of 500–850 hPa: −50 %) would be off
    by far more than the 1 % allowed.
    """
    _, ds = atmosphere
    actual = ds.geopotential.sel(level=500) - ds.geopotential.sel(level=850)
    expected = _hypsometric_thickness(ds.temperature, (500, 700, 850))
    np.testing.assert_allclose(actual.values, expected.values, rtol=1e-2)


def test_pressure_levels_match_an_independent_column_integral() -> None:
    """Written T and Φ on pressure levels against a numpy re-computation from the sigma-level state.

    Reference: T(ln p) piecewise linear between sigma centres (p = σ·pₛ) and, below the lowest centre, the
    model's isothermal bottom half-layer; Φ(p) = R∫T d ln p from the surface (Φₛ = 0), on a fine grid.
    """
    pytest.importorskip("dinosaur")
    from earthcast.datasets.sim.held_suarez import HeldSuarezConfig, HeldSuarezModel

    model = HeldSuarezModel(HeldSuarezConfig(), block_outputs=1)
    state = model.spin_up(model.initial_state(), 30)
    written = {k: np.asarray(v) for k, v in model._diagnose(state).items()}
    scale, grid = model._scale, model.output_grid
    temp = np.asarray(grid.to_nodal(state.temperature_variation)) + model.reference_temperature[:, None, None]
    temp = temp * scale["temperature"]  # (K, lon, lat) in kelvin
    ps = np.exp(np.asarray(grid.to_nodal(state.log_surface_pressure)))[0] * scale["pressure"]
    sigma = np.asarray(model.coords.vertical.centers)
    levels = np.asarray(model.config.pressure_levels_hpa) * 100.0
    rng = np.random.default_rng(0)
    for i, j in zip(rng.integers(0, 64, 12), rng.integers(0, 32, 12)):
        log_p = np.log(sigma * ps[i, j])
        column = np.append(temp[:, i, j], temp[-1, i, j])  # isothermal from the lowest centre to the surface
        nodes = np.append(log_p, np.log(ps[i, j]))
        expected_t = np.interp(np.log(levels), log_p, temp[:, i, j])
        np.testing.assert_allclose(written["temperature"][:, j, i], expected_t, rtol=1e-5)
        for k, p in enumerate(levels):
            x = np.linspace(np.log(p), np.log(ps[i, j]), 20001)
            expected_phi = R_DRY * np.trapezoid(np.interp(x, nodes, column), x)
            assert written["geopotential"][k, j, i] == pytest.approx(expected_phi, rel=2e-4)


def test_atmosphere_held_suarez_climate(atmosphere: tuple[Path, xr.Dataset]) -> None:
    """Zonal-mean structure of Held & Suarez (1994): mid-latitude westerly jets, warm tropics."""
    _, ds = atmosphere
    u250 = ds.u_component_of_wind.sel(level=250).mean(["time", "longitude"])
    for hemisphere in (u250.sel(latitude=slice(0, 90)), u250.sel(latitude=slice(-90, 0))):
        jet_lat = abs(float(hemisphere.idxmax()))
        assert 20 < jet_lat < 60 and 15 < float(hemisphere.max()) < 50
    t850 = ds.temperature.sel(level=850).mean(["time", "longitude"])
    assert float(t850.sel(latitude=slice(-10, 10)).mean() - t850.sel(latitude=slice(70, 90)).mean()) > 25


def test_atmosphere_stationary_after_spinup(atmosphere: tuple[Path, xr.Dataset]) -> None:
    """First and second 15-day halves of the window agree in global-mean temperature and kinetic energy.

    During spin-up the global-mean temperature falls from the 288 K rest state by ~10 K per 20 days at
    first; in the stationary 3-year run (docs/physics_data.md) the halves of every 30-day window differ by
    at most 0.08 K and 9 % in kinetic energy, so 0.3 K and 25 % leave a margin of ~3 for other seeds and
    platforms while a run that is still adjusting fails.
    """
    _, ds = atmosphere
    halves = [ds.isel(time=slice(0, 60)), ds.isel(time=slice(60, 120))]
    temp = [float(_area_mean(h.temperature).mean()) for h in halves]
    ke = [
        float(_area_mean(0.5 * (h.u_component_of_wind**2 + h.v_component_of_wind**2)).mean()) for h in halves
    ]
    assert abs(temp[1] - temp[0]) < 0.3, temp
    assert abs(ke[1] - ke[0]) / np.mean(ke) < 0.25, ke


def test_hydrostatic_geopotential_reproduces_the_model_levels() -> None:
    """At a sigma centre the reconstruction returns the model's Φ; in between it adds R·T̄·Δln p."""
    jnp = pytest.importorskip("jax.numpy")
    from earthcast.datasets.sim.vertical import hydrostatic_geopotential

    log_sigma = np.log((np.arange(10) + 0.5) / 10)
    temperature = np.linspace(0.7, 1.0, 10)[:, None, None] * np.ones((10, 2, 2))
    phi = np.cumsum(np.arange(10, 0, -1, dtype=np.float64))[::-1, None, None] * np.ones((10, 2, 2))
    target = np.stack([np.full((2, 2), log_sigma[4]), np.full((2, 2), np.log(0.6))])
    got = np.asarray(
        hydrostatic_geopotential(
            jnp, jnp.asarray(phi), jnp.asarray(temperature), log_sigma, jnp.asarray(target), 2.0
        )
    )
    np.testing.assert_allclose(got[0], phi[4], rtol=1e-6)
    t_mid = np.interp(np.log(0.6), log_sigma, temperature[:, 0, 0])
    expected = phi[6, 0, 0] + 2.0 * (log_sigma[6] - np.log(0.6)) * (temperature[6, 0, 0] + t_mid) / 2
    np.testing.assert_allclose(got[1], expected, rtol=1e-6)


def test_spectral_evaluation_is_exact_on_wb2_grid() -> None:
    """A single spherical harmonic (m=0, l=1 ∝ sin φ) evaluated on the WB2 latitudes, against the formula."""
    pytest.importorskip("dinosaur")
    from earthcast.datasets.sim.held_suarez import HeldSuarezConfig, HeldSuarezModel

    model = HeldSuarezModel(HeldSuarezConfig(), block_outputs=1)
    grid = model.output_grid
    modal = np.zeros(grid.modal_shape, dtype=np.float32)
    modal[0, 1] = 1.0
    nodal = np.asarray(grid.to_nodal(modal))  # (lon, lat)
    # Unit-L² normalised P₁⁰ on the sphere: Y = sqrt(3 / 4π) sin φ.
    expected = np.sqrt(3 / (4 * np.pi)) * np.sin(np.deg2rad(model.grid.latitude))
    np.testing.assert_allclose(nodal, np.broadcast_to(expected, nodal.shape), atol=1e-6)


def test_log_pressure_interpolation_matches_numpy() -> None:
    """Column interpolation in ln σ against np.interp inside the range and a hand-made extrapolation."""
    jnp = pytest.importorskip("jax.numpy")
    from earthcast.datasets.sim.vertical import interp_in_log_sigma

    rng = np.random.default_rng(0)
    log_sigma = np.log((np.arange(10) + 0.5) / 10)
    field = rng.normal(size=(10, 3, 2)).astype(np.float32)
    target = np.stack([np.full((3, 2), np.log(x)) for x in (0.3, 0.62, 0.9, 0.99)])
    got = np.asarray(interp_in_log_sigma(jnp, jnp.asarray(field), log_sigma, jnp.asarray(target)))
    for p, x in enumerate((0.3, 0.62, 0.9)):
        for i, j in np.ndindex(3, 2):
            assert got[p, i, j] == pytest.approx(np.interp(np.log(x), log_sigma, field[:, i, j]), abs=1e-5)
    slope = (field[-1] - field[-2]) / (log_sigma[-1] - log_sigma[-2])
    np.testing.assert_allclose(got[3], field[-1] + slope * (np.log(0.99) - log_sigma[-1]), atol=1e-5)


# ---------------------------------------------------------------- ocean


def test_ocean_schema_and_land_mask(ocean: tuple[Path, xr.Dataset]) -> None:
    _, ds = ocean
    assert ds.time.size == 146 and (np.diff(ds.time.values) == np.timedelta64(1, "D")).all()
    np.testing.assert_allclose(np.diff(ds.latitude.values), 0.25)
    np.testing.assert_allclose(np.diff(ds.longitude.values), 0.25)
    assert ds.latitude.values[0] == pytest.approx(24.125) and ds.longitude.values[0] == pytest.approx(290.125)
    assert ds.sla.attrs["units"] == "m" and ds.ugos.attrs["units"] == ds.vgos.attrs["units"] == "m s**-1"
    assert ds.uo.dims == ("time", "level", "latitude", "longitude")  # the reader maps depth → level
    assert list(ds.level.values) == [500, 2000]
    # the β-plane is doubly periodic: the store says so, and earthcast pads and weighs it that way
    assert dataset_geometry(ds).kind == "periodic"
    # Land patch 34–37°N, 296–300°E, recomputed from the coordinates.
    lat, lon = ds.latitude.values[:, None], ds.longitude.values[None, :]
    land = (lat >= 34) & (lat <= 37) & (lon >= 296) & (lon <= 300)
    assert land.sum() == 12 * 16
    np.testing.assert_array_equal(ds.land_sea_mask.values, land.astype(np.float32))
    for name in ("sla", "ugos", "vgos", "uo", "vo"):
        values = ds[name].values
        assert np.isnan(values[..., land]).all() and np.isfinite(values[..., ~land]).all(), name


def test_ocean_is_geostrophic(ocean: tuple[Path, xr.Dataset]) -> None:
    """The eddy velocity equals (g/f0) × the SLA gradient (centred differences, away from land)."""
    _, ds = ocean
    f0, g = 2 * 7.292e-5 * np.sin(np.deg2rad(32.0)), 9.81
    dy = np.deg2rad(0.25) * 6.371e6
    dx = dy * np.cos(np.deg2rad(32.0))
    sla = ds.sla.values
    u_geo = -(g / f0) * (sla[:, 2:, 1:-1] - sla[:, :-2, 1:-1]) / (2 * dy)
    v_geo = (g / f0) * (sla[:, 1:-1, 2:] - sla[:, 1:-1, :-2]) / (2 * dx)
    u_eddy = ds.ugos.values[:, 1:-1, 1:-1] - 0.15  # minus the imposed mean flow U1
    v_eddy = ds.vgos.values[:, 1:-1, 1:-1]
    for model, fd in ((u_eddy, u_geo), (v_eddy, v_geo)):
        ok = np.isfinite(model) & np.isfinite(fd)
        slope = np.sum(model[ok] * fd[ok]) / np.sum(fd[ok] ** 2)
        corr = np.corrcoef(model[ok], fd[ok])[0, 1]
        # Centred differences underestimate spectral derivatives at the grid scale; 15 % covers it.
        assert corr > 0.95 and 0.85 < slope < 1.15, (corr, slope)


def test_ocean_stationary_after_spinup(ocean: tuple[Path, xr.Dataset]) -> None:
    """Eddy kinetic energy and SLA amplitude of the two 73-day halves agree.

    From rest the eddy energy grows by orders of magnitude during the first year. In the stationary state
    (3-year run, every 146-day window at 73-day offsets, docs/physics_data.md) the halves differ by at most
    14 % in EKE and 11 % in SLA rms, so 30 % and 25 % leave a factor ~2 for other seeds and platforms while a
    drifting run still fails.
    """
    _, ds = ocean
    halves = [ds.isel(time=slice(0, 73)), ds.isel(time=slice(73, 146))]
    eke = [float(np.nanmean(0.5 * ((h.ugos - 0.15) ** 2 + h.vgos**2))) for h in halves]
    sla_rms = [float(np.sqrt(np.nanmean(h.sla**2))) for h in halves]
    assert abs(eke[1] - eke[0]) / np.mean(eke) < 0.30, eke
    assert abs(sla_rms[1] - sla_rms[0]) / np.mean(sla_rms) < 0.25, sla_rms
    # Mesoscale amplitudes: SLA rms of a few to tens of cm, eddy speeds of tenths of m/s.
    assert 0.03 < np.mean(sla_rms) < 0.6 and 0.005 < np.mean(eke) < 0.2


# ---------------------------------------------------------------- caching and packaging


def test_cache_is_reused(atmosphere: tuple[Path, xr.Dataset], cache_dir: Path) -> None:
    path, _ = atmosphere
    stamp = (path / ".zmetadata").stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_demo_store("atmosphere", cache_dir=cache_dir, progress=False, **ATMOS)
    assert again == path and time.perf_counter() - start < 2.0  # generating takes tens of seconds
    assert (path / ".zmetadata").stat().st_mtime_ns == stamp
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".")] == []  # no partial stores left
    # Other settings map to other stores; the environment variable moves the cache.
    assert demo_store_path("atmosphere", cache_dir=cache_dir, **{**ATMOS, "seed": 1}) != path
    os.environ["EARTHCAST_CACHE_DIR"] = str(cache_dir / "elsewhere")
    try:
        assert demo_store_path("ocean", years=1.0).parent == cache_dir / "elsewhere"
    finally:
        del os.environ["EARTHCAST_CACHE_DIR"]


_BLOCK_JAX = "import sys; sys.modules['jax'] = None; sys.modules['jaxlib'] = None\n"


def test_imports_do_not_need_jax() -> None:
    code = _BLOCK_JAX + (
        "import earthcast, earthcast.datasets, earthcast.datasets.sim\n"
        "from earthcast.datasets.sim import held_suarez, qg_ocean, demo\n"
        "assert sys.modules['jax'] is None\n"
        "assert 'dinosaur' not in sys.modules and 'pyqg_jax' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_generation_without_jax_explains_the_extra(tmp_path: Path) -> None:
    code = _BLOCK_JAX + (
        "from pathlib import Path\n"
        "from earthcast.datasets.sim import ensure_demo_store\n"
        "try:\n"
        f"    ensure_demo_store('ocean', years=0.01, cache_dir=Path({str(tmp_path)!r}), progress=False)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'pip install "earthcast[sim]"' in result.stdout
    assert list(tmp_path.iterdir()) == []  # the failed generation left nothing behind


@pytest.mark.slow
def test_full_atmosphere_generation_within_budget(tmp_path: Path) -> None:
    """Spin-up plus 3 years of 6-hourly output in at most 5 minutes (2-core CPU budget of the issue)."""
    pytest.importorskip("dinosaur")
    start = time.perf_counter()
    path = ensure_demo_store("atmosphere", years=3.0, cache_dir=tmp_path, progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed <= 300, elapsed
    assert open_store(path).time.size == 3 * 365 * 4

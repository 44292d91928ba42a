"""The scoring pipeline end to end: Zarr stores on disk → `earthcast score` → netCDF vs float64 NumPy."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from dask.callbacks import Callback

from earthcast.commands.score import main as score_main
from earthcast.datasets.zarr_store import write_wb2_store
from earthcast.errors import OutputExistsError
from earthcast.grids import equiangular_grid
from earthcast.scoring.climatology import build_climatology
from earthcast.scoring.evaluate import score
from earthcast.scoring.inputs import align
from earthcast.scoring.seeps import seeps_pointwise

GRID = equiangular_grid(16, 8, with_poles=False)
LEVELS = [500, 850]
INITS = pd.date_range("2020-01-01", periods=6, freq="12h")
LEADS = pd.to_timedelta([0, 12, 24, 48], "h")
FIELDS = {
    "temperature": ("K", True),
    "u_component_of_wind": ("m s**-1", True),
    "v_component_of_wind": ("m s**-1", True),
    "2m_temperature": ("K", False),
    "total_precipitation_24hr": ("m", False),
}


def _dims(level: bool) -> tuple[str, ...]:
    return (*(("level",) if level else ()), "latitude", "longitude")


def _truth(seed: int = 0) -> xr.Dataset:
    times = pd.date_range("2019-12-01", "2020-01-10", freq="6h")
    rng = np.random.default_rng(seed)
    data = {}
    for name, (units, level) in FIELDS.items():
        shape = (times.size, *((len(LEVELS),) if level else ()), 8, 16)
        values = rng.gamma(0.5, 1e-3, size=shape) if name.startswith("total_prec") else rng.normal(size=shape)
        data[name] = (("time", *_dims(level)), values.astype(np.float32), {"units": units})
    coords = {"time": times, "level": LEVELS, "latitude": GRID.latitude, "longitude": GRID.longitude}
    return xr.Dataset(data, coords=coords)


def _forecast(truth: xr.Dataset, members: int = 0, seed: int = 1) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    valid = (INITS.values[:, None] + LEADS.values[None, :]).ravel()
    data = {}
    for name in FIELDS:
        base = truth[name].sel(time=valid).values.reshape(len(INITS), len(LEADS), *truth[name].shape[1:])
        lead_dims = ("time", "prediction_timedelta")
        if members:
            has_level = "level" in truth[name].dims
            base = np.expand_dims(base, 3 if has_level else 2)
            base = base + 0.5 * rng.normal(size=(*base.shape[:-3], members, *base.shape[-2:]))
            dims = (*lead_dims, *(("level",) if has_level else ()), "number", "latitude", "longitude")
        else:
            base = base + 0.7 * rng.normal(size=base.shape) + 0.2
            dims = (*lead_dims, *_dims("level" in truth[name].dims))
        if name.startswith("total_prec"):
            base = np.abs(base)
        data[name] = (dims, base.astype(np.float32), {"units": truth[name].attrs["units"]})
    coords = {"time": INITS, "prediction_timedelta": LEADS, "level": LEVELS}
    coords |= {"latitude": GRID.latitude, "longitude": GRID.longitude}
    if members:
        coords["number"] = np.arange(1, members + 1)
    return xr.Dataset(data, coords=coords)


def _climatology(truth: xr.Dataset) -> xr.Dataset:
    clim = build_climatology(truth, window=5)
    rng = np.random.default_rng(3)
    shape = (4, 366, 8, 16)
    dims = ("hour", "dayofyear", "latitude", "longitude")
    clim["total_precipitation_24hr_seeps_threshold"] = (
        dims,
        rng.uniform(2e-4, 2e-3, shape).astype(np.float32),
    )
    clim["total_precipitation_24hr_seeps_dry_fraction"] = (dims, rng.uniform(0, 1, shape).astype(np.float32))
    for name in clim.data_vars:
        clim[name].attrs.setdefault("units", "1")
    return clim


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scoring")
    truth = _truth()
    paths = {
        "truth": root / "truth.zarr",
        "forecast": root / "fc.zarr",
        "ens": root / "ens.zarr",
        "clim": root / "c.zarr",
    }
    write_wb2_store(truth, paths["truth"], chunks={"time": 16})
    chunks = {"time": 1, "prediction_timedelta": 1}
    write_wb2_store(_forecast(truth), paths["forecast"], chunks=chunks)
    write_wb2_store(_forecast(truth, members=4), paths["ens"], chunks=chunks)
    write_wb2_store(_climatology(truth), paths["clim"], chunks={"hour": 1})
    return paths


def _weights() -> np.ndarray:
    lat = np.deg2rad(GRID.latitude)
    bounds = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
    return np.repeat(np.diff(np.sin(bounds))[:, None], 16, axis=1)


def _area_mean(x: np.ndarray, region: str, skipna: bool = False) -> float:
    w = _weights() * ((np.abs(GRID.latitude) <= 20)[:, None] if region == "tropics" else 1.0)
    keep = (w > 0) & (~np.isnan(x) if skipna else True)
    return float(np.sum(w[keep] * x[keep]) / np.sum(w[keep]))


def _reference(
    truth: xr.Dataset, fc: xr.Dataset, clim: xr.Dataset, name: str, region: str, lead: int, level: int | None
):
    """Independent float64 loop over inits: mse, bias, mae, acc (and SEEPS for precipitation)."""
    per = {"mse": [], "bias": [], "mae": [], "acc": [], "seeps": []}
    for init in INITS:
        valid = pd.Timestamp(init + LEADS[lead])
        sel = {"level": level} if level is not None else {}
        o = truth[name].sel(time=valid, **sel).values.astype(np.float64)
        f = fc[name].sel(time=init, **sel).isel(prediction_timedelta=lead).values.astype(np.float64)
        c = clim[name].sel(hour=valid.hour, dayofyear=valid.day_of_year, **sel).values.astype(np.float64)
        per["mse"].append(_area_mean((f - o) ** 2, region))
        per["bias"].append(_area_mean(f - o, region))
        per["mae"].append(_area_mean(np.abs(f - o), region))
        fa, oa = f - c, o - c
        per["acc"].append(
            _area_mean(fa * oa, region) / np.sqrt(_area_mean(fa**2, region) * _area_mean(oa**2, region))
        )
        if name == "total_precipitation_24hr":
            wet = clim[f"{name}_seeps_threshold"].sel(hour=valid.hour, dayofyear=valid.day_of_year).values
            p1 = clim[f"{name}_seeps_dry_fraction"].mean(("hour", "dayofyear")).values
            per["seeps"].append(_area_mean(seeps_pointwise(f, o, wet, p1, 0.25), region, skipna=True))
    out = {k: np.mean(v) for k, v in per.items() if v}
    out["rmse"] = np.sqrt(out["mse"])
    return out


def test_round_trip_cli_matches_float64_numpy(stores: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "results.nc"
    argv = [
        "--forecast",
        str(stores["forecast"]),
        "--truth",
        str(stores["truth"]),
        "--climatology",
        str(stores["clim"]),
    ]
    argv += ["--out", str(out), "--regions", "global", "tropics", "--baselines", "persistence", "climatology"]
    assert score_main(argv) == 0
    res = xr.open_dataset(out)
    assert res["temperature"].dims == ("metric", "region", "lead_time", "level")
    assert res["2m_temperature"].dims == ("metric", "region", "lead_time")
    assert {"mse", "rmse", "acc", "bias", "mae", "seeps_24hr"} <= set(res.metric.values)
    assert res.lead_time.dtype == "timedelta64[ns]" and list(res.region.values) == ["global", "tropics"]
    truth, fc, clim = (
        xr.open_zarr(stores["truth"]),
        xr.open_zarr(stores["forecast"]),
        xr.open_zarr(stores["clim"]),
    )
    for name, region, lead in itertools.product(
        ["temperature", "2m_temperature", "total_precipitation_24hr"], ["global", "tropics"], [0, 3]
    ):
        level = 850 if name == "temperature" else None
        ref = _reference(truth, fc, clim, name, region, lead, level)
        got = res[name].sel(region=region).isel(lead_time=lead)
        if level is not None:
            got = got.sel(level=level)
        for metric in ("mse", "rmse", "bias", "mae", "acc"):
            assert float(got.sel(metric=metric)) == pytest.approx(ref[metric], rel=1e-6), (
                name,
                region,
                metric,
            )
        if "seeps" in ref:
            assert float(got.sel(metric="seeps_24hr")) == pytest.approx(ref["seeps"], rel=1e-6)
    # Wind vector: Δu² + Δv², area mean per init, then time mean.
    mse = []
    for init in INITS:
        valid = pd.Timestamp(init + LEADS[2])
        du, dv = (
            fc[c].sel(time=init, level=500).isel(prediction_timedelta=2).values.astype(float)
            - truth[c].sel(time=valid, level=500).values
            for c in ("u_component_of_wind", "v_component_of_wind")
        )
        mse.append(_area_mean(du**2 + dv**2, "global"))
    wv = res["wind_vector"].sel(region="global", level=500).isel(lead_time=2)
    assert float(wv.sel(metric="rmse")) == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-6)
    pers = xr.open_dataset(tmp_path / "results_persistence.nc")
    assert float(pers["2m_temperature"].sel(metric="mse", region="global").isel(lead_time=0)) == 0.0
    climres = xr.open_dataset(tmp_path / "results_climatology.nc")
    assert (
        climres.attrs["source"] == "climatology"
        and np.isfinite(climres["temperature"].sel(metric="rmse")).all()
    )
    with pytest.raises(OutputExistsError, match="already exist"):
        score_main(argv)


def test_ensemble_round_trip_crps_matches_double_loop(stores: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens.nc"
    assert (
        score_main(["--forecast", str(stores["ens"]), "--truth", str(stores["truth"]), "--out", str(out)])
        == 0
    )
    res = xr.open_dataset(out)
    assert res.attrs["ensemble_size"] == 4
    truth, ens = xr.open_zarr(stores["truth"]), xr.open_zarr(stores["ens"])
    crps, var, mse = [], [], []
    for init in INITS:
        valid = pd.Timestamp(init + LEADS[1])
        x = ens["2m_temperature"].sel(time=init).isel(prediction_timedelta=1).values.astype(float)
        y = truth["2m_temperature"].sel(time=valid).values.astype(float)
        skill = np.mean([np.abs(x[m] - y) for m in range(4)], axis=0)
        spread = sum(np.abs(x[i] - x[j]) for i in range(4) for j in range(4)) / 12
        crps.append(_area_mean(skill - 0.5 * spread, "global"))
        var.append(_area_mean(x.var(axis=0, ddof=1), "global"))
        mse.append(_area_mean((x.mean(axis=0) - y) ** 2, "global"))
    got = res["2m_temperature"].sel(region="global").isel(lead_time=1)
    assert float(got.sel(metric="crps")) == pytest.approx(np.mean(crps), rel=1e-6)
    assert float(got.sel(metric="spread_skill")) == pytest.approx(
        np.sqrt(np.mean(var) / np.mean(mse)), rel=1e-6
    )


def test_distributed_client_and_laziness_give_identical_results(stores: dict[str, Path]) -> None:
    from distributed import Client

    truth, fc = xr.open_zarr(stores["truth"]), xr.open_zarr(stores["forecast"])
    calls = []

    class Count(Callback):
        def _start(self, dsk: object) -> None:
            calls.append(1)

    with Count():
        align(fc, truth)
    assert not calls, "aligning must not compute any data"
    local = score(fc, truth, regions=["global", "europe"], block_bytes=40_000)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        remote = score(fc, truth, regions=["global", "europe"], block_bytes=40_000)
    in_memory = score(fc.load(), truth.load(), regions=["global", "europe"])
    xr.testing.assert_allclose(local, remote, rtol=1e-12)
    xr.testing.assert_allclose(local, in_memory, rtol=1e-12)


def test_bad_inputs_fail_with_the_fix() -> None:
    truth, fc = _truth(), _forecast(_truth())
    shifted = fc.assign_coords(latitude=fc.latitude + 5e-4)
    xr.testing.assert_allclose(score(shifted, truth), score(fc, truth))  # within 1e-3°: truth coords copied
    with pytest.raises(ValueError, match=r"grid does not match.*latitude differs by 0\.002.*Regrid"):
        score(fc.assign_coords(latitude=fc.latitude + 2e-3), truth)
    with pytest.raises(
        ValueError, match=r"lacks 3 of the forecast's valid times, e\.g\. 2020-01-04 12:00:00.*extend"
    ):
        score(fc, truth.sel(time=slice(None, "2020-01-04T06")))
    with pytest.raises(
        ValueError, match=r"Lead\(s\) \['0 days 15:00:00'\] are not multiples.*0 days 06:00:00"
    ):
        score(fc.assign_coords(prediction_timedelta=pd.to_timedelta([0, 15, 24, 48], "h")), truth)
    with pytest.raises(ValueError, match=r"Unknown variable\(s\) \['geopotential'\].*'temperature'"):
        score(fc, truth, variables=["geopotential"])
    with pytest.raises(ValueError, match=r"Unknown region\(s\) \['mordor'\]"):
        score(fc, truth, regions=["mordor"])
    with pytest.raises(ValueError, match=r"needs 'hour' and 'dayofyear'.*looks like a truth store"):
        score(fc, truth, truth)
    with pytest.raises(ValueError, match=r"Level\(s\) \[300\]"):
        score(fc, truth, levels=[300])


def test_weatherbench2_engine_without_the_package_says_how_to_install(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    try:
        import weatherbench2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("weatherbench2 is installed here; the parity test covers the engine")
    argv = [
        "--forecast",
        str(stores["forecast"]),
        "--truth",
        str(stores["truth"]),
        "--out",
        str(tmp_path / "r.nc"),
    ]
    with pytest.raises(
        ImportError, match=r"not on PyPI.*git\+https://github\.com/google-research/weatherbench2"
    ):
        score_main([*argv, "--engine", "weatherbench2"])


def test_parity_with_weatherbench2_metrics() -> None:
    pytest.importorskip(
        "weatherbench2",
        reason="weatherbench2 is not on PyPI and is not installed here (install it from its source checkout: "
        "pip install git+https://github.com/google-research/weatherbench2); parity runs only where it is",
    )
    from earthcast.scoring.wb2_engine import score_with_weatherbench2

    truth = _truth()
    clim = _climatology(truth)
    for fc in (_forecast(truth), _forecast(truth, members=4)):
        kwargs = {"regions": ["global", "tropics", "europe", "extra-tropics"]}
        ours = score(fc, truth, clim, **kwargs)
        theirs = score_with_weatherbench2(fc, truth, clim, **kwargs)
        for name in ours.data_vars:
            xr.testing.assert_allclose(ours[name], theirs[name].sel(metric=ours.metric), rtol=1e-6)

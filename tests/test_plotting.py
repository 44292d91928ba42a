"""earthcast.plotting and `earthcast plot`: real cartopy rendering with every network path blocked.

References are independent of the implementation: numbers are checked against hand-built fields (constant
offsets per valid time, pure zonal waves, hand-written sin-difference weights) and hand-computed metric
arithmetic. Coastline rendering is tested in test_plotting_coastlines.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.image import imread

from earthcast.commands.plot import MapsPlot, ScorecardPlot, ScoresPlot, SpectraPlot, parse_config
from earthcast.commands.plot import main as plot_main
from earthcast.datasets.store import open_store
from earthcast.grids import equiangular_grid
from earthcast.plotting import (
    forecast_truth_error_panels,
    forecast_truth_spectra,
    global_mean_series,
    metric_values,
    plot_scorecard,
    plot_scores,
    scorecard_table,
)

GRID = equiangular_grid(64, 32, with_poles=False)
INITS = pd.date_range("2020-01-01", periods=2, freq="12h")
LEADS = pd.to_timedelta([0, 1, 2, 3], unit="D")
TRUTH_TIMES = pd.date_range("2020-01-01", "2020-01-05", freq="12h")


pytestmark = pytest.mark.usefixtures("no_network")


def _stores(tmp_path: Path) -> tuple[Path, Path]:
    """Forecast/truth Zarr stores whose values encode init, lead and valid time.

    truth(t) = 250 + 10·day(t) + 20·(cos φ + 0.1 sin 2λ); forecast(init, lead) = truth(init + lead) + 0.5·lead[d].
    """
    lat, lon = GRID.latitude, GRID.longitude
    pattern = np.cos(np.deg2rad(lat))[:, None] + 0.1 * np.sin(np.deg2rad(2 * lon))[None, :]
    day = (TRUTH_TIMES - TRUTH_TIMES[0]) / pd.Timedelta(days=1)
    truth_values = np.stack([250 + 10 * d + 20 * pattern for d in day]).astype(np.float32)
    truth = xr.Dataset(
        {
            "2m_temperature": (("time", "latitude", "longitude"), truth_values, {"units": "K"}),
            "geopotential": (
                ("time", "level", "latitude", "longitude"),
                np.stack([truth_values * 10, truth_values * 20], axis=1),
                {"units": "m**2 s**-2"},
            ),
        },
        coords={"time": TRUTH_TIMES, "level": [500, 850], "latitude": lat, "longitude": lon},
    )
    fc = np.empty((INITS.size, LEADS.size, lat.size, lon.size), dtype=np.float32)
    for i, init in enumerate(INITS):
        for j, lead in enumerate(LEADS):
            k = TRUTH_TIMES.get_loc(init + lead)
            fc[i, j] = truth_values[k] + 0.5 * (lead / pd.Timedelta(days=1))
    forecast = xr.Dataset(
        {
            "2m_temperature": (("time", "prediction_timedelta", "latitude", "longitude"), fc, {"units": "K"}),
            "geopotential": (
                ("time", "prediction_timedelta", "level", "latitude", "longitude"),
                np.stack([fc * 10, fc * 20], axis=2),
                {"units": "m**2 s**-2"},
            ),
        },
        coords={
            "time": INITS,
            "prediction_timedelta": LEADS,
            "level": [500, 850],
            "latitude": lat,
            "longitude": lon,
        },
    )
    truth_path, forecast_path = tmp_path / "truth.zarr", tmp_path / "forecast.zarr"
    truth.to_zarr(truth_path, zarr_format=2, consolidated=True)
    forecast.to_zarr(forecast_path, zarr_format=2, consolidated=True)
    return forecast_path, truth_path


def test_map_panels_take_the_truth_at_the_valid_time(tmp_path: Path) -> None:
    forecast_path, truth_path = _stores(tmp_path)
    forecast, truth = open_store(forecast_path), open_store(truth_path)
    panels = forecast_truth_error_panels(forecast, truth, "2m_temperature", "2d", init=INITS[1])
    valid_day = (INITS[1] + pd.Timedelta(days=2) - TRUTH_TIMES[0]) / pd.Timedelta(days=1)  # 2.5
    pattern = 20 * (np.cos(np.deg2rad(GRID.latitude))[:, None] + 0.1 * np.sin(np.deg2rad(2 * GRID.longitude)))
    np.testing.assert_allclose(panels[1].field.values, 250 + 10 * valid_day + pattern, rtol=1e-6)
    np.testing.assert_allclose(panels[2].field.values, 1.0, atol=1e-4)  # 0.5 K per day of lead
    assert "valid 2020-01-03 12:00 UTC" in panels[0].title and "lead 2d" in panels[0].title
    assert panels[2].colorbar_label == "error [K]"
    with pytest.raises(ValueError, match="Lead 5d is not in the forecast"):
        forecast_truth_error_panels(forecast, truth, "2m_temperature", "5d")
    with pytest.raises(ValueError, match="pass one or more with --levels"):
        forecast_truth_error_panels(forecast, truth, "geopotential", "1d")


def _results(scale: float, acc: float) -> xr.Dataset:
    """WB2 results layout; mse = (scale·(1 + lead[d]))², acc = acc·0.9^lead[d], level factor 1 / 2."""
    leads = pd.to_timedelta(np.arange(0, 6), unit="D")
    days = np.arange(6.0)
    mse = (scale * (1 + days)) ** 2
    accs = acc * 0.9**days
    per_level = np.array([1.0, 2.0])
    z = np.stack([mse[:, None] * per_level, accs[:, None] * np.ones(2)])[
        :, None
    ]  # (metric, region, lead, level)
    t = np.stack([mse / 100, accs])[:, None]
    return xr.Dataset(
        {
            "geopotential": (("metric", "region", "lead_time", "level"), z, {"units": "m**2 s**-2"}),
            "2m_temperature": (("metric", "region", "lead_time"), t, {"units": "K"}),
        },
        coords={"metric": ["mse", "acc"], "region": ["global"], "lead_time": leads, "level": [500, 850]},
    )


def test_scores_read_from_netcdf_and_plot_sqrt_mse(tmp_path: Path) -> None:
    _results(40.0, 0.99).to_netcdf(tmp_path / "model.nc")
    _results(60.0, 0.9).to_netcdf(tmp_path / "persistence.nc")
    model = xr.open_dataset(tmp_path / "model.nc", decode_timedelta=True)
    rmse = metric_values(model, "geopotential", "rmse", level=850)
    np.testing.assert_allclose(rmse.values, np.sqrt(2.0) * 40.0 * (1 + np.arange(6)))
    with pytest.raises(ValueError, match="Metric 'crps' is not in the results file"):
        metric_values(model, "geopotential", "crps", level=500)
    with pytest.raises(ValueError, match="Region 'europe'"):
        metric_values(model, "2m_temperature", "acc", region="europe")

    fig = plot_scores(
        {"model": model, "persistence": xr.open_dataset(tmp_path / "persistence.nc", decode_timedelta=True)},
        "2m_temperature",
    )
    rmse_ax, acc_ax = fig.axes
    (model_line, persistence_line) = rmse_ax.get_lines()
    np.testing.assert_allclose(model_line.get_xdata(), np.arange(6.0))
    np.testing.assert_allclose(model_line.get_ydata(), 4.0 * (1 + np.arange(6)))
    np.testing.assert_allclose(persistence_line.get_ydata(), 6.0 * (1 + np.arange(6)))
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), 0.9 * 0.9 ** np.arange(6))
    assert rmse_ax.get_ylabel() == "rmse [K]"
    no_acc = plot_scores({"model": model.sel(metric=["mse"])}, "2m_temperature")  # scored without climatology
    assert [ax.get_ylabel() for ax in no_acc.axes] == ["rmse [K]"]
    with pytest.raises(ValueError, match="None of the metrics"):
        plot_scores({"model": model}, "2m_temperature", metrics=["crps"])

    rc = plot_main(
        [
            "scores",
            "--results",
            str(tmp_path / "model.nc"),
            "--baseline",
            f"persistence={tmp_path / 'persistence.nc'}",
            "--levels",
            "500",
            "--out",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["scores_2m_temperature.png", "scores_geopotential_500.png"]
    image = imread(tmp_path / "plots" / "scores_geopotential_500.png")
    assert image.shape[0] > 200 and image[..., :3].std() > 0.05


def test_scorecard_percentages_and_colours() -> None:
    model, reference = _results(40.0, 0.99), _results(50.0, 0.9)
    table = scorecard_table(model, reference, metric="rmse", leads=["1d", "3d"], levels=[500])
    assert list(table.columns) == ["1d", "3d"]
    assert list(table.index) == ["geopotential 500 hPa", "2m_temperature"]
    np.testing.assert_allclose(table.to_numpy(), 100.0 * (40.0 - 50.0) / 50.0)  # -20 %: better
    acc_table = scorecard_table(model, reference, metric="acc", leads=["1d"], levels=[500])
    np.testing.assert_allclose(acc_table.to_numpy(), 100.0 * (0.99 - 0.9) / 0.9)  # +10 %: also better

    for metric, tab, better in (("rmse", table, "+20.0%"), ("acc", acc_table, "+10.0%")):
        ax = plot_scorecard(tab, metric=metric).axes[0]
        rgba = ax.get_images()[0].to_rgba(ax.get_images()[0].get_array())
        assert (rgba[..., 2] > rgba[..., 0]).all(), f"{metric}: better cells must be blue"
        # the cell numbers read like the colour bar ("improvement over reference"): better is positive
        assert {t.get_text() for t in ax.texts} == {better}, metric
    worse = plot_scorecard(-table, metric="rmse").axes[0].get_images()[0]
    rgba = worse.to_rgba(worse.get_array())
    assert (rgba[..., 0] > rgba[..., 2]).all(), "worse cells must be red"
    with pytest.raises(ValueError, match="Lead 9d is not in the model results"):
        scorecard_table(model, reference, leads=["9d"])


def test_spectra_of_a_pure_zonal_wave(tmp_path: Path) -> None:
    lat, lon = GRID.latitude, GRID.longitude
    amplitude = 3.0
    wave = amplitude * np.cos(np.deg2rad(3 * lon))[None, :] * np.ones(lat.size)[:, None]
    times = pd.date_range("2020-01-01", periods=3, freq="D")
    truth = xr.Dataset(
        {"t": (("time", "latitude", "longitude"), np.stack([wave] * 3), {"units": "K"})},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )
    forecast = xr.Dataset(
        {
            "t": (
                ("time", "prediction_timedelta", "latitude", "longitude"),
                2 * np.stack([[wave, wave]]),
                {"units": "K"},
            )
        },
        coords={
            "time": times[:1],
            "prediction_timedelta": pd.to_timedelta([1, 2], unit="D"),
            "latitude": lat,
            "longitude": lon,
        },
    )
    spectra = forecast_truth_spectra(forecast, truth, "t", ["1d", "2d"])
    assert list(spectra) == ["truth", "lead 1d", "lead 2d"]
    # |F_3| = A/2, S_3 = 2·|F_3|²·2πR cos φ, averaged over latitudes; zero elsewhere.
    expected_k3 = 2 * (amplitude / 2) ** 2 * np.mean(2 * np.pi * 6_367_500.0 * np.cos(np.deg2rad(lat)))
    truth_s = spectra["truth"].values
    np.testing.assert_allclose(truth_s[3], expected_k3, rtol=1e-9)
    assert np.abs(np.delete(truth_s, 3)).max() < 1e-9 * expected_k3
    np.testing.assert_allclose(spectra["lead 2d"].values[3], 4 * expected_k3, rtol=1e-9)
    with pytest.raises(ValueError, match="truth lacks"):
        forecast_truth_spectra(forecast, truth.isel(time=slice(0, 2)), "t", ["2d"])


def test_global_mean_series_and_climatological_sigma() -> None:
    lat, lon = GRID.latitude, GRID.longitude
    times = pd.date_range("2020-12-30", periods=8, freq="12h")
    anomaly = np.array([0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 1.5, 0.0])
    # Hand-written WB2 cell-area weights: sin-difference of cell bounds with ±90° outer bounds.
    bounds = np.deg2rad(np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]]))
    weights = np.diff(np.sin(bounds))
    shape = np.sin(np.deg2rad(lat))[:, None] ** 2 + 0 * lon[None, :]
    shape_mean = float(np.sum(weights * shape[:, 0]) / weights.sum())
    # Climatology: constant field 280 + dayofyear/10 + hour/100 at each (hour, dayofyear).
    doy, hour = np.arange(1, 367), np.array([0, 12])
    clim_level = 280 + doy[None, :] / 10 + hour[:, None] / 100
    climatology = xr.Dataset(
        {
            "t": (
                ("hour", "dayofyear", "latitude", "longitude"),
                np.broadcast_to(clim_level[..., None, None], (2, 366, 32, 64)),
            )
        },
        coords={"hour": hour, "dayofyear": doy, "latitude": lat, "longitude": lon},
    )
    clim_at = 280 + times.day_of_year.values / 10 + times.hour.values / 100
    truth = xr.Dataset(
        {"t": (("time", "latitude", "longitude"), (clim_at + anomaly)[:, None, None] + shape[None])},
        coords={"time": times, "latitude": lat, "longitude": lon},
    )
    forecast = xr.Dataset(
        {"t": (("time", "prediction_timedelta", "latitude", "longitude"), truth["t"].values[None, :6] + 1.0)},
        coords={
            "time": times[:1],
            "prediction_timedelta": pd.to_timedelta(np.arange(6) * 12, unit="h"),
            "latitude": lat,
            "longitude": lon,
        },
    )
    series = global_mean_series(forecast, truth, "t", climatology=climatology)
    np.testing.assert_allclose(series.truth.values, clim_at[:6] + anomaly[:6] + shape_mean, rtol=1e-12)
    np.testing.assert_allclose(
        series.forecast.values, clim_at[:6] + anomaly[:6] + shape_mean + 1.0, rtol=1e-12
    )
    assert series.anomaly_based
    # The climatology field has no latitude shape, so the anomaly is anomaly + shape_mean: same std.
    np.testing.assert_allclose(series.sigma, np.std(anomaly[:6]), rtol=1e-9)
    with pytest.raises(ValueError, match="lacks the hour"):
        global_mean_series(forecast, truth, "t", climatology=climatology.isel(hour=0, drop=True))


def test_cli_writes_every_kind_of_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forecast_path, truth_path = _stores(tmp_path)
    _results(40.0, 0.99).to_netcdf(tmp_path / "model.nc")
    _results(50.0, 0.9).to_netcdf(tmp_path / "reference.nc")
    out = tmp_path / "plots"
    stores = ["--forecast", str(forecast_path), "--truth", str(truth_path)]
    assert (
        plot_main(["maps", *stores, "--variables", "2m_temperature", "--leads", "1d", "--out", str(out)]) == 0
    )
    assert (
        plot_main(
            [
                "spectra",
                *stores,
                "--variables",
                "geopotential",
                "--levels",
                "500",
                "--leads",
                "1d",
                "3d",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert plot_main(["series", *stores, "--variables", "2m_temperature", "--out", str(out)]) == 0
    card = [
        "scorecard",
        "--results",
        str(tmp_path / "model.nc"),
        "--reference",
        str(tmp_path / "reference.nc"),
    ]
    assert plot_main([*card, "--leads", "1d", "3d", "5d", "--out", str(out)]) == 0
    expected = {
        "maps_2m_temperature_1d.png",
        "spectra_geopotential_500.png",
        "series_2m_temperature.png",
        "scorecard_rmse.png",
        "scorecard_rmse.csv",
    }
    assert {p.name for p in out.iterdir()} == expected
    for name in expected - {"scorecard_rmse.csv"}:
        image = imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    csv = pd.read_csv(out / "scorecard_rmse.csv", index_col=0)
    np.testing.assert_allclose(csv.to_numpy(), -20.0, atol=1e-3)
    printed = capsys.readouterr().out
    assert str(out / "maps_2m_temperature_1d.png") in printed

    for kind in ([], ["maps"], ["scorecard"]):
        with pytest.raises(SystemExit) as help_exit:
            plot_main([*kind, "--help"])
        assert help_exit.value.code == 0
    capsys.readouterr()
    assert (
        plot_main(
            ["scores", "--results", str(tmp_path / "model.nc"), "--baseline", "oops", "--out", str(out)]
        )
        == 1
    )
    assert (
        plot_main(["maps", *stores, "--variables", "2m_temperature", "--leads", "9d", "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert "must be NAME=PATH" in err and "Lead 9d is not in the forecast" in err


def test_cli_options_are_the_config_dataclass_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Argparse spellings of earlier versions, jsonargparse's and a --config file give the same dataclass."""
    io = ["--forecast", "f.zarr", "--truth", "t.zarr"]
    maps = MapsPlot("f.zarr", "t.zarr", ("z", "t"), ("1d", "36h"), "p", levels=(500, 850), coastlines=False)
    assert parse_config(["maps", *io, "--variables", "z", "t", "--leads", "1d", "36h", "--levels", "500", "850",
                         "--no-coastlines", "--out", "p"]) == maps  # fmt: skip
    config = tmp_path / "maps.yaml"
    config.write_text("variables: [z, t]\nleads: [1d, 36h]\nlevels: [500, 850]\ncoastlines: false\nout: p\n")
    assert parse_config(["maps", "--config", str(config), *io]) == maps
    assert parse_config(["maps", *io, "--variables=[z, t]", "--leads", "[1d, 36h]", "--levels", "[500, 850]",
                         "--coastlines", "false", "--out", "p"]) == maps  # fmt: skip
    spectra = parse_config(["spectra", *io, "--variables", "z", "--leads", "1d", "--latitude-range", "-30", "30.5",
                            "--out", "p"])  # fmt: skip
    assert spectra == SpectraPlot("f.zarr", "t.zarr", ("z",), ("1d",), "p", latitude_range=(-30.0, 30.5))
    scores = parse_config(["scores", "--results", "m.nc", "--baseline", "a=a.nc", "--baseline", "b=b.nc",
                           "--out", "p"])  # fmt: skip
    assert scores == ScoresPlot("m.nc", "p", baseline=("a=a.nc", "b=b.nc"), metrics=("rmse", "acc"))
    card = parse_config(["scorecard", "--results", "m.nc", "--reference", "r.nc", "--reference-name", "hres",
                         "--out", "p"])  # fmt: skip
    assert card == ScorecardPlot("m.nc", "r.nc", "p", reference_name="hres")
    for argv in (["maps", *io, "--leads", "1d", "--out", "p"], ["maps", *io, "--variables", "z", "--leads", "1d",
                 "--out", "p", "--projection", "mercator"], ["pie"]):  # fmt: skip
        with pytest.raises(SystemExit) as bad:
            parse_config(argv)
        assert bad.value.code == 2, argv
    assert "variables" in capsys.readouterr().err

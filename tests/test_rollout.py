"""earthcast rollout: WB2 store layout, values against a manual loop, aggregates, ensembles, blow-ups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from rollout_helpers import make_checkpoint, manual_rollout, store_to_channels

from earthcast.commands.rollout import BLOWUP_EXIT, build_parser, main, parse_config
from earthcast.planners.inference import PlanSettings
from earthcast.rollout import RolloutConfig, parse_inits, run_rollout
from earthcast.scoring.spectrum import zonal_energy_spectrum
from earthcast.scoring.weights import latitude_weights

INITS = ["2020-01-02T00", "2020-01-02T12", "2020-01-03T00"]
CHANNELS = [("geopotential", 500), ("geopotential", 850), ("temperature", 500), ("2m_temperature", None)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_checkpoint(tmp_path_factory.mktemp("rollout"))


@pytest.fixture(scope="module")
def forecast(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store, ckpt = trained
    out = tmp_path_factory.mktemp("fc") / "forecast.zarr"
    code = main(
        ["--checkpoint", str(ckpt), "--data", str(store), "--inits", "2020-01-02T00:2020-01-03T00:12h", "--lead",
         "2d", "--out", str(out), "--batch_size", "2", "--aggregate_leads", "1d", "2d", "--progress", "false"]
    )  # fmt: skip
    assert code == 0
    return out


def test_store_layout_is_wb2_by_init(forecast: Path):
    group = zarr.open_group(forecast, mode="r")
    assert group.metadata.zarr_format == 2
    assert (forecast / ".zmetadata").exists()
    ds = xr.open_zarr(forecast, decode_timedelta=True)
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(ds["time"].values, np.array(INITS, dtype="datetime64[ns]"))
    leads = ds["prediction_timedelta"].values.astype("timedelta64[ns]")
    np.testing.assert_array_equal(leads, np.arange(1, 9) * np.timedelta64(6, "h"))
    assert ds["geopotential"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
    assert list(ds["level"].values) == [500, 850]
    for name, units in (("geopotential", "m**2 s**-2"), ("temperature", "K"), ("2m_temperature", "K")):
        assert ds[name].dtype == np.float32
        assert ds[name].attrs["units"] == units
        chunks = ds[name].encoding["chunks"]
        assert chunks[:2] == (1, 1) and chunks[-2:] == (32, 64)
    # temperature was trained at 500 hPa only: 850 hPa stays NaN
    assert ds["temperature"].sel(level=850).isnull().all()
    identity = json.loads(ds.attrs["earthcast_rollout"])
    assert identity["lead_steps"] == 8 and identity["inits"][0] == "2020-01-02T00:00:00"


def test_values_equal_an_independent_manual_loop(trained, forecast: Path):
    store, ckpt = trained
    expected = manual_rollout(ckpt, store, INITS, 8)
    got = store_to_channels(xr.open_zarr(forecast, decode_timedelta=True), CHANNELS)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-3)
    # the model does something: leads differ from the initial state
    assert np.abs(got[:, -1] - got[:, 0]).max() > 0


def test_aggregates_match_numpy_on_the_written_store(forecast: Path):
    ds = xr.open_zarr(forecast, decode_timedelta=True).load()
    nc = forecast.with_name("forecast_aggregates.nc")
    w = latitude_weights(ds["latitude"].values)[:, None]
    for name in ("geopotential", "2m_temperature"):
        x = ds[name].values.astype(np.float64)
        if name == "geopotential":
            x = x[:, :, :]  # (time, lead, level, lat, lon)
        gm = xr.open_dataset(nc, group="global_mean")[name].values
        ref = (x * w).sum((-2, -1)) / (w.sum() * x.shape[-1])
        np.testing.assert_allclose(gm, ref, rtol=1e-6)
        zm = xr.open_dataset(nc, group="zonal_mean")[name].values
        np.testing.assert_allclose(zm, x.mean(-1).mean(0), rtol=1e-6)
        tm = xr.open_dataset(nc, group="time_mean")[name].values
        np.testing.assert_allclose(tm, x.mean((0, 1)), rtol=1e-6)
        ts = xr.open_dataset(nc, group="time_std")[name].values
        np.testing.assert_allclose(ts, x.std((0, 1)), rtol=1e-4, atol=1e-6 * np.abs(x).max())
        spectrum = zonal_energy_spectrum(ds[name].astype(np.float64))
        at_leads = xr.open_dataset(nc, group="zonal_energy_spectrum")[name]
        ref_leads = spectrum.sel(prediction_timedelta=at_leads["prediction_timedelta"].values).mean("time")
        np.testing.assert_allclose(at_leads.values, ref_leads.values, rtol=1e-6)
        mean = xr.open_dataset(nc, group="zonal_energy_spectrum_mean")[name].values
        np.testing.assert_allclose(mean, spectrum.mean(("time", "prediction_timedelta")).values, rtol=1e-6)
    leads = xr.open_dataset(nc, group="zonal_energy_spectrum")["prediction_timedelta"].values
    np.testing.assert_array_equal(leads.astype("timedelta64[h]").astype(int), [24, 48])


def test_rerun_of_a_finished_run_is_a_no_op(trained, forecast: Path, capsys):
    """The same run in the argparse spellings of earlier versions (the fixture used the new ones)."""
    store, ckpt = trained
    before = {p: p.stat().st_mtime_ns for p in forecast.rglob("*") if p.is_file()}
    code = main(
        ["--ckpt", str(ckpt), "--data", str(store), "--inits", "2020-01-02T00/2020-01-03T00/12h", "--lead", "48h",
         "--out", str(forecast), "--batch-size", "2", "--aggregate-leads", "24h", "2d", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "already holds this complete run" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in forecast.rglob("*") if p.is_file()}


def test_ensemble_members_on_number_dim(trained, tmp_path: Path):
    store, ckpt = trained
    out = tmp_path / "ens.zarr"
    cfg = RolloutConfig(
        str(ckpt), str(store), "2020-01-02T00:2020-01-02T12:12h", "12h", str(out), members=3,
        perturbation=0.1, batch_size=2, progress=False,
    )  # fmt: skip
    result = run_rollout(cfg)
    assert result.status == "complete" and not result.blowups
    ds = xr.open_zarr(out, decode_timedelta=True)
    assert ds["geopotential"].dims == (
        "time",
        "number",
        "prediction_timedelta",
        "level",
        "latitude",
        "longitude",
    )
    np.testing.assert_array_equal(ds["number"].values, [0, 1, 2])
    z = ds["geopotential"].values
    # member 0 is the unperturbed control: it equals the deterministic forecast
    expected = manual_rollout(ckpt, store, INITS[:2], 2)[:, :, :2]
    np.testing.assert_allclose(z[:, 0], expected, rtol=2e-5, atol=1e-3)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(z[:, a] - z[:, b]).max() > 1.0
    series = xr.open_dataset(out.with_name("ens_aggregates.nc"), group="global_mean")
    assert series["geopotential"].dims == ("time", "number", "prediction_timedelta", "level")


def _exploding_checkpoint(ckpt: Path, path: Path) -> Path:
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    key = next(k for k in raw["state_dict"] if k.endswith("readout.bias") and "ema" not in k)
    raw["state_dict"][key][2] += 1.0  # temperature_500 drifts by its tendency scale (normalised) per step
    torch.save(raw, path)
    return path


def test_blowup_reports_step_channel_location_and_keeps_written_leads(trained, tmp_path: Path, capsys):
    store, ckpt = trained
    bad = _exploding_checkpoint(ckpt, tmp_path / "bad.ckpt")
    out = tmp_path / "blow.zarr"
    # independent reference: normalised manual rollout; the bound sits just above the lead-1 maximum, so the
    # drifting channel crosses it a few leads later
    module_stats = torch.load(bad, weights_only=False)["earthcast"]["stats"]
    mean = np.asarray(module_stats["state_mean"])[:, None, None]
    std = np.asarray(module_stats["state_std"])[:, None, None]
    z = (manual_rollout(bad, store, INITS[:1], 8)[0] - mean) / std
    bound = float(np.abs(z[0]).max()) * 1.001
    code = main(
        ["--ckpt", str(bad), "--data", str(store), "--inits", "2020-01-02T00", "--lead", "2d", "--out", str(out),
         "--blowup_bound", repr(bound), "--progress=false"]
    )  # fmt: skip
    assert code == BLOWUP_EXIT
    over = np.abs(z) > bound
    k = int(np.nonzero(over.any((1, 2, 3)))[0][0])
    c, i, j = (int(v[0]) for v in np.nonzero(over[k]))
    err = capsys.readouterr().err
    names = ["geopotential_500", "geopotential_850", "temperature_500", "2m_temperature"]
    ds = xr.open_zarr(out, decode_timedelta=True)
    lat, lon = ds["latitude"].values[i], ds["longitude"].values[j]
    assert f"'{names[c]}' at step {k + 1} (lead {6 * (k + 1)} h)" in err
    assert f"latitude {lat:.4g}, longitude {lon:.4g}" in err
    got = store_to_channels(ds, CHANNELS)[0]
    assert 0 < k < 8
    assert np.isfinite(got[:k]).all() and np.isnan(got[k:]).all()
    np.testing.assert_allclose(got[:k], manual_rollout(bad, store, INITS[:1], k)[0], rtol=2e-5, atol=1e-3)


def test_nan_initial_condition_stops_only_that_init(trained, tmp_path: Path):
    store, ckpt = trained
    copy = tmp_path / "truth_nan.zarr"
    ds = xr.open_zarr(store).load()
    ds["temperature"].loc[{"time": "2020-01-02T12", "level": 500}] = np.nan
    ds.to_zarr(copy, zarr_format=2, consolidated=True)
    cfg = RolloutConfig(
        str(ckpt), str(copy), "2020-01-02T00:2020-01-03T00:12h", "12h", str(tmp_path / "f.zarr"),
        batch_size=3, progress=False,
    )  # fmt: skip
    result = run_rollout(cfg)
    assert [(b.init_time, b.step, b.channel, b.reason) for b in result.blowups] == [
        ("2020-01-02T12:00:00", 0, "temperature_500", "NaN")
    ]
    out = xr.open_zarr(tmp_path / "f.zarr", decode_timedelta=True)["geopotential"].values
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_bad_inputs_give_clear_errors(trained, tmp_path: Path):
    store, ckpt = trained

    def run(**kw) -> None:
        args = dict(checkpoint=str(ckpt), data=str(store), inits="2020-01-02T00", lead="1d",
                    out=str(tmp_path / "x.zarr"), progress=False) | kw  # fmt: skip
        run_rollout(RolloutConfig(**args))

    with pytest.raises(
        ValueError, match=r"not a multiple of the model step 0 days 06:00:00: use .*06:00:00 or"
    ):
        run(lead="7h")
    with pytest.raises(ValueError, match=r"lacks 2 time.*2020-01-30T00:00:00.*choose --inits inside"):
        run(inits="2020-01-30T00")
    with pytest.raises(ValueError, match=r"lacks 1 time.*2019-12-31T18"):
        run(inits="2020-01-01T00")  # the second input step is before the store starts
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        run(checkpoint=str(corrupt))
    (tmp_path / "other.zarr").mkdir()
    with pytest.raises(FileExistsError, match="not an earthcast rollout store"):
        run(out=str(tmp_path / "other.zarr"))
    with pytest.raises(ValueError, match="beyond --lead"):
        run(aggregate_leads=("2d",))


def test_parse_inits_accepts_colon_slash_and_list_forms():
    expected = np.array(["2020-01-01T00", "2020-01-01T12", "2020-01-02T00"], dtype="datetime64[ns]")
    for spec in (
        "2020-01-01T00:2020-01-02T00:12h",
        "2020-01-01T00:00:2020-01-02T00:00:12h",
        "2020-01-01/2020-01-02/12h",
        "2020-01-02T00,2020-01-01T00,2020-01-01T12",
    ):
        np.testing.assert_array_equal(parse_inits(spec).values, expected, err_msg=spec)
    assert len(parse_inits("2020-01-01T00:2020-12-31T12:12h")) == 732  # the WB2 2020 test set
    with pytest.raises(ValueError, match=r"END .* is before START"):
        parse_inits("2020-02-01:2020-01-01:12h")
    with pytest.raises(ValueError, match="no FREQ"):
        parse_inits("2020-01-01:2020-01-05")
    # calendar months: MS is a month start (pandas' spelling), ms a millisecond and refused as a FREQ
    months = parse_inits("2018-11-01/2019-02-01/1MS")
    assert [t.strftime("%Y-%m-%d") for t in months] == [
        "2018-11-01",
        "2018-12-01",
        "2019-01-01",
        "2019-02-01",
    ]
    assert parse_inits("2018-11-01:2019-02-01:monthly").equals(months)
    with pytest.raises(ValueError, match="capital MS"):
        parse_inits("2018-11-01/2019-02-01/1ms")


REQUIRED = ["--data", "d.zarr", "--inits", "2020-01-02T00", "--lead", "2d", "--out", "f.zarr"]


def test_cli_spellings_old_new_and_config_file_give_one_config(tmp_path: Path):
    expected = RolloutConfig(
        checkpoint="c.ckpt", data="d.zarr", inits="2020-01-02T00", lead="2d", out="f.zarr", members=3,
        perturbation=0.2, perturb_control=True, batch_size=2, aggregate_leads=("1d", "2d"),
        blowup_bound=float("inf"), progress=False, overwrite=True,
    )  # fmt: skip
    old = ["--ckpt", "c.ckpt", *REQUIRED, "--members", "3", "--perturbation", "0.2", "--perturb-control",
           "--batch-size", "2", "--aggregate-leads", "1d", "2d", "--blowup-bound", "inf", "--no-progress",
           "--overwrite"]  # fmt: skip
    new = ["--checkpoint", "c.ckpt", *REQUIRED, "--members=3", "--perturbation", "0.2", "--perturb_control",
           "true", "--batch_size", "2", "--aggregate_leads", "[1d, 2d]", "--blowup_bound", ".inf", "--progress",
           "false", "--overwrite=true"]  # fmt: skip
    config = tmp_path / "rollout.yaml"
    config.write_text(
        "checkpoint: c.ckpt\nmembers: 5\nperturbation: 0.2\nperturb_control: true\nbatch_size: 2\n"
        "aggregate_leads: [1d, 2d]\nblowup_bound: .inf\nprogress: false\noverwrite: true\n"
    )
    from_file = ["--config", str(config), *REQUIRED, "--members", "3"]  # later options override the file
    for argv in (old, new, from_file):
        assert parse_config(argv) == expected, argv
    defaults = parse_config(["--checkpoint", "c.ckpt", *REQUIRED])
    assert defaults == RolloutConfig(checkpoint="c.ckpt", data="d.zarr", inits="2020-01-02T00", lead="2d",
                                     out="f.zarr")  # fmt: skip
    assert defaults.progress and defaults.planner is None


def test_cli_planner_options_old_and_new(capsys):
    plan = PlanSettings("spectrum", horizon=2, beam_width=3, aggregator="top_m", top_m=2)
    old = ["--planner", "p.ckpt", *REQUIRED, "--critic", "spectrum", "--horizon", "2", "--beam-width", "3",
           "--aggregator", "top_m", "--top-m", "2"]  # fmt: skip
    new = ["--checkpoint", "p.ckpt", *REQUIRED, "--planner.critic", "spectrum", "--planner.horizon", "2",
           "--planner.beam_width", "3", "--planner.aggregator", "top_m", "--planner.top_m", "2"]  # fmt: skip
    for argv in (old, new):
        assert parse_config(argv).planner == plan, argv
    bare = parse_config(["--checkpoint", "p.ckpt", *REQUIRED, "--planner"])
    assert bare.checkpoint == "p.ckpt" and bare.planner == PlanSettings()
    for argv, message in [
        (["--ckpt", "c.ckpt", "--planner", "p.ckpt", *REQUIRED], "not allowed with argument --ckpt"),
        (["--checkpoint", "c.ckpt", *REQUIRED, "--planner.critic", "mse"], "unknown critic 'mse'"),
        (["--checkpoint", "c.ckpt", *REQUIRED, "--batch-size", "two"], "batch_size"),
        (REQUIRED, "checkpoint"),
    ]:
        with pytest.raises(SystemExit) as bad:
            parse_config(argv)
        assert bad.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_help_documents_every_field():
    """Each RolloutConfig field is an option whose help comes from the docstring (not just its type)."""
    import dataclasses

    text = " ".join(build_parser().format_help().split())
    for field in dataclasses.fields(RolloutConfig):
        option = f"--{field.name} "
        assert option in text, field.name
        after = text.split(option, 1)[1].split(" ", 1)[1]  # past the metavar (or {true,false})
        assert not after.startswith("(type:") and not after.startswith("(required"), field.name

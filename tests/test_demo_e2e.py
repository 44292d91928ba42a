"""End to end through the command line only, on a synthetic store (CPU, ~50-80 s on 2 shared cores).

1. ``earthcast demo`` with short settings: the report exists, its headline RMSE equals a float64 NumPy
   recomputation from the written forecast and truth stores (hand-written WB2 sin-difference weights), the
   PNGs exist, and a rerun reuses every finished stage (checkpoint untouched, rollouts already complete).
2. The §6 chain as separate commands with the demo's checkpoint: ``earthcast rollout`` → ``earthcast score``
   → ``earthcast plot`` → ``notebooks/wb2_scoring.ipynb`` pointed at those stores by its environment variables.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from nbclient import NotebookClient

from earthcast.cli import main as earthcast
from earthcast.commands.demo import DemoConfig, parse_config
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "wb2_scoring.ipynb"
MICRO = {
    "widths": [8, 16],
    "core": {"width": 16, "pattern": "AM", "heads": 2, "headdim": 8, "d_state": 8, "backend": "reference"},
}
DEMO_ARGS = ["--max_steps", "3", "--skill_inits", "2", "--skill_lead", "5d", "--year_lead", "5d"]


def test_demo_options_are_demo_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """Earlier argparse spellings and jsonargparse's give one DemoConfig; --config stacks training configs."""
    expected = DemoConfig(out="o", config=("a.yaml", "b.yaml"), max_steps=6, skill_inits=2, skill_lead="5d",
                          batch_size=3, retrain=True)  # fmt: skip
    old = ["--out", "o", "--config", "a.yaml", "--config", "b.yaml", "--max-steps", "3", "--skill-inits", "2",
           "--skill-lead", "5d", "--batch-size", "3", "--retrain", "--max-steps", "6"]  # fmt: skip
    new = ["--out=o", "--config", "[a.yaml, b.yaml]", "--max_steps", "6", "--skill_inits", "2", "--skill_lead",
           "5d", "--batch_size", "3", "--retrain", "true"]  # fmt: skip
    assert parse_config(old) == expected and parse_config(new) == expected
    assert parse_config([]) == DemoConfig() and DemoConfig().config is None
    with pytest.raises(SystemExit) as bad:
        parse_config(["--skill-inits", "many"])
    assert bad.value.code == 2 and "skill_inits" in capsys.readouterr().err


def _weights(lat: np.ndarray) -> np.ndarray:
    """WB2 cell-area weights (sin-difference of cell edges, poles at ±90°), normalised to mean 1."""
    edges = np.deg2rad(np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]]))
    w = np.diff(np.sin(edges))
    return w / w.mean()


def _rmse(forecast: xr.DataArray, truth: xr.DataArray, lead: pd.Timedelta) -> float:
    """WB2 RMSE at one lead: sqrt of the init-mean of the area-weighted spatial-mean squared error."""
    inits = pd.DatetimeIndex(forecast["time"].values)
    f = forecast.sel(prediction_timedelta=lead).values.astype(np.float64)
    o = truth.sel(time=inits + lead).values.astype(np.float64)
    w = _weights(forecast["latitude"].values)[:, None]
    return float(np.sqrt(np.mean([np.mean(w * (a - b) ** 2) for a, b in zip(f, o)])))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo_e2e")
    store = root / "truth.zarr"
    times = pd.date_range("2017-01-01", "2018-02-28T18", freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500, 850))
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "val_check_interval": 3, "limit_val_batches": 1,
            "num_sanity_val_steps": 0, "log_every_n_steps": 1, "enable_model_summary": False,
        },
        "model": {"model": "tritoncast", "size": "tiny", "model_settings": MICRO, "lr": 1e-3},
        "data": {
            "store": str(store),
            "variables": {"geopotential": [500, 850], "temperature": [500, 850], "2m_temperature": None},
            "static": ["land_sea_mask", "latitude"], "forcings": ["hour_of_day", "toa_insolation"],
            "n_input": 1, "n_target": 1, "step": "6h", "batch_size": 2,
            "train": ["2017-01-01", "2017-11-30T18"], "val": ["2017-12-01", "2017-12-31T18"],
            "test": ["2018-01-01", "2018-02-28T18"], "stats_cache_dir": str(root / "stats"),
            "block_steps": 32, "shuffle_buffer": 16,
        },
    }  # fmt: skip
    (root / "micro.yaml").write_text(yaml.safe_dump(config))
    out = root / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--config",
        str(root / "micro.yaml"),
        "--store",
        str(store),
        *DEMO_ARGS,
    ]
    assert earthcast(argv) == 0
    stages = json.loads((out / "stages.json").read_text())
    ckpt = Path(stages["train"]["checkpoint"])
    first = {"stages": stages, "ckpt_mtime": ckpt.stat().st_mtime}
    (root / "first_run.json").write_text(json.dumps(first))
    return {"root": root, "store": store, "out": out, "argv": argv, "ckpt": ckpt}  # type: ignore[dict-item]


def _report_value(report: str, field: str, source: str, lead: str) -> float:
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| field | forecast |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in lines if re.match(rf"\| {re.escape(field)} \| {source} \|", line))
    return float([c.strip() for c in row.strip("|").split("|")][columns.index(lead)])


def test_demo_report_numbers_match_a_float64_recomputation(demo: dict) -> None:
    out, store = demo["out"], demo["store"]
    report = (out / "report.md").read_text()
    forecast = xr.open_zarr(out / "skill.zarr", decode_timedelta=True)
    truth = xr.open_zarr(store)
    assert forecast.sizes["time"] == 2 and forecast.sizes["prediction_timedelta"] == 20
    for variable, level, field in [
        ("geopotential", 500, "geopotential 500 hPa"),
        ("2m_temperature", None, "2m_temperature"),
    ]:
        fc, tr = forecast[variable], truth[variable]
        if level is not None:
            fc, tr = fc.sel(level=level), tr.sel(level=level)
        for lead in ("1d", "5d"):
            expected = _rmse(fc, tr, pd.Timedelta(lead))
            assert _report_value(report, field, "model", lead) == pytest.approx(expected, rel=1e-3)
        persistence = _rmse(fc * 0 + tr.sel(time=forecast["time"]).values[:, None], tr, pd.Timedelta("1d"))
        assert _report_value(report, field, "persistence", "1d") == pytest.approx(persistence, rel=1e-3)
    assert "| geopotential 500 hPa | yes |" in report  # the 5-day run is NaN-free
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / png).is_file() and (out / png).stat().st_size > 5000, png
    names = {p.name for p in (out / "plots").glob("*.png")}
    for name in ("maps_geopotential_500_1d.png", "maps_geopotential_500_5d.png", "scores_geopotential_500.png",
                 "year_spectra_geopotential_500.png", "series_geopotential_500.png", "scorecard_rmse.png"):  # fmt: skip
        assert name in names


def test_demo_drift_matches_a_float64_recomputation(demo: dict) -> None:
    """Drift of the year run = (forecast − truth) global mean over the run's final 30 days (here: all of its
    5 days that the truth covers), over the std of the truth's global-mean anomaly from the climatology."""
    out = demo["out"]
    fc = xr.open_zarr(out / "year.zarr", decode_timedelta=True)["geopotential"].sel(level=500).isel(time=0)
    truth = xr.open_zarr(demo["store"])["geopotential"].sel(level=500)
    clim = xr.open_zarr(out / "climatology.zarr")["geopotential"].sel(level=500)
    w = _weights(fc["latitude"].values)[:, None]
    valid = pd.Timestamp(fc["time"].values) + pd.to_timedelta(fc["prediction_timedelta"].values)
    f_mean = np.mean(w * fc.values.astype(np.float64), axis=(-2, -1))
    t_mean = np.mean(w * truth.sel(time=valid).values.astype(np.float64), axis=(-2, -1))
    c = np.stack([clim.sel(hour=t.hour, dayofyear=t.day_of_year).values.astype(np.float64) for t in valid])
    sigma = np.std(t_mean - np.mean(w * c, axis=(-2, -1)))
    expected = (f_mean.mean() - t_mean.mean()) / sigma
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| geopotential 500 hPa | yes |"))
    assert float(row.split("|")[3]) == pytest.approx(expected, abs=0.006)


def test_demo_rerun_reuses_finished_stages(demo: dict, capsys: pytest.CaptureFixture[str]) -> None:
    first = json.loads((demo["root"] / "first_run.json").read_text())
    capsys.readouterr()
    assert earthcast(demo["argv"]) == 0
    printed = capsys.readouterr().out
    for stage in ("train", "climatology", "score", "plots"):
        assert f"[demo] {stage}: reused" in printed, stage
    assert demo["ckpt"].stat().st_mtime == first["ckpt_mtime"]
    stages = json.loads((demo["out"] / "stages.json").read_text())
    assert stages["train"] == first["stages"]["train"]
    assert stages["rollout"]["seconds"] < first["stages"]["rollout"]["seconds"] + 5  # already complete
    assert "report: " in printed and "geopotential 500 hPa RMSE at 1d" in printed


def test_cli_chain_rollout_score_plot_notebook(demo: dict) -> None:
    chain, store = demo["root"] / "chain", str(demo["store"])
    clim = str(demo["out"] / "climatology.zarr")
    forecast = chain / "forecast.zarr"
    assert earthcast(["rollout", "--checkpoint", str(demo["ckpt"]), "--data", store, "--inits",
                      "2018-01-02T00:2018-01-04T00:24h", "--lead", "5d", "--out", str(forecast), "--progress=false"]) == 0  # fmt: skip
    results = chain / "results.nc"
    assert earthcast(["score", "--forecast", str(forecast), "--truth", store, "--climatology", clim,
                      "--out", str(results), "--baselines", "persistence"]) == 0  # fmt: skip
    plots = chain / "plots"
    assert earthcast(["plot", "scores", "--results", str(results), "--baseline",
                      f"persistence={chain / 'results_persistence.nc'}", "--out", str(plots)]) == 0  # fmt: skip
    assert earthcast(["plot", "maps", "--forecast", str(forecast), "--truth", store, "--variables",
                      "geopotential", "--levels", "500", "--leads", "1d", "--out", str(plots)]) == 0  # fmt: skip
    assert (plots / "scores_geopotential_500.png").is_file()
    assert (plots / "maps_geopotential_500_1d.png").is_file()

    scored = xr.open_dataset(results, decode_timedelta=True)
    fc = xr.open_zarr(forecast, decode_timedelta=True)["geopotential"].sel(level=500)
    tr = xr.open_zarr(store)["geopotential"].sel(level=500)
    got = scored["geopotential"].sel(metric="rmse", region="global", level=500, lead_time=pd.Timedelta("3d"))
    assert float(got) == pytest.approx(_rmse(fc, tr, pd.Timedelta("3d")), rel=1e-5)

    nb_out = chain / "notebook"
    env = {"EARTHCAST_NB_FORECAST": str(forecast), "EARTHCAST_NB_TRUTH": store,
           "EARTHCAST_NB_CLIMATOLOGY": clim, "EARTHCAST_NB_OUT": str(nb_out)}  # fmt: skip
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(notebook, kernel_name="python3", timeout=240,
                       resources={"metadata": {"path": str(chain)}}).execute()  # fmt: skip
    finally:
        mp.undo()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert not (nb_out / "forecast.zarr").exists()  # it scored our stores, not its synthetic example
    from_nb = xr.open_dataset(nb_out / "results_forecast.nc", decode_timedelta=True)
    at = {"metric": "rmse", "region": "global", "level": 500}
    np.testing.assert_allclose(
        from_nb["geopotential"].sel(at).values, scored["geopotential"].sel(at).values, rtol=1e-6
    )
    assert (nb_out / "scorecard_rmse.png").is_file()
    assert os.path.getsize(nb_out / "plots" / "maps_geopotential_500_5d.png") > 5000


def test_demo_rerun_with_changed_inputs_runs_them_again(
    demo: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed --max_steps (or config, or store) must not reuse the old checkpoint and its scores: training
    runs again in its own folder, the rollouts are replaced, scores and plots follow; the climatology, which
    depends only on the truth, is reused. (Last in this file: it changes the demo folder.)"""
    argv = [*demo["argv"], "--max-steps", "6"]  # earlier spelling; the later value wins (checkpoint every 3)
    assert earthcast(argv) == 0
    printed = capsys.readouterr().out
    assert "[demo] train … (its inputs changed since the earlier run)" in printed
    assert "[demo] climatology: reused" in printed
    for stage in ("score", "plots"):
        assert f"[demo] {stage}: reused" not in printed, stage
    stages = json.loads((demo["out"] / "stages.json").read_text())
    ckpt = Path(stages["train"]["checkpoint"])
    assert (
        ckpt != demo["ckpt"] and demo["ckpt"].is_file()
    )  # the earlier run's checkpoint is kept, not resumed
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 6
    assert xr.open_zarr(demo["out"] / "skill.zarr").attrs["checkpoint"] == str(ckpt.absolute())

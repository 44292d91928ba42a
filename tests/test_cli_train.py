"""The training CLI end to end on the CPU: fit/validate/test/predict through ``earthcast.cli.main`` on a
synthetic Zarr store on disk, resume from ``last.ckpt``, self-describing checkpoints, ``config check``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import earthcast
from earthcast.cli import main
from earthcast.commands.config import Unreachable, _with_timeout
from earthcast.commands.train import EarthcastCLI
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import equiangular_grid
from earthcast.training import ForecastModule

GRID = equiangular_grid(32, 16, with_poles=False)
MICRO = {
    "widths": [8, 16, 16],
    "core": {"width": 32, "pattern": "AMF", "heads": 2, "headdim": 16, "d_state": 16, "backend": "reference"},
}
DATA = {
    "variables": {"geopotential": [500], "temperature": [500], "2m_temperature": None},
    "static": ["land_sea_mask", "latitude"],
    "forcings": ["hour_of_day"],
    "n_target": 1,
    "batch_size": 4,
    "train": ["2020-01-01", "2020-01-20T18"],
    "val": ["2020-01-21", "2020-01-25T18"],
    "test": ["2020-01-26", "2020-01-30T18"],
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    times = pd.date_range("2020-01-01", "2020-01-30T18", freq="6h")
    write_synthetic_store(root / "truth.zarr", GRID, times, levels=(500,))
    write_synthetic_store(root / "other.zarr", GRID, times, levels=(500, 850), seed=1)
    return {"root": root, "truth": root / "truth.zarr", "other": root / "other.zarr"}


def write_config(
    path: Path, store: Path, root: Path, *, data: dict | None = None, model: dict | None = None
) -> str:
    config = {
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 1,
            "limit_train_batches": 3,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "limit_predict_batches": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            "default_root_dir": str(root),
        },
        "model": {"model": "tritoncast", "size": "tiny", "model_settings": MICRO, "warmup_steps": 2}
        | {"total_steps": 6}
        | (model or {}),
        "data": {"store": str(store), "stats_cache_dir": str(path.parent / "stats")} | DATA | (data or {}),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _ckpt(root: Path) -> dict:
    return torch.load(root / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def runs(stores: dict[str, Path]) -> dict[str, Path]:
    """An uninterrupted 2-epoch fit, and a 1-epoch fit resumed with ``--ckpt_path last`` to 2 epochs."""
    root = stores["root"]
    whole = write_config(root / "whole.yaml", stores["truth"], root / "whole")
    assert main(["fit", "--config", whole, "--trainer.max_epochs", "2"]) == 0
    parts = write_config(root / "parts.yaml", stores["truth"], root / "parts")
    assert main(["fit", "--config", parts]) == 0
    first = _ckpt(root / "parts")
    assert (first["global_step"], first["epoch"]) == (3, 0)
    assert main(["fit", "--config", parts, "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    return {"whole": root / "whole", "parts": root / "parts", "config": Path(parts)}


def test_fast_dev_run_smoke(stores: dict[str, Path], capsys: pytest.CaptureFixture):
    root = stores["root"] / "smoke"
    config = write_config(stores["root"] / "smoke.yaml", stores["truth"], root)
    assert main(["fit", "--config", config, "--trainer.fast_dev_run", "true"]) == 0
    assert not list(root.rglob("*.ckpt")), "fast_dev_run must not write checkpoints"


def test_resume_continues_the_step_and_is_bit_identical(runs: dict[str, Path]):
    whole, resumed = _ckpt(runs["whole"]), _ckpt(runs["parts"])
    assert (resumed["global_step"], resumed["epoch"]) == (6, 1)
    assert (whole["global_step"], whole["epoch"]) == (6, 1)
    # the resume continued in the run's own folder: one version, one config.yaml, TensorBoard events
    run = runs["parts"] / "lightning_logs"
    assert [p.name for p in run.iterdir()] == ["version_0"]
    assert (run / "version_0/config.yaml").is_file() and list(run.glob("version_0/events.out.tfevents*"))
    # deterministic resume: weights and Adam moments bit-identical to the uninterrupted run
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    opt_a, opt_b = whole["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for index in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[index][name], opt_b[index][name]), (index, name)
    assert whole["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"] == 6


def test_checkpoint_is_self_describing_and_loads_weights_only(runs: dict[str, Path], stores: dict[str, Path]):
    checkpoint = _ckpt(runs["parts"])  # weights_only=True
    meta = checkpoint["earthcast"]
    dm = WB2DataModule(str(stores["truth"]), stats_cache_dir=str(stores["root"] / "stats2"), **DATA)
    assert meta["manifest"] == dm.manifest.to_dict()
    for field, values in dm.stats.to_dict().items():
        np.testing.assert_allclose(meta["stats"][field], values, rtol=1e-12)
    assert meta["model"]["settings"] == MICRO
    assert meta["version"] == earthcast.__version__
    assert meta["grid"] == {"name": None, "shape": [16, 32], "geometry": "global"}
    assert meta["config"]["data"]["store"] == str(stores["truth"])
    assert meta["config"]["model"]["class_path"] == "earthcast.training.module.ForecastModule"
    assert meta["config"]["model"]["init_args"]["size"] == "tiny"
    assert meta["config"]["trainer"]["max_epochs"] == 2


def test_validate_test_predict_use_the_checkpoint_weights(runs: dict[str, Path], stores: dict[str, Path]):
    ckpt = str(runs["parts"] / "lightning_logs/version_0/checkpoints/last.ckpt")
    config = str(runs["config"])
    cli = EarthcastCLI(["validate", "--config", config, "--ckpt_path", ckpt])
    reported = float(cli.trainer.callback_metrics["val/loss"])
    # independent: the checkpoint's weights on the first validation batch, evaluated by hand
    module = ForecastModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    dm = WB2DataModule(str(stores["truth"]), stats_cache_dir=str(stores["root"] / "stats"), **DATA)
    batch = module.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    with torch.no_grad():
        preds, _ = module.unroll(batch, 1, module.eval_model)
        expected = float(module.loss(preds, batch))
    assert reported == pytest.approx(expected, rel=1e-6)
    untrained = ForecastModule("tritoncast", "tiny", MICRO, dm.manifest.to_dict(), dm.stats.to_dict()).eval()
    with torch.no_grad():
        assert abs(float(untrained.loss(untrained.unroll(batch, 1)[0], batch)) - expected) > 1e-6
    assert main(["test", "--config", config, "--ckpt_path", ckpt]) == 0
    assert main(["predict", "--config", config, "--ckpt_path", "last"]) == 0


def test_mismatched_checkpoint_lists_the_differences(runs, stores, capsys: pytest.CaptureFixture):
    ckpt = str(runs["parts"] / "lightning_logs/version_0/checkpoints/last.ckpt")
    other = write_config(
        stores["root"] / "other.yaml",
        stores["other"],
        stores["root"] / "other",
        data={"variables": {"geopotential": [500, 850], "temperature": [500], "2m_temperature": None}},
    )
    assert main(["fit", "--config", other, "--ckpt_path", ckpt]) == 2
    err = capsys.readouterr().err
    assert "does not match the data" in err and "extra ['geopotential_850']" in err
    assert not (stores["root"] / "other").exists(), "nothing may be trained or written"


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(runs, stores, capsys: pytest.CaptureFixture):
    config, good = str(runs["config"]), runs["parts"] / "lightning_logs/version_0/checkpoints/last.ckpt"
    truncated = stores["root"] / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["validate", "--config", config, "--ckpt_path", str(truncated)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    foreign = stores["root"] / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    assert main(["test", "--config", config, "--ckpt_path", str(foreign)]) == 2
    assert "not an earthcast checkpoint" in capsys.readouterr().err
    empty_root = write_config(stores["root"] / "empty.yaml", stores["truth"], stores["root"] / "empty")
    assert main(["validate", "--config", empty_root, "--ckpt_path", "last"]) == 2
    assert "no last.ckpt under" in capsys.readouterr().err


def test_config_check_passes_a_good_config(stores, capsys: pytest.CaptureFixture):
    good = write_config(stores["root"] / "good.yaml", stores["truth"], stores["root"] / "good")
    assert main(["config", "check", good]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "3 state channels on 32x16 lon x lat" in out and "forward pass OK" in out
    # train windows: 2020-01-01T00 … 2020-01-20T18 holds 80 steps, so 79 (input, target) pairs
    assert "train 79" in out


@pytest.mark.parametrize(
    ("data", "model", "expected"),
    [
        ({"variables": {"specific_humidity": [500]}}, {}, "specific_humidity"),
        ({}, {"size": "huge"}, "model.size 'huge' is unknown; choose one of tiny, small"),
        ({}, {"model_settings": {"widths": [8, 8, 8, 8, 8, 8]}}, "too small for 5 coarsenings"),
        ({"store": "/nonexistent/store.zarr"}, {}, "does not exist"),
        ({}, {"rollout_schedule": {0: 1, 1: 3}}, "set data.n_target >= 3"),
    ],
)
def test_config_check_lists_problems(stores, capsys, data: dict, model: dict, expected: str):
    store = data.pop("store", stores["truth"])
    bad = write_config(stores["root"] / "bad.yaml", store, stores["root"] / "bad", data=data, model=model)
    assert main(["config", "check", bad]) == 1
    out = capsys.readouterr().out
    assert out.startswith("PROBLEMS") and expected in out


def test_unreachable_store_times_out_instead_of_hanging():
    start = time.perf_counter()
    with pytest.raises(Unreachable, match=re.escape("cannot reach 'gs://x' within 0.2 s")):
        _with_timeout(lambda: time.sleep(30), 0.2, "'gs://x'")
    assert time.perf_counter() - start < 5


def test_console_script_runs_config_check(stores):
    good = write_config(stores["root"] / "script.yaml", stores["truth"], stores["root"] / "script")
    script = shutil.which("earthcast", path=os.path.dirname(sys.executable))
    assert script is not None, "the earthcast console script is not installed next to this Python"
    done = subprocess.run([script, "config", "check", good], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK")

"""BeamVQ and SFP end to end through the CLI on a synthetic Zarr store: stacked configs on a trained base,
self-describing checkpoints, planning at inference (``earthcast rollout --planner``), B = K = 1 equal to the
base forecaster, and the clear errors of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from earthcast.cli import main
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.errors import ConfigError
from earthcast.grids import equiangular_grid
from earthcast.planners.beamvq import BeamVQModule
from earthcast.planners.inference import PlanSettings
from earthcast.planners.scoring import build_reward
from earthcast.planners.search import BeamSearch
from earthcast.planners.selftrain import LeakageError, SelfTrainingConfig, SelfTrainingLoop, TimeGuard
from earthcast.rollout import RolloutConfig, run_rollout
from earthcast.training.checkpoints import load_module
from earthcast.training.forecaster import rollout

GRID = equiangular_grid(32, 16, with_poles=False)
MICRO = {
    "widths": [8, 16, 16],
    "core": {"width": 32, "pattern": "AMF", "heads": 2, "headdim": 16, "d_state": 16, "backend": "reference"},
}
HEAD = {"width": 8, "dim": 8, "num_codes": 16, "k": 3}
DATA = {
    "variables": {"geopotential": [500], "temperature": [500], "2m_temperature": None},
    "static": ["land_sea_mask", "latitude"],
    "forcings": ["hour_of_day"],
    "n_target": 2,
    "batch_size": 4,
    "train": ["2020-01-01", "2020-01-20T18"],
    "val": ["2020-01-21", "2020-01-25T18"],
    "test": ["2020-01-26", "2020-01-30T18"],
}


def write(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base forecaster, BeamVQ on it (with self-training), SFP's world model and SFP's agent."""
    root = tmp_path_factory.mktemp("planners")
    times = pd.date_range("2020-01-01", "2020-01-30T18", freq="6h")
    write_synthetic_store(root / "truth.zarr", GRID, times, levels=(500,))
    trainer = {"accelerator": "cpu", "max_steps": 3, "limit_val_batches": 1, "num_sanity_val_steps": 0,
               "log_every_n_steps": 1, "enable_model_summary": False, "enable_progress_bar": False}  # fmt: skip
    base = write(root / "base.yaml", {
        "trainer": trainer | {"default_root_dir": str(root / "base")},
        "model": {"model": "tritoncast", "size": "tiny", "model_settings": MICRO, "warmup_steps": 1},
        "data": {"store": str(root / "truth.zarr"), "stats_cache_dir": str(root / "stats")} | DATA,
    })  # fmt: skip
    assert main(["fit", "--config", base]) == 0
    ckpt = {"base": next((root / "base").rglob("last.ckpt"))}
    planner = {"warmup_steps": 1, "head": HEAD, "critic_width": 4, "reference_samples": 8}
    specs = {
        "beamvq": ("configs/planners/beamvq.yaml", {"base_checkpoint": str(ckpt["base"]),
                   "self_training": {"every": 1, "start": 1, "ratio": 0.25, "capacity": 8}}),
        "world": ("configs/planners/sfp_world_model.yaml", {}),
        "sfp": ("configs/planners/sfp.yaml", {"base_checkpoint": str(ckpt["base"]),
                "reward": [{"kind": "mse"}, {"kind": "csi", "channel": "temperature_500", "percentile": 90}]}),
    }  # fmt: skip
    for name, (config, args) in specs.items():
        if name == "sfp":
            args["world_model_checkpoint"] = str(ckpt["world"])
        extra = write(root / f"{name}.yaml", {
            "trainer": {"default_root_dir": str(root / name), "max_steps": 3, "val_check_interval": 3},
            "model": {"init_args": planner | args},
        })  # fmt: skip
        assert main(["fit", "--config", base, "--config", config, "--config", extra]) == 0, name
        ckpt[name] = next((root / name).rglob("last.ckpt"))
    return ckpt | {"root": root, "store": root / "truth.zarr", "base_config": Path(base)}


def batch_of(module, runs) -> dict[str, torch.Tensor]:
    dm = WB2DataModule(str(runs["store"]), stats_cache_dir=str(runs["root"] / "stats"), **DATA)
    dm.setup("validate")
    return module.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)


def test_checkpoints_carry_the_base_and_load_as_their_class(runs):
    raw = torch.load(runs["beamvq"], weights_only=True)
    meta = raw["earthcast"]
    assert meta["module"] == "earthcast.planners.beamvq.BeamVQModule"
    assert meta["base"]["path"] == str(runs["base"]) and len(meta["base"]["sha256"]) == 64
    assert meta["base"]["manifest"] == meta["manifest"]
    assert meta["self_training"]["harvests"] >= 1  # self-training ran and its buffer is saved
    module = load_module(runs["beamvq"])
    assert isinstance(module, BeamVQModule) and module.reference.ready
    base = load_module(runs["base"])  # the frozen base weights are the base checkpoint's
    for key, value in base.model.state_dict().items():
        assert torch.equal(value, module.model.state_dict()[key]), key
    assert load_module(runs["sfp"]).world_model_info["path"] == str(runs["world"])


def test_beam_width_and_k_of_one_equal_the_base_forecaster(runs):
    planner, base = load_module(runs["beamvq"]), load_module(runs["base"])
    batch = batch_of(base, runs)
    times = base.valid_times(batch["time"], 2)
    with torch.no_grad():
        expected, _ = rollout(base.eval_model, batch["inputs"], batch["static"], batch["forcings"], times, 2)
        result = planner.plan(
            batch, 2, lambda c, s, t, k: -c.square().mean((-3, -2, -1)), BeamSearch(2, 1, 1)
        )
    assert float((result.chosen - expected).abs().max()) <= 1e-6
    # with K > 1 the head's candidates differ from the base (the search can move away from it)
    with torch.no_grad():
        cands = planner.propose(*planner.step_inputs(batch), k=3)
    assert torch.equal(cands[:, 0], expected[:, 0]) and cands.shape[1] == 3


def test_planned_rollout_writes_the_chosen_path_and_beams_as_members(runs, tmp_path):
    args = {"data": str(runs["store"]), "inits": "2020-01-26T00:2020-01-27T00:24h", "lead": "12h",
            "progress": False}  # fmt: skip
    plain = run_rollout(
        RolloutConfig(checkpoint=str(runs["beamvq"]), out=str(tmp_path / "plain.zarr"), **args)
    )
    planned = run_rollout(RolloutConfig(
        checkpoint=str(runs["beamvq"]), out=str(tmp_path / "plan.zarr"), members=2,
        planner=PlanSettings("spectrum", horizon=2, beam_width=2), **args,
    ))  # fmt: skip
    assert plain.status == planned.status == "complete"
    ds = xr.open_zarr(planned.store)
    assert ds.sizes["number"] == 2 and np.isfinite(ds["temperature"].values).all()
    again = run_rollout(RolloutConfig(
        checkpoint=str(runs["beamvq"]), out=str(tmp_path / "plan.zarr"), members=2,
        planner=PlanSettings("spectrum", horizon=2, beam_width=2), **args,
    ))  # fmt: skip
    assert again.status == "already complete"
    with pytest.raises(ConfigError, match="needs a planner checkpoint"):
        run_rollout(RolloutConfig(checkpoint=str(runs["base"]), out=str(tmp_path / "x.zarr"),
                                  planner=PlanSettings("spectrum"), **args))  # fmt: skip
    with pytest.raises(ConfigError, match="at least 3 beams"):
        run_rollout(RolloutConfig(checkpoint=str(runs["beamvq"]), out=str(tmp_path / "y.zarr"), members=3,
                                  planner=PlanSettings("spectrum", beam_width=2), **args))  # fmt: skip


def test_rollout_cli_plans_with_a_critic(runs, tmp_path):
    out = tmp_path / "cli.zarr"
    argv = ["rollout", "--planner", str(runs["sfp"]), "--data", str(runs["store"]), "--inits", "2020-01-26T00",
            "--lead", "12h", "--out", str(out), "--critic", "learned", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert np.isfinite(xr.open_zarr(out)["geopotential"].values).all()


def test_truth_rewards_are_refused_at_inference():
    with pytest.raises(ConfigError, match="truth rewards score the training split only"):
        PlanSettings("mse")


def test_bad_input_gets_a_clear_error(runs, capsys: pytest.CaptureFixture):
    base = str(runs["base_config"])
    other = {"model": {"init_args": {"base_checkpoint": str(runs["base"]), "head": HEAD,
                                     "model_settings": MICRO | {"widths": [8, 8, 16]}}}}  # fmt: skip
    config = write(
        runs["root"] / "mismatch.yaml", other | {"trainer": {"default_root_dir": str(runs["root"] / "m")}}
    )
    assert (
        main(["fit", "--config", base, "--config", "configs/planners/beamvq.yaml", "--config", config]) == 2
    )
    assert "holds the forecaster" in capsys.readouterr().err
    big_k = write(runs["root"] / "bigk.yaml", {
        "model": {"init_args": {"base_checkpoint": str(runs["base"]), "head": HEAD | {"k": 40}}},
        "trainer": {"default_root_dir": str(runs["root"] / "k"), "max_steps": 1},
    })  # fmt: skip
    assert main(["fit", "--config", base, "--config", "configs/planners/beamvq.yaml", "--config", big_k]) == 2
    assert "codebook" in capsys.readouterr().err.lower()
    no_base = write(runs["root"] / "nobase.yaml", {"model": {"init_args": {"head": HEAD}},
                                                   "trainer": {"default_root_dir": str(runs["root"] / "n")}})  # fmt: skip
    assert (
        main(["fit", "--config", base, "--config", "configs/planners/beamvq.yaml", "--config", no_base]) == 2
    )
    assert "base_checkpoint" in capsys.readouterr().err


def test_a_threshold_outside_the_training_range_warns(runs):
    module = load_module(runs["sfp"])
    spec = [{"kind": "csi", "channel": "temperature_500", "threshold": 1000.0}]
    with pytest.warns(UserWarning, match="outside the range"):
        build_reward(spec, module.manifest, module.reference, module.lat_weights, module.normalizer.state_std)
    with pytest.raises(ConfigError, match="unknown channel"):
        build_reward([{"kind": "csi", "channel": "nope", "percentile": 95}], module.manifest, module.reference,
                     module.lat_weights, module.normalizer.state_std)  # fmt: skip


def test_world_model_of_other_data_is_refused(runs, tmp_path, capsys: pytest.CaptureFixture):
    times = pd.date_range("2020-01-01", "2020-01-30T18", freq="6h")
    write_synthetic_store(tmp_path / "other.zarr", GRID, times, levels=(500, 850), seed=1)
    data = {
        "data": {
            "store": str(tmp_path / "other.zarr"),
            "stats_cache_dir": str(tmp_path / "stats"),
            "variables": {"geopotential": [500, 850], "temperature": [500], "2m_temperature": None},
        }
    }
    config = write(tmp_path / "sfp.yaml", data | {
        "model": {"init_args": {"world_model_checkpoint": str(runs["world"]), "head": HEAD}},
        "trainer": {"default_root_dir": str(tmp_path / "run"), "max_steps": 1},
    })  # fmt: skip
    base = str(runs["base_config"])
    assert main(["fit", "--config", base, "--config", "configs/planners/sfp.yaml", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "world_model_checkpoint" in err and "does not match the data" in err and "geopotential_850" in err


def test_leakage_guard_fires_on_a_test_time(runs):
    module = load_module(runs["beamvq"])
    batch = batch_of(module, runs)
    config = SelfTrainingConfig(every=1, start=0)
    module.selftrain_loop = SelfTrainingLoop(config, TimeGuard.from_splits({"val": tuple(DATA["val"])}))
    with pytest.raises(LeakageError, match="val"):
        module.harvest(batch)  # a validation batch never enters the pseudo-label buffer
    sfp = load_module(runs["sfp"])
    sfp.guard = TimeGuard.from_splits({"val": tuple(DATA["val"])})
    with pytest.raises(LeakageError, match="val"):
        sfp.critic_loss(batch, batch["targets"][:, :1], sfp.truth_reward())  # nor is it scored with the truth

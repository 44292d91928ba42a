"""Mid-epoch resume through ``earthcast fit``: a run killed part-way through an epoch and resumed with
``--ckpt_path last`` ends with the same weights, optimizer state and batch sequence as an uninterrupted run.

The data module's loader is stateful (Lightning's ``state_dict``/``load_state_dict`` protocol), the input
noise is seeded by the optimizer step, and the unroll curriculum counts optimizer steps, so nothing depends
on where the run was interrupted. (The loader's state with 2 workers is tested without a Trainer in
``test_datasets_streaming.py``; the full 2-worker run here is marked slow.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from lightning_helpers import Killed

from earthcast.cli import main
from earthcast.commands.train import EarthcastCLI
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import equiangular_grid

MICRO = {
    "widths": [8, 16, 16],
    "core": {"width": 32, "pattern": "MF", "heads": 2, "headdim": 16, "d_state": 16, "backend": "reference"},
}
TOTAL_STEPS = 9
KILL_AT = 5
"""Checkpoints every 2 steps, so the kill after step 5 leaves step 4's, in the middle of epoch 0."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("midepoch")
    times = pd.date_range("2020-01-01", "2020-01-20T18", freq="6h")
    write_synthetic_store(
        root / "truth.zarr", equiangular_grid(32, 16, with_poles=False), times, levels=(500,)
    )
    return root / "truth.zarr"


def config(path: Path, store: Path, root: Path, callbacks: list[dict], workers: int) -> str:
    body = {
        "trainer": {
            "accelerator": "cpu",
            "max_steps": TOTAL_STEPS,
            "limit_val_batches": 0,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            "logger": False,
            "default_root_dir": str(root),
            "callbacks": callbacks,
        },
        "model": {
            "model": "tritoncast",
            "size": "tiny",
            "model_settings": MICRO,
            "warmup_steps": 2,
            "total_steps": TOTAL_STEPS,
            "input_noise": 0.1,
            "rollout_schedule": {0: 1, 3: 2},
        },
        "data": {
            "store": str(store),
            "stats_cache_dir": str(path.parent / "stats"),
            "variables": {"geopotential": [500], "2m_temperature": None},
            "static": ["latitude"],
            "forcings": [],
            "n_target": 2,
            "batch_size": 4,
            "block_steps": 16,
            "shuffle_buffer": 8,
            "num_workers": workers,
            "train": ["2020-01-01", "2020-01-07T18"],
            "val": ["2020-01-16", "2020-01-17T18"],
            "test": ["2020-01-18", "2020-01-20T18"],
        },
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return str(path)


def checkpoint_every(n: int) -> dict:
    return {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": n, "save_last": True, "save_top_k": -1},
    }


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(
    store: Path, tmp_path: Path, workers: int
):
    whole_cfg = config(
        tmp_path / "whole.yaml", store, tmp_path / "whole", [checkpoint_every(TOTAL_STEPS)], workers
    )
    assert main(["fit", "--config", whole_cfg]) == 0
    killer = {"class_path": "lightning_helpers.KillAfterStep", "init_args": {"step": KILL_AT}}
    parts_cfg = config(
        tmp_path / "parts.yaml", store, tmp_path / "parts", [checkpoint_every(2), killer], workers
    )
    with pytest.raises(Killed):
        EarthcastCLI(["fit", "--config", parts_cfg])
    last = torch.load(next((tmp_path / "parts").rglob("last.ckpt")), weights_only=True)
    fetched = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"]
    assert last["global_step"] == KILL_AT - 1 and last["epoch"] == 0, "the kill must land mid-epoch"
    loader_state = last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert sum(loader_state["served"]) == fetched == KILL_AT - 1  # batches 1-4 trained on, none in flight
    resumed_cfg = config(
        tmp_path / "resumed.yaml", store, tmp_path / "parts", [checkpoint_every(TOTAL_STEPS)], workers
    )
    assert main(["fit", "--config", resumed_cfg, "--ckpt_path", "last"]) == 0

    whole = torch.load(next((tmp_path / "whole").rglob(f"*step={TOTAL_STEPS}.ckpt")), weights_only=True)
    resumed = torch.load(next((tmp_path / "parts").rglob(f"*step={TOTAL_STEPS}.ckpt")), weights_only=True)
    assert whole["global_step"] == resumed["global_step"] == TOTAL_STEPS
    assert whole["epoch"] == resumed["epoch"] >= 1, "the run must cross an epoch boundary after the resume"
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    moments_a, moments_b = whole["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for index in moments_a:
        assert torch.equal(moments_a[index]["exp_avg_sq"], moments_b[index]["exp_avg_sq"]), index

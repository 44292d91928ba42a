"""Training on 2 CPU processes (gloo) with the real Lightning strategies: DDP against 1 process, validation
RMSE across ranks, and an FSDP smoke run of ``configs/scale/fsdp.yaml``'s strategy.

One ``torchrun --nproc-per-node 2`` launch of this file (see :func:`_worker`) trains with DDP, validates with
DDP and tries FSDP, each rank writing what it saw to a JSON file; the tests compare that with 1-process runs
in the pytest process. Tolerances: losses and validation RMSEs within 1e-5 relative (float32 sums in another
order: all-reduce of per-rank gradients against one backward over the whole batch); the weights after
``STEPS`` AdamW steps differ by under 1 % of the distance they moved.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning_helpers import quiet_trainer
from torch.utils.data import DataLoader

from earthcast.commands.config import parse_configs
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.models.backbone.blocks import Block
from earthcast.training import ForecastModule

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
BATCH = 2
VARIABLES = {"geopotential": [500, 850], "temperature": [500, 850], "2m_temperature": None}
TRAIN = ("2018-01-01", "2018-01-16T18")  # 64 steps: 4 blocks of 16, 63 windows
VAL = ("2018-03-02", "2018-03-09T18")  # 32 steps: 2 blocks, 31 windows (16 on one rank, 15 on the other)
TEST = ("2018-04-01", "2018-04-30T18")
MODEL_SETTINGS = {
    "widths": [8, 16, 16],
    "core": {"width": 16, "heads": 2, "d_state": 8, "headdim": 8, "chunk_size": 16, "backend": "reference"},
}
FSDP_UNSUPPORTED = "FSDP needs a non-CPU accelerator device"
"""What torch's FullyShardedDataParallel (used by Lightning's FSDPStrategy) says on a machine without GPUs."""


def _datamodule(store: str, cache: str, val: tuple[str, str] = VAL) -> WB2DataModule:
    return WB2DataModule(
        store, VARIABLES, static=[], forcings=[], batch_size=BATCH, eval_batch_size=4, train=TRAIN, val=val,
        test=TEST, block_steps=16, shuffle_buffer=8, stats_cache_dir=cache,
    )  # fmt: skip


def _module(dm: WB2DataModule) -> ForecastModule:
    torch.manual_seed(0)
    return ForecastModule(
        size="tiny", model_settings=MODEL_SETTINGS, manifest=dm.manifest.to_dict(), stats=dm.stats.to_dict(),
        lr=1e-2, warmup_steps=0, total_steps=STEPS, checkpoint_steps=False, ema_decay=0.5,
    )  # fmt: skip


class Recorder(L.Callback):
    """Per-step training losses and the init times (int64 ns) of every training and validation sample."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.train_times: list[list[int]] = []
        self.val_times: list[int] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        self.train_times.append(batch["time"].tolist())

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, *a: Any
    ) -> None:
        self.val_times += batch["time"].tolist()


def _val_rmse(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/rmse/")}


def _worker(out: Path, store: str, cache: str) -> None:
    """One rank of the 2-process run (started by torchrun): DDP fit + validate, then an FSDP attempt."""
    torch.set_num_threads(1)
    dm = _datamodule(store, cache)
    module, rec = _module(dm), Recorder()
    trainer = quiet_trainer(
        strategy=_strategy("ddp"), devices=2, max_steps=STEPS, limit_val_batches=0, callbacks=[rec]
    )
    trainer.fit(module, datamodule=dm)
    rank = trainer.global_rank
    if rank == 0:
        torch.save(module.state_dict(), out / "ddp_weights.pt")
    trainer = quiet_trainer(strategy=_strategy("ddp"), devices=2, callbacks=[rec])
    trainer.validate(module, datamodule=dm, verbose=False)
    result: dict[str, Any] = {
        "losses": rec.losses, "train_times": rec.train_times, "val_times": rec.val_times,
        "val_rmse": _val_rmse(trainer),
    }  # fmt: skip
    try:
        result["fsdp_losses"] = _fsdp_fit(dm)
    except RuntimeError as err:
        if FSDP_UNSUPPORTED not in str(err):
            raise
        result["fsdp_error"] = str(err).strip()
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def _strategy(name: str) -> Any:
    """The strategy of ``configs/scale/<name>.yaml`` stacked on the quickstart, as the training CLI parses it."""
    config = parse_configs([str(ROOT / "configs/quickstart.yaml"), str(ROOT / f"configs/scale/{name}.yaml")])
    spec = config.trainer.strategy
    module_path, cls = spec.class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module_path), cls)(**vars(spec.init_args))


def _fsdp_fit(dm: WB2DataModule) -> list[float]:
    """2 steps with the strategy of configs/scale/fsdp.yaml."""
    module, rec = _module(dm), Recorder()
    strategy = _strategy("fsdp")
    trainer = quiet_trainer(strategy=strategy, devices=2, max_steps=2, limit_val_batches=0, callbacks=[rec])
    trainer.fit(module, datamodule=dm)
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapped = [m for m in trainer.strategy.model.modules() if isinstance(m, FullyShardedDataParallel)]
    checkpointed = [m for m in trainer.strategy.model.modules() if isinstance(m, CheckpointWrapper)]
    n_blocks = sum(isinstance(m, Block) for m in module.modules())
    assert len(checkpointed) == n_blocks and len(wrapped) == n_blocks + 1, (len(wrapped), n_blocks)
    return rec.losses


def test_scale_configs_stack_on_the_wb2_config() -> None:
    """Both configs parse over configs/wb2_240x121.yaml as `earthcast fit` parses them, with their settings."""
    from earthcast.training.strategies import EarthcastFSDPStrategy

    wb2 = str(ROOT / "configs/wb2_240x121.yaml")
    fsdp = parse_configs([wb2, str(ROOT / "configs/scale/fsdp.yaml")])
    assert fsdp.trainer.strategy.class_path == "earthcast.training.strategies.EarthcastFSDPStrategy"
    assert fsdp.trainer.strategy.init_args.auto_wrap_policy == {Block}
    assert fsdp.trainer.strategy.init_args.activation_checkpointing_policy == {Block}
    assert fsdp.trainer.precision == "bf16-mixed" and fsdp.trainer.gradient_clip_val is None
    assert fsdp.model.init_args.checkpoint_steps is False and fsdp.model.init_args.size == "paper-wb2"
    ddp = parse_configs([wb2, str(ROOT / "configs/scale/ddp.yaml")])
    assert ddp.trainer.strategy.class_path == "lightning.pytorch.strategies.DDPStrategy"
    assert ddp.trainer.gradient_clip_val == 1.0 and ddp.model.init_args.checkpoint_steps is True
    strategy = EarthcastFSDPStrategy()  # defaults: the blocks, float32 weights under autocast
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy.mixed_precision_config is None


@pytest.fixture(scope="module")
def two_ranks(synthetic_store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    """The per-rank results of one 2-process torchrun of :func:`_worker`, and the folder holding them."""
    out = tmp_path_factory.mktemp("ddp")
    cache = str(out / "stats")
    assert _datamodule(synthetic_store, cache).stats is not None  # computed here; the ranks read the cache
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__]
    run = subprocess.run(
        [*cmd, str(out), synthetic_store, cache], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], out


def _samples(store: str, cache: str, span: tuple[str, str]) -> dict[int, dict[str, torch.Tensor]]:
    """Every window of ``span`` by init time (ns), read in time order by one process, batch of 1."""
    dm = _datamodule(store, cache, val=span)
    return {
        int(t): {k: v[i : i + 1] for k, v in b.items() if isinstance(v, torch.Tensor)}
        for b in dm.stream("val")
        for i, t in enumerate(b["time"])
    }


def _global_batches(samples: dict[int, dict], times: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    """One batch per step: the samples every rank saw at that step, concatenated (rank 0's first)."""
    return [{k: torch.cat([samples[t][k] for t in step]) for k in samples[step[0]]} for step in times]


def test_ddp_matches_one_process_with_the_same_global_batch(
    two_ranks: tuple[list[dict], Path], synthetic_store: str
) -> None:
    ranks, out = two_ranks
    cache = str(out / "stats")
    seen = [{t for step in r["train_times"] for t in step} for r in ranks]
    assert all(
        len(r["train_times"]) == STEPS and all(len(s) == BATCH for s in r["train_times"]) for r in ranks
    )
    assert not seen[0] & seen[1], "the ranks saw the same training samples"
    assert len(seen[0]) == len(seen[1]) == STEPS * BATCH
    times = [s0 + s1 for s0, s1 in zip(ranks[0]["train_times"], ranks[1]["train_times"])]
    samples = _samples(synthetic_store, cache, TRAIN)
    dm = _datamodule(synthetic_store, cache)
    module, rec = _module(dm), Recorder()
    start = {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}
    loader = DataLoader(_global_batches(samples, times), batch_size=None)
    quiet_trainer(devices=1, max_steps=STEPS, limit_val_batches=0, callbacks=[rec]).fit(module, loader)
    ddp = np.mean([r["losses"] for r in ranks], axis=0)  # each rank logs its half's mean loss
    np.testing.assert_allclose(ddp, rec.losses, rtol=1e-5)
    assert abs(rec.losses[-1] - rec.losses[0]) > 1e-3 * rec.losses[0], "training did not move the loss"
    ddp_weights, weights = torch.load(out / "ddp_weights.pt"), module.state_dict()
    differ = sum(float((ddp_weights[k] - weights[k]).square().sum()) for k in start)
    moved = sum(float((weights[k] - start[k]).square().sum()) for k in start)
    assert (differ / moved) ** 0.5 < 1e-2  # measured 1e-3: AdamW turns rounding into full steps where the
    # true gradient is ~0 (conv biases before a norm layer), so single weights can differ by up to lr


def test_validation_rmse_is_reduced_across_ranks(
    two_ranks: tuple[list[dict], Path], synthetic_store: str
) -> None:
    ranks, out = two_ranks
    cache = str(out / "stats")
    samples = _samples(synthetic_store, cache, VAL)
    per_rank = [r["val_times"] for r in ranks]
    assert not set(per_rank[0]) & set(per_rank[1]) and len(per_rank[0]) != len(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(samples), "2-rank validation skipped samples"
    dm = _datamodule(synthetic_store, cache)
    module = _module(dm)
    module.load_state_dict(torch.load(out / "ddp_weights.pt"))
    trainer = quiet_trainer(devices=1)
    trainer.validate(module, datamodule=dm, verbose=False)
    one, two = _val_rmse(trainer), ranks[0]["val_rmse"]
    assert sorted(one) == sorted(two) and len(one) == 5
    # independent reference: float64 WB2 RMSE over all samples (sqrt of the mean of per-sample MSEs)
    module.eval()
    weights = module.lat_weights.double()[:, None] / module.lat_weights.double().mean()
    mse = {}
    with torch.no_grad():
        for t, raw in samples.items():
            pred = module.predict_step(module.on_after_batch_transfer(dict(raw), 0), 0)[0, 0].double()
            mse[t] = ((pred - raw["targets"][0, 0].double()) ** 2 * weights).mean(dim=(-2, -1)).numpy()
    pooled = np.sqrt(np.mean(list(mse.values()), axis=0))
    naive = np.mean([np.sqrt(np.mean([mse[t] for t in ts], axis=0)) for ts in per_rank], axis=0)
    names = dm.manifest.names("state")
    got_one = np.array([one[f"val/rmse/{n}/6h"] for n in names])
    got_two = np.array([two[f"val/rmse/{n}/6h"] for n in names])
    np.testing.assert_allclose(got_one, pooled, rtol=1e-5)
    np.testing.assert_allclose(got_two, got_one, rtol=1e-5)
    assert np.abs(naive / pooled - 1).max() > 1e-4, "the test cannot tell pooled from averaged RMSEs"


def test_fsdp_smoke_two_cpu_processes(two_ranks: tuple[list[dict], Path]) -> None:
    ranks, _ = two_ranks
    if "fsdp_error" in ranks[0]:
        pytest.skip(f"torch {torch.__version__} FullyShardedDataParallel on CPU: {ranks[0]['fsdp_error']}")
    losses = [r["fsdp_losses"] for r in ranks]
    assert all(len(x) == 2 and np.isfinite(x).all() for x in losses)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2], sys.argv[3])

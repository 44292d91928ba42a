"""ForecastModule and Forecaster: real Lightning training on a synthetic Zarr store, checkpoints, guards."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning_helpers import quiet_trainer

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid
from earthcast.models.tritoncast import TritonCast, size_config
from earthcast.training import (
    ForecastModule,
    IncompatibleCheckpointError,
    NonFiniteLossError,
    rollout,
    rollout_steps,
    warmup_cosine,
    weighted_mse,
)

MICRO = {
    "widths": [8, 16, 16],
    "core": {"width": 32, "pattern": "AMF", "heads": 2, "headdim": 16, "d_state": 16, "backend": "reference"},
}


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> WB2DataModule:
    root = tmp_path_factory.mktemp("store")
    store = root / "synthetic.zarr"
    times = pd.date_range("2020-01-01", periods=160, freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500,))
    return WB2DataModule(
        str(store),
        {"geopotential": [500], "temperature": [500], "2m_temperature": None},
        static=["land_sea_mask", "latitude"],
        forcings=["hour_of_day", "toa_insolation"],
        n_input=1,
        n_target=2,
        batch_size=4,
        train=("2020-01-01", "2020-02-04"),
        val=("2020-02-05", "2020-02-09"),
        test=("2020-02-05", "2020-02-09"),
        stats_cache_dir=str(root / "stats"),
    )


def _module(dm: WB2DataModule, **kwargs) -> ForecastModule:
    settings = kwargs.pop("model_settings", MICRO)
    return ForecastModule(
        "tritoncast",
        "tiny",
        settings,
        manifest=dm.manifest.to_dict(),
        stats=dm.stats.to_dict(),
        **kwargs,
    )


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.rollouts: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rollouts.append(pl_module.current_rollout(batch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_trainer_reduces_loss_and_logs_physical_rmse(datamodule: WB2DataModule):
    module = _module(
        datamodule, model_settings=MICRO | {"output": "direct"}, lr=3e-3, warmup_steps=2, loss_scale="state"
    )
    recorder = LossRecorder()
    trainer = quiet_trainer(max_steps=32, callbacks=[recorder], limit_val_batches=2, val_check_interval=32)
    trainer.fit(module, datamodule=datamodule)
    first, last = np.mean(recorder.losses[:4]), np.mean(recorder.losses[-4:])
    assert last < 0.7 * first, recorder.losses
    metrics = trainer.callback_metrics
    assert "val/loss" in metrics
    for lead in ("6h", "12h"):
        rmse = float(metrics[f"val/rmse/geopotential_500/{lead}"])
        assert 0 < rmse < 5 * datamodule.stats.state_std[0]


def test_checkpoint_round_trip_and_mismatch_errors(datamodule: WB2DataModule, tmp_path: Path):
    module = _module(datamodule, ema_decay=0.9)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=False)
    assert raw["earthcast"]["manifest"] == datamodule.manifest.to_dict()
    assert raw["earthcast"]["stats"] == datamodule.stats.to_dict()
    assert raw["earthcast"]["model"]["settings"] == MICRO
    assert any(k.startswith("normalizer.state_std") for k in raw["state_dict"])

    loaded = ForecastModule.load_from_checkpoint(path)
    batch = module.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_step(batch, 0), module.predict_step(batch, 0))
    # the EMA weights (0.9 w1 + 0.1 w2 after two steps), not the raw ones, serve validation and prediction
    assert module.ema.n_averaged.item() == 2 and module.eval_model is module.ema.module
    assert not torch.equal(next(module.ema.module.parameters()), next(module.model.parameters()))

    other = datamodule.manifest.to_dict()
    other["static"] = other["static"][:1]
    other["longitude"] = list(other["longitude"])[:-1]
    with pytest.raises(IncompatibleCheckpointError) as err:
        ForecastModule.load_from_checkpoint(path, manifest=other)
    message = str(err.value)
    assert "static channels differ" in message and "sin_latitude" in message
    assert "longitude grids differ (64 vs 63 points)" in message

    stats = datamodule.stats.to_dict()
    stats["state_std"] = [stats["state_std"][0] * 2, *stats["state_std"][1:]]
    with pytest.raises(IncompatibleCheckpointError, match="state_std of geopotential_500"):
        ForecastModule.load_from_checkpoint(path, stats=stats)


class InjectNaN(L.Callback):
    def __init__(self, step: int, key: str, channel: int) -> None:
        self.step, self.key, self.channel = step, key, channel

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch[self.key][1, 0, self.channel, 3, 4] = float("nan")
            self.time = str(np.datetime64(int(batch["time"][1]), "ns"))[:19]


def test_nan_loss_stops_training_naming_step_batch_and_channel(datamodule: WB2DataModule):
    inject = InjectNaN(step=2, key="targets", channel=1)
    trainer = quiet_trainer(max_steps=5, limit_val_batches=0, callbacks=[inject])
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(_module(datamodule), datamodule=datamodule)
    message = str(err.value)
    assert "global step 2" in message
    assert "target of channel 'temperature_500'" in message
    assert inject.time in message


def test_area_weighted_masked_loss_matches_float64_formula():
    rng = np.random.default_rng(1)
    b, k, c, h, w = 2, 3, 2, 4, 5
    pred, target = rng.normal(size=(2, b, k, c, h, w))
    lat_w = rng.uniform(0.2, 1.5, size=h)
    chan_w = np.array([1.0, 3.0])
    mask = (rng.uniform(size=(b, h, w)) > 0.3).astype(float)
    num = den = 0.0
    for ib in range(b):
        for ik in range(k):
            for ic in range(c):
                for ih in range(h):
                    for iw in range(w):
                        weight = chan_w[ic] * lat_w[ih] * mask[ib, ih, iw]
                        num += weight * (pred[ib, ik, ic, ih, iw] - target[ib, ik, ic, ih, iw]) ** 2
                        den += weight
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    got = weighted_mse(t(pred), t(target), t(lat_w), t(chan_w), t(mask))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.item(), num / den, rtol=1e-12)


def test_curriculum_schedule_and_lr_schedule(datamodule: WB2DataModule):
    schedule = {0: 1, 2: 2, 4: 4}
    assert [rollout_steps(schedule, e) for e in range(6)] == [1, 1, 2, 2, 4, 4]
    assert rollout_steps(schedule, 5, cap=2) == 2
    assert rollout_steps({"1": 3}, 0) == 1 and rollout_steps({"1": 3}, 1) == 3
    assert warmup_cosine(0, 4, 14) == pytest.approx(0.2)
    assert warmup_cosine(4, 4, 14) == pytest.approx(1.0)
    assert warmup_cosine(9, 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(20, 4, 14, 0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lengths >= 1"):
        rollout_steps({0: 0}, 0)

    recorder = LossRecorder()
    module = _module(datamodule, rollout_schedule={1: 2, 2: 3})
    # one epoch of three batches: the curriculum counts optimizer steps, not epochs
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(module, datamodule=datamodule)
    assert recorder.rollouts == [1, 2, 2]  # step 2 asks for 3 but the windows hold 2 targets


def _micro(dtype=torch.float64) -> TritonCast:
    cfg = size_config("tiny", output="direct", **MICRO)
    return TritonCast(2, 1, 1, config=cfg).to(dtype)


@pytest.mark.parametrize("mode", ["checkpoint", "offload", "both"])
def test_checkpointed_and_offloaded_unrolls_give_identical_gradients(mode: str):
    model = _micro()
    state = torch.randn(2, 1, 2, 8, 16, dtype=torch.float64)
    static = torch.randn(2, 1, 8, 16, dtype=torch.float64)
    forcings = torch.randn(2, 5, 1, 8, 16, dtype=torch.float64)

    def grads(**flags) -> list[torch.Tensor]:
        model.zero_grad()
        preds, _ = rollout(model, state, static, forcings, None, 4, **flags)
        preds.square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    other = grads(checkpoint_steps=mode in ("checkpoint", "both"), offload=mode in ("offload", "both"))
    for a, b in zip(plain, other):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_module_rejects_missing_manifest_and_bad_weights(datamodule: WB2DataModule):
    with pytest.raises(ValueError, match="link_arguments"):
        ForecastModule(stats=datamodule.stats.to_dict())
    with pytest.raises(ValueError, match="match no state channel"):
        _module(datamodule, variable_weights={"humidity": 2.0})
    module = ForecastModule(
        manifest=ChannelManifest.from_dict(datamodule.manifest.to_dict()),
        stats=NormStats.from_dict(datamodule.stats.to_dict()),
        model_settings=MICRO,
        variable_weights={"temperature": 2.0, "temperature_500": 3.0},
        loss_scale="state",
    )
    assert module.chan_weights.tolist() == [1.0, 3.0, 1.0]
    assert module.hparams.manifest == datamodule.manifest.to_dict()

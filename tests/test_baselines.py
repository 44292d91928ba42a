"""Baselines (persistence, climatology, U-Net) and TritonCast ablations through the same ForecastModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning_helpers import quiet_trainer

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.store import open_store
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid
from earthcast.models.baselines import Climatology, UNet
from earthcast.models.registry import build_model
from earthcast.models.tritoncast import size_config
from earthcast.scoring.climatology import build_climatology
from earthcast.training import ForecastModule

CORE = {"width": 32, "pattern": "AMF", "heads": 2, "headdim": 16, "d_state": 16, "backend": "reference"}
MICRO = {"widths": [8, 16, 16], "core": CORE}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "synthetic.zarr"
    times = pd.date_range("2020-01-01", periods=160, freq="6h")
    write_synthetic_store(path, wb2_grid("64x32_equiangular_conservative"), times, levels=(500,))
    return path


@pytest.fixture(scope="module")
def datamodule(store: Path) -> WB2DataModule:
    return WB2DataModule(
        str(store),
        {"geopotential": [500], "temperature": [500], "2m_temperature": None},
        static=["land_sea_mask"],
        forcings=["hour_of_day"],
        n_input=1,
        n_target=2,
        batch_size=4,
        train=("2020-01-01", "2020-02-04"),
        val=("2020-02-05", "2020-02-09"),
        test=("2020-02-05", "2020-02-09"),
        stats_cache_dir=str(store.parent / "stats"),
    )


def _wb2_weights(lat: np.ndarray) -> np.ndarray:
    edges = np.deg2rad(np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]]))
    area = np.diff(np.sin(edges))
    return area / area.mean()


def test_persistence_runs_through_the_module_and_logs_wb2_rmse(datamodule: WB2DataModule):
    module = ForecastModule(
        "persistence", manifest=datamodule.manifest.to_dict(), stats=datamodule.stats.to_dict()
    )
    trainer = quiet_trainer(max_steps=2, val_check_interval=2)
    trainer.fit(module, datamodule=datamodule)  # no parameters: a zero-gradient placeholder is "optimised"
    assert trainer.global_step == 2 and float(trainer.callback_metrics["train/loss"]) > 0
    assert module.placeholder.item() == 0.0

    weights = _wb2_weights(np.asarray(datamodule.manifest.latitude))[:, None]
    sums, count = np.zeros((2, 3)), 0
    for batch in datamodule.val_dataloader():
        persisted = batch["inputs"][:, -1:].double().numpy()
        err = (persisted - batch["targets"].double().numpy()) ** 2  # (B, K, C, H, W)
        sums += ((err * weights).sum(axis=(-2, -1)) / weights.sum() / err.shape[-1]).sum(axis=0)
        count += err.shape[0]
    expected = np.sqrt(sums / count)
    for k, lead in enumerate(("6h", "12h")):
        for c, name in enumerate(datamodule.manifest.names("state")):
            got = float(trainer.callback_metrics[f"val/rmse/{name}/{lead}"])
            np.testing.assert_allclose(got, expected[k, c], rtol=1e-5)


def test_climatology_from_wb2_store_and_from_training_data_agree(datamodule: WB2DataModule, store: Path):
    truth = open_store(store)
    clim = build_climatology(truth[["geopotential", "temperature", "2m_temperature"]], window=5)
    clim_path = store.parent / "clim.zarr"
    clim.drop_encoding().to_zarr(clim_path, mode="w")
    manifest, stats = datamodule.manifest, datamodule.stats
    from_store = build_model("climatology", manifest, stats, climatology_store=str(clim_path))
    from_truth = build_model("climatology", manifest, stats, truth_store=str(store), window=5)
    assert isinstance(from_store, Climatology)

    valid = np.array(["2020-01-20T18:00", "2020-02-03T06:00"], dtype="datetime64[ns]")
    time = torch.from_numpy(valid.astype(np.int64))
    state = torch.zeros(2, 1, 3, 32, 64)
    out = from_store(state, None, None, time)
    torch.testing.assert_close(out, from_truth(state, None, None, time))
    for b, t in enumerate(pd.DatetimeIndex(valid)):
        z = clim["temperature"].sel(hour=t.hour, dayofyear=t.dayofyear, level=500).values
        expected = (z - stats.state_mean[1]) / stats.state_std[1]
        np.testing.assert_allclose(out[b, 1].numpy(), expected, rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match="exactly one of"):
        build_model("climatology", manifest, stats)
    with pytest.raises(ValueError, match="hours"):
        from_store(
            state,
            None,
            None,
            torch.from_numpy(np.array(["2020-01-20T03:00"], "datetime64[ns]").astype(np.int64)),
        )


def test_unet_learns_a_fixed_batch(datamodule: WB2DataModule):
    batch = next(iter(datamodule.train_dataloader()))
    model = build_model("unet", datamodule.manifest, datamodule.stats, output="direct", widths=(8, 16, 32))
    assert isinstance(model, UNet)
    stats = datamodule.stats
    mean = torch.tensor(stats.state_mean)[:, None, None]
    std = torch.tensor(stats.state_std)[:, None, None]
    x, y = (batch["inputs"][:2] - mean) / std, (batch["targets"][:2, 0] - mean) / std
    static = batch["static"][:2] - torch.tensor(stats.static_mean)[:, None, None]
    forcings = batch["forcings"][:2, :2]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = (model(x, static, forcings) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize("ablation", ["no_core", "no_skip", "flat"])
def test_ablations_train_through_the_module(datamodule: WB2DataModule, ablation: str):
    module = ForecastModule(
        "tritoncast",
        "tiny",
        MICRO | {"ablation": ablation},
        manifest=datamodule.manifest.to_dict(),
        stats=datamodule.stats.to_dict(),
    )
    assert module.model.config == size_config("tiny", geometry="global", ablation=ablation, **MICRO)
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))

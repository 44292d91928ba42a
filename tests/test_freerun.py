"""The free-run check logged at validation: its figures against hand-computed values, and the real Trainer
path (a persistence model runs every step, does not drift and keeps its spectrum)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning_helpers import quiet_trainer

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.grids import wb2_grid
from earthcast.training import ForecastModule
from earthcast.training.freerun import free_run_diagnostics


def _area_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 area mean of x (C, H, W) with row weights w (H,)."""
    return (x * w[:, None]).sum(axis=(-2, -1)) / (w.sum() * x.shape[-1])


def test_free_run_figures_match_hand_computed_values() -> None:
    rng = np.random.default_rng(0)
    start = rng.normal(size=(2, 4, 8))
    w = np.array([0.5, 1.0, 1.5, 1.0])
    preds = np.repeat(start[None], 5, axis=0)
    preds[4, 0] = 2 * start[0] + 0.5  # channel 0 doubles (power × 4 at every wavenumber) and shifts by 0.5
    got = free_run_diagnostics(
        torch.from_numpy(preds), torch.from_numpy(start), torch.from_numpy(w), torch.ones(4, 8)
    )
    assert got["finite_steps"] == 5
    assert got["max_abs_z"] == pytest.approx(np.abs(preds).max())
    drift = np.abs(_area_mean(preds[4], w) - _area_mean(start, w)).max()
    assert got["drift"] == pytest.approx(drift, rel=1e-12)
    assert got["spectrum_ratio_min"] == pytest.approx(1.0) and got["spectrum_ratio_max"] == pytest.approx(4.0)


def test_free_run_counts_steps_to_the_first_non_finite_value_outside_the_mask() -> None:
    start = torch.ones(1, 3, 4)
    preds = torch.ones(6, 1, 3, 4)
    mask = torch.ones(3, 4)
    mask[0, 0] = 0  # land
    preds[1:, 0, 0, 0] = float("nan")  # NaN on land is not a blow-up
    preds[4, 0, 2, 3] = float("inf")
    got = free_run_diagnostics(preds, start, torch.ones(3), mask)
    assert got["finite_steps"] == 4 and got["max_abs_z"] == 1.0 and got["drift"] == 0.0


def test_validation_logs_the_free_run(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    times = pd.date_range("2020-01-01", periods=120, freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500,))
    dm = WB2DataModule(
        str(store), {"temperature": [500], "2m_temperature": None}, static=["latitude"],
        forcings=["hour_of_day", "toa_insolation"], batch_size=4, train=("2020-01-01", "2020-01-20"),
        val=("2020-01-21", "2020-01-25"), test=("2020-01-26", "2020-01-30"), stats_cache_dir=str(tmp_path),
    )  # fmt: skip
    module = ForecastModule("persistence", manifest=dm.manifest, stats=dm.stats, free_run_steps=12)
    trainer = quiet_trainer(limit_val_batches=1)
    trainer.validate(module, datamodule=dm)
    logged = {k.removeprefix("val/free_run/"): float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["finite_steps"] == 12 and logged["drift"] == pytest.approx(0.0, abs=1e-12)
    assert logged["spectrum_ratio_min"] == pytest.approx(1.0) and logged[
        "spectrum_ratio_max"
    ] == pytest.approx(1.0)


class _Recorder(torch.nn.Module):
    """Persistence that keeps the forcings and valid times it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, state, static, forcings, time):
        self.calls.append((forcings.clone(), time.clone()))
        return state[:, -1]


def test_free_run_forcings_are_at_the_true_times(tmp_path: Path) -> None:
    """Every step gets the analytic forcings of its input time and of the time it predicts, and that time."""
    store = tmp_path / "s.zarr"
    times = pd.date_range("2020-01-01", periods=60, freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500,))
    dm = WB2DataModule(
        str(store), {"temperature": [500]}, static=[], forcings=["hour_of_day"], batch_size=2,
        train=("2020-01-01", "2020-01-10"), val=("2020-01-11", "2020-01-15"), test=("2020-01-11", "2020-01-15"),
        stats_cache_dir=str(tmp_path),
    )  # fmt: skip
    module = ForecastModule("persistence", manifest=dm.manifest, stats=dm.stats, free_run_steps=5)
    module.forecaster.model = recorder = _Recorder()
    init = pd.Timestamp("2020-01-11T06")
    h, w = dm.manifest.grid_shape
    start = {
        "inputs": torch.zeros(1, 1, 1, h, w), "static": torch.zeros(1, 0, h, w),
        "time": torch.tensor([init.value]), "mask": torch.ones(1, h, w),
    }  # fmt: skip
    module.free_run(start, 5)
    assert len(recorder.calls) == 5
    for k, (forcings, time) in enumerate(recorder.calls):
        valid = init + pd.Timedelta(hours=6 * (k + 1))
        assert time.tolist() == [valid.value]
        for j, at in enumerate((valid - pd.Timedelta(hours=6), valid)):  # the input time, then the target
            expected = np.sin(2 * np.pi * at.hour / 24)
            np.testing.assert_allclose(forcings[0, j, 0].numpy(), expected, atol=1e-6)

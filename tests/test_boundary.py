"""Lateral boundary forcing of a limited-area model: batches, normalisation, training, rollouts, manifests.

Small real regional Zarr stores (8 x 12 cells at 50–52°N); every expected value is indexed by hand from the
arrays the test wrote, never through the data layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from lightning_helpers import quiet_trainer
from torch import nn

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.zarr_store import write_wb2_store
from earthcast.errors import ConfigError, TimeAxisError
from earthcast.rollout import (
    InitialConditions,
    RolloutConfig,
    TruthSource,
    generate,
    load_step_model,
    run_rollout,
)
from earthcast.training import ForecastModule, IncompatibleCheckpointError

TIMES = pd.date_range("2020-01-01", periods=48, freq="6h")
LAT = 50.0 + 0.25 * np.arange(8)
LON = 5.0 + 0.25 * np.arange(12)
H, W = LAT.size, LON.size
STATE = ["temperature_500", "temperature_850", "2m_temperature"]
VARIABLES = {"temperature": [500, 850], "2m_temperature": None}
ANALYTIC = ["sin_hour_of_day", "cos_hour_of_day"]
LAND = (slice(0, 2), slice(0, 3))  # NaN corner of the masked store: inside the strip of any width
MICRO = {
    "widths": [8, 16],
    "core": {"width": 16, "pattern": "AM", "heads": 2, "headdim": 8, "d_state": 8, "backend": "reference"},
}
SPLITS = {
    "train": ("2020-01-01", "2020-01-08T18"),
    "val": ("2020-01-09", "2020-01-10T18"),
    "test": ("2020-01-11", "2020-01-12T18"),
}


def _truth(masked: bool) -> np.ndarray:
    """(T, C, H, W) float64 state in manifest channel order; NaN on the land corner when masked."""
    rng = np.random.default_rng(7)
    t = np.arange(TIMES.size)[:, None, None, None]
    base = np.array([250.0, 270.0, 285.0])[None, :, None, None]
    values = base + 0.5 * t + 4.0 * rng.standard_normal((TIMES.size, 3, H, W))
    values = values.astype(np.float32).astype(np.float64)  # what the store holds
    if masked:
        values[:, :, LAND[0], LAND[1]] = np.nan
    return values


def _write(path: Path, truth: np.ndarray, lat: np.ndarray = LAT, lon: np.ndarray = LON) -> str:
    ds = xr.Dataset(
        {
            "temperature": (("time", "level", "latitude", "longitude"), truth[:, :2], {"units": "K"}),
            "2m_temperature": (("time", "latitude", "longitude"), truth[:, 2], {"units": "K"}),
        },
        coords={"time": TIMES, "level": [500, 850], "latitude": lat, "longitude": lon},
    )
    write_wb2_store(ds, path, chunks={"time": 8})
    return str(path)


def _strip(width: int) -> np.ndarray:
    """(H, W) bool, written cell by cell."""
    strip = np.zeros((H, W), bool)
    for i in range(H):
        for j in range(W):
            strip[i, j] = i < width or i >= H - width or j < width or j >= W - width
    return strip


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    root = tmp_path_factory.mktemp("boundary")
    return {masked: _write(root / f"box_{masked}.zarr", _truth(masked)) for masked in (False, True)}


def _datamodule(store: str, width: int, masked: bool = False, **kwargs) -> WB2DataModule:
    return WB2DataModule(
        store, VARIABLES, static=["latitude"], forcings=["hour_of_day"], n_input=2, n_target=2,
        batch_size=4, masked=masked, boundary_width=width, stats_cache_dir=str(Path(store).parent / "stats"),
        train=SPLITS["train"], val=SPLITS["val"], test=SPLITS["test"], **kwargs,
    )  # fmt: skip


def _frame_indices(batch_times: torch.Tensor, n_frames: int, n_input: int = 2) -> np.ndarray:
    """(B, n_frames) store time indices of the forcing frames of each sample (input times, then targets)."""
    init = pd.DatetimeIndex(batch_times.numpy().astype("datetime64[ns]"))
    first = TIMES.get_indexer(init) - (n_input - 1)
    return first[:, None] + np.arange(n_frames)[None]


@pytest.mark.parametrize(("width", "masked"), [(1, False), (2, False), (2, True)])
def test_batch_boundary_is_the_truth_in_the_strip(stores: dict[bool, str], width: int, masked: bool) -> None:
    dm = _datamodule(stores[masked], width, masked)
    names = dm.manifest.names("forcing")
    assert names == [*ANALYTIC, *(f"boundary_{s}" for s in STATE), "boundary_mask"]
    assert dm.manifest.boundary_width == width and dm.manifest.analytic_forcings == ANALYTIC
    assert [c.units for c in dm.manifest.forcing[2:]] == ["K", "K", "K", "1"]
    batch = next(iter(dm.stream("val")))
    forcings = batch["forcings"].numpy()
    assert forcings.shape == (4, 4, len(names), H, W)
    truth, strip = _truth(masked), _strip(width)
    frames = _frame_indices(batch["time"], 4)
    expected = np.where(strip & np.isfinite(truth[frames]), truth[frames], 0.0)  # (B, T, C, H, W)
    np.testing.assert_array_equal(forcings[:, :, 2:5], expected.astype(np.float32))
    np.testing.assert_array_equal(forcings[:, :, 5], np.broadcast_to(strip, (4, 4, H, W)).astype(np.float32))
    # the frame of the last target time is that target in the strip
    target = batch["targets"][:, -1].numpy()
    np.testing.assert_array_equal(forcings[:, -1, 2:5], np.where(strip, target, 0.0))
    # hand-picked cells: the strip is `width` cells deep on every edge, the interior is 0
    b, t = 1, 3
    at = truth[frames[b, t]]
    assert forcings[b, t, 2, width - 1, 6] == np.float32(at[0, width - 1, 6])
    assert forcings[b, t, 3, 4, W - width] == np.float32(at[1, 4, W - width])
    assert forcings[b, t, 4, H - 1, 8] == np.float32(at[2, H - 1, 8])
    assert forcings[b, t, 2, width, 6] == 0.0 and forcings[b, t, 3, 4, W - width - 1] == 0.0
    assert forcings[b, t, 4, 4, width] == 0.0
    assert forcings[b, t, 4, 4, width - 1] == np.float32(at[2, 4, width - 1])
    if masked:  # land in the strip: NaN in the store, 0 in the boundary channels, still flagged in the mask
        assert np.isnan(at[:, 0, 0]).all() and (forcings[:, :, 2:5, 0, 0] == 0).all()
        assert (forcings[:, :, 5, 0, 0] == 1).all()
    # the analytic channels are unchanged by the boundary
    hours = pd.DatetimeIndex(TIMES[frames.ravel()]).hour.to_numpy().reshape(frames.shape)
    np.testing.assert_allclose(forcings[:, :, 0, 3, 3], np.sin(2 * np.pi * hours / 24), atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_boundary_is_normalised_like_the_state_on_the_device(stores: dict[bool, str], masked: bool) -> None:
    dm = _datamodule(stores[masked], 2, masked)
    module = ForecastModule(
        "tritoncast", "tiny", MICRO, manifest=dm.manifest.to_dict(), stats=dm.stats.to_dict(), n_input=2
    )
    batch = next(iter(dm.stream("val")))
    out = module.on_after_batch_transfer(batch, 0)["forcings"].numpy()
    truth, strip = _truth(masked), _strip(2)
    frames = _frame_indices(batch["time"], 4)
    mean = np.asarray(dm.stats.state_mean)[:, None, None]
    std = np.asarray(dm.stats.state_std)[:, None, None]
    z = (truth[frames] - mean) / std
    expected = np.where(strip & np.isfinite(z), z, 0.0)
    np.testing.assert_allclose(out[:, :, 2:5], expected, atol=2e-5)
    np.testing.assert_array_equal(out[:, :, :2], batch["forcings"][:, :, :2].numpy())
    np.testing.assert_array_equal(out[:, :, 5], batch["forcings"][:, :, 5].numpy())
    # inside the domain 0 is the channel mean, as for masked points of the state
    assert (out[:, :, 2:5][..., ~strip] == 0).all()


def test_boundary_needs_a_regional_grid_with_an_interior(tmp_path: Path, stores: dict[bool, str]) -> None:
    lat, lon = np.linspace(-90, 90, 7), np.arange(12) * 30.0
    rng = np.random.default_rng(0)
    glob = _write(
        tmp_path / "global.zarr", rng.standard_normal((TIMES.size, 3, lat.size, lon.size)), lat, lon
    )
    with pytest.raises(ConfigError, match=r"'global_poles' grid.*Set data.boundary_width to 0"):
        _datamodule(glob, 1)
    with pytest.raises(ConfigError, match=r"'periodic' grid"):
        _datamodule(stores[False], 1, geometry="periodic")
    with pytest.raises(ConfigError, match=r"leaves no interior on the 8x12.*below 4"):
        _datamodule(stores[False], 4)
    with pytest.raises(ConfigError, match="positive width"):
        _datamodule(stores[False], -1)
    assert _datamodule(glob, 0).manifest.names("forcing") == ANALYTIC


@pytest.fixture(scope="module")
def trained(stores: dict[bool, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[WB2DataModule, Path]:
    """A micro TritonCast trained for two steps with a 2-cell boundary on the masked store."""
    dm = _datamodule(stores[True], 2, masked=True)
    module = ForecastModule(
        "tritoncast", "tiny", MICRO, manifest=dm.manifest.to_dict(), stats=dm.stats.to_dict(), n_input=2
    )
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    ckpt = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return dm, ckpt


def test_training_with_the_boundary_saves_it_in_the_checkpoint(trained, stores: dict[bool, str]) -> None:
    dm, ckpt = trained
    saved = ChannelManifest.from_dict(torch.load(ckpt, weights_only=True)["earthcast"]["manifest"])
    assert saved.boundary_width == 2 and saved == dm.manifest
    # the model was built for 2 analytic + 3 boundary + 1 mask forcing channels
    module = ForecastModule.load_from_checkpoint(ckpt, weights_only=True)
    assert module.normalizer.boundary and len(module.manifest.forcing) == 6
    other = _datamodule(stores[True], 1, masked=True)
    with pytest.raises(IncompatibleCheckpointError, match=r"boundary width differs \(2 vs 1 cells\)"):
        ForecastModule.load_from_checkpoint(ckpt, manifest=other.manifest.to_dict(), weights_only=True)


class Recorder(nn.Module):
    """Runs the trained net and keeps the states and forcings it was given at each step."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen, self.states = net, [], []

    def forward(self, state, static, forcings, time):
        self.seen.append(forcings.clone())
        self.states.append(state.clone())
        return self.net(state, static, forcings, time)


def test_rollout_feeds_the_truth_boundary_at_every_step(trained, stores: dict[bool, str]) -> None:
    dm, ckpt = trained
    model = load_step_model(ckpt)
    truth_source = TruthSource.open(stores[True], model.manifest)
    inits = pd.DatetimeIndex(["2020-01-09T00", "2020-01-10T06"])
    states = torch.from_numpy(truth_source.initial_states(inits, 2))
    mask = torch.from_numpy(np.isfinite(states.numpy()).all(axis=(0, 1, 2)))
    model.net = recorder = Recorder(model.net)
    ic = InitialConditions(
        inits.values, states, torch.from_numpy(truth_source.static_fields()), mask, truth_source
    )
    steps = list(generate(model, ic, 4))
    assert len(steps) == len(recorder.seen) == 4
    truth, strip = _truth(True), _strip(2)
    mean = np.asarray(dm.stats.state_mean)[:, None, None]
    std = np.asarray(dm.stats.state_std)[:, None, None]
    first = TIMES.get_indexer(inits) - 1
    for k, seen in enumerate(recorder.seen):
        frames = first[:, None] + k + np.arange(3)[None]  # input times, then the valid time of lead k + 1
        z = (truth[frames] - mean) / std
        expected = np.where(strip & np.isfinite(z), z, 0.0)
        np.testing.assert_allclose(seen[:, :, 2:5].numpy(), expected, atol=2e-5)
        np.testing.assert_array_equal(seen[:, :, 5].numpy(), np.broadcast_to(strip, (2, 3, H, W)))
        # in the strip (row 0 is in it) the forecast of that lead is the truth it was given, as in neural-lam
        np.testing.assert_allclose(
            steps[k].fields[:, 0, :, 0, 5].numpy(), truth[frames[:, -1], :, 0, 5], rtol=1e-5
        )
        # land (NaN in the store) enters the net as 0 in normalised units, as in training, at every step
        assert (recorder.states[k][..., LAND[0], LAND[1]] == 0).all()


def test_rollout_past_the_truth_names_the_first_missing_time(trained, stores, tmp_path: Path) -> None:
    _, ckpt = trained
    ok = run_rollout(
        RolloutConfig(
            str(ckpt), stores[True], "2020-01-11T00", "1d", str(tmp_path / "ok.zarr"), progress=False
        )
    )
    assert ok.status == "complete" and ok.steps_computed == 4
    fields = xr.open_zarr(ok.store)["2m_temperature"].values
    assert np.isnan(fields[..., LAND[0], LAND[1]]).all() and np.isfinite(fields[..., 2:, 3:]).all()
    out = tmp_path / "late.zarr"
    cfg = RolloutConfig(str(ckpt), stores[True], "2020-01-12T06", "1d", str(out), progress=False)
    with pytest.raises(TimeAxisError, match=r"no state at 2020-01-13T00:00:00.*boundary_width=2"):
        run_rollout(cfg)
    assert not out.exists()  # refused before anything was written
    # the step generator itself stops at the first step whose boundary the store lacks
    model = load_step_model(ckpt)
    source = TruthSource.open(stores[True], model.manifest)
    inits = pd.DatetimeIndex(["2020-01-12T06"])
    ic = InitialConditions(
        inits.values, torch.from_numpy(source.initial_states(inits, 2)), torch.from_numpy(source.static_fields()),
        truth=source,
    )  # fmt: skip
    done = []
    with pytest.raises(TimeAxisError, match="no state at 2020-01-13T00:00:00"):
        for step in generate(model, ic, 4):
            done.append(step.index)
    assert done == [0, 1]
    with pytest.raises(ConfigError, match=r"truth=TruthSource\.open"):
        next(generate(model, InitialConditions(ic.init_times, ic.states, ic.static), 1))


def test_manifest_differences_report_the_boundary_width(stores: dict[bool, str]) -> None:
    none, one, two = (_datamodule(stores[False], w).manifest for w in (0, 1, 2))
    assert one.differences(two) == ["boundary width differs (1 vs 2 cells): a limited-area model is trained "
                                    "with the truth in a strip of that width as forcing"]  # fmt: skip
    diffs = none.differences(two)
    assert any("forcing channels differ" in d and "boundary_2m_temperature" in d for d in diffs)
    assert any("boundary width differs (0 vs 2 cells)" in d for d in diffs)
    assert two.differences(ChannelManifest.from_dict(two.to_dict())) == []
    old = {k: v for k, v in none.to_dict().items() if k != "boundary_width"}  # written before the field
    assert ChannelManifest.from_dict(old).boundary_width == 0


def test_prediction_in_the_strip_is_the_truth_boundary() -> None:
    """A boundary-forced model keeps its own prediction inside the box and takes the truth in the strip, so
    the interior evolves under the true boundary (neural-lam's rule)."""
    from earthcast.models.tritoncast import TritonCast, size_config

    micro = dict(widths=(8, 16), core=dict(width=16, pattern="MF", heads=2, headdim=8, d_state=8))
    config = size_config("tiny", geometry="regional", output="direct", **micro)
    torch.manual_seed(0)
    forced = TritonCast(2, n_forcing=3, config=config, boundary=True).double().eval()
    free = TritonCast(2, n_forcing=3, config=config).double().eval()
    free.load_state_dict(forced.state_dict())
    h, w = 8, 12
    strip = torch.zeros(h, w, dtype=torch.float64)
    strip[:2], strip[-2:], strip[:, :2], strip[:, -2:] = 1, 1, 1, 1
    state = torch.randn(1, 1, 2, h, w, dtype=torch.float64)
    forcings = torch.randn(1, 2, 3, h, w, dtype=torch.float64)
    forcings[:, :, 2] = strip
    with torch.no_grad():
        out, own = forced(state, None, forcings), free(state, None, forcings)
    inside = strip == 0
    torch.testing.assert_close(out[..., inside], own[..., inside])
    torch.testing.assert_close(out[..., ~inside], forcings[:, -1, :2][..., ~inside])
    assert not torch.allclose(own[..., ~inside], out[..., ~inside])

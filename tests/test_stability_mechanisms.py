"""What keeps a free run stable: the polar filter, the conservation corrector, the tendency-normalised loss,
push-forward training and input noise, each against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lightning_helpers import quiet_trainer

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.synthetic import write_synthetic_store
from earthcast.errors import ConfigError
from earthcast.grids import wb2_grid
from earthcast.models.corrector import GlobalMeanCorrector
from earthcast.models.geometry import Halo, Upsample, prolong
from earthcast.models.tritoncast import TritonCast, size_config
from earthcast.models.zonal_filter import PolarMeanWindDamping, ZonalDamping, ZonalFilter, zonal_cutoffs
from earthcast.scoring.weights import latitude_weights
from earthcast.training import ForecastModule
from earthcast.training.losses import tendency_loss_scale, weighted_mse, zonal_amse

GRID = wb2_grid("64x32_equiangular_conservative")
LAT = np.asarray(GRID.latitude, dtype=np.float64)
MICRO = {
    "widths": [8, 16],
    "core": {"width": 16, "pattern": "AM", "heads": 2, "headdim": 8, "d_state": 8, "backend": "reference"},
}


# ------------------------------------------------------------------ polar filter
def test_polar_cutoffs_match_hand_values() -> None:
    cut = zonal_cutoffs(LAT, 64, 60.0)
    # 32 cos(87.1875°) / cos(60°) = 3.14 -> 3; 32 cos(81.5625°) / 0.5 = 9.39 -> 9; 75.94° -> 15.55 -> 15;
    # equatorward of 60° every row keeps all 32
    assert cut[0] == cut[-1] == 3
    assert cut[1] == cut[-2] == 9
    assert cut[2] == cut[-3] == 15
    assert (cut[np.abs(LAT) < 60] == 32).all()
    with pytest.raises(ConfigError, match="reference latitude"):
        zonal_cutoffs(LAT, 64, 95.0)
    # a truncation at T21 caps every row, the polar rule still applies poleward of 60°
    both = zonal_cutoffs(LAT, 64, 60.0, 21)
    assert both.max() == 21 and both[0] == 3 and both[2] == 15


def test_polar_filter_equals_a_per_row_numpy_truncation() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 32, 64))
    got = ZonalFilter(LAT, 64, 60.0, 21)(torch.from_numpy(x)).numpy()
    expected = x.copy()
    for row, lat in enumerate(LAT):
        kmax = 21
        if abs(lat) > 60:
            polar = math.floor(32 * math.cos(math.radians(abs(lat))) / math.cos(math.radians(60.0)) + 1e-9)
            kmax = min(kmax, max(polar, 1))
        spec = np.fft.rfft(x[..., row, :], axis=-1)
        spec[..., kmax + 1 :] = 0
        expected[..., row, :] = np.fft.irfft(spec, n=64, axis=-1)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.abs(got[..., 0, :] - x[..., 0, :]).max() > 0.1  # it did filter the polar row


def test_untrained_filtered_model_is_persistence() -> None:
    cfg = size_config("tiny", polar_filter=60.0, max_wavenumber=21, **MICRO)
    model = TritonCast(2, config=cfg, latitudes=LAT, width=64)
    state = torch.randn(1, 1, 2, 32, 64)
    torch.testing.assert_close(model(state), state[:, -1])
    with pytest.raises(ConfigError, match="global grid"):
        size_config("tiny", polar_filter=60.0, geometry="regional")
    with pytest.raises(ConfigError, match="global grid"):
        size_config("tiny", max_wavenumber=21, geometry="band")


def test_hyperdiffusion_damps_each_zonal_wave_by_its_factor() -> None:
    lon = np.arange(64) * 2 * np.pi / 64
    waves = {0: 1.0, 4: 0.5, 16: 2.0, 18: -1.0}
    x = sum(a * np.cos(k * lon + 0.3) for k, a in waves.items()) * np.ones((3, 1))  # (3 rows, 64)
    got = ZonalDamping(64, 18, 0.1)(torch.from_numpy(x)).numpy()
    expected = sum(a * math.exp(-0.1 * (k / 18) ** 8) * np.cos(k * lon + 0.3) for k, a in waves.items())
    np.testing.assert_allclose(got, expected * np.ones((3, 1)), atol=1e-12)
    # the damping sits inside the model's step: an untrained model damps persistence's high wavenumbers
    cfg = size_config("tiny", max_wavenumber=18, hyperdiffusion=0.1, **MICRO)
    model = TritonCast(1, config=cfg, latitudes=LAT, width=64)
    state = torch.from_numpy(np.tile(x[:1], (32, 1)))[None, None, None].float()
    torch.testing.assert_close(model(state)[0, 0, 5], torch.from_numpy(expected).float(), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="hyperdiffusion"):
        ZonalDamping(64, 18, -1.0)


def test_polar_mean_wind_damping_scales_only_the_zonal_mean_of_v_poleward() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 32, 64))
    got = PolarMeanWindDamping(LAT, 60.0, [1])(torch.from_numpy(x)).numpy()
    expected = x.copy()
    for row, lat in enumerate(LAT):
        if abs(lat) > 60:
            factor = math.cos(math.radians(abs(lat))) / math.cos(math.radians(60.0))
            mean = x[:, 1, row].mean(axis=-1, keepdims=True)
            expected[:, 1, row] = (x[:, 1, row] - mean) + factor * mean
    np.testing.assert_allclose(got, expected, atol=1e-6)  # the factors are float32 buffers
    assert np.abs(got[:, 1, 0].mean(-1)).max() < 0.11 * np.abs(x[:, 1, 0].mean(-1)).max()  # 87.19°: × 0.098
    np.testing.assert_array_equal(got[:, [0, 2]], x[:, [0, 2]])


def test_registry_damps_the_northward_components_only() -> None:
    from earthcast.datasets.channels import VECTOR_COMPONENTS

    assert VECTOR_COMPONENTS["u_component_of_wind"] == "v_component_of_wind"
    cfg = size_config("tiny", polar_mean_wind=60.0, **MICRO)
    model = TritonCast(
        4, config=cfg, latitudes=LAT, width=64, vector_channels=[1, 2], meridional_channels=[2]
    )
    assert model.polar_mean_wind is not None and model.polar_mean_wind.channels == [2]


# ------------------------------------------------------------------ prolongation
def test_bilinear_prolongation_wraps_longitude_like_numpy_periodic_interpolation() -> None:
    rng = np.random.default_rng(2)
    coarse = rng.standard_normal(16)  # one latitude circle of 16 cells, repeated on 8 rows
    x = torch.from_numpy(np.tile(coarse, (1, 1, 8, 1)))
    fine = prolong(x, 2, Halo("half", "circular")).numpy()[0, 0]
    centres = (np.arange(32) + 0.5) / 2 - 0.5  # fine cell centres in coarse index units
    expected = np.interp(centres, np.arange(-1, 17), np.concatenate([[coarse[-1]], coarse, [coarse[0]]]))
    assert fine.shape == (16, 32)
    np.testing.assert_allclose(fine[1:-1], np.tile(expected, (14, 1)), atol=1e-12)
    # the outermost fine rows lie a quarter cell from the fold: 3/4 of their circle, 1/4 of the circle
    # across the pole (rolled by 180°)
    np.testing.assert_allclose(fine[0], 0.75 * expected + 0.25 * np.roll(expected, 16), atol=1e-12)
    np.testing.assert_allclose(fine[-1], fine[0], atol=1e-12)


def test_bilinear_upsampling_puts_no_checkerboard_on_a_uniform_field() -> None:
    torch.manual_seed(0)
    uniform = torch.ones(1, 4, 8, 16)
    for mode, expect_flat in (("bilinear", True), ("transposed", False)):
        up = Upsample(4, 4, halo=Halo("half", "circular"), mode=mode)
        with torch.no_grad():
            y = up.expand(prolong(uniform, 2, up.halo)) if mode == "bilinear" else up.expand(uniform)
        spread = float((y - y.mean(dim=(-2, -1), keepdim=True)).abs().max())
        assert (spread < 1e-6) == expect_flat, (mode, spread)
    with pytest.raises(ConfigError, match="upsample"):
        Upsample(4, 4, mode="nearest")


# ------------------------------------------------------------------ corrector
def test_corrector_pins_the_area_weighted_mean_over_a_long_loop() -> None:
    weights = latitude_weights(LAT, "global")
    corrector = GlobalMeanCorrector(["ps"], ["t", "ps"], weights)
    gen = torch.Generator().manual_seed(0)
    state = torch.randn(2, 2, 32, 64, generator=gen)

    def wmean(x: torch.Tensor) -> np.ndarray:  # float64 WB2-weighted mean, numpy
        a = x.double().numpy()
        return (a.mean(-1) * weights).sum(-1) / weights.sum()

    start = wmean(state[:, 1])
    for _ in range(1460):  # a year of 6-hourly steps of a biased, noisy model
        pred = state + 0.05 + 0.1 * torch.randn(state.shape, generator=gen)
        nxt = corrector(pred, state)
        torch.testing.assert_close(nxt[:, 0], pred[:, 0])  # other channels untouched
        state = nxt
    np.testing.assert_allclose(wmean(state[:, 1]), start, atol=2e-5)
    assert np.abs(wmean(state[:, 0]) - wmean(torch.zeros(1, 32, 64))).min() > 10  # the bias did act


def test_corrector_names_an_unknown_channel() -> None:
    with pytest.raises(ConfigError, match=r"'surface_pressure'.*not state channels"):
        GlobalMeanCorrector(["surface_pressure"], ["t", "u"], np.ones(32))


# ------------------------------------------------------------------ loss normalisation
def test_tendency_loss_scale_gives_increments_unit_weight() -> None:
    stats = NormStats((0.0, 0.0), (2.0, 4.0), (1.0, 0.5), (), ())
    scale = tendency_loss_scale(stats)
    # (σ/σ_Δ)² = 4 and 64, normalised to mean 1
    torch.testing.assert_close(scale, torch.tensor([8 / 68, 128 / 68]))
    # the weighted MSE of state-normalised fields is then the mean of (increment error / σ_Δ)² over channels,
    # up to the constant normalisation
    rng = np.random.default_rng(1)
    err_phys = rng.standard_normal((3, 1, 2, 32, 64))
    pred = torch.from_numpy(err_phys / np.array([2.0, 4.0])[:, None, None])
    loss = weighted_mse(pred, torch.zeros_like(pred), torch.ones(32), scale, torch.ones(3, 32, 64))
    per_channel = (err_phys / np.array([1.0, 0.5])[:, None, None]) ** 2
    # Σ_c w_c mean[(e/σ)²] / Σ_c w_c with w_c = (σ/σ_Δ)² / 34 and Σ_c w_c = 2
    expected = per_channel.mean(axis=(0, 1, 3, 4)).sum() / 34 / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-10)


# ------------------------------------------------------------------ training options
@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> WB2DataModule:
    root = tmp_path_factory.mktemp("store")
    store = root / "synthetic.zarr"
    times = pd.date_range("2020-01-01", periods=120, freq="6h")
    write_synthetic_store(store, GRID, times, levels=(500,))
    return WB2DataModule(
        str(store),
        {"temperature": [500], "2m_temperature": None},
        static=["latitude"],
        forcings=["hour_of_day"],
        n_input=1,
        n_target=3,
        batch_size=2,
        train=("2020-01-01", "2020-01-20"),
        val=("2020-01-21", "2020-01-25"),
        test=("2020-01-26", "2020-01-30"),
        stats_cache_dir=str(root / "stats"),
    )


def _module(dm: WB2DataModule, **kwargs) -> ForecastModule:
    return ForecastModule(
        "tritoncast", "tiny", MICRO | {"output": "direct"}, manifest=dm.manifest.to_dict(),
        stats=dm.stats.to_dict(), **kwargs,
    )  # fmt: skip


def _batch(module: ForecastModule, dm: WB2DataModule) -> dict[str, torch.Tensor]:
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    return module.on_after_batch_transfer(raw, 0)


def test_push_forward_gradient_equals_a_naive_detached_loop(datamodule: WB2DataModule) -> None:
    torch.manual_seed(0)
    module = _module(datamodule, rollout_gradient="last", rollout_schedule={0: 3}).double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in _batch(module, datamodule).items()}
    module.trainer = None
    loss = module.training_step(batch, 0)
    loss.backward()
    got = [p.grad.clone() for p in module.model.parameters()]
    module.zero_grad()

    # reference: two steps by hand without gradients, then one step scored against the third target
    model, n = module.model, 1
    times = module.valid_times(batch["time"], 3)
    state = batch["inputs"]
    with torch.no_grad():
        for k in range(2):
            nxt = model(state, batch["static"], batch["forcings"][:, k : k + n + 1], times[:, k])
            state = torch.cat([state[:, 1:], nxt[:, None]], dim=1)
    pred = model(state, batch["static"], batch["forcings"][:, 2 : 2 + n + 1], times[:, 2])
    ref = weighted_mse(pred, batch["targets"][:, 2], module.lat_weights, module.chan_weights, batch["mask"])
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach())
    for a, b in zip(got, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)


def test_input_noise_has_the_tendency_std(datamodule: WB2DataModule) -> None:
    torch.manual_seed(0)
    module = _module(datamodule, input_noise=0.5)
    batch = _batch(module, datamodule)
    big = {**batch, "inputs": batch["inputs"].repeat(64, 1, 1, 1, 1), "mask": batch["mask"].repeat(64, 1, 1)}
    noise = module.training_inputs(big)["inputs"] - big["inputs"]
    std = noise.double().std(dim=(0, 1, 3, 4))
    expected = 0.5 * torch.tensor(datamodule.stats.tendency_std) / torch.tensor(datamodule.stats.state_std)
    torch.testing.assert_close(std, expected.double(), rtol=0.02, atol=0)
    assert module.training_inputs(batch)["targets"] is batch["targets"]  # targets stay clean
    with pytest.raises(ConfigError, match="input_noise"):
        _module(datamodule, input_noise=-1.0)


def test_rollout_gradient_and_loss_scale_are_checked(datamodule: WB2DataModule) -> None:
    with pytest.raises(ConfigError, match="rollout_gradient"):
        _module(datamodule, rollout_gradient="some")
    with pytest.raises(ConfigError, match="loss_scale"):
        _module(datamodule, loss_scale="tendencies")
    state = _module(datamodule, loss_scale="state")
    torch.testing.assert_close(state.chan_weights, torch.ones(2))


def test_push_forward_trains_through_the_trainer(datamodule: WB2DataModule) -> None:
    module = _module(datamodule, rollout_gradient="last", rollout_schedule={0: 1, 2: 3}, warmup_steps=1)
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4


def test_training_and_the_rollout_engine_agree_with_ema(datamodule: WB2DataModule, tmp_path) -> None:
    """One checkpoint, one truth window: ForecastModule's prediction (EMA weights) and ``earthcast rollout``
    agree to float round-off."""
    import xarray as xr

    from earthcast.rollout import RolloutConfig, run_rollout

    module = _module(datamodule, ema_decay=0.5, warmup_steps=1)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    datamodule.setup("test")
    raw = next(iter(datamodule.test_dataloader()))
    module.eval()
    with torch.no_grad():
        expected = module.predict_step(module.on_after_batch_transfer(raw, 0), 0)[0].numpy()  # (K, C, H, W)
    init = pd.Timestamp(int(raw["time"][0]))
    out = tmp_path / "fc.zarr"
    run_rollout(
        RolloutConfig(checkpoint=str(ckpt), data=datamodule.source.path, inits=init.isoformat(), lead="18h",
                      out=str(out), progress=False)
    )  # fmt: skip
    ds = xr.open_zarr(out, decode_timedelta=True)
    got = np.stack([ds["temperature"].sel(level=500).values[0], ds["2m_temperature"].values[0]], axis=1)
    scale = np.asarray(datamodule.stats.state_std)[None, :, None, None]
    assert np.abs((got - expected) / scale).max() < 1e-4  # float32 round-off of ~300 K values
    assert module.ema is not None and not torch.equal(
        next(module.ema.module.parameters()), next(module.model.parameters())
    )


def test_a_checkpoint_of_other_layers_gets_a_clear_error(datamodule: WB2DataModule, tmp_path) -> None:
    from earthcast.errors import CheckpointError
    from earthcast.training.checkpoints import load_module

    module = ForecastModule(
        "tritoncast", "tiny", MICRO | {"upsample": "transposed"}, manifest=datamodule.manifest.to_dict(),
        stats=datamodule.stats.to_dict(),
    )  # fmt: skip
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    ckpt = tmp_path / "old.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    saved["hyper_parameters"]["model_settings"].pop("upsample")  # as an earthcast before the option wrote it
    torch.save(saved, ckpt)
    with pytest.raises(CheckpointError, match=r"do not fit the model.*upsample: transposed"):
        load_module(ckpt)


def test_amse_against_hand_computed_waves() -> None:
    """One row, one wave: AMSE = (|X| − |Y|)² + 2 max(|X|, |Y|)² (1 − cos θ) per Parseval-weighted coefficient;
    with matched phases it equals the MSE, and for a wave of uncertain phase its minimum over the predicted
    amplitude is the target's (MSE's is a shrunken wave)."""
    lon = torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
    target = torch.cos(3 * lon)[None, None, None, :]  # (B, C, H, W): X_3 = 1/2 with norm="forward"
    ones_h, ones_c = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    for amp, shift in ((0.6, 0.0), (0.6, math.pi / 2), (1.4, 2.0)):
        pred = amp * torch.cos(3 * lon - shift)[None, None, None, :]
        # |X| = amp/2, |Y| = 1/2, cos θ = cos(shift), Parseval weight 2 at k = 3
        expected = 2 * ((amp / 2 - 0.5) ** 2 + 2 * max(amp / 2, 0.5) ** 2 * (1 - math.cos(shift)))
        got = zonal_amse(pred, target, ones_h, ones_c)
        assert math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-12)
        if shift == 0.0:
            mse = weighted_mse(pred, target, ones_h, ones_c, torch.ones(1, 1, 16))
            assert math.isclose(float(got), float(mse), rel_tol=1e-9)
    # random phases: the expected loss over phases is lowest at amplitude 1 for AMSE, at 0 for MSE
    phases = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)[:-1]
    targets = torch.cos(3 * lon[None] - phases[:, None])[:, None, None, :]  # (63, 1, 1, 16)
    amps = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)
    mask = torch.ones(63, 1, 16)
    amse = [
        float(zonal_amse(a * torch.cos(3 * lon).expand_as(targets), targets, ones_h, ones_c)) for a in amps
    ]
    mse = [
        float(weighted_mse(a * torch.cos(3 * lon).expand_as(targets), targets, ones_h, ones_c, mask))
        for a in amps
    ]
    assert float(amps[int(np.argmin(amse))]) == 1.0 and float(amps[int(np.argmin(mse))]) == 0.0


def test_amse_needs_full_latitude_circles(datamodule: WB2DataModule) -> None:
    box = {**datamodule.manifest.to_dict(), "geometry": "regional"}
    with pytest.raises(ConfigError, match=r"loss_function 'amse' .* 'regional'.*use loss_function 'mse'"):
        ForecastModule(manifest=box, stats=datamodule.stats.to_dict(), loss_function="amse")
    module = _module(datamodule, loss_function="amse")
    batch = _batch(module, datamodule)
    preds, _ = module.unroll(batch, 1)
    expected = zonal_amse(preds, batch["targets"][:, :1], module.lat_weights, module.chan_weights)
    torch.testing.assert_close(module.loss(preds, batch), expected)

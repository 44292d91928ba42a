"""Truth rewards of earthcast.planners.rewards against hand counts and float64 loop references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.rewards import (
    CSI,
    SSIM,
    Composite,
    SpectrumError,
    WeightedMSE,
    percentile_threshold,
    zonal_power,
)

# 4x4 events; by hand: hits (0,0),(1,1); false alarms (1,0),(2,3); misses (1,2),(3,3).
PRED = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)
TRUTH = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)


def _field(events: torch.Tensor) -> torch.Tensor:
    """(1, 2, 4, 4): channel 1 holds the events, channel 0 is noise that must not matter."""
    return torch.stack([torch.randn(4, 4) * 10, events])[None]


def test_csi_hand_counts_unweighted_and_weighted() -> None:
    assert CSI(1, 0.5)(_field(PRED), _field(TRUTH)).item() == pytest.approx(2 / 6)
    # rows weighted 0.5, 1.5, 1, 1: hits 0.5 + 1.5, false alarms 1.5 + 1, misses 1.5 + 1.
    w = torch.tensor([0.5, 1.5, 1.0, 1.0])
    assert CSI(1, 0.5, lat_weights=w)(_field(PRED), _field(TRUTH)).item() == pytest.approx(2 / 7)


def test_csi_pooling_by_hand() -> None:
    # pool 2: pred [[1,0],[0,1]], truth [[1,1],[0,1]] -> 2 hits, 1 miss.
    assert CSI(1, 0.5, pool=2)(_field(PRED), _field(TRUTH)).item() == pytest.approx(2 / 3)
    # pool 3 (partial edge windows): pred [[1,1],[0,0]], truth [[1,0],[0,1]]; pooled row weights
    # mean(0.2, 0.4, 0.6) = 0.4 and 2.8: hit 0.4, false alarm 0.4, miss 2.8.
    w = torch.tensor([0.2, 0.4, 0.6, 2.8])
    assert CSI(1, 0.5, pool=3, lat_weights=w)(_field(PRED), _field(TRUTH)).item() == pytest.approx(1 / 9)


def test_csi_abs_and_anomaly_transforms() -> None:
    signs = torch.where(torch.rand(4, 4) < 0.5, -1.0, 1.0)
    pred, truth = _field(PRED * 3 * signs), _field(TRUTH * 3 * -signs)
    assert CSI(1, 2.0, transform="abs")(pred, truth).item() == pytest.approx(2 / 6)
    reference = torch.randn(4, 4) * 100
    anomaly = CSI(1, 0.5, transform="anomaly", reference=reference)
    assert anomaly(_field(PRED) + reference, _field(TRUTH) + reference).item() == pytest.approx(2 / 6)
    with pytest.raises(ConfigError, match="reference"):
        CSI(1, 0.5, transform="anomaly")


def test_csi_no_event_is_one_and_missed_event_is_zero() -> None:
    empty = _field(torch.zeros(4, 4))
    assert CSI(1, 0.5)(empty, empty).item() == 1.0
    assert CSI(1, 0.5)(empty, _field(TRUTH)).item() == 0.0


def test_csi_leading_dims() -> None:
    cases = [(PRED, TRUTH, 2 / 6), (PRED, PRED, 1.0), (torch.zeros(4, 4), TRUTH, 0.0)]
    pred = torch.cat([_field(p) for p, _, _ in cases]).reshape(1, 3, 2, 4, 4).expand(2, 3, 2, 4, 4)
    truth = torch.cat([_field(t) for _, t, _ in cases]).reshape(1, 3, 2, 4, 4)
    out = CSI(1, 0.5)(pred, truth)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, torch.tensor([[c for *_, c in cases]] * 2))


def test_percentile_threshold_matches_numpy_and_weighted_hand_case() -> None:
    samples = np.random.default_rng(1).normal(size=(3, 4, 5))
    reference = np.random.default_rng(2).normal(size=(4, 5))
    for q in (10.0, 50.0, 93.7):
        assert percentile_threshold(samples, q) == pytest.approx(np.percentile(samples, q))
        assert percentile_threshold(torch.from_numpy(samples), q, transform="abs") == pytest.approx(
            np.percentile(np.abs(samples), q)
        )
        got = percentile_threshold(samples, q, transform="anomaly", reference=reference)
        assert got == pytest.approx(np.percentile(samples - reference, q))
        assert percentile_threshold(samples, q, lat_weights=np.ones(4)) == pytest.approx(
            np.percentile(samples, q)
        )
    # values 1, 2 (weight 0.5) and 3, 4 (weight 1.5) sit at 0, 0.2, 0.4, 1: the median is 3 + 0.1 / 0.6.
    hand = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    assert percentile_threshold(hand, 50, lat_weights=[0.5, 1.5]) == pytest.approx(3 + 1 / 6)
    with pytest.raises(ConfigError, match="between 0 and 100"):
        percentile_threshold(hand, 100)


def test_csi_check_range_warns_outside_only() -> None:
    with pytest.warns(UserWarning, match="channel 3"):
        CSI(3, 10.0).check_range(0.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CSI(3, 2.0).check_range(0.0, 5.0)


def _ssim_loops(x: np.ndarray, y: np.ndarray, window: int, sigma: float, span: float) -> float:
    """Float64 SSIM of one (H, W) pair by explicit loops: circular in W, clamped rows in H."""
    height, width = x.shape
    r = window // 2
    g = [math.exp(-((a - r) ** 2) / (2 * sigma**2)) for a in range(window)]
    total = sum(g) ** 2
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    values = []
    for i in range(height):
        for j in range(width):
            cells = [
                (g[a] * g[b] / total, min(max(i + a - r, 0), height - 1), (j + b - r) % width)
                for a in range(window)
                for b in range(window)
            ]
            mx = sum(w * x[h, v] for w, h, v in cells)
            my = sum(w * y[h, v] for w, h, v in cells)
            vx = sum(w * (x[h, v] - mx) ** 2 for w, h, v in cells)
            vy = sum(w * (y[h, v] - my) ** 2 for w, h, v in cells)
            cxy = sum(w * (x[h, v] - mx) * (y[h, v] - my) for w, h, v in cells)
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


@pytest.mark.parametrize("offset", [0.0, 280.0])
def test_ssim_matches_float64_loops(offset: float) -> None:
    rng = np.random.default_rng(3)
    y = offset + rng.normal(size=(2, 2, 8, 16))
    x = y + 0.5 * rng.normal(size=y.shape)
    got = SSIM(window=5, sigma=1.2)(torch.tensor(x), torch.tensor(y))
    assert got.dtype == torch.float32 and got.shape == (2,)
    for n in range(2):
        spans = [np.ptp(y[n, c]) for c in range(2)]
        want = np.mean([_ssim_loops(x[n, c], y[n, c], 5, 1.2, spans[c]) for c in range(2)])
        assert got[n].item() == pytest.approx(want, abs=1e-5)
    fixed = SSIM(channels=[1], data_range=torch.tensor([1.0, 4.0]))(torch.tensor(x), torch.tensor(y))
    assert fixed[0].item() == pytest.approx(_ssim_loops(x[0, 1], y[0, 1], 7, 1.5, 4.0), abs=1e-5)


def test_ssim_identity_and_no_seam_at_the_date_line() -> None:
    y = torch.randn(3, 2, 8, 16)
    x = y + 0.3 * torch.randn(3, 2, 8, 16)
    torch.testing.assert_close(SSIM()(y, y), torch.ones(3))
    rolled = SSIM()(x.roll(5, dims=-1), y.roll(5, dims=-1))
    torch.testing.assert_close(rolled, SSIM()(x, y), atol=1e-6, rtol=0)


def test_zonal_power_matches_explicit_dft() -> None:
    x = np.random.default_rng(4).normal(size=(2, 3, 5, 8))
    w = np.array([0.2, 0.8, 1.5, 1.5, 1.0])
    width = x.shape[-1]
    want = np.zeros((2, 3, width // 2 + 1))
    for k in range(width // 2 + 1):
        basis = np.exp(-2j * np.pi * k * np.arange(width) / width)
        coeff = (x * basis).sum(-1) / width  # (2, 3, 5)
        want[..., k] = (np.abs(coeff) ** 2 * w).sum(-1) / w.sum()
    np.testing.assert_allclose(zonal_power(torch.tensor(x), torch.tensor(w)).numpy(), want, rtol=1e-10)


def test_spectrum_error_zero_for_identical_and_log_ratio_for_scaled() -> None:
    y = torch.randn(2, 3, 6, 16, dtype=torch.float64)
    reward = SpectrumError(lat_weights=torch.linspace(0.5, 1.5, 6))
    assert torch.equal(reward(y, y), torch.zeros(2, dtype=torch.float64))
    # doubling a field quadruples its power at every wavenumber (eps is relative too).
    torch.testing.assert_close(reward(2 * y, y), torch.full((2,), -math.log(4.0), dtype=torch.float64))
    assert bool((SpectrumError(channels=[0])(y + torch.randn_like(y), y) < 0).all())


def test_weighted_mse_matches_hand_formula() -> None:
    rng = np.random.default_rng(5)
    p, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(3, 4, 5))
    w_lat, w_c, scale = np.array([0.5, 1.0, 1.5, 1.0]), np.array([1.0, 2.0, 0.5]), np.array([1.0, 10.0, 0.1])
    want = np.zeros(2)
    for n in range(2):
        for c in range(3):
            for h in range(4):
                for v in range(5):
                    want[n] -= w_lat[h] * w_c[c] * ((p[n, c, h, v] - t[c, h, v]) / scale[c]) ** 2 / 60
    reward = WeightedMSE(torch.tensor(w_lat), torch.tensor(w_c), torch.tensor(scale))
    np.testing.assert_allclose(reward(torch.tensor(p), torch.tensor(t)).numpy(), want, rtol=1e-12)


def test_composite_sum_flags_and_missing_truth() -> None:
    from earthcast.planners.critics import AgreementCritic

    p, t = torch.randn(2, 3, 2, 4, 8), torch.randn(2, 1, 2, 4, 8)
    mse, spectrum = WeightedMSE(torch.ones(4)), SpectrumError()
    composite = Composite([(mse, 2.0), (spectrum, 0.5)])
    torch.testing.assert_close(composite(p, t), 2 * mse(p, t) + 0.5 * spectrum(p, t))
    for reward in (CSI(0, 1.0), SSIM(), spectrum, mse, composite):
        assert reward.needs_truth
        with pytest.raises(ConfigError, match="needs the truth; at inference use a critic"):
            reward(p, None)
    assert not Composite([(AgreementCritic(), 1.0)]).needs_truth
    assert Composite([(AgreementCritic(), 1.0), (mse, 1.0)]).needs_truth

"""Deterministic, ensemble and SEEPS metrics against hand-computed values and brute-force loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from earthcast.scoring.ensemble import crps_spread_pointwise, ensemble_block, ensemble_time_mean
from earthcast.scoring.metrics import (
    AreaMean,
    deterministic_block,
    deterministic_time_mean,
    wind_vector_block,
)
from earthcast.scoring.seeps import seeps_block, seeps_pointwise

# Two grid points (H=2, W=1) with area weights 1 and 3: easy to do by hand.
AREA = AreaMean(np.array([[[1.0], [3.0]]]))


def _col(a: float, b: float) -> np.ndarray:
    return np.array([[a], [b]])


def test_acc_by_hand_per_init_then_mean() -> None:
    clim = np.stack([_col(10, 20), _col(10, 20)])
    # init 0: anomalies f' = (1, 2), o' = (2, 1) -> (1·1·2 + 3·2·1) / sqrt((1 + 3·4)(4 + 3·1)) = 8/sqrt(91)
    # init 1: f' = (1, -1), o' = (1, 1)          -> (1 − 3) / sqrt(4 · 4) = −0.5
    f = np.stack([_col(11, 22), _col(11, 19)])
    o = np.stack([_col(12, 21), _col(11, 21)])
    per_init = deterministic_block(f, o, AREA, clim)
    scores = deterministic_time_mean(per_init)
    assert scores["acc"][0] == pytest.approx((8 / math.sqrt(91) - 0.5) / 2, rel=1e-12)
    pooled = ((8 + -2) / 4 / 2) / math.sqrt(((13 / 4 + 4 / 4) / 2) * ((7 / 4 + 4 / 4) / 2))
    assert scores["acc_pooled"][0] == pytest.approx(pooled, rel=1e-12)


def test_rmse_sqrt_after_versus_before_time_mean() -> None:
    o = np.zeros((2, 2, 1))
    f = np.stack([np.full((2, 1), 1.0), np.full((2, 1), -3.0)])  # per-init MSE 1 and 9
    scores = deterministic_time_mean(deterministic_block(f, o, AREA))
    assert scores["mse"][0] == pytest.approx(5.0)
    assert scores["rmse"][0] == pytest.approx(math.sqrt(5.0))  # WB2 headline: sqrt after the time mean
    assert scores["rmse_sqrt_before_time_avg"][0] == pytest.approx(2.0)  # (1 + 3) / 2
    assert scores["bias"][0] == pytest.approx(-1.0) and scores["mae"][0] == pytest.approx(2.0)


def test_wind_vector_mse_by_hand() -> None:
    fu, fv = _col(1, 0), _col(0, 2)
    ou, ov = _col(0, 0), _col(0, 0)
    # (1² + 0²)·1 + (0² + 2²)·3 over weights 4 -> 13/4
    assert wind_vector_block(fu, fv, ou, ov, AREA)["mse"][0] == pytest.approx(13 / 4)


def _crps_brute(members: np.ndarray, y: float) -> tuple[float, float]:
    m = len(members)
    skill = sum(abs(x - y) for x in members) / m
    spread = sum(abs(a - b) for a, b in itertools.product(members, members)) / (m * (m - 1)) if m > 1 else 0.0
    return skill, spread


@pytest.mark.parametrize("m", [1, 2, 5])
def test_crps_matches_double_loop(m: int) -> None:
    rng = np.random.default_rng(m)
    x = rng.normal(size=(3, m, 2, 1)).round(1)  # rounding makes ties likely
    y = rng.normal(size=(3, 2, 1))
    per_init = ensemble_block(x, y, AREA)
    for t in range(3):
        pts = [_crps_brute(x[t, :, h, 0], y[t, h, 0]) for h in range(2)]
        skill = (pts[0][0] + 3 * pts[1][0]) / 4
        spread = (pts[0][1] + 3 * pts[1][1]) / 4
        assert per_init["crps_skill"][t, 0] == pytest.approx(skill, rel=1e-12)
        assert per_init["crps_spread"][t, 0] == pytest.approx(spread, rel=1e-12, abs=1e-15)
    scores = ensemble_time_mean(per_init)
    assert scores["crps"][0] == pytest.approx(np.mean(per_init["crps_skill"] - 0.5 * per_init["crps_spread"]))


def test_crps_spread_with_ties_and_nan() -> None:
    assert crps_spread_pointwise(np.array([1.0, 1.0, 4.0]), axis=0) == pytest.approx((3 + 3) * 2 / 6)
    assert np.isnan(crps_spread_pointwise(np.array([1.0, np.nan, 4.0]), axis=0))


def test_ensemble_mean_variance_and_spread_skill_by_hand() -> None:
    x = np.array([[[[1.0], [1.0]], [[3.0], [3.0]]]])  # one init, members 1 and 3 at both points
    y = np.array([[[0.0], [0.0]]])
    per_init = ensemble_block(x, y, AREA)
    assert per_init["ensemble_mean_mse"][0, 0] == pytest.approx(4.0)  # (2 − 0)²
    assert per_init["ensemble_variance"][0, 0] == pytest.approx(2.0)  # ddof=1
    assert per_init["debiased_ensemble_mean_mse"][0, 0] == pytest.approx(4.0 - 2.0 / 2)
    scores = ensemble_time_mean(per_init)
    assert scores["spread_skill"][0] == pytest.approx(math.sqrt(2) / 2)
    assert scores["unbiased_spread_skill"][0] == pytest.approx(math.sqrt(2 / 3))


def test_single_member_spread_and_variance_are_zero() -> None:
    x = np.ones((1, 1, 2, 1))
    per_init = ensemble_block(x, np.zeros((1, 2, 1)), AREA)
    assert per_init["crps_spread"][0, 0] == 0 and per_init["ensemble_variance"][0, 0] == 0
    assert np.isnan(per_init["debiased_ensemble_mean_mse"][0, 0])


def _seeps_reference(f: float, o: float, wet: float, p1: float, dry: float) -> float:
    def cat(x: float) -> int | None:
        if x < dry:
            return 0
        if dry < x < wet:
            return 1
        if x >= wet:
            return 2
        return None  # x == dry: WB2 puts it in no category

    table = [
        [0, 1 / (1 - p1), 4 / (1 - p1)],
        [1 / p1, 0, 3 / (1 - p1)],
        [1 / p1 + 3 / (2 + p1), 3 / (2 + p1), 0],
    ]
    if not 0.1 < p1 < 0.85:
        return math.nan
    cf, co = cat(f), cat(o)
    return 0.0 if cf is None or co is None else 0.5 * table[cf][co]


def test_seeps_matches_rodwell_table_including_quirks() -> None:
    dry = 0.25e-3
    wet, p1 = 2e-3, 0.4
    values = [0.0, 0.1e-3, dry, 1e-3, wet, 5e-3]
    for f, o in itertools.product(values, values):
        got = seeps_pointwise(np.array([[f]]), np.array([[o]]), np.array([[wet]]), np.array([[p1]]), 0.25)
        assert got[0, 0] == pytest.approx(_seeps_reference(f, o, wet, p1, dry), rel=1e-12, abs=0)
    masked = seeps_pointwise(
        np.array([[0.0]]), np.array([[5e-3]]), np.array([[wet]]), np.array([[0.9]]), 0.25
    )
    assert np.isnan(masked[0, 0])


def test_seeps_compares_float32_data_in_float32_as_wb2() -> None:
    """float32 precipitation exactly at float32(0.25 mm) is in no category (WB2 compares in float32), so
    it scores 0 against any truth; in float64 it would have been 'light' (float32(2.5e-4) > 2.5e-4)."""
    at_dry = np.full((1, 2), 0.25e-3, dtype=np.float32)
    heavy = np.full((1, 2), 5e-3, dtype=np.float32)
    wet, p1 = np.full((1, 2), 2e-3, dtype=np.float32), np.full((1, 2), 0.4)
    assert float(np.float32(0.25e-3)) > 0.25e-3  # the premise: the float32 threshold sits above 2.5e-4
    np.testing.assert_array_equal(seeps_pointwise(at_dry, heavy, wet, p1, 0.25), 0.0)
    np.testing.assert_array_equal(seeps_pointwise(heavy, at_dry, wet, p1, 0.25), 0.0)
    # the same value in float64 is above the float64 threshold: light against heavy
    light = seeps_pointwise(at_dry.astype(np.float64), heavy, wet, p1, 0.25)
    np.testing.assert_allclose(light, 0.5 * 3 / (1 - 0.4))


def test_seeps_area_mean_skips_masked_points() -> None:
    f, o = _col(0.0, 0.0), _col(5e-3, 5e-3)
    wet = _col(2e-3, 2e-3)
    p1 = _col(0.5, 0.95)  # the second point is masked (p1 ≥ 0.85)
    got = seeps_block(f, o, wet, p1, 0.25, AREA)["seeps"][0]
    assert got == pytest.approx(0.5 * 4 / (1 - 0.5))

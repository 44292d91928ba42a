"""Ensemble WB2 metrics on NumPy blocks: fair CRPS, ensemble-mean MSE, variance, spread/skill.

Definitions (``weatherbench2/metrics.py``), with X_m the M members and Y the truth at one point:

- ``crps_skill``  = mean_m |X_m − Y|
- ``crps_spread`` = Σ_{i,j} |X_i − X_j| / (M(M−1))  (0 when M = 1); computed in O(M log M) from the
  sorted members: Σ_{i,j}|X_i − X_j| = 2 Σ_i (2i − M − 1) X_(i)
- ``crps``        = crps_skill − ½ crps_spread (the *fair* CRPS)
- ``ensemble_mean_mse`` = (X̄ − Y)²; ``debiased_ensemble_mean_mse`` = (X̄ − Y)² − var(X)/M
- ``ensemble_variance`` = var(X) with ddof = 1 (0 when M = 1)

each area-averaged per (init, lead, level), then averaged over inits. ``spread_skill`` =
√(mean ensemble_variance) / √(mean ensemble_mean_mse) (what WB2's visualisation divides);
``unbiased_spread_skill`` = √(mean ensemble_variance / mean debiased_ensemble_mean_mse)
(WeatherBench-X ``UnbiasedSpreadSkillRatio``).
"""

from __future__ import annotations

import numpy as np

from earthcast.scoring.metrics import AreaMean

ENSEMBLE_DIMS = ("number", "realization")
"""Member dimension names: ``number`` (IFS ENS, WB2 ``evaluate.py`` default) or ``realization``."""

ENSEMBLE_METRICS = (
    "crps",
    "crps_spread",
    "crps_skill",
    "ensemble_mean_mse",
    "debiased_ensemble_mean_mse",
    "ensemble_variance",
    "spread_skill",
    "unbiased_spread_skill",
)


def crps_spread_pointwise(members: np.ndarray, axis: int = -3) -> np.ndarray:
    """Σ_{i,j}|X_i − X_j| / (M(M−1)) along ``axis``; zeros for M = 1. NaN members give NaN."""
    x = np.moveaxis(np.asarray(members, dtype=np.float64), axis, -1)
    m = x.shape[-1]
    if m < 2:
        return np.zeros(x.shape[:-1])
    coef = 2.0 * np.arange(1, m + 1) - m - 1
    return 2.0 * (np.sort(x, axis=-1) @ coef) / (m * (m - 1))


def ensemble_block(forecast: np.ndarray, truth: np.ndarray, area: AreaMean) -> dict[str, np.ndarray]:
    """Per-init area means of the ensemble fields.

    Args:
        forecast: (…, M, H, W) members on the third-from-last axis.
        truth: (…, H, W).
        area: the region area mean.

    Returns:
        ``{"crps_skill", "crps_spread", "ensemble_mean_mse", "debiased_ensemble_mean_mse",
        "ensemble_variance"}`` each (…, R).
    """
    x = np.asarray(forecast, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    m = x.shape[-3]
    mean = x.mean(axis=-3)
    sq_err = (mean - y) ** 2
    variance = x.var(axis=-3, ddof=1) if m > 1 else np.full(mean.shape, np.nan)
    fields = {
        "crps_skill": np.abs(x - y[..., None, :, :]).mean(axis=-3),
        "crps_spread": crps_spread_pointwise(x, axis=-3),
        "ensemble_mean_mse": sq_err,
        "debiased_ensemble_mean_mse": sq_err - variance / m,
        "ensemble_variance": variance if m > 1 else np.zeros(mean.shape),
    }
    means = area(np.stack(list(fields.values())))
    return dict(zip(fields, means))


def ensemble_time_mean(per_init: dict[str, np.ndarray], *, axis: int = 0) -> dict[str, np.ndarray]:
    """Reduce per-init ensemble area means over inits (``axis``) into the WB2/WB-X ensemble metrics."""
    out = {name: per_init[name].mean(axis) for name in ENSEMBLE_METRICS[1:6]}
    out["crps"] = (per_init["crps_skill"] - 0.5 * per_init["crps_spread"]).mean(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["spread_skill"] = np.sqrt(out["ensemble_variance"]) / np.sqrt(out["ensemble_mean_mse"])
        out["unbiased_spread_skill"] = np.sqrt(out["ensemble_variance"] / out["debiased_ensemble_mean_mse"])
    return {name: out[name] for name in ENSEMBLE_METRICS}

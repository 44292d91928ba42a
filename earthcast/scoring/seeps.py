"""SEEPS (Stable Equitable Error in Probability Space, Rodwell et al. 2010) exactly as WB2 computes it.

Categories per point, with d the dry threshold (0.25 mm for 24 h, 0.1 mm for 6 h accumulations, in
metres) and w the climatological wet threshold at the valid time's (dayofyear, hour):
dry x < d, light d < x < w, heavy x ≥ w, compared in the data's own dtype as WB2 does. A value exactly
equal to d is in no category (WB2 quirk) and scores 0. The score is ½ · S[forecast category, truth category] with p1 the dry fraction averaged over
hour × dayofyear::

            truth: dry            light          heavy
    dry     [0,                   1/(1−p1),      4/(1−p1)]
    light   [1/p1,                0,             3/(1−p1)]
    heavy   [1/p1 + 3/(2+p1),     3/(2+p1),      0       ]

Points with p1 ≤ 0.1 or p1 ≥ 0.85 are masked (NaN) and the area mean skips NaNs (``skipna=True``).
The climatology holds ``{precip}_seeps_threshold`` (m) and ``{precip}_seeps_dry_fraction`` (0…1).
"""

from __future__ import annotations

import numpy as np

from earthcast.scoring.metrics import AreaMean

SEEPS_VARIABLES: dict[str, tuple[str, float]] = {
    "total_precipitation_24hr": ("seeps_24hr", 0.25),
    "total_precipitation_6hr": ("seeps_6hr", 0.1),
}
"""Precipitation variable → (WB2 metric name, dry threshold in mm)."""

MIN_P1 = 0.1
MAX_P1 = 0.85


def _categories(x: np.ndarray, dry_m: float, wet: np.ndarray) -> np.ndarray:
    """(3, …) float: dry, light, heavy indicators; NaN where x is NaN.

    The comparisons run in x's own dtype, as WB2's do (a Python float threshold against a float32 array
    compares in float32): float32 data exactly at float32(0.25 mm) is then in no category, where a float64
    comparison would call it light."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    dry = x.dtype.type(dry_m)
    with np.errstate(invalid="ignore"):
        cats = np.stack([x < dry, (x > dry) & (x < wet), x >= wet]).astype(np.float64)
    cats[:, np.isnan(x)] = np.nan
    return cats


def seeps_scoring_matrix(p1: np.ndarray) -> np.ndarray:
    """(3, 3, H, W) = ½ · S[forecast category, truth category] for dry fraction p1 (H, W)."""
    p1 = np.asarray(p1, dtype=np.float64)
    zero = np.zeros_like(p1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = [
            [zero, 1 / (1 - p1), 4 / (1 - p1)],
            [1 / p1, zero, 3 / (1 - p1)],
            [1 / p1 + 3 / (2 + p1), 3 / (2 + p1), zero],
        ]
    return 0.5 * np.array(rows)


def seeps_pointwise(
    forecast: np.ndarray,
    truth: np.ndarray,
    wet_threshold: np.ndarray,
    p1: np.ndarray,
    dry_threshold_mm: float,
) -> np.ndarray:
    """SEEPS per point.

    Args:
        forecast, truth: (…, H, W) accumulations in metres.
        wet_threshold: (…, H, W) heavy-precipitation threshold in metres at each valid time.
        p1: (H, W) climatological dry fraction averaged over hour × dayofyear.
        dry_threshold_mm: 0.25 (24 h) or 0.1 (6 h).

    Returns:
        (…, H, W) float64, NaN where p1 is outside (0.1, 0.85) or an input is NaN.
    """
    dry = dry_threshold_mm / 1000.0
    wet = np.asarray(wet_threshold)
    fc = _categories(forecast, dry, wet)
    tc = _categories(truth, dry, wet)
    matrix = seeps_scoring_matrix(p1)
    score = np.zeros(np.broadcast_shapes(fc.shape[1:], tc.shape[1:]))
    for i in range(3):
        for j in range(3):
            score = score + fc[i] * tc[j] * matrix[i, j]
    p1 = np.asarray(p1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = (p1 < MAX_P1) & (p1 > MIN_P1)
    return np.where(keep, score, np.nan)


def seeps_block(
    forecast: np.ndarray,
    truth: np.ndarray,
    wet_threshold: np.ndarray,
    p1: np.ndarray,
    dry_threshold_mm: float,
    area: AreaMean,
) -> dict[str, np.ndarray]:
    """Per-init area-mean SEEPS (NaNs skipped), as ``{"seeps": (…, R)}``."""
    score = seeps_pointwise(forecast, truth, wet_threshold, p1, dry_threshold_mm)
    return {"seeps": area(score, skipna=True)}

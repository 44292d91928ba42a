"""The training climate a planner measures against: thresholds equal numpy's float64 percentiles (exact at
multiples of 0.1 percent, the table's resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.reference import ClimateReference


def test_thresholds_and_means_match_a_float64_reference():
    rng = np.random.default_rng(0)
    states = rng.normal(280.0, 5.0, size=(12, 2, 4, 8))
    ref = ClimateReference(2, 4, 8)
    ref.fit(torch.from_numpy(states).float(), torch.ones(4))
    assert ref.ready
    mean = states.mean(axis=0)
    for c in range(2):
        for q in (5.0, 50.0, 95.0, 97.5, 99.9):
            assert ref.threshold(c, q) == pytest.approx(np.percentile(states[:, c], q), rel=1e-5)
            assert ref.threshold(c, q, "abs") == pytest.approx(
                np.percentile(np.abs(states[:, c]), q), rel=1e-5
            )
            anomaly = states[:, c] - mean[c]
            assert ref.threshold(c, q, "anomaly") == pytest.approx(np.percentile(anomaly, q), abs=1e-3)
        assert ref.range(c) == pytest.approx((states[:, c].min(), states[:, c].max()), rel=1e-6)
    np.testing.assert_allclose(ref.global_mean.numpy(), states.mean(axis=(0, 2, 3)), rtol=1e-6)
    with pytest.raises(ConfigError, match="percentile"):
        ref.threshold(0, 101)
    with pytest.raises(ConfigError, match="transform"):
        ref.threshold(0, 50, "square")
    with pytest.raises(ConfigError, match="empty"):
        ClimateReference(2, 4, 8).threshold(0, 50)

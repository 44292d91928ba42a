"""The training climate a planner measures candidates against, held as buffers (saved in checkpoints).

Built once from a sample of training-split states (physical units), never from validation or test data:

- ``mean_field`` (C, H, W): the time mean, the reference of anomaly thresholds (T850 anomaly);
- ``global_mean`` (C,) and ``global_std`` (C,): area-weighted global means, for the conservation critic;
- ``log_power`` (C, W//2 + 1): the mean log zonal power spectrum, for the spectrum critic;
- ``percentiles`` (3, C, 1001): percentiles 0, 0.1, …, 100 of the values, of |values| and of anomalies, so CSI
  thresholds given as climatological percentiles resolve to physical units (exact at multiples of 0.1, linear
  between them).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from earthcast.errors import ConfigError
from earthcast.planners.rewards import log_zonal_power

TRANSFORMS: tuple[str, ...] = ("value", "abs", "anomaly")
STEPS = 1000
"""Percentile table resolution: 0.1 percent."""


class ClimateReference(nn.Module):
    """Climate statistics of C channels on an H×W grid (see the module docstring).

    Args:
        channels, height, width: the state's shape.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.register_buffer("mean_field", torch.zeros(channels, height, width))
        self.register_buffer("global_mean", torch.zeros(channels))
        self.register_buffer("global_std", torch.ones(channels))
        self.register_buffer("log_power", torch.zeros(channels, width // 2 + 1))
        self.register_buffer("percentiles", torch.zeros(len(TRANSFORMS), channels, STEPS + 1))
        self.register_buffer("samples", torch.zeros((), dtype=torch.int64))

    @property
    def ready(self) -> bool:
        """Whether :meth:`fit` has run (a loaded checkpoint carries the fitted buffers)."""
        return int(self.samples) > 0

    @torch.no_grad()
    def fit(self, states: torch.Tensor, lat_weights: torch.Tensor) -> None:
        """Fill the buffers from training states (T, C, H, W) in physical units; ``lat_weights`` (H,)."""
        x = states.double()
        w = lat_weights.double().to(x.device)[:, None]
        self.mean_field.copy_(x.mean(dim=0))
        gm = (x * w).mean(dim=(-2, -1))  # (T, C) area-weighted global means
        self.global_mean.copy_(gm.mean(dim=0))
        self.global_std.copy_(gm.std(dim=0, unbiased=False).clamp_min(1e-6) if x.shape[0] > 1 else 1.0)
        log_power = log_zonal_power(x.float(), lat_weights.to(x.device))  # (T, C, W//2+1)
        self.log_power.copy_(log_power.mean(dim=0))
        q = np.linspace(0.0, 100.0, STEPS + 1)
        for i, values in enumerate((x, x.abs(), x - x.mean(dim=0))):
            flat = values.transpose(0, 1).flatten(1).cpu().numpy()  # (C, T·H·W); numpy has no size limit
            self.percentiles[i].copy_(torch.from_numpy(np.percentile(flat, q, axis=1).T))
        self.samples.fill_(x.shape[0])

    def threshold(self, channel: int, percentile: float, transform: str = "value") -> float:
        """The ``percentile`` (0–100) of the channel's training values under ``transform``, physical units."""
        if transform not in TRANSFORMS:
            raise ConfigError(f"unknown threshold transform {transform!r}; use one of {TRANSFORMS}")
        if not 0 <= percentile <= 100:
            raise ConfigError(f"a percentile threshold must lie in [0, 100], got {percentile}")
        if not self.ready:
            raise ConfigError("the climate reference is empty: fit it on training states first")
        table = self.percentiles[TRANSFORMS.index(transform), channel].double()
        position = percentile / 100 * STEPS
        lo = int(min(position // 1, STEPS - 1))
        frac = position - lo
        return float(table[lo] + frac * (table[lo + 1] - table[lo]))

    def range(self, channel: int, transform: str = "value") -> tuple[float, float]:
        """(min, max) of the channel's training values under ``transform``."""
        table = self.percentiles[TRANSFORMS.index(transform), channel]
        return float(table[0]), float(table[-1])


def collect_states(batches: Iterable[dict[str, torch.Tensor]], limit: int) -> torch.Tensor:
    """Up to ``limit`` physical states (T, C, H, W): the first target of each sample of the given batches."""
    states: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        states.append(batch["targets"][:, 0].float())
        count += states[-1].shape[0]
        if count >= limit:
            break
    if not states:
        raise ConfigError(
            "no training batches to build the climate reference from: the training split is empty"
        )
    return torch.cat(states)[:limit]

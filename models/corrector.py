"""A conservation corrector: hold channels' area-weighted global means at their input values, every step.

Held–Suarez is dry, so its dry-air mass, the global mean of surface pressure, is conserved; a one-step model
with a small bias would integrate it into a drift over a long free run. In the spirit of ACE's dry-air
corrector, each step subtracts a spatially uniform offset so the prediction's global mean equals that of the
input state (sums in float64). Over a rollout this pins the mean to the initial condition's up to float
round-off. The correction acts on normalised fields; the normalisation is affine per channel, so the
physical global mean is conserved too. Do not list fields the system does not conserve (Z, T: Newtonian
cooling changes them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from earthcast.errors import ConfigError


class GlobalMeanCorrector(nn.Module):
    """Offsets the chosen channels of a prediction so their area-weighted means equal the input's.

    Args:
        channels: names of the channels to conserve (e.g. ``["surface_pressure"]``).
        channel_names: the state channels' names, in order.
        area_weights: (H,) area weight per row (any positive scale).

    forward(pred (B, C, H, W), previous (B, C, H, W)) -> (B, C, H, W).
    """

    def __init__(
        self, channels: Sequence[str], channel_names: Sequence[str], area_weights: Sequence[float]
    ) -> None:
        super().__init__()
        names = list(channel_names)
        unknown = [c for c in channels if c not in names]
        if unknown:
            raise ConfigError(f"conserve names {unknown}, which are not state channels; choose from {names}")
        self.index = [names.index(c) for c in channels]
        w = torch.as_tensor(area_weights, dtype=torch.float64)
        self.register_buffer("weights", w / w.sum(), persistent=False)

    def area_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n) float64 area-weighted means of the corrected channels of x (B, C, H, W)."""
        rows = x[:, self.index].double().mean(dim=-1)  # (B, n, H)
        return (rows * self.weights).sum(dim=-1)

    def forward(self, pred: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        if not self.index:
            return pred
        offset = (self.area_mean(pred) - self.area_mean(previous)).to(pred.dtype)  # (B, n)
        out = pred.clone()
        out[:, self.index] = pred[:, self.index] - offset[:, :, None, None]
        return out

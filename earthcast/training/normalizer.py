"""Per-channel z-score normalisation held as module buffers (saved in checkpoints, applied on the device)."""

from __future__ import annotations

import torch
from torch import nn

from earthcast.datasets.statistics import NormStats


def _safe_std(values: tuple[float, ...]) -> torch.Tensor:
    """Standard deviations with zeros (constant fields such as a uniform mask) replaced by 1."""
    std = torch.tensor(values, dtype=torch.float32)
    return torch.where(std > 0, std, torch.ones_like(std))


class Normalizer(nn.Module):
    """Buffers: state_mean, state_std, tendency_std (C,); static_mean, static_std (S,), physical units.

    State tensors are (..., C, H, W); static tensors (..., S, H, W); forcing tensors (..., F, H, W).

    Args:
        stats: the training statistics.
        boundary: the forcings end with lateral boundary channels (:mod:`earthcast.datasets.boundary`), which
            :meth:`normalize_forcings` normalises like the state.
    """

    def __init__(self, stats: NormStats, *, boundary: bool = False) -> None:
        super().__init__()
        self.boundary = boundary
        self.register_buffer("state_mean", torch.tensor(stats.state_mean, dtype=torch.float32))
        self.register_buffer("state_std", _safe_std(stats.state_std))
        self.register_buffer("tendency_std", _safe_std(stats.tendency_std))
        self.register_buffer("static_mean", torch.tensor(stats.static_mean, dtype=torch.float32))
        self.register_buffer("static_std", _safe_std(stats.static_std))

    @staticmethod
    def _view(v: torch.Tensor) -> torch.Tensor:
        return v[:, None, None]

    def normalize_state(self, x: torch.Tensor) -> torch.Tensor:
        """Physical -> normalised state, (..., C, H, W)."""
        return (x - self._view(self.state_mean)) / self._view(self.state_std)

    def denormalize_state(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> physical state, (..., C, H, W)."""
        return x * self._view(self.state_std) + self._view(self.state_mean)

    def normalize_static(self, x: torch.Tensor) -> torch.Tensor:
        """Physical -> normalised static fields, (..., S, H, W)."""
        return (x - self._view(self.static_mean)) / self._view(self.static_std)

    def normalize_forcings(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Forcings as the model takes them, (..., F, H, W); training and rollouts both go through here.

        Analytic channels pass unchanged (they are O(1) already). With ``boundary``, the last C + 1 channels
        (the truth in the boundary strip, then the strip mask) become the state normalised like the state
        channels in the strip and 0 (the channel mean) inside it and where ``valid`` is 0; the mask stays.

        Args:
            x: (..., F, H, W) physical forcings.
            valid: 1 where the state is valid (0 on masked land), broadcastable to (..., 1, H, W); None when
                nothing is masked.
        """
        if not self.boundary:
            return x
        c = self.state_mean.numel()
        strip = x[..., -1:, :, :]
        keep = strip if valid is None else strip * valid
        state = self.normalize_state(x[..., -c - 1 : -1, :, :]) * keep
        return torch.cat([x[..., : -c - 1, :, :], state, strip], dim=-3)

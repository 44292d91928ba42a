"""Inference critics: score candidate forecasts WITHOUT the truth (higher is better).

Same call as the rewards of :mod:`earthcast.planners.rewards`: ``critic(pred (..., C, H, W), target=None)
-> (...,)`` with ``needs_truth = False``; ``target`` is ignored. :class:`SpectrumCritic`,
:class:`ConservationCritic` and :class:`AgreementCritic` take PHYSICAL units; :class:`LearnedCritic` takes
NORMALISED fields and the current state as well (``critic(pred, state=state)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor, nn

from earthcast.errors import ConfigError
from earthcast.planners.rewards import _channels, _float, _per_channel, _rows, _weights, log_zonal_power


def _check_field(name: str, pred: Tensor, min_dim: int = 3) -> None:
    if pred.dim() < min_dim:
        layout = "(..., K, C, H, W)" if min_dim == 4 else "(..., C, H, W)"
        raise ConfigError(f"{name} needs pred {layout}, got shape {tuple(pred.shape)}")


class SpectrumCritic:
    """−mean over channels and zonal wavenumbers 1 … W//2 of |log P(pred) − reference|.

    P is :func:`earthcast.planners.rewards.log_zonal_power` (the same spectrum as ``SpectrumError``);
    ``reference_log_power`` (C, W//2+1) covers all C channels, e.g. from :meth:`from_samples`.
    """

    needs_truth = False

    def __init__(
        self,
        reference_log_power: Tensor,
        channels: Sequence[int] | None = None,
        *,
        lat_weights: Tensor | ArrayLike | None = None,
    ) -> None:
        self.reference = torch.as_tensor(reference_log_power)
        if self.reference.dim() != 2:
            raise ConfigError(f"reference_log_power must be (C, W//2+1), got {tuple(self.reference.shape)}")
        self.channels, self.lat_weights = channels, _weights(lat_weights)

    @classmethod
    def from_samples(
        cls,
        samples: Tensor,
        lat_weights: Tensor | ArrayLike | None,
        channels: Sequence[int] | None = None,
    ) -> SpectrumCritic:
        """Critic whose reference is the mean log power of samples (T, C, H, W) (physical units, e.g.
        training-split states)."""
        if samples.dim() != 4:
            raise ConfigError(f"from_samples needs samples (T, C, H, W), got {tuple(samples.shape)}")
        return cls(log_zonal_power(samples, lat_weights).mean(0), channels, lat_weights=lat_weights)

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W) physical units -> (...,); ``target`` is ignored."""
        _check_field("SpectrumCritic", pred)
        n_c, width = pred.shape[-3], pred.shape[-1]
        if tuple(self.reference.shape) != (n_c, width // 2 + 1):
            raise ConfigError(
                f"SpectrumCritic reference is {tuple(self.reference.shape)} but the fields need "
                f"(C, W//2+1) = ({n_c}, {width // 2 + 1}); rebuild it with from_samples on this grid"
            )
        idx = _channels(self.channels, n_c, "SpectrumCritic")
        log_power = log_zonal_power(pred[..., idx, :, :], self.lat_weights)
        diff = log_power - self.reference[idx].to(log_power.device, log_power.dtype)
        return -diff[..., 1:].abs().mean((-2, -1))


class ConservationCritic:
    """−Σ_{c in channels} |area-weighted global mean(pred_c) − reference_mean_c| / scale_c.

    E.g. dry mass: the surface-pressure channel against its climatological global mean. The global mean is
    Σ_{h,w} w_h x_{h,w} / (W Σ_h w_h); ``reference_mean`` and ``scale`` are (C,) over all channels.
    """

    needs_truth = False

    def __init__(
        self,
        reference_mean: Tensor,
        scale: Tensor,
        channels: Sequence[int],
        lat_weights: Tensor | ArrayLike,
    ) -> None:
        self.reference_mean = torch.as_tensor(reference_mean, dtype=torch.float64).reshape(-1)
        self.scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        if self.scale.shape != self.reference_mean.shape or not bool((self.scale > 0).all()):
            raise ConfigError("ConservationCritic needs reference_mean (C,) and scale (C,) with scale > 0")
        self.channels = _channels(channels, self.scale.shape[0], "ConservationCritic")
        self.lat_weights = _weights(lat_weights)

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W) physical units -> (...,); ``target`` is ignored."""
        _check_field("ConservationCritic", pred)
        x = _float(pred)
        n_c, height, width = x.shape[-3:]
        ref = _per_channel(self.reference_mean, n_c, x, "ConservationCritic reference_mean")[self.channels]
        scale = _per_channel(self.scale, n_c, x, "ConservationCritic scale")[self.channels]
        w = _rows(self.lat_weights, height, x)[:, None]
        global_mean = (w * x[..., self.channels, :, :]).sum((-2, -1)) / (w.sum() * width)
        return -((global_mean - ref).abs() / scale).sum(-1)


class AgreementCritic:
    """Ensemble agreement: candidates along dim −4 (pred (..., K, C, H, W)); each scores
    −mean over (C, H, W) of ((x_k − mean_k x) / scale_c)², returning (..., K). ``scale`` (C,) defaults to 1."""

    needs_truth = False

    def __init__(self, scale: Tensor | None = None) -> None:
        self.scale = scale

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., K, C, H, W) physical units -> (..., K); ``target`` is ignored."""
        _check_field("AgreementCritic", pred, min_dim=4)
        x = _float(pred)
        scale = _per_channel(self.scale, x.shape[-3], x, "AgreementCritic scale")[:, None, None]
        return -(((x - x.mean(-4, keepdim=True)) / scale) ** 2).mean((-3, -2, -1))


class LearnedCritic(nn.Module):
    """A small conv net that predicts a candidate's truth reward from the current state and the candidate.

    Both are NORMALISED fields (the datasets' per-channel (x − mean) / std), not physical units. Input
    concat(state, candidate) along C (2C channels) -> two 3×3 convs (padded circularly in longitude, by
    replication in latitude) with GELU -> area-weighted global mean pool -> linear -> a scalar.
    Call as ``critic(pred, target=None, *, state)``: pred (..., C, H, W) and state broadcastable to it
    (e.g. (N, 1, C, H, W) against K candidates (N, K, C, H, W)); leading axes are flattened and restored.
    """

    needs_truth = False

    def __init__(self, channels: int, lat_weights: Tensor | ArrayLike, *, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2 * channels, width, 3)
        self.conv2 = nn.Conv2d(width, width, 3)
        self.head = nn.Linear(width, 1)
        self.register_buffer("lat_weights", _weights(lat_weights).float())

    @staticmethod
    def _pad(x: Tensor) -> Tensor:
        return F.pad(F.pad(x, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1), mode="replicate")

    def forward(self, pred: Tensor, target: Tensor | None = None, *, state: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W) normalised candidates, ``state`` (keyword, required) -> (...,) predicted reward;
        ``target`` is ignored."""
        if state is None:
            raise ConfigError("LearnedCritic needs the current state: call critic(pred, state=state)")
        _check_field("LearnedCritic", pred)
        try:
            pred, state = torch.broadcast_tensors(pred, state)
        except RuntimeError as err:
            raise ConfigError(
                f"LearnedCritic: state {tuple(state.shape)} does not broadcast to pred {tuple(pred.shape)}; "
                "give it a K axis of 1, e.g. (N, 1, C, H, W)"
            ) from err
        lead, (n_c, height, width) = pred.shape[:-3], pred.shape[-3:]
        if 2 * n_c != self.conv1.in_channels:
            raise ConfigError(f"LearnedCritic was built for C = {self.conv1.in_channels // 2}, got C = {n_c}")
        x = torch.cat([state, pred], dim=-3).reshape(-1, 2 * n_c, height, width).to(self.head.weight.dtype)
        x = F.gelu(self.conv2(self._pad(F.gelu(self.conv1(self._pad(x))))))
        w = _rows(self.lat_weights, height, x)[:, None]
        pooled = (w * x).sum((-2, -1)) / (w.sum() * width)
        return self.head(pooled)[:, 0].reshape(lead)

    def fit_step(self, state: Tensor, candidates: Tensor, truth_reward: Tensor) -> Tensor:
        """MSE between the predicted and the truth reward (truth_reward shaped like the output, e.g. (N, K));
        returns the differentiable loss: the caller runs ``loss.backward()`` and its optimiser's step."""
        return F.mse_loss(self(candidates, state=state), truth_reward.to(self.head.weight.dtype))

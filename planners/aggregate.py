"""Aggregators: combine K scored candidate states into one state (BeamVQ's self-ensemble, SFP's argmax).

Three modes, all batched over any leading axes:

- ``"argmax"``: the highest-scoring candidate; ties go to the lowest index.
- ``"top_m"``: the unweighted mean of the ``top_m`` highest-scoring candidates (ties at the cut-off go to
  the lower indices).
- ``"softmax"``: the mean weighted by ``softmax(scores / temperature)`` over the K axis; a small temperature
  tends to argmax, a large one to the plain mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from earthcast.errors import ConfigError

AGGREGATORS = ("argmax", "top_m", "softmax")


def _check_settings(mode: str, top_m: int, temperature: float) -> None:
    """Raise ConfigError for an unknown mode, ``top_m < 1`` or a temperature that is not finite and > 0."""
    if mode not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator mode {mode!r}; use one of {', '.join(AGGREGATORS)}")
    if top_m < 1:
        raise ConfigError(
            f"aggregator top_m must be >= 1, got {top_m}; set it to how many candidates to average"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"aggregator temperature must be a finite number > 0, got {temperature}")


def aggregate(
    candidates: Tensor,
    scores: Tensor,
    mode: str = "argmax",
    *,
    top_m: int = 1,
    temperature: float = 1.0,
) -> Tensor:
    """Combine candidates along their K axis by their scores.

    Args:
        candidates: (..., K, C, H, W) candidate states.
        scores: (..., K) scores, higher is better (the leading axes match ``candidates``).
        mode: one of :data:`AGGREGATORS`.
        top_m: how many of the best candidates ``"top_m"`` averages (1 <= top_m <= K).
        temperature: softmax temperature for ``"softmax"``, in the units of ``scores``.

    Returns:
        (..., C, H, W) in the dtype of ``candidates``. Softmax weights are computed in the dtype of ``scores``.
    """
    _check_settings(mode, top_m, temperature)
    if candidates.dim() < 4 or tuple(candidates.shape[:-3]) != tuple(scores.shape):
        raise ConfigError(
            f"aggregate needs candidates (..., K, C, H, W) and scores (..., K) with the same leading axes; "
            f"got candidates {tuple(candidates.shape)} and scores {tuple(scores.shape)}"
        )
    k = scores.shape[-1]
    if mode == "softmax":
        weights = torch.softmax(scores / temperature, dim=-1).to(candidates.dtype)
        return (weights[..., None, None, None] * candidates).sum(dim=-4)
    if mode == "top_m" and top_m > k:
        raise ConfigError(f"aggregator top_m={top_m} exceeds the {k} candidates; use top_m <= {k}")
    m = top_m if mode == "top_m" else 1
    # A stable descending sort puts the lower index first among equal scores.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :m]
    index = order[..., None, None, None].expand(*order.shape, *candidates.shape[-3:])
    return torch.gather(candidates, -4, index).mean(dim=-4)


@dataclass(frozen=True)
class Aggregator:
    """A validated aggregator setting; calling it runs :func:`aggregate` with these settings."""

    mode: str = "argmax"
    top_m: int = 1
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check_settings(self.mode, self.top_m, self.temperature)

    def __call__(self, candidates: Tensor, scores: Tensor) -> Tensor:
        """(..., K, C, H, W) candidates and (..., K) scores -> (..., C, H, W); see :func:`aggregate`."""
        return aggregate(candidates, scores, self.mode, top_m=self.top_m, temperature=self.temperature)

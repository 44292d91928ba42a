"""Rewards and critics built from configs: the truth reward of training and the critics of inference.

A reward spec is a list of terms, each a dict with ``kind`` and ``weight`` (default 1)::

    reward:
      - {kind: mse}                                       # −area-weighted MSE in units of the state std
      - {kind: csi, channel: v_component_of_wind_250, transform: abs, percentile: 95, pool: 2}
      - {kind: csi, channel: temperature_850, transform: anomaly, threshold: 6.0}
      - {kind: ssim}
      - {kind: spectrum}

CSI thresholds are physical (``threshold``) or climatological percentiles of the training split
(``percentile``, from :class:`~earthcast.planners.reference.ClimateReference`). Truth rewards score the
training split only; at inference a critic stands in (:func:`build_critic`): ``spectrum``, ``conservation``,
``agreement`` or ``learned``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from earthcast.datasets.channels import ChannelManifest
from earthcast.errors import ConfigError
from earthcast.planners.critics import AgreementCritic, ConservationCritic, LearnedCritic, SpectrumCritic
from earthcast.planners.reference import ClimateReference
from earthcast.planners.rewards import CSI, SSIM, Composite, SpectrumError, WeightedMSE

CRITICS: tuple[str, ...] = ("spectrum", "conservation", "agreement", "learned")
REWARD_KINDS: tuple[str, ...] = ("mse", "csi", "ssim", "spectrum")
DEFAULT_REWARD: tuple[dict[str, Any], ...] = ({"kind": "mse"},)


def channel_index(manifest: ChannelManifest, name: str) -> int:
    """Index of a state channel by name; ConfigError listing the names otherwise."""
    names = manifest.names("state")
    if name not in names:
        raise ConfigError(f"unknown channel {name!r} in the planner's reward; state channels are {names}")
    return names.index(name)


def _csi(term: Mapping[str, Any], manifest: ChannelManifest, reference: ClimateReference, lat_w) -> CSI:
    channel = channel_index(manifest, str(term["channel"]))
    transform = str(term.get("transform", "value"))
    if ("threshold" in term) == ("percentile" in term):
        raise ConfigError(
            f"a csi reward needs exactly one of threshold (physical) or percentile, got {dict(term)}"
        )
    if "percentile" in term:
        threshold = reference.threshold(channel, float(term["percentile"]), transform)
    else:
        threshold = float(term["threshold"])
    ref = reference.mean_field[channel] if transform == "anomaly" else None
    csi = CSI(
        channel,
        threshold,
        transform=transform,
        reference=ref,
        pool=int(term.get("pool", 1)),
        lat_weights=lat_w,
    )
    if reference.ready:
        csi.check_range(*reference.range(channel, transform))
    return csi


def build_reward(
    spec: Sequence[Mapping[str, Any]] | None,
    manifest: ChannelManifest,
    reference: ClimateReference,
    lat_weights: torch.Tensor,
    state_std: torch.Tensor,
) -> Composite:
    """The truth reward (physical units in, (...,) out, higher is better) of a reward spec."""
    terms = []
    for term in spec or DEFAULT_REWARD:
        kind = str(term.get("kind"))
        if kind == "mse":
            reward = WeightedMSE(lat_weights, scale=state_std)
        elif kind == "csi":
            reward = _csi(term, manifest, reference, lat_weights)
        elif kind == "ssim":
            reward = SSIM()
        elif kind == "spectrum":
            reward = SpectrumError(lat_weights=lat_weights)
        else:
            raise ConfigError(f"unknown reward kind {kind!r}; use one of {REWARD_KINDS}")
        terms.append((reward, float(term.get("weight", 1.0))))
    return Composite(terms)


def build_critic(
    name: str,
    manifest: ChannelManifest,
    reference: ClimateReference,
    lat_weights: torch.Tensor,
    state_std: torch.Tensor,
    learned: LearnedCritic | None = None,
) -> Callable[..., torch.Tensor]:
    """An inference critic by name (:data:`CRITICS`); all score physical fields except ``learned``, which
    takes normalised candidates and the normalised current state."""
    if name == "spectrum":
        return SpectrumCritic(reference.log_power, lat_weights=lat_weights)
    if name == "conservation":
        surface = [i for i, c in enumerate(manifest.state) if c.variable == "surface_pressure"]
        channels = surface or list(range(len(manifest.state)))
        return ConservationCritic(reference.global_mean, reference.global_std, channels, lat_weights)
    if name == "agreement":
        return AgreementCritic(scale=state_std)
    if name == "learned":
        if learned is None:
            raise ConfigError("this planner has no learned critic")
        return learned
    raise ConfigError(f"unknown critic {name!r}; use one of {CRITICS} (truth rewards are for training only)")

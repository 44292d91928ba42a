"""Schedules: the autoregressive rollout curriculum and the warm-up + cosine learning-rate factor."""

from __future__ import annotations

import math
from collections.abc import Mapping

from earthcast.errors import ConfigError


def normalize_schedule(schedule: Mapping[int | str, int] | None) -> dict[int, int]:
    """``{epoch: K}`` with integer keys (YAML may give strings), validated; None means ``{0: 1}``."""
    if not schedule:
        return {0: 1}
    out = {int(epoch): int(k) for epoch, k in schedule.items()}
    if min(out) != 0:
        out = {0: 1} | out
    bad = {e: k for e, k in out.items() if k < 1 or e < 0}
    if bad:
        raise ConfigError(
            f"rollout_schedule needs epochs >= 0 and steps >= 1, got {bad}; e.g. {{0: 1, 2: 2, 4: 4}}"
        )
    return dict(sorted(out.items()))


def rollout_steps(schedule: Mapping[int | str, int] | None, epoch: int, cap: int | None = None) -> int:
    """Unroll length K at ``epoch``: the value of the latest schedule key ≤ epoch, capped at ``cap``
    (the data's n_target). ``{0: 1, 2: 2, 4: 4}`` gives 1, 1, 2, 2, 4, 4, … for epochs 0, 1, 2, …"""
    table = normalize_schedule(schedule)
    k = table[max(e for e in table if e <= epoch)]
    return min(k, cap) if cap is not None else k


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor: linear from 1/(warmup+1) to 1 over ``warmup`` steps, then cosine down to
    ``min_ratio`` at ``total`` steps (and held there)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

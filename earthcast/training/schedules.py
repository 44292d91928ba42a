"""Schedules: the autoregressive rollout curriculum and the warm-up + cosine learning-rate factor.

Both count optimizer steps, so a schedule means the same whatever the epoch length, and a run resumed from a
mid-epoch checkpoint continues it where it stopped."""

from __future__ import annotations

import math
from collections.abc import Mapping

from earthcast.errors import ConfigError


def normalize_schedule(schedule: Mapping[int | str, int] | None) -> dict[int, int]:
    """``{optimizer_step: K}`` with integer keys (YAML may give strings), validated; None means ``{0: 1}``."""
    if not schedule:
        return {0: 1}
    out = {int(epoch): int(k) for epoch, k in schedule.items()}
    if min(out) != 0:
        out = {0: 1} | out
    bad = {e: k for e, k in out.items() if k < 1 or e < 0}
    if bad:
        raise ConfigError(
            "rollout_schedule maps optimizer steps >= 0 to unroll lengths >= 1, got "
            f"{bad}; e.g. {{0: 1, 600: 2, 800: 4}}"
        )
    return dict(sorted(out.items()))


def rollout_steps(schedule: Mapping[int | str, int] | None, step: int, cap: int | None = None) -> int:
    """Unroll length K at optimizer step ``step`` (the trainer's ``global_step``, which a resume restores):
    the value of the latest schedule key ≤ step, capped at ``cap`` (the data's n_target).
    ``{0: 1, 2: 2, 4: 4}`` gives 1, 1, 2, 2, 4, 4, … for steps 0, 1, 2, …"""
    table = normalize_schedule(schedule)
    k = table[max(e for e in table if e <= step)]
    return min(k, cap) if cap is not None else k


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor: linear from 1/(warmup+1) to 1 over ``warmup`` steps, then cosine down to
    ``min_ratio`` at ``total`` steps (and held there)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

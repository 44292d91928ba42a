"""Training windows: N input steps plus K target leads, ``k`` store steps apart, at a model step that is a
whole multiple of the store's spacing (:mod:`earthcast.datasets.time_axis`), and the length of the time
blocks the loader reads them from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from earthcast.datasets.time_axis import TimeStep
from earthcast.errors import TimeAxisError


@dataclass(frozen=True)
class WindowSpec:
    """Shape of one sample in time.

    Attributes:
        n_input: input steps (the model sees times t−(n_input−1)Δ … t).
        n_target: target leads t+Δ … t+n_target·Δ.
        step: model step Δ: a pandas duration ("6h", "12h", "1D") or calendar months ("1MS", "1ME",
            "monthly", "3MS", "1YS"); on a monthly axis the stamps' own rule places every step.
    """

    n_input: int = 1
    n_target: int = 1
    step: str = "6h"

    @property
    def length(self) -> int:
        """Time steps per window: n_input + n_target."""
        return self.n_input + self.n_target

    @property
    def time_step(self) -> TimeStep:
        """Δ parsed (its anchor is that of the step string, not yet the store's)."""
        return TimeStep.parse(self.step)


def stride(spec: WindowSpec, axis: TimeStep, *, where: str) -> int:
    """The model step in store time steps; the model step itself is ``axis.scaled(stride(...))``.

    Args:
        axis: the store's spacing, from :func:`time_axis`.

    Raises:
        TimeAxisError: Δ is not a positive multiple of the store spacing, or one is calendar months and the
            other a fixed duration.
    """
    step = spec.time_step
    if step.is_calendar and not axis.is_calendar:
        raise TimeAxisError(
            f"The model step {spec.step} is in calendar months but {where} has a uniform {axis} axis. Use a "
            f"multiple of {axis} such as {axis} or {axis.scaled(2)}, or resample the store to months "
            "(ds.resample(time='1MS').mean())."
        )
    if axis.is_calendar and not step.is_calendar:
        raise TimeAxisError(
            f"The model step {spec.step} is a fixed duration but {where} is {axis.describe()}: its steps "
            f"are whole calendar months. Use step '{axis}' (or 'monthly'), or a multiple such as "
            f"'{axis.scaled(3)}'."
        )
    ratio = step.months / axis.months if axis.is_calendar else step.nominal / axis.nominal
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
        raise TimeAxisError(
            f"The model step {spec.step} is not a multiple of the time spacing {axis} of {where}. "
            f"Use a step such as {axis} or {axis.scaled(2)}."
        )
    return round(ratio)


def window_starts(times: np.ndarray, start: str, end: str, spec: WindowSpec, k: int) -> np.ndarray:
    """Store indices of the first input step of every window lying entirely inside [start, end].

    Args:
        times: (T,) store times.
        k: model step in store steps.

    Returns:
        (N,) int64 ascending indices i such that times[i] ≥ start and times[i + (length−1)·k] ≤ end.
    """
    t = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    lo = int(t.searchsorted(pd.Timestamp(start), side="left"))
    hi = int(t.searchsorted(pd.Timestamp(end), side="right"))  # exclusive
    last = hi - 1 - (spec.length - 1) * k
    return np.arange(lo, last + 1, dtype=np.int64) if last >= lo else np.zeros(0, dtype=np.int64)


def default_block_steps(
    time_chunk: int, n_steps: int, span: int, bytes_per_step: int, budget_bytes: int = 256 * 2**20
) -> int:
    """A block length in store steps: a whole number of time chunks.

    Aim for 16 or more chunks per block (the tail of a block re-reads at most one chunk for windows that
    straddle into the next block, so 16 chunks keep the bytes read per epoch within ~1.06x the store size;
    8 would allow 1.125x, over the 1.1x that ``benchmarks/data_throughput.py`` holds the loader to) and for
    at least 8 blocks per split (parallel workers and a well-mixed shuffle), within ``budget_bytes`` of memory
    per block.

    Args:
        time_chunk: the store's chunk length along time; n_steps: time steps in the split;
        span: time steps one window covers; bytes_per_step: float32 bytes of all state channels per step.
    """
    total_chunks = math.ceil(n_steps / time_chunk)
    fit = max(1, budget_bytes // max(1, time_chunk * bytes_per_step))
    n_chunks = min(fit, max(16, math.ceil(total_chunks / 8)))
    return int(max(n_chunks * time_chunk, math.ceil(2 * span / time_chunk) * time_chunk))

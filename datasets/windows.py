"""Training windows: N input steps plus K target leads at a model step that is a multiple of the store's spacing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


class TimeAxisError(ValueError):
    """The store's time axis cannot serve the requested windows."""


@dataclass(frozen=True)
class WindowSpec:
    """Shape of one sample in time.

    Attributes:
        n_input: input steps (the model sees times t−(n_input−1)Δ … t).
        n_target: target leads t+Δ … t+n_target·Δ.
        step: model step Δ as a pandas offset string ("6h", "12h", "1D").
    """

    n_input: int = 1
    n_target: int = 1
    step: str = "6h"

    @property
    def length(self) -> int:
        """Time steps per window: n_input + n_target."""
        return self.n_input + self.n_target

    @property
    def step_timedelta(self) -> pd.Timedelta:
        """Δ as a Timedelta."""
        return pd.Timedelta(self.step)


def store_spacing(times: np.ndarray, *, where: str) -> pd.Timedelta:
    """The store's uniform time spacing.

    Raises:
        TimeAxisError: fewer than two times, or a non-uniform axis (names the first gap).
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size < 2:
        raise TimeAxisError(f"{where} has {t.size} time step(s); at least two are needed for windows.")
    diffs = np.diff(t)
    spacing = diffs[0]
    bad = np.nonzero(diffs != spacing)[0]
    if bad.size:
        i = int(bad[0])
        raise TimeAxisError(
            f"The time axis of {where} is not uniform: {str(t[i])[:19]} -> {str(t[i + 1])[:19]} is "
            f"{pd.Timedelta(diffs[i])}, but the spacing elsewhere is {pd.Timedelta(spacing)} "
            f"({bad.size} irregular gap(s)). Fill or drop the missing times (e.g. ds.resample or reindex) "
            "before training."
        )
    if spacing <= np.timedelta64(0, "ns"):
        raise TimeAxisError(f"The time axis of {where} is not increasing; sort it with ds.sortby('time').")
    return pd.Timedelta(spacing)


def stride(spec: WindowSpec, spacing: pd.Timedelta, *, where: str) -> int:
    """The model step in store time steps.

    Raises:
        TimeAxisError: Δ is not a positive multiple of the store spacing.
    """
    ratio = spec.step_timedelta / spacing
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
        raise TimeAxisError(
            f"The model step {spec.step} is not a multiple of the time spacing {spacing} of {where}. "
            f"Use a step such as {spacing} or {2 * spacing}."
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

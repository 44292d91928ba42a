"""Time axes and model steps: uniform or calendar-month axes, their detection, and calendar-aware arithmetic.

A store's time axis is either *uniform* (every step the same duration: 6 h, 1 day) or *monthly*: one stamp
per calendar month placed by one rule, the month start (``1MS``, ERA5 monthly means), the month end
(``1ME``), the middle of the month (CMEMS, many reanalyses: 1993-01-16T12, 1993-02-15T00, …) or a fixed
day of the month (the 15th). The model step is a :class:`TimeStep`: a fixed duration, or a whole number of
calendar months that keeps the axis's rule, so valid times and forcings fall on the data's own stamps.
Training windows built on them live in :mod:`earthcast.datasets.windows`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from earthcast.errors import TimeAxisError

__all__ = ["TimeAxisError", "TimeStep", "advance_times", "describe_time_axis", "time_axis"]

Anchor = Literal["start", "end", "mid"]

MEAN_MONTH = pd.Timedelta(days=365.2425 / 12)
"""The mean Gregorian month, 730.485 h (used only to display a calendar step in hours)."""

_DAY = np.timedelta64(1, "D").astype("timedelta64[ns]")
_NO_OFFSET = pd.Timedelta(0)
_CALENDAR = re.compile(
    r"^(?P<n>\d*)\s*(?P<unit>MS|ME|M|YS|YE|Y|months?|years?)(?P<rule>-mid|\+.+)?$", re.IGNORECASE
)
_WORDS = {"monthly": "1M", "month": "1M", "yearly": "12M", "annual": "12M", "year": "12M"}


def _stamp(t: np.datetime64 | pd.Timestamp) -> str:
    return str(np.datetime64(t, "s"))


def _compact(delta: pd.Timedelta) -> str:
    """'6h', '1D', '15D12h', '90min': a duration as a short pandas-readable string."""
    days, rest = divmod(delta.value, 86400 * 10**9)
    parts = [f"{days}D"] if days else []
    for unit, ns in (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ns", 1)):
        count, rest = divmod(rest, ns)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class TimeStep:
    """A model step or store spacing: a fixed duration, or ``months`` calendar months placed by a rule.

    Attributes:
        duration: the fixed step (None for a calendar step).
        months: calendar months per step (0 for a fixed step).
        anchor: where a calendar stamp lies in its month: ``start`` (month start + ``offset``), ``end``
            (last day 00:00 + ``offset``) or ``mid`` (halfway between the month's start and the next one's).
        offset: see ``anchor``; ``start`` + 14 days is the 15th at 00:00.
    """

    duration: pd.Timedelta | None = None
    months: int = 0
    anchor: Anchor = "start"
    offset: pd.Timedelta = _NO_OFFSET

    @classmethod
    def parse(cls, text: str) -> TimeStep:
        """Read ``"6h"``, ``"1D"``, ``"1MS"``, ``"3MS"``, ``"1ME"``, ``"monthly"``, ``"1YS"``, ``"1M-mid"``,
        ``"1MS+14D"`` (what :meth:`__str__` writes).

        Raises:
            TimeAxisError: unreadable or not positive.
        """
        raw = str(text).strip()
        spelled = _WORDS.get(raw.lower(), raw)
        match = _CALENDAR.match(spelled)
        if match:
            n = int(match["n"] or 1)
            unit, rule = match["unit"].lower(), (match["rule"] or "").lower()
            months = n * (12 if unit.startswith("y") else 1)
            anchor: Anchor = "end" if unit in ("me", "ye") else "mid" if rule == "-mid" else "start"
            offset = pd.Timedelta(match["rule"][1:]) if rule.startswith("+") else _NO_OFFSET
            if months < 1:
                raise TimeAxisError(f"The step {text!r} is not positive; use e.g. '1MS' or '6h'.")
            return cls(months=months, anchor=anchor, offset=offset)
        try:
            duration = pd.Timedelta(raw)
        except ValueError as err:
            raise TimeAxisError(
                f"Cannot read the step {text!r} ({err}); use a duration such as '6h' or '1D', or calendar "
                "months such as '1MS' (month start), '1ME' (month end), 'monthly' or '3MS'."
            ) from err
        if duration <= pd.Timedelta(0):
            raise TimeAxisError(f"The step {text!r} is not positive; use e.g. '6h' or '1D'.")
        return cls(duration=duration)

    @property
    def is_calendar(self) -> bool:
        """True for a step of calendar months."""
        return self.months > 0

    @property
    def nominal(self) -> pd.Timedelta:
        """The fixed duration, or ``months`` mean months (730.485 h each) for display."""
        return self.duration if self.duration is not None else self.months * MEAN_MONTH

    @property
    def hours(self) -> float:
        """:attr:`nominal` in hours."""
        return self.nominal / pd.Timedelta("1h")

    def scaled(self, k: int) -> TimeStep:
        """This step taken ``k`` times (the model step of stride ``k`` on an axis of this spacing)."""
        if self.duration is not None:
            return TimeStep(duration=k * self.duration)
        return TimeStep(months=k * self.months, anchor=self.anchor, offset=self.offset)

    def __str__(self) -> str:
        if self.duration is not None:
            return _compact(self.duration)
        if self.anchor == "mid":
            return f"{self.months}M-mid"
        unit = "MS" if self.anchor == "start" else "ME"
        return f"{self.months}{unit}" + (f"+{_compact(self.offset)}" if self.offset.value else "")

    def describe(self) -> str:
        """'6h', '1D', 'monthly (month start)', '3-monthly (mid-month)', 'monthly (day 15, 00:00)',
        'yearly (month start)'."""
        if self.duration is not None:
            return str(self)
        if self.anchor == "mid":
            rule = "mid-month"
        elif self.anchor == "end":
            rule = "month end" + (f", {_compact(self.offset)} after 00:00" if self.offset.value else "")
        elif self.offset.value == 0:
            rule = "month start"
        else:
            minutes = (self.offset - pd.Timedelta(days=self.offset.days)) // pd.Timedelta("1min")
            rule = f"day {self.offset.days + 1}, {minutes // 60:02d}:{minutes % 60:02d}"
        years, rest = divmod(self.months, 12)
        every = f"{self.months}-monthly" if rest else ("yearly" if years == 1 else f"{years}-yearly")
        return f"{'monthly' if self.months == 1 else every} ({rule})"


def advance_times(times: np.ndarray, n: int | np.ndarray, step: TimeStep | str) -> np.ndarray:
    """The times ``n`` model steps after ``times`` (before, for n < 0), calendar-aware.

    A fixed step adds ``n × duration``. A calendar step moves ``n × months`` months and returns the stamp
    that the step's rule gives in that month (month start + offset, month end + offset, or mid-month), so
    2018-01-16T12 (mid-month) + 1 month is 2018-02-15T00.

    Args:
        times: (...) datetime64 stamps (for a calendar step: stamps of the axis's rule).
        n: int or int array broadcasting against ``times``.
        step: a :class:`TimeStep` or its string.

    Returns:
        datetime64[ns] of the broadcast shape of ``times`` and ``n``.
    """
    step = TimeStep.parse(step) if isinstance(step, str) else step
    t = np.asarray(times, dtype="datetime64[ns]")
    count = np.asarray(n, dtype=np.int64)
    if step.duration is not None:
        return t + count * np.timedelta64(step.duration.value, "ns")
    month = t.astype("datetime64[M]") + count * step.months
    start = month.astype("datetime64[ns]")
    if step.anchor == "start":
        return start + np.timedelta64(step.offset.value, "ns")
    following = (month + 1).astype("datetime64[ns]")
    if step.anchor == "end":
        return following - _DAY + np.timedelta64(step.offset.value, "ns")
    return start + (following - start) // 2


def _monthly_rule(t: np.ndarray) -> TimeStep | None:
    """The 1-month step whose rule every stamp of ``t`` (increasing, datetime64[ns]) follows, or None."""
    start = t.astype("datetime64[M]").astype("datetime64[ns]")
    following = (t.astype("datetime64[M]") + 1).astype("datetime64[ns]")
    from_start, from_end = t - start, t - (following - _DAY)
    candidates: list[TimeStep] = []
    if np.all(from_start == from_start[0]) and from_start[0] < 28 * _DAY:
        candidates.append(TimeStep(months=1, offset=pd.Timedelta(from_start[0])))
    if np.all(from_end == from_end[0]) and np.timedelta64(0, "ns") <= from_end[0] < _DAY:
        candidates.append(TimeStep(months=1, anchor="end", offset=pd.Timedelta(from_end[0])))
    if np.all(2 * from_start == following - start):
        candidates.append(TimeStep(months=1, anchor="mid"))
    # when short axes fit several rules, prefer the conventional: month start, month end, mid-month, fixed day
    order = {"end": 1, "mid": 2, "start": 3}
    candidates.sort(key=lambda s: 0 if s.anchor == "start" and not s.offset.value else order[s.anchor])
    return candidates[0] if candidates else None


def _mode(values: np.ndarray) -> np.int64:
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[int(np.argmax(counts))]


def _listing(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


_FILL = (
    "Fill the missing times (ds.reindex(time=...) and interpolate) or select a period without gaps before "
    "training."
)


@dataclass(frozen=True)
class _Diagnosis:
    """What an increasing axis follows: its step, the consecutive pairs that break it, and (if any) the
    problem: what is missing or off the step's grid, and the fix."""

    step: TimeStep
    gaps: list[tuple[np.datetime64, np.datetime64]]
    problem: str


def _diagnose(t: np.ndarray, where: str) -> _Diagnosis:
    """Classify an increasing, duplicate-free datetime64[ns] axis of two or more times."""
    rule = _monthly_rule(t)
    if rule is not None:
        index = t.astype("datetime64[M]").astype(np.int64)
        jumps = np.diff(index)
        every = int(_mode(jumps))
        if np.all(jumps % every == 0):
            step = rule.scaled(every)
            gaps = [(t[i], t[i + 1]) for i in np.nonzero(jumps != every)[0]]
            missing = [
                str(np.datetime64(int(m), "M"))
                for m in np.setdiff1d(np.arange(index[0], index[-1] + 1, every), index)
            ]
            problem = (
                f"The time axis of {where} is {step.describe()} but {len(missing)} month(s) are missing: "
                f"{_listing(missing)}. {_FILL}"
            )
            return _Diagnosis(step, gaps, problem if gaps else "")
    diffs = np.diff(t)
    spacing = diffs[0] if np.all(diffs == diffs[0]) else _mode(diffs)
    step = TimeStep(duration=pd.Timedelta(spacing))
    bad = np.nonzero(diffs != spacing)[0]
    gaps = [(t[i], t[i + 1]) for i in bad]
    if not gaps:
        return _Diagnosis(step, [], "")
    i = int(bad[0])
    head = (
        f"The time axis of {where} is not uniform: {_stamp(t[i])} -> {_stamp(t[i + 1])} is "
        f"{pd.Timedelta(diffs[i])}, but the spacing elsewhere is {pd.Timedelta(spacing)} "
        f"({bad.size} irregular gap(s))"
    )
    off_grid = t[(t - t[0]) % spacing != np.timedelta64(0, "ns")]
    if off_grid.size:
        listing = _listing([_stamp(x) for x in off_grid])
        problem = (
            f"{head}; {off_grid.size} time(s) lie off the {step} grid: {listing}. Drop them or interpolate "
            f"the store onto a {step} axis (ds.interp(time=...)) before training."
        )
        return _Diagnosis(step, gaps, problem)
    missing = np.setdiff1d(np.arange(t[0], t[-1] + spacing, spacing), t)
    listing = _listing([_stamp(x) for x in missing])
    return _Diagnosis(step, gaps, f"{head}; {missing.size} time(s) are missing: {listing}. {_FILL}")


def _disorder(t: np.ndarray, where: str) -> tuple[str, str, _Diagnosis | None]:
    """For an axis with duplicated or unsorted times: what is wrong, its fix, and the diagnosis of the
    sorted, duplicate-free axis (None if fewer than two distinct times remain)."""
    uniq, counts = np.unique(t, return_counts=True)
    dups = uniq[counts > 1]
    if dups.size:
        what = f"has {dups.size} duplicated time(s): {_listing([_stamp(x) for x in dups])}"
        fix = "Drop them (ds.drop_duplicates('time'))"
    else:
        i = int(np.nonzero(np.diff(t) <= np.timedelta64(0, "ns"))[0][0])
        what = f"is not sorted: {_stamp(t[i])} is followed by {_stamp(t[i + 1])}"
        fix = "Sort it (ds.sortby('time'))"
    return what, fix, _diagnose(uniq, f"{where}, once cleaned,") if uniq.size > 1 else None


def time_axis(times: np.ndarray, *, where: str) -> TimeStep:
    """The spacing of a regular time axis: a fixed duration, or calendar months with their rule.

    Args:
        times: (T,) datetime64.
        where: how to name the store in error messages.

    Raises:
        TimeAxisError: fewer than two times; duplicated or unsorted times; missing months (named); gaps in a
            uniform axis (the missing times are named); times off the axis's grid.
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size < 2:
        raise TimeAxisError(f"{where} has {t.size} time step(s); at least two are needed for windows.")
    if np.any(np.diff(t) <= np.timedelta64(0, "ns")):
        what, fix, cleaned = _disorder(t, where)
        if cleaned is None:
            after = "; one distinct time remains, and windows need at least two."
        elif cleaned.problem:
            after = f". {cleaned.problem}"
        else:
            after = f"; nothing is missing: cleaned, it is a regular {cleaned.step.describe()} axis."
        raise TimeAxisError(f"The time axis of {where} {what}. {fix}{after}")
    diagnosis = _diagnose(t, where)
    if diagnosis.problem:
        raise TimeAxisError(diagnosis.problem)
    return diagnosis.step


def describe_time_axis(times: np.ndarray) -> str:
    """One phrase on a time axis: its frequency ('6h', 'monthly (month start)') or, if irregular, its gaps.

    Args:
        times: (T,) datetime64.
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size < 2:
        return "a single time" if t.size else "no times"
    if np.any(np.diff(t) <= np.timedelta64(0, "ns")):
        what, _, cleaned = _disorder(t, "it")
        return f"irregular: {what}" + (f"; cleaned: {describe_time_axis(np.unique(t))}" if cleaned else "")
    diagnosis = _diagnose(t, "it")
    if not diagnosis.gaps:
        return diagnosis.step.describe()
    shown = [f"{_stamp(a)} -> {_stamp(b)}" for a, b in diagnosis.gaps]
    return f"irregular, mostly {diagnosis.step.describe()}: {len(shown)} gap(s): {_listing(shown, 3)}"

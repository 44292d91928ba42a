"""Init-time and lead-time specifications of a rollout: ``--inits`` ranges and ``--lead`` durations."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

from earthcast.errors import ConfigError

_ISO = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?"
_RANGE = re.compile(rf"^(?P<start>{_ISO}):(?P<end>{_ISO})(?::(?P<freq>[^:]+))?$")

INITS_HELP = (
    "init times as START:END:FREQ (e.g. 2020-01-01T00:2020-12-31T12:12h, END inclusive; FREQ may be calendar "
    "months: 1MS for month starts), the same with '/' "
    "separators (2020-01-01/2020-12-31T12/12h), or a comma-separated list of ISO times"
)


def _timestamp(text: str, spec: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text)
    except ValueError as err:
        raise ConfigError(
            f"cannot read {text!r} in --inits {spec!r} as an ISO time ({err}). {INITS_HELP}."
        ) from err


def parse_inits(spec: str) -> pd.DatetimeIndex:
    """Init times of a ``--inits`` specification, ascending and unique.

    Accepts ``START:END:FREQ`` (colons inside ISO times are fine: the pattern matches whole ISO stamps),
    ``START/END/FREQ``, ``START:END`` / ``START/END`` (only if START == END), a single time, or a
    comma-separated list.

    Raises:
        ValueError: unreadable times or frequency, END before START, or no init times; the message shows
            the accepted forms.
    """
    text = spec.strip()
    if "," in text:
        stamps = [_timestamp(part.strip(), spec) for part in text.split(",") if part.strip()]
        times = pd.DatetimeIndex(stamps)
    else:
        match = _RANGE.match(text)
        if "/" in text:
            parts = text.split("/")
            if len(parts) not in (2, 3):
                raise ConfigError(f"--inits {spec!r} has {len(parts)} '/'-separated parts. {INITS_HELP}.")
            start, end, freq = parts[0], parts[1], parts[2] if len(parts) == 3 else None
        elif match:
            start, end, freq = match["start"], match["end"], match["freq"]
        else:
            start, end, freq = text, text, None
        first, last = _timestamp(start, spec), _timestamp(end, spec)
        if last < first:
            raise ConfigError(f"--inits {spec!r}: END {last} is before START {first}. {INITS_HELP}.")
        if freq is None:
            if first != last:
                raise ConfigError(
                    f"--inits {spec!r} gives START and END but no FREQ (e.g. ':12h'). {INITS_HELP}."
                )
            times = pd.DatetimeIndex([first])
        else:
            times = pd.date_range(first, last, freq=_frequency(freq, spec))
    if len(times) == 0:
        raise ConfigError(f"--inits {spec!r} gives no init times. {INITS_HELP}.")
    return pd.DatetimeIndex(np.unique(times.values.astype("datetime64[ns]")))


def _frequency(freq: str, spec: str) -> pd.DateOffset:
    """FREQ of ``--inits`` as a pandas offset: a fixed step (``12h``, ``1D``, ``5d``) or calendar months and
    years (``1MS`` month start, ``1ME`` month end, ``3MS``, ``1YS``, ``monthly``). Case matters as in pandas:
    ``MS`` is a month start, ``ms`` a millisecond."""
    text = {"monthly": "1MS", "yearly": "1YS"}.get(freq.strip().lower(), freq.strip())
    try:
        offset = to_offset(re.sub(r"(\d)d$", r"\1D", text))
    except ValueError as err:
        raise ConfigError(
            f"--inits {spec!r}: cannot read FREQ {freq!r} ({err}); use e.g. 12h, 1D or 1MS (month starts)."
        ) from err
    if offset.n <= 0:
        raise ConfigError(f"--inits {spec!r}: FREQ must be positive, got {freq!r}.")
    if isinstance(offset, Tick) and pd.Timedelta(offset) < pd.Timedelta(minutes=1):
        raise ConfigError(
            f"--inits {spec!r}: FREQ {freq!r} is {pd.Timedelta(offset)}; init times are at least minutes apart. "
            "For month starts write 1MS (capital MS; ms is a millisecond)."
        )
    return offset


def lead_steps(lead: str | pd.Timedelta, step: pd.Timedelta, *, what: str = "--lead") -> int:
    """Number of model steps in ``lead`` (e.g. ``"365d"``, ``"240h"``, ``"10 days"``).

    Raises:
        ValueError: the lead is unreadable, not positive, or not a whole number of model steps (the
            message gives the nearest valid leads).
    """
    text = re.sub(r"(\d)d$", r"\1D", lead.strip()) if isinstance(lead, str) else lead
    try:
        duration = pd.Timedelta(text)
    except ValueError as err:
        raise ConfigError(
            f"cannot read {what} {lead!r} as a duration ({err}); use e.g. 10d or 240h."
        ) from err
    if duration <= pd.Timedelta(0):
        raise ConfigError(f"{what} must be positive, got {lead!r}.")
    ratio, rest = divmod(duration.value, step.value)
    if rest:
        below, above = ratio * step, (ratio + 1) * step
        raise ConfigError(
            f"{what} {lead!r} ({duration}) is not a multiple of the model step {step}: use "
            f"{below if ratio else above} or {above} instead."
        )
    return int(ratio)

"""The channel manifest: every input/output channel of a model, flattened onto one channel axis.

State channels are (variable, level) pairs for pressure-level variables plus surface variables; static
channels are time-invariant fields from the store (land-sea mask, surface geopotential) or the grid
(encoded latitude/longitude); forcing channels are analytic functions of time (and position). The manifest
is saved as JSON next to statistics and inside checkpoints, so a model can refuse data it was not trained on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from earthcast.datasets.forcings import COORDINATE_STATICS, FORCING_CHANNELS, FORCING_GROUPS

ChannelKind = Literal["state", "static", "forcing"]

MANIFEST_VERSION = 1


def channel_name(variable: str, level: int | None) -> str:
    """WB2-style flat name: ``temperature_850`` for a level, the variable itself for a surface field."""
    return variable if level is None else f"{variable}_{level}"


@dataclass(frozen=True)
class Channel:
    """One channel: its flat name, the store variable and level it comes from, its role and units."""

    name: str
    variable: str
    level: int | None
    kind: ChannelKind
    units: str


@dataclass(frozen=True)
class ChannelManifest:
    """Ordered channels by role plus the grid they live on.

    Attributes:
        state: prognostic channels, the order of the model's state axis.
        static: time-invariant input channels.
        forcing: time-dependent input channels computed analytically.
        latitude: (H,) degrees north, ascending.
        longitude: (W,) degrees east in 0…360.
        time_step_hours: model step in hours.
        masked: whether NaN points (land in ocean stores) are masked out of losses and metrics.
    """

    state: tuple[Channel, ...]
    static: tuple[Channel, ...] = ()
    forcing: tuple[Channel, ...] = ()
    latitude: tuple[float, ...] = ()
    longitude: tuple[float, ...] = ()
    time_step_hours: float = 6.0
    masked: bool = False
    version: int = field(default=MANIFEST_VERSION)

    def names(self, kind: ChannelKind) -> list[str]:
        """Flat channel names of one role, in order."""
        return [c.name for c in getattr(self, kind)]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(H, W)."""
        return (len(self.latitude), len(self.longitude))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (used in checkpoints and caches)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ChannelManifest:
        """Inverse of :meth:`to_dict`."""
        kinds = {k: tuple(Channel(**c) for c in data.get(k, ())) for k in ("state", "static", "forcing")}
        scalars = {k: v for k, v in data.items() if k not in kinds}
        scalars["latitude"] = tuple(float(x) for x in scalars.get("latitude", ()))
        scalars["longitude"] = tuple(float(x) for x in scalars.get("longitude", ()))
        return cls(**kinds, **scalars)

    def save(self, path: str | Path) -> None:
        """Write the manifest as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> ChannelManifest:
        """Read a manifest written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def differences(self, other: ChannelManifest) -> list[str]:
        """Human-readable differences between two manifests (empty if they are compatible)."""
        diffs: list[str] = []
        for kind in ("state", "static", "forcing"):
            mine, theirs = self.names(kind), other.names(kind)
            if mine != theirs:
                gone = [n for n in mine if n not in theirs]
                new = [n for n in theirs if n not in mine]
                detail = (
                    f"missing {gone}, extra {new}" if gone or new else "same channels in a different order"
                )
                diffs.append(f"{kind} channels differ: {detail}")
        for axis in ("latitude", "longitude"):
            a, b = np.asarray(getattr(self, axis)), np.asarray(getattr(other, axis))
            if a.shape != b.shape or (a.size and np.max(np.abs(a - b)) > 1e-3):
                diffs.append(f"{axis} grids differ ({a.size} vs {b.size} points)")
        if self.time_step_hours != other.time_step_hours:
            diffs.append(f"time step differs ({self.time_step_hours} h vs {other.time_step_hours} h)")
        if self.masked != other.masked:
            diffs.append(f"masking differs ({self.masked} vs {other.masked})")
        return diffs


def _units(ds: xr.Dataset, variable: str) -> str:
    return str(ds[variable].attrs.get("units", "unknown"))


def _state_channels(
    ds: xr.Dataset, variables: Mapping[str, Sequence[int] | None], where: str
) -> list[Channel]:
    channels: list[Channel] = []
    for variable, levels in variables.items():
        if variable not in ds.data_vars:
            raise KeyError(
                f"Variable {variable!r} is not in {where}. Available variables: {sorted(map(str, ds.data_vars))}. "
                "Fix the name under data.variables (WB2 names such as 'geopotential', '2m_temperature'), or point "
                "data.store at a store that has it."
            )
        has_level = "level" in ds[variable].dims
        if has_level:
            available = [int(x) for x in ds["level"].values]
            wanted = available if levels is None else [int(x) for x in levels]
            missing = [lvl for lvl in wanted if lvl not in available]
            if missing:
                raise KeyError(
                    f"Level(s) {missing} of {variable!r} are not in {where}; its levels are {available}. "
                    f"Choose levels from that list under data.variables.{variable}."
                )
            channels += [
                Channel(channel_name(variable, lvl), variable, lvl, "state", _units(ds, variable))
                for lvl in wanted
            ]
        else:
            if levels:
                raise KeyError(
                    f"{variable!r} in {where} is a surface field (no level dimension) but levels {list(levels)} "
                    f"were requested. Set data.variables.{variable} to null."
                )
            channels.append(Channel(variable, variable, None, "state", _units(ds, variable)))
    return channels


def _expand(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out += list(FORCING_GROUPS.get(name, (name,)))
    return out


def build_manifest(
    ds: xr.Dataset,
    variables: Mapping[str, Sequence[int] | None],
    *,
    static: Sequence[str] = (),
    forcings: Sequence[str] = (),
    time_step_hours: float = 6.0,
    masked: bool = False,
    where: str = "the store",
) -> ChannelManifest:
    """Check a channel selection against a normalised dataset and build its manifest.

    Args:
        ds: a dataset from :func:`earthcast.datasets.store.open_store`.
        variables: variable -> list of levels (hPa), or None for all levels / a surface field.
        static: store variables without a time dimension (``land_sea_mask``, ``geopotential_at_surface``)
            and/or coordinate encodings (``latitude``, ``longitude``, or their sin/cos channel names).
        forcings: ``hour_of_day``, ``day_of_year``, ``toa_insolation`` (or their channel names).
        where: how to name the store in error messages.

    Raises:
        KeyError: a variable, level or static field is missing; the message lists what is available.
    """
    state = _state_channels(ds, variables, where)
    static_channels: list[Channel] = []
    for name in _expand(static):
        if name in COORDINATE_STATICS:
            static_channels.append(Channel(name, name, None, "static", COORDINATE_STATICS[name]))
        elif name in ds.data_vars and "time" not in ds[name].dims:
            static_channels.append(Channel(name, name, None, "static", _units(ds, name)))
        else:
            statics = sorted(str(v) for v in ds.data_vars if "time" not in ds[v].dims)
            raise KeyError(
                f"Static field {name!r} is not a time-invariant variable of {where} (time-invariant variables: "
                f"{statics}) nor a coordinate encoding ({sorted(FORCING_GROUPS)} / {sorted(COORDINATE_STATICS)}). "
                "Remove it from data.static or add it to the store."
            )
    forcing_channels: list[Channel] = []
    for name in _expand(forcings):
        if name not in FORCING_CHANNELS:
            raise KeyError(
                f"Unknown forcing {name!r}; known: {sorted(FORCING_GROUPS)} or {sorted(FORCING_CHANNELS)}."
            )
        forcing_channels.append(Channel(name, name, None, "forcing", FORCING_CHANNELS[name]))
    return ChannelManifest(
        state=tuple(state),
        static=tuple(static_channels),
        forcing=tuple(forcing_channels),
        latitude=tuple(float(x) for x in ds["latitude"].values),
        longitude=tuple(float(x) for x in ds["longitude"].values),
        time_step_hours=float(time_step_hours),
        masked=masked,
    )

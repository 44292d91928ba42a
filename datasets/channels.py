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
import pandas as pd
import xarray as xr

from earthcast.datasets.boundary import BOUNDARY_MASK, BOUNDARY_PREFIX, check_boundary_width
from earthcast.datasets.forcings import COORDINATE_STATICS, FORCING_CHANNELS, FORCING_GROUPS
from earthcast.datasets.time_axis import TimeStep
from earthcast.errors import DataError, MissingVariableError
from earthcast.grids import GridGeometry, dataset_geometry, grid_geometry

ChannelKind = Literal["state", "static", "forcing"]

MANIFEST_VERSION = 1

VECTOR_COMPONENTS: dict[str, str] = {
    "u_component_of_wind": "v_component_of_wind",
    "10m_u_component_of_wind": "10m_v_component_of_wind",
    "100m_u_component_of_wind": "100m_v_component_of_wind",
    "ugos": "vgos",
    "uo": "vo",
    "eastward_sea_water_velocity": "northward_sea_water_velocity",
}
"""Eastward component variable -> its northward partner: the horizontal vectors whose components change
sign across a pole fold (see :mod:`earthcast.models.geometry`)."""


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
        forcing: time-dependent input channels: computed analytically, then (``boundary_width > 0``) the
            boundary channels read from the truth.
        latitude: (H,) degrees north, ascending.
        longitude: (W,) degrees east in 0…360.
        time_step_hours: model step in hours (for a calendar step, its mean length: display only).
        calendar_step: a calendar model step (:class:`earthcast.datasets.windows.TimeStep` string such as
            ``1MS``, ``3MS``, ``1M-mid``); empty for a fixed step of ``time_step_hours`` (and in older
            manifests).
        masked: whether NaN points (land in ocean stores) are masked out of losses and metrics.
        geometry: the grid's geometry kind (:data:`earthcast.grids.GEOMETRY_KINDS`); empty in manifests
            written before it was recorded, which then derive it from the coordinates.
        boundary_width: cells of lateral boundary forcing of a limited-area model (regional grids; 0 = none):
            the forcing channels then end with ``boundary_<state channel>`` and ``boundary_mask``
            (:mod:`earthcast.datasets.boundary`).
    """

    state: tuple[Channel, ...]
    static: tuple[Channel, ...] = ()
    forcing: tuple[Channel, ...] = ()
    latitude: tuple[float, ...] = ()
    longitude: tuple[float, ...] = ()
    time_step_hours: float = 6.0
    calendar_step: str = ""
    masked: bool = False
    geometry: str = ""
    boundary_width: int = 0
    version: int = field(default=MANIFEST_VERSION)

    def names(self, kind: ChannelKind) -> list[str]:
        """Flat channel names of one role, in order."""
        return [c.name for c in getattr(self, kind)]

    @property
    def analytic_forcings(self) -> list[str]:
        """Names of the forcing channels computed from time and position: all but the boundary channels,
        which come last."""
        boundary = len(self.state) + 1 if self.boundary_width else 0
        return self.names("forcing")[: len(self.forcing) - boundary]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(H, W)."""
        return (len(self.latitude), len(self.longitude))

    @property
    def model_step(self) -> TimeStep:
        """The model step, calendar-aware (advance times by it with
        :func:`earthcast.datasets.windows.advance_times`)."""
        if self.calendar_step:
            return TimeStep.parse(self.calendar_step)
        return TimeStep(duration=pd.Timedelta(round(self.time_step_hours * 3600e9), "ns"))

    @property
    def grid_geometry(self) -> GridGeometry:
        """The recorded geometry (checked against the coordinates when the manifest was built), or the one
        derived from the coordinates for manifests written before it was recorded."""
        if self.geometry:
            return GridGeometry(self.geometry)
        return grid_geometry(np.asarray(self.latitude), np.asarray(self.longitude))

    def vector_channels(self) -> list[int]:
        """Indices of the state channels that are vector components (both u and v of each pair).

        Raises:
            DataError: on a grid that folds across the poles, a component whose partner (same level) is not
                a state channel, since the fold can flip the sign of a vector only when it has both.
        """
        index = {(c.variable, c.level): i for i, c in enumerate(self.state)}
        partners = VECTOR_COMPONENTS | {v: u for u, v in VECTOR_COMPONENTS.items()}
        found: list[int] = []
        for i, channel in enumerate(self.state):
            if channel.variable not in partners:
                continue
            partner = partners[channel.variable]
            if (partner, channel.level) not in index and self.grid_geometry.folds_poles:
                raise DataError(
                    f"state channel {channel.name!r} is one component of a horizontal vector, but its partner "
                    f"{channel_name(partner, channel.level)!r} is not a state channel. On this global grid "
                    "the pole fold flips the sign of both components, so it needs both: add "
                    f"{partner!r}{'' if channel.level is None else f' level {channel.level}'} to "
                    f"data.variables, or drop {channel.name!r}."
                )
            found.append(i)
        return found

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
        if self.model_step != other.model_step:
            diffs.append(f"time step differs ({self.model_step.describe()} vs {other.model_step.describe()})")
        if self.masked != other.masked:
            diffs.append(f"masking differs ({self.masked} vs {other.masked})")
        if self.boundary_width != other.boundary_width:
            diffs.append(
                f"boundary width differs ({self.boundary_width} vs {other.boundary_width} cells): a "
                "limited-area model is trained with the truth in a strip of that width as forcing"
            )
        mine_geo, theirs_geo = self.grid_geometry.kind, other.grid_geometry.kind
        if mine_geo != theirs_geo:
            diffs.append(
                f"grid geometry differs ({mine_geo!r} vs {theirs_geo!r}): a model trained on one geometry "
                "pads and weights its fields for it"
            )
        return diffs


def _units(ds: xr.Dataset, variable: str) -> str:
    return str(ds[variable].attrs.get("units", "unknown"))


def _state_channels(
    ds: xr.Dataset, variables: Mapping[str, Sequence[int] | None], where: str
) -> list[Channel]:
    channels: list[Channel] = []
    for variable, levels in variables.items():
        if variable not in ds.data_vars:
            raise MissingVariableError(
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
                raise MissingVariableError(
                    f"Level(s) {missing} of {variable!r} are not in {where}; its levels are {available}. "
                    f"Choose levels from that list under data.variables.{variable}."
                )
            channels += [
                Channel(channel_name(variable, lvl), variable, lvl, "state", _units(ds, variable))
                for lvl in wanted
            ]
        else:
            if levels:
                raise MissingVariableError(
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
    calendar_step: str = "",
    masked: bool = False,
    geometry: str | None = None,
    boundary_width: int = 0,
    where: str = "the store",
) -> ChannelManifest:
    """Check a channel selection against a normalised dataset and build its manifest.

    Args:
        ds: a dataset from :func:`earthcast.datasets.store.open_store`.
        variables: variable -> list of levels (hPa), or None for all levels / a surface field.
        static: store variables without a time dimension (``land_sea_mask``, ``geopotential_at_surface``)
            and/or coordinate encodings (``latitude``, ``longitude``, or their sin/cos channel names).
        forcings: ``hour_of_day``, ``day_of_year``, ``toa_insolation`` (or their channel names).
        time_step_hours, calendar_step: the model step (see :class:`ChannelManifest`).
        geometry: a geometry kind that overrides the store's declared (``grid_geometry`` attribute) or
            derived one; it must be possible on the grid (:func:`earthcast.grids.grid_geometry`).
        boundary_width: cells of lateral boundary forcing (regional grids only): adds the forcing channels
            ``boundary_<state channel>`` and ``boundary_mask`` after the analytic ones.
        where: how to name the store in error messages.

    Raises:
        KeyError: a variable, level or static field is missing; the message lists what is available.
        ConfigError: ``boundary_width`` on a grid that is not regional or that it leaves without interior.
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
            raise MissingVariableError(
                f"Static field {name!r} is not a time-invariant variable of {where} (time-invariant variables: "
                f"{statics}) nor a coordinate encoding ({sorted(FORCING_GROUPS)} / {sorted(COORDINATE_STATICS)}). "
                "Remove it from data.static or add it to the store."
            )
    forcing_channels: list[Channel] = []
    for name in _expand(forcings):
        if name not in FORCING_CHANNELS:
            raise MissingVariableError(
                f"Unknown forcing {name!r}; known: {sorted(FORCING_GROUPS)} or {sorted(FORCING_CHANNELS)}."
            )
        forcing_channels.append(Channel(name, name, None, "forcing", FORCING_CHANNELS[name]))
    kind = dataset_geometry(ds, geometry).kind
    check_boundary_width(boundary_width, kind, (ds.sizes["latitude"], ds.sizes["longitude"]), where)
    if boundary_width:
        forcing_channels += [
            Channel(BOUNDARY_PREFIX + c.name, c.variable, c.level, "forcing", c.units) for c in state
        ]
        forcing_channels.append(Channel(BOUNDARY_MASK, BOUNDARY_MASK, None, "forcing", "1"))
    return ChannelManifest(
        state=tuple(state),
        static=tuple(static_channels),
        forcing=tuple(forcing_channels),
        latitude=tuple(float(x) for x in ds["latitude"].values),
        longitude=tuple(float(x) for x in ds["longitude"].values),
        time_step_hours=float(time_step_hours),
        calendar_step=calendar_step,
        masked=masked,
        geometry=kind,
        boundary_width=int(boundary_width),
    )

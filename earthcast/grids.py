"""WeatherBench2 equiangular grids and grid comparison.

Latitudes are in degrees north, ascending; longitudes in degrees east on 0…360−Δ, as WB2's regridded
stores lay them out (``regridding.LongitudeScheme.START_AT_ZERO``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from earthcast.errors import ConfigError, GridError

GRID_TOLERANCE_DEG = 1e-3
"""WB2's ``_ensure_aligned_grid`` tolerance between forecast and truth coordinates, in degrees."""


@dataclass(frozen=True)
class Grid:
    """A regular latitude/longitude grid.

    Attributes:
        name: WB2 grid name, e.g. ``"64x32_equiangular_conservative"``.
        latitude: (H,) float64 degrees north, strictly ascending.
        longitude: (W,) float64 degrees east, 0 ≤ lon < 360, strictly ascending.
    """

    name: str
    latitude: np.ndarray
    longitude: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (number of latitudes, number of longitudes)."""
        return (self.latitude.size, self.longitude.size)


def equiangular_grid(n_lon: int, n_lat: int, *, with_poles: bool) -> Grid:
    """An equiangular grid as WB2 builds it.

    Without poles the latitudes are cell centres ``-90+Δ/2 … 90−Δ/2`` (64x32: ±87.1875); with poles they
    run ``-90 … 90`` inclusive (240x121, 1440x721).
    """
    lon = np.arange(n_lon, dtype=np.float64) * (360.0 / n_lon)
    if with_poles:
        lat = np.linspace(-90.0, 90.0, n_lat, dtype=np.float64)
        name = f"{n_lon}x{n_lat}_equiangular_with_poles_conservative"
    else:
        step = 180.0 / n_lat
        lat = -90.0 + step / 2 + np.arange(n_lat, dtype=np.float64) * step
        name = f"{n_lon}x{n_lat}_equiangular_conservative"
    return Grid(name=name, latitude=lat, longitude=lon)


WB2_GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        equiangular_grid(64, 32, with_poles=False),
        equiangular_grid(64, 33, with_poles=True),
        equiangular_grid(240, 121, with_poles=True),
        equiangular_grid(512, 256, with_poles=False),
        equiangular_grid(1440, 721, with_poles=True),
    )
}


def wb2_grid(name: str) -> Grid:
    """Look up a WB2 grid by name (``64x32_equiangular_conservative``, ``240x121_…``, ``1440x721_…``)."""
    try:
        return WB2_GRIDS[name]
    except KeyError:
        known = ", ".join(sorted(WB2_GRIDS))
        raise ConfigError(f"Unknown WB2 grid {name!r}. Known grids: {known}.") from None


def wb2_grid_name(latitude: np.ndarray, longitude: np.ndarray) -> str | None:
    """The WB2 name of a grid (e.g. ``64x32_equiangular_conservative``) within 1e-3°, or None if it is none."""
    for name, grid in WB2_GRIDS.items():
        if grid_mismatch(latitude, longitude, grid.latitude, grid.longitude) is None:
            return name
    return None


def grid_mismatch(
    lat_a: np.ndarray,
    lon_a: np.ndarray,
    lat_b: np.ndarray,
    lon_b: np.ndarray,
    *,
    tolerance: float = GRID_TOLERANCE_DEG,
) -> str | None:
    """Describe how two grids differ by more than ``tolerance`` degrees, or return None if they match."""
    for axis, a, b in (("latitude", lat_a, lat_b), ("longitude", lon_a, lon_b)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return f"{axis} has {a.size} points in one grid and {b.size} in the other"
        if a.size and np.max(np.abs(a - b)) > tolerance:
            i = int(np.argmax(np.abs(a - b)))
            return (
                f"{axis} differs by {abs(a[i] - b[i]):.6g}° at index {i} ({a[i]:.6g} vs {b[i]:.6g}); "
                f"the tolerance is {tolerance}°"
            )
    return None


GEOMETRY_KINDS: dict[str, str] = {
    "global_poles": "global, with pole rows (longitude wraps; rows fold across the poles onto themselves)",
    "global": "global, without pole rows (longitude wraps; rows fold across the poles)",
    "band": "a latitude band around the globe (longitude wraps; no pole)",
    "regional": "regional (limited area: no wrap, no fold)",
    "periodic": "doubly periodic (idealised β-plane: both directions wrap)",
}
"""Grid geometries, name -> description. They decide padding (models) and area weights (loss and scores)."""

GEOMETRY_ATTR = "grid_geometry"
"""Dataset attribute through which a store declares its geometry (the QG β-plane demo says ``periodic``)."""

AREA_WEIGHTINGS: dict[str, str] = {
    "global_poles": "wb2_cell_area",
    "global": "wb2_cell_area",
    "band": "cell_area",
    "regional": "cell_area",
    "periodic": "uniform",
}
"""Geometry -> the area weighting used for losses and scores (recorded in results files)."""


@dataclass(frozen=True)
class GridGeometry:
    """What a grid is on the sphere: global (with or without pole rows), a latitude band, a regional box, or
    a doubly periodic β-plane. Derived from the coordinates by :func:`grid_geometry`.

    Attributes:
        kind: one of :data:`GEOMETRY_KINDS`.
    """

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in GEOMETRY_KINDS:
            raise GridError(
                f"unknown grid geometry {self.kind!r}; use one of {', '.join(GEOMETRY_KINDS)} "
                "(or leave it unset to derive it from the coordinates)"
            )

    @property
    def wraps_longitude(self) -> bool:
        """Whether the east edge joins the west edge."""
        return self.kind != "regional"

    @property
    def folds_poles(self) -> bool:
        """Whether rows continue across a pole onto the meridian 180° away."""
        return self.kind in ("global_poles", "global")

    @property
    def area_weighting(self) -> str:
        """``wb2_cell_area`` (WB2's exact formula), ``cell_area`` (own cell bounds) or ``uniform``."""
        return AREA_WEIGHTINGS[self.kind]

    def describe(self) -> str:
        """One line for ``earthcast data info``."""
        return f"{self.kind}: {GEOMETRY_KINDS[self.kind]}"


def _regular_spacing(values: np.ndarray, axis: str) -> float:
    """The spacing of a strictly ascending, regular coordinate, or a :class:`GridError` naming the problem."""
    if values.size < 2:
        return 0.0
    diffs = np.diff(values)
    if not (np.all(diffs > 0) or np.all(diffs < 0)):
        raise GridError(
            f"{axis} is not monotonic (first values {np.round(values[:4], 6).tolist()}); earthcast needs a "
            f"regular {axis} axis. Sort the store by {axis} (ds.sortby('{axis}')) or regrid it."
        )
    step = float(np.median(diffs))
    worst = int(np.argmax(np.abs(diffs - step)))
    if abs(diffs[worst] - step) > GRID_TOLERANCE_DEG:
        raise GridError(
            f"{axis} spacing is irregular: {values[worst]:.6g} -> {values[worst + 1]:.6g} is "
            f"{diffs[worst]:.6g}° but the typical step is {step:.6g}° (tolerance {GRID_TOLERANCE_DEG}°). "
            "Regrid the data to an equiangular grid (e.g. with xesmf or WB2's conservative regridder); "
            "Gaussian grids are not supported."
        )
    return step


def grid_geometry(latitude: np.ndarray, longitude: np.ndarray, declared: str | None = None) -> GridGeometry:
    """The geometry of a regular grid, derived from its coordinates.

    Global: the longitudes cover 360° (n·Δλ = 360° within 1e-3°) and the latitudes reach both poles (pole
    rows at ±90°, or cell edges half a spacing beyond the outer rows at ±90°). A band covers 360° of
    longitude but not the poles. Anything else is regional. A doubly periodic β-plane cannot be told from
    its coordinates: the store (attribute ``grid_geometry``) or the config declares it.

    Args:
        latitude: (H,) degrees north, ascending.
        longitude: (W,) degrees east, ascending (may run past 360 or start below 0 for a regional box).
        declared: a geometry named by the store or the user; it must be possible on this grid (a box
            cannot be declared global; any grid may be declared regional or periodic).

    Raises:
        GridError: non-monotonic or irregular coordinates, or a declared geometry the grid cannot have.
    """
    lat = np.asarray(latitude, dtype=np.float64)
    lon = np.asarray(longitude, dtype=np.float64)
    dlat = _regular_spacing(lat, "latitude")
    dlon = _regular_spacing(lon, "longitude")
    wraps = lon.size > 1 and abs(lon.size * dlon - 360.0) <= GRID_TOLERANCE_DEG
    pole_rows = (
        lat.size > 1
        and abs(lat[0] + 90.0) <= GRID_TOLERANCE_DEG
        and abs(lat[-1] - 90.0) <= GRID_TOLERANCE_DEG
    )
    edges = (
        lat.size > 1
        and abs(lat[0] - dlat / 2 + 90.0) <= GRID_TOLERANCE_DEG
        and abs(lat[-1] + dlat / 2 - 90.0) <= GRID_TOLERANCE_DEG
    )
    derived = ("global_poles" if pole_rows else "global" if edges else "band") if wraps else "regional"
    if declared is None or declared == derived:
        return GridGeometry(derived)
    possible = {"regional", "periodic"} | ({"band"} if wraps else set())
    if declared not in possible:
        GridGeometry(declared)  # unknown names get the list of valid ones
        raise GridError(
            f"the grid ({lat.size}x{lon.size}, latitudes {lat[0]:g}…{lat[-1]:g}, longitudes {lon[0]:g}…"
            f"{lon[-1]:g}) cannot be {declared!r}: its coordinates make it {derived!r}. Remove the "
            f"geometry setting, or set it to one of {sorted(possible | {derived})}."
        )
    return GridGeometry(declared)


def dataset_geometry(ds: Any, declared: str | None = None) -> GridGeometry:
    """The geometry of an (opened, normalised) xarray dataset: ``declared`` if given, else the store's own
    ``grid_geometry`` attribute, checked against and otherwise derived from its coordinates."""
    return grid_geometry(
        ds["latitude"].values, ds["longitude"].values, declared or ds.attrs.get(GEOMETRY_ATTR)
    )

"""Latitude (cell-area) weights: WeatherBench2's on global grids, a regional grid's own cells otherwise.

WB2 (``metrics.get_lat_weights``) weights each latitude row by the area of its cell: cell bounds are the
midpoints between neighbouring latitudes, with the outermost bounds at ±90°, and the weight is
``sin(upper) − sin(lower)`` normalised to mean 1. Pole rows therefore get a small non-zero weight, unlike
``cos(lat)``. Golden values: 64x32 (no poles) w₀ = 0.0770444, w₁ = 0.230391; 121 latitudes w_pole =
0.00518318, w_eq = 1.58384; 721 latitudes w_pole = 0.000857926.

WB2 is built for global grids: on a regional box its formula gives the edge rows all the area between the
domain and the poles (70% of the weight on the southern row of the embedded 24–40°N ocean demo). Regional
and band grids therefore use their own cell bounds, and a β-plane uniform weights (:func:`latitude_weights`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from earthcast.errors import GridError
from earthcast.grids import AREA_WEIGHTINGS, GRID_TOLERANCE_DEG, GridGeometry


def latitude_cell_bounds(latitude: ArrayLike) -> np.ndarray:
    """Cell bounds (H+1,) in degrees: −90, the midpoints between neighbouring latitudes, +90."""
    lat = np.asarray(latitude, dtype=np.float64)
    return np.concatenate([[-90.0], (lat[:-1] + lat[1:]) / 2, [90.0]])


def regional_cell_bounds(latitude: ArrayLike) -> np.ndarray:
    """Cell bounds (H+1,) in degrees of a grid that does not reach the poles: the midpoints between
    neighbouring latitudes, and half a spacing beyond each edge row (clipped to ±90°)."""
    lat = np.asarray(latitude, dtype=np.float64)
    if lat.size < 2:
        raise GridError(f"a regional grid needs at least two latitudes for cell bounds, got {lat.size}")
    inner = (lat[:-1] + lat[1:]) / 2
    first, last = lat[0] - (lat[1] - lat[0]) / 2, lat[-1] + (lat[-1] - lat[-2]) / 2
    return np.clip(np.concatenate([[first], inner, [last]]), -90.0, 90.0)


def latitude_weights(latitude: ArrayLike, geometry: GridGeometry | str | None = None) -> np.ndarray:
    """Area weights per latitude row, normalised to mean 1: the one function behind losses and scores.

    - global grids (``global``, ``global_poles``): WB2's exact formula (outer bounds at ±90°), so WB2
      parity holds;
    - ``band`` and ``regional`` grids: the same sin-difference of each row's own cell bounds, the outer
      bounds half a spacing beyond the edge rows (WB2's formula would hand the edge rows all the area
      between the domain and the poles);
    - ``periodic`` (β-plane): uniform.

    Args:
        latitude: (H,) degrees north, strictly ascending (open stores with
            ``earthcast.datasets.store.open_store`` or ``ds.sortby("latitude")`` to get that order).
        geometry: the grid's geometry (:func:`earthcast.grids.grid_geometry`) or its kind; ``None`` derives
            it from the latitudes alone (global if the cells reach both poles, else regional).

    Returns:
        (H,) float64 weights with mean 1.
    """
    lat = np.asarray(latitude, dtype=np.float64)
    if lat.ndim != 1 or lat.size == 0:
        raise GridError(f"latitude must be a non-empty 1-D array, got shape {lat.shape}.")
    weighting = area_weighting(lat, geometry)
    if weighting == "uniform":
        return np.ones_like(lat)
    bounds = latitude_cell_bounds(lat) if weighting == "wb2_cell_area" else regional_cell_bounds(lat)
    bounds = np.deg2rad(bounds)
    if not np.all(np.diff(bounds) > 0):
        raise GridError(
            "latitude must be strictly increasing and within [-90, 90] for area weights "
            f"(got {lat[:3]}…{lat[-3:]}); sort it first with ds.sortby('latitude')."
        )
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return area / area.mean()


def area_weighting(latitude: ArrayLike, geometry: GridGeometry | str | None = None) -> str:
    """The weighting :func:`latitude_weights` applies: ``wb2_cell_area``, ``cell_area`` or ``uniform``."""
    if geometry is not None:
        kind = geometry.kind if isinstance(geometry, GridGeometry) else GridGeometry(str(geometry)).kind
        return AREA_WEIGHTINGS[kind]
    lat = np.asarray(latitude, dtype=np.float64)
    if lat.size < 2:
        return "wb2_cell_area"
    edges = regional_cell_bounds(lat)
    reaches_poles = edges[0] <= -90.0 + GRID_TOLERANCE_DEG and edges[-1] >= 90.0 - GRID_TOLERANCE_DEG
    return "wb2_cell_area" if reaches_poles else "cell_area"

"""WeatherBench2 latitude (cell-area) weights.

WB2 (``metrics.get_lat_weights``) weights each latitude row by the area of its cell: cell bounds are the
midpoints between neighbouring latitudes, with the outermost bounds at ±90°, and the weight is
``sin(upper) − sin(lower)`` normalised to mean 1. Pole rows therefore get a small non-zero weight, unlike
``cos(lat)``. Golden values: 64x32 (no poles) w₀ = 0.0770444, w₁ = 0.230391; 121 latitudes w_pole =
0.00518318, w_eq = 1.58384; 721 latitudes w_pole = 0.000857926.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def latitude_cell_bounds(latitude: ArrayLike) -> np.ndarray:
    """Cell bounds (H+1,) in degrees: −90, the midpoints between neighbouring latitudes, +90."""
    lat = np.asarray(latitude, dtype=np.float64)
    return np.concatenate([[-90.0], (lat[:-1] + lat[1:]) / 2, [90.0]])


def latitude_weights(latitude: ArrayLike) -> np.ndarray:
    """WB2 area weights per latitude row.

    Args:
        latitude: (H,) degrees north, strictly ascending (open stores with
            ``earthcast.datasets.store.open_store`` or ``ds.sortby("latitude")`` to get that order).

    Returns:
        (H,) float64 weights with mean 1.
    """
    lat = np.asarray(latitude, dtype=np.float64)
    if lat.ndim != 1 or lat.size == 0:
        raise ValueError(f"latitude must be a non-empty 1-D array, got shape {lat.shape}.")
    bounds = np.deg2rad(latitude_cell_bounds(lat))
    if not np.all(np.diff(bounds) > 0):
        raise ValueError(
            "latitude must be strictly increasing and within [-90, 90] for WB2 area weights "
            f"(got {lat[:3]}…{lat[-3:]}); sort it first with ds.sortby('latitude')."
        )
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return area / area.mean()

"""WeatherBench2 equiangular grids and grid comparison.

Latitudes are in degrees north, ascending; longitudes in degrees east on 0…360−Δ, as WB2's regridded
stores lay them out (``regridding.LongitudeScheme.START_AT_ZERO``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        raise ValueError(f"Unknown WB2 grid {name!r}. Known grids: {known}.") from None


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

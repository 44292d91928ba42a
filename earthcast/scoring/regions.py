"""WeatherBench2 evaluation regions as per-grid-point weight masks.

The boxes are those predefined in WB2's ``scripts/evaluate.py``. A WB2 ``SliceRegion`` selects with
*inclusive* label slices (``lat_slice=slice(-20, 20)`` keeps −20 and 20) and concatenates lists of
slices (``europe``'s longitudes 347.5…360 and 0…42.5 wrap around the meridian). Land regions multiply the
latitude weights by the fractional ``land_sea_mask``; WB2 then zeroes values where the weight is 0.

Here every region becomes an (H, W) weight array ``latitude_weight × in_region × [land fraction]``; the
area mean over a region is ``Σ w·x / Σ w`` over the points with ``w > 0``, which is what WB2's
select-then-``weighted().mean()`` computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from earthcast.errors import DataError
from earthcast.grids import GridGeometry, grid_geometry
from earthcast.scoring.weights import latitude_weights

Bounds = tuple[float | None, float | None]
"""An inclusive label slice (lower, upper); None leaves that side open."""


@dataclass(frozen=True)
class Region:
    """A WB2 region.

    Attributes:
        name: WB2 region name (``global``, ``europe``, ``tropics_land``, …).
        lat_slices: inclusive latitude slices in degrees north; their union is kept.
        lon_slices: inclusive longitude slices in degrees east on 0…360; their union is kept.
        land: weight by the fractional land-sea mask (WB2 ``LandRegion``).
    """

    name: str
    lat_slices: tuple[Bounds, ...] = ((None, None),)
    lon_slices: tuple[Bounds, ...] = ((None, None),)
    land: bool = False


def _in_slices(coord: np.ndarray, slices: tuple[Bounds, ...]) -> np.ndarray:
    keep = np.zeros(coord.shape, dtype=bool)
    for lower, upper in slices:
        inside = np.ones(coord.shape, dtype=bool)
        if lower is not None:
            inside &= coord >= lower
        if upper is not None:
            inside &= coord <= upper
        keep |= inside
    return keep


_EXTRA_TROPICS = ((None, -20.0), (20.0, None))

SLICE_REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("global"),
        Region("tropics", lat_slices=((-20.0, 20.0),)),
        Region("extra-tropics", lat_slices=_EXTRA_TROPICS),
        Region("northern-hemisphere", lat_slices=((20.0, None),)),
        Region("southern-hemisphere", lat_slices=((None, -20.0),)),
        Region("europe", lat_slices=((35.0, 75.0),), lon_slices=((347.5, None), (0.0, 42.5))),
        Region("north-america", lat_slices=((25.0, 60.0),), lon_slices=((240.0, 285.0),)),
        Region("north-atlantic", lat_slices=((25.0, 65.0),), lon_slices=((290.0, 350.0),)),
        Region("north-pacific", lat_slices=((25.0, 60.0),), lon_slices=((145.0, 230.0),)),
        Region("east-asia", lat_slices=((25.0, 60.0),), lon_slices=((102.5, 150.0),)),
        Region("ausnz", lat_slices=((-45.0, -12.5),), lon_slices=((120.0, 175.0),)),
        Region("arctic", lat_slices=((60.0, 90.0),)),
        Region("antarctic", lat_slices=((-90.0, -60.0),)),
    )
}
"""WB2's predefined box regions (``scripts/evaluate.py``)."""

LAND_REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("global_land", land=True),
        Region("extra-tropics_land", lat_slices=_EXTRA_TROPICS, land=True),
        Region("tropics_land", lat_slices=((-20.0, 20.0),), land=True),
    )
}
"""WB2's land regions; they need a ``land_sea_mask`` (fraction of land, 0…1) on the truth grid."""


def resolve_regions(names: list[str] | None, *, have_land_sea_mask: bool) -> list[Region]:
    """Turn region names into Regions; ``None`` means ``["global"]`` and ``["all"]`` every available one."""
    if not names:
        return [SLICE_REGIONS["global"]]
    if list(names) == ["all"]:
        return list(SLICE_REGIONS.values()) + (list(LAND_REGIONS.values()) if have_land_sea_mask else [])
    known = SLICE_REGIONS | LAND_REGIONS
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(
            f"Unknown region(s) {unknown}. Valid regions: {', '.join(known)} (or 'all' for every one)."
        )
    land = [n for n in names if n in LAND_REGIONS]
    if land and not have_land_sea_mask:
        raise DataError(
            f"Region(s) {land} need a 'land_sea_mask' variable (land fraction 0…1 on the truth grid); the "
            "truth store has none. Pass one with land_sea_mask=… or drop the *_land regions."
        )
    return [known[n] for n in dict.fromkeys(names)]


def region_weights(
    regions: list[Region],
    latitude: ArrayLike,
    longitude: ArrayLike,
    land_sea_mask: ArrayLike | None = None,
    *,
    geometry: GridGeometry | None = None,
) -> np.ndarray:
    """Per-point area weights of each region.

    Args:
        regions: R regions.
        latitude: (H,) ascending degrees north.
        longitude: (W,) degrees east (a regional box may run below 0 or past 360: compared modulo 360).
        land_sea_mask: (H, W) land fraction, needed by land regions.
        geometry: the grid's geometry (area weighting, see :func:`earthcast.scoring.weights.latitude_weights`);
            default: derived from the coordinates.

    Returns:
        (R, H, W) float64: latitude weight × region membership (× land fraction); zero outside.
    """
    lat = np.asarray(latitude, dtype=np.float64)
    lon = np.asarray(longitude, dtype=np.float64)
    w_lat = latitude_weights(lat, geometry or grid_geometry(lat, lon))
    out = np.empty((len(regions), lat.size, lon.size), dtype=np.float64)
    for i, region in enumerate(regions):
        inside = np.outer(
            _in_slices(lat, region.lat_slices), _in_slices(np.mod(lon, 360.0), region.lon_slices)
        )
        weights = w_lat[:, None] * inside
        if region.land:
            if land_sea_mask is None:
                raise DataError(f"Region {region.name!r} needs a land_sea_mask (H, W) of land fractions.")
            weights = weights * np.asarray(land_sea_mask, dtype=np.float64)
        if not np.any(weights > 0):
            raise DataError(
                f"Region {region.name!r} holds no grid points of this grid "
                f"(latitudes {lat.min():g}…{lat.max():g}, longitudes {lon.min():g}…{lon.max():g}); "
                "drop it from --regions."
            )
        out[i] = weights
    return out

"""Coastlines drawn from the Natural Earth 1:110m shapefile shipped inside earthcast.

Maps never call ``ax.coastlines()``: that looks the data up through ``cartopy.config`` and downloads it
when it is missing. Instead the shipped shapefile is read directly into a
:class:`cartopy.feature.ShapelyFeature`, which needs no network and leaves ``cartopy.config`` (a
process-wide setting the user may own) untouched. Provenance and licence: ``naturalearth/README.md``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cartopy.crs as ccrs
import cartopy.feature as cfeature
import cartopy.io.shapereader as shapereader
from cartopy.mpl.geoaxes import GeoAxes

from earthcast.errors import StoreNotFoundError

NATURAL_EARTH_DIR = Path(__file__).resolve().parent / "naturalearth"
"""Root of the shipped data, in cartopy's ``pre_existing_data_dir`` layout."""

COASTLINE_SHAPEFILE = (
    NATURAL_EARTH_DIR / "shapefiles" / "natural_earth" / "physical" / "ne_110m_coastline.shp"
)
"""Natural Earth 1:110m coastline (public domain), WGS 84 longitude/latitude in degrees."""


@lru_cache(maxsize=1)
def coastline_feature() -> cfeature.ShapelyFeature:
    """The shipped 1:110m coastline as a cartopy feature in PlateCarree coordinates (read once per process)."""
    if not COASTLINE_SHAPEFILE.is_file():
        raise StoreNotFoundError(
            f"The shipped coastline shapefile is missing: {COASTLINE_SHAPEFILE}. The earthcast install is "
            "incomplete; reinstall it with `pip install -e .` from a full checkout (the files live in "
            "earthcast/plotting/naturalearth/)."
        )
    geometries = list(shapereader.Reader(str(COASTLINE_SHAPEFILE)).geometries())
    return cfeature.ShapelyFeature(geometries, ccrs.PlateCarree(), facecolor="none")


def add_coastlines(ax: GeoAxes, *, color: str = "black", linewidth: float = 0.6) -> None:
    """Draw the shipped coastlines on a cartopy map axis, offline."""
    ax.add_feature(coastline_feature(), edgecolor=color, linewidth=linewidth, zorder=3)

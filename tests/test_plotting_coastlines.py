"""Offline coastlines: real cartopy rendering with every network path blocked.

Coastline pixels are checked against the vertices of the Natural Earth shapefile shipped with earthcast.
"""

from __future__ import annotations

import cartopy.crs as ccrs
import cartopy.io.shapereader as shapereader
import numpy as np
import pytest
import shapely.geometry
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes
from conftest import NetworkUsed
from matplotlib import colormaps
from matplotlib.figure import Figure

from earthcast.grids import equiangular_grid
from earthcast.plotting import plot_map
from earthcast.plotting.coastlines import COASTLINE_SHAPEFILE

GRID = equiangular_grid(64, 32, with_poles=False)

pytestmark = pytest.mark.usefixtures("no_network")


def test_network_block_is_effective() -> None:
    """Cartopy's own Natural Earth lookup fails here, so the maps below cannot be using it."""
    with pytest.raises(NetworkUsed):
        shapereader.natural_earth(resolution="110m", category="physical", name="coastline")


def _render(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.int32)


def _pixel(ax: GeoAxes, lon: float, lat: float, height: int) -> tuple[int, int]:
    x, y = ax.projection.transform_point(lon, lat, ccrs.PlateCarree())
    px, py = ax.transData.transform((x, y))
    return round(float(height - py)), round(float(px))


def _zeros() -> xr.DataArray:
    return xr.DataArray(
        np.zeros((32, 64)),
        dims=("latitude", "longitude"),
        coords={"latitude": GRID.latitude, "longitude": GRID.longitude},
    )


@pytest.mark.parametrize("projection_name", ["platecarree", "robinson"])
def test_coastlines_render_offline_where_the_shapefile_puts_them(projection_name: str) -> None:
    fig = plot_map(_zeros(), vmin=-1.0, vmax=1.0, cmap="viridis", projection_name=projection_name)
    image = _render(fig)
    ax = fig.axes[0]
    height = image.shape[0]
    background = np.round(np.array(colormaps["viridis"](0.5)[:3]) * 255).astype(np.int32)
    dark = image.sum(axis=-1) < 200

    # Vertices of long coastlines (continents) must land on dark (coastline) pixels.
    lines = sorted(shapereader.Reader(str(COASTLINE_SHAPEFILE)).geometries(), key=lambda g: -g.length)[:6]
    vertices = np.concatenate([np.asarray(g.coords)[::7] for g in lines])
    vertices = vertices[np.abs(vertices[:, 1]) < 75]
    hits = 0
    for lon, lat in vertices:
        row, col = _pixel(ax, lon, lat, height)
        hits += bool(dark[row - 1 : row + 2, col - 1 : col + 2].any())
    assert len(vertices) > 50
    assert hits / len(vertices) > 0.9

    # Open ocean (no coastline inside, checked on the shapefile itself) keeps the field colour.
    box = shapely.geometry.box(-150.0, -8.0, -125.0, 8.0)
    assert not any(g.intersects(box) for g in shapereader.Reader(str(COASTLINE_SHAPEFILE)).geometries())
    r0, c0 = _pixel(ax, -148.0, 6.0, height)
    r1, c1 = _pixel(ax, -127.0, -6.0, height)
    ocean = image[r0:r1, c0:c1]
    assert ocean.size > 100
    assert np.abs(ocean - background).max() <= 2

    # Without coastlines the same map has no dark pixels at all inside the map.
    bare = _render(plot_map(_zeros(), vmin=-1.0, vmax=1.0, projection_name=projection_name, coastlines=False))
    r_ne, c_ne = _pixel(ax, 20.0, 50.0, height)
    r_sw, c_sw = _pixel(ax, -20.0, 0.0, height)
    assert dark[r_ne:r_sw, c_sw:c_ne].any()  # Europe/Africa coasts in that box
    assert not (bare[r_ne:r_sw, c_sw:c_ne].sum(axis=-1) < 200).any()

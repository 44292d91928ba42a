"""Grid geometry as data: derivation from coordinates, padding per geometry (with the vector-aware pole
fold), area weights per geometry, and the manifest/checkpoint rules that carry it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import quad

from earthcast.datasets.channels import Channel, ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.errors import DataError, GridError
from earthcast.grids import equiangular_grid, grid_geometry
from earthcast.models.geometry import Halo, SphereConv2d, pad_latitude, pad_longitude
from earthcast.models.tritoncast import TritonCast, size_config
from earthcast.scoring.weights import area_weighting, latitude_weights
from earthcast.training.checks import compatibility_problems

MICRO = dict(widths=(8, 16, 16), core=dict(width=32, pattern="AMF", heads=2, headdim=16, d_state=16))


@pytest.mark.parametrize(
    ("lat", "lon", "kind"),
    [
        (equiangular_grid(64, 32, with_poles=False).latitude, np.arange(64) * 5.625, "global"),
        (np.linspace(-90, 90, 121), np.arange(240) * 1.5, "global_poles"),
        (np.linspace(-90, 90, 73), np.arange(144) * 2.5, "global_poles"),  # 2.5° with pole rows
        (np.arange(-29.75, 30, 0.5), np.arange(720) * 0.5, "band"),
        (np.arange(50, 58.01, 0.25), np.arange(-10, 2.01, 0.25), "regional"),
        (24.125 + 0.25 * np.arange(64), 290.125 + 0.25 * np.arange(64), "regional"),
    ],
)
def test_geometry_is_derived_from_the_coordinates(lat: np.ndarray, lon: np.ndarray, kind: str) -> None:
    assert grid_geometry(lat, lon).kind == kind


def test_declared_geometry_must_be_possible_on_the_grid() -> None:
    box_lat, box_lon = np.arange(50, 58.01, 0.25), np.arange(0, 8.01, 0.25)
    assert grid_geometry(box_lat, box_lon, "periodic").kind == "periodic"
    with pytest.raises(GridError, match=r"cannot be 'global'.*'regional'"):
        grid_geometry(box_lat, box_lon, "global")
    with pytest.raises(GridError, match="unknown grid geometry"):
        grid_geometry(box_lat, box_lon, "sphere")


def test_irregular_or_non_monotonic_coordinates_are_refused() -> None:
    lon = np.arange(0, 10, 1.0)
    with pytest.raises(GridError, match=r"latitude spacing is irregular: 11 -> 11\.7 is 0\.7°"):
        grid_geometry(np.array([10.0, 10.5, 11.0, 11.7, 12.0]), lon)
    with pytest.raises(GridError, match="latitude is not monotonic"):
        grid_geometry(np.array([10.0, 11.0, 10.5, 12.0]), lon)
    # float32 coordinates of a 0.25° grid are regular within the 1e-3° tolerance
    lat32 = (50 + 0.25 * np.arange(33)).astype(np.float32)
    assert grid_geometry(lat32, lon).kind == "regional"


# ----------------------------------------------------------------------------------------------- padding
def _solid_body(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solid-body rotation about an axis in the equatorial plane (Williamson et al. 1992 case 1, α = 90°):
    u = U sin φ cos λ, v = −U sin λ. The formula is smooth across the poles when φ runs past ±90°."""
    phi, lam = np.deg2rad(lat_deg)[:, None], np.deg2rad(lon_deg)[None, :]
    return np.sin(phi) * np.cos(lam), -np.sin(lam) * np.ones_like(phi)


@pytest.mark.parametrize("with_poles", [False, True])
def test_solid_body_flow_over_the_pole_pads_to_itself(with_poles: bool) -> None:
    """The fold with the sign flip continues a flow across the pole exactly as the flow itself does; a plain
    mirror (no flip) gives the negative of it."""
    grid = equiangular_grid(16, 9 if with_poles else 8, with_poles=with_poles)
    lat, lon = grid.latitude, grid.longitude
    u, v = _solid_body(lat, lon)
    x = torch.from_numpy(np.stack([u, v]))[None]
    halo = Halo.for_geometry("global_poles" if with_poles else "global")
    rows = 3
    step = lat[1] - lat[0]
    extended = np.concatenate(
        [lat[0] - step * np.arange(rows, 0, -1), lat, lat[-1] + step * np.arange(1, rows + 1)]
    )
    u_ext, v_ext = _solid_body(extended, lon)
    padded = halo.pad(x, rows, rows, 0, 0, sign=torch.tensor([-1.0, -1.0], dtype=torch.float64))
    np.testing.assert_allclose(padded[0, 0].numpy(), u_ext, atol=1e-12)
    np.testing.assert_allclose(padded[0, 1].numpy(), v_ext, atol=1e-12)
    plain = halo.pad(x, rows, rows, 0, 0)
    np.testing.assert_allclose(plain[0, 0, :rows].numpy(), -u_ext[:rows], atol=1e-12)


def test_regional_padding_invents_no_periodic_values() -> None:
    """On a regional grid a smooth ramp is continued by its edge values, never by the far edge."""
    h, w = 6, 10
    ramp = (
        torch.arange(w, dtype=torch.float64)[None, None, None, :] + 10 * torch.arange(h)[None, None, :, None]
    )
    out = Halo.for_geometry("regional").pad(ramp, 2, 2, 3, 3)
    torch.testing.assert_close(out, F.pad(ramp, (3, 3, 2, 2), mode="replicate"))
    west, east = out[0, 0, :, :3], out[0, 0, :, -3:]
    assert torch.all(west == out[0, 0, :, 3:4]) and torch.all(east == out[0, 0, :, -4:-3])
    assert not torch.any(west == ramp[0, 0, 0, -1])  # the far (east) edge never appears on the west side


def test_periodic_and_band_padding() -> None:
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(
        Halo.for_geometry("periodic").pad(x, 2, 2, 1, 1), F.pad(x, (1, 1, 2, 2), mode="circular")
    )
    band = Halo.for_geometry("band").pad(x, 1, 1, 2, 2)
    torch.testing.assert_close(
        band, F.pad(F.pad(x, (0, 0, 1, 1), mode="replicate"), (2, 2, 0, 0), mode="circular")
    )
    assert torch.equal(pad_longitude(x, 1, 1, "replicate"), F.pad(x, (1, 1, 0, 0), mode="replicate"))
    assert torch.equal(pad_latitude(x, 2, 2, "circular"), F.pad(x, (0, 0, 2, 2), mode="circular"))


@pytest.mark.parametrize(("geometry", "coupled"), [("regional", False), ("global", True), ("periodic", True)])
def test_convolutions_couple_the_east_and_west_edges_only_where_the_grid_wraps(
    geometry: str, coupled: bool
) -> None:
    """A perturbation along the east edge reaches the west edge through the padding of a wrapping grid and
    never on a regional one. (Convolutions only: GroupNorm and attention couple every point by design.)"""
    torch.manual_seed(0)
    halo = Halo.for_geometry(geometry)
    convs = torch.nn.Sequential(*[SphereConv2d(2, 2, 3, halo=halo) for _ in range(3)]).double()
    x = torch.randn(1, 2, 8, 32, dtype=torch.float64)
    bumped = x.clone()
    bumped[..., -1] += 1.0
    with torch.no_grad():
        change = (convs(bumped) - convs(x))[..., :2].abs().max().item()
    assert (change > 1e-9) == coupled, change


def test_stem_flips_only_vector_channels_at_the_pole() -> None:
    model = TritonCast(4, n_input=2, config=size_config("tiny", **MICRO), vector_channels=[1, 2])
    assert model.stem.vector_sign.tolist() == [1, -1, -1, 1, 1, -1, -1, 1]
    regional = TritonCast(4, config=size_config("tiny", geometry="regional", **MICRO), vector_channels=[1, 2])
    assert regional.stem.vector_sign is None


# ----------------------------------------------------------------------------------------------- weights
def _cell_area_fraction(bounds_deg: np.ndarray) -> np.ndarray:
    """Fraction of the domain's area per row, by numerical quadrature of cos φ (independent of sin)."""
    area = np.array(
        [quad(np.cos, np.deg2rad(a), np.deg2rad(b))[0] for a, b in itertools.pairwise(bounds_deg)]
    )
    return area / area.sum()


def test_regional_weights_are_the_cell_areas_of_the_box() -> None:
    lat = np.arange(50.125, 58, 0.25)  # 0.25° box at 50–58°N, cell centres
    w = latitude_weights(lat, grid_geometry(lat, np.arange(0.125, 8, 0.25)))
    expected = _cell_area_fraction(np.arange(50.0, 58.01, 0.25))
    np.testing.assert_allclose(w / w.sum(), expected, rtol=1e-10)
    assert w[0] / w.sum() < 1.1 / lat.size  # WB2's global formula gave the southern row 88%
    assert area_weighting(lat) == "cell_area"


def test_ocean_demo_box_weights_no_longer_pile_onto_the_edges() -> None:
    lat = 24.125 + 0.25 * np.arange(64)
    regional = latitude_weights(lat, "regional")
    share = regional / regional.sum()
    assert 0.9 / 64 < share[0] < 1.1 / 64 and 0.9 / 64 < share[-1] < 1.1 / 64
    np.testing.assert_array_equal(latitude_weights(lat, "periodic"), np.ones(64))


def test_global_weights_keep_wb2_parity() -> None:
    for grid in (equiangular_grid(64, 32, with_poles=False), equiangular_grid(240, 121, with_poles=True)):
        lat = grid.latitude
        bounds = np.concatenate([[-90.0], (lat[:-1] + lat[1:]) / 2, [90.0]])
        expected = _cell_area_fraction(bounds) * lat.size
        np.testing.assert_allclose(
            latitude_weights(lat, grid_geometry(lat, grid.longitude)), expected, rtol=1e-9
        )
        np.testing.assert_array_equal(latitude_weights(lat), latitude_weights(lat, "global"))


# ----------------------------------------------------------------------------------------------- manifest
def _manifest(
    variables: list[tuple[str, int | None]], lat: np.ndarray, lon: np.ndarray, geometry: str = ""
) -> ChannelManifest:
    state = tuple(Channel(f"{v}_{lvl}" if lvl else v, v, lvl, "state", "m s**-1") for v, lvl in variables)
    return ChannelManifest(state=state, latitude=tuple(lat), longitude=tuple(lon), geometry=geometry)


def test_vector_channels_are_paired_by_level() -> None:
    grid = equiangular_grid(16, 8, with_poles=False)
    winds = [
        ("u_component_of_wind", 850),
        ("temperature", 850),
        ("v_component_of_wind", 850),
        ("ugos", None),
        ("vgos", None),
    ]
    assert _manifest(winds, grid.latitude, grid.longitude).vector_channels() == [0, 2, 3, 4]
    unpaired = [("u_component_of_wind", 850), ("v_component_of_wind", 500)]
    with pytest.raises(DataError, match=r"'u_component_of_wind_850'.*'v_component_of_wind_850'"):
        _manifest(unpaired, grid.latitude, grid.longitude).vector_channels()
    box_lat, box_lon = np.arange(50, 52, 0.25), np.arange(0, 4, 0.25)
    assert _manifest(unpaired, box_lat, box_lon).vector_channels() == [0, 1]  # no fold: nothing to pair


def test_manifests_of_different_geometries_differ() -> None:
    grid = equiangular_grid(16, 8, with_poles=False)
    glob = _manifest([("temperature", 850)], grid.latitude, grid.longitude, "global")
    assert glob.differences(_manifest([("temperature", 850)], grid.latitude, grid.longitude, "regional")) == [
        "grid geometry differs ('global' vs 'regional'): a model trained on one geometry pads and weights its "
        "fields for it"
    ]
    legacy = _manifest(
        [("temperature", 850)], grid.latitude, grid.longitude
    )  # written before geometry existed
    assert legacy.grid_geometry.kind == "global" and glob.differences(legacy) == []


def test_a_checkpoint_of_another_geometry_is_refused() -> None:
    """A global checkpoint on a regional store (and the reverse) is named as a geometry mismatch."""
    stats = NormStats(state_mean=(0.0,), state_std=(1.0,), tendency_std=(1.0,))
    grid = equiangular_grid(16, 8, with_poles=False)
    glob = _manifest([("temperature", 850)], grid.latitude, grid.longitude, "global")
    box = _manifest([("temperature", 850)], np.arange(50, 52, 0.25), np.arange(0, 4, 0.25), "regional")
    for saved, data in ((glob, box), (box, glob)):
        problems = compatibility_problems(saved, stats, data, stats)
        assert any(f"grid geometry differs ({saved.geometry!r} vs {data.geometry!r})" in p for p in problems)

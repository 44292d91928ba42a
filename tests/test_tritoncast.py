"""TritonCast model: sphere padding, shapes on odd grids, residual/direct output, ablations, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earthcast.grids import equiangular_grid
from earthcast.models.backbone import count_parameters
from earthcast.models.geometry import Halo, SphereConv2d, pad_latitude, pad_longitude
from earthcast.models.tritoncast import SIZES, TritonCast, parameter_count, size_config

REF = {"backend": "reference"}
MICRO = dict(widths=(8, 16, 16), core=dict(width=32, pattern="AMF", heads=2, headdim=16, d_state=16, **REF))


def _inputs(b: int, n: int, c: int, s: int, f: int, h: int, w: int, dtype=torch.float32):
    return (
        torch.randn(b, n, c, h, w, dtype=dtype),
        torch.randn(b, s, h, w, dtype=dtype),
        torch.randn(b, n + 1, f, h, w, dtype=dtype),
    )


def test_longitude_padding_equals_circular_padding():
    x = torch.randn(2, 3, 5, 8)
    assert torch.equal(pad_longitude(x, 2, 3), F.pad(x, (2, 3, 0, 0), mode="circular"))


@pytest.mark.parametrize("with_poles", [False, True])
def test_pole_fold_matches_geographic_mirror(with_poles: bool):
    """Each padded row equals the grid point at the geographic position beyond the pole: latitude
    mirrored across the pole (−180° − φ in the south, 180° − φ in the north), longitude + 180°."""
    grid = equiangular_grid(8, 5 if with_poles else 6, with_poles=with_poles)
    lat, lon = grid.latitude, grid.longitude
    h, w = lat.size, lon.size
    x = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
    pad = 2
    out = pad_latitude(x, pad, pad, "whole" if with_poles else "half")[0, 0].numpy()
    step = lat[1] - lat[0]
    expected = np.empty((h + 2 * pad, w))
    for i in range(h + 2 * pad):
        phi = lat[0] + (i - pad) * step
        if phi < -90:
            phi = -180.0 - phi
            shift = 180.0
        elif phi > 90:
            phi = 180.0 - phi
            shift = 180.0
        else:
            shift = 0.0
        row = int(np.argmin(np.abs(lat - phi)))
        assert abs(lat[row] - phi) < 1e-9
        for j in range(w):
            col = int(np.argmin(np.abs(lon - (lon[j] + shift) % 360.0)))
            expected[i, j] = x[0, 0, row, col]
    np.testing.assert_array_equal(out, expected)


def test_sphere_conv_commutes_with_longitude_rotation():
    """Periodic padding makes the conv equivariant to any roll in longitude (zero padding is not)."""
    conv = SphereConv2d(3, 4, 3, halo=Halo.for_geometry("global")).double()
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    for shift in (1, 3, 5):
        torch.testing.assert_close(conv(torch.roll(x, shift, -1)), torch.roll(conv(x), shift, -1))
    halo = Halo.for_geometry("global").pad(x, 1, 1, 1, 1)
    assert halo.shape == (2, 3, 8, 12)


@pytest.mark.parametrize("shape", [(32, 64), (121, 240)])
def test_output_shape_on_even_and_odd_grids(shape: tuple[int, int]):
    h, w = shape
    geometry = "global_poles" if h % 2 else "global"
    model = TritonCast(3, 2, 2, n_input=2, config=size_config("tiny", core=REF, geometry=geometry)).eval()
    state, static, forcings = _inputs(1, 2, 3, 2, 2, h, w)
    with torch.no_grad():
        out = model(state, static, forcings)
    assert out.shape == (1, 3, h, w)
    assert torch.isfinite(out).all()
    # an untrained residual model is persistence (zero-initialised readout)
    torch.testing.assert_close(out, state[:, -1])


def test_residual_is_persistence_plus_scaled_direct_output():
    scale = [0.1, 0.5, 2.0]
    residual = TritonCast(
        3, 1, 1, config=size_config("tiny", output="residual", **MICRO), tendency_scale=scale
    )
    direct = TritonCast(3, 1, 1, config=size_config("tiny", output="direct", **MICRO), tendency_scale=scale)
    torch.nn.init.normal_(residual.readout.weight, std=0.1)
    direct.load_state_dict(residual.state_dict())
    residual, direct = residual.double().eval(), direct.double().eval()
    state, static, forcings = _inputs(2, 1, 3, 1, 1, 16, 32, torch.float64)
    with torch.no_grad():
        expected = state[:, -1] + torch.tensor(scale, dtype=torch.float64)[:, None, None] * direct(
            state, static, forcings
        )
        torch.testing.assert_close(residual(state, static, forcings), expected)


@pytest.mark.parametrize("ablation", ["none", "no_core", "no_skip", "flat"])
def test_ablations_run_and_differ_structurally(ablation: str):
    model = TritonCast(2, config=size_config("tiny", output="direct", ablation=ablation, **MICRO))
    names = [n for n, _ in model.named_parameters()]
    has_core = any(".core." in n for n in names)
    has_gate = any("fusions" in n and "gate" in n for n in names)
    assert has_core == (ablation != "no_core")
    assert has_gate == (ablation in ("none", "no_core"))
    assert len(model.vcycle.downs) == (1 if ablation == "flat" else 2)
    state = torch.randn(2, 1, 2, 17, 32)
    out = model(state)
    assert out.shape == (2, 2, 17, 32)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_named_sizes_parameter_counts():
    tiny = TritonCast(4, config=size_config("tiny"))
    assert count_parameters(tiny) == parameter_count("tiny", n_state=4)
    assert count_parameters(tiny) < 1_000_000
    assert 2_000_000 < parameter_count("small", n_state=4) < 9_000_000
    assert 22_000_000 < parameter_count("paper-1deg", n_state=69) < 35_000_000
    wb2 = parameter_count("paper-wb2", n_state=69)
    assert 0.8e9 < wb2 < 1.2e9
    assert set(SIZES) == {"tiny", "small", "paper-1deg", "paper-wb2"}


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="unknown TritonCast size"):
        size_config("huge")
    with pytest.raises(ValueError, match="valid ones"):
        size_config("tiny", widht=3)
    with pytest.raises(ValueError, match="unknown geometry"):
        size_config("tiny", geometry="north")
    model = TritonCast(3, config=size_config("tiny", **MICRO))
    with pytest.raises(ValueError, match="built for 1 × 3"):
        model(torch.zeros(1, 1, 4, 8, 16))


def _smooth_periodic_fields(b: int, h: int, w: int) -> torch.Tensor:
    """(b, 1, 2, h, w) random fields with only low wavenumbers, periodic in longitude, unit variance."""
    spectrum = torch.fft.rfft2(torch.randn(b, 2, h, w))
    low = (torch.fft.fftfreq(h)[:, None].abs() < 0.2) & (torch.fft.rfftfreq(w)[None, :] < 0.15)
    x = torch.fft.irfft2(spectrum * low, s=(h, w))
    return (x / x.std())[:, None]


def test_residual_model_learns_periodic_advection_beyond_persistence():
    """Eastward advection by one column (wrapping across the date line) is learnable with periodic padding;
    starting from persistence (zero readout), training must cut the error well below persistence's."""
    model = TritonCast(2, config=size_config("tiny", **MICRO))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        x = _smooth_periodic_fields(4, 16, 32)
        loss = (model(x) - torch.roll(x[:, 0], 1, -1)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = _smooth_periodic_fields(8, 16, 32)
    target = torch.roll(x[:, 0], 1, -1)
    with torch.no_grad():
        model_error = (model(x) - target).square().mean()
    persistence_error = (x[:, 0] - target).square().mean()
    assert model_error < 0.3 * persistence_error

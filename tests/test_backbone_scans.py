"""Scan orders and the SSD mixers (Mamba2 2-D, TransMamba) against independent references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from earthcast.kernels import ssd_naive
from earthcast.models.backbone import (
    Mamba2Mixer2d,
    TransMambaMixer2d,
    hilbert_order,
    inverse_permutations,
    scan_permutations,
)
from earthcast.models.backbone.mamba2d import fold_directions

TINY = dict(d_state=16, headdim=16, expand=2, chunk_size=16, backend="reference")


def _grid_steps(order: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = order // width, order % width
    return rows.diff().abs(), cols.diff().abs()


# ----------------------------------------------------------------------------------------------- scan orders
@pytest.mark.parametrize("grid", [(1, 1), (1, 7), (5, 7), (8, 8), (6, 3)])
def test_cross_scan_covers_every_token_once(grid: tuple[int, int]) -> None:
    height, width = grid
    length = height * width
    perms = scan_permutations("cross", grid)
    assert perms.shape == (4, length)
    for perm in perms:  # each direction is a permutation: every token exactly once
        assert torch.equal(perm.sort().values, torch.arange(length))
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    raster = (rows * width + cols).reshape(-1)
    column_major = (rows * width + cols).t().reshape(-1)
    assert torch.equal(perms[0], raster)
    assert torch.equal(perms[1], column_major)
    assert torch.equal(perms[2], raster.flip(0))
    assert torch.equal(perms[3], column_major.flip(0))
    # Folding into the batch and scattering back with the inverse is the identity for every direction.
    tokens = torch.randn(2, length, 3)
    folded = fold_directions(tokens, perms).view(2, 4, length, 3)
    inverse = inverse_permutations(perms)
    for k in range(4):
        assert torch.equal(folded[:, k][:, inverse[k]], tokens)
        assert torch.equal(folded[:, k], tokens[:, perms[k]])


@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 7, 8, 12, 16])
@pytest.mark.parametrize("width", [1, 3, 4, 6, 9, 16, 17])
def test_hilbert_order_is_a_local_permutation(height: int, width: int) -> None:
    order = hilbert_order(height, width)
    assert torch.equal(order.sort().values, torch.arange(height * width))
    if height * width == 1:
        return
    dr, dc = _grid_steps(order, width)
    assert int(torch.maximum(dr, dc).max()) == 1  # every step goes to one of the 8 neighbours
    diagonal = int(((dr + dc) == 2).sum())
    if height % 2 == width % 2 or min(height, width) == 1:
        assert diagonal == 0  # pure 4-neighbour path
    else:
        assert diagonal <= 1


@pytest.mark.parametrize("n", [4, 8, 16])
def test_hilbert_power_of_two_visits_aligned_blocks_contiguously(n: int) -> None:
    """The defining Hilbert property: every aligned s x s block (s a power of two) is one contiguous run."""
    order = hilbert_order(n, n)
    rows, cols = order // n, order % n
    size = 2
    while size <= n:
        for start in range(0, n * n, size * size):
            r, c = rows[start : start + size * size], cols[start : start + size * size]
            assert int(r.min()) % size == 0 and int(r.max() - r.min()) == size - 1
            assert int(c.min()) % size == 0 and int(c.max() - c.min()) == size - 1
        size *= 2
    assert torch.equal(scan_permutations("hilbert", (n, n))[1], order.flip(0))


def test_unknown_scan_order_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown scan order 'zigzag'.*bidirectional"):
        Mamba2Mixer2d(32, scan="zigzag", **TINY)


# -------------------------------------------------------------------------------------------- Mamba2 mixer
def _point_symmetric_conv(mixer: Mamba2Mixer2d) -> None:
    with torch.no_grad():
        w = mixer.conv2d.weight
        w.copy_(0.5 * (w + w.flip(-1, -2)))


@pytest.mark.parametrize("scan", ["bidirectional", "cross"])
def test_bidirectional_scan_flip_symmetry(scan: str) -> None:
    """Reversing the raster sequence (a 180-degree rotation of the grid) commutes with the mixer."""
    grid = (5, 6)
    mixer = Mamba2Mixer2d(32, scan=scan, **TINY).double()
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    # The SSD core alone: flipping every per-token input flips the merged output.
    _, xs, B, C, dt = mixer.project(x, grid)
    core = mixer.scan_directions(xs, dt, B, C, grid)
    core_flipped = mixer.scan_directions(xs.flip(1), dt.flip(1), B.flip(1), C.flip(1), grid)
    torch.testing.assert_close(core_flipped, core.flip(1), rtol=1e-10, atol=1e-10)
    # The whole mixer, once the depthwise conv kernel is point-symmetric (as the rotation requires).
    _point_symmetric_conv(mixer)
    torch.testing.assert_close(mixer(x.flip(1), grid), mixer(x, grid).flip(1), rtol=1e-10, atol=1e-10)
    # A single causal direction is not symmetric: the test can fail.
    one_way = mixer.ssd(xs, dt, B, C)
    one_way_flipped = mixer.ssd(xs.flip(1), dt.flip(1), B.flip(1), C.flip(1))
    assert not torch.allclose(one_way_flipped, one_way.flip(1), atol=1e-6)


def test_cross_scan_transpose_symmetry() -> None:
    """On a square grid, transposing the field commutes with the 4-way cross-scan (row <-> column major)."""
    n = 5
    mixer = Mamba2Mixer2d(32, scan="cross", **TINY).double()
    with torch.no_grad():
        w = mixer.conv2d.weight
        w.copy_(0.5 * (w + w.transpose(-1, -2)))
    x = torch.randn(1, n * n, 32, dtype=torch.float64)
    transpose = lambda t: t.view(t.shape[0], n, n, -1).transpose(1, 2).reshape(t.shape)  # noqa: E731
    torch.testing.assert_close(
        mixer(transpose(x), (n, n)), transpose(mixer(x, (n, n))), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize(("scan", "merge"), [("bidirectional", "sum"), ("cross", "mean"), ("hilbert", "sum")])
def test_mixer_matches_naive_recurrence(scan: str, merge: str) -> None:
    """Mixer output = out_proj(gated RMSNorm(sum over directions of the naive SSD recurrence + D x))."""
    grid = (4, 5)
    mixer = Mamba2Mixer2d(32, scan=scan, merge=merge, ngroups=2, **TINY).double()
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    z, xs, B, C, dt = mixer.project(x, grid)
    A = -torch.exp(mixer.A_log)
    outputs = []
    for perm in scan_permutations(scan, grid):
        inv = torch.argsort(perm)
        y = ssd_naive(xs[:, perm], dt[:, perm], A, B[:, perm], C[:, perm], dt_bias=mixer.dt_bias)
        outputs.append(y[:, inv])
    y = torch.stack(outputs).sum(0) / (len(outputs) if merge == "mean" else 1)
    y = (y + mixer.D[:, None] * xs).reshape(2, 20, -1)
    gated = (y * F.silu(z.reshape(2, 20, -1))).view(2, 20, 2, -1)  # norm groups = ngroups
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + mixer.norm_eps)
    expected = normed.reshape(2, 20, -1) * mixer.norm_weight @ mixer.out_proj.weight.t()
    torch.testing.assert_close(mixer(x, grid), expected, rtol=1e-9, atol=1e-9)


def test_mamba2_init_ranges_and_no_decay_flags() -> None:
    mixer = Mamba2Mixer2d(512, d_state=16, headdim=8, expand=2, backend="reference")  # 128 heads
    A = mixer.A()
    assert A.max() <= -1.0 and A.min() >= -16.0
    dt = F.softplus(mixer.dt_bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log-uniform: log dt spreads over the interval with the midpoint as mean (128 samples, sd ~0.12)
    log_dt = dt.log()
    assert abs(log_dt.mean().item() - 0.5 * (math.log(1e-3) + math.log(0.1))) < 0.5
    assert log_dt.max() - log_dt.min() > 0.7 * (math.log(0.1) - math.log(1e-3))
    assert torch.equal(mixer.D.detach(), torch.ones(mixer.nheads))
    for name in ("A_log", "D", "dt_bias"):
        assert getattr(getattr(mixer, name), "_no_weight_decay", False), name
    assert not hasattr(mixer.in_proj.weight, "_no_weight_decay")


# ---------------------------------------------------------------------------------------------- TransMamba
def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q, k (b, L, h, n), v (b, L, h, p) -> (b, L, h, p), softmax over keys."""
    weights = torch.softmax(torch.einsum("blhn,bmhn->bhlm", q, k) * scale, dim=-1)
    return torch.einsum("bhlm,bmhp->blhp", weights, v)


def test_transmamba_modes_match_references() -> None:
    grid = (3, 4)
    mixer = TransMambaMixer2d(32, mode="split", split=0.4, ngroups=2, **TINY).double()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    _, xs, B, C, dt = mixer.project(x, grid)
    A, r = -torch.exp(mixer.A_log), mixer.nheads // mixer.ngroups
    Bh, Ch = B.repeat_interleave(r, dim=2), C.repeat_interleave(r, dim=2)
    scale = 1 / math.sqrt(mixer.d_state)

    torch.testing.assert_close(
        mixer.attend(xs, B, C), _naive_attention(Ch, Bh, xs, scale), rtol=1e-10, atol=1e-10
    )

    # split: prefix = first round(0.4 * 12) = 5 raster tokens, attention among themselves; suffix = the
    # full-sequence forward recurrence (the prefix state seeds it losslessly) + a reverse scan of the suffix.
    P = 5
    y = mixer.split_scan(xs, dt, B, C, grid)
    torch.testing.assert_close(y[:, :P], _naive_attention(Ch[:, :P], Bh[:, :P], xs[:, :P], scale))
    forward_full = ssd_naive(xs, dt, A, B, C, dt_bias=mixer.dt_bias)
    s = slice(P, None)
    reverse = ssd_naive(
        xs[:, s].flip(1), dt[:, s].flip(1), A, B[:, s].flip(1), C[:, s].flip(1), dt_bias=mixer.dt_bias
    )
    torch.testing.assert_close(y[:, s], forward_full[:, s] + reverse.flip(1), rtol=1e-9, atol=1e-9)

    # The layer-level switch reuses the same weights: every mode runs, and the outputs differ.
    outs = {}
    for mode in ("attn", "ssd", "split"):
        mixer.mode = mode
        outs[mode] = mixer(x, grid)
        assert outs[mode].shape == x.shape and torch.isfinite(outs[mode]).all()
    assert not torch.allclose(outs["attn"], outs["ssd"]) and not torch.allclose(outs["ssd"], outs["split"])
    mixer.mode = "hybrid"
    with pytest.raises(ValueError, match=r"unknown TransMamba mode 'hybrid'.*attn, ssd, split"):
        mixer(x, grid)

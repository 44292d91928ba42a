"""Sphere-aware padding and convolutions for fields on a regular latitude/longitude grid.

Fields are (B, C, H, W) with latitude ascending along H (south pole first) and longitude along W.

- **Longitude** is periodic: every convolution pads W circularly (column -1 is the last column).
- **Latitude** is padded by folding across the pole: walking k rows past a pole lands on the meridian
  180° away, so the padded row is an interior row rolled by W/2 columns. Which interior row depends on
  where the pole sits:

  - ``"half"`` (grids without pole rows, e.g. 64x32 where the first latitude is -87.1875°): the pole lies
    half a cell outside the first row, so padded row -k (k = 1, 2, …) is row k-1, rolled by W/2;
  - ``"whole"`` (grids with pole rows, e.g. 240x121 where the first latitude is -90°): the pole row is its
    own mirror, so padded row -k is row k, rolled by W/2.

  The same rule applies at the north end. Vector components (u, v) change sign across a pole in a fixed
  frame; the fold copies values without that sign flip. Only the stem sees raw winds, and the learned
  filters of every later layer act on mixtures of channels, so this is a documented approximation.
- Coarse levels of the V-cycle are built by 2×2 patch merges. A merged row covers two fine rows, so a
  grid without pole rows stays pole-symmetric ("half") at every level; for a grid with pole rows the
  coarse levels use "half" too, which is then an approximation of the true geometry (off by half a
  coarse cell). Before a merge, H and W are padded to even sizes with extra folded rows (north end) and
  wrapped columns, and the decoder crops back, so any H×W works (121×240 included).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PoleFold = Literal["half", "whole"]
POLE_FOLDS: tuple[str, ...] = ("half", "whole")


def pad_longitude(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Circular padding along W: (B, C, H, W) -> (B, C, H, left + W + right)."""
    if left == 0 and right == 0:
        return x
    width = x.shape[-1]
    if left > width or right > width:
        raise ValueError(f"cannot wrap {max(left, right)} columns around a field only {width} wide")
    return torch.cat([x[..., width - left :], x, x[..., :right]], dim=-1)


def _fold_rows(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows ``rows`` of x (B, C, H, W), rolled by half the longitudes (the meridian 180° away)."""
    picked = x[..., rows, :]
    return torch.roll(picked, shifts=x.shape[-1] // 2, dims=-1)


def pad_latitude(x: torch.Tensor, south: int, north: int, fold: PoleFold = "half") -> torch.Tensor:
    """Pole-fold padding along H: (B, C, H, W) -> (B, C, south + H + north, W).

    ``south`` rows are added before row 0 and ``north`` rows after row H-1, each the mirror across the
    nearest pole of an interior row, rolled by W // 2 columns (see the module docstring for ``fold``).
    """
    if fold not in POLE_FOLDS:
        raise ValueError(f"unknown pole fold {fold!r}; use 'half' (no pole rows) or 'whole' (pole rows)")
    if south == 0 and north == 0:
        return x
    height = x.shape[-2]
    offset = 0 if fold == "half" else 1
    if max(south, north) + offset > height:
        raise ValueError(
            f"cannot fold {max(south, north)} rows across the pole of a field only {height} rows high; "
            "use fewer levels or a finer grid"
        )
    parts = []
    if south:
        # padded row -k (k = south … 1) mirrors row k - 1 + offset
        parts.append(_fold_rows(x, [k - 1 + offset for k in range(south, 0, -1)]))
    parts.append(x)
    if north:
        # padded row H - 1 + k (k = 1 … north) mirrors row H - k - offset
        parts.append(_fold_rows(x, [height - k - offset for k in range(1, north + 1)]))
    return torch.cat(parts, dim=-2)


def pad_sphere(x: torch.Tensor, rows: int, cols: int, fold: PoleFold = "half") -> torch.Tensor:
    """Symmetric halo: ``rows`` folded rows at each pole and ``cols`` wrapped columns at each side.

    The fold comes first, so its 180° roll uses the true number of longitudes; the corners are then the
    wrapped columns of the folded rows."""
    return pad_longitude(pad_latitude(x, rows, rows, fold), cols, cols)


def pad_to_multiple(x: torch.Tensor, factor: int, fold: PoleFold = "half") -> torch.Tensor:
    """Append folded rows (north end) and wrapped columns until H and W are multiples of ``factor``."""
    x = pad_latitude(x, 0, -x.shape[-2] % factor, fold)
    return pad_longitude(x, 0, -x.shape[-1] % factor)


class SphereConv2d(nn.Module):
    """A stride-1 k×k convolution that pads on the sphere (periodic longitude, pole fold) instead of zeros.

    (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        groups: int = 1,
        bias: bool = True,
        fold: PoleFold = "half",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same-size output, got {kernel_size}")
        if fold not in POLE_FOLDS:
            raise ValueError(f"unknown pole fold {fold!r}; use 'half' (no pole rows) or 'whole' (pole rows)")
        self.halo, self.fold = kernel_size // 2, fold
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad_sphere(x, self.halo, self.halo, self.fold))


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ max_groups that divides ``channels``."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class SphereResBlock(nn.Module):
    """Residual conv block on the sphere: x + GN(conv(GELU(GN(conv(x))))) (1×1 projection if widths differ).

    (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, fold: PoleFold = "half") -> None:
        super().__init__()
        self.body = nn.Sequential(
            SphereConv2d(in_channels, out_channels, 3, fold=fold),
            group_norm(out_channels),
            nn.GELU(),
            SphereConv2d(out_channels, out_channels, 3, fold=fold),
            group_norm(out_channels),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.skip(x) + self.body(x))


class Downsample(nn.Module):
    """f×f patch merge (stride-f conv): (B, C_in, H, W) -> (B, C_out, ceil(H/f), ceil(W/f)).

    H and W are first padded on the sphere to multiples of f (:func:`pad_to_multiple`)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, factor: int = 2, fold: PoleFold = "half"
    ) -> None:
        super().__init__()
        self.fold, self.factor = fold, factor
        self.merge = nn.Conv2d(in_channels, out_channels, kernel_size=factor, stride=factor)
        self.norm = group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.merge(pad_to_multiple(x, self.factor, self.fold)))


class Upsample(nn.Module):
    """f×f transposed conv, cropped to the finer level's shape: (B, C_in, h, w) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: int = 2) -> None:
        super().__init__()
        self.expand = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=factor, stride=factor)
        self.norm = group_norm(out_channels)

    def forward(self, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        y = self.expand(x)[..., : shape[0], : shape[1]]
        return F.gelu(self.norm(y))

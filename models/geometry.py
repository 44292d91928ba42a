"""Padding and convolutions that follow the grid's geometry, for fields on a regular latitude/longitude grid.

Fields are (B, C, H, W) with latitude ascending along H (south first) and longitude along W. How a field is
continued beyond its edges is a :class:`Halo`, chosen from the grid's
:class:`~earthcast.grids.GridGeometry` by :meth:`Halo.for_geometry`:

- **global** grids wrap longitude circularly and fold latitude across the poles: walking k rows past a pole
  lands on the meridian 180° away, so the padded row is an interior row rolled by W/2 columns.

  - ``"half"`` (no pole rows, e.g. 64x32 where the first latitude is -87.1875°): the pole lies half a cell
    outside the first row, so padded row -k (k = 1, 2, …) is row k-1, rolled by W/2;
  - ``"whole"`` (pole rows, e.g. 240x121 where the first latitude is -90°): the pole row is its own mirror,
    so padded row -k is row k, rolled by W/2.

  Vector components (u, v) in the fixed east/north frame change sign across a pole: the local east and
  north of the far meridian point opposite to the continued frame. The fold therefore multiplies the
  folded rows of such channels by -1 (``sign``), so a solid-body flow over the pole pads to itself. Only
  the stem sees raw fields; later layers act on learned mixtures and fold without a sign.
- **band** grids (360° of longitude, no poles) wrap longitude and replicate the edge rows;
- **regional** grids replicate the edge rows and columns: no wrap and no fold, nothing periodic is
  invented (limited-area models take their boundary as forcing instead);
- **periodic** grids (an idealised β-plane) wrap both directions.

Coarse levels of the V-cycle are built by 2×2 patch merges. A merged row covers two fine rows, so a global
grid without pole rows stays pole-symmetric ("half") at every level; for a grid with pole rows the coarse
levels use "half" too (:meth:`Halo.coarse`), an approximation of the true geometry (off by half a coarse
cell). Before a merge, H and W are padded to even sizes at the north and east ends, and the decoder crops
back, so any H×W works (121×240 included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.errors import ConfigError
from earthcast.grids import GridGeometry

LATITUDE_MODES: tuple[str, ...] = ("half", "whole", "replicate", "circular")
LONGITUDE_MODES: tuple[str, ...] = ("circular", "replicate")


@dataclass(frozen=True)
class Halo:
    """How fields are continued beyond the grid edges.

    Attributes:
        lat: ``"half"`` / ``"whole"`` (pole fold without / with pole rows), ``"replicate"`` or
            ``"circular"``.
        lon: ``"circular"`` or ``"replicate"``.
    """

    lat: str = "half"
    lon: str = "circular"

    def __post_init__(self) -> None:
        if self.lat not in LATITUDE_MODES or self.lon not in LONGITUDE_MODES:
            raise ConfigError(
                f"unknown halo (lat={self.lat!r}, lon={self.lon!r}); latitude modes are {LATITUDE_MODES}, "
                f"longitude modes {LONGITUDE_MODES}"
            )

    @classmethod
    def for_geometry(cls, geometry: GridGeometry | str) -> Halo:
        """The halo of a grid geometry (or its kind name)."""
        kind = geometry.kind if isinstance(geometry, GridGeometry) else GridGeometry(str(geometry)).kind
        return {
            "global_poles": cls("whole", "circular"),
            "global": cls("half", "circular"),
            "band": cls("replicate", "circular"),
            "regional": cls("replicate", "replicate"),
            "periodic": cls("circular", "circular"),
        }[kind]

    @property
    def folds(self) -> bool:
        """Whether latitude folds across a pole (and vector components change sign there)."""
        return self.lat in ("half", "whole")

    def coarse(self) -> Halo:
        """The halo of a 2×-coarsened level: pole rows do not survive a patch merge ("whole" -> "half")."""
        return Halo("half", self.lon) if self.lat == "whole" else self

    def max_rows(self, height: int) -> int:
        """The most rows that can be padded at each end of a field ``height`` rows high."""
        return height - 1 if self.lat == "whole" else height

    def pad(
        self,
        x: torch.Tensor,
        south: int,
        north: int,
        west: int,
        east: int,
        sign: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, south + H + north, west + W + east).

        Latitude first, so a fold's 180° roll uses the true number of longitudes; the corners are then the
        continued columns of the padded rows. ``sign`` (C,) multiplies folded rows (see the module docstring).
        """
        return pad_longitude(pad_latitude(x, south, north, self.lat, sign), west, east, self.lon)


def pad_longitude(x: torch.Tensor, left: int, right: int, mode: str = "circular") -> torch.Tensor:
    """Padding along W, circular or replicated: (B, C, H, W) -> (B, C, H, left + W + right)."""
    if left == 0 and right == 0:
        return x
    width = x.shape[-1]
    if mode == "replicate":
        return torch.cat(
            [x[..., :1].expand(*x.shape[:-1], left), x, x[..., -1:].expand(*x.shape[:-1], right)], -1
        )
    if left > width or right > width:
        raise ConfigError(f"cannot wrap {max(left, right)} columns around a field only {width} wide")
    return torch.cat([x[..., width - left :], x, x[..., :right]], dim=-1)


def _fold_rows(x: torch.Tensor, rows: list[int], sign: torch.Tensor | None) -> torch.Tensor:
    """Rows ``rows`` of x (B, C, H, W), rolled by half the longitudes (the meridian 180° away), times sign."""
    picked = torch.roll(x[..., rows, :], shifts=x.shape[-1] // 2, dims=-1)
    return picked if sign is None else picked * sign.to(picked.dtype)[:, None, None]


def pad_latitude(
    x: torch.Tensor, south: int, north: int, mode: str = "half", sign: torch.Tensor | None = None
) -> torch.Tensor:
    """Padding along H: (B, C, H, W) -> (B, C, south + H + north, W).

    ``mode`` ``"half"``/``"whole"``: each padded row is the mirror across the nearest pole of an interior row,
    rolled by W // 2 columns and multiplied by ``sign`` (C,) (-1 for vector components, see the module
    docstring); ``"replicate"``: copies of the edge row; ``"circular"``: rows from the other end.
    """
    if mode not in LATITUDE_MODES:
        raise ConfigError(f"unknown latitude padding {mode!r}; use one of {LATITUDE_MODES}")
    if south == 0 and north == 0:
        return x
    height = x.shape[-2]
    if mode == "replicate":
        shape = x.shape[:-2]
        return torch.cat(
            [x[..., :1, :].expand(*shape, south, -1), x, x[..., -1:, :].expand(*shape, north, -1)], dim=-2
        )
    if mode == "circular":
        if max(south, north) > height:
            raise ConfigError(f"cannot wrap {max(south, north)} rows around a field only {height} rows high")
        return torch.cat([x[..., height - south :, :], x, x[..., :north, :]], dim=-2)
    offset = 0 if mode == "half" else 1
    if max(south, north) + offset > height:
        raise ConfigError(
            f"cannot fold {max(south, north)} rows across the pole of a field only {height} rows high; "
            "use fewer levels or a finer grid"
        )
    parts = []
    if south:
        # padded row -k (k = south … 1) mirrors row k - 1 + offset
        parts.append(_fold_rows(x, [k - 1 + offset for k in range(south, 0, -1)], sign))
    parts.append(x)
    if north:
        # padded row H - 1 + k (k = 1 … north) mirrors row H - k - offset
        parts.append(_fold_rows(x, [height - k - offset for k in range(1, north + 1)], sign))
    return torch.cat(parts, dim=-2)


def pad_to_multiple(x: torch.Tensor, factor: int, halo: Halo) -> torch.Tensor:
    """Pad the north end and the east side until H and W are multiples of ``factor``."""
    return halo.pad(x, 0, -x.shape[-2] % factor, 0, -x.shape[-1] % factor)


class SphereConv2d(nn.Module):
    """A stride-1 k×k convolution that pads by the grid's :class:`Halo` instead of zeros.

    (B, C_in, H, W) -> (B, C_out, H, W).

    Args:
        vector_sign: (C_in,) +1/-1 per input channel: -1 for vector components, which change sign across
            a pole fold (used by the stem, which sees raw fields). Stored as a non-persistent buffer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        groups: int = 1,
        bias: bool = True,
        halo: Halo | None = None,
        vector_sign: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd for same-size output, got {kernel_size}")
        self.width, self.halo = kernel_size // 2, halo or Halo()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, groups=groups, bias=bias)
        sign = None
        if vector_sign is not None:
            sign = torch.as_tensor(vector_sign, dtype=torch.float32)
            if sign.shape != (in_channels,):
                raise ConfigError(f"vector_sign needs one value per input channel ({in_channels})")
        self.register_buffer("vector_sign", sign, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.width
        return self.conv(self.halo.pad(x, k, k, k, k, self.vector_sign))


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ max_groups that divides ``channels``."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class SphereResBlock(nn.Module):
    """Residual conv block padded by the grid's halo: x + GN(conv(GELU(GN(conv(x))))) (1×1 projection if widths differ).

    (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, halo: Halo | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            SphereConv2d(in_channels, out_channels, 3, halo=halo),
            group_norm(out_channels),
            nn.GELU(),
            SphereConv2d(out_channels, out_channels, 3, halo=halo),
            group_norm(out_channels),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.skip(x) + self.body(x))


class Downsample(nn.Module):
    """f×f patch merge (stride-f conv): (B, C_in, H, W) -> (B, C_out, ceil(H/f), ceil(W/f)).

    H and W are first padded by the grid's halo to multiples of f (:func:`pad_to_multiple`)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, factor: int = 2, halo: Halo | None = None
    ) -> None:
        super().__init__()
        self.halo, self.factor = halo or Halo(), factor
        self.merge = nn.Conv2d(in_channels, out_channels, kernel_size=factor, stride=factor)
        self.norm = group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.merge(pad_to_multiple(x, self.factor, self.halo)))


UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "transposed")


def prolong(x: torch.Tensor, factor: int, halo: Halo) -> torch.Tensor:
    """Bilinear f× interpolation of (B, C, h, w) to (B, C, f·h, f·w), the field continued by ``halo`` one cell
    beyond each edge first, so longitude wraps and rows fold across the poles (cell centres stay centres:
    ``align_corners=False``)."""
    wide = F.interpolate(halo.pad(x, 1, 1, 1, 1), scale_factor=factor, mode="bilinear", align_corners=False)
    return wide[..., factor:-factor, factor:-factor]


class Upsample(nn.Module):
    """f× upsampling to the finer level's shape: (B, C_in, h, w) -> (B, C_out, H, W).

    - ``"bilinear"`` (default): bilinear interpolation of the field continued by the coarse level's halo
      (one coarse cell each side, so longitude wraps and rows fold across the poles), then a 1×1 conv. A
      smooth prolongation puts no energy at the coarse grid's Nyquist wavenumber.
    - ``"transposed"``: an f×f transposed conv with stride f, which stamps one learned f×f pattern per
      coarse cell: a checkerboard at the coarse grid's Nyquist (zonal wavenumber 16 on 64 longitudes for the
      second level), which a free run amplifies (docs/results.md, "Towards a stable year-long run").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        factor: int = 2,
        halo: Halo | None = None,
        mode: str = "bilinear",
    ) -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ConfigError(f"unknown upsample {mode!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
        self.mode, self.factor, self.halo = mode, factor, halo or Halo()
        if mode == "transposed":
            self.expand = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=factor, stride=factor)
        else:
            self.expand = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = group_norm(out_channels)

    def forward(self, x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        if self.mode == "transposed":
            y = self.expand(x)
        else:
            f = self.factor
            wide = F.interpolate(
                self.halo.pad(x, 1, 1, 1, 1), scale_factor=f, mode="bilinear", align_corners=False
            )
            y = self.expand(wide[..., f:-f, f:-f])
        return F.gelu(self.norm(y[..., : shape[0], : shape[1]]))

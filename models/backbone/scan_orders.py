"""Serialisation orders of an (H, W) token grid for the non-causal 2-D scans.

A scan order is a permutation ``perm`` of the ``L = H * W`` raster-ordered tokens: the scan visits token
``perm[0]``, then ``perm[1]``, ... Tokens are always stored in row-major (raster) order, index ``i * W + j`` for
row ``i`` and column ``j``. A mixer gathers ``x[:, perm]``, scans, and scatters back with the inverse permutation.

Orders (``scan`` names accepted by :func:`scan_permutations`):

- ``"bidirectional"``: raster order and its reverse (2 directions).
- ``"cross"``: VMamba-style cross-scan: row-major, column-major, and both reversed (4 directions).
- ``"hilbert"``: a generalised Hilbert curve over the rectangle, and its reverse (2 directions). Works for any
  H, W (not only powers of two); consecutive cells are grid neighbours (one unit step), except for at most one
  diagonal step when exactly one side is odd.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch

from earthcast.errors import ConfigError

SCAN_ORDERS: tuple[str, ...] = ("bidirectional", "cross", "hilbert")


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _hilbert_cells(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Cells of a generalised Hilbert curve filling the rectangle spanned by the major axis (ax, ay) and the
    minor axis (bx, by) from corner (x, y). Recursive split into halves (long rectangles) or thirds."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = _sign(ax), _sign(ay)
    dbx, dby = _sign(bx), _sign(by)
    if h == 1:
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    ax2, ay2 = ax // 2, ay // 2
    bx2, by2 = bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:
        # Long rectangle: two halves along the major axis (keep the first half even so the curve stays adjacent).
        if w2 % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _hilbert_cells(x, y, ax2, ay2, bx, by)
        yield from _hilbert_cells(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:
        # Up the minor axis, across the full major axis, and back down.
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _hilbert_cells(x, y, bx2, by2, ax2, ay2)
        yield from _hilbert_cells(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _hilbert_cells(
            x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2)
        )


@lru_cache(maxsize=64)
def hilbert_order(height: int, width: int) -> torch.Tensor:
    """Raster indices ``i * width + j`` of the grid cells in generalised-Hilbert order. Shape (H*W,), int64."""
    if height < 1 or width < 1:
        raise ConfigError(f"grid must be at least 1x1, got {height}x{width}")
    # Cells are generated as (column j, row i) pairs: x runs along the width.
    if width >= height:
        cells = _hilbert_cells(0, 0, width, 0, 0, height)
    else:
        cells = _hilbert_cells(0, 0, 0, height, width, 0)
    return torch.tensor([i * width + j for j, i in cells], dtype=torch.long)


@lru_cache(maxsize=64)
def _permutations_cpu(scan: str, height: int, width: int) -> torch.Tensor:
    length = height * width
    raster = torch.arange(length)
    if scan == "bidirectional":
        orders = [raster, raster.flip(0)]
    elif scan == "cross":
        column_major = raster.view(height, width).t().reshape(-1)
        orders = [raster, column_major, raster.flip(0), column_major.flip(0)]
    elif scan == "hilbert":
        curve = hilbert_order(height, width)
        orders = [curve, curve.flip(0)]
    else:
        raise ConfigError(f"unknown scan order {scan!r}; choose one of {', '.join(SCAN_ORDERS)}")
    return torch.stack(orders)


@lru_cache(maxsize=256)
def _permutations_on(
    scan: str, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    perms = _permutations_cpu(scan, height, width).to(device)
    return perms, inverse_permutations(perms)


def scan_permutations(scan: str, grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Scan orders of an (H, W) grid as a (K, H*W) int64 tensor, one permutation of the raster indices per
    direction: K = 2 for ``"bidirectional"`` and ``"hilbert"``, 4 for ``"cross"``. Cached per grid and device."""
    return _permutations_on(scan, int(grid[0]), int(grid[1]), torch.device(device or "cpu"))[0]


def scan_inverse_permutations(
    scan: str, grid: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """Row-wise inverses of :func:`scan_permutations` (K, H*W): ``inv[k, perms[k, t]] = t``. Cached."""
    return _permutations_on(scan, int(grid[0]), int(grid[1]), torch.device(device or "cpu"))[1]


def inverse_permutations(perms: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse of a (K, L) stack of permutations: ``inv[k, perms[k, t]] = t``."""
    inv = torch.empty_like(perms)
    positions = torch.arange(perms.shape[1], device=perms.device).expand_as(perms)
    inv.scatter_(1, perms, positions)
    return inv

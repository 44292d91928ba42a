"""Lateral boundary forcing of a limited-area (regional) model.

A limited-area model (neural-lam style) is told what happens at its domain edge: for every time it is given
forcings for (the input times and the time it predicts), it receives the true state in a strip of
``boundary_width`` cells along the four edges of the box, plus a mask marking that strip. The manifest then
ends its forcing channels with ``boundary_<state channel>`` (one per state channel, same units) and
``boundary_mask``. Batches and rollout frames carry them in physical units (the truth in the strip, 0 inside
and at NaN points); the model's :class:`~earthcast.training.normalizer.Normalizer` normalises them like the
state on the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from earthcast.datasets.forcings import forcing_fields
from earthcast.errors import ConfigError

if TYPE_CHECKING:
    from earthcast.datasets.channels import ChannelManifest

BOUNDARY_PREFIX = "boundary_"
"""Prefix of the boundary forcing channels: ``boundary_<state channel name>``."""

BOUNDARY_MASK = "boundary_mask"
"""The forcing channel that is 1 in the boundary strip and 0 inside the domain."""


def check_boundary_width(width: int, geometry: str, shape: tuple[int, int], where: str) -> None:
    """Raise :class:`ConfigError` unless ``width`` cells of boundary forcing fit this grid.

    Args:
        width: strip width in grid cells (0 = no boundary forcing).
        geometry: the grid's geometry kind (:data:`earthcast.grids.GEOMETRY_KINDS`).
        shape: (H, W) of the grid.
        where: how to name the data in the message.
    """
    if width == 0:
        return
    if width < 0:
        raise ConfigError(
            f"boundary_width is {width}; it counts grid cells: set data.boundary_width to 0 (off) or a "
            "positive width"
        )
    if geometry != "regional":
        raise ConfigError(
            f"boundary_width={width} takes the lateral boundary of a limited-area model from the truth, but "
            f"{where} has a {geometry!r} grid, which has no lateral edges (it wraps around the globe or "
            "is periodic). Set data.boundary_width to 0, or use a regional store (a box that neither covers "
            "360° of longitude nor is declared periodic)."
        )
    if 2 * width >= min(shape):
        raise ConfigError(
            f"boundary_width={width} leaves no interior on the {shape[0]}x{shape[1]} (latitude x longitude) "
            f"grid of {where}: the strips along opposite edges meet. Use a width below {min(shape) / 2:g}."
        )


def boundary_strip(shape: tuple[int, int], width: int) -> np.ndarray:
    """(H, W) bool: True in the ``width`` outermost rows and columns of the grid (all False for width 0)."""
    strip = np.zeros(shape, dtype=bool)
    if width > 0:
        strip[:width] = strip[-width:] = True
        strip[:, :width] = strip[:, -width:] = True
    return strip


def boundary_fields(state: np.ndarray, width: int) -> np.ndarray:
    """The boundary forcing channels of states.

    Args:
        state: (T, C, H, W) physical state (NaN on masked points is allowed).
        width: strip width in grid cells (> 0).

    Returns:
        (T, C + 1, H, W) float32: the state in the strip and 0 inside it and at non-finite points, then the
        strip mask (1 in the strip, 0 inside).
    """
    t, _, h, w = state.shape
    strip = boundary_strip((h, w), width)
    values = np.where(strip & np.isfinite(state), state, np.float32(0.0)).astype(np.float32, copy=False)
    mask = np.broadcast_to(strip.astype(np.float32), (t, 1, h, w))
    return np.concatenate([values, mask], axis=1)


def manifest_forcings(manifest: ChannelManifest, times: np.ndarray, state: np.ndarray | None) -> np.ndarray:
    """Every forcing channel of a manifest at ``times``, in manifest order.

    Args:
        manifest: the channels; its analytic forcings come first, then (``boundary_width > 0``) the
            boundary channels.
        times: (T,) datetime64 instants.
        state: (T, C, H, W) physical truth at ``times`` (needed only when the manifest has a boundary).

    Returns:
        (T, F, H, W) float32 in physical units.
    """
    lat, lon = np.asarray(manifest.latitude), np.asarray(manifest.longitude)
    analytic = forcing_fields(manifest.analytic_forcings, times, lat, lon)
    if not manifest.boundary_width:
        return analytic
    if state is None or state.shape[0] != len(times):
        raise ValueError(
            f"the manifest has a {manifest.boundary_width}-cell boundary: pass the truth state at each of "
            f"the {len(times)} forcing times (T, C, H, W), got {None if state is None else state.shape}"
        )
    return np.concatenate([analytic, boundary_fields(state, manifest.boundary_width)], axis=1)

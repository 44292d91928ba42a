"""A zonal low-pass of a field's rows: the polar filter of lat/lon grid-point models and a truncation at the
data's resolution.

- **Polar filter.** Meridians converge towards the poles, so a grid cell there is narrow east–west and a
  6-hour step moves air across several of them (3.5 cells at 87.19° on the 64x32 grid, 0.3 at the
  equator). Poleward of a reference latitude φ_ref, a row keeps zonal wavenumbers
  k ≤ k_max(φ) = (W / 2) · cos φ / cos φ_ref (at least 1), the classic rule of grid-point GCMs (e.g. MOM's
  ``fourfil``). Equatorward of φ_ref nothing changes.
- **Truncation.** Data from a spectral model (the Held–Suarez demo is T21 on 64 longitudes) carry no power
  above its truncation; nothing in the data damps what a learned model puts there, so a free run's
  grid-scale noise grows without bound. Every row keeps k ≤ ``max_wavenumber``.

TritonCast applies the filter to its predicted increment, so the state it feeds back carries neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from earthcast.errors import ConfigError


def zonal_cutoffs(
    latitudes: Sequence[float],
    width: int,
    ref_latitude: float | None = None,
    max_wavenumber: int | None = None,
) -> np.ndarray:
    """(H,) int: the highest zonal wavenumber kept per row (``width // 2`` = everything) for latitudes in
    degrees on a grid of ``width`` longitudes (a full circle)."""
    lat = np.abs(np.asarray(latitudes, dtype=np.float64))
    nyquist = width // 2
    cutoff = np.full(lat.shape, nyquist, dtype=np.int64)
    if ref_latitude is not None:
        if not 0.0 < ref_latitude < 90.0:
            raise ConfigError(f"polar_filter is a reference latitude in (0, 90) degrees, got {ref_latitude}")
        ratio = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(ref_latitude))
        polar = np.clip(np.floor(nyquist * ratio + 1e-9), 1, nyquist).astype(np.int64)
        cutoff = np.where(lat > ref_latitude, polar, cutoff)
    if max_wavenumber is not None:
        if max_wavenumber < 1:
            raise ConfigError(f"max_wavenumber must be >= 1, got {max_wavenumber}")
        cutoff = np.minimum(cutoff, int(max_wavenumber))
    return cutoff


class ZonalFilter(nn.Module):
    """Zonal low-pass per row (see the module docstring).

    Args:
        latitudes: (H,) row latitudes in degrees (any order).
        width: W, the number of longitudes (a full circle).
        ref_latitude: φ_ref in degrees of the polar filter, or None.
        max_wavenumber: the truncation applied to every row, or None.

    forward(x (..., H, W)) -> (..., H, W) in the dtype of x; the FFT runs in float32 or wider.
    """

    def __init__(
        self,
        latitudes: Sequence[float],
        width: int,
        ref_latitude: float | None = None,
        max_wavenumber: int | None = None,
    ) -> None:
        super().__init__()
        cutoff = zonal_cutoffs(latitudes, width, ref_latitude, max_wavenumber)
        keep = np.arange(width // 2 + 1)[None, :] <= cutoff[:, None]  # (H, W//2 + 1)
        self.width = width
        self.rows = [int(i) for i in np.flatnonzero(cutoff < width // 2)]
        self.register_buffer("keep", torch.from_numpy(keep[self.rows].astype(np.float32)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return x
        rows = x[..., self.rows, :]
        low = rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows
        filtered = torch.fft.irfft(torch.fft.rfft(low) * self.keep, n=self.width).to(x.dtype)
        out = x.clone()
        out[..., self.rows, :] = filtered
        return out


def hyperdiffusion_factors(width: int, k_ref: int, strength: float, order: int = 4) -> np.ndarray:
    """(W//2 + 1,) per-step factors exp(−strength · (k / k_ref)^(2·order)) of zonal wavenumbers k = 0 … W/2:
    scale-selective damping like a spectral model's ∇^(2·order) hyperdiffusion (order 4: ∇⁸)."""
    if strength < 0 or k_ref < 1 or order < 1:
        raise ConfigError(
            f"hyperdiffusion needs strength >= 0, k_ref >= 1, order >= 1; got {strength}, {k_ref}, {order}"
        )
    k = np.arange(width // 2 + 1, dtype=np.float64)
    return np.exp(-strength * (k / k_ref) ** (2 * order))


class ZonalDamping(nn.Module):
    """Multiplies each zonal wavenumber of a field (every row) by :func:`hyperdiffusion_factors`.

    TritonCast applies it to its predicted state, inside the training loss as in rollouts, so the model learns
    to restore the damping where the dynamics are predictable, and errors it cannot predict (which a free run
    would otherwise accumulate near the data's truncation) decay. forward(x (..., H, W)) -> same."""

    def __init__(self, width: int, k_ref: int, strength: float, order: int = 4) -> None:
        super().__init__()
        self.width = width
        factors = torch.from_numpy(hyperdiffusion_factors(width, k_ref, strength, order).astype(np.float32))
        self.register_buffer("factors", factors, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return torch.fft.irfft(torch.fft.rfft(low) * self.factors, n=self.width).to(x.dtype)


class PolarMeanWindDamping(nn.Module):
    """Damps the zonal-mean meridional wind of high-latitude rows, every step.

    Mass continuity ties the zonal-mean meridional wind v̄ on a circle near the pole to the mass of the polar
    cap, so v̄ is tiny there (0.2–0.7 m s⁻¹ at 70–87° in the Held–Suarez demo) and tends to 0 at the pole for
    a smooth field; Coriolis turns a spurious v̄ into zonal wind at f·v̄ (86 m s⁻¹ per day for v̄ = 7 m s⁻¹
    at 80°). A learned model, whose area-weighted loss barely sees those rows, lets v̄ grow there in a free
    run. Poleward of ``ref_latitude`` each step multiplies v̄ of the given channels by cos φ / cos φ_ref
    (0.10 at 87.19° with φ_ref = 60°); the waves (k ≥ 1) and every other channel are untouched.

    Args:
        latitudes: (H,) row latitudes in degrees.
        ref_latitude: φ_ref in degrees.
        channels: indices of the northward components (v) in the state.

    forward(x (B, C, H, W)) -> (B, C, H, W).
    """

    def __init__(self, latitudes: Sequence[float], ref_latitude: float, channels: Sequence[int]) -> None:
        super().__init__()
        if not 0.0 < ref_latitude < 90.0:
            raise ConfigError(
                f"polar_mean_wind is a reference latitude in (0, 90) degrees, got {ref_latitude}"
            )
        lat = np.abs(np.asarray(latitudes, dtype=np.float64))
        factor = np.minimum(1.0, np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(ref_latitude)))
        self.channels = [int(c) for c in channels]
        self.register_buffer("removed", torch.from_numpy((1.0 - factor).astype(np.float32)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels:
            return x
        v = x[:, self.channels]
        out = x.clone()
        out[:, self.channels] = v - self.removed.to(x.dtype)[:, None] * v.mean(dim=-1, keepdim=True)
        return out

"""A short free run at validation time, so that a user sees instability while training, not after.

At the end of each validation epoch, :class:`~earthcast.training.module.ForecastModule` (with
``free_run_steps > 0``) rolls its evaluation model out from the first sample of the first validation batch for
``free_run_steps`` model steps (120 six-hourly steps = 30 days), with analytic forcings at the true times, and
logs what a long rollout would show early:

- ``val/free_run/finite_steps``: steps before the first NaN/Inf (= ``free_run_steps`` when the run stays finite);
- ``val/free_run/max_abs_z``: the largest |normalised value| reached (a blow-up guard trips at 50);
- ``val/free_run/drift``: the largest change of a channel's area-weighted mean from the initial state to the
  last finite step, in units of the channel's standard deviation (normalised units);
- ``val/free_run/spectrum_ratio_min`` / ``_max``: the zonal energy spectrum of the last finite state over the
  initial state's, for zonal wavenumbers 1 … W/4 (area-weighted over latitude), extreme over channels and
  wavenumbers: far below 1 is a smoothed, far above 1 a noisy or exploding field.
"""

from __future__ import annotations

import torch

FREE_RUN_METRICS = ("finite_steps", "max_abs_z", "drift", "spectrum_ratio_min", "spectrum_ratio_max")


def zonal_power(x: torch.Tensor, lat_weights: torch.Tensor) -> torch.Tensor:
    """(C, W//4) area-weighted zonal power spectrum of x (C, H, W) for zonal wavenumbers 1 … W//4, the
    well-resolved scales (1 … 16 on the 64-longitude WB2 grid). Higher wavenumbers are left out: truth there
    can be near zero (a T21 model on 64 longitudes), which would make any ratio meaningless."""
    top = max(1, x.shape[-1] // 4)
    power = torch.fft.rfft(x.double(), dim=-1, norm="forward").abs().square()[..., 1 : top + 1]  # (C, H, K)
    w = lat_weights.double()[None, :, None]
    return (power * w).sum(dim=-2) / w.sum()


def free_run_diagnostics(
    preds: torch.Tensor, start: torch.Tensor, lat_weights: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """The free-run figures (see the module docstring) of one run.

    Args:
        preds: (K, C, H, W) normalised states of the free run, leads 1 … K.
        start: (C, H, W) normalised initial state.
        lat_weights: (H,) area weights of the grid's rows.
        mask: (H, W) 1 where valid (0 on masked land, which is left out of every figure).

    Returns:
        ``{name: value}`` for each of :data:`FREE_RUN_METRICS`.
    """
    valid = mask.bool()
    finite = torch.stack([torch.isfinite(p[:, valid]).all() for p in preds])
    n_finite = int(preds.shape[0] if bool(finite.all()) else torch.nonzero(~finite)[0, 0])
    last = preds[n_finite - 1] if n_finite else start
    w = lat_weights.double()[:, None] * valid.double()  # (H, W)

    def area_mean(x: torch.Tensor) -> torch.Tensor:
        return (torch.where(valid, x.double(), 0.0) * w).sum(dim=(-2, -1)) / w.sum()

    max_abs = float(preds[:n_finite][..., valid].abs().max()) if n_finite else float("nan")
    drift = float((area_mean(last) - area_mean(start)).abs().max())
    ratio = zonal_power(torch.where(valid, last, 0.0), lat_weights) / zonal_power(
        torch.where(valid, start, 0.0), lat_weights
    ).clamp_min(1e-30)
    return {
        "finite_steps": float(n_finite),
        "max_abs_z": max_abs,
        "drift": drift,
        "spectrum_ratio_min": float(ratio.min()),
        "spectrum_ratio_max": float(ratio.max()),
    }

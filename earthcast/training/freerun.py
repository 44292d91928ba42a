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

import numpy as np
import torch

from earthcast.datasets.boundary import manifest_forcings
from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.time_axis import advance_times
from earthcast.training.normalizer import Normalizer

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


@torch.no_grad()
def free_run(
    model: torch.nn.Module,
    normalizer: Normalizer,
    manifest: ChannelManifest,
    lat_weights: torch.Tensor,
    start: dict[str, torch.Tensor],
    steps: int,
) -> dict[str, float]:
    """Roll ``model`` out ``steps`` steps from one normalised sample as the rollout engine does (analytic
    forcings at the true times, masked points held at normalised 0) and return :func:`free_run_diagnostics`.

    Args:
        model: the one-step predictor ``model(window, static, forcings, valid_ns)``.
        normalizer, manifest, lat_weights: the module's normaliser, channels and (H,) area weights.
        start: ``inputs`` (1, N, C, H, W), ``static`` (1, S, H, W), ``time`` (1,) int64 ns of the init and
            ``mask`` (1, H, W), normalised as in a batch.
        steps: model steps to run.
    """
    window, static, mask = start["inputs"].float(), start["static"].float(), start["mask"].bool()
    n = window.shape[1]
    init = start["time"].cpu().numpy().astype("datetime64[ns]")
    offsets = np.arange(-(n - 1), steps + 1)
    times = advance_times(init[:, None], offsets[None, :], manifest.model_step)[0]  # (N + K,)
    forcings = torch.from_numpy(manifest_forcings(manifest, times, None)).to(window.device)
    forcings = normalizer.normalize_forcings(forcings)[None]  # (1, N + K, F, H, W)
    valid = torch.from_numpy(times[n:].astype(np.int64)).to(window.device)
    preds = []
    for k in range(steps):
        nxt = model(window, static, forcings[:, k : k + n + 1], valid[k : k + 1]).float()
        nxt = torch.where(mask[:, None], nxt, 0.0)
        preds.append(nxt[0])
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
    return free_run_diagnostics(torch.stack(preds), start["inputs"][0, -1].float(), lat_weights, mask[0])

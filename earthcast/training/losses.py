"""Area-weighted, masked training loss and WB2-style RMSE accumulation.

Latitude weights are the cell-area weights that ``earthcast score`` uses too
(:func:`earthcast.scoring.weights.latitude_weights`, mean 1 over rows): WeatherBench2's on global grids, the
grid's own cells on a regional one, uniform on a β-plane. Masked points (mask 0, e.g. land in an ocean store) contribute nothing and are left out
of the normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.errors import ConfigError
from earthcast.scoring.weights import latitude_weights


def area_weights(manifest: ChannelManifest) -> torch.Tensor:
    """(H,) float32 area weights of the manifest's latitudes for its grid geometry (mean 1)."""
    return torch.from_numpy(latitude_weights(manifest.latitude, manifest.grid_geometry)).float()


def channel_weights(manifest: ChannelManifest, variable_weights: Mapping[str, float] | None) -> torch.Tensor:
    """(C,) loss weight per state channel. Keys may be channel names (``temperature_850``) or variables
    (``temperature``, applied to every level); a channel name wins over its variable. Default 1."""
    weights = dict(variable_weights or {})
    names = manifest.names("state")
    variables = {c.variable for c in manifest.state}
    unknown = sorted(k for k in weights if k not in names and k not in variables)
    if unknown:
        raise ConfigError(
            f"variable_weights has keys {unknown} that match no state channel; use channel names {names} "
            f"or variables {sorted(variables)}"
        )
    values = [float(weights.get(c.name, weights.get(c.variable, 1.0))) for c in manifest.state]
    if any(v < 0 for v in values):
        raise ConfigError(f"variable_weights must be >= 0, got {weights}")
    return torch.tensor(values, dtype=torch.float32)


def increment_std(stats: NormStats) -> torch.Tensor:
    """(C,) float32 tendency_std / state_std: the std of a one-step increment in state-normalised units
    (zero stds, i.e. constant channels, count as 1)."""
    state = torch.tensor(stats.state_std, dtype=torch.float64)
    tendency = torch.tensor(stats.tendency_std, dtype=torch.float64)
    ratio = torch.where(state > 0, tendency / torch.where(state > 0, state, 1.0), 1.0)
    return torch.where(ratio > 0, ratio, 1.0).float()


def tendency_loss_scale(stats: NormStats) -> torch.Tensor:
    """(C,) float32 (state_std / tendency_std)², normalised to mean 1 over channels.

    Multiplying the squared error of state-normalised channels by this gives every channel's one-step
    increment unit variance in the loss (GraphCast's residual normalisation)."""
    scale = increment_std(stats).double() ** -2
    return (scale / scale.mean()).float()


def weighted_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    lat_weights: torch.Tensor,
    chan_weights: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Σ w_c w_h m (pred − target)² / (Σ_c w_c · Σ_{b,h,w} w_h m · K).

    Args:
        pred, target: (B, K, C, H, W) (or (B, C, H, W), treated as K = 1).
        lat_weights: (H,); chan_weights: (C,); mask: (B, H, W), 1 = valid.

    Returns:
        A scalar in the dtype of ``pred``: the per-step, per-channel weighted mean squared error.
    """
    if pred.dim() == 4:
        pred, target = pred[:, None], target[:, None]
    err = (pred - target).square()  # (B, K, C, H, W)
    point = lat_weights.to(err.dtype)[None, :, None] * mask.to(err.dtype)  # (B, H, W)
    per_channel = (err * point[:, None, None]).sum(dim=(0, 1, 3, 4))  # (C,)
    cw = chan_weights.to(err.dtype)
    return (per_channel * cw).sum() / (cw.sum() * point.sum() * pred.shape[1]).clamp_min(1e-12)


def zonal_amse(
    pred: torch.Tensor, target: torch.Tensor, lat_weights: torch.Tensor, chan_weights: torch.Tensor
) -> torch.Tensor:
    """The adjusted MSE of Subich et al. (2025) on each row's zonal spectrum, normalised like
    :func:`weighted_mse` (for full latitude circles without masked points).

    Per row and zonal wavenumber k, with X, Y the Fourier coefficients of pred and target, MSE is
    (|X| − |Y|)² + 2 |X| |Y| (1 − cos θ); AMSE replaces |X| |Y| by max(|X|, |Y|)². When the phase θ of a wave
    cannot be predicted, MSE is lowest for a wave of shrunken amplitude (the blurring of deterministic
    models); AMSE is lowest at the target's amplitude. With matched phases the two are equal. The
    coefficients are weighted as in Parseval's sum, so the total over k equals the row's mean square.

    Args:
        pred, target: (B, K, C, H, W) (or (B, C, H, W), treated as K = 1); W the full circle.
        lat_weights: (H,); chan_weights: (C,).

    Returns:
        Σ w_c w_h Σ_k p_k AMSE_k / (Σ_c w_c · B · Σ_h w_h · K), p_k the Parseval weights (1 at k = 0 and at
        k = W/2 for even W, else 2).
    """
    if pred.dim() == 4:
        pred, target = pred[:, None], target[:, None]
    n = pred.shape[-1]
    x, y = torch.fft.rfft(pred, dim=-1, norm="forward"), torch.fft.rfft(target, dim=-1, norm="forward")
    ax, ay = x.abs(), y.abs()
    cross = (x * y.conj()).real  # |X| |Y| cos θ
    cos = cross / (ax * ay).clamp_min(1e-12)
    amse = (ax - ay).square() + 2.0 * torch.maximum(ax, ay).square() * (1.0 - cos)
    parseval = torch.full((amse.shape[-1],), 2.0, dtype=amse.dtype, device=amse.device)
    parseval[0] = 1.0
    if n % 2 == 0:
        parseval[-1] = 1.0
    per_row = (amse * parseval).sum(-1)  # (B, K, C, H)
    lw, cw = lat_weights.to(per_row.dtype), chan_weights.to(per_row.dtype)
    per_channel = (per_row * lw).sum(dim=(0, 1, 3))  # (C,)
    denom = cw.sum() * pred.shape[0] * lw.sum() * pred.shape[1]
    return (per_channel * cw).sum() / denom.clamp_min(1e-12)


def squared_error_sums(
    pred: torch.Tensor, target: torch.Tensor, lat_weights: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(K, C) sum over the batch of each sample's area-weighted, masked spatial mean squared error.

    Divide by the number of samples and take the square root for WB2's RMSE (sqrt of the time-mean MSE).
    pred, target: (B, K, C, H, W) in physical units; mask (B, H, W).
    """
    err = (pred.double() - target.double()).square()
    point = lat_weights.double()[None, :, None] * mask.double()  # (B, H, W)
    spatial = (err * point[:, None, None]).sum(dim=(-2, -1)) / point.sum(dim=(-2, -1))[:, None, None]
    return spatial.sum(dim=0)

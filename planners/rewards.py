"""Truth rewards: score candidate forecasts against the truth (training split only; higher is better).

Every reward takes fields in PHYSICAL units, ``pred`` (..., C, H, W) with any leading axes (e.g. (N, C, H, W)
or (N, K, C, H, W)) and ``target`` broadcastable to it, latitude ascending along H and longitude along W
(a global grid, periodic in W), and returns one score per leading index, shape (...,). Each has
``needs_truth``; a truth reward called with ``target=None`` raises :class:`ConfigError`, because at inference
candidates are scored by the critics of :mod:`earthcast.planners.critics` instead.

Area weights ``lat_weights`` are (H,) with mean 1, from :func:`earthcast.scoring.weights.latitude_weights`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from earthcast.errors import ConfigError

TRANSFORMS = ("value", "abs", "anomaly")
CRITICS = "SpectrumCritic, ConservationCritic, AgreementCritic or LearnedCritic (earthcast.planners.critics)"
POWER_EPS = 1e-12
"""Relative floor of :func:`log_zonal_power`: eps = POWER_EPS × mean power over wavenumbers 1 … W//2."""


@runtime_checkable
class Reward(Protocol):
    """A reward or critic: ``reward(pred (..., C, H, W), target | None) -> (...,)``, higher is better."""

    needs_truth: bool

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor: ...


def _float(x: Tensor) -> Tensor:
    """``x`` in a floating dtype of at least float32 precision."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _truth(name: str, pred: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """``pred`` and ``target`` broadcast to one (..., C, H, W) shape; ConfigError without a target."""
    if target is None:
        raise ConfigError(f"reward {name} needs the truth; at inference use a critic: {CRITICS}")
    if pred.dim() < 3:
        raise ConfigError(f"reward {name} needs pred (..., C, H, W), got shape {tuple(pred.shape)}")
    try:
        return torch.broadcast_tensors(pred, target)
    except RuntimeError as err:
        raise ConfigError(
            f"reward {name}: target {tuple(target.shape)} does not broadcast to pred {tuple(pred.shape)}; "
            "give the truth as (..., C, H, W) matching the candidates' leading axes"
        ) from err


def _weights(lat_weights: ArrayLike | Tensor | None) -> Tensor | None:
    """Constructor helper: (H,) float64 area weights, or None."""
    if lat_weights is None:
        return None
    w = lat_weights if torch.is_tensor(lat_weights) else torch.as_tensor(np.asarray(lat_weights, np.float64))
    if w.dim() != 1 or not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ConfigError(
            f"lat_weights must be (H,) non-negative with a positive sum, got shape {tuple(w.shape)}"
        )
    return w.double()


def _rows(w: Tensor | None, height: int, like: Tensor) -> Tensor:
    """(H,) area weights on ``like``'s device and dtype (ones when ``w`` is None); checks the length."""
    if w is None:
        return torch.ones(height, dtype=like.dtype, device=like.device)
    if w.shape[0] != height:
        raise ConfigError(f"lat_weights has {w.shape[0]} rows but the fields have H = {height} latitudes")
    return w.to(like.device, like.dtype)


def _per_channel(v: ArrayLike | Tensor | None, channels: int, like: Tensor, name: str) -> Tensor:
    """A (C,) per-channel vector (ones when None) on ``like``'s device and dtype."""
    if v is None:
        return torch.ones(channels, dtype=like.dtype, device=like.device)
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1)
    if t.shape[0] != channels:
        raise ConfigError(f"{name} has {t.shape[0]} entries but the fields have C = {channels} channels")
    return t


def _channels(channels: Sequence[int] | None, n: int, name: str) -> list[int]:
    """Channel indices into C (all when None); ConfigError when out of range."""
    idx = list(range(n)) if channels is None else [int(c) for c in channels]
    if not idx or any(not -n <= c < n for c in idx):
        raise ConfigError(f"{name}: channels {channels} must be non-empty indices into C = {n} channels")
    return idx


def apply_transform(x: Tensor, transform: str, reference: Tensor | None) -> Tensor:
    """``x`` (..., H, W) as ``"value"`` (x), ``"abs"`` (|x|) or ``"anomaly"`` (x − reference (H, W))."""
    if transform == "abs":
        return x.abs()
    if transform == "anomaly":
        return x - reference.to(x.device, x.dtype)
    return x


def _check_transform(transform: str, reference: ArrayLike | Tensor | None) -> Tensor | None:
    """Validated ``reference`` as a float64 tensor (None unless ``transform == "anomaly"``)."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown event transform {transform!r}; use one of {', '.join(TRANSFORMS)}")
    if (transform == "anomaly") != (reference is not None):
        raise ConfigError(
            "transform='anomaly' needs reference=(H, W) mean field in physical units, and only it takes one; "
            f"got transform={transform!r} with reference {'given' if reference is not None else 'None'}"
        )
    return None if reference is None else torch.as_tensor(np.asarray(reference, dtype=np.float64))


class CSI:
    """Critical success index of the event ``transform(field[channel]) >= threshold``.

    The 0/1 event maps of pred and target are max-pooled with kernel = stride = ``pool`` (``ceil_mode``, so
    edge cells form their own partial windows; ``pool=1`` pools nothing). Per sample,
    CSI = hits / (hits + misses + false alarms), where counts are sums over the (pooled) grid, each cell
    weighted by its row's area weight (the mean of ``lat_weights`` over the rows in its window) when given.
    When nothing is forecast and nothing observed (denominator 0) CSI is 1.
    """

    needs_truth = True

    def __init__(
        self,
        channel: int,
        threshold: float,
        *,
        transform: str = "value",
        reference: Tensor | None = None,
        pool: int = 1,
        lat_weights: Tensor | None = None,
    ) -> None:
        self.reference = _check_transform(transform, reference)
        if int(pool) != pool or pool < 1:
            raise ConfigError(f"CSI pool must be an integer >= 1, got {pool}")
        self.channel, self.threshold, self.transform, self.pool = (
            int(channel),
            float(threshold),
            transform,
            int(pool),
        )
        self.lat_weights = _weights(lat_weights)

    def check_range(self, lo: float, hi: float) -> None:
        """Warn (UserWarning) when the threshold lies outside [lo, hi], the range of ``transform(field)``."""
        if not lo <= self.threshold <= hi:
            warnings.warn(
                f"CSI threshold {self.threshold:g} for channel {self.channel} lies outside the range "
                f"[{lo:g}, {hi:g}] of the variable ({self.transform}), so the event is never or always "
                "observed and CSI is constant; pick one inside it, e.g. with percentile_threshold",
                UserWarning,
                stacklevel=2,
            )

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W), target broadcastable to it (physical units) -> CSI (...,) in [0, 1]."""
        pred, target = _truth("CSI", pred, target)
        n_c, height, width = pred.shape[-3:]
        if not -n_c <= self.channel < n_c:
            raise ConfigError(f"CSI channel {self.channel} is out of range for C = {n_c} channels")
        if self.pool > min(height, width):
            raise ConfigError(f"CSI pool {self.pool} exceeds the grid {height}x{width}; use a smaller pool")
        dtype = _float(pred).dtype
        maps = []
        for x in (pred, target):
            event = (
                apply_transform(x[..., self.channel, :, :], self.transform, self.reference) >= self.threshold
            )
            event = event.to(dtype).reshape(-1, 1, height, width)
            if self.pool > 1:
                event = F.max_pool2d(event, self.pool, self.pool, ceil_mode=True)
            maps.append(event[:, 0])
        fcst, obs = maps
        w = _rows(self.lat_weights, height, fcst)
        if self.pool > 1:  # mean of the real rows in each window (the last one may be partial)
            n_rows, extra = fcst.shape[-2], fcst.shape[-2] * self.pool - height
            sums = F.pad(w, (0, extra)).reshape(n_rows, self.pool).sum(-1)
            w = sums / F.pad(torch.ones_like(w), (0, extra)).reshape(n_rows, self.pool).sum(-1)
        w = w[:, None]
        hits = (w * fcst * obs).sum((-2, -1))
        misses = (w * (1 - fcst) * obs).sum((-2, -1))
        false_alarms = (w * fcst * (1 - obs)).sum((-2, -1))
        den = hits + misses + false_alarms
        csi = torch.where(den > 0, hits / torch.where(den > 0, den, 1), 1.0)
        return csi.reshape(pred.shape[:-3])


def percentile_threshold(
    samples: Tensor | ArrayLike,
    q: float,
    *,
    transform: str = "value",
    reference: Tensor | None = None,
    lat_weights: Tensor | ArrayLike | None = None,
) -> float:
    """The q-th percentile (0 < q < 100) of ``transform(samples)``, samples (T, H, W) in physical units.

    Without weights this is ``numpy.percentile`` (linear interpolation). With ``lat_weights`` (H,) each value
    carries its row's weight and the same rule is generalised: sorted values v_1 … v_n with weights w_i sit at
    p_i = (Σ_{j<i} w_j) / (Σ_j w_j − w_n), and the quantile interpolates v linearly at p = q/100. Equal
    weights give p_i = (i−1)/(n−1), i.e. numpy's rule exactly.
    """
    if not 0 < q < 100:
        raise ConfigError(f"percentile q must lie strictly between 0 and 100, got {q}")
    ref = _check_transform(transform, reference)
    x = torch.as_tensor(samples.detach().cpu() if torch.is_tensor(samples) else np.asarray(samples)).double()
    if x.dim() != 3:
        raise ConfigError(
            f"percentile_threshold needs samples (T, H, W) of one variable, got {tuple(x.shape)}"
        )
    values = apply_transform(x, transform, ref).numpy()
    if lat_weights is None:
        return float(np.percentile(values, q))
    w = _rows(_weights(lat_weights), values.shape[1], x).numpy()
    order = np.argsort(values, axis=None, kind="stable")
    v = values.reshape(-1)[order]
    wv = np.broadcast_to(w[None, :, None], values.shape).reshape(-1)[order]
    position = (np.cumsum(wv) - wv) / (wv.sum() - wv[-1])
    return float(np.interp(q / 100, position, v))


class SSIM:
    """Mean structural similarity over the selected channels (and the grid), per sample.

    Gaussian window (``window`` × ``window``, std ``sigma`` cells); fields are padded circularly in longitude
    and by replication in latitude, so the date line has no seam. C1 = (0.01 L)², C2 = (0.03 L)² with
    L = ``data_range`` per channel: a float, a (C,) tensor over all C channels, or None for the target's
    max − min over (H, W) per sample and channel (clamped to ≥ 1e-12 so a constant target gives no 0/0).
    Computed in float32; (co)variances use fields centred on the target's mean for precision.
    """

    needs_truth = True

    def __init__(
        self,
        channels: Sequence[int] | None = None,
        *,
        window: int = 7,
        sigma: float = 1.5,
        data_range: Tensor | float | None = None,
    ) -> None:
        if window < 1 or window % 2 == 0 or sigma <= 0:
            raise ConfigError(
                f"SSIM needs an odd window >= 1 and sigma > 0, got window={window}, sigma={sigma}"
            )
        self.channels, self.window, self.data_range = channels, int(window), data_range
        offsets = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
        g = torch.exp(-(offsets**2) / (2 * sigma**2))
        self.kernel = (torch.outer(g, g) / g.sum() ** 2).float()

    def _filter(self, x: Tensor) -> Tensor:
        """Gaussian-weighted local mean of x (B, c, H, W), same shape."""
        pad = self.window // 2
        x = F.pad(F.pad(x, (pad, pad, 0, 0), mode="circular"), (0, 0, pad, pad), mode="replicate")
        kernel = self.kernel.to(x.device).expand(x.shape[1], 1, self.window, self.window)
        return F.conv2d(x, kernel, groups=x.shape[1])

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W), target broadcastable to it (physical units) -> SSIM (...,), float32."""
        pred, target = _truth("SSIM", pred, target)
        n_c, height, width = pred.shape[-3:]
        idx = _channels(self.channels, n_c, "SSIM")
        if self.window // 2 > width:
            raise ConfigError(
                f"SSIM window {self.window} exceeds 2·W+1 for W = {width} longitudes; use a smaller one"
            )
        x = pred[..., idx, :, :].float().reshape(-1, len(idx), height, width)
        y = target[..., idx, :, :].float().reshape(-1, len(idx), height, width)
        if self.data_range is None:
            span = y.amax((-2, -1)) - y.amin((-2, -1))
        elif isinstance(self.data_range, (int, float)):
            span = torch.full(y.shape[:2], float(self.data_range), device=y.device)
        else:
            span = _per_channel(self.data_range, n_c, y, "SSIM data_range")[idx].expand(y.shape[:2])
        span = span.clamp_min(1e-12)[..., None, None]
        c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
        offset = y.mean((-2, -1), keepdim=True)
        x, y = x - offset, y - offset
        mu_x, mu_y = self._filter(x), self._filter(y)
        var_x = self._filter(x * x) - mu_x**2
        var_y = self._filter(y * y) - mu_y**2
        cov = self._filter(x * y) - mu_x * mu_y
        mu_x, mu_y = mu_x + offset, mu_y + offset
        luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
        structure = (2 * cov + c2) / (var_x + var_y + c2)
        return (luminance * structure).mean((-3, -2, -1)).reshape(pred.shape[:-3])


def zonal_power(x: Tensor, lat_weights: Tensor | None = None) -> Tensor:
    """Zonal power spectrum of x (..., C, H, W) -> (..., C, W//2+1), in units(x)².

    P_k = Σ_h w_h |X_{h,k}|² / Σ_h w_h with X = rfft(x, norm="forward") along longitude (X_k = (1/W) Σ_l
    x_l e^{−2πikl/W}; one-sided, not doubled), averaged over latitude rows with ``lat_weights`` (H,)
    (uniform when None).
    """
    coeffs = torch.fft.rfft(_float(x), dim=-1, norm="forward")
    power = coeffs.real**2 + coeffs.imag**2
    w = _rows(_weights(lat_weights), x.shape[-2], power)[:, None]
    return (w * power).sum(-2) / w.sum()


def log_zonal_power(x: Tensor, lat_weights: Tensor | None = None) -> Tensor:
    """log(P + eps) of :func:`zonal_power`, (..., C, W//2+1); eps = :data:`POWER_EPS` × the mean of P over
    wavenumbers 1 … W//2 (per sample and channel) plus the dtype's smallest normal, so zero power is finite."""
    power = zonal_power(x, lat_weights)
    eps = POWER_EPS * power[..., 1:].mean(-1, keepdim=True) + torch.finfo(power.dtype).tiny
    return torch.log(power + eps)


class SpectrumError:
    """−mean over channels and zonal wavenumbers 1 … W//2 of |log P(pred) − log P(target)| (P: see
    :func:`log_zonal_power`); 0 for identical spectra, negative otherwise."""

    needs_truth = True

    def __init__(self, channels: Sequence[int] | None = None, *, lat_weights: Tensor | None = None) -> None:
        self.channels, self.lat_weights = channels, _weights(lat_weights)

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W), target broadcastable to it (physical units) -> (...,)."""
        pred, target = _truth("SpectrumError", pred, target)
        if pred.shape[-1] < 2:
            raise ConfigError("SpectrumError needs W >= 2 longitudes for a zonal spectrum")
        idx = _channels(self.channels, pred.shape[-3], "SpectrumError")
        diff = log_zonal_power(pred[..., idx, :, :], self.lat_weights) - log_zonal_power(
            target[..., idx, :, :], self.lat_weights
        )
        return -diff[..., 1:].abs().mean((-2, -1))


class WeightedMSE:
    """−mean over (C, H, W) of w_lat[h] · w_c[c] · ((pred − target) / scale_c)²; ``scale`` (C,) (e.g. each
    channel's std, to make the score unitless) and ``channel_weights`` (C,) default to 1."""

    needs_truth = True

    def __init__(
        self, lat_weights: Tensor, channel_weights: Tensor | None = None, scale: Tensor | None = None
    ) -> None:
        self.lat_weights, self.channel_weights, self.scale = _weights(lat_weights), channel_weights, scale

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W), target broadcastable to it (physical units) -> (...,)."""
        pred, target = _truth("WeightedMSE", pred, target)
        pred, target = _float(pred), _float(target)
        n_c, height = pred.shape[-3:-1]
        w_c = _per_channel(self.channel_weights, n_c, pred, "WeightedMSE channel_weights")[:, None, None]
        scale = _per_channel(self.scale, n_c, pred, "WeightedMSE scale")[:, None, None]
        w_lat = _rows(self.lat_weights, height, pred)[:, None]
        return -(w_lat * w_c * ((pred - target) / scale) ** 2).mean((-3, -2, -1))


class Composite:
    """Σ_i weight_i · reward_i(pred, target); needs the truth when any term does."""

    def __init__(self, terms: Sequence[tuple[Reward, float]]) -> None:
        if not terms:
            raise ConfigError("Composite needs at least one (reward, weight) term")
        self.terms = [(reward, float(weight)) for reward, weight in terms]
        self.needs_truth = any(reward.needs_truth for reward, _ in self.terms)

    def __call__(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        """pred (..., C, H, W), target broadcastable to it or None (critics only) -> (...,)."""
        return sum(weight * reward(pred, target) for reward, weight in self.terms)

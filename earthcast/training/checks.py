"""Guards: checkpoint/data compatibility and the diagnosis of a non-finite loss."""

from __future__ import annotations

import numpy as np
import torch

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.errors import CheckpointError, ConfigError, EarthcastError

ROLLOUT_GRADIENTS: tuple[str, ...] = ("full", "last")
LOSS_SCALES: tuple[str, ...] = ("tendency", "state")
LOSS_FUNCTIONS: tuple[str, ...] = ("mse", "amse")
PERIODIC_GEOMETRIES: tuple[str, ...] = ("global_poles", "global", "band", "periodic")  # longitude wraps


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint was made for other channels, another grid or other normalisation statistics."""


class NonFiniteLossError(EarthcastError, RuntimeError):
    """The training loss became NaN or Inf; the message names the step, the batch and the channel."""


def check_settings(
    manifest: ChannelManifest, rollout_gradient: str, loss_scale: str, loss_function: str, input_noise: float
) -> None:
    """Raise :class:`~earthcast.errors.ConfigError` naming the first invalid training setting of
    :class:`~earthcast.training.ForecastModule` (a zonal-spectrum loss needs longitudes that wrap and no mask)."""
    for name, value, choices in (
        ("rollout_gradient", rollout_gradient, ROLLOUT_GRADIENTS),
        ("loss_scale", loss_scale, LOSS_SCALES),
        ("loss_function", loss_function, LOSS_FUNCTIONS),
    ):
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    geometry = manifest.grid_geometry.kind
    if loss_function == "amse" and (manifest.masked or geometry not in PERIODIC_GEOMETRIES):
        raise ConfigError(
            "loss_function 'amse' compares zonal spectra, which needs full latitude circles without masked "
            f"points; this grid is {geometry!r}{' with masked points' if manifest.masked else ''}: use "
            "loss_function 'mse'"
        )
    if input_noise < 0:
        raise ConfigError(f"input_noise is a number of tendency stds >= 0, got {input_noise}")


def stats_differences(
    mine: NormStats, theirs: NormStats, state: list[str], static: list[str], rtol: float = 1e-5
) -> list[str]:
    """Human-readable differences between two sets of statistics (empty if they agree to ``rtol``)."""
    diffs: list[str] = []
    for field, names in (
        ("state_mean", state),
        ("state_std", state),
        ("tendency_std", state),
        ("static_mean", static),
        ("static_std", static),
    ):
        a, b = np.asarray(getattr(mine, field)), np.asarray(getattr(theirs, field))
        if a.shape != b.shape:
            diffs.append(f"{field} has {a.size} values in the checkpoint and {b.size} in the data")
            continue
        bad = ~np.isclose(a, b, rtol=rtol, atol=0.0)
        for i in np.nonzero(bad)[0][:5]:
            label = names[i] if i < len(names) else f"#{i}"
            diffs.append(f"{field} of {label}: {a[i]:.6g} in the checkpoint vs {b[i]:.6g} in the data")
        if bad.sum() > 5:
            diffs.append(f"{field}: {int(bad.sum()) - 5} more channels differ")
    return diffs


def compatibility_problems(
    saved_manifest: ChannelManifest, saved_stats: NormStats, manifest: ChannelManifest, stats: NormStats
) -> list[str]:
    """Every difference in channels, grid, step, masking and statistics between a checkpoint and the data."""
    diffs = saved_manifest.differences(manifest)
    if saved_manifest.names("state") == manifest.names("state") and saved_manifest.names(
        "static"
    ) == manifest.names("static"):
        diffs += stats_differences(
            saved_stats, stats, saved_manifest.names("state"), saved_manifest.names("static")
        )
    return diffs


def _first_bad(x: torch.Tensor, channel_dim: int) -> tuple[int, int] | None:
    """(sample, channel) of the first non-finite value of x (B, ..., C at channel_dim, ...), or None."""
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return None
    dims = [d for d in range(x.dim()) if d not in (0, channel_dim)]
    bad = ~finite.all(dim=dims) if dims else ~finite  # (B, C)
    b, c = (int(i) for i in torch.nonzero(bad)[0])
    return b, c


def describe_non_finite(
    step: int,
    batch: dict[str, torch.Tensor],
    preds: torch.Tensor,
    manifest: ChannelManifest,
) -> str:
    """Name the first non-finite tensor (inputs, static, forcings, targets, then predictions by lead) and
    its first bad channel, with the batch's init time of that sample.

    batch: normalised batch (inputs (B, N, C, H, W), targets (B, K', C, H, W), static, forcings, time);
    preds: (B, K, C, H, W).
    """
    candidates = [
        ("input", batch["inputs"], 2, manifest.names("state")),
        ("static field", batch["static"], 1, manifest.names("static")),
        ("forcing", batch["forcings"], 2, manifest.names("forcing")),
        ("target", batch["targets"][:, : preds.shape[1]], 2, manifest.names("state")),
    ]
    for lead in range(preds.shape[1]):
        candidates.append((f"prediction at lead {lead + 1}", preds[:, lead], 1, manifest.names("state")))
    times = batch["time"].detach().cpu().numpy().astype("datetime64[ns]")
    for what, tensor, dim, names in candidates:
        if tensor.numel() == 0:
            continue
        found = _first_bad(tensor.detach(), dim)
        if found is not None:
            b, c = found
            stamp = str(times[b])[:19]
            return (
                f"non-finite loss at global step {step}: the {what} of channel {names[c]!r} is NaN/Inf "
                f"(batch sample {b}, init time {stamp}). Check the data at that time, lower the learning "
                "rate or enable gradient clipping (trainer.gradient_clip_val)."
            )
    return (
        f"non-finite loss at global step {step} although inputs, targets and predictions are finite "
        f"(init times {[str(t)[:19] for t in times]}): the loss overflowed; use fp32 or bf16 instead of fp16."
    )

"""Baselines with the TritonCast call signature ``model(state, static, forcings, time) -> next state``.

All work on normalised fields: state (B, N, C, H, W), static (B, S, H, W), forcings (B, N + 1, F, H, W),
time (B,) int64 nanoseconds of the valid time being predicted; they return (B, C, H, W).

- :class:`Persistence`: the last input state (no parameters).
- :class:`Climatology`: the WB2 hour × day-of-year climatology at the valid time (no parameters), from a
  WB2 climatology store or computed from training data.
- :class:`UNet`: a conv U-Net on the sphere (concatenated skips, no latent core), trained like TritonCast.

The TritonCast ablations (no core, no skips, flat) are :class:`~earthcast.models.tritoncast.TritonCast`
options (``ablation=...``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.errors import ConfigError
from earthcast.grids import grid_mismatch
from earthcast.models.geometry import Downsample, Halo, SphereResBlock, Upsample
from earthcast.models.tritoncast import TritonCast, TritonCastConfig
from earthcast.scoring.climatology import N_DAYS, build_climatology, check_climatology, climatology_variable


class Persistence(nn.Module):
    """x_{t+Δ} = x_t. state (B, N, C, H, W) -> (B, C, H, W)."""

    def forward(
        self,
        state: torch.Tensor,
        static: torch.Tensor | None = None,
        forcings: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return state[:, -1]


class Climatology(nn.Module):
    """The normalised climatological mean at each sample's valid time.

    Args:
        values: (n_hours, 366, C, H, W) normalised climatology (day of year 1…366).
        hours: (n_hours,) UTC hours of day of ``values``; a single hour matches every hour (daily
            climatology, as WB2 broadcasts it).

    The table is a non-persistent buffer (rebuilt from its source when a checkpoint is loaded), so
    checkpoints stay small. forward(..., time (B,) int64 ns) -> (B, C, H, W).
    """

    def __init__(self, values: torch.Tensor, hours: Sequence[int]) -> None:
        super().__init__()
        if values.dim() != 5 or values.shape[1] != N_DAYS or values.shape[0] != len(hours):
            raise ConfigError(
                f"climatology values must be (n_hours={len(hours)}, {N_DAYS}, C, H, W), got {tuple(values.shape)}"
            )
        if not torch.isfinite(values).all():
            raise ConfigError(
                "the climatology has NaN/Inf values (masked land?); fill them (e.g. with the channel mean) first"
            )
        self.hours = [int(h) for h in hours]
        self.register_buffer("values", values.float(), persistent=False)

    def positions(self, time: torch.Tensor) -> torch.Tensor:
        """(B,) flat (hour, dayofyear) indices of valid times (B,) int64 ns."""
        stamps = pd.DatetimeIndex(time.detach().cpu().numpy().astype("datetime64[ns]"))
        doy = stamps.day_of_year.to_numpy() - 1
        if len(self.hours) == 1:
            hour_pos = np.zeros_like(doy)
        else:
            hour_pos = pd.Index(self.hours).get_indexer(stamps.hour)
            if (hour_pos < 0).any():
                bad = stamps[hour_pos < 0][0]
                raise ConfigError(
                    f"valid time {bad} is at {bad.hour:02d} UTC but the climatology has hours {self.hours}; "
                    "build the climatology with an hour_interval that divides the model step"
                )
        return torch.as_tensor(hour_pos * N_DAYS + doy, device=self.values.device)

    def forward(
        self,
        state: torch.Tensor,
        static: torch.Tensor | None = None,
        forcings: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if time is None:
            raise ConfigError("the climatology baseline needs the valid time of each sample (time=...)")
        table = self.values.flatten(0, 1)  # (n_hours * 366, C, H, W)
        return table[self.positions(time)].to(state.dtype)

    @classmethod
    def from_dataset(
        cls, climatology: xr.Dataset, manifest: ChannelManifest, stats: NormStats
    ) -> Climatology:
        """From a WB2-layout climatology (hour, dayofyear, [level], latitude, longitude) in physical units,
        normalised with ``stats`` for the manifest's state channels."""
        clim = check_climatology(climatology)
        problem = grid_mismatch(
            clim["latitude"].values, clim["longitude"].values, manifest.latitude, manifest.longitude
        )
        if problem:
            raise ConfigError(f"the climatology is on another grid than the data: {problem}; regrid it first")
        if clim.sizes["dayofyear"] != N_DAYS:
            raise ConfigError(
                f"the climatology must have {N_DAYS} days of year, it has {clim.sizes['dayofyear']}"
            )
        channels = []
        for channel in manifest.state:
            da = climatology_variable(clim, channel.variable)
            if channel.level is not None:
                if "level" not in da.dims or channel.level not in da["level"].values:
                    raise ConfigError(
                        f"the climatology of {channel.variable!r} has no level {channel.level}; rebuild it "
                        "with every level the model uses"
                    )
                da = da.sel(level=channel.level)
            channels.append(da.transpose("hour", "dayofyear", "latitude", "longitude").values)
        # normalised by the one normaliser that training and rollouts use (a constant channel's std is 1)
        from earthcast.training.normalizer import Normalizer  # here: earthcast.training imports this module

        physical = torch.from_numpy(np.stack(channels, axis=2).astype(np.float32))
        table = torch.nan_to_num(Normalizer(stats).normalize_state(physical), nan=0.0)
        return cls(table, [int(h) for h in clim["hour"].values])

    @classmethod
    def from_truth(
        cls,
        truth: xr.Dataset,
        manifest: ChannelManifest,
        stats: NormStats,
        *,
        start: str | None = None,
        end: str | None = None,
        window: int = 61,
    ) -> Climatology:
        """Compute the WB2 climatology of ``truth`` over [start, end] (e.g. the training split)."""
        hours = pd.DatetimeIndex(truth["time"].values).hour
        interval = int(np.gcd.reduce(np.unique(np.concatenate([[24], hours]))))
        variables = list(dict.fromkeys(c.variable for c in manifest.state))
        subset = truth[variables].sel(time=slice(start, end))
        clim = build_climatology(subset, hour_interval=interval, window=window, variables=variables)
        return cls.from_dataset(clim, manifest, stats)


class ConcatUNet(nn.Module):
    """U-Net body on the sphere: per level ``depth`` residual blocks, 2× merges, transposed-conv
    upsampling and concatenated skips (1×1 conv back to the level width). (B, w0, H, W) -> same."""

    def __init__(self, widths: tuple[int, ...], depth: int, halo: Halo, upsample: str = "bilinear") -> None:
        super().__init__()
        halos = [halo] + [halo.coarse()] * (len(widths) - 1)

        def stage(w_in: int, w_out: int, h: Halo) -> nn.Sequential:
            return nn.Sequential(
                *[SphereResBlock(w_in if i == 0 else w_out, w_out, halo=h) for i in range(depth)]
            )

        self.encoders = nn.ModuleList(stage(w, w, h) for w, h in zip(widths[:-1], halos))
        self.downs = nn.ModuleList(
            Downsample(a, b, halo=h) for a, b, h in zip(widths[:-1], widths[1:], halos)
        )
        self.bottom = stage(widths[-1], widths[-1], halos[-1])
        self.ups = nn.ModuleList(
            Upsample(b, a, halo=h, mode=upsample) for (a, b), h in zip(itertools.pairwise(widths), halos[1:])
        )
        self.decoders = nn.ModuleList(stage(2 * w, w, h) for w, h in zip(widths[:-1], halos))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottom(x)
        for i in reversed(range(len(self.ups))):
            x = self.ups[i](x, skips[i].shape[-2:])
            x = self.decoders[i](torch.cat([x, skips[i]], dim=1))
        return x


class UNet(TritonCast):
    """Conv U-Net baseline with TritonCast's inputs, outputs and sphere padding; ``config.core`` and
    ``config.ablation`` are ignored. Same constructor and forward as :class:`TritonCast`."""

    def build_body(self, cfg: TritonCastConfig, halo: Halo) -> nn.Module:
        return ConcatUNet(cfg.widths, cfg.depth, halo, cfg.upsample)

"""The multigrid V-cycle of TritonCast: restriction with per-level skips, a latent core, gated prolongation.

Shapes: level l works on (B, widths[l], H_l, W_l) with H_l = ceil(H_{l-1} / 2), W_l likewise (level 0 is the
input grid). All spatial convolutions pad by the grid's halo (:mod:`earthcast.models.geometry`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from earthcast.errors import ConfigError
from earthcast.models.backbone import Backbone, BackboneConfig
from earthcast.models.geometry import Downsample, Halo, SphereResBlock, Upsample


def _stage(in_channels: int, out_channels: int, depth: int, halo: Halo) -> nn.Sequential:
    """``depth`` residual sphere blocks, the first changing the width from in_channels to out_channels."""
    blocks = [
        SphereResBlock(in_channels if i == 0 else out_channels, out_channels, halo=halo) for i in range(depth)
    ]
    return nn.Sequential(*blocks)


class GatedFusion(nn.Module):
    """Nested-grid fusion: coarse trend ``u`` plus gated fine detail from the skip ``s``.

    ``y = u + g * P(s)`` with ``g = sigmoid(W [u; s] + b)`` per channel and point, P a 1×1 projection.
    u, s: (B, C, H, W) -> (B, C, H, W). ``skip=False`` (ablation) returns u.
    """

    def __init__(self, channels: int, *, skip: bool = True) -> None:
        super().__init__()
        self.use_skip = skip
        if skip:
            self.gate = nn.Conv2d(2 * channels, channels, 1)
            self.detail = nn.Conv2d(channels, channels, 1)
            nn.init.zeros_(self.gate.bias)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if not self.use_skip:
            return coarse
        gate = torch.sigmoid(self.gate(torch.cat([coarse, skip], dim=1)))
        return coarse + gate * self.detail(skip)


class LatentCore(nn.Module):
    """Latent dynamical core: hybrid Mamba2/attention blocks on the coarsest grid, applied as a residual.

    (B, C, h, w) -> (B, C, h, w). Each latent pixel is a token; the field is first given ``width`` rows and
    columns of halo (folded/wrapped on a global grid, replicated on a regional one, see
    :mod:`earthcast.models.geometry`) so the depthwise convolutions inside the Mamba layers see what lies
    beyond the edges, and the halo is cropped afterwards.
    """

    def __init__(
        self, channels: int, config: BackboneConfig, *, width: int = 1, halo: Halo | None = None
    ) -> None:
        super().__init__()
        self.width, self.halo = width, halo or Halo()
        self.backbone = Backbone(channels, config, out_channels=channels, patch_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2], z.shape[-1]
        rows = min(self.width, self.halo.max_rows(h))
        cols = min(self.width, w)
        out = self.backbone(self.halo.pad(z, rows, rows, cols, cols))
        return z + out[..., rows : rows + h, cols : cols + w]

    def aux_loss(self) -> torch.Tensor:
        return self.backbone.aux_loss()


class VCycle(nn.Module):
    """Restriction -> latent core -> prolongation over ``len(widths)`` levels.

    Args:
        widths: channels per level, finest first; there are ``len(widths) - 1`` 2× coarsenings.
        depth: residual sphere blocks per level on each path (the learnable smoother S^(l)).
        core: backbone settings of the latent core, or None to skip it (ablation "no core").
        skips: fuse the stored skip at every level (False = ablation "no skip").
        flat: one-level variant: a single (2**(len(widths)-1))× patch merge to the coarsest grid, no
            intermediate levels or skips, and one transposed conv back (ablation "flat").
        halo: padding of level 0 (coarser levels use :meth:`Halo.coarse`, see :mod:`.geometry`).

    forward: (B, widths[0], H, W) -> (B, widths[0], H, W).
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        depth: int,
        core: BackboneConfig | None,
        *,
        skips: bool = True,
        flat: bool = False,
        halo: Halo | None = None,
        core_halo: int = 1,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if len(widths) < 1 or min(widths) < 1:
            raise ConfigError(f"widths must list at least one positive width per level, got {widths}")
        self.flat = flat
        levels = len(widths) - 1
        fine = halo or Halo()
        halos = [fine] + [fine.coarse()] * levels
        bottom = halos[-1]
        if flat:
            factor = 2**levels
            self.encoders = nn.ModuleList([_stage(widths[0], widths[0], depth, fine)])
            self.downs = nn.ModuleList([Downsample(widths[0], widths[-1], factor=factor, halo=fine)])
            self.bottom = _stage(widths[-1], widths[-1], depth, bottom)
            self.ups = nn.ModuleList(
                [Upsample(widths[-1], widths[0], factor=factor, halo=bottom, mode=upsample)]
            )
            self.fusions = nn.ModuleList([GatedFusion(widths[0], skip=False)])
            self.decoders = nn.ModuleList([_stage(widths[0], widths[0], depth, fine)])
        else:
            self.encoders = nn.ModuleList(_stage(w, w, depth, h) for w, h in zip(widths[:-1], halos))
            self.downs = nn.ModuleList(
                Downsample(widths[i], widths[i + 1], halo=halos[i]) for i in range(levels)
            )
            self.bottom = _stage(widths[-1], widths[-1], depth, bottom)
            self.ups = nn.ModuleList(
                Upsample(widths[i + 1], widths[i], halo=halos[i + 1], mode=upsample) for i in range(levels)
            )
            self.fusions = nn.ModuleList(GatedFusion(w, skip=skips) for w in widths[:-1])
            self.decoders = nn.ModuleList(_stage(w, w, depth, h) for w, h in zip(widths[:-1], halos))
        self.core = None if core is None else LatentCore(widths[-1], core, width=core_halo, halo=bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)  # stored before restriction: the fine detail of this level
            x = down(x)
        x = self.bottom(x)
        if self.core is not None:
            x = self.core(x)
        for i in reversed(range(len(self.ups))):
            skip = skips[i]
            x = self.ups[i](x, (skip.shape[-2], skip.shape[-1]))
            x = self.decoders[i](self.fusions[i](x, skip))
        return x

    def aux_loss(self) -> torch.Tensor:
        """MoE balancing loss of the core's last forward pass (0 without a core or MoE layers)."""
        return self.core.aux_loss() if self.core is not None else torch.zeros(())


def backbone_config(settings: dict[str, Any]) -> BackboneConfig:
    """A :class:`BackboneConfig` from a plain dict (as it comes from YAML), with a clear error on typos."""
    known = set(BackboneConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown latent-core settings {unknown}; valid ones: {sorted(known)}")
    return BackboneConfig(**settings)

"""Hybrid Mamba2/attention backbones: tokens (B, L, D) -> (B, L, D) and fields (B, C, H, W) -> (B, C', H, W)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.errors import ConfigError

from .blocks import BackboneConfig, build_blocks
from .ffn import MoEFFN
from .mamba2d import Mamba2Mixer2d, mark_no_weight_decay

PAD_MODES: tuple[str, ...] = ("replicate", "constant", "reflect", "error")


def _make_config(config: BackboneConfig | None, overrides: dict[str, Any]) -> BackboneConfig:
    if config is not None and overrides:
        raise TypeError(
            f"pass either config= or individual settings, not both (got config and {sorted(overrides)})"
        )
    if config is not None:
        return config
    known = {f.name for f in fields(BackboneConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown backbone settings {unknown}; valid: {sorted(known)}")
    return BackboneConfig(**overrides)


class TokenBackbone(nn.Module):
    """Stack of hybrid blocks on tokens: (B, L, D) -> (B, L, D), final RMSNorm included.

    Build with a :class:`BackboneConfig` or its fields as keyword arguments, e.g.
    ``TokenBackbone(width=32, pattern="AMF MF", heads=2, d_state=16, headdim=16)``.

    ``forward(x, grid)`` takes the token layout ``grid = (H, W)`` with ``H * W == L`` (tokens in raster order);
    ``grid=None`` treats the tokens as a 1-D sequence, ``(1, L)``.
    """

    def __init__(self, config: BackboneConfig | None = None, **settings: Any) -> None:
        super().__init__()
        self.config = cfg = _make_config(config, settings)
        self.blocks = build_blocks(cfg)
        self.pos_embed: nn.Parameter | None = None
        if cfg.pos_embed == "learned":
            if cfg.max_grid is None:
                raise ConfigError(
                    "pos_embed='learned' needs max_grid=(H, W), the largest token grid it will see"
                )
            table = torch.randn(*cfg.max_grid, cfg.width) * 0.02
            self.pos_embed = mark_no_weight_decay(nn.Parameter(table))
        self.norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, L, D); grid: (H, W) with H*W = L, or None for (1, L). Returns (B, L, D)."""
        if x.dim() != 3 or x.shape[-1] != self.config.width:
            raise ConfigError(f"expected tokens (B, L, {self.config.width}), got {tuple(x.shape)}")
        grid = (1, x.shape[1]) if grid is None else (int(grid[0]), int(grid[1]))
        if grid[0] * grid[1] != x.shape[1]:
            raise ConfigError(f"grid {grid} has {grid[0] * grid[1]} cells but there are {x.shape[1]} tokens")
        if self.pos_embed is not None:
            max_h, max_w = self.pos_embed.shape[:2]
            if grid[0] > max_h or grid[1] > max_w:
                raise ConfigError(
                    f"token grid {grid} exceeds max_grid {(max_h, max_w)} of the learned position table"
                )
            x = x + self.pos_embed[: grid[0], : grid[1]].reshape(1, -1, x.shape[-1]).to(x.dtype)
        for block in self.blocks:
            x = block(x, grid)
        return self.norm(x)

    def aux_loss(self) -> torch.Tensor:
        """Weighted sum of the MoE load-balancing losses of the last forward pass (0 without MoE layers)."""
        losses = [m.config.aux_loss_coef * m.aux_loss for m in self.modules() if isinstance(m, MoEFFN)]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def kernel_backends(self) -> dict[str, dict[str, str | None]]:
        """Backends ("triton" / "reference") each Mamba-type layer used in its last forward pass:
        ``{layer name: {"ssd_scan": ..., "gated_rms_norm": ...}}``; log it to record which path ran."""
        return {
            name: dict(m.last_backends) for name, m in self.named_modules() if isinstance(m, Mamba2Mixer2d)
        }


class Backbone(nn.Module):
    """Field backbone: (B, C_in, H, W) -> (B, C_out, H, W) by patch-embed -> :class:`TokenBackbone` -> un-patch.

    Args:
        in_channels: input channels C_in.
        config: :class:`BackboneConfig`; or give its fields as keyword arguments instead.
        out_channels: output channels (``None`` = ``in_channels``).
        patch_size: p; the token grid is (ceil(H/p), ceil(W/p)).
        pad_mode: when H or W is not a multiple of p, the field is padded at the bottom/right to the next multiple
            with ``"replicate"`` (default), ``"constant"`` (zeros) or ``"reflect"``, and the output is cropped
            back; ``"error"`` raises instead. Longitude-periodic padding is the caller's job: pad or roll the
            field before calling if the domain wraps around.

    H and W need not be powers of two. Example (a few thousand parameters)::

        Backbone(3, width=32, pattern="AMF MF", heads=2, d_state=16, headdim=16, patch_size=2)
    """

    def __init__(
        self,
        in_channels: int,
        config: BackboneConfig | None = None,
        *,
        out_channels: int | None = None,
        patch_size: int = 1,
        pad_mode: str = "replicate",
        **settings: Any,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise ConfigError(f"patch_size must be >= 1, got {patch_size}")
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"unknown pad_mode {pad_mode!r}; choose one of {', '.join(PAD_MODES)}")
        self.tokens = TokenBackbone(config, **settings)
        width = self.tokens.config.width
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.patch_size, self.pad_mode = patch_size, pad_mode
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.unpatch = nn.Linear(width, self.out_channels * patch_size**2)

    @property
    def config(self) -> BackboneConfig:
        return self.tokens.config

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if not pad_h and not pad_w:
            return x
        if self.pad_mode == "error":
            raise ConfigError(
                f"field size {tuple(x.shape[-2:])} is not divisible by patch_size={p}; pad it to a multiple of "
                f"{p} (e.g. periodic in longitude) or construct the Backbone with pad_mode='replicate'"
            )
        return F.pad(x, (0, pad_w, 0, pad_h), mode=self.pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"expected a field (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        tokens = self.patch_embed(self._pad(x))  # (B, D, h, w)
        b, _, h, w = tokens.shape
        tokens = self.tokens(tokens.flatten(2).transpose(1, 2), (h, w))  # (B, h*w, D)
        p = self.patch_size
        out = self.unpatch(tokens).view(b, h, w, self.out_channels, p, p)
        out = out.permute(0, 3, 1, 4, 2, 5).reshape(b, self.out_channels, h * p, w * p)
        return out[..., :height, :width]

    def aux_loss(self) -> torch.Tensor:
        """Weighted MoE load-balancing loss of the last forward pass; add it to the training loss."""
        return self.tokens.aux_loss()

    def kernel_backends(self) -> dict[str, dict[str, str | None]]:
        """Backends used by each Mamba-type layer in the last forward pass (see TokenBackbone)."""
        return self.tokens.kernel_backends()

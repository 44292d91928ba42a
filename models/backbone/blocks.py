"""Hybrid blocks built from a pattern string, and the configuration shared by every sub-layer.

Pattern letters (each is one pre-RMSNorm + residual sub-layer; spaces separate blocks):

- ``A``: grouped-query attention (:class:`GQAttention2d`), 2-D RoPE unless ``pos_embed != "rope"``.
- ``M``: Mamba2 mixer with non-causal 2-D scans (:class:`Mamba2Mixer2d`).
- ``T``: experimental TransMamba shared-projection mixer (:class:`TransMambaMixer2d`).
- ``F``: dense SwiGLU FFN.
- ``E``: mixture-of-experts SwiGLU FFN (:class:`MoEFFN`, configured by ``moe``).

Example: ``"AMF MF MF MF"`` is one attention+Mamba+FFN block followed by three Mamba+FFN blocks
(Hunyuan-TurboS-style); ``"AME ME"`` is the same with MoE FFNs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from earthcast.errors import ConfigError

from .attention import GQAttention2d
from .ffn import MoEConfig, MoEFFN, SwiGLU
from .mamba2d import Mamba2Mixer2d
from .transmamba import TransMambaMixer2d

LAYER_LETTERS: dict[str, str] = {
    "A": "attention",
    "M": "Mamba2 mixer",
    "T": "TransMamba mixer",
    "F": "SwiGLU FFN",
    "E": "MoE FFN",
}
POS_EMBEDS: tuple[str, ...] = ("rope", "learned", "none")
MIXER_LETTERS = frozenset("AMT")


@dataclass
class BackboneConfig:
    """Hyper-parameters of the token mixer stack (everything but the patch embedding).

    Attributes:
        width: model width D.
        pattern: block pattern, letters in :data:`LAYER_LETTERS`, spaces between blocks.
        repeats: the pattern is repeated this many times (depth = repeats * number of blocks in the pattern).
        heads, kv_heads: attention query heads and key/value heads (GQA; ``None`` = ``heads``).
        d_state, headdim, expand, ngroups, chunk_size: Mamba2/SSD sizes (state N, head P, inner width factor,
            B/C groups, scan chunk length).
        scan: ``"bidirectional"``, ``"cross"`` or ``"hilbert"`` serialisation of the grid for M and T layers.
        merge: ``"sum"`` or ``"mean"`` of the scan directions.
        conv_kernel: side of the depthwise 2-D conv in M and T layers.
        ffn_hidden: SwiGLU hidden size (``None`` = 8/3 * width rounded up to a multiple of 8).
        moe: settings of ``E`` layers (``None`` = :class:`MoEConfig` defaults when the pattern has ``E``).
        pos_embed: ``"rope"`` (2-D RoPE inside attention), ``"learned"`` (an (H, W, D) table added to the
            tokens, needs ``max_grid``) or ``"none"``.
        max_grid: largest (H, W) token grid for ``pos_embed="learned"``.
        rope_theta: RoPE base.
        trans_mode: mode of the T layers: one of ``"attn"``, ``"ssd"``, ``"split"``, or one mode per T layer.
        trans_split: prefix fraction of ``"split"`` mode.
        norm_eps: epsilon of every RMSNorm.
        backend: kernel backend (``None`` automatic, ``"triton"``, ``"reference"``).
        grad_checkpoint: recompute each block in the backward pass (activation memory for compute).
    """

    width: int = 256
    pattern: str = "AMF MF MF MF"
    repeats: int = 1
    heads: int = 8
    kv_heads: int | None = None
    d_state: int = 64
    headdim: int = 64
    expand: int = 2
    ngroups: int = 1
    chunk_size: int = 64
    scan: str = "bidirectional"
    merge: str = "sum"
    conv_kernel: int = 3
    ffn_hidden: int | None = None
    moe: MoEConfig | None = None
    pos_embed: str = "rope"
    max_grid: tuple[int, int] | None = None
    rope_theta: float = 10000.0
    trans_mode: str | list[str] = field(default="ssd")
    trans_split: float = 0.5
    norm_eps: float = 1e-5
    backend: str | None = None
    grad_checkpoint: bool = False


def parse_pattern(pattern: str, repeats: int = 1) -> list[str]:
    """Split a pattern into blocks, e.g. ``"amf MF"`` -> ``["AMF", "MF"]`` (letters upper-cased), repeated.

    Raises ValueError naming any unknown letter and the valid ones."""
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    blocks = pattern.upper().split()
    if not blocks:
        raise ConfigError(f"pattern {pattern!r} has no blocks; use letters such as 'AMF MF'")
    valid = ", ".join(f"{k} ({v})" for k, v in LAYER_LETTERS.items())
    for block in blocks:
        for letter in block:
            if letter not in LAYER_LETTERS:
                raise ConfigError(
                    f"unknown layer letter {letter!r} in pattern {pattern!r}; valid letters: {valid}; "
                    f"separate blocks with spaces"
                )
    return blocks * repeats


def build_layer(letter: str, cfg: BackboneConfig, trans_mode: str) -> nn.Module:
    """One sub-layer for a pattern letter (see :data:`LAYER_LETTERS`)."""
    mamba_kwargs = dict(
        d_state=cfg.d_state, headdim=cfg.headdim, expand=cfg.expand, ngroups=cfg.ngroups,
        chunk_size=cfg.chunk_size, scan=cfg.scan, merge=cfg.merge, conv_kernel=cfg.conv_kernel,
        norm_eps=cfg.norm_eps, backend=cfg.backend,
    )  # fmt: skip
    if letter == "A":
        return GQAttention2d(
            cfg.width,
            heads=cfg.heads,
            kv_heads=cfg.kv_heads,
            rope=cfg.pos_embed == "rope",
            rope_theta=cfg.rope_theta,
        )
    if letter == "M":
        return Mamba2Mixer2d(cfg.width, **mamba_kwargs)
    if letter == "T":
        return TransMambaMixer2d(cfg.width, mode=trans_mode, split=cfg.trans_split, **mamba_kwargs)
    if letter == "F":
        return SwiGLU(cfg.width, cfg.ffn_hidden)
    return MoEFFN(cfg.width, cfg.moe)


class SubLayer(nn.Module):
    """Pre-norm residual wrapper: ``x + layer(RMSNorm(x))``. x: (B, L, D)."""

    def __init__(self, letter: str, layer: nn.Module, width: int, eps: float) -> None:
        super().__init__()
        self.letter = letter
        self.norm = nn.RMSNorm(width, eps=eps)
        self.layer = layer

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h = self.norm(x)
        return x + (self.layer(h, grid) if self.letter in MIXER_LETTERS else self.layer(h))


class Block(nn.Module):
    """A run of sub-layers from one pattern word, e.g. ``"AMF"``. x: (B, L, D) on an (H, W) grid -> (B, L, D)."""

    def __init__(self, letters: str, layers: list[nn.Module], cfg: BackboneConfig) -> None:
        super().__init__()
        self.letters = letters
        self.checkpointed = cfg.grad_checkpoint
        self.sublayers = nn.ModuleList(
            SubLayer(letter, layer, cfg.width, cfg.norm_eps) for letter, layer in zip(letters, layers)
        )

    def _run(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        for sub in self.sublayers:
            x = sub(x, grid)
        return x

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(self._run, x, grid, use_reentrant=False)
        return self._run(x, grid)


def build_blocks(cfg: BackboneConfig) -> nn.ModuleList:
    """All blocks of ``cfg.pattern`` x ``cfg.repeats`` with validated options."""
    if cfg.width < 1:
        raise ConfigError(f"width must be positive, got {cfg.width}")
    if cfg.pos_embed not in POS_EMBEDS:
        raise ConfigError(f"unknown pos_embed {cfg.pos_embed!r}; choose one of {', '.join(POS_EMBEDS)}")
    words = parse_pattern(cfg.pattern, cfg.repeats)
    letters = "".join(words)
    if cfg.moe is not None and "E" not in letters:
        raise ConfigError(
            f"moe settings were given but pattern {cfg.pattern!r} has no 'E' (MoE FFN) layer; use E for MoE"
        )
    n_trans = letters.count("T")
    modes = [cfg.trans_mode] * n_trans if isinstance(cfg.trans_mode, str) else list(cfg.trans_mode)
    if len(modes) != n_trans:
        raise ConfigError(
            f"trans_mode lists {len(modes)} modes but the pattern has {n_trans} T layers; give one per T"
        )
    mode_iter = iter(modes)
    blocks = []
    for word in words:
        layers = [build_layer(letter, cfg, next(mode_iter) if letter == "T" else "ssd") for letter in word]
        blocks.append(Block(word, layers, cfg))
    return nn.ModuleList(blocks)

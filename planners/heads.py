"""Candidate generators: ``propose(state, forecast_or_action) -> (N, K, C, H, W)`` candidate next states.

Both generators work on normalised fields (N, C, H, W), latitude ascending along H, and pad every
convolution by the grid's :class:`~earthcast.models.geometry.Halo` (circular longitude and the vector-aware
pole fold on a global grid), so candidates have no seam at the date line or the poles. Both quantise a
latent grid 4× coarser than the fields with a :class:`~earthcast.planners.codebook.TopKCodebook` and decode
each of the K nearest codes.

- :class:`BeamVQHead` (BeamVQ): encoder(forecast, state) → top-K codes → translator → decoder → an increment
  added to the base forecast. With ``include_base`` the base forecast itself is candidate 0, and the codes of
  rank 1…K−1 give the others, so a planner can only move away from the base model when its reward prefers it.
- :class:`ConditionalWorldModel` (SFP's generative world model): encoder(action) → top-K codes → a decoder
  conditioned on the current state → K imagined next states. The action is the forecaster's output; in
  stage 1 the truth stands in for it (reconstruction).

The decoders' last convolution starts at zero, so an untrained head proposes the base forecast (BeamVQ) or
persistence (world model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from earthcast.errors import ConfigError
from earthcast.models.geometry import Downsample, Halo, SphereConv2d, SphereResBlock, Upsample
from earthcast.planners.codebook import CodebookOutput, TopKCodebook


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of a candidate generator.

    Attributes:
        width: convolution channels at every level.
        dim: code dimension D.
        num_codes: codebook size L.
        k: candidates proposed per sample (K).
        include_base: BeamVQ only: candidate 0 is the base forecast itself.
        ema: EMA codebook (else trained by the codebook loss).
        commitment: commitment weight (0.25).
        dead_after: training steps without use after which a code restarts from a recent encoder output.
    """

    width: int = 32
    dim: int = 64
    num_codes: int = 1024
    k: int = 10
    include_base: bool = True
    ema: bool = True
    commitment: float = 0.25
    dead_after: int = 20

    def __post_init__(self) -> None:
        if min(self.width, self.dim, self.num_codes, self.k) < 1:
            raise ConfigError(f"planner head sizes must be positive, got {self}")

    def codebook(self) -> TopKCodebook:
        """A codebook of these sizes."""
        return TopKCodebook(
            self.num_codes,
            self.dim,
            self.k,
            ema=self.ema,
            commitment=self.commitment,
            dead_after=self.dead_after,
        )


@dataclass
class Proposal:
    """Candidates (N, K, C, H, W) and the codebook output they were decoded from."""

    candidates: torch.Tensor
    codes: CodebookOutput


def _signs(channels: int, vector_channels: Sequence[int], repeat: int) -> list[float]:
    sign = [1.0] * channels
    for c in vector_channels:
        sign[c] = -1.0
    return sign * repeat


class _Encoder(nn.Module):
    """(N, C_in, H, W) → latent (N, dim, ⌈H/4⌉, ⌈W/4⌉) and full-resolution features (N, width, H, W)."""

    def __init__(self, in_channels: int, width: int, dim: int, halo: Halo, sign: list[float]) -> None:
        super().__init__()
        coarse = halo.coarse()
        self.stem = SphereConv2d(in_channels, width, 3, halo=halo, vector_sign=sign if halo.folds else None)
        self.full = SphereResBlock(width, width, halo=halo)
        self.down = nn.Sequential(
            Downsample(width, width, halo=halo),
            SphereResBlock(width, width, halo=coarse),
            Downsample(width, width, halo=coarse),
            SphereResBlock(width, width, halo=coarse),
        )
        self.to_code = nn.Conv2d(width, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.full(torch.nn.functional.gelu(self.stem(x)))
        return self.to_code(self.down(full)), full


class _Decoder(nn.Module):
    """Codes (M, dim, h, w) plus full-resolution features (M, width, H, W) → an increment (M, C, H, W)."""

    def __init__(self, dim: int, width: int, channels: int, halo: Halo) -> None:
        super().__init__()
        coarse = halo.coarse()
        self.translate = nn.Sequential(
            SphereResBlock(dim, width, halo=coarse), SphereResBlock(width, width, halo=coarse)
        )
        self.up1 = Upsample(width, width)
        self.mid = SphereResBlock(width, width, halo=coarse)
        self.up2 = Upsample(width, width)
        self.fuse = SphereResBlock(2 * width, width, halo=halo)
        self.out = SphereConv2d(width, channels, 3, halo=halo)
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)

    def forward(self, codes: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h, w = skip.shape[-2:]
        x = self.translate(codes)
        x = self.mid(self.up1(x, ((h + 1) // 2, (w + 1) // 2)))
        x = self.up2(x, (h, w))
        return self.out(self.fuse(torch.cat([x, skip], dim=1)))


def _decode_all(decoder: _Decoder, codes: CodebookOutput, skip: torch.Tensor, ranks: slice) -> torch.Tensor:
    """Decode the codes of the given ranks for every sample: (N, K', C, H, W)."""
    q = codes.quantized[:, ranks]  # (N, K', D, h, w)
    n, k = q.shape[:2]
    skip = skip[:, None].expand(n, k, *skip.shape[1:]).flatten(0, 1)
    return decoder(q.flatten(0, 1), skip).unflatten(0, (n, k))


class BeamVQHead(nn.Module):
    """BeamVQ's top-K VQ head on a base forecaster's output.

    Args:
        channels: state channels C.
        geometry: grid geometry kind (decides the padding).
        vector_channels: indices of u/v channels (flipped across a pole fold).
        config: sizes (:class:`HeadConfig`).
    """

    def __init__(
        self,
        channels: int,
        geometry: str,
        vector_channels: Sequence[int] = (),
        config: HeadConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg = config or HeadConfig()
        halo = Halo.for_geometry(geometry)
        self.encoder = _Encoder(2 * channels, cfg.width, cfg.dim, halo, _signs(channels, vector_channels, 2))
        self.codebook = cfg.codebook()
        self.decoder = _Decoder(cfg.dim, cfg.width, channels, halo)

    def codes_needed(self, k: int) -> int:
        """Codes decoded for ``k`` candidates (one fewer when the base forecast is candidate 0)."""
        return k - 1 if self.config.include_base else k

    def forward(self, state: torch.Tensor, forecast: torch.Tensor, k: int | None = None) -> Proposal:
        """Candidates (N, K, C, H, W) from the last input state and the base forecast, both (N, C, H, W)."""
        k = self.config.k if k is None else k
        n_codes = self.codes_needed(k)
        z, skip = self.encoder(torch.cat([forecast, state], dim=1))
        codes = self.codebook(z, max(n_codes, 1))
        parts = [forecast[:, None]] if self.config.include_base else []
        if n_codes > 0:
            parts.append(forecast[:, None] + _decode_all(self.decoder, codes, skip, slice(0, n_codes)))
        return Proposal(torch.cat(parts, dim=1), codes)

    def main(self, state: torch.Tensor, forecast: torch.Tensor) -> torch.Tensor:
        """The head's own forecast (N, C, H, W): the base forecast plus the decoded nearest code."""
        z, skip = self.encoder(torch.cat([forecast, state], dim=1))
        codes = self.codebook(z, 1)
        return forecast + _decode_all(self.decoder, codes, skip, slice(0, 1))[:, 0]

    def propose(self, state: torch.Tensor, forecast: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The candidate-generator contract: (N, K, C, H, W)."""
        return self.forward(state, forecast, k).candidates


class ConditionalWorldModel(nn.Module):
    """SFP's generative world model: the action's top-K codes, decoded conditioned on the current state.

    Args:
        channels: state channels C (the action is a state-shaped forecast, C channels too).
        geometry, vector_channels, config: as :class:`BeamVQHead` (``include_base`` is not used).
    """

    def __init__(
        self,
        channels: int,
        geometry: str,
        vector_channels: Sequence[int] = (),
        config: HeadConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg = config or HeadConfig()
        halo = Halo.for_geometry(geometry)
        sign = _signs(channels, vector_channels, 1)
        self.action_encoder = _Encoder(channels, cfg.width, cfg.dim, halo, sign)
        self.state_encoder = _Encoder(channels, cfg.width, cfg.dim, halo, sign)
        self.codebook = cfg.codebook()
        self.condition = nn.Conv2d(2 * cfg.dim, cfg.dim, 1)
        self.decoder = _Decoder(cfg.dim, cfg.width, channels, halo)

    def forward(self, state: torch.Tensor, action: torch.Tensor, k: int | None = None) -> Proposal:
        """K imagined next states (N, K, C, H, W) from the state and the action, both (N, C, H, W)."""
        k = self.config.k if k is None else k
        z, _ = self.action_encoder(action)
        cond, skip = self.state_encoder(state)
        codes = self.codebook(z, k)
        q = codes.quantized  # (N, K, D, h, w): condition every code on the state's coarse features
        fused = self.condition(torch.cat([q, cond[:, None].expand_as(q)], dim=2).flatten(0, 1))
        n = q.shape[0]
        skip = skip[:, None].expand(n, k, *skip.shape[1:]).flatten(0, 1)
        futures = state[:, None] + self.decoder(fused, skip).unflatten(0, (n, k))
        return Proposal(futures, codes)

    def propose(self, state: torch.Tensor, action: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The candidate-generator contract: (N, K, C, H, W)."""
        return self.forward(state, action, k).candidates

"""Experimental TransMamba-style mixer: one shared projection read as Q/K/V (attention) or C/B/x (SSM).

TransMamba (arXiv 2503.24067) switches a layer from attention to SSM at a "TransPoint" and converts the
attention prefix into the SSM state. Here the switch is per layer (``mode``):

- ``"attn"``: non-causal softmax attention with Q = C, K = B (per group, shared by the group's heads), V = x.
- ``"ssd"``: the non-causal multi-direction SSD of :class:`Mamba2Mixer2d`.
- ``"split"``: tokens are ordered along the first direction of ``scan`` (raster order for ``"bidirectional"`` and
  ``"cross"``, the Hilbert curve for ``"hilbert"``). The first ``round(split * L)`` tokens (the prefix) use
  attention among themselves. The suffix runs a forward SSD whose ``initial_states`` is the prefix's
  decay-weighted chunk state (``ssd_scan(prefix, return_final_states=True)``), so the suffix sees the prefix
  losslessly through the state, plus an unseeded reverse SSD over the suffix; the two are merged as in
  ``merge``.

Parameters used only by the SSM path (A_log, dt_bias, the dt slice of ``in_proj``) get no gradient in ``"attn"``
mode; that is expected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from earthcast.errors import ConfigError

from .mamba2d import Mamba2Mixer2d
from .scan_orders import scan_inverse_permutations, scan_permutations

TRANS_MODES: tuple[str, ...] = ("attn", "ssd", "split")


class TransMambaMixer2d(Mamba2Mixer2d):
    """Shared-projection attention/SSD mixer: (B, L, D) tokens on an (H, W) grid -> (B, L, D).

    Takes every argument of :class:`Mamba2Mixer2d`, plus ``mode`` (``"attn"``, ``"ssd"`` or ``"split"``, may be
    changed on the instance at any time) and ``split`` (prefix fraction in (0, 1) for ``"split"``).
    """

    def __init__(self, width: int, *, mode: str = "ssd", split: float = 0.5, **mamba_kwargs: object) -> None:
        super().__init__(width, **mamba_kwargs)  # type: ignore[arg-type]
        if not 0.0 < split < 1.0:
            raise ConfigError(f"split must be a prefix fraction in (0, 1), got {split}")
        self.mode = mode
        self.split = split
        self._check_mode()

    def _check_mode(self) -> None:
        if self.mode not in TRANS_MODES:
            raise ConfigError(
                f"unknown TransMamba mode {self.mode!r}; choose one of {', '.join(TRANS_MODES)}"
            )

    def attend(self, xs: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Non-causal attention with Q = C, K = B, V = xs. xs: (B, L, h, p); B, C: (B, L, g, n) -> (B, L, h, p)."""
        per_group = self.nheads // self.ngroups
        q = C.transpose(1, 2).repeat_interleave(per_group, dim=1)  # (B, h, L, n)
        k = B.transpose(1, 2).repeat_interleave(per_group, dim=1)
        y = F.scaled_dot_product_attention(q, k, xs.transpose(1, 2), scale=1.0 / math.sqrt(self.d_state))
        return y.transpose(1, 2)

    def split_scan(
        self, xs: torch.Tensor, dt: torch.Tensor, B: torch.Tensor, C: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Attention on the prefix, prefix-seeded forward SSD + reverse SSD on the suffix. Shapes as
        :meth:`scan_directions`; returns (B, L, h, p) in raster order, without the D skip."""
        b, length = xs.shape[:2]
        if length < 2:
            raise ConfigError(f"split mode needs at least 2 tokens, got {length}; use mode='attn' or 'ssd'")
        order = scan_permutations(self.scan, grid, xs.device)[:1]  # (1, L)
        xs, dt, B, C = (t[:, order[0]] for t in (xs, dt, B, C))
        prefix = min(max(round(self.split * length), 1), length - 1)
        y_prefix = self.attend(xs[:, :prefix], B[:, :prefix], C[:, :prefix])
        _, state = self.ssd(
            xs[:, :prefix], dt[:, :prefix], B[:, :prefix], C[:, :prefix], return_final_states=True
        )
        # Fold [forward seeded by the prefix state, reverse unseeded] into the batch: one kernel call.
        both = [torch.cat([t[:, prefix:], t[:, prefix:].flip(1)]) for t in (xs, dt, B, C)]
        y = self.ssd(*both, initial_states=torch.cat([state, torch.zeros_like(state)]))
        y_suffix = y[:b] + y[b:].flip(1)
        if self.merge == "mean":
            y_suffix = 0.5 * y_suffix
        y = torch.cat([y_prefix, y_suffix], dim=1)
        return y[:, scan_inverse_permutations(self.scan, grid, xs.device)[0]]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: (B, L, D) tokens in raster order of an (H, W) = ``grid`` layout. Returns (B, L, D)."""
        self._check_mode()
        z, xs, B, C, dt = self.project(x, grid)
        if self.mode == "attn":
            y = self.attend(xs, B, C)
        elif self.mode == "ssd":
            y = self.scan_directions(xs, dt, B, C, grid)
        else:
            y = self.split_scan(xs, dt, B, C, grid)
        return self.finish(y, xs, z)

"""Non-causal grouped-query attention over a 2-D token grid, with optional 2-D rotary position embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.errors import ConfigError


def rope_2d_angles(
    grid: tuple[int, int], head_dim: int, theta: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Rotation angles of 2-D RoPE, shape (H*W, head_dim // 2), radians, tokens in raster order.

    The first half of each head's channels rotates with the row index, the second half with the column index;
    each half is split into ``head_dim // 4`` rotation pairs with frequencies ``theta ** (-k / (head_dim // 4))``.
    """
    if head_dim % 4:
        raise ConfigError(
            f"2-D RoPE needs head_dim divisible by 4 (two rotated halves of pairs), got {head_dim}"
        )
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    rows = torch.arange(grid[0], dtype=torch.float64, device=device)
    cols = torch.arange(grid[1], dtype=torch.float64, device=device)
    row_angles = (rows[:, None] * freqs)[:, None, :].expand(grid[0], grid[1], quarter)
    col_angles = (cols[:, None] * freqs)[None, :, :].expand(grid[0], grid[1], quarter)
    return torch.cat([row_angles, col_angles], dim=-1).reshape(grid[0] * grid[1], 2 * quarter)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (x[..., 2i], x[..., 2i+1]) by ``angles[..., i]``.

    x: (..., L, head_dim); angles: (L, head_dim // 2), broadcast over the leading dims. Computed in float32
    (float64 for float64 x). Returns x's shape and dtype."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    pairs = x.to(compute).unflatten(-1, (-1, 2))
    cos, sin = angles.cos().to(compute), angles.sin().to(compute)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class GQAttention2d(nn.Module):
    """Grouped-query, non-causal self-attention: (B, L, D) tokens on an (H, W) grid -> (B, L, D).

    ``heads`` query heads share ``kv_heads`` key/value heads (``heads % kv_heads == 0``), head size D / heads.
    Uses ``F.scaled_dot_product_attention`` (flash / cuDNN / memory-efficient kernels where available).

    Args:
        width: model width D, divisible by ``heads``.
        heads: query heads.
        kv_heads: key/value heads (``None`` = ``heads``, plain multi-head attention).
        rope: apply 2-D RoPE to queries and keys (needs head size divisible by 4). With ``False`` the caller
            supplies positions (e.g. a learned embedding added to the tokens).
        rope_theta: RoPE base.
        qkv_bias: bias on the q/k/v projections.
    """

    def __init__(
        self,
        width: int,
        *,
        heads: int = 8,
        kv_heads: int | None = None,
        rope: bool = True,
        rope_theta: float = 10000.0,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        if heads < 1 or width % heads:
            raise ConfigError(
                f"width={width} is not divisible by heads={heads}; choose heads dividing the width "
                f"(e.g. {[h for h in (1, 2, 4, 8, 16) if width % h == 0]})"
            )
        if kv_heads < 1 or heads % kv_heads:
            raise ConfigError(
                f"heads={heads} is not divisible by kv_heads={kv_heads}; choose kv_heads dividing heads"
            )
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, width // heads
        if rope and self.head_dim % 4:
            raise ConfigError(
                f"2-D RoPE needs the head size width/heads = {self.head_dim} divisible by 4; change width/heads "
                f"or use pos_embed='learned'"
            )
        self.rope, self.rope_theta = rope, rope_theta
        self.q_proj = nn.Linear(width, heads * self.head_dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(width, 2 * kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(heads * self.head_dim, width, bias=False)
        self._angles: dict[tuple[int, int, str], torch.Tensor] = {}

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Cached 2-D RoPE angles (H*W, head_dim // 2) for ``grid`` on ``device``."""
        key = (int(grid[0]), int(grid[1]), str(device))
        if key not in self._angles:
            self._angles[key] = rope_2d_angles(grid, self.head_dim, self.rope_theta, device)
        return self._angles[key]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: (B, L, D) tokens in raster order of an (H, W) = ``grid`` layout. Returns (B, L, D)."""
        b, length, _ = x.shape
        if grid[0] * grid[1] != length:
            raise ConfigError(
                f"grid {grid[0]}x{grid[1]} has {grid[0] * grid[1]} cells but the input has {length} tokens"
            )
        q = self.q_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv_proj(x).view(b, length, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rope:
            angles = self.angles(grid, x.device)
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv_heads != self.heads)
        return self.out_proj(y.transpose(1, 2).reshape(b, length, -1))

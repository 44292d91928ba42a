"""Hybrid Mamba2/attention backbones for 2-D fields (AMF/MF block patterns, non-causal SSD scans, GQA, MoE).

Main entry points: :class:`Backbone` (fields (B, C, H, W)), :class:`TokenBackbone` (tokens (B, L, D)),
:class:`BackboneConfig`, :class:`MoEConfig`, :func:`param_groups`, :func:`count_parameters`.
"""

from .attention import GQAttention2d, apply_rope, rope_2d_angles
from .backbone import Backbone, TokenBackbone
from .blocks import LAYER_LETTERS, BackboneConfig, Block, parse_pattern
from .ffn import MoEConfig, MoEFFN, Routing, SwiGLU
from .mamba2d import Mamba2Mixer2d
from .parameters import count_parameters, param_groups
from .scan_orders import (
    SCAN_ORDERS,
    hilbert_order,
    inverse_permutations,
    scan_inverse_permutations,
    scan_permutations,
)
from .transmamba import TransMambaMixer2d

__all__ = [
    "LAYER_LETTERS",
    "SCAN_ORDERS",
    "Backbone",
    "BackboneConfig",
    "Block",
    "GQAttention2d",
    "Mamba2Mixer2d",
    "MoEConfig",
    "MoEFFN",
    "Routing",
    "SwiGLU",
    "TokenBackbone",
    "TransMambaMixer2d",
    "apply_rope",
    "count_parameters",
    "hilbert_order",
    "inverse_permutations",
    "param_groups",
    "parse_pattern",
    "rope_2d_angles",
    "scan_inverse_permutations",
    "scan_permutations",
]

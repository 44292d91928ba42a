"""Lightning strategies with earthcast's defaults for sharded training (``configs/scale/fsdp.yaml``).

:class:`EarthcastFSDPStrategy` is Lightning's :class:`~lightning.pytorch.strategies.FSDPStrategy` (PyTorch
``FullyShardedDataParallel``) with two defaults:

- every latent-core block (:class:`earthcast.models.backbone.blocks.Block`, one ``AMF``/``MF`` word of the
  pattern) is its own FSDP unit and is recomputed in the backward pass (activation checkpointing), unless
  ``auto_wrap_policy`` / ``activation_checkpointing_policy`` say otherwise;
- with ``trainer.precision: bf16-mixed`` the weights stay in float32 and the forward runs under bf16
  autocast, exactly as under DDP. Lightning's plain FSDP ``bf16-mixed`` would also cast the weights, the
  gradient reduction and every buffer to bf16: the normaliser's means and standard deviations (geopotential
  ~5e4 m²/s²) would lose about 8 bits, and so would the residual ``x_t + Δx``. Here gradients are reduced in
  float32 and buffers are never cast. The cost is float32 all-gathers (twice the bytes of bf16 ones).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from earthcast.models.backbone.blocks import Block

BLOCK_CLASSES: frozenset[type[nn.Module]] = frozenset({Block})
"""The module classes wrapped (and checkpointed) by default: one FSDP unit per latent-core block."""


class EarthcastFSDPStrategy(FSDPStrategy):
    """FSDP over the latent-core blocks, with float32 weights under bf16 autocast (module docstring).

    Args:
        auto_wrap_policy: module classes that become FSDP units (default: :data:`BLOCK_CLASSES`); in YAML a
            list of import paths.
        activation_checkpointing_policy: module classes recomputed in the backward pass (default:
            :data:`BLOCK_CLASSES`); an empty list turns checkpointing off.
        **kwargs: any other :class:`~lightning.pytorch.strategies.FSDPStrategy` argument
            (``sharding_strategy``, ``state_dict_type``, ``cpu_offload``, ``mixed_precision``, …). An explicit
            ``mixed_precision`` replaces the float32-weights default.
    """

    def __init__(
        self,
        auto_wrap_policy: set[type[nn.Module]] | None = None,
        activation_checkpointing_policy: set[type[nn.Module]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            auto_wrap_policy=set(BLOCK_CLASSES) if auto_wrap_policy is None else auto_wrap_policy,
            activation_checkpointing_policy=(
                set(BLOCK_CLASSES)
                if activation_checkpointing_policy is None
                else activation_checkpointing_policy
            ),
            **kwargs,
        )

    @property
    def mixed_precision_config(self) -> Any:
        """None (float32 weights, gradient reduction and buffers; autocast does the bf16 compute) unless
        ``mixed_precision`` was given."""
        return self.mixed_precision


__all__ = ["BLOCK_CLASSES", "EarthcastFSDPStrategy"]

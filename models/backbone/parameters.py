"""Parameter bookkeeping: weight-decay groups and counts."""

from __future__ import annotations

from typing import Any

from torch import nn


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for parameters that must not be decayed: those flagged ``_no_weight_decay`` (A_log, D, dt_bias,
    learned position tables) and every tensor with fewer than 2 dims (biases, norm weights)."""
    return getattr(param, "_no_weight_decay", False) or param.dim() < 2


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``[{"params": decayed, "weight_decay": weight_decay},
    {"params": not decayed, "weight_decay": 0.0}]`` (empty groups omitted; frozen parameters skipped).

    Usage: ``torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)``."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (keep if no_weight_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

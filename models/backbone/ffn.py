"""Feed-forward sub-layers: SwiGLU and a top-k mixture of SwiGLU experts with a shared expert."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.errors import ConfigError


def default_ffn_hidden(width: int, multiple_of: int = 8) -> int:
    """SwiGLU hidden size with the parameter count of a 4x GELU MLP: 8/3 * width, rounded up to ``multiple_of``."""
    return multiple_of * math.ceil(8 * width / 3 / multiple_of)


class SwiGLU(nn.Module):
    """SwiGLU MLP: ``w_out(silu(x W_gate) * (x W_up))``. x: (..., D) -> (..., D); hidden size ``hidden``."""

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        self.hidden = default_ffn_hidden(width) if hidden is None else hidden
        if self.hidden < 1:
            raise ConfigError(f"FFN hidden size must be positive, got {self.hidden}")
        self.w_in = nn.Linear(width, 2 * self.hidden, bias=False)
        self.w_out = nn.Linear(self.hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


@dataclass
class MoEConfig:
    """Mixture-of-experts FFN settings.

    Attributes:
        num_experts: routed experts E.
        top_k: experts per token.
        capacity_factor: each expert takes at most ``ceil(capacity_factor * T * top_k / E)`` of the T tokens in a
            forward pass; overflow assignments are dropped (the token still gets the shared expert and residual).
            ``None`` = no capacity limit.
        expert_hidden: hidden size of every routed expert, or one size per expert (heterogeneous, HMoE-style);
            ``None`` = the dense default hidden size divided by ``top_k``.
        shared_expert: add one always-on shared expert.
        shared_hidden: its hidden size (``None`` = the dense default).
        normalize_topk: renormalise the k selected gate probabilities to sum to 1.
        aux_loss_coef: weight of the load-balancing loss in :meth:`Backbone.aux_loss`.
    """

    num_experts: int = 8
    top_k: int = 2
    capacity_factor: float | None = 1.25
    expert_hidden: int | list[int] | None = None
    shared_expert: bool = True
    shared_hidden: int | None = None
    normalize_topk: bool = True
    aux_loss_coef: float = 0.01


class Routing(NamedTuple):
    """Result of :meth:`MoEFFN.route` for T tokens.

    experts: (T, k) chosen expert per token and slot; weights: (T, k) gate weights; keep: (T, k) bool, False for
    assignments dropped by the capacity limit; probs: (T, E) router softmax; aux_loss: scalar Switch-style
    load-balancing loss ``E * sum_e f_e * P_e`` (f_e: fraction of the T*k assignments that chose e before
    dropping, P_e: mean router probability of e). It is 1 for perfectly uniform routing and up to E when one
    expert takes everything."""

    experts: torch.Tensor
    weights: torch.Tensor
    keep: torch.Tensor
    probs: torch.Tensor
    aux_loss: torch.Tensor


class MoEFFN(nn.Module):
    """Top-k routed SwiGLU experts plus an optional shared expert. x: (..., D) -> (..., D).

    After each forward, ``self.aux_loss`` holds the load-balancing loss of that pass (scalar tensor) and
    ``self.last_routing`` the :class:`Routing`. Capacity priority: all first choices before second choices,
    earlier tokens first within a slot (GShard order)."""

    def __init__(self, width: int, config: MoEConfig | None = None) -> None:
        super().__init__()
        cfg = MoEConfig() if config is None else config
        if cfg.num_experts < 1 or not 1 <= cfg.top_k <= cfg.num_experts:
            raise ConfigError(
                f"need 1 <= top_k <= num_experts, got top_k={cfg.top_k}, num_experts={cfg.num_experts}"
            )
        if cfg.capacity_factor is not None and cfg.capacity_factor <= 0:
            raise ConfigError(f"capacity_factor must be positive or None, got {cfg.capacity_factor}")
        hidden = cfg.expert_hidden
        if hidden is None:
            hidden = max(8, default_ffn_hidden(width) // cfg.top_k)
        widths = [hidden] * cfg.num_experts if isinstance(hidden, int) else list(hidden)
        if len(widths) != cfg.num_experts:
            raise ConfigError(
                f"expert_hidden lists {len(widths)} widths but num_experts={cfg.num_experts}; give one per expert"
            )
        self.config = cfg
        self.router = nn.Linear(width, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(width, h) for h in widths)
        self.shared = SwiGLU(width, cfg.shared_hidden) if cfg.shared_expert else None
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.last_routing: Routing | None = None

    def capacity(self, num_tokens: int) -> int:
        """Maximum assignments per expert for ``num_tokens`` tokens (``num_tokens * top_k`` if unlimited)."""
        cfg = self.config
        if cfg.capacity_factor is None:
            return num_tokens * cfg.top_k
        return math.ceil(cfg.capacity_factor * num_tokens * cfg.top_k / cfg.num_experts)

    def route(self, tokens: torch.Tensor) -> Routing:
        """Route T tokens (T, D): top-k choice, capacity mask and balancing loss."""
        cfg = self.config
        logits = self.router(tokens)
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)  # (T, E), >= fp32
        weights, experts = probs.topk(cfg.top_k, dim=-1)
        if cfg.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        onehot = F.one_hot(experts, cfg.num_experts)  # (T, k, E)
        # Position of each assignment in its expert's queue, slot-major then token order.
        queue = onehot.transpose(0, 1).reshape(-1, cfg.num_experts).cumsum(0) - 1
        position = (queue.view(cfg.top_k, -1, cfg.num_experts).transpose(0, 1) * onehot).sum(-1)  # (T, k)
        keep = position < self.capacity(tokens.shape[0])
        fraction = onehot.float().sum(dim=(0, 1)) / experts.numel()  # f_e
        aux_loss = cfg.num_experts * (fraction * probs.mean(dim=0)).sum()
        return Routing(experts, weights, keep, probs, aux_loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        routing = self.route(tokens)
        self.aux_loss, self.last_routing = routing.aux_loss, routing
        out = self.shared(tokens) if self.shared is not None else torch.zeros_like(tokens)
        weights = (routing.weights * routing.keep).to(tokens.dtype)
        for e, expert in enumerate(self.experts):
            # An expert with no tokens still runs on an empty batch, so it gets a (zero) gradient (DDP-safe).
            token_idx, slot = torch.nonzero((routing.experts == e) & routing.keep, as_tuple=True)
            contribution = expert(tokens[token_idx]) * weights[token_idx, slot, None]
            out = out.index_add(0, token_idx, contribution)
        return out.reshape(x.shape)

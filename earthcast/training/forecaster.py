"""Autoregressive forecaster: unrolls a one-step predictor K steps, feeding it its own output.

Memory options for long training unrolls:

- ``checkpoint_steps``: each step runs under ``torch.utils.checkpoint`` (non-reentrant), so only the step's
  inputs are kept and the step's activations are recomputed in the backward pass (the memory of a K-step
  unroll then grows like K small states instead of K full activation sets).
- ``offload``: tensors saved for the backward pass are moved to host memory
  (``torch.autograd.graph.save_on_cpu``; pinned when CUDA is available) and brought back when needed. On a
  CPU-only run they already live in host memory, so offload saves nothing there.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from earthcast.errors import ConfigError


def valid_times(init: torch.Tensor, steps: int, step_ns: int) -> torch.Tensor:
    """(B, K) int64 ns valid times of leads 1…K from the init time (B,) (the last input step)."""
    leads = torch.arange(1, steps + 1, device=init.device, dtype=torch.int64) * int(step_ns)
    return init[:, None].to(torch.int64) + leads[None]


def _aux(model: nn.Module) -> torch.Tensor | None:
    fn = getattr(model, "aux_loss", None)
    return fn() if fn is not None else None


def rollout(
    model: nn.Module,
    state: torch.Tensor,
    static: torch.Tensor | None,
    forcings: torch.Tensor | None,
    times: torch.Tensor | None,
    steps: int,
    *,
    checkpoint_steps: bool = False,
    offload: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unroll ``model`` for ``steps`` steps.

    Args:
        model: one-step predictor ``model(state (B, N, C, H, W), static, forcings (B, N+1, F, H, W), time (B,))``.
        state: (B, N, C, H, W) normalised input states.
        static: (B, S, H, W) or None.
        forcings: (B, N + K', F, H, W) with K' >= steps (input times then targets), or None.
        times: (B, K') int64 ns valid times of the targets, or None.
        steps: K.

    Returns:
        predictions (B, K, C, H, W) and the summed auxiliary (MoE) loss of the K steps (a scalar).
    """
    n_input = state.shape[1]
    if forcings is not None and forcings.shape[1] < n_input + steps:
        raise ConfigError(
            f"a {steps}-step rollout from {n_input} input steps needs {n_input + steps} forcing steps, "
            f"got {forcings.shape[1]}; load windows with n_target >= {steps}"
        )
    use_checkpoint = (
        checkpoint_steps and torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
    )
    context = (
        torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())
        if offload
        else contextlib.nullcontext()
    )
    preds: list[torch.Tensor] = []
    aux = state.new_zeros(())
    with context:
        for k in range(steps):
            step_forcings = None if forcings is None else forcings[:, k : k + n_input + 1]
            step_time = None if times is None else times[:, k]
            if use_checkpoint:
                nxt = checkpoint(model, state, static, step_forcings, step_time, use_reentrant=False)
            else:
                nxt = model(state, static, step_forcings, step_time)
            step_aux = _aux(model)
            if step_aux is not None:
                aux = aux + step_aux.to(aux.device, aux.dtype)
            preds.append(nxt)
            state = torch.cat([state[:, 1:], nxt[:, None].to(state.dtype)], dim=1)
    return torch.stack(preds, dim=1), aux


def advance_batch(
    batch: dict[str, torch.Tensor], lead_in: torch.Tensor, time: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The batch moved on by the K' = ``lead_in.shape[1]`` steps the model predicted, for push-forward
    training: its input window ends with those predictions (B, K', C, H, W), and its targets, forcings
    (B, N + K, F, H, W) and init time (``time``, (B,) int64 ns: the valid time of the last prediction) move on
    by K' steps, so the next step starts from the model's own state."""
    k, n = lead_in.shape[1], batch["inputs"].shape[1]
    window = torch.cat([batch["inputs"], lead_in.to(batch["inputs"].dtype)], dim=1)[:, -n:]
    forcings = batch["forcings"]
    return {
        **batch,
        "inputs": window,
        "targets": batch["targets"][:, k:],
        "forcings": forcings[:, k:] if forcings is not None else None,
        "time": time,
    }


class Forecaster(nn.Module):
    """A one-step predictor turned into a K-step autoregressive forecaster (see :func:`rollout`).

    forward(state, static, forcings, times, steps) -> (predictions (B, K, C, H, W), aux loss).
    """

    def __init__(self, model: nn.Module, *, checkpoint_steps: bool = False, offload: bool = False) -> None:
        super().__init__()
        self.model = model
        self.checkpoint_steps, self.offload = checkpoint_steps, offload

    def forward(
        self,
        state: torch.Tensor,
        static: torch.Tensor | None,
        forcings: torch.Tensor | None,
        times: torch.Tensor | None,
        steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return rollout(
            self.model,
            state,
            static,
            forcings,
            times,
            steps,
            checkpoint_steps=self.checkpoint_steps,
            offload=self.offload,
        )

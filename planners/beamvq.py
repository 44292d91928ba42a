"""BeamVQ (arXiv 2502.18925): a top-K VQ head on a base forecaster, beam search, self-ensemble, self-training.

Training (``earthcast fit --config <forecaster.yaml> --config configs/planners/beamvq.yaml``): the base
forecaster (frozen by default, loaded from ``base_checkpoint``) predicts the next state; the
:class:`~earthcast.planners.heads.BeamVQHead` decodes its K nearest codes into candidates. Loss: the main
forecast's MSE (the nearest code) + ``candidate_weight`` × Σ_k the candidates' MSEs + the codebook's
commitment term (0.25), all area-weighted on normalised fields, plus the learned critic's regression on the
candidates' truth reward. With ``self_training``, the best candidate of a training batch under the truth
reward becomes a pseudo-label (metric filter) and later batches mix those in.

Without search, the module forecasts with the head's nearest code (:meth:`BeamVQModule.forecast`); with
``earthcast rollout --planner`` it plans with a critic (:mod:`earthcast.planners.inference`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from earthcast.errors import ConfigError
from earthcast.planners.heads import BeamVQHead
from earthcast.planners.module import PlannerModule

CANDIDATE_LOSSES: tuple[str, ...] = ("sum", "min")


class BeamVQModule(PlannerModule):
    """BeamVQ on any earthcast forecaster.

    Args:
        candidate_weight: weight of the candidate term in the loss (1 in the paper's code).
        candidate_loss: ``sum`` (Σ_k candidate MSEs, the paper's code) or ``min`` (winner takes all: only each
            sample's best candidate learns, which keeps the candidates apart).
        **kwargs: :class:`~earthcast.planners.module.PlannerModule` and ForecastModule arguments.
    """

    def __init__(self, candidate_weight: float = 1.0, candidate_loss: str = "sum", **kwargs: Any) -> None:
        if candidate_loss not in CANDIDATE_LOSSES:
            raise ConfigError(f"unknown candidate_loss {candidate_loss!r}; use one of {CANDIDATE_LOSSES}")
        super().__init__(**kwargs)
        cfg = self.head_config
        if cfg.include_base and cfg.k < 2:
            raise ConfigError(
                f"head.k = {cfg.k} with include_base leaves no decoded candidate to train: use k >= 2"
            )
        self.head = BeamVQHead(
            len(self.manifest.state), self.manifest.grid_geometry.kind, self.manifest.vector_channels(), cfg
        )

    def propose(
        self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor, k: int | None = None
    ) -> Tensor:
        return self.head.propose(window[:, -1], self.base_forecast(window, static, forcings, time), k)

    def forecast(self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        return self.head.main(window[:, -1], self.base_forecast(window, static, forcings, time))

    def optimized_module(self) -> nn.Module:
        parts = [self.head] + ([self.critic] if self.critic is not None else [])
        return nn.ModuleList(parts + ([] if self.hparams.freeze_base else [self.model]))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = self.training_batch(batch)
        window, static, forcings, time = self.step_inputs(batch)
        base = self.base_forecast(window, static, forcings, time)
        proposal = self.head(window[:, -1], base)
        decoded = proposal.candidates[:, 1:] if self.head.config.include_base else proposal.candidates
        target = batch["targets"][:, 0]
        if self.hparams.candidate_loss == "sum":
            cand = torch.stack(
                [self.sample_loss(decoded[:, k], target, batch) for k in range(decoded.shape[1])]
            )
        else:  # winner takes all, per sample
            errors = (decoded - target[:, None]).square().mean((-3, -2, -1))  # (B, K)
            best = decoded[torch.arange(decoded.shape[0]), errors.argmin(dim=1)]
            cand = self.sample_loss(best, target, batch)[None]
        losses = {
            "main": self.sample_loss(decoded[:, 0], target, batch),
            "candidates": self.hparams.candidate_weight * cand.sum(),
            "codebook": proposal.codes.loss,
            "critic": self.critic_loss(batch, proposal.candidates, self.truth_reward()),
        }
        self.log("train/perplexity", proposal.codes.perplexity, batch_size=window.shape[0])
        self.log("train/dead_codes", float(proposal.codes.dead_codes), batch_size=window.shape[0])
        return self.log_train(losses, batch)

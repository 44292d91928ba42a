"""SFP (arXiv 2510.04020): a generative world model that imagines K futures of a forecaster's action, a
non-differentiable reward that picks the pseudo-label, and the forecaster updated through a projection head.

Two stages, both ``earthcast fit`` runs stacked on the forecaster's config:

1. ``stage: world_model`` (``configs/planners/sfp_world_model.yaml``): train the
   :class:`~earthcast.planners.heads.ConditionalWorldModel` to reconstruct the next state from its codes,
   conditioned on the current state (the truth stands in for the action). Loss: reconstruction of the nearest
   code + ``vq_weight`` × the codebook loss (commitment included).
2. ``stage: agent`` (``configs/planners/sfp.yaml``): load the world model from ``world_model_checkpoint`` and
   freeze it. The forecaster's output is the action a; the world model turns it into K futures; the truth
   reward (training split only) picks the best one as the pseudo-label; the forecaster and the projection P
   (a 1×1 convolution added to a, starting at zero) are trained on MSE(a + P(a), pseudo-label).

The agent forecasts a + P(a); ``earthcast rollout --planner`` plans over the world model's futures with a
critic instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.errors import CheckpointError, ConfigError
from earthcast.planners.heads import ConditionalWorldModel
from earthcast.planners.module import PlannerModule
from earthcast.training.checkpoints import read_checkpoint

STAGES: tuple[str, ...] = ("world_model", "agent")


class SFPModule(PlannerModule):
    """SFP on any earthcast forecaster.

    Args:
        stage: ``world_model`` (stage 1) or ``agent`` (stage 2).
        world_model_checkpoint: stage 2: the stage-1 checkpoint (same channels, grid, step and statistics).
        vq_weight: weight of the codebook loss in stage 1 (0.1).
        **kwargs: :class:`~earthcast.planners.module.PlannerModule` and ForecastModule arguments.
    """

    def __init__(
        self,
        stage: str = "agent",
        world_model_checkpoint: str | None = None,
        vq_weight: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown SFP stage {stage!r}; use one of {STAGES}")
        super().__init__(**kwargs)
        c = len(self.manifest.state)
        cfg = self.head_config
        self.world_model = ConditionalWorldModel(
            c, self.manifest.grid_geometry.kind, self.manifest.vector_channels(), cfg
        )
        self.projection = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        if stage == "agent":
            self.world_model.requires_grad_(False)
        self.world_model_info: dict[str, Any] = {}

    @property
    def needs_base(self) -> bool:
        return self.hparams.stage == "agent"

    def action(self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        """The forecaster's output a (M, C, H, W): the action the world model imagines futures of."""
        return self.base_forecast(window, static, forcings, time)

    def propose(
        self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor, k: int | None = None
    ) -> Tensor:
        return self.world_model.propose(window[:, -1], self.action(window, static, forcings, time), k)

    def forecast(self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        a = self.action(window, static, forcings, time)
        return a + self.projection(a)

    def optimized_module(self) -> nn.Module:
        if self.hparams.stage == "world_model":
            return self.world_model
        parts = [self.projection] + ([self.critic] if self.critic is not None else [])
        return nn.ModuleList(parts + ([] if self.hparams.freeze_base else [self.model]))

    def setup(self, stage: str) -> None:
        """Stage 2 loads (and checks) the world model first, then the base forecaster (:meth:`PlannerModule.setup`)."""
        path = self.hparams.world_model_checkpoint
        if stage == "fit" and self.hparams.stage == "agent" and not self.world_model_info:
            if not path:
                raise ConfigError(
                    "SFP stage 2 (agent) needs world_model_checkpoint: the checkpoint of "
                    "configs/planners/sfp_world_model.yaml"
                )
            self.load_world_model(path)
        super().setup(stage)

    def load_world_model(self, path: str) -> None:
        """Load stage 1's world model; its channels, grid, step and statistics must match this data."""
        saved = read_checkpoint(path)
        meta = saved["earthcast"]
        try:
            self.check_compatible(
                ChannelManifest.from_dict(meta["manifest"]), NormStats.from_dict(meta["stats"])
            )
        except CheckpointError as err:
            raise CheckpointError(f"world_model_checkpoint {path!r}: {err}") from None
        weights = {k[12:]: v for k, v in saved["state_dict"].items() if k.startswith("world_model.")}
        if not weights:
            raise CheckpointError(f"{path!r} holds no SFP world model (train stage world_model first)")
        try:
            self.world_model.load_state_dict(weights)
        except RuntimeError as err:
            raise CheckpointError(
                f"world_model_checkpoint {path!r} was trained with other head sizes: {str(err)[:300]}"
            ) from None
        self.world_model_info = {"path": str(path)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["earthcast"]["world_model"] = dict(self.world_model_info)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.world_model_info = dict(checkpoint["earthcast"].get("world_model", {}))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        window, static, forcings, time = self.step_inputs(batch)
        target = batch["targets"][:, 0]
        if self.hparams.stage == "world_model":
            proposal = self.world_model(window[:, -1], target)
            losses = {
                "reconstruction": self.sample_loss(proposal.candidates[:, 0], target, batch),
                "codebook": self.hparams.vq_weight * proposal.codes.loss,
            }
            self.log("train/perplexity", proposal.codes.perplexity, batch_size=window.shape[0])
            return self.log_train(losses, batch)
        a = self.action(window, static, forcings, time)
        reward = self.truth_reward()
        self.check_training_times(batch)
        with torch.no_grad():
            futures = self.world_model.propose(window[:, -1], a.detach())
            scores = reward(futures, target[:, None])  # (B, K): truth on the training split only
            label = futures[torch.arange(futures.shape[0]), scores.argmax(dim=1)]
        forecast = a + self.projection(a)
        losses = {
            "pseudo_label": self.sample_loss(forecast, label, batch),
            "critic": self.critic_loss(batch, futures, reward),
        }
        self.log("train/reward", scores.max(dim=1).values.mean(), batch_size=window.shape[0])
        return self.log_train(losses, batch)

"""PlannerModule: what BeamVQ and SFP share on top of :class:`~earthcast.training.ForecastModule`.

A planner *is* a ForecastModule: the stacked forecaster config builds the base forecaster (``model``,
``size``, ``model_settings``), the data links the manifest and statistics as usual, and ``base_checkpoint``
loads the trained base weights at the start of ``fit`` (the EMA weights when the base kept them). The
checkpoint must match the config and the data; a mismatch is a :class:`CheckpointError` naming both. Planner
checkpoints carry the base model's manifest, settings and file hash next to their own.

What the subclasses add: a candidate generator (:meth:`propose`), the planner's own one-step forecast
(:meth:`forecast`, used by validation, free runs and ``earthcast rollout``) and the training step. Shared
here: the training climate (:class:`~earthcast.planners.reference.ClimateReference`, fitted on the training
split), the truth reward (training split only), the learned critic, self-training and beam-search planning.
All fields inside are normalised (N, C, H, W); rewards see physical units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from earthcast.errors import CheckpointError, ConfigError
from earthcast.planners.critics import LearnedCritic
from earthcast.planners.heads import HeadConfig
from earthcast.planners.reference import ClimateReference, collect_states
from earthcast.planners.scoring import build_critic, build_reward
from earthcast.planners.search import BeamSearch, SearchResult
from earthcast.planners.selftrain import SelfTrainingConfig, SelfTrainingLoop, TimeGuard
from earthcast.training.checkpoints import file_sha256, read_checkpoint
from earthcast.training.module import ForecastModule

Reward = Callable[[Tensor, Tensor], Tensor]
"""A truth reward on normalised (pred, target) (..., C, H, W) -> (...,)."""


class PlannerStep(nn.Module):
    """The planner's own one-step forecast as a predictor ``(state, static, forcings, time) -> (B, C, H, W)``,
    so validation, free runs and rollouts treat a planner like any forecaster."""

    def __init__(self, planner: PlannerModule) -> None:
        super().__init__()
        self.planner = planner

    def forward(self, state: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        return self.planner.forecast(state, static, forcings, time)


class PlannerModule(ForecastModule):
    """Base of :class:`~earthcast.planners.beamvq.BeamVQModule` and :class:`~earthcast.planners.sfp.SFPModule`.

    Args:
        base_checkpoint: ``.ckpt`` of the trained base forecaster (written by ``earthcast fit`` with the same
            forecaster config); loaded when ``fit`` starts.
        freeze_base: keep the base forecaster's weights fixed.
        head: sizes of the candidate generator (:class:`~earthcast.planners.heads.HeadConfig` fields).
        reward: the truth reward used on the training split (:func:`~earthcast.planners.scoring.build_reward`).
        self_training: :class:`~earthcast.planners.selftrain.SelfTrainingConfig` fields (``every: 0`` = off).
        critic_width: channels of the learned critic (0 = none).
        reference_samples: training states the climate reference is fitted on.
        **kwargs: the forecaster's :class:`ForecastModule` arguments.
    """

    def __init__(
        self,
        base_checkpoint: str | None = None,
        freeze_base: bool = True,
        head: dict[str, Any] | None = None,
        reward: list[dict[str, Any]] | None = None,
        self_training: dict[str, Any] | None = None,
        critic_width: int = 32,
        reference_samples: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.head_config = HeadConfig(**(head or {}))
        c = len(self.manifest.state)
        h, w = self.manifest.grid_shape
        self.reference = ClimateReference(c, h, w)
        self.critic = LearnedCritic(c, self.lat_weights, width=critic_width) if critic_width > 0 else None
        self.self_training = SelfTrainingConfig(**(self_training or {"every": 0}))
        self.selftrain_loop: SelfTrainingLoop | None = None
        self.guard: TimeGuard | None = None  # the validation and test times, set up by fit
        self.base_info: dict[str, Any] = {}
        if freeze_base:
            self.model.requires_grad_(False)
        self.trainable = True

    # ---------------------------------------------------------------- to be provided by subclasses
    def propose(
        self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor, k: int | None = None
    ) -> Tensor:
        """Candidates (M, K, C, H, W) for the next state of windows (M, N, C, H, W)."""
        raise NotImplementedError

    def forecast(self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        """The planner's own next state (M, C, H, W), without search."""
        raise NotImplementedError

    @property
    def needs_base(self) -> bool:
        """Whether training needs the trained base forecaster (``base_checkpoint``)."""
        return True

    # ---------------------------------------------------------------- shared
    @property
    def eval_model(self) -> nn.Module:
        return PlannerStep(self)

    def base_forecast(self, window: Tensor, static: Tensor, forcings: Tensor, time: Tensor) -> Tensor:
        """The base forecaster's next state (M, C, H, W); no gradient when it is frozen."""
        net = self.ema.module if self.ema is not None and not self.training else self.model
        if self.hparams.freeze_base:
            with torch.no_grad():
                return net(window, static, forcings, time).float()
        return net(window, static, forcings, time).float()

    def step_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(window, static, forcings of the first step, valid time of the first lead) of a batch."""
        n = batch["inputs"].shape[1]
        return (
            batch["inputs"],
            batch["static"],
            batch["forcings"][:, : n + 1],
            self.valid_times(batch["time"], 1)[:, 0],
        )

    def physical(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised → physical, (..., C, H, W)."""
        return self.normalizer.denormalize_state(x.float())

    def truth_reward(self) -> Reward:
        """The configured reward on normalised (pred, target) (..., C, H, W) → (...,)."""
        reward = build_reward(
            self.hparams.reward, self.manifest, self.reference, self.lat_weights, self.normalizer.state_std
        )
        return lambda pred, target: reward(self.physical(pred), self.physical(target))

    def critic_scorer(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """An inference critic as ``score(candidates (M, K, C, H, W), states (M, C, H, W)) -> (M, K)``."""
        critic = build_critic(
            name, self.manifest, self.reference, self.lat_weights, self.normalizer.state_std, self.critic
        )
        if name == "learned":
            return lambda cands, state: critic(cands, None, state=state[:, None].expand_as(cands))
        return lambda cands, state: critic(self.physical(cands), None)

    def plan(
        self,
        batch: dict[str, torch.Tensor],
        steps: int,
        score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int], torch.Tensor],
        search: BeamSearch,
        targets: torch.Tensor | None = None,
    ) -> SearchResult:
        """Beam search over ``steps`` leads from a normalised batch (inputs, static, forcings with ≥ N + steps
        times, time). ``score(candidates (M, K, C, H, W), state (M, C, H, W), target (M, 1, C, H, W) | None,
        t) -> (M, K)``; ``targets`` (N, steps, C, H, W) normalised, for oracle scoring only."""
        n_in = batch["inputs"].shape[1]
        times = self.valid_times(batch["time"], steps)
        n = batch["inputs"].shape[0]

        parent: list[torch.Tensor] = []  # the states the latest candidates were proposed from

        def propose(window: torch.Tensor, t: int) -> torch.Tensor:
            rep = window.shape[0] // n
            static = batch["static"].repeat_interleave(rep, 0)
            forcings = batch["forcings"][:, t : t + n_in + 1].repeat_interleave(rep, 0)
            valid = times[:, t].repeat_interleave(rep, 0)
            parent[:] = [window[:, -1]]
            return self.propose(window, static, forcings, valid, search.expansions)

        def scorer(cands: torch.Tensor, target: torch.Tensor | None, t: int) -> torch.Tensor:
            return score(cands, parent[0], target, t)

        return search(propose, scorer, batch["inputs"], targets)

    # ---------------------------------------------------------------- fit
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.hparams.base_checkpoint and not self.base_info:
            self.load_base(self.hparams.base_checkpoint)
        elif self.needs_base and not self.base_info:
            raise ConfigError(
                f"{type(self).__name__} builds on a trained forecaster: pass --model.init_args.base_checkpoint "
                "PATH (the .ckpt written by `earthcast fit` with the same forecaster config)"
            )
        datamodule = getattr(self.trainer, "datamodule", None)
        if not self.reference.ready and datamodule is not None:
            states = collect_states(datamodule.train_dataloader(), self.hparams.reference_samples)
            self.reference.fit(states.to(self.device), self.lat_weights)
        if datamodule is not None:
            splits = datamodule.splits
            self.guard = TimeGuard.from_splits(
                {k: splits[k] for k in ("val", "test")},
                horizon_ns=int(self.step_ns) * int(datamodule.hparams.n_target),
            )
            if self.self_training.every > 0:
                self.selftrain_loop = SelfTrainingLoop(self.self_training, self.guard)

    def load_base(self, path: str) -> None:
        """Load the base forecaster's weights from a ForecastModule checkpoint, refusing a mismatch."""
        checkpoint = read_checkpoint(path)
        saved = checkpoint["earthcast"]
        model = saved.get("model", {})
        mine = {
            "name": self.hparams.model,
            "size": self.hparams.size,
            "settings": dict(self.hparams.model_settings),
        }
        theirs = {k: model.get(k) for k in mine}
        if theirs != mine:
            raise CheckpointError(
                f"base_checkpoint {path!r} holds the forecaster {theirs}, but the config builds {mine}: stack the "
                "forecaster config the base was trained with (earthcast fit --config <forecaster.yaml> --config "
                "<planner.yaml>)"
            )
        from earthcast.datasets.channels import ChannelManifest
        from earthcast.datasets.statistics import NormStats

        self.check_compatible(
            ChannelManifest.from_dict(saved["manifest"]), NormStats.from_dict(saved["stats"])
        )
        state = checkpoint["state_dict"]
        prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "forecaster.model."
        weights = {
            k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k != "ema.n_averaged"
        }
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"base_checkpoint {path!r} does not fit the forecaster: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}"
            )
        self.base_info = {
            "path": str(path),
            "sha256": file_sha256(path),
            "model": theirs,
            "weights": prefix[:-1],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["earthcast"]["base"] = dict(self.base_info, manifest=self.manifest.to_dict())
        if self.selftrain_loop is not None:
            checkpoint["earthcast"]["self_training"] = self.selftrain_loop.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["earthcast"]
        self.base_info = dict(saved.get("base", {}))
        self.base_info.pop("manifest", None)
        if "self_training" in saved:
            self._pending_selftrain = saved["self_training"]

    def on_fit_start(self) -> None:
        pending = getattr(self, "_pending_selftrain", None)
        if pending is not None and self.selftrain_loop is not None:
            self.selftrain_loop.load_state_dict(pending)

    def critic_loss(self, batch: dict[str, torch.Tensor], cands: Tensor, reward: Reward) -> Tensor:
        """Regress the learned critic on the truth reward of (detached) candidates (B, K, C, H, W), standardised
        over each sample's K candidates: the critic only has to rank a candidate set, and the rewards of one
        set differ by far less than their common level."""
        if self.critic is None:
            return cands.new_zeros(())
        cands = cands.detach()
        self.check_training_times(batch)
        with torch.no_grad():  # rank within each candidate set: rewards standardised over the K candidates
            r = reward(cands, batch["targets"][:, :1]).float()  # (B, K)
            target = (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True).clamp_min(1e-12)
        state = batch["inputs"][:, -1:].expand_as(cands)
        return self.critic.fit_step(state, cands, target)

    def check_training_times(self, batch: dict[str, Tensor]) -> None:
        """Raise :class:`~earthcast.planners.selftrain.LeakageError` before a truth reward scores a batch that
        touches the validation or test times."""
        if self.guard is not None:
            self.guard.check(batch["time"])

    def harvest(self, batch: dict[str, torch.Tensor]) -> None:
        """Self-training: when due, add the best candidates of this (training) batch to the buffer."""
        loop = self.selftrain_loop
        if loop is None or not loop.due(self.global_step):
            return
        reward = self.truth_reward()

        def generate(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                parts = self.step_inputs(b)
                return self.propose(*parts), self.forecast(*parts)

        stats = loop.harvest(batch, generate, lambda p, t: reward(p, t))
        for name, value in stats.items():
            self.log(f"train/self_training/{name}", float(value), batch_size=batch["inputs"].shape[0])

    def sample_loss(self, pred: Tensor, target: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Area-, channel- and mask-weighted MSE of normalised (B, C, H, W) fields, averaged over the batch
        with the rows' ``weight`` (pseudo-labelled rows may weigh differently; default 1)."""
        err = (pred.float() - target.float()).square()
        point = self.lat_weights[None, :, None] * batch["mask"].float()  # (B, H, W)
        per = (err * point[:, None]).sum((-2, -1)) / point.sum((-2, -1))[:, None].clamp_min(1e-12)  # (B, C)
        per = (per * self.chan_weights).sum(-1) / self.chan_weights.sum()
        weight = batch.get("weight")
        weight = torch.ones_like(per) if weight is None else weight.to(per)
        return (per * weight).sum() / weight.sum().clamp_min(1e-12)

    def log_train(self, losses: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        """Log ``train/<name>`` for each term and ``train/loss`` for their sum; return the sum."""
        size = batch["inputs"].shape[0]
        total = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), batch_size=size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=size)
        return total

    def training_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Harvest pseudo-labels when due, then mix them into the batch (self-training)."""
        if self.selftrain_loop is None:
            return batch
        self.harvest(batch)
        return self.selftrain_loop.training_batch(batch)

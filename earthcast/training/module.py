"""ForecastModule: the LightningModule that trains and validates every forecast model.

Structure: one-step predictor (:func:`earthcast.models.registry.build_model`) -> autoregressive
:class:`~earthcast.training.forecaster.Forecaster` -> this module. Batches arrive in physical units from
:class:`earthcast.datasets.datamodule.WB2DataModule` and are normalised on the device in
``on_after_batch_transfer`` with the statistics held in :class:`~earthcast.training.normalizer.Normalizer`
buffers. Checkpoints carry the manifest, the statistics and the model settings; loading one against other
data raises :class:`IncompatibleCheckpointError` listing the differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.time_axis import advance_times
from earthcast.errors import ConfigError
from earthcast.models.backbone import param_groups
from earthcast.models.registry import build_model
from earthcast.training.checks import (
    LOSS_FUNCTIONS,
    LOSS_SCALES,
    ROLLOUT_GRADIENTS,
    IncompatibleCheckpointError,
    NonFiniteLossError,
    check_settings,
    compatibility_problems,
    describe_non_finite,
)
from earthcast.training.forecaster import Forecaster, advance_batch, rollout, valid_times
from earthcast.training.freerun import free_run
from earthcast.training.losses import (
    area_weights,
    channel_weights,
    increment_std,
    squared_error_sums,
    tendency_loss_scale,
    weighted_mse,
    zonal_amse,
)
from earthcast.training.normalizer import Normalizer
from earthcast.training.schedules import normalize_schedule, rollout_steps, warmup_cosine

__all__ = [
    "LOSS_FUNCTIONS",
    "LOSS_SCALES",
    "ROLLOUT_GRADIENTS",
    "ForecastModule",
    "IncompatibleCheckpointError",
    "NonFiniteLossError",
]


def _manifest(value: Mapping | ChannelManifest | None) -> ChannelManifest:
    if value is None:
        raise ConfigError(
            "ForecastModule needs the data's channel manifest: pass manifest=datamodule.manifest.to_dict() "
            'or link it in the CLI (link_arguments("data.manifest", "model.manifest", apply_on="instantiate"))'
        )
    return value if isinstance(value, ChannelManifest) else ChannelManifest.from_dict(value)


def _stats(value: Mapping | NormStats | None) -> NormStats:
    if value is None:
        raise ConfigError(
            "ForecastModule needs normalisation statistics: pass stats=datamodule.stats.to_dict() or link "
            'them in the CLI (link_arguments("data.stats", "model.stats", apply_on="instantiate"))'
        )
    stats = value if isinstance(value, NormStats) else NormStats.from_dict(dict(value))
    bad = [name for name, values in stats.to_dict().items() if not all(math.isfinite(v) for v in values)]
    if bad:
        raise ConfigError(
            f"normalisation statistics {bad} contain NaN/Inf: the training split is probably empty or all "
            "masked; widen data.train or check the store"
        )
    return stats


class ForecastModule(L.LightningModule):
    """Train/validate a forecast model with an area-weighted masked MSE and an unroll curriculum.

    Args:
        model: ``"tritoncast"``, ``"unet"``, ``"persistence"`` or ``"climatology"``.
        size: named size (``tiny``, ``small``, ``paper-1deg``, ``paper-wb2``) for tritoncast/unet.
        model_settings: overrides for the model (e.g. ``{"ablation": "no_core", "output": "direct",
            "core": {"backend": "reference"}}``; ``climatology_store``/``truth_store`` for climatology).
        manifest, stats: the data's :class:`ChannelManifest` / :class:`NormStats` (as dicts or objects).
        n_input: input time steps of the data windows.
        lr, weight_decay, betas: AdamW settings (decay groups from ``param_groups``).
        warmup_steps, total_steps, min_lr_ratio: linear warm-up then cosine to ``lr * min_lr_ratio`` at
            ``total_steps`` (default: the trainer's estimated stepping batches).
        rollout_schedule: ``{optimizer_step: K}`` unroll curriculum, e.g. ``{0: 1, 600: 2, 800: 4}``; K is
            capped by the batch's n_target. It counts steps (``global_step``), so it starts whatever the
            epoch length and a resumed run continues it.
        rollout_gradient: ``"full"`` backpropagates through all K steps and averages the loss over them;
            ``"last"`` runs the first K − 1 steps without gradients and scores only the last (the
            "push-forward" trick; ACE's ``optimize_last_step_only``): the model learns from inputs it
            produced itself at the cost of one step's activations.
        loss_scale: ``"tendency"`` weights each channel's squared error (normalised by the state std) by
            (state_std / tendency_std)², mean 1 over channels, so every channel's one-step increment has
            unit variance in the loss (GraphCast's residual normalisation; without it, Z500's 6-hour
            tendency counts ~30× less than V250's); ``"state"`` weights every normalised channel equally.
        variable_weights: loss weight per channel name or variable (default 1), on top of ``loss_scale``.
        loss_function: ``"mse"`` (area-weighted mean squared error) or ``"amse"``, the adjusted MSE on each
            row's zonal spectrum (:func:`~earthcast.training.losses.zonal_amse`), which does not reward
            blurring waves whose phase is uncertain; global grids without masked points only.
        input_noise: in training, Gaussian noise of this many tendency stds is added to the input states
            (not to fed-back predictions), so the model learns to correct small errors; 0 = off.
        checkpoint_steps: recompute each unroll step in the backward pass (per-step gradient checkpointing).
        offload_activations: keep saved activations in host memory (``save_on_cpu``).
        ema_decay: keep an exponential moving average of the weights, used for validation and prediction.
        val_steps: leads validated (default: every target lead of the validation batch).
        free_run_steps: at the end of each validation, roll out this many steps from the first validation
            sample and log ``val/free_run/*`` (finite steps, max |z|, drift, spectrum ratio;
            :mod:`earthcast.training.freerun`); 0 = off, and always off for a boundary-forced model, whose
            boundary needs the truth at every step.

    Logged: ``train/loss``, ``train/rollout_steps``, ``val/loss`` and ``val/rmse/<channel>/<lead>h`` (WB2
    area-weighted RMSE in physical units over the validation set, masked points excluded; the lead is
    ``<months>mo`` for a calendar step); ``test/...`` likewise.
    """

    def __init__(
        self,
        model: str = "tritoncast",
        size: str = "tiny",
        model_settings: dict[str, Any] | None = None,
        manifest: dict[str, Any] | ChannelManifest | None = None,
        stats: dict[str, Any] | NormStats | None = None,
        n_input: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.01,
        rollout_schedule: dict[int, int] | None = None,
        rollout_gradient: str = "full",
        loss_scale: str = "tendency",
        variable_weights: dict[str, float] | None = None,
        loss_function: str = "mse",
        input_noise: float = 0.0,
        checkpoint_steps: bool = True,
        offload_activations: bool = False,
        ema_decay: float | None = None,
        val_steps: int | None = None,
        free_run_steps: int = 0,
    ) -> None:
        super().__init__()
        self.manifest, self.stats = _manifest(manifest), _stats(stats)
        # save_hyperparameters reads the constructor's locals: store plain dicts, whatever was passed
        manifest, stats = self.manifest.to_dict(), self.stats.to_dict()
        model_settings = dict(model_settings or {})
        self.save_hyperparameters()
        self.schedule = normalize_schedule(rollout_schedule)
        check_settings(self.manifest, rollout_gradient, loss_scale, loss_function, input_noise)
        self.normalizer = Normalizer(self.stats, boundary=self.manifest.boundary_width > 0)
        one_step = build_model(model, self.manifest, self.stats, n_input=n_input, size=size, **model_settings)
        self.forecaster = Forecaster(one_step, checkpoint_steps=checkpoint_steps, offload=offload_activations)
        self.register_buffer("lat_weights", area_weights(self.manifest), persistent=False)
        weights = channel_weights(self.manifest, variable_weights)
        if loss_scale == "tendency":
            weights = weights * tendency_loss_scale(self.stats)
        self.register_buffer("chan_weights", weights, persistent=False)
        self.register_buffer("increment_std", increment_std(self.stats), persistent=False)
        self.ema = (
            AveragedModel(one_step, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay is not None
            else None
        )
        if self.ema is not None:  # the average is never trained: no gradients (DDP then finds no unused ones)
            self.ema.requires_grad_(False)
        # parameter-free baselines (persistence, climatology) get one frozen-at-zero placeholder so that the
        # optimiser, max_steps and LR schedule behave exactly as for trained models
        self.trainable = any(p.requires_grad for p in one_step.parameters())
        self.placeholder = None if self.trainable else torch.nn.Parameter(torch.zeros(()))
        self.step_ns = round(self.manifest.time_step_hours * 3600e9)  # a calendar step's mean length
        self._val_sums: dict[str, torch.Tensor] = {}
        self._free_run_start: dict[str, torch.Tensor] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The one-step predictor being trained."""
        return self.forecaster.model

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights used for validation and prediction: the EMA copy if enabled."""
        return self.ema.module if self.ema is not None else self.model

    # ---------------------------------------------------------------- data
    def on_after_batch_transfer(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> dict[str, torch.Tensor]:
        """Normalise on the device; keep the physical targets as ``targets_phys``. Masked points (land in
        ocean stores, filled with 0 by the data layer) are set to 0 in normalised units, the channel mean.
        Boundary forcings of a limited-area model are normalised like the state
        (:meth:`~earthcast.training.normalizer.Normalizer.normalize_forcings`)."""
        out = dict(batch)
        valid = batch["mask"].float()[:, None, None]  # (B, 1, 1, H, W)
        out["inputs"] = self.normalizer.normalize_state(batch["inputs"].float()) * valid
        out["targets"] = self.normalizer.normalize_state(batch["targets"].float()) * valid
        out["targets_phys"] = batch["targets"]
        out["static"] = self.normalizer.normalize_static(batch["static"].float())
        out["forcings"] = self.normalizer.normalize_forcings(batch["forcings"], valid)
        return out

    def unroll(self, batch: dict[str, torch.Tensor], steps: int, model: torch.nn.Module | None = None):
        """Predictions (B, K, C, H, W) normalised, and the aux loss, for ``steps`` leads."""
        times = self.valid_times(batch["time"], steps)
        if model is None:
            return self.forecaster(batch["inputs"], batch["static"], batch["forcings"], times, steps)
        return rollout(model, batch["inputs"], batch["static"], batch["forcings"], times, steps)

    def valid_times(self, init: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, K) int64 ns valid times of leads 1…K after the init times (B,) int64 ns, calendar-aware."""
        step = self.manifest.model_step
        if not step.is_calendar:  # a fixed step: stay on the device
            return valid_times(init, steps, self.step_ns)
        inits = init.cpu().numpy().astype("datetime64[ns]")[:, None]
        times = advance_times(inits, np.arange(1, steps + 1), step).astype(np.int64)
        return torch.from_numpy(times).to(init.device)

    def loss(self, preds: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Area-weighted masked MSE (or AMSE, ``loss_function``) of normalised predictions (B, K, ...) against
        the first K targets."""
        targets = batch["targets"][:, : preds.shape[1]]
        if self.hparams.loss_function == "amse":
            return zonal_amse(preds.float(), targets, self.lat_weights, self.chan_weights)
        return weighted_mse(preds.float(), targets, self.lat_weights, self.chan_weights, batch["mask"])

    def current_rollout(self, batch: dict[str, torch.Tensor]) -> int:
        """K from the curriculum at the current optimizer step, capped by the batch's n_target."""
        return rollout_steps(self.schedule, self.global_step, cap=batch["targets"].shape[1])

    # ---------------------------------------------------------------- training
    def training_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with ``input_noise`` tendency stds of Gaussian noise on the input states (valid points).

        The noise is drawn from a generator seeded by (run seed, optimizer step, rank), so a resumed run
        (even from mid-epoch) and every rank draw exactly what an uninterrupted run draws."""
        noise = self.hparams.input_noise
        if not noise:
            return batch
        x = batch["inputs"]
        seed = np.random.SeedSequence([torch.initial_seed(), self.global_step, self.global_rank])
        gen = torch.Generator(device=x.device).manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))
        scale = (noise * self.increment_std).to(x.dtype)[:, None, None]
        valid = batch["mask"].to(x.dtype)[:, None, None]
        inputs = x + torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * scale * valid
        return {**batch, "inputs": inputs}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        steps = self.current_rollout(batch)
        batch = self.training_inputs(batch)
        if self.hparams.rollout_gradient == "last" and steps > 1:
            with torch.no_grad():
                lead_in, _ = self.unroll(batch, steps - 1)
            shifted = advance_batch(batch, lead_in, self.valid_times(batch["time"], steps - 1)[:, -1])
            preds, aux = self.unroll(shifted, 1)
            loss = self.loss(preds, shifted)
        else:
            preds, aux = self.unroll(batch, steps)
            loss = self.loss(preds, batch)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(describe_non_finite(self.global_step, batch, preds, self.manifest))
        size = batch["inputs"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/rollout_steps", float(steps), batch_size=size)
        if self.placeholder is not None:
            return loss.detach() + 0.0 * self.placeholder  # zero gradient, the step still counts
        total = loss + aux.to(loss.dtype)
        self.log("train/aux_loss", aux.detach().float(), batch_size=size)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def optimized_module(self) -> torch.nn.Module:
        """The module whose trainable parameters the optimiser updates (planners train their heads)."""
        return self.model

    def configure_optimizers(self):
        hp = self.hparams
        groups = (
            param_groups(self.optimized_module(), hp.weight_decay)
            if self.trainable
            else [{"params": [self.placeholder]}]
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=0.0)
        total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
        if total <= 0 or total == float("inf"):
            raise ConfigError("cannot infer the schedule length; set total_steps= or trainer.max_steps")
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, hp.warmup_steps, total, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        steps = batch["targets"].shape[1]
        if self.hparams.val_steps is not None:
            steps = min(steps, self.hparams.val_steps)
        preds, _ = self.unroll(batch, steps, self.eval_model)
        loss = self.loss(preds, batch)
        self.log(f"{prefix}/loss", loss, prog_bar=True, batch_size=preds.shape[0], sync_dist=True)
        phys = self.normalizer.denormalize_state(preds.float())
        sums = squared_error_sums(phys, batch["targets_phys"][:, :steps], self.lat_weights, batch["mask"])
        if prefix not in self._val_sums:  # rows: leads, then one row holding the sample count
            self._val_sums[prefix] = sums.new_zeros(sums.shape[0] + 1, sums.shape[1])
        acc = self._val_sums[prefix]
        acc[: sums.shape[0]] += sums
        acc[-1, 0] += preds.shape[0]
        return loss

    def _log_rmse(self, prefix: str) -> None:
        acc = self._val_sums.pop(prefix, None)
        if acc is None:
            return
        acc = self.trainer.strategy.reduce(acc, reduce_op="sum") if self.trainer.world_size > 1 else acc
        rmse = (acc[:-1] / acc[-1, 0].clamp_min(1)).sqrt()
        names, step = self.manifest.names("state"), self.manifest.model_step
        for k in range(rmse.shape[0]):
            hours = (k + 1) * self.manifest.time_step_hours
            lead = f"{(k + 1) * step.months}mo" if step.is_calendar else f"{hours:g}h"
            for c, name in enumerate(names):
                self.log(f"{prefix}/rmse/{name}/{lead}", rmse[k, c].float(), rank_zero_only=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if batch_idx == 0 and self.hparams.free_run_steps and not self.manifest.boundary_width:
            self._free_run_start = {k: batch[k][:1] for k in ("inputs", "static", "time", "mask")}
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_rmse("val")
        start = self._free_run_start
        if start is not None:
            for name, value in self.free_run(start, self.hparams.free_run_steps).items():
                self.log(f"val/free_run/{name}", value, sync_dist=True)
            self._free_run_start = None

    def free_run(self, start: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
        """:func:`~earthcast.training.freerun.free_run` of the evaluation model from one normalised sample."""
        return free_run(self.eval_model, self.normalizer, self.manifest, self.lat_weights, start, steps)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_rmse("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """(B, K, C, H, W) forecasts in physical units for every target lead of the batch."""
        preds, _ = self.unroll(batch, batch["targets"].shape[1], self.eval_model)
        return self.normalizer.denormalize_state(preds.float())

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Callbacks (e.g. the CLI's run metadata) run first and may have started this entry: extend it.
        checkpoint.setdefault("earthcast", {}).update(
            {
                "module": f"{type(self).__module__}.{type(self).__qualname__}",
                "manifest": self.manifest.to_dict(),
                "stats": self.stats.to_dict(),
                "model": {
                    "name": self.hparams.model,
                    "size": self.hparams.size,
                    "settings": dict(self.hparams.model_settings or {}),
                    "n_input": self.hparams.n_input,
                },
            }
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("earthcast")
        if saved is None:
            raise IncompatibleCheckpointError(
                "this checkpoint has no earthcast metadata (manifest/stats); it was not written by ForecastModule"
            )
        self.check_compatible(
            ChannelManifest.from_dict(saved["manifest"]), NormStats.from_dict(saved["stats"])
        )

    def check_compatible(self, manifest: ChannelManifest, stats: NormStats) -> None:
        """Raise :class:`IncompatibleCheckpointError` listing every difference between a checkpoint's
        manifest/statistics and this module's (i.e. the data's)."""
        problems = compatibility_problems(manifest, stats, self.manifest, self.stats)
        if problems:
            listing = "\n  - ".join(problems)
            raise IncompatibleCheckpointError(
                f"the checkpoint does not match the data:\n  - {listing}\nUse the data the model was trained "
                "on (same channels, grid, step and statistics), or start a new training run."
            )

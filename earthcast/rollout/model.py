"""Adapter from a trained :class:`~earthcast.training.ForecastModule` checkpoint to one model step.

``StepModel`` holds the evaluation weights (the EMA copy when the run kept one), the normaliser, the
channel manifest and the model step. ``StepModel.step`` maps normalised states to the next normalised state,
exactly as :func:`earthcast.training.forecaster.rollout` calls the predictor during training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.training import ForecastModule
from earthcast.training.checkpoints import file_sha256, load_module
from earthcast.training.normalizer import Normalizer


@dataclass
class StepModel:
    """One step of a trained forecast model on normalised fields.

    Attributes:
        net: the one-step predictor ``net(state (B, N, C, H, W), static (B, S, H, W), forcings
            (B, N + 1, F, H, W), time (B,) int64 ns) -> (B, C, H, W)``, in eval mode.
        module: the loaded ForecastModule (normaliser buffers live on ``device``).
        manifest, stats: channels, grid, step and normalisation statistics of the checkpoint.
        n_input: input time steps N.
        device: where the model runs.
        checkpoint_sha256: hash of the checkpoint file (the run identity uses it).
        model_info: the checkpoint's model description (name, size, settings, n_input).
    """

    net: torch.nn.Module
    module: ForecastModule
    manifest: ChannelManifest
    stats: NormStats
    n_input: int
    device: torch.device
    checkpoint_sha256: str
    model_info: dict

    @property
    def step(self) -> np.timedelta64:
        """The model step as a timedelta64[ns]."""
        return np.timedelta64(int(self.module.step_ns), "ns")

    @property
    def normalizer(self) -> Normalizer:
        """The checkpoint's normaliser (buffers on ``device``): the one used in training, so a rollout
        normalises states, statics and forcings exactly as training did."""
        return self.module.normalizer

    @torch.no_grad()
    def step_once(
        self, window: torch.Tensor, static: torch.Tensor, forcings: torch.Tensor, valid_ns: torch.Tensor
    ) -> torch.Tensor:
        """Next normalised state (B, C, H, W) from the window (B, N, C, H, W) of normalised states,
        normalised statics (B, S, H, W), forcings (B, N + 1, F, H, W) at the input times and the target
        time (from ``normalizer.normalize_forcings``), and the target valid times (B,) int64 ns."""
        return self.net(window, static, forcings, valid_ns).float()


def load_step_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> StepModel:
    """Load a ForecastModule checkpoint for inference.

    The checkpoint may come from a ForecastModule or from a planner built on it (the evaluation model is
    then the planner's own one-step forecast); see :func:`earthcast.training.checkpoints.load_module`.

    Raises:
        CheckpointError: no file at ``path``, a truncated or corrupt file, or one not written by earthcast.
    """
    dev = torch.device(device)
    module = load_module(path, dev)
    module.eval()
    hp = module.hparams
    return StepModel(
        net=module.eval_model.eval(),
        module=module,
        manifest=module.manifest,
        stats=module.stats,
        n_input=int(module.hparams.n_input),
        device=dev,
        checkpoint_sha256=file_sha256(path),
        model_info={
            "name": hp.model,
            "size": hp.size,
            "settings": dict(hp.model_settings),
            "n_input": int(hp.n_input),
        },
    )

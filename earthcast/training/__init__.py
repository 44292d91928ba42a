"""Training: normaliser, autoregressive forecaster, losses and the Lightning ForecastModule.

Main entry points: :class:`ForecastModule`, :class:`Forecaster`, :class:`Normalizer`.
"""

from earthcast.training.checks import IncompatibleCheckpointError, NonFiniteLossError
from earthcast.training.forecaster import Forecaster, rollout
from earthcast.training.losses import channel_weights, weighted_mse
from earthcast.training.module import ForecastModule
from earthcast.training.normalizer import Normalizer
from earthcast.training.schedules import rollout_steps, warmup_cosine

__all__ = [
    "ForecastModule",
    "Forecaster",
    "IncompatibleCheckpointError",
    "NonFiniteLossError",
    "Normalizer",
    "channel_weights",
    "rollout",
    "rollout_steps",
    "warmup_cosine",
    "weighted_mse",
]

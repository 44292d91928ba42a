"""Rollouts: a generator of forecast steps, consumed by a WB2 by-init Zarr writer and online aggregators.

Main entry points: :func:`run_rollout` (resumable runs, used by ``earthcast rollout``), :func:`generate`
(the step generator), :func:`load_step_model`, :class:`TruthSource`, :class:`ForecastWriter`,
:class:`OnlineAggregates`.
"""

from earthcast.rollout.aggregators import OnlineAggregates, write_aggregates, zonal_power
from earthcast.rollout.generator import (
    BlowUp,
    Ensemble,
    InitialConditions,
    RolloutState,
    RolloutStep,
    generate,
    initial_state,
)
from earthcast.rollout.initial import TruthSource
from earthcast.rollout.model import StepModel, load_step_model
from earthcast.rollout.session import RolloutConfig, RolloutResult, RunPaths, run_rollout
from earthcast.rollout.timing import lead_steps, parse_inits
from earthcast.rollout.writer import ForecastWriter, store_template, variable_layout

__all__ = [
    "BlowUp",
    "Ensemble",
    "ForecastWriter",
    "InitialConditions",
    "OnlineAggregates",
    "RolloutConfig",
    "RolloutResult",
    "RolloutState",
    "RolloutStep",
    "RunPaths",
    "StepModel",
    "TruthSource",
    "generate",
    "initial_state",
    "lead_steps",
    "load_step_model",
    "parse_inits",
    "run_rollout",
    "store_template",
    "variable_layout",
    "write_aggregates",
    "zonal_power",
]

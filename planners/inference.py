"""Planning at inference: a planner checkpoint as a rollout step that searches with a critic.

``earthcast rollout --planner CKPT`` loads the planner like any checkpoint (:func:`load_step_model`) and wraps
it in :class:`PlannedStepModel`. At every lead the step runs a :class:`~earthcast.planners.search.BeamSearch`
of ``horizon`` leads (beam width B, K candidates per beam) from the current state, scores candidates with an
inference critic (no truth: ``spectrum``, ``conservation``, ``agreement`` or ``learned``), and commits the
first state of the chosen path (receding horizon). The look-ahead forcings are computed analytically at
their valid times, as the rollout does.

With ``members`` M > 1 the store gets a ``number`` dimension: member 0 is the planned trajectory and member
m the m-th best beam's first state from the same planned state (so M ≤ B). ``earthcast score`` then gives
CRPS and spread-skill of the candidate spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from earthcast.datasets.boundary import manifest_forcings
from earthcast.datasets.time_axis import advance_times
from earthcast.errors import ConfigError
from earthcast.planners.aggregate import Aggregator
from earthcast.planners.module import PlannerModule
from earthcast.planners.scoring import CRITICS
from earthcast.planners.search import BeamSearch
from earthcast.rollout.model import StepModel


@dataclass(frozen=True)
class PlanSettings:
    """How a rollout plans (the ``--planner.*`` options of ``earthcast rollout``).

    Attributes:
        critic: inference critic: spectrum, conservation, agreement or learned (``CRITICS``).
        horizon: leads (model steps) searched ahead at every step (1 = pick the best candidate of each step).
        beam_width: beams kept (B).
        expansions: candidates per beam (K; default: the head's K).
        aggregator: how the final beams combine: argmax (the best path), top_m or softmax.
        top_m: beams averaged by the top_m aggregator.
    """

    critic: str = "learned"
    horizon: int = 1
    beam_width: int = 4
    expansions: int | None = None
    aggregator: str = "argmax"
    top_m: int = 1

    def __post_init__(self) -> None:
        if self.critic not in CRITICS:
            raise ConfigError(
                f"unknown critic {self.critic!r}; at inference use one of {CRITICS} (truth rewards score the "
                "training split only)"
            )

    def to_dict(self) -> dict:
        """Plain dict (the rollout's run identity)."""
        return asdict(self)


@dataclass
class PlannedStepModel(StepModel):
    """A :class:`StepModel` whose step plans (module docstring). ``module`` is a :class:`PlannerModule`."""

    settings: PlanSettings = PlanSettings()
    members: int = 1

    def search(self) -> BeamSearch:
        """The beam search of one step."""
        s = self.settings
        k = s.expansions or self.module.head_config.k
        return BeamSearch(s.horizon, s.beam_width, k, aggregator=Aggregator(s.aggregator, top_m=s.top_m))

    def lookahead_forcings(self, forcings: Tensor, valid_ns: Tensor) -> Tensor:
        """(B, N + H, F, H, W): the step's forcings plus those of the H − 1 further look-ahead leads."""
        extra = self.settings.horizon - 1
        if extra == 0:
            return forcings
        valid = valid_ns.cpu().numpy().astype("datetime64[ns]")
        times = advance_times(valid[:, None], np.arange(1, extra + 1)[None, :], self.manifest.model_step)
        frames = [manifest_forcings(self.manifest, times[:, j], None) for j in range(extra)]
        more = torch.from_numpy(np.stack(frames, axis=1)).to(forcings)
        return torch.cat([forcings, self.normalizer.normalize_forcings(more)], dim=1)

    @torch.no_grad()
    def step_once(self, window: Tensor, static: Tensor, forcings: Tensor, valid_ns: Tensor) -> Tensor:
        """Next states (B·M, C, H, W), init-major; member 0 of each init is the planned state."""
        m = self.members
        w0, s0, f0, v0 = window[::m], static[::m], forcings[::m], valid_ns[::m]
        init = advance_times(v0.cpu().numpy().astype("datetime64[ns]"), -1, self.manifest.model_step)
        batch = {
            "inputs": w0,
            "static": s0,
            "forcings": self.lookahead_forcings(f0, v0),
            "time": torch.from_numpy(init.astype(np.int64)).to(v0.device),
        }
        critic = self.module.critic_scorer(self.settings.critic)
        result = self.module.plan(
            batch, self.settings.horizon, lambda c, s, t, k: critic(c, s), self.search()
        )
        if m > result.trajectories.shape[1]:
            raise ConfigError(
                f"--members {m} needs at least {m} beams; the search kept {result.trajectories.shape[1]}: raise "
                "--beam-width"
            )
        out = torch.stack([result.chosen[:, 0]] + [result.trajectories[:, j, 0] for j in range(1, m)], dim=1)
        return out.flatten(0, 1).float()


def planned_step_model(model: StepModel, settings: PlanSettings, members: int = 1) -> PlannedStepModel:
    """Wrap a loaded planner checkpoint so the rollout plans at every step."""
    if not isinstance(model.module, PlannerModule):
        raise ConfigError(
            f"--planner needs a planner checkpoint (BeamVQ or SFP, written by `earthcast fit --config "
            f"configs/planners/...`); this one was written by {type(model.module).__name__}"
        )
    if model.manifest.boundary_width:
        raise ConfigError(
            "planning looks ahead without the truth, but this limited-area model reads its boundary from the "
            "truth at every step: roll it out without --planner"
        )
    if settings.critic == "learned" and model.module.critic is None:
        raise ConfigError("this planner has no learned critic (critic_width: 0): choose another --critic")
    fields = {name: getattr(model, name) for name in StepModel.__dataclass_fields__}
    return PlannedStepModel(**fields, settings=settings, members=members)

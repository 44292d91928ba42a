"""Multi-step beam search over continuous forecast states, batched over samples and beams.

A *proposer* turns a window of normalised states into K candidate next states; a *scorer* rates candidates
(higher is better), optionally against a target. :class:`BeamSearch` keeps the ``beam_width`` best partial
trajectories per sample over ``horizon`` lead steps:

1. The search starts from one beam per sample (the given window), with no score.
2. At lead step t the ``N*b`` live windows go through ``propose`` in one call, giving ``(N*b, K, C, H, W)``
   candidates, which ``score`` rates in one call against the step-t target repeated per beam.
3. A candidate's total is its parent's total plus its step score (``cumulative=True``), or its step score
   alone (``cumulative=False``: greedy in the current step's reward).
4. ``torch.topk`` keeps the best ``min(beam_width, b*K)`` of the ``b*K`` candidates per sample, sorted
   descending; each kept beam's window drops its oldest state and appends the new one.

Only the loop over lead steps is in Python. States and back-pointers are stored per step and the final
beams are traced back once at the end, so memory is O(N * beam_width * horizon * C * H * W).

Ties: ``torch.topk`` breaks ties in an unspecified order, so equal scores may keep either candidate;
:func:`looped_beam_search`, the plain reference, keeps the earlier (beam, k) instead. The two agree
exactly when no two totals tie.

The search does not switch off autograd: wrap the call in ``torch.no_grad()`` when gradients are not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from earthcast.errors import ConfigError
from earthcast.planners.aggregate import Aggregator

Proposer = Callable[[Tensor, int], Tensor]
"""``propose(window (M, N_in, C, H, W), t) -> candidates (M, K, C, H, W)``; t is the 0-based lead index
being predicted."""

Scorer = Callable[[Tensor, Tensor | None, int], Tensor]
"""``score(candidates (M, K, C, H, W), target (M, 1, C, H, W) or None, t) -> (M, K)``, higher is better."""


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a beam search over N samples, with B' = min(beam_width, K**horizon) final beams.

    Attributes:
        trajectories: (N, B', horizon, C, H, W) the final beams' states, best first, in the proposals' dtype.
        scores: (N, B') the final beams' totals, descending: cumulative step scores, or the last step's
            score when the search ran with ``cumulative=False``.
        chosen: (N, horizon, C, H, W) the aggregate of the final beams (beam 0 for argmax).
        step_scores: (N, B', horizon) the step score of each state along each final beam.
        parents: (N, B', horizon) int64: for each final beam, the index of the beam at step t-1 its state at
            step t was proposed from (0 at t=0, the single starting beam).
        proposals: the number of candidates generated in total (cost instrumentation).
    """

    trajectories: Tensor
    scores: Tensor
    chosen: Tensor
    step_scores: Tensor
    parents: Tensor
    proposals: int


def _check_settings(horizon: int, beam_width: int, expansions: int) -> None:
    for name, value in (("horizon", horizon), ("beam_width", beam_width), ("expansions", expansions)):
        if value < 1:
            raise ConfigError(f"beam search {name} must be >= 1, got {value}")


def _check_inputs(window: Tensor, targets: Tensor | None, horizon: int) -> None:
    if window.dim() != 5:
        raise ConfigError(f"beam search needs a window (N, N_in, C, H, W); got shape {tuple(window.shape)}")
    n, _, *state = window.shape
    if targets is not None and tuple(targets.shape) != (n, horizon, *state):
        raise ConfigError(
            f"beam search targets must have shape (N, horizon, C, H, W) = {(n, horizon, *state)}; "
            f"got {tuple(targets.shape)}"
        )


def _check_proposals(candidates: Tensor, m: int, expansions: int, state: tuple[int, ...]) -> None:
    """Check one step's proposals (M, K, C, H, W) against the search settings."""
    if candidates.dim() != 5 or candidates.shape[0] != m or tuple(candidates.shape[2:]) != state:
        raise ConfigError(
            f"the proposer must return (M, K, C, H, W) = ({m}, K, {', '.join(map(str, state))}); "
            f"got {tuple(candidates.shape)}"
        )
    if candidates.shape[1] != expansions:
        raise ConfigError(
            f"the proposer returned {candidates.shape[1]} candidates per window but the search expects "
            f"expansions={expansions}; set expansions to the proposer's K"
        )


def _check_scores(step: Tensor, m: int, expansions: int) -> None:
    if tuple(step.shape) != (m, expansions):
        raise ConfigError(f"the scorer must return (M, K) = ({m}, {expansions}); got {tuple(step.shape)}")


class BeamSearch:
    """Batched beam search with ``horizon`` lead steps, ``beam_width`` beams and ``expansions`` (K) per beam.

    ``aggregator`` combines the final beams into ``SearchResult.chosen``; each beam's total scores its whole
    trajectory, so the same weights apply at every lead (the beams are aggregated as (N, B', horizon*C, H, W)
    states). The default is argmax, i.e. beam 0.
    """

    def __init__(
        self,
        horizon: int,
        beam_width: int,
        expansions: int,
        *,
        cumulative: bool = True,
        aggregator: Aggregator | None = None,
    ) -> None:
        _check_settings(horizon, beam_width, expansions)
        self.horizon = horizon
        self.beam_width = beam_width
        self.expansions = expansions
        self.cumulative = cumulative
        self.aggregator = aggregator if aggregator is not None else Aggregator()

    def __call__(
        self, propose: Proposer, score: Scorer, window: Tensor, targets: Tensor | None = None
    ) -> SearchResult:
        """Search from ``window`` (N, N_in, C, H, W); ``targets`` (N, horizon, C, H, W) go to the scorer."""
        _check_inputs(window, targets, self.horizon)
        n, n_in, *state = window.shape
        k = self.expansions
        rows = torch.arange(n, device=window.device)[:, None]
        windows = window  # (N*b, N_in, C, H, W), beams of a sample adjacent
        total: Tensor | None = None  # (N, b) the live beams' totals
        states, step_scores, parents = [], [], []  # per step: (N, b_t, C, H, W), (N, b_t), (N, b_t)
        proposals = 0
        for t in range(self.horizon):
            b = windows.shape[0] // n
            candidates = propose(windows, t)
            _check_proposals(candidates, n * b, k, tuple(state))
            target = None if targets is None else targets[:, t : t + 1].repeat_interleave(b, dim=0)
            step = score(candidates, target, t)
            _check_scores(step, n * b, k)
            proposals += n * b * k
            step = step.reshape(n, b * k)
            if total is None or not self.cumulative:
                ranking = step
            else:
                ranking = (total[:, :, None] + step.reshape(n, b, k)).reshape(n, b * k)
            total, flat = torch.topk(ranking, min(self.beam_width, b * k), dim=1, largest=True, sorted=True)
            parent = torch.div(flat, k, rounding_mode="floor")
            new = candidates.reshape(n, b * k, *state)[rows, flat]  # (N, b', C, H, W)
            states.append(new)
            step_scores.append(step[rows, flat])
            parents.append(parent)
            kept = windows.reshape(n, b, n_in, *state)[rows, parent, 1:]  # (N, b', N_in - 1, C, H, W)
            windows = torch.cat([kept, new[:, :, None].to(windows.dtype)], dim=2).reshape(-1, n_in, *state)

        # Trace the final beams back through the stored back-pointers.
        beam = torch.arange(total.shape[1], device=window.device).expand(n, -1)
        traced_states, traced_steps, traced_parents = [], [], []
        for t in reversed(range(self.horizon)):
            traced_states.append(states[t][rows, beam])
            traced_steps.append(step_scores[t][rows, beam])
            beam = parents[t][rows, beam]
            traced_parents.append(beam)
        trajectories = torch.stack(traced_states[::-1], dim=2)  # (N, B', horizon, C, H, W)
        n_beams = trajectories.shape[1]
        flat_lead = trajectories.reshape(n, n_beams, self.horizon * state[0], *state[1:])
        chosen = self.aggregator(flat_lead, total).reshape(n, self.horizon, *state)
        return SearchResult(
            trajectories=trajectories,
            scores=total,
            chosen=chosen,
            step_scores=torch.stack(traced_steps[::-1], dim=2),
            parents=torch.stack(traced_parents[::-1], dim=2),
            proposals=proposals,
        )


class _Beam(NamedTuple):
    window: Tensor  # (1, N_in, C, H, W)
    total: Tensor | None  # 0-d
    states: list[Tensor]  # per step (C, H, W)
    step_scores: list[Tensor]  # per step, 0-d
    parents: list[int]


def looped_beam_search(
    propose: Proposer,
    score: Scorer,
    window: Tensor,
    targets: Tensor | None,
    horizon: int,
    beam_width: int,
    expansions: int,
    cumulative: bool = True,
) -> SearchResult:
    """The plain beam search a user would write: Python loops over samples, beams and candidates.

    Calls ``propose`` and ``score`` with one window at a time (M = 1) and ranks candidates with a stable
    ``sorted`` by total, descending (equal totals keep the earlier beam, then the earlier k). ``chosen`` is
    the best beam. Same inputs and outputs as :class:`BeamSearch`, which it matches when no totals tie.
    """
    _check_settings(horizon, beam_width, expansions)
    _check_inputs(window, targets, horizon)
    state = tuple(window.shape[2:])
    proposals = 0
    finals = []
    for i in range(window.shape[0]):
        beams = [_Beam(window[i : i + 1], None, [], [], [])]
        for t in range(horizon):
            pool = []
            for j, beam in enumerate(beams):
                candidates = propose(beam.window, t)
                _check_proposals(candidates, 1, expansions, state)
                step = score(candidates, None if targets is None else targets[i : i + 1, t : t + 1], t)
                _check_scores(step, 1, expansions)
                proposals += expansions
                for c in range(expansions):
                    s = step[0, c]
                    total = s if beam.total is None or not cumulative else beam.total + s
                    pool.append((total, j, s, candidates[0, c]))
            pool = sorted(pool, key=lambda entry: float(entry[0]), reverse=True)
            beams = [
                _Beam(
                    torch.cat([beams[j].window[:, 1:], new[None, None].to(window.dtype)], dim=1),
                    total,
                    [*beams[j].states, new],
                    [*beams[j].step_scores, s],
                    [*beams[j].parents, j],
                )
                for total, j, s, new in pool[:beam_width]
            ]
        finals.append(beams)
    trajectories = torch.stack([torch.stack([torch.stack(b.states) for b in beams]) for beams in finals])
    return SearchResult(
        trajectories=trajectories,
        scores=torch.stack([torch.stack([b.total for b in beams]) for beams in finals]),
        chosen=trajectories[:, 0],
        step_scores=torch.stack(
            [torch.stack([torch.stack(b.step_scores) for b in beams]) for beams in finals]
        ),
        parents=torch.tensor([[b.parents for b in beams] for beams in finals], dtype=torch.int64),
        proposals=proposals,
    )

"""Beam search and aggregators against hand-built lattices, exhaustive search, plain rollouts and the looped
reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from earthcast.errors import ConfigError
from earthcast.planners.aggregate import AGGREGATORS, Aggregator, aggregate
from earthcast.planners.search import BeamSearch, looped_beam_search

STATE = (1, 2, 3)  # (C, H, W)


def _digit_proposer(k: int):
    """States are constant fields whose value spells the path: candidate c of state v is ``10 v + c + 1``."""

    def propose(window: Tensor, t: int) -> Tensor:
        v = window[:, -1, 0, 0, 0]
        values = v[:, None] * 10 + torch.arange(1, k + 1, dtype=window.dtype)
        return values[:, :, None, None, None].expand(-1, -1, *STATE).clone()

    return propose


def _table_scorer(table: dict[int, float]):
    """Score a candidate by looking its (integer) value up in ``table``; every field point must agree."""

    def score(candidates: Tensor, target: Tensor | None, t: int) -> Tensor:
        assert target is None
        assert torch.all(candidates == candidates[:, :, :1, :1, :1])
        codes = candidates[:, :, 0, 0, 0].round().long().tolist()
        return torch.tensor([[table[c] for c in row] for row in codes], dtype=torch.float64)

    return score


def _root(*values: float) -> Tensor:
    """A window (N, 1, C, H, W) of constant fields."""
    return torch.tensor(values, dtype=torch.float64)[:, None, None, None, None].expand(-1, 1, *STATE).clone()


def _path(trajectory: Tensor) -> list[int]:
    """The node values along a (horizon, C, H, W) trajectory."""
    return [round(v) for v in trajectory[:, 0, 0, 0].tolist()]


def test_beam_finds_the_delayed_reward_that_greedy_misses() -> None:
    table = {1: 1.0, 2: 0.6, 3: 0.2}  # step 1: greedy takes 1
    table |= {11: 0.01, 12: 0.02, 13: 0.03, 21: 0.04, 22: 0.05, 23: 0.06, 31: 0.07, 32: 0.9, 33: 0.08}
    table |= {100 * a + 10 * b + c: 0.001 * c for a, b, c in itertools.product((1, 2, 3), repeat=3)}
    table[321] = 5.0  # the big late reward behind the worst first step
    propose, score = _digit_proposer(3), _table_scorer(table)

    beam = BeamSearch(horizon=3, beam_width=3, expansions=3)(propose, score, _root(0.0))
    assert _path(beam.chosen[0]) == [3, 32, 321]
    assert [_path(tr) for tr in beam.trajectories[0]] == [[3, 32, 321], [3, 32, 323], [3, 32, 322]]
    torch.testing.assert_close(beam.scores[0], torch.tensor([6.1, 1.103, 1.102], dtype=torch.float64))
    torch.testing.assert_close(beam.step_scores[0, 0], torch.tensor([0.2, 0.9, 5.0], dtype=torch.float64))
    # After step 1 the beams are [1, 2, 3] (3 is index 2); after step 2 they are [32, 13, 12] (32 is index 0).
    assert beam.parents[0].tolist() == [[0, 2, 0]] * 3
    assert beam.proposals == 3 + 9 + 9

    greedy = BeamSearch(horizon=3, beam_width=1, expansions=3)(propose, score, _root(0.0))
    assert _path(greedy.chosen[0]) == [1, 13, 133]
    torch.testing.assert_close(greedy.scores[0], torch.tensor([1.033], dtype=torch.float64))
    assert greedy.proposals == 9


def test_a_wide_enough_beam_equals_exhaustive_search() -> None:
    k, horizon, roots = 3, 3, (0, 4)
    gen = torch.Generator().manual_seed(1)
    table = {}
    for root in roots:
        for depth in range(1, horizon + 1):
            for digits in itertools.product(range(1, k + 1), repeat=depth):
                table[int(str(root) + "".join(map(str, digits)))] = torch.rand(1, generator=gen).item()
    result = BeamSearch(horizon, beam_width=k**horizon, expansions=k)(
        _digit_proposer(k), _table_scorer(table), _root(*roots)
    )
    for i, root in enumerate(roots):
        ranked = []
        for digits in itertools.product(range(1, k + 1), repeat=horizon):
            nodes = [int(str(root) + "".join(map(str, digits[: d + 1]))) for d in range(horizon)]
            ranked.append((math.fsum(table[v] for v in nodes), nodes))
        ranked.sort(reverse=True)
        assert _path(result.chosen[i]) == ranked[0][1]
        assert [_path(tr) for tr in result.trajectories[i]] == [nodes for _, nodes in ranked]
        np.testing.assert_allclose(result.scores[i].numpy(), [s for s, _ in ranked], rtol=0, atol=1e-12)


def test_one_beam_one_expansion_is_the_plain_autoregressive_rollout() -> None:
    d, horizon = math.prod(STATE), 4
    w_old, w_new = 0.4 * torch.randn(d, d), 0.4 * torch.randn(d, d)

    def propose(window: Tensor, t: int) -> Tensor:
        nxt = window[:, 0].flatten(1) @ w_old + window[:, 1].flatten(1) @ w_new + 0.1 * t
        return nxt.reshape(-1, 1, *STATE).double()  # the states come back in the proposals' dtype

    def score(candidates: Tensor, target: Tensor | None, t: int) -> Tensor:
        return -(candidates**2).mean(dim=(2, 3, 4))

    window = torch.randn(2, 2, *STATE)
    result = BeamSearch(horizon, 1, 1)(propose, score, window)
    assert result.chosen.dtype == torch.float64 and result.trajectories.shape == (2, 1, horizon, *STATE)
    a, b = w_old.double().numpy(), w_new.double().numpy()
    for i in range(2):
        prev, cur = (window[i, j].flatten().double().numpy() for j in range(2))
        for t in range(horizon):
            prev, cur = cur, prev @ a + cur @ b + 0.1 * t
            np.testing.assert_allclose(result.chosen[i, t].flatten().numpy(), cur, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.chosen, result.trajectories[:, 0])


def _random_problem(k: int, n_in: int, calls: list[int] | None = None):
    """A window-dependent proposer tanh(window @ W_c) and a scorer mixing a projection with the target MSE."""
    d = math.prod(STATE)
    weights = torch.randn(k, n_in * d, d) / math.sqrt(n_in * d)
    bias = 0.3 * torch.randn(8, k, d)  # one per lead step
    probe = torch.randn(d)

    def propose(window: Tensor, t: int) -> Tensor:
        if calls is not None:
            calls.append(window.shape[0])
        out = torch.tanh(torch.einsum("mi,kid->mkd", window.flatten(1), weights) + bias[t])
        return out.reshape(window.shape[0], k, *STATE)

    def score(candidates: Tensor, target: Tensor | None, t: int) -> Tensor:
        s = candidates.flatten(2) @ probe
        return s if target is None else s - ((candidates - target) ** 2).mean(dim=(2, 3, 4))

    return propose, score


@pytest.mark.parametrize("cumulative", [True, False])
@pytest.mark.parametrize("with_targets", [True, False])
def test_batched_search_equals_the_looped_reference(cumulative: bool, with_targets: bool) -> None:
    n, beam_width, k, horizon, n_in = 3, 4, 3, 3, 2
    calls: list[int] = []
    propose, score = _random_problem(k, n_in, calls)
    window = torch.randn(n, n_in, *STATE)
    targets = torch.randn(n, horizon, *STATE) if with_targets else None

    got = BeamSearch(horizon, beam_width, k, cumulative=cumulative)(propose, score, window, targets)
    assert calls == [n, n * 3, n * 4]  # one batched call per lead step: 1 -> min(4, 3) -> min(4, 9) beams
    ref = looped_beam_search(propose, score, window, targets, horizon, beam_width, k, cumulative)
    for name in ("trajectories", "scores", "chosen", "step_scores"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=0, atol=1e-6)
    assert torch.equal(got.parents, ref.parents)
    assert got.proposals == ref.proposals == n * k * (1 + 3 + 4)
    assert got.trajectories.shape == (n, beam_width, horizon, *STATE)
    assert torch.all(got.scores[:, :-1] >= got.scores[:, 1:])
    if cumulative:  # totals are the sums of the step scores along each beam
        torch.testing.assert_close(got.scores, got.step_scores.sum(dim=2), rtol=0, atol=1e-6)


def test_the_scorer_sees_each_steps_target() -> None:
    n, k, horizon = 2, 3, 3
    deltas = torch.randn(k, *STATE)
    picks = torch.tensor([[2, 0, 1], [1, 1, 0]])  # the candidate that matches the target, per sample and step
    window = torch.randn(n, 2, *STATE)
    targets, last = [], window[:, -1]
    for t in range(horizon):
        last = last + deltas[picks[:, t]]
        targets.append(last)
    targets = torch.stack(targets, dim=1)

    def propose(window: Tensor, t: int) -> Tensor:
        return window[:, -1:] + deltas

    def score(candidates: Tensor, target: Tensor | None, t: int) -> Tensor:
        assert target is not None and target.shape == (candidates.shape[0], 1, *STATE)
        return -((candidates - target) ** 2).mean(dim=(2, 3, 4))

    result = BeamSearch(horizon, beam_width=2, expansions=k)(propose, score, window, targets)
    torch.testing.assert_close(result.chosen, targets, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.step_scores[:, 0], torch.zeros(n, horizon), rtol=0, atol=1e-10)
    assert torch.all(result.scores[:, 1] < -1e-3)


def test_aggregate_modes_match_hand_computation() -> None:
    candidates = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 1, 1, 2) ** 1.5
    scores = torch.tensor([[0.5, 2.0, -1.0], [1.0, 3.0, 3.0]], dtype=torch.float64)

    argmax = aggregate(candidates, scores)
    torch.testing.assert_close(argmax[0], candidates[0, 1])
    torch.testing.assert_close(argmax[1], candidates[1, 1])  # tie between 1 and 2: the lower index wins

    top2 = aggregate(candidates, scores, "top_m", top_m=2)
    torch.testing.assert_close(top2[0], (candidates[0, 1] + candidates[0, 0]) / 2)
    torch.testing.assert_close(top2[1], (candidates[1, 1] + candidates[1, 2]) / 2)
    torch.testing.assert_close(aggregate(candidates, scores, "top_m", top_m=1), argmax)

    soft = aggregate(candidates, scores, "softmax", temperature=0.5)
    for i in range(2):
        e = [math.exp(s / 0.5) for s in scores[i].tolist()]
        expected = sum(w / sum(e) * candidates[i, j] for j, w in enumerate(e))
        torch.testing.assert_close(soft[i], expected)

    agg = Aggregator("top_m", top_m=2)
    torch.testing.assert_close(agg(candidates, scores), top2)
    assert AGGREGATORS == ("argmax", "top_m", "softmax")


def test_bad_settings_raise_config_error() -> None:
    candidates, scores = torch.randn(2, 3, *STATE), torch.randn(2, 3)
    with pytest.raises(ConfigError, match="argmax, top_m, softmax"):
        aggregate(candidates, scores, "median")
    with pytest.raises(ConfigError, match="top_m=4"):
        aggregate(candidates, scores, "top_m", top_m=4)
    with pytest.raises(ConfigError, match="top_m"):
        Aggregator("top_m", top_m=0)
    with pytest.raises(ConfigError, match="temperature"):
        Aggregator("softmax", temperature=0.0)
    with pytest.raises(ConfigError, match="same leading axes"):
        aggregate(candidates, scores[:, :2])
    with pytest.raises(ConfigError, match="beam_width"):
        BeamSearch(horizon=2, beam_width=0, expansions=3)

    propose, score = _random_problem(3, 2)
    window = torch.randn(2, 2, *STATE)
    with pytest.raises(ConfigError, match="expansions=4"):
        BeamSearch(2, 2, 4)(propose, score, window)
    with pytest.raises(ConfigError, match="expansions=4"):
        looped_beam_search(propose, score, window, None, 2, 2, 4)
    with pytest.raises(ConfigError, match="targets"):
        BeamSearch(2, 2, 3)(propose, score, window, torch.randn(2, 3, *STATE))


def test_per_step_ranking_differs_from_cumulative() -> None:
    table = {1: 1.0, 2: 0.1, 11: 0.2, 12: 0.3, 21: 0.5, 22: 0.4}
    propose, score = _digit_proposer(2), _table_scorer(table)

    total = BeamSearch(2, 2, 2)(propose, score, _root(0.0))
    assert _path(total.chosen[0]) == [1, 12]  # 1.3 beats 2 -> 21 at 0.6
    torch.testing.assert_close(total.scores[0], torch.tensor([1.3, 1.2], dtype=torch.float64))

    greedy = BeamSearch(2, 2, 2, cumulative=False)(propose, score, _root(0.0))
    assert _path(greedy.chosen[0]) == [2, 21]  # the last step alone: 0.5 beats 0.4, 0.3 and 0.2
    assert [_path(tr) for tr in greedy.trajectories[0]] == [[2, 21], [2, 22]]
    torch.testing.assert_close(greedy.scores[0], torch.tensor([0.5, 0.4], dtype=torch.float64))
    torch.testing.assert_close(greedy.step_scores[0, 0], torch.tensor([0.1, 0.5], dtype=torch.float64))

"""Inference critics of earthcast.planners.critics against hand values and explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.critics import AgreementCritic, ConservationCritic, LearnedCritic, SpectrumCritic
from earthcast.planners.rewards import Reward


def test_conservation_critic_hand_case() -> None:
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1] = torch.tensor(
        [[1.0, 1.0], [3.0, 3.0]]
    )  # weights 0.5, 1.5: global mean (0.5·2 + 1.5·6) / 4 = 2.5
    x[0, 0] = 7.0
    critic = ConservationCritic(
        torch.tensor([5.0, 2.0]), torch.tensor([1.0, 0.25]), [1], torch.tensor([0.5, 1.5])
    )
    assert not critic.needs_truth and isinstance(critic, Reward)
    torch.testing.assert_close(critic(x), torch.tensor([-2.0]))
    both = ConservationCritic(torch.tensor([5.0, 2.0]), torch.tensor([1.0, 0.25]), [0, 1], [0.5, 1.5])
    torch.testing.assert_close(both(x, None), torch.tensor([-4.0]))


def test_agreement_critic_matches_explicit_loops() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 2, 4, 5))
    scale = np.array([1.0, 3.0])
    want = np.zeros((2, 3))
    for n in range(2):
        mean = x[n].mean(0)
        for k in range(3):
            want[n, k] = -np.mean(((x[n, k] - mean) / scale[:, None, None]) ** 2)
    got = AgreementCritic(torch.tensor(scale))(torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    with pytest.raises(ConfigError, match="K, C, H, W"):
        AgreementCritic()(torch.zeros(2, 4, 5))


def test_spectrum_critic_from_samples() -> None:
    samples = torch.randn(1, 2, 6, 16, dtype=torch.float64)
    critic = SpectrumCritic.from_samples(samples, torch.linspace(0.5, 1.5, 6))
    assert not critic.needs_truth
    assert critic(samples[0]).item() == pytest.approx(0.0, abs=1e-12)
    candidates = 2 * samples[0].expand(3, 4, 2, 6, 16)
    torch.testing.assert_close(critic(candidates), torch.full((3, 4), -math.log(4.0), dtype=torch.float64))
    with pytest.raises(ConfigError, match="from_samples on this grid"):
        critic(torch.zeros(2, 6, 8))


def test_learned_critic_shape_needs_state_and_longitude_invariance() -> None:
    critic = LearnedCritic(2, torch.linspace(0.5, 1.5, 6), width=8)
    state, pred = torch.randn(3, 1, 2, 6, 12), torch.randn(3, 4, 2, 6, 12)
    out = critic(pred, state=state)
    assert out.shape == (3, 4) and not critic.needs_truth
    # circular padding + zonal mean pool: rolling both inputs in longitude leaves the score unchanged.
    rolled = critic(pred.roll(5, dims=-1), state=state.roll(5, dims=-1))
    torch.testing.assert_close(rolled, out, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="current state"):
        critic(pred)


def test_learned_critic_fit_step_reduces_loss() -> None:
    critic = LearnedCritic(1, torch.ones(4), width=8)
    state, candidates = torch.randn(8, 1, 1, 4, 8), torch.randn(8, 3, 1, 4, 8)
    truth = -(candidates - state).pow(2).mean((-3, -2, -1))  # (8, 3)
    optimiser = torch.optim.Adam(critic.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimiser.zero_grad()
        loss = critic.fit_step(state, candidates, truth)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

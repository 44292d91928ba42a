"""Candidate generators: shapes, the base forecast as candidate 0, no seam at the date line, the pole fold of
winds, and a world model that really uses its action and its state."""

from __future__ import annotations

import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.heads import BeamVQHead, ConditionalWorldModel, HeadConfig

C, H, W = 3, 8, 16
CFG = HeadConfig(width=8, dim=8, num_codes=16, k=4)


def _randomise(module: torch.nn.Module) -> None:
    """Give the zero-initialised output convolutions random weights, as training would."""
    torch.manual_seed(1)
    for name, p in module.named_parameters():
        if "decoder.out" in name:
            p.data.normal_(0, 0.1)


def test_untrained_head_proposes_the_base_forecast_and_candidate_zero_is_the_base():
    torch.manual_seed(0)
    head = BeamVQHead(C, "global", config=CFG).eval()
    state, forecast = torch.randn(2, C, H, W), torch.randn(2, C, H, W)
    cands = head.propose(state, forecast)
    assert cands.shape == (2, 4, C, H, W)
    assert torch.equal(cands, forecast[:, None].expand_as(cands))  # the decoder starts at zero
    _randomise(head)
    cands = head.propose(state, forecast)
    assert torch.equal(cands[:, 0], forecast) and not torch.allclose(cands[:, 1], forecast)
    assert torch.equal(head.propose(state, forecast, k=1), forecast[:, None])
    assert torch.allclose(head.main(state, forecast), cands[:, 1], atol=1e-6)  # rank-1 code = main forecast


def test_candidates_follow_a_longitude_roll_without_a_seam():
    torch.manual_seed(0)
    for module in (BeamVQHead(C, "global", config=CFG), ConditionalWorldModel(C, "global", config=CFG)):
        module.eval()
        _randomise(module)
        a, b = torch.randn(1, C, H, W), torch.randn(1, C, H, W)
        shift = 4  # a multiple of the 4× coarsening: circular padding makes the head equivariant to it
        rolled = module.propose(a.roll(shift, -1), b.roll(shift, -1))
        assert torch.allclose(rolled, module.propose(a, b).roll(shift, -1), atol=1e-5), type(module).__name__


def test_winds_flip_sign_across_the_pole_fold_in_both_encoders():
    """The stems see raw fields: u and v (channels 0, 1 of 3) flip across the pole in the forecast and the state
    copies of BeamVQ's input, and in both world-model encoders (the fold itself is tested in test_geometry)."""
    head = BeamVQHead(C, "global", vector_channels=(0, 1), config=CFG)
    assert head.encoder.stem.vector_sign.tolist() == [-1.0, -1.0, 1.0] * 2
    wm = ConditionalWorldModel(C, "global", vector_channels=(0, 1), config=CFG)
    for encoder in (wm.action_encoder, wm.state_encoder):
        assert encoder.stem.vector_sign.tolist() == [-1.0, -1.0, 1.0]
    assert BeamVQHead(C, "regional", vector_channels=(0, 1), config=CFG).encoder.stem.vector_sign is None


def test_world_model_uses_its_action_and_its_state():
    torch.manual_seed(0)
    wm = ConditionalWorldModel(C, "global", config=CFG).eval()
    _randomise(wm)
    state, action = torch.randn(2, C, H, W), torch.randn(2, C, H, W)
    futures = wm.propose(state, action)
    assert futures.shape == (2, 4, C, H, W)
    assert not torch.allclose(futures, wm.propose(state, torch.randn_like(action)))
    assert not torch.allclose(
        futures - state[:, None], wm.propose(torch.randn_like(state), action) - state[:, None]
    )


def test_bad_sizes_are_refused():
    with pytest.raises(ConfigError):
        HeadConfig(width=0)
    with pytest.raises(ConfigError, match="num_codes"):
        BeamVQHead(C, "global", config=HeadConfig(num_codes=4, k=8)).propose(
            torch.randn(1, C, H, W), torch.randn(1, C, H, W)
        )

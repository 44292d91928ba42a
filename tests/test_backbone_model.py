"""The Backbone: every block pattern trains, shapes and padding, parameter groups, bad input, and the
interpreted Triton path end to end."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from earthcast.models.backbone import (
    Backbone,
    BackboneConfig,
    Mamba2Mixer2d,
    MoEConfig,
    TokenBackbone,
    count_parameters,
    param_groups,
)

TINY = dict(width=32, heads=2, kv_heads=1, d_state=16, headdim=16, expand=2, chunk_size=16)


def _fixed_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny deterministic regression: learn a smoothed, shifted copy of a 2-channel 8x8 field."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    target = 0.5 * (x.roll(1, dims=-1) + x.roll(-1, dims=-2))
    return x, target


@pytest.mark.parametrize(
    ("pattern", "extra"),
    [
        ("AMF MF", {}),
        ("MF", {"scan": "cross"}),
        ("A F", {"pos_embed": "learned", "max_grid": (4, 4)}),
        ("T F", {}),
        ("TF TF", {"trans_mode": ["attn", "split"], "scan": "hilbert"}),
        ("AME ME", {"moe": MoEConfig(num_experts=3, top_k=2, expert_hidden=[16, 24, 32])}),
    ],
)
def test_every_pattern_builds_and_trains(pattern: str, extra: dict) -> None:
    model = Backbone(2, pattern=pattern, patch_size=2, backend="reference", **TINY, **extra)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.01), lr=3e-3)
    x, target = _fixed_problem()
    losses = []
    for step in range(4):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target) + model.aux_loss()
        loss.backward()
        if step == 0:
            # Every parameter gets a finite gradient (SSM-only parameters of an attn-mode T layer excepted).
            for name, p in model.named_parameters():
                ssm_only = any(s in name for s in ("A_log", "dt_bias")) and "attn" in str(
                    extra.get("trans_mode")
                )
                if p.grad is None:
                    assert ssm_only and "blocks.0." in name, f"{name} got no gradient"
                else:
                    assert torch.isfinite(p.grad).all(), name
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    if "moe" in extra:
        assert model.aux_loss() > 0


def test_shapes_padding_and_token_backbone() -> None:
    model = Backbone(3, out_channels=5, pattern="AMF", patch_size=4, backend="reference", **TINY)
    x = torch.randn(2, 3, 9, 10)  # not a multiple of 4: replicate-padded to 12 x 12 and cropped back
    y = model(x)
    assert y.shape == (2, 5, 9, 10)
    padded = F.pad(x, (0, 2, 0, 3), mode="replicate")
    torch.testing.assert_close(y, model(padded)[..., :9, :10])
    strict = Backbone(3, pattern="MF", patch_size=4, pad_mode="error", backend="reference", **TINY)
    with pytest.raises(ValueError, match=r"field size \(9, 10\) is not divisible by patch_size=4.*pad"):
        strict(x)
    tokens = TokenBackbone(pattern="AMF MF", backend="reference", **TINY)
    seq = torch.randn(2, 12, 32)
    assert tokens(seq).shape == (2, 12, 32)  # a 1-D sequence, grid (1, 12)
    assert tokens(seq, (3, 4)).shape == (2, 12, 32)
    with pytest.raises(ValueError, match=r"grid \(5, 4\) has 20 cells but there are 12 tokens"):
        tokens(seq, (5, 4))
    # Config object and keyword settings build the same model.
    cfg = BackboneConfig(pattern="AMF MF", backend="reference", **TINY)
    assert count_parameters(TokenBackbone(cfg)) == count_parameters(tokens)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    kwargs = dict(pattern="AMF MF", patch_size=2, backend="reference", **TINY)
    plain, checkpointed = Backbone(2, **kwargs), Backbone(2, grad_checkpoint=True, **kwargs)
    checkpointed.load_state_dict(plain.state_dict())
    x, target = _fixed_problem()
    for model in (plain, checkpointed):
        F.mse_loss(model(x), target).backward()
    ck_params = dict(checkpointed.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, ck_params[name].grad, msg=name)


def test_depth_by_repeats_and_parameter_count() -> None:
    model = TokenBackbone(pattern="AMF MF", repeats=3, backend="reference", **TINY)
    assert [b.letters for b in model.blocks] == ["AMF", "MF"] * 3
    by_hand = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == by_hand
    model.norm.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == by_hand - 32


def test_param_groups_exclude_ssm_params_norms_and_biases() -> None:
    model = Backbone(
        2, pattern="AMF", patch_size=2, backend="reference", pos_embed="learned", max_grid=(4, 4), **TINY
    )
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids, no_decay_ids = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    names = dict(model.named_parameters())
    assert decay_ids.isdisjoint(no_decay_ids) and len(decay_ids) + len(no_decay_ids) == len(names)
    for name, p in names.items():
        # Matrices and conv kernels decay; vectors (biases, norm weights, A_log, D, dt_bias) and the learned
        # position table do not.
        expect_no_decay = p.dim() < 2 or name.endswith("pos_embed")
        assert (id(p) in no_decay_ids) == expect_no_decay, name
    mixer = model.tokens.blocks[0].sublayers[1].layer
    for p in (mixer.A_log, mixer.D, mixer.dt_bias, mixer.norm_weight, mixer.conv2d.bias):
        assert id(p) in no_decay_ids
    for p in (mixer.in_proj.weight, mixer.conv2d.weight, mixer.out_proj.weight):
        assert id(p) in decay_ids


def test_bad_input_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown layer letter 'X'.*valid letters: A \(attention\), M .*E \(MoE FFN\)"
    ):
        Backbone(2, pattern="AMF XF", **TINY)
    with pytest.raises(ValueError, match="width=30 is not divisible by heads=4"):
        TokenBackbone(pattern="AF", width=30, heads=4)
    with pytest.raises(ValueError, match=r"expand\*width = 2\*32 = 64 is not divisible by headdim=24"):
        TokenBackbone(pattern="MF", **{**TINY, "headdim": 24})
    with pytest.raises(
        ValueError, match=r"headdim 256 is not supported by the Triton SSD kernel.*backend='reference'"
    ):
        Mamba2Mixer2d(128, headdim=256, d_state=16, chunk_size=16, backend="triton")
    with pytest.raises(ValueError, match="d_state 256 is not supported by the Triton SSD kernel"):
        Mamba2Mixer2d(32, headdim=16, d_state=256, chunk_size=16, backend="triton")
    # On the automatic path the kernel's own check fires at the first forward (CPU interpreter here).
    mixer = Mamba2Mixer2d(32, headdim=16, d_state=256, chunk_size=16)
    with pytest.raises(ValueError, match="d_state 256 is not supported by the Triton SSD kernel"):
        mixer(torch.randn(1, 4, 32), (2, 2))
    with pytest.raises(ValueError, match="moe settings were given but pattern 'AMF' has no 'E'"):
        TokenBackbone(pattern="AMF", moe=MoEConfig(), **TINY)
    with pytest.raises(ValueError, match="trans_mode lists 1 modes but the pattern has 2 T layers"):
        TokenBackbone(pattern="TF TF", trans_mode=["attn"], **TINY)
    with pytest.raises(ValueError, match="pos_embed='learned' needs max_grid"):
        TokenBackbone(pattern="AF", pos_embed="learned", **TINY)
    with pytest.raises(TypeError, match=r"unknown backbone settings \['widht'\]"):
        TokenBackbone(pattern="AF", widht=32)


@pytest.mark.parametrize(
    ("pattern", "extra"), [("MF", {}), ("TF", {"trans_mode": "split", "scan": "hilbert"})]
)
def test_interpreted_triton_path_matches_reference(pattern: str, extra: dict) -> None:
    """The real Triton SSD and gated-RMSNorm kernels (interpreted on CPU) inside the backbone: outputs and all
    gradients equal the PyTorch reference path with the same weights (TF split: seeded initial_states too)."""
    kwargs = dict(pattern=pattern, patch_size=2, **{**TINY, "width": 16}, **extra)
    triton_model = Backbone(2, backend=None, **kwargs)
    reference_model = Backbone(2, backend="reference", **kwargs)
    reference_model.load_state_dict(triton_model.state_dict())
    x = torch.randn(1, 2, 8, 12)  # 4 x 6 = 24 tokens, 2 directions folded, 2 chunks of 16 (ragged)
    y_tri, y_ref = triton_model(x), reference_model(x)
    for backends, expected in (
        (triton_model.kernel_backends(), "triton"),
        (reference_model.kernel_backends(), "reference"),
    ):
        assert len(backends) == 1
        assert set(next(iter(backends.values())).items()) == {
            ("ssd_scan", expected),
            ("gated_rms_norm", expected),
        }
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-4, atol=1e-5)
    y_tri.square().mean().backward()
    y_ref.square().mean().backward()
    ref_params = dict(reference_model.named_parameters())
    for name, p in triton_model.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_on_interpreter_path_is_upcast_with_a_warning() -> None:
    mixer = Mamba2Mixer2d(16, d_state=16, headdim=16, chunk_size=16).to(torch.bfloat16)
    x = torch.randn(1, 4, 16, dtype=torch.bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = mixer(x, (2, 2))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    messages = [str(w.message) for w in caught]
    assert any("upcast to float32" in m and "interpreter" in m for m in messages), messages

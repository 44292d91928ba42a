"""Attention (2-D RoPE, GQA) and FFN (SwiGLU, MoE) layers against hand-written float64 references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from earthcast.models.backbone import GQAttention2d, MoEConfig, MoEFFN, SwiGLU, apply_rope, rope_2d_angles


# ----------------------------------------------------------------------------------------------------- RoPE
def _complex_rope(x: torch.Tensor, row: int, col: int, theta: float = 10000.0) -> torch.Tensor:
    """Independent 2-D RoPE: channel pairs as complex numbers, first half turned by row * freq, second by col."""
    d = x.shape[-1]
    quarter = d // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    angle = torch.cat([row * freqs, col * freqs])
    rotated = torch.view_as_complex(x.reshape(-1, 2).contiguous()) * torch.polar(
        torch.ones_like(angle), angle
    )
    return torch.view_as_real(rotated).reshape(d)


def test_rope_2d_matches_complex_rotation_and_is_relative() -> None:
    grid, d = (6, 7), 16
    angles = rope_2d_angles(grid, d)
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    rotated = apply_rope(q.expand(42, d), angles)
    for idx in (0, 9, 41):
        torch.testing.assert_close(rotated[idx], _complex_rope(q, idx // 7, idx % 7))
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(42))  # rotations keep the norm

    def score(p: tuple[int, int], r: tuple[int, int]) -> float:
        qi, kj = (
            apply_rope(q[None], angles[p[0] * 7 + p[1]][None]),
            apply_rope(k[None], angles[r[0] * 7 + r[1]][None]),
        )
        return float((qi * kj).sum())

    # Same offset (dr, dc) = (1, -2) at different absolute positions gives the same score ...
    reference = score((1, 3), (0, 5))
    for p, r in [((2, 4), (1, 6)), ((5, 2), (4, 4)), ((3, 0), (2, 2))]:
        assert score(p, r) == pytest.approx(reference, rel=1e-10, abs=1e-12)
    # ... and a different offset along either axis changes it.
    assert abs(score((1, 3), (1, 5)) - reference) > 1e-6
    assert abs(score((1, 3), (0, 4)) - reference) > 1e-6


def test_rope_needs_head_dim_divisible_by_four() -> None:
    with pytest.raises(ValueError, match=r"head size width/heads = 6 divisible by 4.*pos_embed='learned'"):
        GQAttention2d(24, heads=4, rope=True)
    GQAttention2d(24, heads=4, rope=False)  # fine without RoPE


# ------------------------------------------------------------------------------------------------------ GQA
@pytest.mark.parametrize("rope", [True, False])
def test_gqa_matches_naive_repeat_kv_attention(rope: bool) -> None:
    width, heads, kv_heads, grid = 32, 4, 2, (3, 5)
    attn = GQAttention2d(width, heads=heads, kv_heads=kv_heads, rope=rope, qkv_bias=True).double()
    x = torch.randn(2, 15, width, dtype=torch.float64)
    hd = width // heads
    q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(2, 15, heads, hd)
    kv = F.linear(x, attn.kv_proj.weight, attn.kv_proj.bias).view(2, 15, 2, kv_heads, hd)
    k, v = kv[:, :, 0], kv[:, :, 1]
    if rope:
        pos = [(t // grid[1], t % grid[1]) for t in range(15)]
        q = torch.stack([torch.stack([_complex_rope(q[b, t, h], *pos[t]) for h in range(heads)]) for b in range(2) for t in range(15)]).view(2, 15, heads, hd)  # fmt: skip
        k = torch.stack([torch.stack([_complex_rope(k[b, t, h], *pos[t]) for h in range(kv_heads)]) for b in range(2) for t in range(15)]).view(2, 15, kv_heads, hd)  # fmt: skip
    k, v = k.repeat_interleave(heads // kv_heads, dim=2), v.repeat_interleave(heads // kv_heads, dim=2)
    weights = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(hd), dim=-1)
    expected = torch.einsum("bhlm,bmhd->blhd", weights, v).reshape(2, 15, width) @ attn.out_proj.weight.t()
    torch.testing.assert_close(attn(x, grid), expected, rtol=1e-10, atol=1e-10)


def test_attention_rejects_bad_head_counts() -> None:
    with pytest.raises(ValueError, match="width=30 is not divisible by heads=4"):
        GQAttention2d(30, heads=4)
    with pytest.raises(ValueError, match="heads=4 is not divisible by kv_heads=3"):
        GQAttention2d(32, heads=4, kv_heads=3)


# ------------------------------------------------------------------------------------------------------ FFN
def test_swiglu_formula() -> None:
    ffn = SwiGLU(8, 12).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    gate, up = ffn.w_in.weight[:12], ffn.w_in.weight[12:]
    expected = (F.silu(x @ gate.t()) * (x @ up.t())) @ ffn.w_out.weight.t()
    torch.testing.assert_close(ffn(x), expected)


def _expected_keep(experts: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """GShard priority by hand: slot 0 of every token first, then slot 1, tokens in order."""
    keep = torch.zeros_like(experts, dtype=torch.bool)
    used = [0] * num_experts
    for slot in range(experts.shape[1]):
        for t in range(experts.shape[0]):
            e = int(experts[t, slot])
            if used[e] < capacity:
                keep[t, slot], used[e] = True, used[e] + 1
    return keep


def _hand_aux_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int) -> float:
    counts = [0] * num_experts
    for e in experts.flatten().tolist():
        counts[e] += 1
    f = [c / experts.numel() for c in counts]
    mean_p = probs.double().mean(0).tolist()
    return num_experts * sum(fe * pe for fe, pe in zip(f, mean_p))


def test_moe_routing_respects_capacity_and_output_is_the_kept_mixture() -> None:
    cfg = MoEConfig(num_experts=4, top_k=2, capacity_factor=0.75, expert_hidden=[8, 12, 16, 20])
    moe = MoEFFN(8, cfg).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    with torch.no_grad():  # skew the router so experts overflow
        moe.router.weight[0] += 2 * x.reshape(-1, 8).mean(0)
    y = moe(x)
    routing = moe.last_routing
    tokens = x.reshape(-1, 8)
    capacity = math.ceil(0.75 * 22 * 2 / 4)
    assert moe.capacity(22) == capacity
    assert torch.equal(routing.keep, _expected_keep(routing.experts, 4, capacity))
    for e in range(4):
        assert int(((routing.experts == e) & routing.keep).sum()) <= capacity
    assert not routing.keep.all()  # the skewed router really overflowed
    # Hand-computed top-2 from the float64 softmax.
    probs = torch.softmax(tokens @ moe.router.weight.t(), dim=-1)
    top_p, top_e = probs.topk(2, dim=-1)
    assert torch.equal(routing.experts, top_e)
    torch.testing.assert_close(routing.weights, top_p / top_p.sum(-1, keepdim=True))
    expected = moe.shared(tokens).clone()
    for t in range(22):
        for slot in range(2):
            if routing.keep[t, slot]:
                e = int(top_e[t, slot])
                expected[t] += routing.weights[t, slot] * moe.experts[e](tokens[t : t + 1])[0]
    torch.testing.assert_close(y, expected.view_as(x))
    assert [ex.hidden for ex in moe.experts] == [8, 12, 16, 20]  # heterogeneous widths


def test_moe_balancing_loss_hand_value_and_imbalance() -> None:
    cfg = MoEConfig(num_experts=4, top_k=1, capacity_factor=None)
    moe = MoEFFN(6, cfg).double()
    tokens = torch.randn(32, 6, dtype=torch.float64)
    tokens[:, 0] = 1.0  # a constant feature the gate can key on

    with torch.no_grad():
        moe.router.weight.normal_(0, 0.01)
    balanced = moe.route(tokens)
    assert balanced.aux_loss.item() == pytest.approx(
        _hand_aux_loss(balanced.probs, balanced.experts, 4), rel=1e-12
    )

    with torch.no_grad():  # force every token onto expert 2
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = 5.0
    skewed = moe.route(tokens)
    assert (skewed.experts == 2).all()
    hand = _hand_aux_loss(skewed.probs, skewed.experts, 4)
    assert skewed.aux_loss.item() == pytest.approx(hand, rel=1e-12)
    p2 = math.exp(5) / (math.exp(5) + 3)
    assert hand == pytest.approx(4 * p2)  # f_2 = 1, P_2 = softmax weight of expert 2
    assert skewed.aux_loss > balanced.aux_loss + 1.0
    assert skewed.aux_loss > 3.0 and balanced.aux_loss < 1.5  # E=4 is the maximum, 1 is perfect balance


def test_moe_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="expert_hidden lists 3 widths but num_experts=4"):
        MoEFFN(8, MoEConfig(num_experts=4, expert_hidden=[8, 8, 8]))
    with pytest.raises(ValueError, match="1 <= top_k <= num_experts"):
        MoEFFN(8, MoEConfig(num_experts=2, top_k=3))

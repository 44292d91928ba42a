"""TopKCodebook against brute-force float64 references and hand-computed EMA, loss and perplexity values."""

from __future__ import annotations

import math

import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.codebook import TopKCodebook


def _set_codes(cb: TopKCodebook, codes: torch.Tensor) -> None:
    """Overwrite the codebook (and, in EMA mode, its sums so that stats stay one observation per code)."""
    with torch.no_grad():
        cb.embedding.copy_(codes)
        if cb.ema:
            cb.embed_sum.copy_(codes)


def _grid_of(codes: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """z (B, D, H, W) with z[b, :, h, w] = codes[ids[b, h, w]], built by an explicit loop."""
    b, h, w = ids.shape
    z = torch.empty(b, codes.shape[1], h, w)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                z[i, :, y, x] = codes[ids[i, y, x]]
    return z


def test_topk_matches_bruteforce_and_straight_through() -> None:
    cb = TopKCodebook(16, 4, k=5).eval()
    codes = torch.randn(16, 4)
    _set_codes(cb, codes)
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = cb(z)
    assert out.indices.shape == (2, 5, 3, 5) and out.indices.dtype == torch.int64
    assert out.quantized.shape == (2, 5, 4, 3, 5)

    c64, z64 = codes.double(), z.detach().double()
    for b in range(2):
        for y in range(3):
            for x in range(5):
                d = ((z64[b, :, y, x][None, :] - c64) ** 2).sum(1)
                ref = torch.argsort(d)[:5]
                assert torch.equal(out.indices[b, :, y, x], ref)
                torch.testing.assert_close(out.distances[b, :, y, x].double(), d[ref], atol=1e-5, rtol=1e-5)
    assert (out.distances[:, 1:] >= out.distances[:, :-1]).all()
    # z + (code - z) equals the code up to one rounding step.
    torch.testing.assert_close(out.quantized.detach(), cb.lookup(out.indices), atol=1e-6, rtol=0)

    g = torch.randn(2, 4, 3, 5)
    for r in range(5):
        (grad,) = torch.autograd.grad((out.quantized[:, r] * g).sum(), z, retain_graph=True)
        torch.testing.assert_close(grad, g, atol=0, rtol=0)


def test_layout_recovers_code_ids_at_their_positions() -> None:
    cb = TopKCodebook(12, 3, k=3).eval()
    codes = torch.randn(12, 3) * 3
    _set_codes(cb, codes)
    ids = torch.randperm(12).reshape(2, 2, 3)  # B=2, H=2, W=3: every position a different code
    z = _grid_of(codes, ids)
    out = cb(z)
    assert torch.equal(out.indices[:, 0], ids)
    torch.testing.assert_close(out.quantized[:, 0], z, atol=0, rtol=0)
    assert torch.equal(out.distances[:, 0], torch.zeros(2, 2, 3))


def test_ema_moves_only_the_nearest_code() -> None:
    decay, eps = 0.9, 1e-5
    cb = TopKCodebook(4, 3, k=2, decay=decay, eps=eps).train()
    codes = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [5.0, 5.0, 5.0], [-5.0, -5.0, 5.0]])
    _set_codes(cb, codes)
    size0, sum0 = cb.cluster_size.double().clone(), cb.embed_sum.double().clone()
    before = cb.embedding.clone()
    z = 0.05 * torch.randn(2, 3, 2, 2)  # every position near code 0, second nearest code 1
    out = cb(z)
    assert (out.indices[:, 0] == 0).all() and (out.indices[:, 1] == 1).all()

    # Hand-computed EMA step (float64) from the rank-1 assignment only.
    n_pos = 8
    vectors = z.double().permute(0, 2, 3, 1).reshape(-1, 3)
    counts = torch.tensor([n_pos, 0, 0, 0], dtype=torch.float64)
    size = decay * size0 + (1 - decay) * counts
    sum_0 = decay * sum0[0] + (1 - decay) * vectors.sum(0)
    n = size.sum()
    smoothed_0 = (size[0] + eps) / (n + 4 * eps) * n
    torch.testing.assert_close(cb.embedding[0].double(), sum_0 / smoothed_0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cb.cluster_size.double(), size, atol=1e-6, rtol=1e-6)
    assert torch.equal(cb.embedding[1:], before[1:])  # rank-2 code 1 and the unused codes: bitwise equal
    torch.testing.assert_close(out.loss.double(), 0.25 * (z.double() ** 2).mean(), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_restarted_from_batch_vectors(ema: bool) -> None:
    ids = torch.tensor([[[0, 1], [1, 0]], [[1, 1], [0, 0]]])  # codes 0 and 1 used, code 2 never
    base = _grid_of(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), ids)
    batches = [base + 0.01 * torch.randn(2, 2, 2, 2) for _ in range(2)]
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [10.0, 10.0]])

    def fresh() -> TopKCodebook:
        cb = TopKCodebook(3, 2, k=1, ema=ema, dead_after=2, seed=7).train()
        _set_codes(cb, codes)
        return cb

    cb = fresh()
    assert cb(batches[0]).dead_codes == 0
    assert torch.equal(cb.unused_steps, torch.tensor([0, 0, 1]))
    assert torch.equal(cb.embedding[2].detach(), codes[2])

    assert cb(batches[1]).dead_codes == 1
    restarted = cb.embedding[2].detach()
    vectors = batches[1].permute(0, 2, 3, 1).reshape(-1, 2)
    assert (vectors == restarted).all(1).any()
    assert torch.equal(cb.unused_steps, torch.zeros(3, dtype=torch.long))
    if ema:
        assert cb.cluster_size[2] == 1.0 and torch.equal(cb.embed_sum[2], restarted)

    twin = fresh()  # same seed, same batches -> same restart vector
    for z in batches:
        twin(z)
    assert torch.equal(twin.embedding[2].detach(), restarted)


def test_bad_k_and_channels_raise_config_error() -> None:
    with pytest.raises(ConfigError, match=r"k=9.*num_codes=8"):
        TopKCodebook(8, 4, k=9)
    cb = TopKCodebook(8, 4, k=2)
    with pytest.raises(ConfigError, match=r"k=9.*num_codes=8"):
        cb(torch.randn(1, 4, 2, 2), k=9)
    with pytest.raises(ConfigError, match=r"k=0"):
        cb(torch.randn(1, 4, 2, 2), k=0)
    with pytest.raises(ConfigError, match=r"D=4"):
        cb(torch.randn(1, 3, 2, 2))


def test_eval_mode_changes_no_buffer() -> None:
    cb = TopKCodebook(8, 4, k=3, dead_after=1)
    before = {name: t.clone() for name, t in cb.state_dict().items()}
    out = cb.eval()(torch.randn(2, 4, 3, 3))
    for name, t in cb.state_dict().items():
        assert torch.equal(t, before[name]), name
    assert out.dead_codes == 0


def test_non_ema_loss_and_codebook_gradient_by_hand() -> None:
    cb = TopKCodebook(6, 3, k=2, ema=False, commitment=0.25).train()
    assert "embedding" in dict(cb.named_parameters())
    assert "embedding" not in dict(TopKCodebook(6, 3, k=2).named_parameters())
    _set_codes(cb, torch.randn(6, 3))
    codes = cb.embedding.detach().double().clone()
    z = torch.randn(2, 3, 2, 3, requires_grad=True)
    out = cb(z)

    z64 = z.detach().double()
    q1 = torch.empty_like(z64)
    grad_e = torch.zeros(6, 3, dtype=torch.float64)
    m = z64.numel()
    for b in range(2):
        for y in range(2):
            for x in range(3):
                c = int(((z64[b, :, y, x][None, :] - codes) ** 2).sum(1).argmin())
                q1[b, :, y, x] = codes[c]
                grad_e[c] += 2 * (codes[c] - z64[b, :, y, x]) / m
    mse = ((z64 - q1) ** 2).mean()
    torch.testing.assert_close(out.loss.double(), 0.25 * mse + mse, atol=1e-7, rtol=1e-6)

    out.loss.backward()
    torch.testing.assert_close(cb.embedding.grad.double(), grad_e, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(z.grad.double(), 0.25 * 2 * (z64 - q1) / m, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([0] * 8, 1.0),
        ([0, 1, 2, 3] * 2, 4.0),
        ([0, 0, 0, 0, 1, 1, 2, 2], 2.0**1.5),  # p = (1/2, 1/4, 1/4): entropy 1.5 ln 2
    ],
)
def test_perplexity_by_hand(ids: list[int], expected: float) -> None:
    cb = TopKCodebook(5, 2, k=1).eval()
    codes = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0], [-3.0, -3.0]])
    _set_codes(cb, codes)
    out = cb(_grid_of(codes, torch.tensor(ids).reshape(2, 2, 2)))
    assert math.isclose(float(out.perplexity), expected, rel_tol=1e-6)


def test_dtype_follows_z_and_distances_are_float32() -> None:
    cb = TopKCodebook(8, 4, k=3).eval()
    z = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    out = cb(z)
    assert out.quantized.dtype == torch.float64 and out.distances.dtype == torch.float32
    assert out.loss.dtype == torch.float32

"""Self-training: the leakage guard, the pseudo-label ring buffer, real/pseudo mixing and harvesting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcast.errors import ConfigError
from earthcast.planners.selftrain import (
    LeakageError,
    PseudoLabelBuffer,
    SelfTrainingConfig,
    SelfTrainingLoop,
    TimeGuard,
    mix,
)

HOUR = 3_600_000_000_000  # ns
SPLITS = {"val": ("2018-11-01", "2018-12-31"), "test": ("2019-01-01", "2019-12-31")}


def ns(iso: str) -> int:
    return int(np.datetime64(iso, "ns").astype(np.int64))


def batch(times: list[int], k: int = 2, n_in: int = 2, c: int = 2, h: int = 3, w: int = 4) -> dict:
    """A data-module-shaped batch whose every tensor encodes its row's time (so rows can be traced)."""
    t = torch.tensor(times, dtype=torch.int64)
    b, tag = len(times), (t // HOUR).double()[:, None, None, None, None]  # hours: exact in float32
    return {
        "inputs": tag.float() + torch.zeros(b, n_in, c, h, w),
        "targets": -tag.float() + torch.zeros(b, k, c, h, w),
        "static": tag[:, 0].float() + torch.zeros(b, 1, h, w),
        "forcings": tag.float() + torch.zeros(b, n_in + k, 3, h, w),
        "time": t,
        "mask": torch.ones(b, h, w, dtype=torch.bool),
    }


def train_times(n: int, first: str = "2018-01-01") -> list[int]:
    return [ns(first) + 6 * HOUR * i for i in range(n)]


# ---- guard -------------------------------------------------------------------------------------------


def test_adding_a_test_time_raises_and_leaves_the_buffer_unchanged() -> None:
    buffer = PseudoLabelBuffer(8, TimeGuard.from_splits(SPLITS))
    good = batch(train_times(2))
    buffer.add(good, good["targets"][:, :1])
    before = buffer.state_dict()
    bad = batch([ns("2018-06-01"), ns("2019-03-02T12:00")])
    with pytest.raises(LeakageError, match=r"2019-03-02T12:00:00.*'test'") as info:
        buffer.add(bad, bad["targets"][:, :1])
    assert "training split" in str(info.value)
    after = buffer.state_dict()
    assert len(buffer) == 2
    for key, value in before["data"].items():
        assert torch.equal(after["data"][key], value)


def test_a_target_span_entering_validation_raises() -> None:
    init = ns("2018-10-31T18:00")  # one 6-hourly step before val starts
    TimeGuard.from_splits(SPLITS).check(np.array([init]))  # the init alone is in train
    with pytest.raises(LeakageError, match="'val'"):
        TimeGuard.from_splits(SPLITS, horizon_ns=6 * HOUR).check(torch.tensor([init]))
    TimeGuard.from_splits(SPLITS, horizon_ns=6 * HOUR - 1).check(torch.tensor([init]))


def test_training_times_pass_and_nat_is_refused() -> None:
    guard = TimeGuard.from_splits(SPLITS, horizon_ns=24 * HOUR)
    guard.check(torch.tensor(train_times(100)))
    guard.check(torch.tensor([ns("2018-10-30T23:59:59.999999999")]))  # target 1 ns before val: allowed
    with pytest.raises(LeakageError, match="24 h"):
        guard.check(torch.tensor([ns("2018-10-31T00:00")]))  # target exactly at val start
    with pytest.raises(LeakageError, match="NaT"):
        guard.check(np.array(["NaT"], "datetime64[ns]").astype(np.int64))


def test_from_splits_date_only_end_covers_the_whole_day() -> None:
    guard = TimeGuard.from_splits({"val": ("2018-11-01", "2018-12-31")})
    assert guard.forbidden[0][1] == np.datetime64("2019-01-01", "ns") - np.timedelta64(1, "ns")
    for inside in ("2018-12-31T23:59", "2018-12-31T23:59:59.999999999", "2018-11-01T00:00"):
        with pytest.raises(LeakageError):
            guard.check(np.array([ns(inside)]))
    guard.check(np.array([ns("2019-01-01T00:00"), ns("2018-10-31T23:59:59.999999999")]))
    # An end with a time of day is taken as given.
    exact = TimeGuard.from_splits({"val": ("2018-11-01", "2018-12-31T12:00")})
    exact.check(np.array([ns("2018-12-31T12:00:00.000000001")]))


@pytest.mark.parametrize(
    "splits",
    [
        {},
        {"train": ("2018-01-01", "2018-10-31"), **SPLITS},
        {"val": ("2018-12-31", "2018-11-01")},
        {"val": ("x", "y")},
    ],
)
def test_from_splits_rejects_bad_splits(splits: dict) -> None:
    with pytest.raises(ConfigError):
        TimeGuard.from_splits(splits)


# ---- buffer ------------------------------------------------------------------------------------------


def test_buffer_evicts_the_oldest_first() -> None:
    buffer, reference, capacity = PseudoLabelBuffer(5, TimeGuard.from_splits(SPLITS)), [], 5
    times = train_times(20)
    for chunk in ([0, 1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11, 12, 13], [14, 15]):
        rows = batch([times[i] for i in chunk])
        buffer.add(rows, rows["targets"][:, :1] * 2, weights=torch.tensor([float(i) for i in chunk]))
        reference = (reference + chunk)[-capacity:]  # naive list: append, keep the newest
        data = buffer.state_dict()["data"]
        assert len(buffer) == len(reference)
        assert data["time"].tolist() == [times[i] for i in reference]
        assert data["weight"].tolist() == [float(i) for i in reference]
        tag = (data["time"] // HOUR).double()
        assert torch.equal(data["inputs"][:, 1, 0, 2, 3].double(), tag)  # rows stay aligned across keys
        assert torch.equal(data["targets"][:, 0, 1, 0, 0].double(), -2 * tag)
        assert data["targets"].shape[1] == 1 and data["mask"].dtype == torch.bool


def test_buffer_sampling_is_seeded_uniform_and_round_trips() -> None:
    guard = TimeGuard.from_splits(SPLITS)
    rows = batch(train_times(4))
    buffers = [PseudoLabelBuffer(6, guard, seed=s) for s in (3, 3, 4)]
    for buf in buffers:
        buf.add(rows, rows["targets"][:, :1])
    a, b, c = (buf.sample(400) for buf in buffers)
    assert torch.equal(a["time"], b["time"]) and not torch.equal(a["time"], c["time"])
    assert set(a["time"].tolist()) == set(rows["time"].tolist())  # with replacement, all rows drawn
    assert torch.equal(a["inputs"][:, 0, 0, 0, 0].double(), (a["time"] // HOUR).double())
    assert a["weight"].shape == (400,) and torch.all(a["weight"] == 1)

    restored = PseudoLabelBuffer(6, guard, seed=99)
    state = buffers[0].state_dict()
    restored.load_state_dict(state)
    for key, value in restored.state_dict()["data"].items():
        assert torch.equal(value, state["data"][key])
    assert torch.equal(restored.sample(50)["time"], buffers[0].sample(50)["time"])  # generator carried


def test_loading_a_buffer_with_held_out_times_raises() -> None:
    unguarded = PseudoLabelBuffer(4, TimeGuard((), ()))
    rows = batch([ns("2019-02-01")])
    unguarded.add(rows, rows["targets"])
    with pytest.raises(LeakageError):
        PseudoLabelBuffer(4, TimeGuard.from_splits(SPLITS)).load_state_dict(unguarded.state_dict())


# ---- mixing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "expected"), [(0.25, 2), (0.5, 6), (0.1, 1), (0.6, 9)])
def test_mix_counts_rows_and_trims_targets(ratio: float, expected: int) -> None:
    real, pseudo = batch(train_times(6), k=3), batch(train_times(12, "2018-03-01"), k=1)
    pseudo["weight"] = torch.full((12,), 0.5)
    out = mix(real, pseudo, ratio)
    assert expected == round(6 * ratio / (1 - ratio))
    assert len(out["time"]) == 6 + expected
    assert out["targets"].shape == (6 + expected, 1, 2, 3, 4)
    assert out["forcings"].shape == (6 + expected, 2 + 1, 3, 3, 4)
    for key in real:
        cut = {"targets": 1, "forcings": 3}.get(key)
        assert torch.equal(out[key][:6], real[key][:, :cut] if cut else real[key])
        assert torch.equal(out[key][6:], pseudo[key][:expected, :cut] if cut else pseudo[key][:expected])
    assert out["weight"].tolist() == [1.0] * 6 + [0.5] * expected


def test_mix_ratio_zero_keeps_real_rows_and_their_weights() -> None:
    real, pseudo = batch(train_times(4)), batch(train_times(4, "2018-03-01"))
    out = mix(real, pseudo, 0.0)
    assert torch.equal(out["time"], real["time"]) and torch.equal(out["targets"], real["targets"])
    assert out["weight"].tolist() == [1.0] * 4
    real["weight"] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert mix(real, None, 0.3)["weight"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert mix(real, pseudo, 0.5)["weight"].tolist() == [0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_mix_rejects_bad_ratios(ratio: float) -> None:
    real = batch(train_times(4))
    with pytest.raises(ConfigError, match="ratio"):
        mix(real, real, ratio)


@pytest.mark.parametrize(
    "kwargs",
    [{"every": -1}, {"start": -2}, {"ratio": 1.0}, {"capacity": 0}, {"min_reward_gain": float("nan")}],
)
def test_config_rejects_out_of_range_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SelfTrainingConfig(**kwargs)


def test_cadence() -> None:
    guard = TimeGuard.from_splits(SPLITS)
    loop = SelfTrainingLoop(SelfTrainingConfig(every=3, start=2), guard)
    assert [s for s in range(12) if loop.due(s)] == [2, 5, 8, 11]
    off = SelfTrainingLoop(SelfTrainingConfig(every=0), guard)
    assert not any(off.due(s) for s in range(100))


# ---- harvesting --------------------------------------------------------------------------------------


def neg_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reward: −MSE over (C, H, W); (B, K) for (B, K, C, H, W) predictions, (B,) for (B, C, H, W)."""
    return -((pred - target) ** 2).mean(dim=(-3, -2, -1))


def toy_generate(rows: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Four candidates; candidate 2 is the truth, the others and the base are off by 1 or more."""
    truth = rows["targets"][:, 0]
    offsets = torch.tensor([1.0, -2.0, 0.0, 3.0]).view(1, 4, 1, 1, 1)
    return truth[:, None] + offsets, truth + 1.0


def test_harvest_selects_the_truth_candidate() -> None:
    loop = SelfTrainingLoop(SelfTrainingConfig(capacity=16), TimeGuard.from_splits(SPLITS))
    rows = batch(train_times(5))
    rows["targets"] = torch.randn(5, 2, 2, 3, 4)
    stats = loop.harvest(rows, toy_generate, neg_mse)
    assert stats == {"candidates": 20.0, "kept": 5.0, "mean_gain": 1.0, "buffer": 5.0}
    data = loop.buffer.state_dict()["data"]
    assert torch.equal(data["targets"], rows["targets"][:, :1])  # candidate 2 for every sample
    assert torch.equal(data["inputs"], rows["inputs"]) and torch.equal(data["time"], rows["time"])

    strict = SelfTrainingLoop(SelfTrainingConfig(min_reward_gain=1e9), TimeGuard.from_splits(SPLITS))
    assert strict.harvest(rows, toy_generate, neg_mse)["kept"] == 0.0 and len(strict.buffer) == 0
    sfp = SelfTrainingLoop(SelfTrainingConfig(min_reward_gain=-float("inf")), TimeGuard.from_splits(SPLITS))
    worse = sfp.harvest(rows, lambda r: (toy_generate(r)[0][:, [0, 1, 3]], r["targets"][:, 0]), neg_mse)
    assert worse["kept"] == 5.0 and worse["mean_gain"] == -1.0  # argmax kept although the base is exact
    unchanged = strict.training_batch(rows)
    assert torch.equal(unchanged["targets"], rows["targets"]) and unchanged["weight"].tolist() == [1.0] * 5


def test_harvest_on_a_validation_batch_raises_before_scoring() -> None:
    loop = SelfTrainingLoop(SelfTrainingConfig(), TimeGuard.from_splits(SPLITS))
    calls = []

    def generate(rows: dict) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return toy_generate(rows)

    with pytest.raises(LeakageError, match="'val'"):
        loop.harvest(batch([ns("2018-11-15")]), generate, neg_mse)
    assert not calls and len(loop.buffer) == 0


def test_training_batch_mixes_and_state_round_trips() -> None:
    guard = TimeGuard.from_splits(SPLITS)
    loop = SelfTrainingLoop(SelfTrainingConfig(ratio=0.5, capacity=8), guard, seed=1)
    rows = batch(train_times(4))
    loop.harvest(rows, toy_generate, neg_mse)
    mixed = loop.training_batch(batch(train_times(6, "2018-05-01")))
    assert len(mixed["time"]) == 12 and mixed["targets"].shape[1] == 1
    assert set(mixed["time"][6:].tolist()) <= set(rows["time"].tolist())

    other = SelfTrainingLoop(SelfTrainingConfig(ratio=0.5, capacity=8), guard, seed=7)
    other.load_state_dict(loop.state_dict())
    assert (other.harvests, other.kept, len(other.buffer)) == (1, 4, 4)
    real = batch(train_times(6, "2018-05-01"))
    assert torch.equal(other.training_batch(real)["time"], loop.training_batch(real)["time"])


@pytest.mark.parametrize("real_weight", [1.0, 0.0])
def test_a_short_self_training_round_raises_the_training_split_reward(real_weight: float) -> None:
    """A linear model y = A x, trained a little, then 3 rounds of harvest + 20 Adam steps on mixed batches.

    With ``real_weight`` 0 the real rows carry no loss, so any gain comes from the pseudo-labels alone.
    """
    torch.manual_seed(0)
    n, c, h, w, k = 8, 1, 2, 2, 16
    d = c * h * w
    a_true = torch.randn(d, d) / d**0.5
    rows = batch(train_times(n), k=1, n_in=1, c=c, h=h, w=w)
    rows["inputs"] = torch.randn(n, 1, c, h, w)
    rows["targets"] = (rows["inputs"].flatten(1) @ a_true.T).view(n, 1, c, h, w)
    model = torch.nn.Linear(d, d, bias=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs[:, -1].flatten(1)).view(-1, c, h, w)

    def train_step(mb: dict) -> None:
        err = ((forward(mb["inputs"]) - mb["targets"][:, 0]) ** 2).mean(dim=(1, 2, 3))
        opt.zero_grad()
        ((mb["weight"] * err).sum() / mb["weight"].sum()).backward()
        opt.step()

    def train_reward() -> float:
        with torch.no_grad():
            return float(neg_mse(forward(rows["inputs"]), rows["targets"][:, 0]).mean())

    for _ in range(5):  # the base model: trained a little
        train_step(rows | {"weight": torch.ones(n)})
    perturbations = torch.cat([torch.zeros(1, c, h, w), 0.3 * torch.randn(k - 1, c, h, w)])

    def generate(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        base = forward(b["inputs"])
        return base[:, None] + perturbations, base

    loop = SelfTrainingLoop(SelfTrainingConfig(ratio=0.5, capacity=n), TimeGuard.from_splits(SPLITS))
    before = train_reward()
    for _ in range(3):
        stats = loop.harvest(rows, generate, neg_mse)
        assert stats["kept"] > 0 and stats["mean_gain"] > 0
        for _ in range(20):
            mixed = loop.training_batch(rows | {"weight": torch.full((n,), real_weight)})
            assert len(mixed["time"]) == 2 * n
            train_step(mixed)
    after = train_reward()
    assert after > before + 0.3 * abs(before), (before, after)  # MSE down by more than 30 %

"""Self-training with pseudo-labels (BeamVQ / SFP): generate → score → select → merge → retrain.

Every ``every`` training steps the owner's model proposes K candidate futures per training sample; each is
scored against the ground truth, the best one becomes the sample's pseudo-label when it beats the base
forecast by more than ``min_reward_gain``, and it joins a ring buffer on the CPU. Later training batches are
mixed so that a fraction ``ratio`` of their rows comes from that buffer.

Ground-truth rewards are only legitimate on the training split. The public BeamVQ code pseudo-labels the
*evaluation* inputs and trains on them; here a :class:`TimeGuard` built from the validation and test ranges
checks every init time (and the target times it reaches, ``horizon_ns`` later) before truth is scored and
before anything enters the buffer, and raises :class:`LeakageError` otherwise.

Batches are the data module's dicts of tensors: ``inputs`` (B, N_in, C, H, W), ``targets`` (B, K, C, H, W),
``static`` (B, S, H, W), ``forcings`` (B, N_in+K, F, H, W), ``time`` (B,) int64 ns init times, ``mask``
(B, H, W); mixed batches add ``weight`` (B,), a per-row loss weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from earthcast.errors import ConfigError

_NOT_STORED = ("targets", "weight")  # a batch's truth and loss weight are replaced by the pseudo-label's


class LeakageError(ConfigError):
    """A validation or test time was about to be scored against truth or enter the pseudo-label buffer."""


def _ns(value: np.datetime64) -> int:
    return int(np.datetime64(value, "ns").astype(np.int64))


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns").astype("datetime64[s]"))


@dataclass(frozen=True)
class TimeGuard:
    """Forbidden time ranges (inclusive) for pseudo-labelling, e.g. the validation and test splits.

    A sample initialised at t with targets up to t + ``horizon_ns`` (ns) is forbidden when [t, t + horizon]
    overlaps any range.
    """

    forbidden: tuple[tuple[np.datetime64, np.datetime64], ...]
    names: tuple[str, ...]
    horizon_ns: int = 0

    def __post_init__(self) -> None:
        if len(self.forbidden) != len(self.names):
            raise ConfigError(
                f"TimeGuard has {len(self.forbidden)} ranges but {len(self.names)} names; give one name per range"
            )
        if self.horizon_ns < 0:
            raise ConfigError(
                f"TimeGuard horizon_ns must be >= 0 (the target span in ns), got {self.horizon_ns}"
            )
        for name, (start, end) in zip(self.names, self.forbidden):
            if np.isnat(np.datetime64(start)) or np.isnat(np.datetime64(end)) or _ns(start) > _ns(end):
                raise ConfigError(
                    f"split {name!r} has an empty or invalid range [{start}, {end}]; give start <= end"
                )

    def check(self, times_ns: Tensor | np.ndarray) -> None:
        """Raise :class:`LeakageError` if any init time in ``times_ns`` ((B,) int64 ns), or its target span,
        overlaps a forbidden range or is NaT."""
        if isinstance(times_ns, Tensor):
            times_ns = times_ns.detach().cpu().numpy()
        t = np.asarray(times_ns).astype(np.int64).reshape(-1, 1)
        nat = np.datetime64("NaT").astype(np.int64)
        if (t == nat).any():
            raise LeakageError(
                "a pseudo-label candidate has an unknown (NaT) init time, so it cannot be shown to lie in the "
                "training split; harvest only from batches of the training dataloader, whose 'time' is set"
            )
        if not self.forbidden:
            return
        lo = np.array([_ns(s) for s, _ in self.forbidden], np.int64)[None]
        hi = np.array([_ns(e) for _, e in self.forbidden], np.int64)[None]
        hit = (t <= hi) & (t + self.horizon_ns >= lo)  # (B, R): [t, t+h] overlaps [lo, hi]
        if not hit.any():
            return
        rows, ranges = (np.unique(i) for i in np.nonzero(hit))
        shown = ", ".join(_iso(int(t[i, 0])) for i in rows[:3]) + (
            f" (and {rows.size - 3} more)" if rows.size > 3 else ""
        )
        splits = ", ".join(
            f"{self.names[r]!r} [{_iso(int(lo[0, r]))}, {_iso(int(hi[0, r]))}]" for r in ranges
        )
        span = f" (with targets up to {self.horizon_ns / 3.6e12:g} h later)" if self.horizon_ns else ""
        raise LeakageError(
            f"pseudo-label leakage: init time(s) {shown}{span} fall in the held-out split {splits}; "
            "ground-truth rewards may be used only on the training split. Harvest pseudo-labels from training "
            "batches only, and end the training split at least one forecast horizon before validation starts"
        )

    @classmethod
    def from_splits(cls, splits: Mapping[str, tuple[str, str]], horizon_ns: int = 0) -> TimeGuard:
        """A guard over held-out splits, e.g. ``{"val": ("2018-11-01", "2018-12-31"), "test": (...)}``.

        Ends are inclusive: a date-only end means the whole day (end + 1 day - 1 ns); a month or year end
        likewise means the whole month or year.
        """
        if not splits:
            raise ConfigError(
                "TimeGuard.from_splits needs the held-out splits, e.g. {'val': (...), 'test': (...)}"
            )
        if "train" in splits:
            raise ConfigError(
                "TimeGuard.from_splits got the 'train' split, which would forbid all training data; "
                "pass only the held-out ones, e.g. {k: v for k, v in splits.items() if k != 'train'}"
            )
        forbidden = []
        for name, (start, end) in splits.items():
            try:
                lo, hi = np.datetime64(start), np.datetime64(end)
            except ValueError as err:
                raise ConfigError(
                    f"split {name!r} has an unreadable date in ({start!r}, {end!r}): {err}"
                ) from err
            unit = np.datetime_data(hi.dtype)[0]
            if unit in ("Y", "M", "W", "D"):
                hi = (hi + np.timedelta64(1, unit)).astype("datetime64[ns]") - np.timedelta64(1, "ns")
            forbidden.append((lo.astype("datetime64[ns]"), hi.astype("datetime64[ns]")))
        return cls(tuple(forbidden), tuple(splits), horizon_ns)


class PseudoLabelBuffer:
    """Ring buffer of pseudo-labelled samples kept on CPU (detached clones); the oldest are evicted first.

    It stores every tensor of an added batch except its ``targets``/``weight`` (normally ``inputs``,
    ``static``, ``forcings``, ``time``, ``mask``), plus the pseudo-labels as ``targets`` and a ``weight``.
    """

    def __init__(self, capacity: int, guard: TimeGuard, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"PseudoLabelBuffer capacity must be >= 1, got {capacity}")
        self.capacity, self.guard = capacity, guard
        self._data: dict[str, Tensor] = {}
        self._oldest = 0  # row of the oldest sample once the buffer is full (0 while filling)
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self._data["time"]) if self._data else 0

    def add(self, batch: Mapping[str, Tensor], labels: Tensor, weights: Tensor | None = None) -> None:
        """Store ``batch`` with ``labels`` (B, K, C, H, W) as its targets and ``weights`` (B,) (default 1).

        The guard checks ``batch["time"]`` first; nothing is stored if it raises.
        """
        if "time" not in batch:
            raise ConfigError(
                "a pseudo-labelled batch needs its 'time' (B,) init times for the leakage guard"
            )
        self.guard.check(batch["time"])
        b = len(batch["time"])
        if weights is None:
            weights = torch.ones(b)
        rows = {k: v for k, v in batch.items() if isinstance(v, Tensor) and k not in _NOT_STORED}
        rows |= {"targets": labels, "weight": weights}
        bad = {k: tuple(v.shape) for k, v in rows.items() if v.ndim == 0 or len(v) != b}
        if bad:
            raise ConfigError(
                f"pseudo-label batch tensors must all have {b} rows like 'time'; got shapes {bad}"
            )
        rows = {k: v.detach()[-self.capacity :].to("cpu", copy=True) for k, v in rows.items()}
        if self._data:
            rows = {k: v.to(self._data[k].dtype) if k in self._data else v for k, v in rows.items()}
            expect = {k: tuple(v.shape[1:]) for k, v in self._data.items()}
            got = {k: tuple(v.shape[1:]) for k, v in rows.items()}
            if got != expect:
                raise ConfigError(
                    f"pseudo-label batch does not match the buffer: per-sample shapes {got}, buffer {expect}; "
                    "use one buffer per data configuration (same keys, grid and K)"
                )
        self._append(rows)

    def _append(self, rows: dict[str, Tensor]) -> None:
        """Fill free rows first, then overwrite the oldest ones; ``rows`` has at most ``capacity`` rows."""
        m, free = len(rows["time"]), self.capacity - len(self)
        if not self._data:
            self._data = {k: v[:free] for k, v in rows.items()}
        elif free:
            self._data = {k: torch.cat([v, rows[k][:free]]) for k, v in self._data.items()}
        if m > free:
            idx = (self._oldest + torch.arange(m - free)) % self.capacity
            for k, v in self._data.items():
                v[idx] = rows[k][free:]
            self._oldest = (self._oldest + m - free) % self.capacity

    def sample(self, n: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """``n`` samples drawn uniformly with replacement (seeded); ``weight`` is (n,)."""
        if not self._data:
            raise ConfigError(
                "the pseudo-label buffer is empty; harvest pseudo-labels before sampling from it"
            )
        idx = torch.randint(len(self), (n,), generator=self._generator)
        return {k: v[idx].to(device) for k, v in self._data.items()}

    def state_dict(self) -> dict:
        """The stored tensors, oldest first, and the sampler's generator state."""
        order = (self._oldest + torch.arange(len(self))) % max(len(self), 1)
        data = {k: v[order].clone() for k, v in self._data.items()}
        return {"data": data, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the guard re-checks its times, and a smaller capacity keeps the newest."""
        data = {k: v[-self.capacity :].clone() for k, v in state["data"].items()}
        if data:
            self.guard.check(data["time"])
        self._data, self._oldest = data, 0
        self._generator.set_state(state["generator"])


def pseudo_count(n_real: int, ratio: float) -> int:
    """Pseudo rows to append to ``n_real`` real rows so that they make up ``ratio`` of the batch
    (round half up of n_real · r / (1 - r))."""
    if not 0.0 <= ratio < 1.0:  # also rejects NaN
        raise ConfigError(
            f"the pseudo-label ratio must be in [0, 1) (the pseudo fraction of a batch), got {ratio}"
        )
    return math.floor(n_real * ratio / (1.0 - ratio) + 0.5)


def mix(real: Mapping[str, Tensor], pseudo: Mapping[str, Tensor] | None, ratio: float) -> dict[str, Tensor]:
    """Append ``pseudo_count(B_real, ratio)`` rows of ``pseudo`` (its first rows) to the real batch.

    Targets are cut to the common number of leads K (and ``forcings`` to N_in + K); ``weight`` is (B,):
    real rows keep theirs (default 1), pseudo rows theirs (default 1).
    """
    b = len(real["targets"])
    n = pseudo_count(b, ratio)
    device = real["targets"].device
    out = dict(real)
    out["weight"] = real.get("weight", torch.ones(b, device=device))
    if pseudo is None or n == 0:
        return out
    if len(pseudo["targets"]) < n:
        raise ConfigError(
            f"mix needs {n} pseudo rows for {b} real rows at ratio {ratio}, got {len(pseudo['targets'])}"
        )
    k = min(real["targets"].shape[1], pseudo["targets"].shape[1])
    n_in = real["inputs"].shape[1] if "inputs" in real else None
    extra = {"weight": torch.ones(n, device=device)}
    for key, value in out.items():
        if key not in pseudo and key not in extra:
            raise ConfigError(
                f"the pseudo batch lacks {key!r}, which the real batch has; store it in the buffer"
            )
        other = pseudo.get(key, extra.get(key))[:n].to(value.device, value.dtype)
        if key == "targets":
            value, other = value[:, :k], other[:, :k]
        elif key == "forcings" and n_in is not None:
            value, other = value[:, : n_in + k], other[:, : n_in + k]
        if value.shape[1:] != other.shape[1:]:
            raise ConfigError(f"real and pseudo {key!r} differ per sample: {value.shape} vs {other.shape}")
        out[key] = torch.cat([value, other])
    return out


@dataclass(frozen=True)
class SelfTrainingConfig:
    """Cadence and selection of self-training.

    every: harvest pseudo-labels every ``every`` training steps (0 = off), from step ``start`` on.
    ratio: pseudo fraction of each training batch once the buffer holds samples.
    capacity: buffer size in samples.
    min_reward_gain: keep a pseudo-label only if its truth reward exceeds the base forecast's by more than
        this (-inf keeps every argmax, as SFP does).
    """

    every: int = 50
    start: int = 0
    ratio: float = 0.25
    capacity: int = 512
    min_reward_gain: float = 0.0

    def __post_init__(self) -> None:
        if self.every < 0 or self.start < 0:
            raise ConfigError(
                f"self-training every/start must be >= 0 steps, got every={self.every}, start={self.start}"
            )
        pseudo_count(1, self.ratio)
        if self.capacity < 1:
            raise ConfigError(f"self-training capacity must be >= 1 samples, got {self.capacity}")
        if math.isnan(self.min_reward_gain) or self.min_reward_gain == math.inf:
            raise ConfigError(f"min_reward_gain must be a number or -inf, got {self.min_reward_gain}")


class SelfTrainingLoop:
    """Schedules and performs the generate → score → select → merge steps during training; the owner (a
    LightningModule) supplies the callables."""

    def __init__(self, config: SelfTrainingConfig, guard: TimeGuard, *, seed: int = 0) -> None:
        self.config = config
        self.buffer = PseudoLabelBuffer(config.capacity, guard, seed=seed)
        self.harvests = 0
        self.kept = 0

    def due(self, step: int) -> bool:
        """Whether to harvest at training ``step``: start, start + every, start + 2·every, …"""
        c = self.config
        return c.every > 0 and step >= c.start and (step - c.start) % c.every == 0

    @torch.no_grad()
    def harvest(
        self,
        batch: Mapping[str, Tensor],
        generate: Callable[[Mapping[str, Tensor]], tuple[Tensor, Tensor]],
        reward: Callable[[Tensor, Tensor], Tensor],
    ) -> dict[str, float]:
        """Pseudo-label one training batch.

        generate(batch) → candidates (B, K, C, H, W), base forecast (B, C, H, W) of the first lead.
        reward(pred, target) → per-sample score, higher is better: (B, K) for candidates against the truth
        (B, 1, C, H, W), (B,) for the base against (B, C, H, W). The truth is ``batch["targets"][:, 0]``.
        The best candidate per sample is kept if it beats the base by more than ``min_reward_gain``.
        Returns ``candidates`` (B·K), ``kept``, ``mean_gain`` (best − base, mean over the batch) and
        ``buffer`` (its size).
        """
        self.buffer.guard.check(batch["time"])  # before any truth is scored
        candidates, base = generate(batch)
        truth = batch["targets"][:, 0]
        b, k = candidates.shape[:2]
        scores, base_score = reward(candidates, truth[:, None]), reward(base, truth)
        if scores.shape != (b, k) or base_score.shape != (b,):
            raise ConfigError(
                f"reward must give (B, K) = {(b, k)} scores for candidates and (B,) for the base, got "
                f"{tuple(scores.shape)} and {tuple(base_score.shape)}"
            )
        best_score, best = scores.max(dim=1)
        gain = best_score - base_score
        keep = gain > self.config.min_reward_gain
        labels = candidates[torch.arange(b, device=best.device), best][keep][:, None]
        n_keep = len(labels)
        if n_keep:
            rows = {
                key: v[keep] for key, v in batch.items() if isinstance(v, Tensor) and key not in _NOT_STORED
            }
            self.buffer.add(rows, labels)
        self.harvests += 1
        self.kept += n_keep
        return {
            "candidates": float(b * k),
            "kept": float(n_keep),
            "mean_gain": float(gain.float().mean()),
            "buffer": float(len(self.buffer)),
        }

    def training_batch(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The batch mixed with buffer samples at ``ratio`` once the buffer holds any, else the batch plus
        ``weight`` ones. Harvests run only at due steps (>= start), so a non-empty buffer means step >= start."""
        if not len(self.buffer):
            return mix(batch, None, self.config.ratio)
        n = pseudo_count(len(batch["targets"]), self.config.ratio)
        return mix(batch, self.buffer.sample(n, device=batch["targets"].device), self.config.ratio)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "harvests": self.harvests, "kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.harvests, self.kept = int(state["harvests"]), int(state["kept"])

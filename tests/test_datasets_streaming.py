"""Windows, statistics and streaming against independent references computed with plain xarray/numpy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.windows import WindowSpec, window_starts
from earthcast.errors import DataError

VARIABLES = {"geopotential": [500], "temperature": [500, 850], "2m_temperature": None}
SPLITS = {
    "train": ("2018-01-01", "2018-03-15T18"),
    "val": ("2018-03-16", "2018-04-05"),
    "test": ("2018-04-06", "2018-04-30T18"),
}


def _times(stream) -> list[int]:
    return [int(t) for batch in stream for t in batch["time"]]


@pytest.fixture()
def dm(synthetic_store: str, tmp_path: Path) -> WB2DataModule:
    return WB2DataModule(
        synthetic_store,
        VARIABLES,
        static=["land_sea_mask", "latitude"],
        n_input=2,
        n_target=3,
        step="12h",
        block_steps=32,
        batch_size=4,
        shuffle_buffer=16,
        seed=3,
        stats_cache_dir=str(tmp_path),
        **SPLITS,
    )


def _reference_window(store: str, init: np.datetime64, offsets_h: list[int]) -> np.ndarray:
    """(len(offsets), C, H, W) selected by label with plain xarray, channels in VARIABLES order."""
    ds = xr.open_zarr(store)
    times = [init + np.timedelta64(h, "h") for h in offsets_h]
    parts = [
        ds["geopotential"].sel(level=[500], time=times),
        ds["temperature"].sel(level=[500, 850], time=times),
        ds["2m_temperature"].sel(time=times).expand_dims("level", axis=1),
    ]
    return np.concatenate(
        [p.transpose("time", "level", "latitude", "longitude").values for p in parts], axis=1
    )


def test_window_starts_by_hand() -> None:
    times = pd.date_range("2018-01-01", periods=10, freq="6h").values
    spec = WindowSpec(n_input=2, n_target=1, step="12h")
    # a window covers 3 steps of 12 h = store indices i, i+2, i+4; all must lie in [01T06, 02T12] = [1, 6]
    np.testing.assert_array_equal(window_starts(times, "2018-01-01T06", "2018-01-02T12", spec, 2), [1, 2])


def test_each_window_once_with_values_from_the_store(dm: WB2DataModule, synthetic_store: str) -> None:
    stream = dm.stream("val")  # keeps its final partial batch: every window exactly once
    batches = list(stream)
    times = dm.source.open()["time"].values
    starts = window_starts(times, *SPLITS["val"], dm.spec, dm.k)
    expected_inits = {int(times[s + dm.k].astype("datetime64[ns]").astype(np.int64)) for s in starts}
    got = Counter(_times(batches))
    assert set(got) == expected_inits and max(got.values()) == 1 and len(batches) == len(stream)
    assert len(starts) % 4 != 0 and batches[-1]["time"].shape == (len(starts) % 4,)
    batch = next(iter(dm.stream("train")))
    assert batch["forcings"].shape == (4, 5, 5, 32, 64)
    assert batch["static"].shape == (4, 3, 32, 64)  # land_sea_mask, sin and cos latitude
    for i in range(3):
        init = np.datetime64(int(batch["time"][i]), "ns")
        ref = _reference_window(synthetic_store, init, [-12, 0, 12, 24, 36])
        np.testing.assert_array_equal(batch["inputs"][i].numpy(), ref[:2])
        np.testing.assert_array_equal(batch["targets"][i].numpy(), ref[2:])
    train = _times(dm.stream("train"))  # drop_last: only the final partial batch is left out
    n_train = len(window_starts(times, *SPLITS["train"], dm.spec, dm.k))
    assert len(train) == len(set(train)) == n_train - n_train % 4


def test_shuffle_is_deterministic_per_seed_and_epoch(dm: WB2DataModule) -> None:
    def order(epoch: int, seed: int = 3) -> list[int]:
        stream = dm.stream("train")
        stream.seed = seed
        stream.set_epoch(epoch)
        return _times(stream)

    first = order(0)
    assert first == order(0)
    assert first != order(1) and sorted(first) == sorted(order(1))
    assert first != order(0, seed=4)
    assert first != sorted(first)
    assert _times(dm.stream("val")) == sorted(_times(dm.stream("val")))


def test_ddp_ranks_get_disjoint_equal_shares(dm: WB2DataModule) -> None:
    whole = set(_times(dm.stream("train")))
    shares = []
    for rank in range(3):
        stream = dm.stream("train")
        stream.rank, stream.world_size = rank, 3
        shares.append(_times(stream))
    assert len({len(s) for s in shares}) == 1  # equal length, so DDP ranks never wait on each other
    union = set().union(*map(set, shares))
    assert sum(map(len, shares)) == len(union) and union <= whole
    assert len(whole) - len(union) < dm.stream("train").block_steps  # only the remainder is trimmed


def test_two_persistent_spawned_workers_are_deterministic_per_epoch(dm: WB2DataModule) -> None:
    dm.hparams["num_workers"] = 2
    loader = dm.train_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "spawn" and loader.persistent_workers
    epoch0, epoch1 = _times(loader), _times(loader)
    assert len(epoch0) == len(set(epoch0)) and sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert set(epoch0) <= set(_times(dm.stream("train"))) | set(_times(dm.stream("val")))
    assert _times(dm.train_dataloader()) == epoch0  # a fresh run reproduces epoch 0 exactly


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_continues_at_the_next_unseen_batch(dm: WB2DataModule, workers: int) -> None:
    """Lightning's stateful-dataloader protocol: the state after n batches, loaded into a new loader, gives
    the rest of the epoch exactly (worker interleaving included), then the next epoch as usual."""
    dm.hparams["num_workers"] = workers
    whole = dm.train_dataloader()
    epoch0 = [batch["time"].tolist() for batch in whole]
    epoch1 = _times(whole)
    partial, n = dm.train_dataloader(), 5
    seen = iter(partial)
    for _ in range(n):
        next(seen)
    state = partial.state_dict()
    assert state["epoch"] == 0 and sum(state["served"]) == n and len(state["served"]) == max(1, workers)
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert [batch["time"].tolist() for batch in resumed] == epoch0[n:]
    assert _times(resumed) == epoch1
    other = dm.train_dataloader()
    other.num_workers = workers + 1
    with pytest.raises(DataError, match="num_workers"):
        other.load_state_dict(state)


def test_statistics_match_float64_numpy(dm: WB2DataModule, synthetic_store: str) -> None:
    ds = xr.open_zarr(synthetic_store).sel(time=slice(*SPLITS["train"]))
    z = ds["temperature"].sel(level=850).values.astype(np.float64)
    stats = dm.stats
    names = dm.manifest.names("state")
    i = names.index("temperature_850")
    np.testing.assert_allclose(stats.state_mean[i], z.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats.state_std[i], z.std(), rtol=1e-10)
    np.testing.assert_allclose(stats.tendency_std[i], (z[2:] - z[:-2]).std(), rtol=1e-10)  # 12 h = 2 steps
    lsm = ds["land_sea_mask"].values.astype(np.float64)
    np.testing.assert_allclose(stats.static_mean[0], lsm.mean(), rtol=1e-12)
    assert stats.static_mean[1:] == (0.0, 0.0) and stats.static_std[1:] == (1.0, 1.0)  # sin/cos latitude


def test_statistics_are_reused_from_the_cache(dm: WB2DataModule, tmp_path: Path) -> None:
    first = dm.stats
    (cache,) = tmp_path.glob("stats-*.json")
    entry = json.loads(cache.read_text())
    entry["stats"]["state_mean"][0] = 123.0  # a reused cache returns exactly what is on disk
    cache.write_text(json.dumps(entry))
    fresh = WB2DataModule(
        dm.source.path,
        VARIABLES,
        static=["land_sea_mask", "latitude"],
        n_input=2,
        n_target=3,
        step="12h",
        stats_cache_dir=str(tmp_path),
        **SPLITS,
    )
    assert fresh.stats.state_mean[0] == 123.0 and fresh.stats.state_std == first.state_std


def test_manifest_round_trips_and_lists_differences(dm: WB2DataModule, tmp_path: Path) -> None:
    from earthcast.datasets.channels import ChannelManifest

    dm.manifest.save(tmp_path / "manifest.json")
    loaded = ChannelManifest.load(tmp_path / "manifest.json")
    assert loaded == dm.manifest and loaded.differences(dm.manifest) == []
    other = WB2DataModule(
        dm.source.path, {"temperature": [850]}, step="6h", stats_cache_dir=str(tmp_path), **SPLITS
    )
    diffs = dm.manifest.differences(other.manifest)
    assert any("state channels differ" in d and "geopotential_500" in d for d in diffs)
    assert any("time step differs" in d for d in diffs)

"""Multi-process rollouts: ranks from the environment, a 2-process store bit-identical to 1 process, per-rank
resume after a SIGKILL, and per-rank aggregates that combine to the single-process ones."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from rollout_helpers import make_checkpoint

from earthcast.errors import ConfigError
from earthcast.rollout import RolloutConfig, run_rollout
from earthcast.rollout.ranks import Ranks, rank_device, resolve_ranks
from earthcast.rollout.restart import load_record

INITS = "2020-01-02T00:2020-01-03T12:12h"  # 4 inits: batches of 1, ranks 0 and 1 get 2 each
LEAD_STEPS = 8  # 2 d at 6 h
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_checkpoint(tmp_path_factory.mktemp("ranks"))


def _rank_main(store: Path, ckpt: Path, out: Path, rank: int | None, world: int) -> None:
    """One rollout process: its rank comes from the environment, as a launcher sets it."""
    for name in LAUNCHER_VARS:
        os.environ.pop(name, None)
    if rank is not None:
        os.environ |= {"RANK": str(rank), "WORLD_SIZE": str(world)}
    torch.set_num_threads(1)  # the same threads in every process: the same bits
    cfg = RolloutConfig(str(ckpt), str(store), INITS, f"{6 * LEAD_STEPS}h", str(out), members=2, perturbation=0.2,
                        batch_size=1, progress=False)  # fmt: skip
    result = run_rollout(cfg)
    tag = "single" if rank is None else f"rank{rank}"
    result_file = out.with_name(f"{out.stem}.{tag}.json")
    result_file.write_text(json.dumps({"status": result.status, "computed": result.steps_computed}))


def _start(trained: tuple[Path, Path], out: Path, rank: int | None, world: int) -> mp.process.BaseProcess:
    """One rollout process, forked from a fresh single-threaded server that has done the imports once (a
    plain fork of the test process could inherit a lock held by one of its threads); rank None: a plain
    single-process run."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["earthcast.rollout", __name__])
    proc = ctx.Process(target=_rank_main, args=(*trained, out, rank, world))
    proc.start()
    return proc


def _finish(proc: mp.process.BaseProcess, out: Path, rank: int | None) -> dict:
    proc.join(timeout=300)
    assert proc.exitcode == 0, f"rollout process (rank {rank}) failed with exit code {proc.exitcode}"
    tag = "single" if rank is None else f"rank{rank}"
    return json.loads(out.with_name(f"{out.stem}.{tag}.json").read_text())


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a store (metadata, coordinates, every chunk of every variable), by relative path."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_ranks_come_from_the_launcher_environment_and_split_the_batches():
    assert resolve_ranks(None, None, {}) == Ranks(0, 1)
    assert resolve_ranks(None, None, {"RANK": "3", "WORLD_SIZE": "4", "SLURM_PROCID": "0"}) == Ranks(3, 4)
    assert resolve_ranks(None, None, {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == Ranks(1, 2)
    assert resolve_ranks(0, None, {"RANK": "1", "WORLD_SIZE": "2"}) == Ranks(0, 2)  # fields override
    with pytest.raises(ConfigError, match="rank 2 of world size 2 is invalid"):
        resolve_ranks(2, 2, {})
    with pytest.raises(ConfigError, match="RANK='x' is not an integer"):
        resolve_ranks(None, None, {"RANK": "x", "WORLD_SIZE": "2"})
    blocks = [list(Ranks(r, 3).batches(7)) for r in range(3)]
    assert blocks == [[0, 1], [2, 3], [4, 5, 6]]  # contiguous, disjoint, covering every batch
    with pytest.raises(ConfigError, match="2 batch\\(es\\) of inits for 3 ranks"):
        Ranks(0, 3).batches(2)
    assert rank_device("cuda", {"LOCAL_RANK": "1"}) == "cuda:1"
    assert rank_device("cuda:0", {"LOCAL_RANK": "1"}) == "cuda:0"


def test_overwrite_and_a_missing_rank_0_are_refused_clearly(trained, tmp_path: Path):
    store, ckpt = trained
    cfg = RolloutConfig(str(ckpt), str(store), INITS, "12h", str(tmp_path / "f.zarr"), batch_size=1)
    with pytest.raises(ConfigError, match="--overwrite needs a single rank"):
        run_rollout(replace(cfg, overwrite=True, rank=0, world_size=2))
    with pytest.raises(ConfigError, match=r"waited 0\.2 s for rank 0 to create"):
        run_rollout(replace(cfg, rank=1, world_size=2, store_wait=0.2))


def test_two_ranks_write_the_single_process_store_and_resume_per_rank(trained, tmp_path: Path):
    single, double, killed = tmp_path / "single.zarr", tmp_path / "double.zarr", tmp_path / "killed.zarr"
    runs = [(single, None, 1), (double, 0, 2), (double, 1, 2)]
    procs = [_start(trained, *run) for run in runs]
    results = [_finish(p, out, rank) for p, (out, rank, _) in zip(procs, runs, strict=True)]
    assert [r["computed"] for r in results] == [4 * LEAD_STEPS, 2 * LEAD_STEPS, 2 * LEAD_STEPS]
    reference = _files(single)
    chunks = [k for k in reference if k.startswith("temperature/") and not k.startswith("temperature/.")]
    assert len(chunks) == 4 * LEAD_STEPS  # one init × one lead per chunk
    assert _files(double) == reference  # every variable, coordinate and attribute, bitwise

    # per-rank aggregates: the series concatenate, the time mean combines weighted by samples
    ref = xr.open_dataset(tmp_path / "single_aggregates.nc", group="global_mean")
    parts = [
        xr.open_dataset(tmp_path / f"double_aggregates.rank-{r}-of-2.nc", group="global_mean") for r in (0, 1)
    ]
    xr.testing.assert_equal(xr.concat(parts, "time"), ref)  # exact values (attrs: per-rank samples)
    ref_mean = xr.open_dataset(tmp_path / "single_aggregates.nc", group="time_mean")
    means = [
        xr.open_dataset(tmp_path / f"double_aggregates.rank-{r}-of-2.nc", group="time_mean") for r in (0, 1)
    ]
    n = [m.attrs["samples"] for m in means]
    combined = (means[0] * n[0] + means[1] * n[1]) / sum(n)
    np.testing.assert_allclose(combined["temperature"], ref_mean["temperature"], rtol=1e-6)

    # rank 1 killed in its second batch; rank 0 finishes; rank 1 rerun computes only what is missing
    rank0, rank1 = _start(trained, killed, 0, 2), _start(trained, killed, 1, 2)
    state = tmp_path / "killed.rollout" / "rank-1-of-2"
    rec = None
    deadline = time.monotonic() + 120
    while rec is None and time.monotonic() < deadline and rank1.is_alive():
        try:
            seen = load_record(state) if state.is_dir() else None
        except ValueError:  # caught between the rename and the read
            seen = None
        if seen is not None and (seen["batch"], seen["next_step"]) >= (3, 2):
            rank1.kill()  # SIGKILL
            rec = seen
        time.sleep(0.005)
    rank1.join()
    assert rec is not None and rank1.exitcode == -signal.SIGKILL, "rank 1 finished before it was killed"
    rec = load_record(state)  # it may have saved one more step before the signal landed
    assert _finish(rank0, killed, 0)["computed"] == 2 * LEAD_STEPS
    assert _files(killed) != reference  # rank 1's last leads are missing
    assert load_record(tmp_path / "killed.rollout" / "rank-0-of-2")["complete"]
    again = _finish(_start(trained, killed, 1, 2), killed, 1)
    done = (rec["batch"] - 2) * LEAD_STEPS + rec["next_step"]
    assert again == {"status": "complete", "computed": 2 * LEAD_STEPS - done}
    assert _files(killed) == reference
    assert _finish(_start(trained, killed, 0, 2), killed, 0)["status"] == "already complete"

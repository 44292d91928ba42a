"""earthcast rollout resume: a run killed with SIGKILL mid-run and rerun gives a bit-identical store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr
from rollout_helpers import make_checkpoint

from earthcast.commands.rollout import main
from earthcast.rollout.restart import load_record

INITS = "2020-01-02T00:2020-01-03T12:12h"  # 4 inits, 2 batches of 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_checkpoint(tmp_path_factory.mktemp("resume"))


def _args(ckpt: Path, store: Path, out: Path) -> list[str]:
    return ["--ckpt", str(ckpt), "--data", str(store), "--inits", INITS, "--lead", "2d", "--out", str(out),
            "--batch-size", "2", "--members", "2", "--perturbation", "0.2", "--no-progress"]  # fmt: skip


def _steps_computed(printed: str) -> int:
    """N of the ``(N steps computed)`` that ``earthcast rollout`` prints when it finishes."""
    match = re.search(r"\((\d+) steps computed\)", printed)
    assert match, printed
    return int(match.group(1))


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def _kill_after(proc: subprocess.Popen, record: Path, batch: int, step: int, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` once its restart record shows (batch, next_step) >= (batch, step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            rec = load_record(record.parent)
        except (FileNotFoundError, ValueError):
            rec = None
        if rec is not None and (rec["batch"], rec["next_step"]) >= (batch, step):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"the rollout ended (rc={proc.returncode}) before reaching batch {batch} step {step}")


def test_killed_run_resumes_bit_identical_and_other_checkpoints_are_refused(trained, tmp_path: Path, capsys):
    store, ckpt = trained
    reference = tmp_path / "reference.zarr"
    assert main(_args(ckpt, store, reference)) == 0
    total = _steps_computed(capsys.readouterr().out)  # 2 batches × (2 d / 6 h) steps
    assert total == 2 * 8

    out = tmp_path / "resumed.zarr"
    cmd = [sys.executable, "-m", "earthcast.commands.rollout", *_args(ckpt, store, out)]
    # the killed run computes in a new process: give it this process's torch threads, as the same machine and
    # settings would, since float64 reductions in the aggregates round differently with another thread count
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # early in batch 0, so that the second batch's set-up and 8 steps leave a wide margin before the end
    _kill_after(proc, tmp_path / "resumed.rollout" / "restart.bin", batch=0, step=2)
    assert proc.returncode == -signal.SIGKILL
    # the record as the killed process left it (it may have committed more steps after the one that
    # triggered the kill): the steps it has on disk, which a resume must not compute again
    rec = load_record(tmp_path / "resumed.rollout")
    assert not rec["complete"]
    done_before_kill = rec["batch"] * (total // 2) + rec["next_step"]
    assert 2 <= done_before_kill < total, "the kill must land part-way through the run"
    half = xr.open_zarr(out, decode_timedelta=True)["temperature"].sel(level=500)
    first, last = half.isel(time=0, prediction_timedelta=0), half.isel(time=3, prediction_timedelta=-1)
    assert first.notnull().all() and last.isnull().all()

    # a different checkpoint (or option) on the half-written store is refused, naming what differs
    other = tmp_path / "other.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    key = next(k for k in raw["state_dict"] if k.endswith("readout.bias"))
    raw["state_dict"][key] += 0.01
    torch.save(raw, other)
    with pytest.raises(FileExistsError, match=r"different run[\s\S]*checkpoint_sha256"):
        main(_args(other, store, out))
    with pytest.raises(FileExistsError, match="members: 2 in the existing output vs 3 now"):
        main([*_args(ckpt, store, out), "--members", "3"])

    # the same command resumes at the first unwritten lead and completes
    capsys.readouterr()
    assert main(_args(ckpt, store, out)) == 0
    # exactly the unwritten steps: a full rerun, or a restart of the interrupted batch, would compute `total`
    assert _steps_computed(capsys.readouterr().out) == total - done_before_kill
    assert _files(out) == _files(reference)
    for group in ("global_mean", "zonal_mean", "zonal_energy_spectrum_mean", "time_mean", "time_std"):
        a = xr.open_dataset(tmp_path / "resumed_aggregates.nc", group=group)
        b = xr.open_dataset(tmp_path / "reference_aggregates.nc", group=group)
        xr.testing.assert_identical(a, b)

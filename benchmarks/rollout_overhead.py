"""Rollout overhead and memory: a full ``earthcast rollout`` against bare model forwards, in one run.

1. Overhead: a 1460-step (one year at 6 h) rollout of ``INITS`` inits in one batch (one forward per step for
   all of them) of the ``tiny`` TritonCast on a 64x32 synthetic store, with the WB2 Zarr writer, the online
   aggregators, the per-step restart record and the progress bar on, against 1460 bare forwards: the best
   simple loop a user would write, ``model(state, static, forcings, time)`` under ``torch.inference_mode``
   with the same batch and the same model, feeding each output back, with no forcing updates, no checks and
   no I/O. Half of the bare forwards run before and half after the rollout, so a drifting machine load hits
   both sides alike. Both sides use ``--threads`` torch threads (default 1). Bar: <= 1.05x.
2. Memory: peak RSS (``ru_maxrss``) of a fresh process running a 1460-step rollout against one running
   100 steps (the two run side by side). Bar: <= 1.1x.

``--quick`` (< 60 s) runs 60 steps for the overhead and 60 vs 6 steps for the memory ratio; it says so,
and the bars then hold those measurements.

    python benchmarks/rollout_overhead.py [--quick] [--threads N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from earthcast.rollout import RolloutConfig, load_step_model, run_rollout

INIT = "2020-01-03T00"
INITS = 4
"""Inits per batch, on both sides."""
VARIABLES = {"geopotential": [500], "temperature": [850], "2m_temperature": None}


def prepare(workdir: Path) -> tuple[Path, Path]:
    """A synthetic 64x32 store and a ``tiny`` TritonCast checkpoint trained for one step."""
    import lightning as L

    from earthcast.datasets.datamodule import WB2DataModule
    from earthcast.datasets.synthetic import write_synthetic_store
    from earthcast.grids import wb2_grid
    from earthcast.training import ForecastModule

    store, ckpt = workdir / "truth.zarr", workdir / "tiny.ckpt"
    if ckpt.exists():
        return store, ckpt
    times = pd.date_range("2020-01-01", periods=40, freq="6h")
    write_synthetic_store(store, wb2_grid("64x32_equiangular_conservative"), times, levels=(500, 850))
    dm = WB2DataModule(
        str(store), VARIABLES, static=["land_sea_mask", "latitude"], forcings=["hour_of_day", "toa_insolation"],
        n_input=1, batch_size=2, train=("2020-01-01", "2020-01-06"), val=("2020-01-07", "2020-01-10"),
        test=("2020-01-07", "2020-01-10"), stats_cache_dir=str(workdir / "stats"),
    )  # fmt: skip
    module = ForecastModule("tritoncast", "tiny", manifest=dm.manifest.to_dict(), stats=dm.stats.to_dict())
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, max_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(ckpt)
    return store, ckpt


def rollout_config(store: Path, ckpt: Path, out: Path, steps: int, progress: bool) -> RolloutConfig:
    return RolloutConfig(
        str(ckpt),
        str(store),
        f"{INIT}:2020-01-03T18:6h",  # INITS inits
        f"{6 * steps}h",
        str(out),
        batch_size=INITS,
        progress=progress,
        overwrite=True,
    )


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_forwards(store: Path, ckpt: Path, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``steps`` bare one-step forwards of ``INITS`` inits (no I/O, no checks, fixed
    forcings), feeding each output back."""
    from earthcast.datasets.forcings import forcing_fields
    from earthcast.rollout import TruthSource

    model = load_step_model(ckpt)
    truth = TruthSource.open(str(store), model.manifest)
    inits = pd.date_range(INIT, periods=INITS, freq="6h")
    window = model.normalizer.normalize_state(torch.from_numpy(truth.initial_states(inits, 1)))
    static = model.normalizer.normalize_static(torch.from_numpy(truth.static_fields()))
    static = static.expand(INITS, *static.shape)
    lat, lon = np.asarray(model.manifest.latitude), np.asarray(model.manifest.longitude)
    times = inits.values[:, None] + np.arange(2) * model.step  # (B, N + 1)
    forcings = torch.from_numpy(
        np.stack([forcing_fields(model.manifest.names("forcing"), t, lat, lon) for t in times])
    )
    valid = torch.from_numpy(times[:, -1].astype(np.int64))
    start, cpu = time.perf_counter(), cpu_seconds()
    with torch.inference_mode():
        for _ in range(steps):
            window = model.net(window, static, forcings, valid)[:, None]
    return time.perf_counter() - start, cpu_seconds() - cpu


def rss_child(store: Path, ckpt: Path, out: Path, steps: int) -> None:
    """Run one rollout and print the peak RSS in bytes (child mode)."""
    run_rollout(rollout_config(store, ckpt, out, steps, progress=False))
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"steps": steps, "max_rss_bytes": kib * 1024}))


def peak_rss(workdir: Path, steps: tuple[int, ...], threads: int) -> list[int]:
    """Peak RSS in bytes of fresh processes running rollouts of ``steps`` leads, side by side."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--rss-child",
                str(n),
                "--workdir",
                str(workdir),
                "--threads",
                str(threads),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in steps
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the peak-RSS child failed:\n{stderr[-2000:]}")
        out.append(int(json.loads(stdout.strip().splitlines()[-1])["max_rss_bytes"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps (< 60 s); the bars then use those")
    parser.add_argument("--workdir", help="reuse this directory (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # one intra-op thread by default: on a shared CPU, multi-threaded barriers make timings swing by 3x
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rollout_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store, ckpt = prepare(workdir)
    if args.rss_child:
        rss_child(store, ckpt, workdir / f"rss_{args.rss_child}.zarr", args.rss_child)
        return 0
    steps, short = (60, 6) if args.quick else (1460, 100)
    if args.quick:
        print(
            f"--quick: {steps} steps for the overhead, {steps} vs {short} steps for memory (full: 1460 / 100)"
        )
    print(f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
          f"{INITS} inits per forward")  # fmt: skip
    bare_forwards(store, ckpt, 3)  # warm-up
    run_rollout(rollout_config(store, ckpt, workdir / "warm.zarr", 2, progress=False))
    first = bare_forwards(store, ckpt, steps // 2)
    start, cpu = time.perf_counter(), cpu_seconds()
    result = run_rollout(rollout_config(store, ckpt, workdir / "forecast.zarr", steps, progress=True))
    full, full_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if result.blowups:
        raise RuntimeError(
            f"the benchmark rollout blew up ({result.blowups[0].describe()}); timings are invalid"
        )
    second = bare_forwards(store, ckpt, steps - steps // 2)
    bare, bare_cpu = first[0] + second[0], first[1] + second[1]
    ratio = full / bare
    print(
        f"rollout {steps} steps: {full:.2f} s ({1e3 * full / steps:.1f} ms/step, writer + aggregators + restart)"
    )
    print(f"bare forwards {steps}: {bare:.2f} s ({1e3 * bare / steps:.1f} ms/step)")
    print(
        f"CPU time (all threads, less sensitive to other load): rollout {full_cpu:.2f} s, bare {bare_cpu:.2f} s, "
        f"ratio {full_cpu / bare_cpu:.3f} (the writer's work shows here; the wall ratio is the bar)"
    )
    rss_long, rss_short = peak_rss(workdir, (steps, short), args.threads)
    mem = rss_long / rss_short
    print(
        f"peak RSS: {rss_long / 2**20:.1f} MiB at {steps} steps, {rss_short / 2**20:.1f} MiB at {short} steps"
    )
    if args.quick:
        print(f"(--quick: the bars below hold the {steps}-step and {steps} vs {short}-step measurements)")
    print(f"BAR rollout_vs_bare_1460 {ratio:.3f} <= 1.05 {'PASS' if ratio <= 1.05 else 'FAIL'}")
    print(f"BAR rollout_rss_1460_vs_100 {mem:.3f} <= 1.1 {'PASS' if mem <= 1.1 else 'FAIL'}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

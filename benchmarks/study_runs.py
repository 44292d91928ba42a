"""Training runs shared by the studies in ``benchmarks/``: one ``earthcast fit`` per distinct command."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from earthcast.cli import main as earthcast


def train(name: str, out: Path, configs: list[str], args: list[str]) -> tuple[Path, float]:
    """Run ``earthcast fit`` once per distinct command (reused when ``done.json`` records the same one)."""
    root = out / "runs" / name
    argv = ["fit", *[f"--config={c}" for c in configs], *args, f"--trainer.default_root_dir={root}"]
    argv += ["--trainer.enable_progress_bar=false"]
    done = root / "done.json"
    if done.is_file() and json.loads(done.read_text())["argv"] == argv:
        record = json.loads(done.read_text())
        return Path(record["checkpoint"]), record["seconds"]
    start = time.perf_counter()
    if earthcast(argv) != 0:
        raise SystemExit(f"training {name} failed: earthcast {' '.join(argv)}")
    seconds = time.perf_counter() - start
    ckpt = max(root.rglob("last.ckpt"), key=os.path.getmtime)
    done.write_text(json.dumps({"argv": argv, "checkpoint": str(ckpt), "seconds": seconds}))
    return ckpt, seconds

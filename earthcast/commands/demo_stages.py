"""The stages of ``earthcast demo`` and when a finished one may be reused.

Each stage records, in ``stages.json`` under ``--out``, its wall time and a key: a digest of everything its
result depends on (config file contents, the store, ``--max-steps``, the checkpoint it used, the upstream
stages' keys). A rerun reuses a stage only when its key is unchanged; a changed config or a new checkpoint runs
it, and every stage after it, again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES_FILE = "stages.json"


def digest(**inputs: Any) -> str:
    """A short, stable digest of JSON-serialisable inputs (paths and other objects by their ``str``)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The digest of a file's bytes (a config's contents, not its name or date)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Stages:
    """Records which stages are done, with their keys and wall times, in ``stages.json``."""

    def __init__(self, out: Path) -> None:
        self.path = out / STAGES_FILE
        self.done: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.timings: dict[str, str] = {}

    def key(self, name: str) -> str | None:
        """The key ``name`` was last run with, or None."""
        return self.done.get(name, {}).get("key")

    def run(
        self, name: str, work: Callable[[], dict[str, Any] | None], *, key: str, reuse: bool = True
    ) -> dict:
        """Run ``work`` unless ``name`` is recorded as done with this ``key`` (and ``reuse``); return its
        recorded facts. ``reuse=False`` always runs (a stage that resumes on its own, or a forced rerun)."""
        earlier = self.done.get(name)
        if reuse and earlier is not None and earlier.get("key") == key:
            print(f"[demo] {name}: reused (done in {earlier['seconds']:.0f} s on an earlier run)")
            self.timings[name] = f"reused ({earlier['seconds']:.0f} s earlier)"
            return earlier
        changed = reuse and earlier is not None
        print(
            f"[demo] {name} …{' (its inputs changed since the earlier run)' if changed else ''}", flush=True
        )
        start = time.perf_counter()
        facts = work() or {}
        seconds = time.perf_counter() - start
        self.done[name] = {"seconds": seconds, "key": key, **facts}
        self.timings[name] = f"{seconds:.0f} s"
        self.path.write_text(json.dumps(self.done, indent=1))
        print(f"[demo] {name}: {seconds:.0f} s", flush=True)
        return self.done[name]

"""The ``earthcast`` command: one entry point that routes to sub-commands.

``fit``, ``validate``, ``test`` and ``predict`` go to the LightningCLI; every other sub-command lives in
its own module under :mod:`earthcast.commands` and is imported only when used, so ``earthcast --help``
stays fast and never imports JAX.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from earthcast.errors import EarthcastError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("earthcast.commands.demo", "the main job: train, roll out a year, score, plot, report"),
    "train": (
        "earthcast.commands.train",
        "fit | validate | test | predict: the LightningCLI (stacked --config files, see configs/)",
    ),
    "config": (
        "earthcast.commands.config",
        "config check CONFIG…: validate a training config before a long run",
    ),
    "data": ("earthcast.commands.data", "make the embedded demo data, inspect stores, compute statistics"),
    "rollout": (
        "earthcast.commands.rollout",
        "roll a checkpoint out to a resumable WB2 by-init Zarr with online aggregates",
    ),
    "score": (
        "earthcast.commands.score",
        "score a by-init forecast store against truth with WB2 metrics (netCDF results)",
    ),
    "climatology": (
        "earthcast.commands.climatology",
        "build a WB2 hour x dayofyear climatology from a truth store",
    ),
    "plot": (
        "earthcast.commands.plot",
        "PNG maps, skill curves, spectra, global-mean series and scorecards (offline coastlines)",
    ),
}
"""Sub-command name -> (module with ``main(argv) -> int``, one-line help)."""


LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _usage() -> str:
    lines = ["usage: earthcast <command> [options]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<12} {text}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast <command> …`` and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name in LIGHTNING_SUBCOMMANDS and "train" in COMMANDS:
        module = importlib.import_module(COMMANDS["train"][0])
        return int(module.main(args) or 0)
    if name not in COMMANDS:
        print(f"earthcast: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except EarthcastError as err:
        # Raised on purpose, with a message that names the problem and the fix: one line, no traceback.
        # Anything else is unexpected and keeps its traceback.
        if os.environ.get("EARTHCAST_DEBUG"):
            raise
        message = str(err)
        print(
            f"earthcast {name}: error: {message}\n(set EARTHCAST_DEBUG=1 for the traceback)", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

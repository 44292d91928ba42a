"""``earthcast config check CONFIG…``: validate stacked training configs before a long run, without training.

The configs are parsed by the same parser as ``earthcast fit`` (so unknown keys and wrong types are caught
exactly as training would catch them), then:

- the store: a local path must exist, a ``demo:`` store is found in the cache (or noted as generated on first
  use), a URL must answer within ``--timeout`` seconds (else "cannot reach" rather than a hang);
- the data: the data module is built (it checks variables, levels, static fields, grid and step against the
  store) and every split must hold at least one window;
- the model: known name and size, valid settings, channel counts, a grid large enough for the V-cycle's
  coarsenings, the grid geometry and paired vector components, a rollout curriculum that fits
  ``data.n_target``, and (for models up to ``FORWARD_CHECK_PARAMS`` parameters) one real forward pass on the
  data's shapes;
- the trainer: a CUDA accelerator on a machine without one is noted.

Prints a short OK summary, or the list of problems with their fixes and exits 1.
"""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from earthcast.commands.train import EarthcastCLI
from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.store import resolve_store
from earthcast.datasets.windows import window_starts
from earthcast.errors import ConfigError, StoreNotFoundError
from earthcast.grids import wb2_grid_name
from earthcast.models.registry import MODEL_NAMES, build_model
from earthcast.models.tritoncast import SIZES, size_config

FORWARD_CHECK_PARAMS = 50_000_000
"""Models up to this many parameters get a real forward pass on the data's shapes (CPU, batch 1)."""
MIN_LATENT_POINTS = 2

T = TypeVar("T")


class Unreachable(Exception):
    """The store did not answer within the timeout."""


def _with_timeout(fn: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``fn`` in a daemon thread; raise :class:`Unreachable` if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Unreachable(
            f"cannot reach {what} within {seconds:g} s (no network, or the bucket is slow); check the network "
            "and `pip install earthcast[cloud]`, or raise --timeout"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def parse_configs(paths: Sequence[str]) -> Any:
    """The ``fit`` section of the stacked configs, parsed by the training CLI's parser (nothing is built)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise StoreNotFoundError(f"no config file at {missing}; check the path(s)")
    args = ["fit"] + [item for path in paths for item in ("--config", str(path))]
    cli = EarthcastCLI(args, parse_only=True)
    return cli.config


def _check_store(data: Any, timeout: float, notes: list[str]) -> str | None:
    """The store path to open, or None when it cannot be checked (a problem is raised, or a note added)."""
    store = str(data.store)
    if store.startswith("demo:"):
        path = resolve_store(store, generate=False)
        if not Path(path).exists():
            notes.append(
                f"{store} is not generated yet: the first `earthcast fit` (or `earthcast data demo`) makes it "
                "(a few minutes); variables are checked once it exists"
            )
            return None
        return path
    if "://" not in store and not Path(store).exists():
        raise ConfigError(
            f"data.store {store!r} does not exist; fix the path, or use demo:atmosphere / demo:ocean for the "
            "embedded demo data"
        )
    return store


def _data_module(data: Any, store: str, timeout: float) -> Any:
    from earthcast.datasets.datamodule import WB2DataModule

    kwargs = dict(vars(data)) | {"store": store}
    return _with_timeout(lambda: WB2DataModule(**kwargs), timeout, repr(store))


def _split_windows(dm: Any) -> dict[str, int]:
    times = dm.source.open()["time"].values
    return {
        name: int(window_starts(times, start, end, dm.spec, dm.k).size)
        for name, (start, end) in dm.splits.items()
    }


def _placeholder_stats(manifest: ChannelManifest) -> NormStats:
    ones_state, ones_static = (1.0,) * len(manifest.state), (1.0,) * len(manifest.static)
    return NormStats(
        (0.0,) * len(manifest.state), ones_state, ones_state, (0.0,) * len(manifest.static), ones_static
    )


def planner_problems(model: Any) -> list[str]:
    """A planner config (``model.class_path`` a BeamVQ or SFP module) must name the checkpoints it builds on."""
    args, name = model.init_args, str(model.class_path).rsplit(".", 1)[-1]
    needed = []
    if name == "BeamVQModule" or (name == "SFPModule" and args.get("stage") == "agent"):
        needed.append("base_checkpoint")
    if name == "SFPModule" and args.get("stage") == "agent":
        needed.append("world_model_checkpoint")
    return [
        f"model.init_args.{key} is required for {name}: pass the trained checkpoint (--model.init_args.{key} PATH)"
        for key in needed
        if not args.get(key)
    ]


def check_model(model: Any, manifest: ChannelManifest | None, n_target: int | None) -> tuple[list[str], str]:
    """Problems with the model section (against the data's manifest when known) and a one-line summary."""
    problems: list[str] = []
    name, size = model.model, model.size
    settings = dict(model.model_settings or {})
    if name not in MODEL_NAMES:
        return [f"model.model {name!r} is unknown; choose one of {', '.join(MODEL_NAMES)}"], ""
    schedule = {int(k): int(v) for k, v in (model.rollout_schedule or {}).items()}
    if schedule and n_target is not None and max(schedule.values()) > n_target:
        problems.append(
            f"model.rollout_schedule unrolls up to {max(schedule.values())} steps but data.n_target is "
            f"{n_target}: windows hold only {n_target} target(s); set data.n_target >= {max(schedule.values())}"
        )
    if name in ("persistence", "climatology"):
        return problems, f"{name} baseline"
    if size not in SIZES:
        return [*problems, f"model.size {size!r} is unknown; choose one of {', '.join(SIZES)}"], ""
    try:
        config = size_config(size, **settings)
    except (ValueError, TypeError) as err:
        return [*problems, f"model.model_settings: {err}"], ""
    if manifest is None:
        return problems, f"{name} {size}"
    h, w = manifest.grid_shape
    levels = len(config.widths) - 1
    coarse = (math.ceil(h / 2**levels), math.ceil(w / 2**levels))
    if min(coarse) < MIN_LATENT_POINTS:
        problems.append(
            f"the {h}x{w} grid is too small for {levels} coarsenings of model size {size!r} (latent grid "
            f"{coarse[0]}x{coarse[1]}); use fewer model_settings.widths or a finer grid"
        )
    if problems:
        return problems, ""
    stats = _placeholder_stats(manifest)
    try:
        with torch.device("meta"):
            net = build_model(name, manifest, stats, n_input=model.n_input, size=size, **settings)
    except (ValueError, TypeError) as err:
        return [f"the model cannot be built for this data: {err}"], ""
    params = sum(p.numel() for p in net.parameters())
    summary = (
        f"{name} {size} ({params / 1e6:.2f} M parameters, latent grid {coarse[0]}x{coarse[1]}, "
        f"{len(manifest.state)} state + {len(manifest.static)} static + {len(manifest.forcing)} forcing channels)"
    )
    if params <= FORWARD_CHECK_PARAMS:
        net = build_model(name, manifest, stats, n_input=model.n_input, size=size, **settings)
        state = torch.zeros(1, model.n_input, len(manifest.state), h, w)
        static = torch.zeros(1, len(manifest.static), h, w)
        forcings = torch.zeros(1, model.n_input + 1, len(manifest.forcing), h, w)
        try:
            with torch.no_grad():
                out = net(state, static, forcings, torch.zeros(1, dtype=torch.int64))
        except (RuntimeError, ValueError) as err:
            return [f"a forward pass on the data's shapes fails: {err}"], ""
        if tuple(out.shape) != (1, len(manifest.state), h, w):
            problems.append(
                f"the model returns {tuple(out.shape)}, expected {(1, len(manifest.state), h, w)}"
            )
        summary += ", forward pass OK"
    return problems, summary


def check(paths: Sequence[str], timeout: float = 20.0) -> tuple[list[str], list[str]]:
    """(problems, summary/notes) for stacked configs; no problems means the run can start."""
    cfg = parse_configs(paths)
    problems: list[str] = []
    lines: list[str] = []
    manifest = None
    data = cfg.data
    try:
        store = _check_store(data, timeout, lines)
        if store is not None:
            dm = _data_module(data, store, timeout)
            manifest = dm.manifest
            counts = _split_windows(dm)
            for split, count in counts.items():
                if count == 0:
                    problems.append(
                        f"the {split} split {dm.splits[split]} holds no complete window of "
                        f"{dm.spec.length} steps; widen data.{split}"
                    )
            name = wb2_grid_name(manifest.latitude, manifest.longitude) or "custom"
            grid = f"{name}, {manifest.grid_geometry.kind}"
            lines.append(
                f"data: {data.store} — {len(manifest.state)} state channels on {manifest.grid_shape[1]}x"
                f"{manifest.grid_shape[0]} lon x lat ({grid}), step {data.step}, windows "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
            )
    except Unreachable as err:
        problems.append(str(err))
    except ImportError as err:
        problems.append(f"data: cannot open {data.store!r}: {err}. Fix: pip install 'earthcast[cloud]'")
    except (KeyError, ValueError, FileNotFoundError, OSError) as err:
        problems.append(f"data: {err.args[0] if err.args else err!r}")
    model_problems, summary = check_model(cfg.model.init_args, manifest, data.n_target)
    problems += model_problems + planner_problems(cfg.model)
    if summary:
        lines.append(f"model: {summary}")
    module = str(cfg.model.class_path).rsplit(".", 1)[-1]
    if module != "ForecastModule" and not model_problems:
        lines.append(f"planner: {module} on that forecaster")
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        lines.append(f"note: trainer.accelerator is {accelerator!r} but this machine has no CUDA device")
    return problems, lines


def main(argv: Sequence[str]) -> int:
    """``earthcast config check CONFIG…``."""
    parser = argparse.ArgumentParser(prog="earthcast config", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    checker = sub.add_parser("check", help="validate stacked configs (later files override earlier ones)")
    checker.add_argument("configs", nargs="+", help="YAML config files, stacked in order")
    checker.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a remote store")
    args = parser.parse_args(list(argv))
    try:
        problems, lines = check(args.configs, args.timeout)
    except SystemExit as stop:  # the training parser rejected the config (it printed why)
        print(f"earthcast config check: {' + '.join(args.configs)} does not parse (see above)")
        return int(stop.code) if isinstance(stop.code, int) and stop.code else 1
    title = " + ".join(args.configs)
    if problems:
        print(f"PROBLEMS in {title}:")
        for problem in problems:
            print(f"  - {problem}")
        for line in lines:
            print(f"  {line}")
        return 1
    print(f"OK {title}")
    for line in lines:
        print(f"  {line}")
    return 0


__all__ = ["check", "check_model", "main", "parse_configs"]

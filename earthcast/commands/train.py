"""``earthcast fit|validate|test|predict``: the LightningCLI over :class:`ForecastModule` and :class:`WB2DataModule`.

Configs stack (``--config base.yaml --config ablations/no_core.yaml``); the data module's channel manifest and
normalisation statistics (which carry the grid) are linked into the model at instantiation, and ``data.n_input``
into ``model.n_input`` at parse time, so a config never repeats them. Defaults that a config may replace: a
TensorBoard logger under ``trainer.default_root_dir`` (``outputs/``), a Rich progress bar,
``ModelCheckpoint(save_last=True)``, a learning-rate monitor and ``seed_everything: 42``; the resolved config
is saved as ``config.yaml`` next to the logs. Every checkpoint is self-describing (see :class:`RunMetadata`).

Extras over plain LightningCLI:

- ``data.store: demo:atmosphere`` / ``demo:ocean`` names the embedded demo store (generated on first use);
  the saved config keeps the portable ``demo:`` form.
- ``--ckpt_path last`` finds the newest ``last.ckpt`` under ``trainer.default_root_dir`` (Lightning alone
  only looks in the new run's own version folder, so it would silently start from scratch).
- ``--ckpt_path`` is checked before anything is built: a missing, truncated or foreign file, or one trained
  on other channels, grid or statistics, gives an error that names the problem and the fix. The model's
  settings come from the checkpoint; the values linked from the data (manifest, statistics, ``n_input``)
  always come from the data and are compared with the checkpoint's.
- Checkpoints load with ``weights_only=True`` (they hold only tensors and plain Python types).

The class uses LightningCLI's public hooks only: it parses one subcommand's arguments (``run=False``) and
calls the Trainer method itself, so no private member of Lightning is overridden.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import earthcast
from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.statistics import NormStats
from earthcast.datasets.store import open_store, resolve_store
from earthcast.errors import CheckpointError, ConfigError, EarthcastError
from earthcast.grids import wb2_grid_name
from earthcast.training import ForecastModule, IncompatibleCheckpointError
from earthcast.training.checkpoints import module_class_path, read_checkpoint

DEFAULT_ROOT_DIR = "outputs"
DEFAULT_SEED = 42
FORECAST_MODULE = "earthcast.training.ForecastModule"
"""The model class of a config that names none (planners name theirs with ``model.class_path``)."""
LINKED_FROM_DATA = ("manifest", "stats", "n_input")
"""ForecastModule arguments that the CLI links from the data module."""
SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""The Trainer methods the CLI runs."""


def find_last_checkpoint(root: str | os.PathLike) -> Path | None:
    """The most recently written ``last*.ckpt`` anywhere under ``root``, or None."""
    candidates = [p for p in Path(root).rglob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def fill_climatology_source(model: Any, data: Any) -> None:
    """For ``model.model: climatology`` with neither ``climatology_store`` nor ``truth_store`` in
    ``model_settings``: use the data store's training split (so the baseline never sees the test period).
    ``model``/``data`` are the parsed config sections (jsonargparse namespaces), changed in place."""
    settings = dict(model.model_settings or {})
    if model.model != "climatology" or {"climatology_store", "truth_store"} & set(settings):
        return
    times = open_store(resolve_store(data.store), storage_options=data.storage_options)["time"].values
    start, end = WB2DataModule.resolve_splits(times, data.train, data.val, data.test)["train"]
    model.model_settings = settings | {"truth_store": data.store, "start": start, "end": end}


class RunMetadata(Callback):
    """Adds the run's config, the earthcast version and the grid to every checkpoint's ``"earthcast"`` entry
    (next to the manifest, statistics and model settings that :class:`ForecastModule` stores). Everything is
    plain Python, so checkpoints load with ``weights_only=True``.

    Args:
        config: the resolved CLI config of the run (plain dict, link targets left out).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        manifest: ChannelManifest = pl_module.manifest
        checkpoint.setdefault("earthcast", {}).update(
            config=self.config,
            version=earthcast.__version__,
            grid={
                "name": wb2_grid_name(manifest.latitude, manifest.longitude),
                "shape": list(manifest.grid_shape),
                "geometry": manifest.grid_geometry.kind,
            },
        )


def _has(callbacks: Sequence[Callback], kind: type) -> bool:
    return any(isinstance(c, kind) for c in callbacks)


def resumed_version(ckpt_path: str | None) -> tuple[str, str, int] | None:
    """(save_dir, name, version) when a checkpoint lies in ``<save_dir>/<name>/version_<n>/checkpoints/``, so
    a resumed ``fit`` continues logs, checkpoints and best-k tracking in the run's own folder."""
    if ckpt_path is None:
        return None
    folder = Path(ckpt_path).resolve().parent
    run = folder.parent
    if folder.name != "checkpoints" or not run.name.startswith("version_") or not run.name[8:].isdigit():
        return None
    return str(run.parent.parent), run.parent.name, int(run.name[8:])


class EarthcastCLI(LightningCLI):
    """LightningCLI with earthcast's links, defaults, demo stores and checkpoint checks (module docstring).

    Builds everything and runs the subcommand on construction, like LightningCLI.

    Args:
        args: command-line arguments starting with the subcommand (``["fit", "--config", "a.yaml"]``).
        parse_only: parse and check the arguments but build nothing (used by ``earthcast config check``).
    """

    def __init__(self, args: Sequence[str], *, parse_only: bool = False, **kwargs: Any) -> None:
        args = list(args)
        if not args or args[0] not in SUBCOMMANDS:
            raise ConfigError(f"expected one of {', '.join(SUBCOMMANDS)} first, got {args[:1]}")
        self.command, self.parse_only = args[0], parse_only
        self.checkpoint: dict[str, Any] | None = None
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": f"earthcast {self.command}"})
        with warnings.catch_warnings():
            # args always come from earthcast.cli, which also saw sys.argv: not the mistake Lightning warns of
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter", category=UserWarning)
            super().__init__(
                ForecastModule,
                WB2DataModule,
                subclass_mode_model=True,
                seed_everything_default=DEFAULT_SEED,
                trainer_defaults={"default_root_dir": DEFAULT_ROOT_DIR},
                args=args[1:],
                run=False,
                **kwargs,
            )
        if not parse_only:
            run = getattr(self.trainer, self.command)
            run(self.model, datamodule=self.datamodule, ckpt_path=self.config.ckpt_path, weights_only=True)

    # ------------------------------------------------------------------ parsing
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="checkpoint to resume (fit) or evaluate: a path, or `last` for the newest last.ckpt under "
            "trainer.default_root_dir",
        )
        parser.set_defaults({"model": {"class_path": FORECAST_MODULE, "init_args": {"model_settings": {}}}})
        parser.link_arguments("data.n_input", "model.init_args.n_input")
        parser.link_arguments(
            "data.manifest", "model.init_args.manifest", lambda m: m.to_dict(), apply_on="instantiate"
        )
        parser.link_arguments(
            "data.stats", "model.init_args.stats", lambda s: s.to_dict(), apply_on="instantiate"
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, resolve ``--ckpt_path last``, read and check the checkpoint, and take the model's settings
        from it (the values linked from the data excepted)."""
        super().parse_arguments(parser, args)
        cfg = self.config
        if cfg.ckpt_path == "last":
            root = cfg.trainer.default_root_dir or DEFAULT_ROOT_DIR
            found = find_last_checkpoint(root)
            if found is None:
                if self.command != "fit":
                    raise CheckpointError(
                        f"--ckpt_path last: no last.ckpt under {root!r}; train first with `earthcast fit` or "
                        "pass the checkpoint's path"
                    )
                print(f"earthcast fit: no last.ckpt under {root!r} yet; starting a new run", file=sys.stderr)
                cfg.ckpt_path = None
                return
            verb = "resuming from" if self.command == "fit" else "using"
            print(f"earthcast {self.command}: {verb} {found}", file=sys.stderr)
            cfg.ckpt_path = str(found)
        if cfg.ckpt_path is None:
            return
        self.checkpoint = read_checkpoint(cfg.ckpt_path)
        hparams = {
            k: v
            for k, v in self.checkpoint.get("hyper_parameters", {}).items()
            if k not in LINKED_FROM_DATA and not k.startswith("_")
        }
        if hparams:
            model = {"class_path": module_class_path(self.checkpoint), "init_args": hparams}
            self.config = parser.parse_object({"model": model}, cfg)

    # ------------------------------------------------------------------ instantiation
    def before_instantiate_classes(self) -> None:
        if not self.parse_only:
            fill_climatology_source(self.config.model.init_args, self.config.data)

    def instantiate_classes(self) -> None:
        """As LightningCLI, surfacing earthcast's own errors from what jsonargparse wraps."""
        if self.parse_only:
            return
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, EarthcastError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None

    def after_instantiate_classes(self) -> None:
        """Compare the checkpoint's manifest and statistics with the data's before the Trainer runs."""
        if self.checkpoint is None or self.parse_only:
            return
        saved = self.checkpoint["earthcast"]
        try:
            self.model.check_compatible(
                ChannelManifest.from_dict(saved["manifest"]), NormStats.from_dict(saved["stats"])
            )
        except IncompatibleCheckpointError as err:
            raise IncompatibleCheckpointError(f"--ckpt_path {self.config.ckpt_path}: {err}") from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with the default callbacks added unless the config already has one of the same kind,
        and the logger of the resumed run's folder."""
        config = self.config_init.trainer
        configured = list(config.callbacks or [])
        defaults: list[Callback] = []
        resumed = resumed_version(self.config.ckpt_path) if self.command == "fit" else None
        if resumed is not None and config.logger in (None, True):
            save_dir, name, version = resumed
            kwargs["logger"] = TensorBoardLogger(save_dir=save_dir, name=name, version=version)
        if config.enable_progress_bar is not False and not _has(configured, ProgressBar):
            defaults.append(RichProgressBar())
        smoke = bool(config.fast_dev_run)  # a smoke run writes nothing
        if not smoke and config.enable_checkpointing is not False and not _has(configured, ModelCheckpoint):
            defaults.append(ModelCheckpoint(save_last=True))
        has_logger = config.logger not in (False, [])  # None means Lightning's default TensorBoard
        if not smoke and has_logger and not _has(configured, LearningRateMonitor):
            defaults.append(LearningRateMonitor(logging_interval="step"))
        run_config = yaml.safe_load(self.parser.dump(self.config))
        defaults.append(RunMetadata(run_config))
        return super().instantiate_trainer(callbacks=configured + defaults, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast fit|validate|test|predict …``; ``argv`` starts with the subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        EarthcastCLI(args)
    except SystemExit as stop:  # argument errors (jsonargparse prints them) and --help
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    except (EarthcastError, MisconfigurationException) as err:
        # earthcast's own errors and Lightning's configuration errors name the problem: one line. Anything
        # else is unexpected and keeps its traceback.
        if os.environ.get("EARTHCAST_DEBUG"):
            raise
        name = args[0] if args else "fit"
        message = str(err)
        print(
            f"earthcast {name}: error: {message}\n(set EARTHCAST_DEBUG=1 for the traceback)", file=sys.stderr
        )
        return 2
    return 0

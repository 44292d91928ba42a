"""``earthcast demo``: the main job in one command — train, roll out a year, score, plot, report.

Example::

    earthcast demo                      # embedded Held–Suarez data, configs/quickstart.yaml, outputs/demo/
    earthcast demo --out outputs/demo   # run again: unchanged stages are reused, rollouts resume

Stages (each shows a progress bar and runs the earthcast command named below in-process):

1. data: the embedded demo store is made on first use (``demo:atmosphere``) or any store path is opened;
2. train: ``earthcast fit --config CONFIG`` with ``--trainer.max_steps`` and the output folder overridden;
3. rollout: one init at the start of the test period run for ``--year-lead`` (365 d) and ``--skill-inits``
   inits spread over the test period run for ``--skill-lead`` (10 d), both with ``earthcast rollout``'s
   engine (a blow-up is reported, not fatal: the report checks the run up to its last finite lead);
4. score: ``earthcast climatology`` over the training years, then ``earthcast score`` of the skill rollout
   with persistence and climatology baselines;
5. plots and ``report.md``: maps, RMSE/ACC against lead, spectra, global-mean series, a scorecard, the
   headline RMSE table and the year run's stability checks.

Outputs under ``--out``: ``train/<key>/``, ``year.zarr``, ``skill.zarr`` (+ aggregates), ``climatology.zarr``,
``scores/results*.nc``, ``plots/*.png``, ``report.md`` and ``stages.json`` (stages done, their keys, seconds
each). A rerun reuses a stage only when its inputs are unchanged (:mod:`earthcast.commands.demo_stages`): a
changed config, store or ``--max-steps`` trains again in its own ``train/<key>/`` folder, and the rollouts,
climatology, scores and plots that depend on it run again.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml
from jsonargparse import ArgumentParser
from tqdm.auto import tqdm

from earthcast.commands.dataclass_cli import argparse_style, dataclass_parser, field_kinds, parse_dataclass
from earthcast.commands.demo_stages import Stages, digest, file_digest
from earthcast.errors import ConfigError, OutputExistsError, RunFailedError, StoreNotFoundError
from earthcast.report import SOURCES, Field, Stability, headline_rmse, stability, write_report

DEFAULT_CONFIG = "configs/quickstart.yaml"
HEADLINE_FIELDS: tuple[Field, ...] = (
    ("geopotential", 500),
    ("temperature", 850),
    ("2m_temperature", None),
    ("surface_pressure", None),
)
"""Fields mapped and reported first, when the model forecasts them (at most three are used)."""


@dataclass(frozen=True)
class DemoConfig:
    """What ``earthcast demo`` runs; its options are these fields.

    Attributes:
        out: output folder.
        config: training config file(s), stacked in order (default: configs/quickstart.yaml); repeatable.
        store: truth store: demo:atmosphere or a path (default: the config's data.store).
        max_steps: training steps (default: the config's, 1000 in quickstart).
        skill_inits: skill inits spread over the test period (72: every 5 days of a year).
        skill_lead: lead of the skill inits, e.g. 10d.
        year_lead: lead of the long run, e.g. 365d.
        batch_size: skill inits per rollout batch.
        retrain: train again even if a checkpoint exists.
    """

    out: str = "outputs/demo"
    config: tuple[str, ...] | None = None
    store: str | None = None
    max_steps: int | None = None
    skill_inits: int = 72
    skill_lead: str = "10d"
    year_lead: str = "365d"
    batch_size: int = 6
    retrain: bool = False


def build_parser() -> ArgumentParser:
    """The ``earthcast demo`` argument parser: the fields of :class:`DemoConfig`. Its ``--config`` is the
    training configs, so it has no config file of its own."""
    return dataclass_parser(
        DemoConfig,
        prog="earthcast demo",
        description="Train, roll out a year, score, plot and report in one run.",
        config_file=False,
    )


def _call(module: str, argv: list[str]) -> None:
    """Run ``earthcast <command> argv`` in-process; a non-zero exit becomes a RuntimeError."""
    import importlib

    status = importlib.import_module(f"earthcast.commands.{module}").main(argv)
    if status:
        raise RunFailedError(
            f"`earthcast {'' if module == 'train' else module + ' '}{' '.join(argv)}` failed with exit status "
            f"{status} (its message is above); fix that and rerun `earthcast demo` with the same --out."
        )


def _default_config() -> str:
    """``configs/quickstart.yaml`` in the working directory, else the one in the earthcast source tree."""
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    return str(Path(__file__).resolve().parents[2] / DEFAULT_CONFIG)


def _global_step(ckpt: Path) -> int:
    from earthcast.training.checkpoints import read_checkpoint

    return int(read_checkpoint(ckpt)["global_step"])


def _config_data(paths: Sequence[str]) -> dict[str, Any]:
    """The ``data`` section of stacked config files (later files override earlier keys)."""
    data: dict[str, Any] = {}
    for path in paths:
        if not Path(path).is_file():
            raise StoreNotFoundError(
                f"no config file at {path!r}; pass --config PATH (e.g. {DEFAULT_CONFIG})."
            )
        data |= (yaml.safe_load(Path(path).read_text()) or {}).get("data") or {}
    return data


def _splits(store: str, data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    from earthcast.datasets.datamodule import WB2DataModule
    from earthcast.datasets.store import open_store

    times = open_store(store)["time"].values
    return WB2DataModule.resolve_splits(times, data.get("train"), data.get("val"), data.get("test"))


def skill_inits(test: tuple[str, str], lead: pd.Timedelta, count: int) -> pd.DatetimeIndex:
    """``count`` inits at 00 UTC spread evenly over the test period, each with its whole lead inside it."""
    first = pd.Timestamp(test[0]).ceil("D")
    last = (pd.Timestamp(test[1]) - lead).floor("D")
    if last < first or count < 1:
        raise ConfigError(
            f"the test period {test[0]} … {test[1]} is too short for --skill-lead {lead}; "
            "lower --skill-lead or set a longer data.test split in the config."
        )
    days = pd.date_range(first, last, freq="D")
    return days[np.unique(np.linspace(0, days.size - 1, min(count, days.size)).round().astype(int))]


def _headline_fields(forecast: xr.Dataset) -> list[Field]:
    def has(variable: str, level: int | None) -> bool:
        if variable not in forecast.data_vars:
            return False
        return level is None if "level" not in forecast[variable].dims else level in forecast["level"].values

    chosen = [f for f in HEADLINE_FIELDS if has(*f)]
    if not chosen:
        name = next(iter(forecast.data_vars))
        chosen = [(name, int(forecast["level"][0]) if "level" in forecast[name].dims else None)]
    return chosen[:3]


def _field_args(field: Field) -> list[str]:
    variable, level = field
    return ["--variables", variable] + ([] if level is None else ["--levels", str(level)])


def _plots(
    out: Path, store: str, fields: list[Field], year_lead: str, skill_leads: list[str], coastlines: bool
) -> dict:
    """Every PNG of the report, by ``earthcast plot`` (maps, scores, series, scorecard) and the library
    (the year run's spectra against the truth's final-30-day mean, since the truth may end before it).
    ``coastlines`` is False for the embedded demo planets, which have no continents."""
    from earthcast.datasets.store import open_store
    from earthcast.plotting.figures import (
        field_name,
        file_stem,
        lead_label,
        parse_lead,
        save_png,
        select_field,
        units_label,
    )
    from earthcast.plotting.spectra import mean_spectrum, plot_spectra
    from earthcast.report import DRIFT_WINDOW

    plots, scores = out / "plots", out / "scores"
    results = [f"--results={scores / 'results.nc'}"]
    baselines = [f"--baseline={s}={scores / f'results_{s}.nc'}" for s in ("persistence", "climatology")]
    jobs: list[tuple[str, list[str]]] = []
    for field in fields:
        maps = ["--forecast", str(out / "skill.zarr"), "--truth", store, "--leads", *skill_leads]
        maps += [] if coastlines else ["--no-coastlines"]
        jobs.append(("maps", maps + _field_args(field) + ["--out", str(plots)]))
        series = ["--forecast", str(out / "year.zarr"), "--truth", store]
        series += ["--climatology", str(out / "climatology.zarr")]
        jobs.append(("series", series + _field_args(field) + ["--out", str(plots)]))
    jobs.append(("scores", results + baselines + ["--out", str(plots)]))
    card = [*results, f"--reference={scores / 'results_persistence.nc'}", "--reference-name", "persistence"]
    jobs.append(("scorecard", [*card, "--leads", *skill_leads, "--out", str(plots)]))
    for kind, argv in tqdm(jobs, desc="plots", unit="plot"):
        _call("plot", [kind, *argv])
    year, truth = open_store(out / "year.zarr"), open_store(store)
    lead = parse_lead(year_lead)
    spectrum_leads = [parse_lead(x) for x in ("1d", "30d", "90d") if parse_lead(x) < lead] + [lead]
    for variable, level in tqdm(fields, desc="spectra", unit="field"):
        fc, tr = select_field(year, variable, level).isel(time=0), select_field(truth, variable, level)
        last = min(pd.Timestamp(tr["time"].values[-1]), pd.Timestamp(fc["time"].values) + lead)
        curves = {"truth": mean_spectrum(tr.sel(time=slice(last - DRIFT_WINDOW, last)))}
        finite = np.isfinite(fc.values).all(axis=(-2, -1))
        last_finite = (
            pd.Timedelta(fc["prediction_timedelta"].values[finite.argmin() - 1]) if not finite.all() else lead
        )
        for x in sorted({*(x for x in spectrum_leads if x <= last_finite), last_finite}):
            curves[f"lead {lead_label(x)}"] = mean_spectrum(fc.sel(prediction_timedelta=x))
        title = f"{field_name(variable, level)}: {year_lead} run (truth: mean of its final 30 days)"
        fig = plot_spectra(curves, title=title, units=units_label(year[variable]))
        save_png(fig, plots / f"year_spectra_{file_stem(variable, level)}.png")
    return {}


def _analyse(out: Path, store: str, fields: list[Field]) -> tuple[pd.DataFrame, dict[str, Stability]]:
    """The headline RMSE table (from the results netCDFs) and the year run's stability checks."""
    from earthcast.datasets.store import open_store
    from earthcast.plotting.figures import field_name

    scores = out / "scores"
    results = {
        s: xr.open_dataset(
            scores / ("results.nc" if s == "model" else f"results_{s}.nc"), decode_timedelta=True
        )
        for s in SOURCES
    }
    rmse = headline_rmse(results)
    year, truth = open_store(out / "year.zarr"), open_store(store)
    climatology = open_store(out / "climatology.zarr")
    checks: dict[str, Stability] = {}
    for field in tqdm(fields, desc="stability checks", unit="field"):
        checks[field_name(*field)] = stability(year, truth, climatology, field)
    return rmse, checks


def _figures(out: Path, fields: list[Field], year_lead: str) -> dict[str, list[Path]]:
    from earthcast.plotting.figures import file_stem

    plots = out / "plots"
    stems = [file_stem(*f) for f in fields]
    return {
        "Maps: forecast, truth, error": sorted(p for s in stems for p in plots.glob(f"maps_{s}_*.png")),
        "RMSE and ACC against lead time": [plots / f"scores_{s}.png" for s in stems],
        f"Zonal energy spectra of the {year_lead} run": [plots / f"year_spectra_{s}.png" for s in stems],
        f"Global means of the {year_lead} run (truth ± 1σ)": [plots / f"series_{s}.png" for s in stems],
        "Scorecard: RMSE against persistence": [plots / "scorecard_rmse.png"],
    }


def _headline(rmse: pd.DataFrame, field: str) -> list[str]:
    lines = []
    for lead in ("1d", "5d"):
        if lead not in rmse.columns:
            continue
        model, pers, clim = (float(rmse.loc[(field, s), lead]) for s in SOURCES)
        lines.append(
            f"  {field} RMSE at {lead}: {model:.4g} — {100 * (1 - model / pers):+.0f}% vs persistence "
            f"({pers:.4g}), {100 * (1 - model / clim):+.0f}% vs climatology ({clim:.4g})"
        )
    return lines


def parse_config(argv: Sequence[str]) -> DemoConfig:
    """The :class:`DemoConfig` of ``earthcast demo`` options (any spelling; bad ones exit with 2)."""
    return parse_dataclass(build_parser(), DemoConfig, argparse_style(argv, field_kinds(DemoConfig)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast demo``; returns 0 when the report is written (bad options exit with 2)."""
    args = parse_config(sys.argv[1:] if argv is None else argv)
    from earthcast.commands.train import find_last_checkpoint
    from earthcast.datasets.store import DEMO_PREFIX, resolve_store
    from earthcast.plotting.figures import field_name, lead_label, parse_lead
    from earthcast.rollout.session import RolloutConfig, run_rollout

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = list(args.config or [_default_config()])
    data = _config_data(configs)
    store_value = args.store or data.get("store")
    if not store_value:
        raise ConfigError(
            "no truth store: pass --store demo:atmosphere (or a path), or set data.store in the config."
        )
    stages = Stages(out)
    total = time.perf_counter()

    # always resolved: made on first use, seconds when cached (and a deleted cache is made again)
    store = stages.run("data", lambda: {"store": resolve_store(store_value)}, key="", reuse=False)["store"]
    splits = _splits(store, data)
    # the model depends on the configs' contents, the store and the step budget: a change trains afresh in
    # its own folder (an interrupted run with the same inputs resumes there)
    train_key = digest(configs=[file_digest(c) for c in configs], store=store_value, max_steps=args.max_steps)
    train_dir = out / "train" / train_key

    def train() -> dict:
        argv = ["fit"] + [f"--config={c}" for c in configs] + [f"--data.store={store_value}"]
        argv += [f"--trainer.default_root_dir={train_dir}"]
        argv += [] if args.max_steps is None else [f"--trainer.max_steps={args.max_steps}"]
        if args.retrain:
            shutil.rmtree(train_dir, ignore_errors=True)
        elif find_last_checkpoint(train_dir) is not None:
            argv.append("--ckpt_path=last")  # an interrupted training run resumes
        _call("train", argv)
        ckpt = find_last_checkpoint(train_dir)
        if ckpt is None:
            raise RunFailedError(
                f"training wrote no last.ckpt under {train_dir}; check the config's trainer section."
            )
        return {"checkpoint": str(ckpt)}

    ckpt = stages.run("train", train, key=train_key, reuse=not args.retrain)["checkpoint"]
    if not Path(ckpt).is_file():  # recorded, but deleted since: train again
        ckpt = stages.run("train", train, key=train_key, reuse=False)["checkpoint"]

    skill_lead = parse_lead(args.skill_lead)
    inits = skill_inits(splits["test"], skill_lead, args.skill_inits)
    year_init = pd.Timestamp(splits["test"][0]).ceil("D")
    rollout_key = digest(
        checkpoint=[ckpt, Path(ckpt).stat().st_mtime_ns],
        store=store,
        inits=[str(t) for t in inits],
        year=[year_init, args.year_lead],
        skill_lead=args.skill_lead,
    )
    # rollouts resume on their own; stores made by another checkpoint or other settings are replaced
    replace_rollouts = stages.key("rollout") not in (None, rollout_key)

    def rollouts() -> dict:
        runs = [
            ("year", year_init.isoformat(), args.year_lead, 1),
            ("skill", ",".join(t.isoformat() for t in inits), args.skill_lead, args.batch_size),
        ]
        blowups = {}
        for name, init_spec, lead, batch in runs:
            cfg = RolloutConfig(
                checkpoint=ckpt, data=store, inits=init_spec, lead=lead, out=str(out / f"{name}.zarr"),
                batch_size=batch, overwrite=replace_rollouts,
            )  # fmt: skip
            try:
                result = run_rollout(cfg)  # resumes an interrupted run; "already complete" when done
            except FileExistsError as err:
                raise OutputExistsError(
                    f"{err}\n(earthcast demo: the {name} rollout in {out} was made with other settings or "
                    "another checkpoint; rerun with the original options, pass --retrain, or use a new --out.)"
                ) from None
            if result.blowups:  # kept going: the report shows where (later leads of that init are NaN)
                blowups[name] = [b.describe() for b in result.blowups]
                print(f"[demo] the {name} rollout blew up: {blowups[name][0]}", file=sys.stderr)
        return {"blowups": blowups}

    stages.run("rollout", rollouts, key=rollout_key, reuse=False)  # a finished rollout returns at once
    first_year = pd.Timestamp(splits["train"][0]).year
    last_year = pd.Timestamp(splits["train"][1]).year

    def climatology() -> dict:
        model_vars = list(xr.open_zarr(out / "skill.zarr").data_vars)
        argv = ["--truth", store, "--out", str(out / "climatology.zarr"), "--overwrite"]
        argv += ["--start-year", str(first_year), "--end-year", str(last_year), "--variables", *model_vars]
        _call("climatology", argv)
        return {}

    def score() -> dict:
        argv = ["--forecast", str(out / "skill.zarr"), "--truth", store]
        argv += ["--climatology", str(out / "climatology.zarr"), "--out", str(out / "scores" / "results.nc")]
        _call("score", [*argv, "--baselines", "persistence", "climatology", "--overwrite"])
        return {}

    clim_key = digest(
        store=store, years=[first_year, last_year], variables=list(xr.open_zarr(out / "skill.zarr"))
    )
    stages.run("climatology", climatology, key=clim_key)
    score_key = digest(rollout=rollout_key, climatology=clim_key)
    stages.run("score", score, key=score_key)
    fields = _headline_fields(xr.open_zarr(out / "skill.zarr"))
    skill_leads = [x for x in ("1d", "5d") if parse_lead(x) <= skill_lead] or [args.skill_lead]
    idealised = str(store_value).startswith(DEMO_PREFIX)  # the embedded planets have no continents
    plots_key = digest(score=score_key, leads=skill_leads, coastlines=not idealised)
    stages.run(
        "plots", lambda: _plots(out, store, fields, args.year_lead, skill_leads, not idealised), key=plots_key
    )
    facts = {
        "store": store,
        "config": " + ".join(configs),
        "checkpoint": ckpt,
        "training steps": str(_global_step(Path(ckpt))),
        "test period": f"{splits['test'][0]} … {splits['test'][1]}",
        "year run": f"init {year_init:%Y-%m-%dT%H}, lead {args.year_lead} → {out / 'year.zarr'}",
        "skill runs": f"{inits.size} inits {inits[0]:%Y-%m-%d} … {inits[-1]:%Y-%m-%d} at 00 UTC, lead "
        f"{lead_label(skill_lead)} → {out / 'skill.zarr'}",
        "climatology": f"{first_year}–{last_year} (training years) → {out / 'climatology.zarr'}",
    }
    for name, reports in stages.done["rollout"].get("blowups", {}).items():
        facts[f"{name} run blew up"] = "; ".join(reports)
    start = time.perf_counter()
    print("[demo] report …", flush=True)
    rmse, checks = _analyse(out, store, fields)
    stages.timings["report"] = f"{time.perf_counter() - start:.0f} s"
    stages.timings["total (this run)"] = f"{time.perf_counter() - total:.0f} s"
    path = write_report(
        out / "report.md", facts=facts, rmse=rmse, checks=checks, year_lead=args.year_lead,
        timings=stages.timings, figures=_figures(out, fields, args.year_lead),
    )  # fmt: skip
    print(f"\nreport: {path.absolute()}")
    for line in _headline(rmse, field_name(*fields[0])):
        print(line)
    return 0

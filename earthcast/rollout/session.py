"""A resumable rollout run: checkpoint + truth store + inits -> WB2 by-init Zarr and online aggregates.

Files for ``--out DIR/NAME.zarr``: the forecast store ``NAME.zarr``, the aggregates ``NAME_aggregates.nc``
(written when the run completes) and the state directory ``NAME.rollout/`` (restart record and the
accumulators' memory maps). Running the same command again resumes at the first unwritten lead and gives a
bit-identical store; an output written by another checkpoint or configuration is refused.

Several processes (ranks, :mod:`earthcast.rollout.ranks`) share one run: each computes a contiguous block of
the batches, writes that ``time`` slice of the one store, and keeps its own state ``NAME.rollout/rank-R-of-W/``
and aggregates ``NAME_aggregates.rank-R-of-W.nc`` (its inits only; see :func:`run_rollout` for combining
them). The store is bit-identical to a single-process run's; each rank resumes on its own.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from earthcast.datasets.time_axis import TimeStep, advance_times
from earthcast.errors import ConfigError, OutputExistsError, TimeAxisError
from earthcast.rollout.aggregators import OnlineAggregates, write_aggregates
from earthcast.rollout.commit import StepCommitter
from earthcast.rollout.generator import (
    BlowUp,
    Ensemble,
    InitialConditions,
    RolloutState,
    RolloutStep,
    generate,
)
from earthcast.rollout.initial import TruthSource
from earthcast.rollout.model import StepModel, load_step_model
from earthcast.rollout.ranks import Ranks, rank_device, resolve_ranks, wait_for_store
from earthcast.rollout.restart import (
    IDENTITY_VERSION,
    RECORD_NAME,
    canonical,
    identity_differences,
    load_record,
    save_record,
)
from earthcast.rollout.timing import lead_steps, parse_inits
from earthcast.rollout.writer import RUN_ATTR, ForecastWriter, leads_axis, read_run_identity, store_template

if TYPE_CHECKING:
    from earthcast.planners.inference import PlanSettings


@dataclass(frozen=True)
class RolloutConfig:
    """Everything that defines a rollout run; ``earthcast rollout`` takes its options from these fields.

    Attributes:
        checkpoint: checkpoint written by earthcast fit (.ckpt); with planner, a BeamVQ or SFP planner's.
        data: truth store the initial conditions and static fields come from (a path or demo:atmosphere).
        inits: init times as START:END:FREQ (e.g. 2020-01-01T00:2020-12-31T12:12h, END inclusive; FREQ may be
            calendar months: 1MS), the same with '/' separators, or a comma-separated list of ISO times.
        lead: forecast length, a multiple of the model step (e.g. 10d, 365d).
        out: output store, e.g. forecast.zarr (aggregates: forecast_aggregates.nc; state: forecast.rollout/).
        members: ensemble members (a number dim when > 1).
        perturbation: Gaussian initial-condition noise of perturbed members, std in normalised units.
        seed: base seed of the per-member perturbations.
        perturb_control: perturb member 0 too (default: it is the unperturbed control).
        batch_size: inits per batch (per forward).
        aggregate_leads: leads where zonal energy spectra are kept, e.g. [1d, 5d, 10d] (default: 1, 5 and 10
            days and the last lead, those within the run and multiples of the step).
        blowup_bound: stop a member when a |normalised value| exceeds this (inf: check only for NaN/Inf).
        device: torch device, e.g. cpu or cuda.
        progress: show the progress bar.
        overwrite: replace an existing rollout output (needs a single rank).
        planner: plan every step with these settings (earthcast.planners.inference; --planner.help lists
            them); members are then the planner's best beams, not perturbations.
        rank: this process's rank in a multi-process run (earthcast.rollout.ranks; default: from RANK
            as torchrun sets it, else SLURM_PROCID, else 0); it computes a contiguous block of the batches,
            and every rank is started with the same other options.
        world_size: processes in the run (default: WORLD_SIZE, else SLURM_NTASKS, else 1).
        store_wait: seconds ranks other than 0 wait for rank 0 to create the store.
        queue_steps: computed steps that may wait to be written while the model runs on (memory grows by
            that many steps of fields and state; a kill loses them and the resume recomputes them).
    """

    checkpoint: str
    data: str
    inits: str
    lead: str
    out: str
    members: int = 1
    perturbation: float = 0.05
    seed: int = 0
    perturb_control: bool = False
    batch_size: int = 4
    aggregate_leads: tuple[str, ...] | None = None
    blowup_bound: float = 50.0
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False
    planner: PlanSettings | None = None
    rank: int | None = None
    world_size: int | None = None
    store_wait: float = 600.0
    queue_steps: int = 4


@dataclass
class RolloutResult:
    """Outcome: status ``"complete"`` or ``"already complete"``, output paths and any blow-ups."""

    status: str
    store: Path
    aggregates: Path
    blowups: list[BlowUp] = field(default_factory=list)
    steps_computed: int = 0


@dataclass(frozen=True)
class RunPaths:
    """The store, the aggregates file and the state directory of an ``--out`` path."""

    store: Path
    aggregates: Path
    state: Path

    @classmethod
    def of(cls, out: str | os.PathLike, ranks: Ranks | None = None) -> RunPaths:
        """Paths of a run; with several ranks, this rank's aggregates file and state subdirectory."""
        store = Path(out).absolute()
        stem = store.name[: -len(".zarr")] if store.name.endswith(".zarr") else store.name
        if ranks is None or ranks.world_size == 1:
            return cls(store, store.with_name(f"{stem}_aggregates.nc"), store.with_name(f"{stem}.rollout"))
        state = store.with_name(f"{stem}.rollout") / ranks.tag
        return cls(store, store.with_name(f"{stem}_aggregates.{ranks.tag}.nc"), state)

    def clear_state(self) -> None:
        """Remove the files this module writes into the state directory (nothing else)."""
        if self.state.is_dir():
            for item in self.state.iterdir():
                if item.name in (RECORD_NAME, f".{RECORD_NAME}.tmp") or item.suffix == ".npy":
                    item.unlink()
        self.state.mkdir(parents=True, exist_ok=True)


def _steps(lead: str, model_step: TimeStep, what: str = "--lead") -> int:
    """Model steps in ``lead``: a duration for a fixed step, calendar months ('12MS', '12 months', '1YS') for a
    calendar step."""
    if not model_step.is_calendar:
        return lead_steps(lead, model_step.nominal, what=what)
    try:
        months = TimeStep.parse(lead).months
    except TimeAxisError:
        months = 0
    if not months or months % model_step.months:
        raise ConfigError(
            f"{what} {lead!r} is not a whole number of the model's {model_step.describe()} steps; give calendar "
            f"months such as '{model_step.scaled(12)}' or '{12 * model_step.months} months'."
        )
    return months // model_step.months


def _aggregate_steps(cfg: RolloutConfig, model_step: TimeStep, n_steps: int) -> list[int]:
    step = model_step.nominal
    if cfg.aggregate_leads is None:
        candidates = [pd.Timedelta(days=d) for d in (1, 5, 10)] + [n_steps * step]
        picked = {
            round(c / step) - 1 for c in candidates if c <= n_steps * step and c.value % step.value == 0
        }
        return sorted(picked)
    steps = {_steps(lead, model_step, what="--aggregate-leads value") - 1 for lead in cfg.aggregate_leads}
    beyond = [s + 1 for s in steps if s >= n_steps]
    if beyond:
        raise ConfigError(
            f"--aggregate-leads has leads beyond --lead {cfg.lead!r} ({beyond} steps); drop them or lengthen --lead."
        )
    return sorted(steps)


def _identity(
    cfg: RolloutConfig, model: StepModel, inits: pd.DatetimeIndex, n_steps: int, agg: list[int]
) -> dict:
    return canonical(
        {
            "version": IDENTITY_VERSION,
            "checkpoint_sha256": model.checkpoint_sha256,
            "model": model.model_info,
            "manifest": model.manifest.to_dict(),
            "data": os.path.abspath(cfg.data) if "://" not in cfg.data else cfg.data,
            "inits": [str(t)[:19] for t in inits.values.astype("datetime64[s]")],
            "lead_steps": n_steps,
            "step_hours": model.manifest.time_step_hours,
            "members": cfg.members,
            "perturbation": cfg.perturbation,
            "seed": cfg.seed,
            "perturb_control": cfg.perturb_control,
            "batch_size": cfg.batch_size,
            "aggregate_steps": agg,
            "blowup_bound": cfg.blowup_bound,
            "device": model.device.type,
            "planner": None if cfg.planner is None else cfg.planner.to_dict(),
        }
    )


def _check_existing(paths: RunPaths, identity: dict, rank_identity: dict, overwrite: bool) -> dict | None:
    """The restart record to resume from (None: start afresh); refuses outputs of another run.

    ``identity`` is the store's (the same for every rank), ``rank_identity`` the restart record's."""
    if not paths.store.exists():
        paths.clear_state()
        return None
    stored = read_run_identity(paths.store)
    if overwrite:
        if stored is None:
            raise OutputExistsError(
                f"{paths.store} exists and is not an earthcast rollout store; --overwrite only replaces rollout "
                "outputs. Remove it yourself or choose another --out."
            )
        shutil.rmtree(paths.store)
        paths.aggregates.unlink(missing_ok=True)
        paths.clear_state()
        return None
    if stored is None:
        raise OutputExistsError(
            f"{paths.store} exists and is not an earthcast rollout store; choose another --out."
        )
    record = load_record(paths.state) if paths.state.is_dir() else None
    for what, other in (
        ("store", stored),
        ("restart record", None if record is None else json.loads(record["identity"])),
    ):
        expected = identity if what == "store" else rank_identity
        diffs = [] if other is None else identity_differences(other, expected)
        if diffs:
            listing = "\n  - ".join(diffs)
            raise OutputExistsError(
                f"{paths.store} holds a different run (its {what} differs):\n  - {listing}\nRerun with the "
                "original checkpoint and options to resume it, choose another --out, or pass --overwrite to "
                "replace it."
            )
    if record is None:
        paths.clear_state()
    return record


def _mask(truth: TruthSource, model: StepModel, first: pd.DatetimeIndex) -> torch.Tensor | None:
    if not model.manifest.masked:
        return None
    states = truth.initial_states(first, model.n_input)[0]
    return torch.from_numpy(np.isfinite(states).all(axis=(0, 1)))


def _commit(
    writer: ForecastWriter,
    aggregates: OnlineAggregates,
    state_dir: Path,
    out: RolloutStep,
    part: slice,
    local: int,
    own: slice,
    record: dict[str, Any],
) -> None:
    """Put one computed step on disk: forecast region (``part`` of the store's time axis), aggregators (this
    rank's batch ``local``, its inits ``own``), then the restart record."""
    writer.write(part, out.index, out.fields.cpu().numpy())
    aggregates.update(out, local, own)
    save_record(state_dir, record)


def run_rollout(cfg: RolloutConfig) -> RolloutResult:
    """Run (or resume) a rollout; see the module docstring for the files it writes.

    With several ranks, each rank's aggregates cover its own inits. They combine exactly: ``global_mean``
    concatenates along ``time``; ``zonal_mean`` and ``zonal_energy_spectrum`` are means weighted by each
    file's ``samples`` per lead (the coordinate ``samples``); ``zonal_energy_spectrum_mean`` and ``time_mean``
    are means weighted by the ``samples`` attribute; ``time_std`` combines as
    ``sqrt(Σ n_r (std_r² + mean_r²) / Σ n_r − mean²)``.

    Raises:
        FileNotFoundError, ValueError, KeyError: bad checkpoint, store, inits or leads (messages name the fix).
        FileExistsError: the output holds another run.
    """
    if min(cfg.members, cfg.batch_size, cfg.queue_steps) < 1:
        raise ConfigError(
            f"--members, --batch-size and --queue-steps must be >= 1, got {cfg.members}, {cfg.batch_size} "
            f"and {cfg.queue_steps}."
        )
    ranks = resolve_ranks(cfg.rank, cfg.world_size)
    if cfg.overwrite and ranks.world_size > 1:
        raise ConfigError(
            "--overwrite needs a single rank (a rank could write into the store another rank is replacing): "
            f"remove {cfg.out}, its aggregates and its .rollout directory first, then start the ranks."
        )
    model = load_step_model(cfg.checkpoint, rank_device(cfg.device))
    if cfg.planner is not None:
        from earthcast.planners.inference import planned_step_model  # planners build on this package

        model = planned_step_model(model, cfg.planner, cfg.members)
    truth = TruthSource.open(cfg.data, model.manifest)
    inits = parse_inits(cfg.inits)
    n_steps = _steps(cfg.lead, model.manifest.model_step)
    truth.check_inits(inits, model.n_input)
    if model.manifest.boundary_width:  # the lateral boundary is read from the truth at every valid time
        leads = np.arange(1, n_steps + 1)
        truth.check_boundary(advance_times(inits.values[:, None], leads, model.manifest.model_step))
    agg = _aggregate_steps(cfg, model.manifest.model_step, n_steps)
    identity = _identity(cfg, model, inits, n_steps, agg)
    batches = [slice(i, min(i + cfg.batch_size, len(inits))) for i in range(0, len(inits), cfg.batch_size)]
    mine = ranks.batches(len(batches))  # this rank's batches; its inits are mine_inits on the time axis
    mine_inits = slice(batches[mine.start].start, batches[mine.stop - 1].stop)
    rank_identity = (
        identity if ranks.world_size == 1 else identity | {"rank": ranks.rank, "ranks": ranks.world_size}
    )
    identity_json = json.dumps(rank_identity)  # the record stores a string: cheap to save after every step
    paths = RunPaths.of(cfg.out, ranks)
    record = _check_existing(paths, identity, rank_identity, cfg.overwrite)
    blowups = [BlowUp(**b) for b in record["blowups"]] if record else []
    if record is not None and record["complete"]:
        return RolloutResult("already complete", paths.store, paths.aggregates, blowups)
    members = cfg.members if cfg.members > 1 else None
    leads = leads_axis(n_steps, model.step)
    aggregates = OnlineAggregates(
        paths.state, model.manifest, n_inits=mine_inits.stop - mine_inits.start, members=cfg.members,
        n_steps=n_steps, spectrum_steps=agg, create=record is None,
    )  # fmt: skip
    writer = ForecastWriter(paths.store, model.manifest, ensemble=members is not None)
    if not paths.store.exists() and ranks.rank > 0:
        wait_for_store(paths.store, identity, cfg.store_wait)
    elif not paths.store.exists():
        attrs = {RUN_ATTR: json.dumps(identity), "checkpoint": str(Path(cfg.checkpoint).absolute())}
        step = model.manifest.model_step
        valid = None
        if step.is_calendar:  # true valid times: a month step is not a fixed timedelta
            valid = advance_times(inits.values[:, None], np.arange(1, n_steps + 1)[None, :], step)
        writer.create(store_template(model.manifest, inits.values, leads, members, attrs, valid))
    first_batch, first_step = (record["batch"], record["next_step"]) if record else (mine.start, 0)
    if record is not None:
        torch.set_rng_state(record["rng"])
    perturbation = 0.0 if cfg.planner is not None else cfg.perturbation  # planner members are its beams
    ensemble = Ensemble(cfg.members, perturbation, cfg.seed, cfg.perturb_control)
    static = torch.from_numpy(truth.static_fields())
    mask = _mask(truth, model, inits[:1])
    computed = 0
    bar = tqdm(
        total=len(mine) * n_steps, initial=(first_batch - mine.start) * n_steps + first_step, unit="step",
        desc="rollout" if ranks.world_size == 1 else f"rollout {ranks.tag}", disable=not cfg.progress,
        dynamic_ncols=True,
    )  # fmt: skip
    with bar, StepCommitter(cfg.queue_steps) as committer:
        for b in range(first_batch, mine.stop):
            part, local = batches[b], b - mine.start  # local: the batch's index in this rank's aggregates
            own = slice(part.start - mine_inits.start, part.stop - mine_inits.start)
            resume = None
            if record is not None and b == first_batch and first_step > 0:
                resume = RolloutState(record["window"], record["alive"], first_step)
            states = (
                torch.zeros(0)
                if resume
                else torch.from_numpy(truth.initial_states(inits[part], model.n_input))
            )
            ic = InitialConditions(inits.values[part], states, static, mask, truth)
            committer.submit(functools.partial(aggregates.resume, local, resume.next_step if resume else 0))
            for out in generate(
                model, ic, n_steps, ensemble=ensemble, blowup_bound=cfg.blowup_bound, resume=resume
            ):
                for report in out.blowups:
                    bar.write(f"blow-up: {report.describe()}")
                blowups += out.blowups
                last = out.index + 1 == n_steps
                rec = {
                    "identity": identity_json, "batch": b + 1 if last else b, "next_step": 0 if last else out.index + 1,
                    "window": out.state.window.cpu(), "alive": out.state.alive.cpu(),
                    "blowups": [r.to_dict() for r in blowups], "rng": torch.get_rng_state(), "complete": False,
                }  # fmt: skip
                committer.submit(
                    functools.partial(_commit, writer, aggregates, paths.state, out, part, local, own, rec)
                )
                computed += 1
                bar.update(1)
    aggregates.flush()
    datasets = aggregates.datasets(inits.values[mine_inits], leads, members, len(mine))
    write_aggregates(datasets, paths.aggregates)
    save_record(paths.state, {
        "identity": identity_json, "batch": mine.stop, "next_step": 0, "window": torch.zeros(0),
        "alive": torch.zeros(0, dtype=torch.bool), "blowups": [r.to_dict() for r in blowups],
        "rng": torch.get_rng_state(), "complete": True,
    })  # fmt: skip
    return RolloutResult("complete", paths.store, paths.aggregates, blowups, computed)

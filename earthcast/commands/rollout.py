"""``earthcast rollout``: resumable rollouts of a trained checkpoint into a WB2 by-init Zarr store.

Example::

    earthcast rollout --ckpt last.ckpt --data era5.zarr --inits 2020-01-01T00:2020-12-31T12:12h \\
        --lead 10d --out forecast.zarr --batch-size 8

Writes ``forecast.zarr`` (dims time=init, [number], prediction_timedelta, [level], latitude, longitude;
float32; one init × one lead per chunk; Zarr v2, consolidated), ``forecast_aggregates.nc`` (global-mean
series, zonal means, zonal energy spectra, time mean and std; one netCDF group each) and the state
directory ``forecast.rollout/``. Rerunning the same command after a crash resumes at the first unwritten
lead. Exit status: 0 done (or already complete), 2 bad input, 3 a member blew up (the report names the
step, channel and location; everything else is written).
"""

from __future__ import annotations

import argparse
import sys

from earthcast.planners.aggregate import AGGREGATORS
from earthcast.planners.inference import PlanSettings
from earthcast.planners.scoring import CRITICS
from earthcast.rollout.session import RolloutConfig, run_rollout
from earthcast.rollout.timing import INITS_HELP

BLOWUP_EXIT = 3


def build_parser() -> argparse.ArgumentParser:
    """The ``earthcast rollout`` argument parser."""
    p = argparse.ArgumentParser(
        prog="earthcast rollout",
        description="Roll a trained checkpoint out from truth initial conditions into a WB2 by-init Zarr store.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="checkpoint written by `earthcast fit` (.ckpt)")
    which.add_argument(
        "--planner",
        metavar="CKPT",
        help="a planner's checkpoint (BeamVQ or SFP): plan every step with --critic; members are its best beams",
    )
    p.add_argument(
        "--data", required=True, help="truth store the initial conditions and static fields come from"
    )
    p.add_argument("--inits", required=True, help=INITS_HELP)
    p.add_argument(
        "--lead", required=True, help="forecast length, a multiple of the model step (e.g. 10d, 365d)"
    )
    p.add_argument("--out", required=True, help="output store, e.g. forecast.zarr")
    p.add_argument("--members", type=int, default=1, help="ensemble members (a `number` dim when > 1)")
    p.add_argument(
        "--perturbation",
        type=float,
        default=0.05,
        help="initial-condition noise of perturbed members, std in normalised units (default 0.05)",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed of the per-member perturbations")
    p.add_argument(
        "--perturb-control", action="store_true", help="perturb member 0 too (default: it is the control)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="inits per batch (default 4)")
    p.add_argument(
        "--aggregate-leads",
        nargs="+",
        help="leads where zonal energy spectra are kept, e.g. 1d 5d 10d (default: 1d 5d 10d and the last lead)",
    )
    p.add_argument(
        "--blowup-bound",
        type=float,
        default=50.0,
        help="stop a member when |normalised value| exceeds this (default 50; inf checks only NaN/Inf)",
    )
    plan = p.add_argument_group("planning (with --planner)")
    plan.add_argument(
        "--critic", default="learned", choices=CRITICS, help="inference critic (default learned)"
    )
    plan.add_argument("--horizon", type=int, default=1, help="leads searched ahead at each step (default 1)")
    plan.add_argument("--beam-width", type=int, default=4, help="beams kept (default 4)")
    plan.add_argument("--expansions", type=int, help="candidates per beam (default: the head's K)")
    plan.add_argument(
        "--aggregator",
        default="argmax",
        choices=AGGREGATORS,
        help="how the final beams combine (default argmax)",
    )
    plan.add_argument("--top-m", type=int, default=1, help="beams averaged by --aggregator top_m")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing rollout output")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``earthcast rollout``; returns 0 when done, 3 if a member blew up."""
    args = build_parser().parse_args(argv)
    cfg = RolloutConfig(
        checkpoint=args.ckpt or args.planner,
        data=args.data,
        inits=args.inits,
        lead=args.lead,
        out=args.out,
        members=args.members,
        perturbation=args.perturbation,
        seed=args.seed,
        perturb_control=args.perturb_control,
        batch_size=args.batch_size,
        aggregate_leads=tuple(args.aggregate_leads) if args.aggregate_leads else None,
        blowup_bound=args.blowup_bound,
        device=args.device,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        planner=None
        if args.planner is None
        else PlanSettings(
            args.critic, args.horizon, args.beam_width, args.expansions, args.aggregator, args.top_m
        ),
    )
    result = run_rollout(cfg)
    if result.status == "already complete":
        print(f"{result.store} already holds this complete run; nothing to do.")
    else:
        print(f"wrote {result.store} ({result.steps_computed} steps computed) and {result.aggregates}")
    if result.blowups:
        lines = "\n  ".join(r.describe() for r in result.blowups)
        print(
            f"{len(result.blowups)} member(s) blew up and stopped (their later leads are NaN):\n  {lines}\n"
            "Lower --lead, check the initial conditions, or use a more stable checkpoint.",
            file=sys.stderr,
        )
        return BLOWUP_EXIT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``earthcast rollout``: resumable rollouts of a trained checkpoint into a WB2 by-init Zarr store.

Example::

    earthcast rollout --checkpoint last.ckpt --data era5.zarr --inits 2020-01-01T00:2020-12-31T12:12h \\
        --lead 10d --out forecast.zarr --batch_size 8
    earthcast rollout --config rollout.yaml --lead 365d    # any option from a YAML file (--print_config)
    earthcast rollout --checkpoint planner.ckpt --planner.critic learned --planner.beam_width 4 …  # planning

The options are the fields of :class:`~earthcast.rollout.session.RolloutConfig` (help text: its docstring;
``--planner.*``: :class:`~earthcast.planners.inference.PlanSettings`), parsed by
:mod:`earthcast.commands.dataclass_cli`, which also accepts the argparse spellings of earlier versions
(``--ckpt``, ``--batch-size 8``, ``--aggregate-leads 1d 5d``, ``--no-progress``, ``--planner CKPT --critic
learned``).

Writes ``forecast.zarr`` (dims time=init, [number], prediction_timedelta, [level], latitude, longitude;
float32; one init × one lead per chunk; Zarr v2, consolidated), ``forecast_aggregates.nc`` (global-mean
series, zonal means, zonal energy spectra, time mean and std; one netCDF group each) and the state
directory ``forecast.rollout/``. Rerunning the same command after a crash resumes at the first unwritten
lead. Exit status: 0 done (or already complete), 2 bad input, 3 a member blew up (the report names the
step, channel and location; everything else is written).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from earthcast.commands.dataclass_cli import argparse_style, dataclass_parser, field_kinds, parse_dataclass
from earthcast.planners.inference import PlanSettings
from earthcast.rollout.session import RolloutConfig, run_rollout

BLOWUP_EXIT = 3
ALIASES = {"ckpt": "checkpoint"} | {
    name: f"planner.{name}"
    for name in ("critic", "horizon", "beam_width", "expansions", "aggregator", "top_m")
}
"""Option names of earlier versions -> field names (``--critic`` is ``--planner.critic``)."""


def build_parser() -> ArgumentParser:
    """The ``earthcast rollout`` argument parser: the fields of :class:`RolloutConfig`."""
    return dataclass_parser(
        RolloutConfig,
        prog="earthcast rollout",
        description="Roll a trained checkpoint out from truth initial conditions into a WB2 by-init Zarr "
        "store. Give --planner (or any --planner.X; --planner.help lists them) to plan every step with a "
        "planner's checkpoint.",
    )


def _earlier_planner(parser: ArgumentParser, argv: list[str]) -> list[str]:
    """``--planner CKPT`` of earlier versions: ``--checkpoint CKPT --planner`` (plan, with the defaults that
    ``--critic`` … refine)."""
    for i, token in enumerate(argv[:-1]):
        value = argv[i + 1]
        if (
            token == "--planner"
            and not value.startswith(("-", "{"))
            and value not in ("null", "PlanSettings")
        ):
            if any(t.split("=")[0] in ("--ckpt", "--checkpoint") for t in argv):
                parser.error("argument --planner: not allowed with argument --ckpt")
            return [*argv[:i], "--checkpoint", value, "--planner", *argv[i + 2 :]]
    return argv


def parse_config(argv: Sequence[str]) -> RolloutConfig:
    """The :class:`RolloutConfig` of ``earthcast rollout`` options (any spelling; bad ones exit with 2)."""
    parser = build_parser()
    kinds = field_kinds(RolloutConfig, {"PlanSettings": PlanSettings})
    return parse_dataclass(
        parser, RolloutConfig, argparse_style(_earlier_planner(parser, list(argv)), kinds, ALIASES)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast rollout``; returns 0 when done, 3 if a member blew up (bad options exit with 2)."""
    result = run_rollout(parse_config(sys.argv[1:] if argv is None else argv))
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

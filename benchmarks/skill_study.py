"""Skill and stability study: the default TritonCast against its ablations, a U-Net, persistence and
climatology on the embedded Held–Suarez atmosphere, with the same seed and training budget.

Every variant trains with ``earthcast fit --config configs/quickstart.yaml`` (+ its stacked config: the
ablations ``no_core``, ``no_skip``, ``flat`` and ``configs/baselines/unet.yaml``), forecasts 10 days from 72
inits through the test year 2019 (``earthcast rollout``) and is scored with ``earthcast score`` against
persistence and the climatology of the training years (``earthcast climatology``). Each variant also runs
365 days free from 2019-01-01; the default TritonCast runs from 2019-05-01, 2019-09-01 and from 2019-01-01
rotated by 90° in longitude as well (Held–Suarez is zonally symmetric, so the rotated run is as valid a
start). Stability figures over the last 90 days of the 2019-01-01 run: :mod:`earthcast.scoring.stability`.

    python benchmarks/skill_study.py --out outputs/skill_study           # the study (~1 h on 2 cores)
    python benchmarks/skill_study.py --out outputs/skill_study --quick   # smoke run (< 2 min)

Writes ``study.json`` and ``study.md`` (the tables of docs/results.md) in ``--out``; finished trainings and
rollouts are reused on a rerun with the same commands. Ends with one BAR line per bar of the issue (the
full run's are recorded in docs/results.md; ``--quick`` bars say nothing about the model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_runs import train

from earthcast.cli import main as earthcast
from earthcast.commands.demo import skill_inits
from earthcast.commands.rollout import BLOWUP_EXIT
from earthcast.datasets.store import open_store, resolve_store
from earthcast.plotting.figures import parse_lead
from earthcast.plotting.scores import metric_values
from earthcast.scoring.stability import stability_figures

BASE = "configs/quickstart.yaml"
VARIANTS = {
    "tritoncast": [],
    "no_core": ["configs/ablations/no_core.yaml"],
    "no_skip": ["configs/ablations/no_skip.yaml"],
    "flat": ["configs/ablations/flat.yaml"],
    "unet": ["configs/baselines/unet.yaml"],
}
FIELDS = {  # table name -> (variable, level)
    "Z500": ("geopotential", 500),
    "T850": ("temperature", 850),
    "SP": ("surface_pressure", None),
    "V250": ("v_component_of_wind", 250),
}
STABLE_FIELDS = ("Z500", "T850", "SP")
LEADS = ("6h", "1d", "3d", "5d", "7d", "10d")
TEST = ("2019-01-01", "2019-12-31T18")
YEAR_STARTS = ("2019-01-01", "2019-05-01", "2019-09-01")
ROTATION = 16  # longitude columns of the 64x32 grid: 90°


def call(argv: list[str], allowed: tuple[int, ...] = (0,)) -> float:
    """Run one earthcast command in this process; its wall time in seconds."""
    start = time.perf_counter()
    if earthcast(argv) not in allowed:
        raise SystemExit(f"failed: earthcast {' '.join(argv)}")
    return time.perf_counter() - start


def rotated_store(store: str, out: Path, end: str = TEST[1]) -> Path:
    """The test period up to ``end`` (and the days before it) with every field rolled by 90° in longitude,
    coordinates kept."""
    path = out / f"rotated_to_{end[:10]}.zarr"
    if not (path / ".zmetadata").exists():
        rolled = (
            open_store(store).sel(time=slice("2018-12-25", end)).roll(longitude=ROTATION, roll_coords=False)
        )
        for variable in rolled.variables.values():
            variable.encoding = {}  # the source's chunks and codecs do not fit the new store
        rolled.chunk({"time": 40}).to_zarr(path, mode="w", consolidated=True, zarr_format=2)
    return path


def rollout(ckpt: Path, data: str | Path, inits: str, lead: str, out: Path, batch: int) -> float:
    """``earthcast rollout`` (resumes or returns at once when ``out`` is complete). A member that blows up is
    reported and kept (NaN after the blow-up), and the study records its finite steps."""
    argv = ["rollout", "--checkpoint", str(ckpt), "--data", str(data), "--inits", inits, "--lead", lead]
    return call([*argv, "--out", str(out), "--batch_size", str(batch), "--progress=false"], (0, BLOWUP_EXIT))


def skill(results: dict[str, xr.Dataset]) -> dict[str, dict[str, dict[str, float]]]:
    """{source: {field: {metric@lead: value}}} for RMSE at every lead and ACC at every lead."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for source, ds in results.items():
        stored = pd.to_timedelta(ds["lead_time"].values)
        for name, (variable, level) in FIELDS.items():
            row = table.setdefault(source, {}).setdefault(name, {})
            for metric in ("rmse", "acc"):
                values = metric_values(ds, variable, metric, level=level)
                for lead in LEADS:
                    if parse_lead(lead) in stored:
                        row[f"{metric}@{lead}"] = float(values.sel(lead_time=parse_lead(lead)))
    return table


def year_figures(year: Path, truth: xr.Dataset, window_days: int) -> dict:
    """Finite steps of each init of a year store, and the 2019-01-01 run's stability figures."""
    fc = open_store(year)
    out: dict = {"finite_steps": {}}
    for i, init in enumerate(pd.DatetimeIndex(fc["time"].values)):
        values = np.stack([fc[v].isel(time=i).sel(level=lev).values if lev else fc[v].isel(time=i).values
                           for v, lev in FIELDS.values()], axis=1)  # fmt: skip
        finite = np.isfinite(values).all(axis=(1, 2, 3))
        out["finite_steps"][str(init.date())] = int(finite.size if finite.all() else np.argmin(finite))
    valid = pd.DatetimeIndex(fc["time"].values[0] + fc["prediction_timedelta"].values)
    last = min(valid[-1], pd.Timestamp(TEST[1]))
    window = valid[(valid > last - pd.Timedelta(days=window_days)) & (valid <= last)]
    for name in STABLE_FIELDS:
        variable, level = FIELDS[name]
        da = fc[variable].isel(time=0)
        da = da.sel(level=level) if level else da
        da = da.assign_coords(valid=("prediction_timedelta", valid)).swap_dims(prediction_timedelta="valid")
        forecast = da.sel(valid=window).drop_vars(["prediction_timedelta", "time"]).rename(valid="time")
        tr = truth[variable].sel(level=level) if level else truth[variable]
        out[name] = stability_figures(forecast, tr.sel(time=window)).to_dict()
    out["window"] = [str(window[0]), str(window[-1])]
    return out


def run_study(out: Path, quick: bool, names: list[str]) -> dict:
    store = resolve_store("demo:atmosphere")
    truth = open_store(store)
    out.mkdir(parents=True, exist_ok=True)
    budget = ["--trainer.max_steps=4", "--model.init_args.free_run_steps=0"] if quick else []
    skill_lead, year_lead = ("2d", "10d") if quick else ("10d", "365d")
    inits = skill_inits(TEST, parse_lead(skill_lead), 4 if quick else 72)
    init_spec = ",".join(t.isoformat() for t in inits)
    variants = {name: VARIANTS[name] for name in (["tritoncast"] if quick else names)}
    clim = out / "climatology.zarr"
    record: dict = {"quick": quick, "seconds": {}, "skill": {}, "year": {}, "inits": len(inits)}
    if not (clim / ".zmetadata").exists():
        years = ["--start-year", "2017", "--end-year", "2017" if quick else "2018"]
        scored = ["--variables", *sorted({v for v, _ in FIELDS.values()})]
        record["seconds"]["climatology"] = call(
            ["climatology", "--truth", store, "--out", str(clim), *years, *scored]
        )
    for name, extra in variants.items():
        ckpt, seconds = train(name, out, [BASE, *extra], budget)
        record["seconds"][f"train {name}"] = seconds
        fc = out / "forecasts" / f"skill_{name}.zarr"
        record["seconds"][f"rollout {name}"] = rollout(ckpt, store, init_spec, skill_lead, fc, 24)
        scores = out / "scores" / name
        call(["score", "--forecast", str(fc), "--truth", store, "--climatology", str(clim),
              "--out", str(scores / "results.nc"), "--baselines", "persistence", "climatology",
              "--variables", *sorted({v for v, _ in FIELDS.values()}), "--overwrite"])  # fmt: skip
        results = {"model": xr.open_dataset(scores / "results.nc", decode_timedelta=True)}
        if name == "tritoncast":
            for base in ("persistence", "climatology"):
                results[base] = xr.open_dataset(scores / f"results_{base}.nc", decode_timedelta=True)
        table = skill(results)
        record["skill"][name] = table.pop("model")
        record["skill"].update(table)
        starts = YEAR_STARTS if name == "tritoncast" else YEAR_STARTS[:1]
        year = out / "forecasts" / f"year_{name}.zarr"
        record["seconds"][f"year {name}"] = rollout(
            ckpt, store, ",".join(starts), year_lead, year, len(starts)
        )
        record["year"][name] = year_figures(year, truth, 2 if quick else 90)
        if name == "tritoncast":
            rotated = out / "forecasts" / "year_tritoncast_rotated.zarr"
            source = rotated_store(store, out, "2019-01-15" if quick else TEST[1])
            rollout(ckpt, source, YEAR_STARTS[0], year_lead, rotated, 1)
            record["year"]["tritoncast_rotated"] = year_figures(
                rotated, truth.roll(longitude=ROTATION, roll_coords=False), 2 if quick else 90
            )
    return record


def bars(record: dict, lead_steps: int) -> list[tuple[str, float, str, float]]:
    """(name, measured, op, target) of every bar."""
    sk, out = record["skill"], []
    for name in ("Z500", "T850"):
        model, pers, clim = (sk[s][name] for s in ("tritoncast", "persistence", "climatology"))
        out.append((f"day1_{name}_rmse_vs_persistence", model["rmse@1d"] / pers["rmse@1d"], "<=", 0.5))
        out.append((f"day1_{name}_rmse_vs_climatology", model["rmse@1d"] / clim["rmse@1d"], "<=", 0.7))
        five = "5d" if "rmse@5d" in model else max((k for k in model if k.startswith("rmse@")), key=len)[5:]
        out.append(
            (f"day5_{name}_rmse_vs_persistence", model[f"rmse@{five}"] / pers[f"rmse@{five}"], "<", 1.0)
        )
        out.append(
            (f"day5_{name}_rmse_vs_climatology", model[f"rmse@{five}"] / clim[f"rmse@{five}"], "<", 1.0)
        )
    for other in [v for v in VARIANTS if v != "tritoncast" and v in sk]:
        ratio = sk["tritoncast"]["Z500"]["rmse@3d"] / sk[other]["Z500"]["rmse@3d"]
        out.append((f"day3_Z500_tritoncast_vs_{other}", ratio, "<", 1.0))
    year = record["year"]
    finite = dict(year["tritoncast"]["finite_steps"])
    finite["2019-01-01 rotated 90°"] = year["tritoncast_rotated"]["finite_steps"]["2019-01-01"]
    for start, steps in finite.items():
        out.append((f"year_finite_steps_{start.replace(' ', '_').replace('°', '')}", steps, ">=", lead_steps))
    for name in STABLE_FIELDS:
        fig = year["tritoncast"][name]
        out.append((f"year_{name}_abs_drift", abs(fig["drift"]), "<=", 0.05))
        out.append((f"year_{name}_time_mean_bias_rms", fig["bias_rms"], "<=", 0.25))
        out.append((f"year_{name}_spectrum_ratio_min", fig["spectrum_ratio_min"], ">=", 0.5))
        out.append((f"year_{name}_spectrum_ratio_max", fig["spectrum_ratio_max"], "<=", 2.0))
    return out


def passes(value: float, op: str, target: float) -> bool:
    return {"<": value < target, "<=": value <= target, ">=": value >= target}[op]


def markdown(record: dict) -> str:
    """The tables of docs/results.md."""
    sk = record["skill"]
    lines = [f"Skill: {record['inits']} inits through 2019, global area-weighted RMSE (ACC in brackets).", ""]
    leads = [lead for lead in LEADS if f"rmse@{lead}" in sk["tritoncast"]["Z500"]]
    lines += ["| field | forecast | " + " | ".join(leads) + " |", "|---|---|" + "---|" * len(leads)]
    for name in FIELDS:
        for source in sk:
            row = sk[source][name]
            cells = [f"{row[f'rmse@{lead}']:.4g}" + (f" ({row[f'acc@{lead}']:.2f})" if f"acc@{lead}" in row
                     and source != "climatology" else "") for lead in leads]  # fmt: skip
            lines.append(f"| {name} | {source} | " + " | ".join(cells) + " |")
    lines += ["", "Year runs (365 days free):", "", "| run | finite steps | field | drift | bias RMS | spectrum ratio k=1…16 |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for run, figs in record["year"].items():
        steps = ", ".join(f"{k}: {v}" for k, v in figs["finite_steps"].items())
        for name in STABLE_FIELDS:
            f = figs[name]
            lines.append(f"| {run} | {steps} | {name} | {f['drift']:+.3f} | {f['bias_rms']:.3f} | "
                         f"{f['spectrum_ratio_min']:.2f} – {f['spectrum_ratio_max']:.2f} |")  # fmt: skip
    lines += ["", "Wall times [s]: " + ", ".join(f"{k} {v:.0f}" for k, v in record["seconds"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/skill_study", help="study folder (reused on a rerun)")
    p.add_argument(
        "--quick", action="store_true", help="4 training steps, 2-day skill, 10-day 'year': a smoke run"
    )
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="variants to run (default all; tritoncast is needed for the bars)")  # fmt: skip
    args = p.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    record = run_study(out, args.quick, args.variants)
    record["seconds"]["total"] = time.perf_counter() - start
    lead_steps = 40 if args.quick else 1460
    record["bars"] = [
        {"name": n, "measured": v, "op": op, "target": t, "pass": passes(v, op, t)}
        for n, v, op, t in bars(record, lead_steps)
    ]
    (out / "study.json").write_text(json.dumps(record, indent=1, default=float))
    (out / "study.md").write_text(markdown(record))
    print(markdown(record))
    if args.quick:
        print("(--quick: a smoke run; its bars say nothing about the model)")
    for bar in record["bars"]:
        print(
            f"BAR {bar['name']} {bar['measured']:.4g} {bar['op']} {bar['target']:g} {'PASS' if bar['pass'] else 'FAIL'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

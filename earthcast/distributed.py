"""Running earthcast's Dask work (statistics, climatology, scoring) on a ``dask.distributed`` cluster.

Without a cluster, graphs run on Dask's threaded scheduler in this process. With ``--dask-address`` (a
running scheduler, e.g. ``tcp://10.0.0.5:8786`` from ``dask scheduler`` / dask-jobqueue) or
``--dask-workers N`` (a ``LocalCluster`` of N single-threaded worker processes), the same graphs run on
the cluster's workers: one ``dask.compute`` per command, so chunks are read and reduced in parallel.
The workers open the stores themselves, so every path must be readable from every worker (a shared file
system or an object store URL).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from earthcast.errors import ConfigError


def add_dask_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dask-address`` and ``--dask-workers`` to a command's parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="run on the dask.distributed scheduler at ADDRESS (e.g. tcp://host:8786); the workers must "
        "be able to read every store path",
    )
    group.add_argument(
        "--dask-workers",
        type=int,
        default=0,
        metavar="N",
        help="run on a local dask.distributed cluster of N single-threaded worker processes "
        "(default 0: Dask's threaded scheduler in this process)",
    )


@contextlib.contextmanager
def dask_client(address: str | None = None, workers: int = 0) -> Iterator[Any]:
    """The ``dask.distributed`` Client the block runs under, or None (threaded scheduler).

    Args:
        address: scheduler address of a running cluster; the cluster is left running on exit.
        workers: start a ``LocalCluster`` of this many single-threaded worker processes, shut down on exit.

    Yields:
        The active ``distributed.Client`` (the default for every Dask computation inside the block), or None
        when neither argument is given.
    """
    if address and workers:
        raise ConfigError("Pass either --dask-address or --dask-workers, not both.")
    if workers < 0:
        raise ConfigError(f"--dask-workers must be >= 0 (0: no cluster), got {workers}.")
    if not address and not workers:
        yield None
        return
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    import dask

    # Starting workers writes distributed's pre-spawn variables (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, …) into
    # this process's environment and leaves them there: every process started later from here (a DataLoader
    # worker, a rollout) would then run single-threaded, and FFTs and reductions would round differently
    # from the same run started elsewhere. Restore the environment when the cluster is gone.
    saved = dict(os.environ)
    try:
        # no dashboard, so no use for the workers' stack sampler (every 10 ms; it slowed chunk reads by ~30%)
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        with cluster, Client(cluster) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)


def active_client() -> Any:
    """The default ``distributed.Client`` of this process, or None."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def compute(tasks: Sequence[Any], *, progress: bool = False, desc: str = "computing") -> list[Any]:
    """Compute Dask collections in one graph: on the active Client, else on the threaded scheduler.

    Args:
        tasks: Dask arrays or delayed objects; shared inputs (e.g. one truth chunk) are read once.
        progress: show a progress bar (tasks of the graph locally, finished results on a cluster).
        desc: the progress bar's label.

    Returns:
        The computed values, in the order of ``tasks``.
    """
    import dask

    client = active_client()
    if client is None:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=desc, disable=not progress):
            return list(dask.compute(*tasks, scheduler="threads"))
    from distributed import as_completed
    from tqdm import tqdm

    out = list(tasks)  # plain values (an in-memory dataset's arrays) pass through, as in dask.compute
    lazy = [i for i, task in enumerate(out) if dask.is_dask_collection(task)]
    futures = client.compute([out[i] for i in lazy])
    for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress):
        pass
    for i, value in zip(lazy, client.gather(futures)):
        out[i] = value
    return out

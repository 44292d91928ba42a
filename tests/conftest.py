"""Test-wide set-up.

``TRITON_INTERPRET=1`` must be set before any module that defines ``@triton.jit`` kernels is imported,
because Triton decides at decoration time whether a kernel is compiled or interpreted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import socket
from pathlib import Path

import cartopy
import cartopy.io
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 64x32 WB2-layout truth store: 2018-01-01 … 2018-04-30 6-hourly, geopotential/temperature at 500 and
    850 hPa, 2m_temperature and a static land_sea_mask; time chunks of 16 steps."""
    import pandas as pd

    from earthcast.datasets.synthetic import write_synthetic_store
    from earthcast.grids import wb2_grid

    path = tmp_path_factory.mktemp("stores") / "truth.zarr"
    times = pd.date_range("2018-01-01", "2018-04-30T18", freq="6h")
    write_synthetic_store(path, wb2_grid("64x32_equiangular_conservative"), times, time_chunk=16)
    return str(path)


class NetworkUsed(AssertionError):
    """Raised when anything tries to reach the network or cartopy's download machinery."""


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Block sockets and cartopy's downloaders, and hide any cartopy data already on this machine."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkUsed(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(cartopy.io.Downloader, "path", refuse)
    empty = tmp_path / "empty_cartopy_dir"
    empty.mkdir()
    monkeypatch.setitem(cartopy.config, "data_dir", empty)
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", empty)

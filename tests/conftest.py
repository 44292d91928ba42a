"""Test-wide set-up.

``TRITON_INTERPRET=1`` must be set before any module that defines ``@triton.jit`` kernels is imported,
because Triton decides at decoration time whether a kernel is compiled or interpreted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

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

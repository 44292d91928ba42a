"""Test-wide set-up.

``TRITON_INTERPRET=1`` must be set before any module that defines ``@triton.jit`` kernels is imported,
because Triton decides at decoration time whether a kernel is compiled or interpreted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    np.random.seed(0)

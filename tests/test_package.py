"""Packaging: the package-dir mapping is complete, and the core imports without JAX."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_installed() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping, listed = config["package-dir"], set(config["packages"])
    for top, name in (
        ("earthcast", "earthcast"),
        ("models", "earthcast.models"),
        ("datasets", "earthcast.datasets"),
        ("planners", "earthcast.planners"),
    ):
        assert mapping[name] == top
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            assert ".".join((name, *parts)).rstrip(".") in listed, (
                f"{init.parent} is not in pyproject packages"
            )


BLOCK_JAX = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "jax" or name.startswith(("jax.", "jaxlib", "dinosaur", "pyqg_jax")):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _Blocker())
"""


def test_core_imports_without_jax() -> None:
    code = (
        BLOCK_JAX
        + """
import earthcast, earthcast.cli, earthcast.grids, earthcast.datasets.datamodule, earthcast.datasets.sim
import earthcast.models.backbone, earthcast.kernels, earthcast.scoring, earthcast.plotting
assert not any(m == "jax" or m.startswith("jax.") for m in sys.modules)
try:
    from earthcast.datasets.sim.demo import ensure_demo_store
    ensure_demo_store("atmosphere", years=0.01, cache_dir="/nonexistent-earthcast-test", progress=False)
except ImportError as err:
    assert "earthcast[sim]" in str(err), err
else:
    raise AssertionError("generation without JAX must fail with an install hint")
print("ok")
"""
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr

"""Lazy imports of the ``sim`` extra (JAX, dinosaur, pyqg-jax).

The core library must import without JAX, so the simulation modules only import these packages inside
functions, through :func:`require`, which turns a missing package into an actionable error.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from earthcast.errors import MissingDependencyError

SIM_INSTALL_HINT = 'pip install "earthcast[sim]"'


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"jax"``, ``"dinosaur"``, ``"pyqg_jax"``) or explain how to install it.

    Raises:
        ImportError: the package is missing (or blocked); the message names it and the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"The embedded physics data needs {module!r}, which could not be imported ({err}). "
            f"Install the simulation extra: {SIM_INSTALL_HINT}"
        ) from err

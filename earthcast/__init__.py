"""earthcast: physical spatiotemporal forecasting of the atmosphere and ocean.

The core library imports without JAX; the embedded physics data (``earthcast data demo``) needs the
``sim`` extra.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("earthcast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

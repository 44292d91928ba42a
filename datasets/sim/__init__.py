"""earthcast.datasets.sim: embedded demo data from real physics (Held–Suarez atmosphere, two-layer QG ocean).

Importing this package never imports JAX; calling :func:`ensure_demo_store` does (the ``sim`` extra).
"""

from earthcast.datasets.sim.demo import demo_store_path, ensure_demo_store

__all__ = ["demo_store_path", "ensure_demo_store"]

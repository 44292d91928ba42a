"""WeatherBench2-identical scoring: metrics, regions, climatology, baselines and the Dask pipeline.

Main entry points: :func:`score` (forecast or baseline vs truth → WB2 results dataset),
:func:`build_climatology`, :func:`persistence_forecast`, :func:`climatology_forecast`,
:func:`latitude_weights` and :func:`zonal_energy_spectrum`.
"""

from earthcast.scoring.climatology import build_climatology, climatology_forecast, persistence_forecast
from earthcast.scoring.evaluate import score
from earthcast.scoring.spectrum import zonal_energy_spectrum
from earthcast.scoring.weights import latitude_weights

__all__ = [
    "build_climatology",
    "climatology_forecast",
    "latitude_weights",
    "persistence_forecast",
    "score",
    "zonal_energy_spectrum",
]

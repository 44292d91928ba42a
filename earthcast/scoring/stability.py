"""Stability figures of a long free run against the truth over the same valid times.

The acceptance figures of a year-long run (the issue "TritonCast that holds a year"; ACE reports the same
kind: global-mean series, the time-mean bias map's RMS, spectra), computed over a final window (90 days):

- ``drift``: (forecast − truth) of the area-weighted global mean, averaged over the window, as a fraction of
  the truth's area-weighted spatial standard deviation (its time mean over the window);
- ``bias_rms``: the area-weighted RMS of the time-mean bias map (forecast − truth, averaged over the window),
  as a fraction of the truth's daily standard deviation (the area-weighted RMS of each point's standard
  deviation over the window);
- ``spectrum_ratio_min`` / ``_max``: the forecast's time-mean zonal energy spectrum (WB2's definition,
  :func:`~earthcast.scoring.spectrum.zonal_energy_spectrum`, summed over latitude with area weights) over the
  truth's, extreme over zonal wavenumbers 1 … ``max_wavenumber``.

A run with non-finite values in the window gives NaN figures (and the run is not stable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from earthcast.scoring.spectrum import zonal_energy_spectrum
from earthcast.scoring.weights import latitude_weights


@dataclass(frozen=True)
class StabilityFigures:
    """See the module docstring; all dimensionless."""

    drift: float
    bias_rms: float
    spectrum_ratio_min: float
    spectrum_ratio_max: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _area_mean(da: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    return (da.mean("longitude") * weights).sum("latitude") / weights.sum()


def stability_figures(
    forecast: xr.DataArray, truth: xr.DataArray, *, max_wavenumber: int = 16, geometry: str = "global"
) -> StabilityFigures:
    """Figures of ``forecast`` against ``truth``, both (time, latitude, longitude) at the same valid times
    (the window), latitude ascending, in the same physical units."""
    fc = forecast.transpose("time", "latitude", "longitude").astype(np.float64)
    tr = truth.transpose("time", "latitude", "longitude").astype(np.float64)
    if fc.sizes != tr.sizes:
        raise ValueError(f"forecast {dict(fc.sizes)} and truth {dict(tr.sizes)} cover different points")
    if not bool(np.isfinite(fc.values).all()):
        nan = float("nan")
        return StabilityFigures(nan, nan, nan, nan)
    w = xr.DataArray(latitude_weights(tr["latitude"].values, geometry), dims="latitude")
    tr_mean = _area_mean(tr, w)  # (time,)
    spatial_std = np.sqrt(_area_mean((tr - tr_mean) ** 2, w)).mean()
    drift = float((_area_mean(fc, w) - tr_mean).mean() / spatial_std)
    bias = fc.mean("time") - tr.mean("time")
    daily_std = np.sqrt(_area_mean(tr.var("time"), w))
    bias_rms = float(np.sqrt(_area_mean(bias**2, w)) / daily_std)
    ratio = _spectrum(fc, w) / _spectrum(tr, w)
    ratio = ratio.sel(zonal_wavenumber=slice(1, max_wavenumber))
    return StabilityFigures(drift, bias_rms, float(ratio.min()), float(ratio.max()))


def _spectrum(da: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Time-mean zonal energy spectrum, area-weighted over latitude: (zonal_wavenumber,)."""
    spec = zonal_energy_spectrum(da.assign_coords(latitude=da["latitude"])).mean("time")
    return (spec * weights).sum("latitude") / weights.sum()

"""WB2 zonal energy spectrum (``derived_variables.ZonalEnergySpectrum``).

Along each circle of latitude φ with L equally spaced longitudes and circumference C(φ) = 2πR cos φ
(R = 6,367,500 m, WB2's ``schema.EARTH_RADIUS_M``):

    F_k = (1/L) Σ_l f_l e^{−2πikl/L}            (``rfft``, ``norm="forward"``), k = 0 … L//2
    S_0 = C |F_0|²,   S_k = 2 C |F_k|² for k > 0

so that Σ_k S_k ≈ (C/L) Σ_l f_l² (Parseval; exact for odd L, where no Nyquist term is doubled).
Coordinates: ``zonal_wavenumber`` k, ``frequency`` = k / C(φ) · 360/(L·Δλ) [1/m], ``wavelength`` =
1/frequency [m] (inf at k = 0).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from earthcast.errors import DataError

EARTH_RADIUS_M = 6_367_500.0
"""WB2's Earth radius (``schema.EARTH_RADIUS_M``), in metres."""


def circumference_m(latitude: xr.DataArray) -> xr.DataArray:
    """Length of the circle of latitude, 2πR cos φ, in metres."""
    return np.cos(np.deg2rad(latitude)) * (2 * np.pi * EARTH_RADIUS_M)


def _power(values: np.ndarray) -> np.ndarray:
    coeffs = np.fft.rfft(values, axis=-1, norm="forward")
    doubling = np.concatenate(([1.0], np.full(coeffs.shape[-1] - 1, 2.0)))
    return (coeffs.real**2 + coeffs.imag**2) * doubling


def zonal_energy_spectrum(da: xr.DataArray) -> xr.DataArray:
    """Zonal energy spectrum of ``da`` (any dims including ``latitude`` and ``longitude``).

    Returns:
        ``da`` with ``longitude`` replaced by ``zonal_wavenumber`` (0 … L//2), values in
        [m · units(da)²], and coords ``frequency`` (zonal_wavenumber, latitude) [1/m] and
        ``wavelength`` [m]. Dask-backed input stays lazy.
    """
    lon = np.asarray(da["longitude"], dtype=np.float64)
    steps = np.diff(lon)
    if lon.size < 2 or np.max(np.abs(steps - steps[0])) > 1e-3:
        raise DataError(
            "zonal_energy_spectrum needs uniformly spaced longitudes (WB2 equiangular grids); "
            f"got spacings between {steps.min():g}° and {steps.max():g}°. Regrid first."
        )
    spectrum = xr.apply_ufunc(
        _power,
        da,
        input_core_dims=[["longitude"]],
        output_core_dims=[["zonal_wavenumber"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"zonal_wavenumber": lon.size // 2 + 1}},
    )
    n_k = lon.size // 2 + 1
    spectrum = spectrum.assign_coords(zonal_wavenumber=np.arange(n_k))
    circumference = circumference_m(da["latitude"].astype(np.float64))
    spacing = circumference * steps[0] / 360.0
    base = xr.DataArray(np.fft.rfftfreq(lon.size), dims="zonal_wavenumber")
    frequency = (base / spacing).assign_attrs(units="1 / m")
    with np.errstate(divide="ignore"):
        wavelength = (1 / frequency).assign_attrs(units="m")
    out = spectrum * circumference
    out = out.assign_coords(frequency=frequency, wavelength=wavelength)
    out.attrs = {"long_name": f"zonal energy spectrum of {da.name}", "definition": "WB2 ZonalEnergySpectrum"}
    return out.rename(da.name)

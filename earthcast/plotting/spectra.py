"""Zonal energy spectra (WB2 definition) of forecasts per lead time against the truth, log-log.

Spectra come from :func:`earthcast.scoring.spectrum.zonal_energy_spectrum`: per circle of latitude,
S_k = 2πR cos φ · |F_k|² (×2 for k > 0) in [m · units²]. A plotted curve is the plain mean of S_k over
inits (or valid times), ensemble members and the latitudes in ``latitude_range``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from earthcast.errors import DataError
from earthcast.plotting.figures import (
    field_name,
    fields_of,
    file_stem,
    lead_label,
    new_figure,
    parse_lead,
    save_png,
    select_field,
    units_label,
)
from earthcast.scoring.spectrum import EARTH_RADIUS_M, zonal_energy_spectrum

EQUATOR_KM = 2 * np.pi * EARTH_RADIUS_M / 1000.0
"""Length of the equator [km] with WB2's Earth radius; wavelength at the equator = EQUATOR_KM / k."""

WAVELENGTH_TICKS_KM = (20000, 10000, 5000, 2000, 1000, 500, 200, 100, 50, 20, 10)
"""Labelled wavelengths on the top axis of spectrum plots [km]."""


def _equator_wavelength_km(k: np.ndarray) -> np.ndarray:
    """Wavenumber k ↔ wavelength at the equator [km] (the map is its own inverse); k ≤ 0 maps to inf."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(k > 0, EQUATOR_KM / k, np.inf)


def mean_spectrum(field: xr.DataArray, *, latitude_range: tuple[float, float] | None = None) -> xr.DataArray:
    """(zonal_wavenumber,) spectrum of ``field`` averaged over every other dim.

    Args:
        field: (…, latitude, longitude) values in the field's units, ascending latitude.
        latitude_range: (south, north) degrees to keep, inclusive; default all latitudes.
    """
    if latitude_range is not None:
        field = field.sel(latitude=slice(*latitude_range))
        if field.sizes["latitude"] == 0:
            raise DataError(f"No latitudes fall inside {latitude_range}; give (south, north) in degrees.")
    spectrum = zonal_energy_spectrum(field)
    others = [d for d in spectrum.dims if d != "zonal_wavenumber"]
    return spectrum.mean(others).drop_vars(["frequency", "wavelength"], errors="ignore").compute()


def forecast_truth_spectra(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variable: str,
    leads: Iterable[str | pd.Timedelta],
    *,
    level: int | None = None,
    latitude_range: tuple[float, float] | None = None,
) -> dict[str, xr.DataArray]:
    """Mean spectra keyed ``"truth"`` and ``"lead 1d"``, ``"lead 5d"``, …, over every init of the forecast.

    The truth curve averages the truth over every valid time (init + lead) of the requested leads.

    Raises:
        ValueError: a lead is not stored, or the truth lacks some valid time.
    """
    fc = select_field(forecast, variable, level)
    tr = select_field(truth, variable, level)
    inits = pd.DatetimeIndex(fc["time"].values)
    stored = pd.to_timedelta(fc["prediction_timedelta"].values)
    spectra: dict[str, xr.DataArray] = {}
    valid_times: set[pd.Timestamp] = set()
    for lead in map(parse_lead, leads):
        if lead not in stored:
            have = ", ".join(lead_label(v) for v in stored[:12]) + (" …" if stored.size > 12 else "")
            raise DataError(f"Lead {lead_label(lead)} is not in the forecast; stored leads: {have}.")
        spectra[f"lead {lead_label(lead)}"] = mean_spectrum(
            fc.sel(prediction_timedelta=lead), latitude_range=latitude_range
        )
        valid_times.update(inits + lead)
    wanted = pd.DatetimeIndex(sorted(valid_times))
    missing = wanted[~wanted.isin(pd.DatetimeIndex(tr["time"].values))]
    if not missing.empty:
        raise DataError(
            f"The truth lacks {missing.size} valid time(s), first {missing[0]}; pass a truth store that "
            "covers every init + lead."
        )
    return {"truth": mean_spectrum(tr.sel(time=wanted), latitude_range=latitude_range), **spectra}


def plot_spectra(spectra: Mapping[str, xr.DataArray], *, title: str, units: str = "") -> Figure:
    """Log-log spectra against zonal wavenumber k ≥ 1 (k = 0, the zonal mean, is left out).

    A ``"truth"`` entry is drawn black; the others in colour. The top axis gives the wavelength at the
    equator [km].
    """
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, spectrum in spectra.items():
        k = spectrum["zonal_wavenumber"].values
        keep = k >= 1
        style = {"color": "black", "linewidth": 2.0} if name == "truth" else {"linewidth": 1.3}
        ax.loglog(k[keep], spectrum.values[keep], label=name, **style)
    ax.set_xlabel("zonal wavenumber k")
    inner = units.strip("[]")
    ax.set_ylabel(f"energy [m · ({inner})²]" if inner else "energy")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top", functions=(_equator_wavelength_km, _equator_wavelength_km))
    k_max = max(float(s["zonal_wavenumber"].max()) for s in spectra.values())
    ticks = [w for w in WAVELENGTH_TICKS_KM if EQUATOR_KM / max(k_max, 1.0) <= w <= EQUATOR_KM]
    top.set_xticks(ticks, [f"{w:g}" for w in ticks])
    top.xaxis.set_minor_formatter(NullFormatter())
    top.set_xlabel("wavelength at the equator [km]")
    return fig


def write_spectra_plots(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variables: Iterable[str],
    leads: Iterable[str | pd.Timedelta],
    out: str | Path,
    *,
    levels: Iterable[int] | None = None,
    latitude_range: tuple[float, float] | None = None,
) -> list[Path]:
    """Write ``spectra_{field}.png`` for each field (one curve per lead plus the truth); return the paths."""
    leads = list(leads)
    written: list[Path] = []
    for variable, level in fields_of(forecast, variables, levels):
        spectra = forecast_truth_spectra(
            forecast, truth, variable, leads, level=level, latitude_range=latitude_range
        )
        where = (
            "all latitudes"
            if latitude_range is None
            else f"latitudes {latitude_range[0]}…{latitude_range[1]}°"
        )
        title = f"{field_name(variable, level)}: zonal energy spectrum ({where})"
        fig = plot_spectra(spectra, title=title, units=units_label(forecast[variable]))
        written.append(save_png(fig, Path(out) / f"spectra_{file_stem(variable, level)}.png"))
    return written

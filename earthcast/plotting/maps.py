"""Maps of forecast, truth and forecast − truth for one field at one lead time.

Inputs follow the WB2 layout: a forecast by init ``(time, prediction_timedelta, [level], latitude,
longitude)``, optionally with an ensemble dim (``number``/``realization``, shown as the ensemble mean),
and a truth ``(time, [level], latitude, longitude)`` indexed by valid time. Latitude in degrees north,
longitude in degrees east 0…360; values keep the store's ``units`` attribute, which labels the colour bars.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cartopy.crs as ccrs
import numpy as np
import pandas as pd
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes
from matplotlib.figure import Figure

from earthcast.errors import DataError
from earthcast.grids import grid_mismatch
from earthcast.plotting.coastlines import add_coastlines
from earthcast.plotting.figures import (
    fields_of,
    file_stem,
    lead_label,
    new_figure,
    parse_lead,
    save_png,
    select_field,
    units_label,
)

PROJECTIONS: dict[str, type[ccrs.Projection]] = {"robinson": ccrs.Robinson, "platecarree": ccrs.PlateCarree}
"""Map projections by CLI name."""

ENSEMBLE_DIMS = ("number", "realization")
"""Ensemble member dims (WB2 uses both); maps show their mean."""


@dataclass(frozen=True)
class MapPanel:
    """One map: a 2-D field ``(latitude, longitude)`` and how to colour it."""

    field: xr.DataArray
    title: str
    cmap: str
    vmin: float
    vmax: float
    colorbar_label: str


def projection(name: str) -> ccrs.Projection:
    """The cartopy projection called ``name`` (``robinson`` or ``platecarree``)."""
    try:
        return PROJECTIONS[name.lower()]()
    except KeyError:
        raise DataError(f"Unknown projection {name!r}; choose one of: {', '.join(PROJECTIONS)}.") from None


def cell_edges(centres: np.ndarray, *, clip: tuple[float, float] | None = None) -> np.ndarray:
    """(N+1,) cell edges of N ascending cell centres: midpoints, outer edges extended by half a cell."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 1:
        edges = centres + np.array([-0.5, 0.5])
    else:
        mid = 0.5 * (centres[1:] + centres[:-1])
        edges = np.concatenate(
            [[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]]
        )
    return np.clip(edges, *clip) if clip is not None else edges


def draw_panel(ax: GeoAxes, panel: MapPanel, *, coastlines: bool = True) -> None:
    """Draw ``panel`` on a cartopy axis as cells (pcolormesh), with coastlines and a colour bar."""
    field = panel.field
    if set(field.dims) != {"latitude", "longitude"}:
        raise DataError(
            f"A map needs a 2-D (latitude, longitude) field, but got dims {field.dims}; select one init, lead "
            "and level first."
        )
    field = field.transpose("latitude", "longitude")
    lon_edges = cell_edges(field["longitude"].values)
    lat_edges = cell_edges(field["latitude"].values, clip=(-90.0, 90.0))
    mesh = ax.pcolormesh(
        lon_edges,
        lat_edges,
        np.asarray(field.values, dtype=np.float64),
        transform=ccrs.PlateCarree(),
        cmap=panel.cmap,
        vmin=panel.vmin,
        vmax=panel.vmax,
        shading="flat",
    )
    ax.set_global()
    if coastlines:
        add_coastlines(ax)
    ax.set_title(panel.title, fontsize=9)
    colorbar = ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.8, pad=0.04)
    colorbar.set_label(panel.colorbar_label)


def map_figure(
    panels: Sequence[MapPanel], *, projection_name: str = "robinson", coastlines: bool = True
) -> Figure:
    """A row of maps, one per panel, in the named projection."""
    fig = new_figure(5.0 * len(panels), 3.6)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection=projection(projection_name))
        draw_panel(ax, panel, coastlines=coastlines)
    return fig


def plot_map(
    field: xr.DataArray,
    *,
    title: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    projection_name: str = "robinson",
    coastlines: bool = True,
) -> Figure:
    """A single map of a 2-D ``(latitude, longitude)`` field; the colour range defaults to its min/max."""
    values = np.asarray(field.values, dtype=np.float64)
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    panel = MapPanel(field, title or str(field.name or ""), cmap, lo, hi, units_label(field))
    return map_figure([panel], projection_name=projection_name, coastlines=coastlines)


def pick_init(forecast: xr.Dataset | xr.DataArray, init: str | pd.Timestamp | None) -> pd.Timestamp:
    """The init time ``init`` of a by-init forecast (default: its first), checked to be stored."""
    inits = pd.DatetimeIndex(forecast["time"].values)
    if init is None:
        return inits[0]
    wanted = pd.Timestamp(init)
    if wanted not in inits:
        raise DataError(
            f"Init time {wanted} is not in the forecast; it has {inits.size} inits from {inits[0]} to {inits[-1]}."
        )
    return wanted


def forecast_truth_error_panels(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variable: str,
    lead: str | pd.Timedelta,
    *,
    level: int | None = None,
    init: str | pd.Timestamp | None = None,
) -> list[MapPanel]:
    """Forecast, truth and error panels of one field at one lead for one init (default: the first).

    The truth is taken at valid time = init + lead. Forecast and truth grids must agree within 1e-3°.
    """
    lead = parse_lead(lead)
    fc = select_field(forecast, variable, level)
    init_time = pick_init(forecast, init)
    leads = pd.to_timedelta(fc["prediction_timedelta"].values)
    if lead not in leads:
        stored = ", ".join(lead_label(v) for v in leads[:12]) + (" …" if leads.size > 12 else "")
        raise DataError(f"Lead {lead_label(lead)} is not in the forecast; stored leads: {stored}.")
    fc = fc.sel(time=init_time, prediction_timedelta=lead)
    members = [d for d in ENSEMBLE_DIMS if d in fc.dims]
    kind = "forecast (ensemble mean)" if members else "forecast"
    fc = fc.mean(members) if members else fc
    valid = init_time + lead
    tr = select_field(truth, variable, level)
    if valid not in pd.DatetimeIndex(tr["time"].values):
        times = pd.DatetimeIndex(tr["time"].values)
        raise DataError(
            f"The truth has no data at valid time {valid} (init {init_time} + lead {lead_label(lead)}); it "
            f"covers {times[0]} to {times[-1]}. Pass a truth store that contains every valid time."
        )
    tr = tr.sel(time=valid)
    mismatch = grid_mismatch(fc["latitude"], fc["longitude"], tr["latitude"], tr["longitude"])
    if mismatch:
        raise DataError(f"Forecast and truth grids differ: {mismatch}. Regrid one onto the other first.")
    fc_values = np.asarray(fc.transpose("latitude", "longitude").values, dtype=np.float64)
    tr_values = np.asarray(tr.transpose("latitude", "longitude").values, dtype=np.float64)
    fc2d = fc.transpose("latitude", "longitude").copy(data=fc_values)
    tr2d = fc2d.copy(data=tr_values)
    error = fc2d.copy(data=fc_values - tr_values)
    lo = float(np.nanmin([np.nanmin(fc_values), np.nanmin(tr_values)]))
    hi = float(np.nanmax([np.nanmax(fc_values), np.nanmax(tr_values)]))
    span = float(np.nanmax(np.abs(error.values))) or 1.0
    units = units_label(forecast[variable]) or units_label(truth[variable])
    name = f"{variable} {level} hPa" if level is not None else variable
    when = f"valid {valid:%Y-%m-%d %H:%M} UTC, lead {lead_label(lead)} (init {init_time:%Y-%m-%d %H:%M})"
    return [
        MapPanel(fc2d, f"{name}: {kind}\n{when}", "viridis", lo, hi, f"{variable} {units}".strip()),
        MapPanel(
            tr2d,
            f"{name}: truth\nvalid {valid:%Y-%m-%d %H:%M} UTC",
            "viridis",
            lo,
            hi,
            f"{variable} {units}".strip(),
        ),
        MapPanel(error, f"{name}: forecast − truth\n{when}", "RdBu_r", -span, span, f"error {units}".strip()),
    ]


def write_maps(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    variables: Iterable[str],
    leads: Iterable[str | pd.Timedelta],
    out: str | Path,
    *,
    levels: Iterable[int] | None = None,
    init: str | pd.Timestamp | None = None,
    projection_name: str = "robinson",
    coastlines: bool = True,
) -> list[Path]:
    """Write ``maps_{field}_{lead}.png`` (forecast | truth | error) for each field and lead; return the paths.

    ``coastlines=False`` for idealised planets (the Held–Suarez demo has no continents; drawing Earth's would
    suggest it does)."""
    out = Path(out)
    written: list[Path] = []
    for variable, level in fields_of(forecast, variables, levels):
        for lead in leads:
            panels = forecast_truth_error_panels(forecast, truth, variable, lead, level=level, init=init)
            fig = map_figure(panels, projection_name=projection_name, coastlines=coastlines)
            name = f"maps_{file_stem(variable, level)}_{lead_label(parse_lead(lead))}.png"
            written.append(save_png(fig, out / name))
    return written

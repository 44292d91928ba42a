"""Shared pieces of every earthcast plot: Agg figures, PNG output, field selection and labels.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so plotting never
changes the user's matplotlib backend or leaves figures open; PNGs are written by the Agg renderer.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from earthcast.errors import DataError

COORD_ALIASES = {"lat": "latitude", "lon": "longitude"}
"""Short coordinate names some stores use, and the WB2 names they are renamed to."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches bound to the Agg canvas (independent of pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders are created) and return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"Plots are written as PNG, but {path} does not end in .png; give a .png path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.15)
    return path


def parse_lead(lead: str | pd.Timedelta | np.timedelta64) -> pd.Timedelta:
    """A lead time such as ``"1d"``, ``"36h"``, ``"6h"`` or a timedelta, as a :class:`pandas.Timedelta`."""
    if isinstance(lead, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*d\s*", lead):
        lead = lead.strip()[:-1].strip() + "D"  # pandas deprecates the lower-case day unit
    try:
        value = pd.Timedelta(lead)
    except ValueError:
        raise DataError(
            f"Cannot read lead time {lead!r}; write it as a number and a unit, e.g. 1d, 36h or 90min."
        ) from None
    if value < pd.Timedelta(0):
        raise DataError(f"Lead time {lead!r} is negative; leads count forward from the init time.")
    return value


def lead_label(lead: pd.Timedelta | np.timedelta64) -> str:
    """Short text for a lead time: ``"5d"`` for whole days, else ``"36h"``, else minutes (``"90min"``)."""
    lead = pd.Timedelta(lead)
    if lead % pd.Timedelta(days=1) == pd.Timedelta(0):
        return f"{lead // pd.Timedelta(days=1)}d"
    if lead % pd.Timedelta(hours=1) == pd.Timedelta(0):
        return f"{lead // pd.Timedelta(hours=1)}h"
    return f"{lead // pd.Timedelta(minutes=1)}min"


def lead_days(leads: Iterable[np.timedelta64] | xr.DataArray) -> np.ndarray:
    """Lead times as float days, for plot axes."""
    return np.asarray(pd.to_timedelta(np.asarray(leads)) / pd.Timedelta(days=1), dtype=np.float64)


def field_name(variable: Hashable, level: int | None) -> str:
    """Human label of a field: ``"temperature 850 hPa"`` or ``"2m_temperature"``."""
    return f"{variable} {int(level)} hPa" if level is not None else str(variable)


def file_stem(variable: Hashable, level: int | None) -> str:
    """File-name stem of a field: ``"temperature_850"`` or ``"2m_temperature"``."""
    return f"{variable}_{int(level)}" if level is not None else str(variable)


def units_label(da: xr.DataArray, default: str = "") -> str:
    """The ``units`` attribute of ``da`` in brackets (``"[K]"``), or ``default`` when it has none."""
    units = da.attrs.get("units")
    return f"[{units}]" if units else default


def normalize_grid(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Rename ``lat``/``lon`` to WB2 names and sort latitude ascending (WB2 regridded layout)."""
    obj = obj.rename({k: v for k, v in COORD_ALIASES.items() if k in obj.dims or k in obj.coords})
    if "latitude" in obj.dims and obj.sizes["latitude"] > 1:
        lat = obj["latitude"].values
        if lat[0] > lat[-1]:
            obj = obj.isel(latitude=slice(None, None, -1))
    return obj


def select_field(ds: xr.Dataset, variable: str, level: int | None) -> xr.DataArray:
    """``ds[variable]``, at pressure ``level`` [hPa] when it has a ``level`` dim, on the normalised grid.

    Raises:
        ValueError: the variable is not in ``ds``, the level is not stored, or a 3-D field got no level.
    """
    if variable not in ds.data_vars:
        known = ", ".join(map(str, ds.data_vars)) or "none"
        raise DataError(f"Variable {variable!r} is not in the dataset; it holds: {known}.")
    da = ds[variable]
    if "level" in da.dims:
        if level is None:
            levels = ", ".join(str(int(v)) for v in da["level"].values)
            raise DataError(
                f"{variable!r} has pressure levels ({levels} hPa); pass one or more with --levels / level=."
            )
        if int(level) not in {int(v) for v in da["level"].values}:
            levels = ", ".join(str(int(v)) for v in da["level"].values)
            raise DataError(f"Level {level} hPa is not stored for {variable!r}; stored levels: {levels}.")
        da = da.sel(level=int(level))
    elif level is not None:
        raise DataError(
            f"{variable!r} has no level dimension; drop the level for it (it is a surface field)."
        )
    return normalize_grid(da)


def fields_of(
    ds: xr.Dataset, variables: Iterable[str], levels: Iterable[int] | None
) -> list[tuple[str, int | None]]:
    """(variable, level) pairs to plot: each 3-D variable at each requested level, surface fields once.

    With ``levels=None`` a 3-D variable is taken at every level it stores.
    """
    fields: list[tuple[str, int | None]] = []
    for variable in variables:
        if variable not in ds.data_vars:
            known = ", ".join(map(str, ds.data_vars)) or "none"
            raise DataError(f"Variable {variable!r} is not in the dataset; it holds: {known}.")
        if "level" in ds[variable].dims:
            wanted = [int(v) for v in ds[variable]["level"].values] if levels is None else list(levels)
            fields.extend((variable, int(level)) for level in wanted)
        else:
            fields.append((variable, None))
    return fields

"""The numbers and the Markdown of the ``earthcast demo`` report.

Everything is computed from the files the demo wrote: the WB2 results netCDFs of ``earthcast score`` (headline
RMSE table) and the year-long forecast store against the truth store (stability checks). The report embeds the
PNGs by paths relative to its own folder, so the output folder can be moved or zipped as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.plotting.figures import field_name, lead_label, parse_lead, select_field
from earthcast.plotting.scores import metric_values
from earthcast.plotting.series import global_mean_series
from earthcast.plotting.spectra import mean_spectrum

Field = tuple[str, int | None]
"""(WB2 variable name, pressure level in hPa or None for a surface field)."""

SOURCES = ("model", "persistence", "climatology")
HEADLINE_LEADS = ("6h", "1d", "3d", "5d", "10d")
DRIFT_WINDOW = pd.Timedelta(days=30)
"""The year run's drift and day-365 spectrum are compared with the truth over this final window."""


def results_fields(results: xr.Dataset) -> list[Field]:
    """Every (variable, level) of a WB2 results dataset, in file order."""
    fields: list[Field] = []
    for name, da in results.data_vars.items():
        levels = [int(v) for v in da["level"].values] if "level" in da.dims else [None]
        fields += [(str(name), level) for level in levels]
    return fields


def headline_rmse(results: Mapping[str, xr.Dataset], leads: Sequence[str] = HEADLINE_LEADS) -> pd.DataFrame:
    """Global area-weighted RMSE per field, source and lead.

    Args:
        results: source name (``model``, ``persistence``, ``climatology``) -> WB2 results dataset.
        leads: lead times to report; those the results do not hold are left out.

    Returns:
        DataFrame indexed by (field, source) with one column per lead label (e.g. ``"1d"``), in the field's
        units.
    """
    first = next(iter(results.values()))
    stored = pd.to_timedelta(first["lead_time"].values)
    chosen = [parse_lead(lead) for lead in leads if parse_lead(lead) in stored]
    rows = {}
    for variable, level in results_fields(first):
        for source, ds in results.items():
            values = metric_values(ds, variable, "rmse", level=level)
            rows[(field_name(variable, level), source)] = [
                float(values.sel(lead_time=lead)) for lead in chosen
            ]
    index = pd.MultiIndex.from_tuples(list(rows), names=["field", "source"])
    return pd.DataFrame(list(rows.values()), index=index, columns=[lead_label(lead) for lead in chosen])


@dataclass(frozen=True)
class Stability:
    """Stability checks of one field of the year-long run.

    Attributes:
        nan_free: the whole run of this field is finite.
        finite_lead: the last lead up to which it is finite (the whole lead when ``nan_free``).
        drift_sigma: (forecast − truth) global mean over the final 30 (finite) days, in units of the truth's
            climatological standard deviation of the global mean.
        spectrum_ratio: (min, max) over zonal wavenumbers 1 ≤ k < Nyquist of the forecast's spectrum at the
            last finite lead over the truth's mean spectrum in the final 30 days.
    """

    nan_free: bool
    finite_lead: pd.Timedelta
    drift_sigma: float
    spectrum_ratio: tuple[float, float]


def stability(
    forecast: xr.Dataset, truth: xr.Dataset, climatology: xr.Dataset | None, field: Field
) -> Stability:
    """Stability checks of ``field`` of the first init of a year-long forecast (see :class:`Stability`).

    A run that blew up (NaN after some lead) is checked up to its last finite lead."""
    variable, level = field
    fc = select_field(forecast, variable, level).isel(time=0)
    finite = np.isfinite(fc.values).all(axis=(-2, -1))
    nan_free = bool(finite.all())
    n_finite = int(np.argmin(finite)) if not nan_free else finite.size
    leads = pd.to_timedelta(fc["prediction_timedelta"].values)
    if n_finite == 0:
        return Stability(False, pd.Timedelta(0), float("nan"), (float("nan"), float("nan")))
    series = global_mean_series(forecast, truth, variable, level=level, climatology=climatology)
    fc_series = series.forecast.isel(valid_time=slice(0, n_finite))
    last = min(
        pd.Timestamp(series.truth["valid_time"].values[-1]), pd.Timestamp(fc_series["valid_time"].values[-1])
    )
    window = slice(last - DRIFT_WINDOW, last)
    fc_mean = float(fc_series.sel(valid_time=window).mean())
    tr_mean = float(series.truth.sel(valid_time=window).mean())
    drift = (fc_mean - tr_mean) / series.sigma if series.sigma > 0 else float("nan")
    tr = select_field(truth, variable, level).sel(time=window)
    final = mean_spectrum(fc.isel(prediction_timedelta=n_finite - 1)).values
    reference = mean_spectrum(tr).values
    ratio = (final / reference)[1:-1]  # k = 0 (the zonal mean) and the Nyquist wavenumber left out
    return Stability(nan_free, leads[n_finite - 1], drift, (float(np.min(ratio)), float(np.max(ratio))))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _image(report_dir: Path, path: Path) -> str:
    return f"![{path.stem}]({path.relative_to(report_dir).as_posix()})"


def write_report(
    path: Path,
    *,
    facts: Mapping[str, str],
    rmse: pd.DataFrame,
    checks: Mapping[str, Stability],
    year_lead: str,
    timings: Mapping[str, str],
    figures: Mapping[str, Sequence[Path]],
) -> Path:
    """Write the Markdown report.

    Args:
        facts: run description, label -> value (store, config, checkpoint, inits…).
        rmse: :func:`headline_rmse` table.
        checks: field name -> :class:`Stability` of the year run.
        year_lead: lead of the year run (for the headings).
        timings: stage -> wall time text.
        figures: section title -> PNGs (inside ``path``'s folder).
    """
    root = path.parent
    lines = ["# earthcast demo report", ""]
    lines += [*_table(["", ""], [[k, f"`{v}`"] for k, v in facts.items()]), ""]
    lines += ["## Headline skill: global area-weighted RMSE", ""]
    lines += [
        "Skill rollouts over the test period, scored the WeatherBench2 way (sin-difference latitude weights, "
        "square root of the time-mean MSE) against persistence and the climatology of the training years.",
        "",
    ]
    header = ["field", "forecast", *[str(c) for c in rmse.columns]]
    rows = [[f, s, *[f"{v:.4g}" for v in values]] for (f, s), values in zip(rmse.index, rmse.values)]
    lines += [*_table(header, rows), ""]
    lines += [f"## Stability of the {year_lead} run", ""]
    lines += [
        "NaN-free: every value of the run is finite (a run that blew up is checked up to its last finite "
        "lead). Drift: forecast − truth global mean over the final 30 (finite) days, in units of the truth's "
        "climatological standard deviation of the global mean. Spectrum ratio: forecast zonal energy spectrum "
        f"at {year_lead} (or the last finite lead) over the truth's mean spectrum in those 30 days, min–max "
        "over zonal wavenumbers 1 ≤ k < Nyquist.",
        "",
    ]
    rows = [
        [
            name,
            "yes" if c.nan_free else f"NO: finite to {lead_label(c.finite_lead)}",
            f"{c.drift_sigma:+.2f}",
            f"{c.spectrum_ratio[0]:.3g}–{c.spectrum_ratio[1]:.3g}",
        ]
        for name, c in checks.items()
    ]
    lines += [*_table(["field", "NaN-free", "drift [σ]", "spectrum ratio"], rows), ""]
    for title, pngs in figures.items():
        lines += [f"## {title}", ""] + [_image(root, p) for p in pngs] + [""]
    lines += ["## Wall time per stage", ""]
    lines += [*_table(["stage", "time"], [[k, v] for k, v in timings.items()]), ""]
    path.write_text("\n".join(lines))
    return path

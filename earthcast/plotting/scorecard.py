"""Scorecards: a model against a reference, per field × lead time, as % difference in one metric.

The cell value is ``100 · (model − reference) / reference``. Colours follow WB2's scorecards: **blue
is better** than the reference, red is worse, whichever direction the metric improves in (RMSE is better
when lower, ACC when higher).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from earthcast.errors import DataError
from earthcast.plotting.figures import field_name, fields_of, lead_label, new_figure, parse_lead, save_png
from earthcast.plotting.scores import HIGHER_IS_BETTER, metric_values


def _leads_to_use(
    model: xr.Dataset, reference: xr.Dataset, leads: Iterable[str] | None
) -> list[pd.Timedelta]:
    model_leads = pd.to_timedelta(model["lead_time"].values)
    ref_leads = pd.to_timedelta(reference["lead_time"].values)
    if leads is None:
        return [lead for lead in model_leads if lead in ref_leads and lead > pd.Timedelta(0)]
    chosen = [parse_lead(lead) for lead in leads]
    for lead in chosen:
        for name, stored in (("model", model_leads), ("reference", ref_leads)):
            if lead not in stored:
                have = ", ".join(lead_label(v) for v in stored)
                raise DataError(f"Lead {lead_label(lead)} is not in the {name} results; it has: {have}.")
    return chosen


def scorecard_table(
    model: xr.Dataset,
    reference: xr.Dataset,
    *,
    metric: str = "rmse",
    region: str = "global",
    variables: Iterable[str] | None = None,
    levels: Iterable[int] | None = None,
    leads: Iterable[str] | None = None,
) -> pd.DataFrame:
    """% difference of ``metric`` between model and reference results.

    Args:
        model, reference: WB2 results Datasets ``(metric, [region], lead_time, [level])``.
        metric: metric name (``rmse`` is ``sqrt(mse)`` when only ``mse`` is stored).
        variables: fields to include; default every data variable of ``model`` also in ``reference``.
        levels: pressure levels [hPa] for 3-D fields; default every stored level.
        leads: lead times such as ``["1d", "3d", "5d"]``; default every lead > 0 in both files.

    Returns:
        DataFrame, index = field names (``"temperature 850 hPa"``), columns = lead labels (``"3d"``),
        values = ``100 · (model − reference) / reference`` in %.
    """
    chosen = (
        [v for v in model.data_vars if v in reference.data_vars] if variables is None else list(variables)
    )
    lead_list = _leads_to_use(model, reference, leads)
    rows: dict[str, list[float]] = {}
    for variable, level in fields_of(model, chosen, levels):
        m = metric_values(model, variable, metric, region=region, level=level)
        r = metric_values(reference, variable, metric, region=region, level=level)
        m_at = np.array([float(m.sel(lead_time=lead)) for lead in lead_list])
        r_at = np.array([float(r.sel(lead_time=lead)) for lead in lead_list])
        with np.errstate(divide="ignore", invalid="ignore"):
            rows[field_name(variable, level)] = list(100.0 * (m_at - r_at) / r_at)
    return pd.DataFrame.from_dict(rows, orient="index", columns=[lead_label(v) for v in lead_list])


def plot_scorecard(
    table: pd.DataFrame, *, metric: str = "rmse", model_name: str = "model", reference_name: str = "reference"
) -> Figure:
    """A red/blue colour table of ``table`` (from :func:`scorecard_table`), each cell labelled with the
    improvement over the reference in % (positive = better: for RMSE ``100·(reference − model)/reference``),
    so the cell numbers, the colours and the colour bar all read the same way."""
    values = table.to_numpy(dtype=np.float64)
    better_sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    improvement = better_sign * values  # > 0: better than the reference, drawn blue by "RdBu"
    finite = np.abs(improvement[np.isfinite(improvement)])
    span = max(float(finite.max()) if finite.size else 0.0, 1.0)
    fig = new_figure(1.2 + 0.9 * table.shape[1] + 1.6, 1.4 + 0.4 * table.shape[0])
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.ma.masked_invalid(improvement), cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
    for (i, j), value in np.ndenumerate(improvement):
        text = f"{value:+.1f}%" if np.isfinite(value) else "n/a"
        dark = np.isfinite(improvement[i, j]) and abs(improvement[i, j]) > 0.6 * span
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(table.shape[1]), list(table.columns))
    ax.set_yticks(range(table.shape[0]), list(table.index))
    ax.set_xlabel("lead time")
    ax.set_title(
        f"{metric.upper()}: {model_name} vs {reference_name} (% improvement; blue = better)", fontsize=10
    )
    fig.colorbar(image, ax=ax, label="improvement over reference [%]")
    return fig


def write_scorecard(
    model: xr.Dataset,
    reference: xr.Dataset,
    out: str | Path,
    *,
    metric: str = "rmse",
    region: str = "global",
    variables: Iterable[str] | None = None,
    levels: Iterable[int] | None = None,
    leads: Iterable[str] | None = None,
    model_name: str = "model",
    reference_name: str = "reference",
) -> list[Path]:
    """Write ``scorecard_{metric}.png`` and the same numbers as ``scorecard_{metric}.csv``; return both paths."""
    table = scorecard_table(
        model, reference, metric=metric, region=region, variables=variables, levels=levels, leads=leads
    )
    fig = plot_scorecard(table, metric=metric, model_name=model_name, reference_name=reference_name)
    png = save_png(fig, Path(out) / f"scorecard_{metric}.png")
    csv = Path(out) / f"scorecard_{metric}.csv"
    table.to_csv(csv, float_format="%.4f")
    return [png, csv]

"""``earthcast plot``: PNG maps, skill curves, spectra, global-mean series and scorecards.

Examples::

    earthcast plot maps --forecast F.zarr --truth T.zarr --variables 2m_temperature geopotential \\
        --levels 500 --leads 1d 5d --out plots/
    earthcast plot scores --results model.nc --baseline persistence=persistence.nc \\
        --baseline climatology=climatology.nc --out plots/
    earthcast plot spectra --forecast F.zarr --truth T.zarr --variables geopotential --levels 500 \\
        --leads 1d 5d 10d --out plots/
    earthcast plot series --forecast year.zarr --truth T.zarr --climatology C.zarr \\
        --variables 2m_temperature --out plots/
    earthcast plot scorecard --results model.nc --reference hres.nc --leads 1d 3d 5d 7d 10d --out plots/

Each kind's options are the fields of its config dataclass below (:class:`MapsPlot`, :class:`ScoresPlot`,
:class:`SpectraPlot`, :class:`SeriesPlot`, :class:`ScorecardPlot`; help text: their docstrings), parsed by
:mod:`earthcast.commands.dataclass_cli`: ``--config maps.yaml`` reads them from a file, and lists may be given
as separate words (``--leads 1d 5d``) or as ``--leads '[1d, 5d]'``. Exit status: 0, 1 bad input (a missing
file, a lead or variable that is not in a store), 2 bad options.

Coastlines come from the Natural Earth data shipped with earthcast: no network is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import xarray as xr
from jsonargparse import ArgumentParser

from earthcast.commands.dataclass_cli import argparse_style, dataclass_parser, field_kinds, parse_dataclass
from earthcast.errors import ConfigError, StoreNotFoundError


def _open_results(path: str) -> xr.Dataset:
    if not Path(path).exists():
        raise StoreNotFoundError(
            f"No results file at {path!r}; write one with `earthcast score … --out {path}`."
        )
    return xr.open_dataset(path, decode_timedelta=True).load()


def _baselines(specs: Sequence[str]) -> dict[str, xr.Dataset]:
    out: dict[str, xr.Dataset] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(
                f"--baseline {spec!r} must be NAME=PATH, e.g. --baseline persistence=persistence.nc."
            )
        out[name] = _open_results(path)
    return out


def _latitude_range(values: Sequence[float] | None) -> tuple[float, float] | None:
    if values is None:
        return None
    south, north = values
    if south >= north:
        raise ConfigError(f"--latitude-range needs SOUTH < NORTH in degrees, got {south} {north}.")
    return (south, north)


def _open(path: str) -> xr.Dataset:
    from earthcast.datasets.store import open_store  # imported here so `earthcast plot --help` stays fast

    return open_store(path)


@dataclass(frozen=True)
class MapsPlot:
    """Forecast | truth | error maps per variable and lead: ``maps_{field}_{lead}.png``.

    Attributes:
        forecast: forecast Zarr, WB2 by-init layout.
        truth: truth Zarr indexed by valid time.
        variables: WB2 variable names.
        leads: lead times, e.g. 1d 5d 36h.
        out: output folder for the PNGs.
        levels: pressure levels [hPa] of 3-D variables (default: all).
        init: init time to map, ISO (default: the first).
        projection: map projection.
        coastlines: draw Earth's coastlines; false (--no-coastlines) for idealised planets such as the demo's.
    """

    forecast: str
    truth: str
    variables: tuple[str, ...]
    leads: tuple[str, ...]
    out: str
    levels: tuple[int, ...] | None = None
    init: str | None = None
    projection: Literal["robinson", "platecarree"] = "robinson"
    coastlines: bool = True

    def write(self) -> list[Path]:
        """Write the PNGs; return their paths."""
        from earthcast.plotting import write_maps

        return write_maps(
            _open(self.forecast), _open(self.truth), self.variables, self.leads, self.out, levels=self.levels,
            init=self.init, projection_name=self.projection, coastlines=self.coastlines,
        )  # fmt: skip


@dataclass(frozen=True)
class ScoresPlot:
    """RMSE/ACC/… against lead time, with baselines: ``scores_{field}.png``.

    Attributes:
        results: results netCDF from earthcast score.
        out: output folder for the PNGs.
        name: legend name of results.
        baseline: baseline results as NAME=PATH, e.g. persistence=persistence.nc (repeatable).
        metrics: metrics to plot.
        region: region of the results to plot.
        variables: WB2 variable names (default: every variable of results).
        levels: pressure levels [hPa] of 3-D variables (default: all).
    """

    results: str
    out: str
    name: str = "model"
    baseline: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("rmse", "acc")
    region: str = "global"
    variables: tuple[str, ...] | None = None
    levels: tuple[int, ...] | None = None

    def write(self) -> list[Path]:
        """Write the PNGs; return their paths."""
        from earthcast.plotting import write_score_plots

        results = {self.name: _open_results(self.results), **_baselines(self.baseline)}
        return write_score_plots(
            results, self.out, variables=self.variables, levels=self.levels, metrics=self.metrics,
            region=self.region,
        )  # fmt: skip


@dataclass(frozen=True)
class SpectraPlot:
    """Zonal energy spectra per lead against the truth: ``spectra_{field}.png``.

    Attributes:
        forecast: forecast Zarr, WB2 by-init layout.
        truth: truth Zarr indexed by valid time.
        variables: WB2 variable names.
        leads: lead times, e.g. 1d 5d 10d.
        out: output folder for the PNGs.
        levels: pressure levels [hPa] of 3-D variables (default: all).
        latitude_range: SOUTH NORTH [degrees] of the band averaged (default: all latitudes).
    """

    forecast: str
    truth: str
    variables: tuple[str, ...]
    leads: tuple[str, ...]
    out: str
    levels: tuple[int, ...] | None = None
    latitude_range: tuple[float, float] | None = None

    def write(self) -> list[Path]:
        """Write the PNGs; return their paths."""
        from earthcast.plotting import write_spectra_plots

        return write_spectra_plots(
            _open(self.forecast), _open(self.truth), self.variables, self.leads, self.out, levels=self.levels,
            latitude_range=_latitude_range(self.latitude_range),
        )  # fmt: skip


@dataclass(frozen=True)
class SeriesPlot:
    """Global-mean series of a long run, truth ± 1σ: ``series_{field}.png``.

    Attributes:
        forecast: forecast Zarr, WB2 by-init layout.
        truth: truth Zarr indexed by valid time.
        variables: WB2 variable names.
        out: output folder for the PNGs.
        levels: pressure levels [hPa] of 3-D variables (default: all).
        climatology: WB2 climatology Zarr (hour, dayofyear, …) for the σ band (default: no band).
        init: init time of the run, ISO (default: the first).
    """

    forecast: str
    truth: str
    variables: tuple[str, ...]
    out: str
    levels: tuple[int, ...] | None = None
    climatology: str | None = None
    init: str | None = None

    def write(self) -> list[Path]:
        """Write the PNGs; return their paths."""
        from earthcast.plotting import write_series_plots

        climatology = _open(self.climatology) if self.climatology else None
        return write_series_plots(
            _open(self.forecast), _open(self.truth), self.variables, self.out, levels=self.levels,
            init=self.init, climatology=climatology,
        )  # fmt: skip


@dataclass(frozen=True)
class ScorecardPlot:
    """Model against reference, % difference per variable × lead: ``scorecard_{metric}.png`` and ``.csv``.

    Attributes:
        results: the model's results netCDF from earthcast score.
        reference: the reference's results netCDF.
        out: output folder for the PNG and CSV.
        name: name of the model.
        reference_name: name of the reference.
        metric: metric compared.
        region: region of the results compared.
        leads: lead times (default: every lead > 0 in both files).
        variables: WB2 variable names (default: every variable in both files).
        levels: pressure levels [hPa] of 3-D variables (default: all).
    """

    results: str
    reference: str
    out: str
    name: str = "model"
    reference_name: str = "reference"
    metric: str = "rmse"
    region: str = "global"
    leads: tuple[str, ...] | None = None
    variables: tuple[str, ...] | None = None
    levels: tuple[int, ...] | None = None

    def write(self) -> list[Path]:
        """Write the PNG and the CSV; return their paths."""
        from earthcast.plotting import write_scorecard

        return write_scorecard(
            _open_results(self.results), _open_results(self.reference), self.out, metric=self.metric,
            region=self.region, variables=self.variables, levels=self.levels, leads=self.leads,
            model_name=self.name, reference_name=self.reference_name,
        )  # fmt: skip


KINDS: dict[str, type] = {
    "maps": MapsPlot,
    "scores": ScoresPlot,
    "spectra": SpectraPlot,
    "series": SeriesPlot,
    "scorecard": ScorecardPlot,
}
"""``earthcast plot KIND`` -> its config dataclass (with a ``write() -> list[Path]``)."""


def _kind_parser(kind: str) -> ArgumentParser:
    cls = KINDS[kind]
    doc = (cls.__doc__ or "").split("\n")[0]
    return dataclass_parser(cls, prog=f"earthcast plot {kind}", description=doc)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="earthcast plot", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    kinds = parser.add_subcommands(dest="kind")
    for kind, cls in KINDS.items():
        kinds.add_subcommand(kind, _kind_parser(kind), help=(cls.__doc__ or "").split(":")[0])
    return parser


def parse_config(argv: Sequence[str]) -> MapsPlot | ScoresPlot | SpectraPlot | SeriesPlot | ScorecardPlot:
    """The config dataclass of ``earthcast plot KIND …`` options (any spelling; bad ones exit with 2)."""
    if not argv or argv[0] not in KINDS:
        parser = _parser()
        parser.parse_args(list(argv))  # the help, or the parser's error: both exit
        parser.error(f"give the kind first: earthcast plot {{{','.join(KINDS)}}} …")
    cls = KINDS[argv[0]]
    return parse_dataclass(_kind_parser(argv[0]), cls, argparse_style(argv[1:], field_kinds(cls)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earthcast plot <kind> …``; print the files written. Returns 0, or 1 on bad input (bad options
    exit with 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(args)
    kind = args[0]
    try:
        written = cfg.write()
    except (ValueError, FileNotFoundError) as err:
        print(f"earthcast plot {kind}: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0

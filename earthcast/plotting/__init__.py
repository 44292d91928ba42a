"""earthcast.plotting: PNG maps, skill curves, spectra, global-mean series and scorecards (Agg, offline).

Inputs use WB2 layouts: forecasts by init ``(time, prediction_timedelta, [level], latitude, longitude)``,
truth by valid time ``(time, [level], latitude, longitude)``, results ``(metric, [region], lead_time,
[level])``. Map coastlines come from the Natural Earth 1:110m data shipped in ``naturalearth/``.
"""

from earthcast.plotting.coastlines import add_coastlines
from earthcast.plotting.maps import forecast_truth_error_panels, map_figure, plot_map, write_maps
from earthcast.plotting.scorecard import plot_scorecard, scorecard_table, write_scorecard
from earthcast.plotting.scores import metric_values, plot_scores, write_score_plots
from earthcast.plotting.series import global_mean_series, plot_global_mean_series, write_series_plots
from earthcast.plotting.spectra import forecast_truth_spectra, plot_spectra, write_spectra_plots

__all__ = [
    "add_coastlines",
    "forecast_truth_error_panels",
    "forecast_truth_spectra",
    "global_mean_series",
    "map_figure",
    "metric_values",
    "plot_global_mean_series",
    "plot_map",
    "plot_scorecard",
    "plot_scores",
    "plot_spectra",
    "scorecard_table",
    "write_maps",
    "write_score_plots",
    "write_scorecard",
    "write_series_plots",
    "write_spectra_plots",
]

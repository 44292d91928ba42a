"""Deterministic WB2 metrics on NumPy blocks, and the area mean they share.

Every metric is computed the WB2 way (``weatherbench2/metrics.py``): a pointwise quantity, then its
area-weighted mean per (init, lead, level) and region, then the mean over inits. Arrays here are plain
NumPy blocks whose last two axes are (latitude, longitude); leading axes are typically
(init, lead[, level]). :mod:`earthcast.scoring.evaluate` feeds them chunk by chunk through Dask.

Metric names are WB2's: ``mse``, ``rmse`` (√ of the time-mean MSE, the ECMWF/WB2 headline convention),
``rmse_sqrt_before_time_avg`` (time mean of per-init RMSE, WB2's ``RMSESqrtBeforeTimeAvg``), ``bias``,
``mae``, ``acc`` (uncentred, per init, then averaged) and ``acc_pooled`` (WeatherBench-X: time-pooled
covariance over time-pooled variances; not identical to ``acc``).
"""

from __future__ import annotations

import numpy as np

from earthcast.errors import DataError
from earthcast.grids import GridGeometry
from earthcast.scoring.weights import latitude_weights


class AreaMean:
    """Area-weighted mean over the last two axes, one value per region.

    Matches ``xr.Dataset.weighted(w).mean(["latitude", "longitude"], skipna)`` after WB2's region
    handling: points with zero weight never contribute (WB2 zeroes them), with ``skipna=False`` any NaN
    or inf inside a region propagates to that region's mean, and with ``skipna=True`` NaNs are dropped
    from both the weighted sum and the sum of weights.

    Args:
        weights: (R, H, W) non-negative per-point weights, e.g. from
            :func:`earthcast.scoring.regions.region_weights`.
        skipna: the default of every call (WB2's ``skipna`` of ``evaluate_in_memory``): True drops NaN points,
            e.g. land in an ocean product, from the means.
    """

    def __init__(self, weights: np.ndarray, *, skipna: bool = False) -> None:
        self.skipna = skipna
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 3:
            raise DataError(f"weights must be (R, H, W), got shape {weights.shape}")
        self.n_regions, self.height, self.width = weights.shape
        flat = weights.reshape(self.n_regions, -1)
        self._weights = np.ascontiguousarray(flat.T)
        self._support = np.ascontiguousarray((flat > 0).T.astype(np.float64))
        self._total = flat.sum(axis=1)

    @classmethod
    def global_mean(cls, latitude: np.ndarray, n_lon: int, geometry: GridGeometry | None = None) -> AreaMean:
        """The single-region (whole-grid) area mean on a grid with these latitudes and ``n_lon`` longitudes
        (``geometry`` chooses the area weighting, see :func:`earthcast.scoring.weights.latitude_weights`)."""
        return cls(np.repeat(latitude_weights(latitude, geometry)[None, :, None], n_lon, axis=2))

    def __call__(self, x: np.ndarray, *, skipna: bool | None = None, finite: bool = False) -> np.ndarray:
        """(…, H, W) → (…, R) float64 area means; ``finite=True`` promises no NaN/inf (skips the checks);
        ``skipna`` None takes the instance's default."""
        skipna = self.skipna if skipna is None else skipna
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-2:] != (self.height, self.width):
            raise DataError(f"expected trailing (H, W) = {(self.height, self.width)}, got {x.shape[-2:]}")
        lead = x.shape[:-2]
        rows = x.reshape(-1, self.height * self.width)
        if finite or np.isfinite(rows).all():
            out = (rows @ self._weights) / self._total
            return out.reshape(*lead, self.n_regions)
        nan = np.isnan(rows)
        filled = np.where(nan, 0.0, rows)
        nan_f = nan.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            if skipna:
                denom = self._total - nan_f @ self._weights
                out = (filled @ self._weights) / np.where(denom > 0, denom, np.nan)
            else:
                out = (filled @ self._weights) / self._total
                out[(nan_f @ self._support) > 0] = np.nan
        inf_rows = np.flatnonzero(np.isinf(filled).any(axis=1))
        for i in inf_rows:
            out[i] = self._exact_row(rows[i], skipna)
        return out.reshape(*lead, self.n_regions)

    def _exact_row(self, row: np.ndarray, skipna: bool) -> np.ndarray:
        """Slow path for rows holding inf: per region, exactly as xarray would sum them."""
        result = np.empty(self.n_regions)
        for r in range(self.n_regions):
            inside = self._support[:, r] > 0
            values, w = row[inside], self._weights[inside, r]
            if skipna:
                keep = ~np.isnan(values)
                values, w = values[keep], w[keep]
            with np.errstate(invalid="ignore"):
                result[r] = np.sum(values * w) / np.sum(w) if w.sum() > 0 else np.nan
        return result


DETERMINISTIC_METRICS = ("mse", "rmse", "bias", "mae")
ACC_METRICS = ("acc",)
OPTIONAL_METRICS = ("rmse_sqrt_before_time_avg", "acc_pooled")


def deterministic_block(
    forecast: np.ndarray,
    truth: np.ndarray,
    area: AreaMean,
    climatology: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-init area means of the deterministic error fields.

    Args:
        forecast, truth: (…, H, W) same shape.
        area: the region area mean.
        climatology: (…, H, W) climatological mean at each valid time, for ACC; optional.

    Returns:
        ``{"mse", "bias", "mae"[, "acc_cov", "acc_ff", "acc_oo"]}`` each (…, R): area means of
        (f−o)², f−o, |f−o| and the anomaly products f′o′, f′², o′² (f′ = f − c, o′ = o − c).
    """
    f = np.asarray(forecast, dtype=np.float64)
    o = np.asarray(truth, dtype=np.float64)
    inputs = (f, o) if climatology is None else (f, o, np.asarray(climatology, dtype=np.float64))
    finite = all(np.isfinite(x).all() for x in inputs)
    diff = f - o
    out = {"mse": area(diff * diff, finite=finite), "bias": area(diff, finite=finite)}
    out["mae"] = area(np.abs(diff), finite=finite)
    if climatology is not None:
        fa, oa = f - inputs[2], o - inputs[2]
        out["acc_cov"] = area(fa * oa, finite=finite)
        out["acc_ff"] = area(fa * fa, finite=finite)
        out["acc_oo"] = area(oa * oa, finite=finite)
    return out


def wind_vector_block(
    forecast_u: np.ndarray, forecast_v: np.ndarray, truth_u: np.ndarray, truth_v: np.ndarray, area: AreaMean
) -> dict[str, np.ndarray]:
    """Per-init wind-vector MSE: area mean of (Δu)² + (Δv)² (WB2 ``WindVectorMSE``), as ``{"mse": (…, R)}``."""
    du = np.asarray(forecast_u, dtype=np.float64) - truth_u
    dv = np.asarray(forecast_v, dtype=np.float64) - truth_v
    return {"mse": area(du * du + dv * dv)}


def deterministic_time_mean(per_init: dict[str, np.ndarray], *, axis: int = 0) -> dict[str, np.ndarray]:
    """Reduce per-init area means over inits (``axis``) into WB2 metrics (NaNs propagate, ``skipna=False``).

    ``rmse`` is √(mean MSE) (square root after the time mean), ``rmse_sqrt_before_time_avg`` the mean of
    per-init √MSE; ``acc`` is the mean of per-init ratios, ``acc_pooled`` the ratio of time means.
    """
    mse = per_init["mse"]
    out = {"mse": mse.mean(axis), "rmse": np.sqrt(mse.mean(axis))}
    for name in ("bias", "mae"):
        if name in per_init:
            out[name] = per_init[name].mean(axis)
    if "acc_cov" in per_init:
        cov, ff, oo = per_init["acc_cov"], per_init["acc_ff"], per_init["acc_oo"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["acc"] = (cov / np.sqrt(ff * oo)).mean(axis)
            out["acc_pooled"] = cov.mean(axis) / np.sqrt(ff.mean(axis) * oo.mean(axis))
    out["rmse_sqrt_before_time_avg"] = np.sqrt(mse).mean(axis)
    return out

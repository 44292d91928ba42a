"""Evaluation helpers of ``benchmarks/planner_study.py``: test batches from the truth store, forecasts of each
method (base, BeamVQ, SFP, planned with a critic or the oracle) and their scores.

Scores follow WB2's definitions on the model grid: RMSE is the square root of the init-mean of the
area-weighted spatial MSE (:func:`earthcast.training.losses.squared_error_sums`, the function validation
uses); CSI is :class:`earthcast.planners.rewards.CSI` at the 95th percentile of the training climate
(|V250| and the T850 anomaly), averaged over inits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from earthcast.datasets.boundary import manifest_forcings
from earthcast.datasets.time_axis import advance_times
from earthcast.planners.module import PlannerModule
from earthcast.planners.reference import ClimateReference
from earthcast.planners.rewards import CSI, WeightedMSE
from earthcast.planners.search import BeamSearch, SearchResult
from earthcast.rollout.initial import TruthSource
from earthcast.training.forecaster import rollout
from earthcast.training.losses import squared_error_sums
from earthcast.training.module import ForecastModule

REPORTED = ("geopotential_500", "temperature_850", "surface_pressure", "v_component_of_wind_250")


def load_batch(
    module: ForecastModule, store: str, inits: pd.DatetimeIndex, steps: int
) -> dict[str, torch.Tensor]:
    """A normalised batch (as training sees it) of ``inits`` with ``steps`` target leads, plus the physical
    targets ``targets_phys`` (N, steps, C, H, W)."""
    manifest, n = module.manifest, int(module.hparams.n_input)
    truth = TruthSource.open(store, manifest)
    last = pd.DatetimeIndex(advance_times(inits.values, steps, manifest.model_step))
    states = torch.from_numpy(truth.initial_states(last, n + steps)).float()  # (N, n + steps, C, H, W)
    offsets = np.arange(-(n - 1), steps + 1)
    times = advance_times(inits.values[:, None], offsets[None, :], manifest.model_step)
    forcings = np.stack(
        [manifest_forcings(manifest, times[:, j], None) for j in range(times.shape[1])], axis=1
    )
    h, w = manifest.grid_shape
    raw = {
        "inputs": states[:, :n],
        "targets": states[:, n:],
        "static": torch.from_numpy(truth.static_fields()).float().expand(len(inits), -1, h, w),
        "forcings": torch.from_numpy(forcings).float(),
        "time": torch.from_numpy(inits.values.astype("datetime64[ns]").astype(np.int64)),
        "mask": torch.ones(len(inits), h, w, dtype=torch.bool),
    }
    return module.on_after_batch_transfer(raw, 0)


@torch.no_grad()
def plain_forecast(module: ForecastModule, batch: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """The module's own autoregressive forecast (N, steps, C, H, W), normalised."""
    times = module.valid_times(batch["time"], steps)
    preds, _ = rollout(module.eval_model, batch["inputs"], batch["static"], batch["forcings"], times, steps)
    return preds.float()


def scorer(
    module: PlannerModule, critic: str
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int], torch.Tensor]:
    """``score(cands, state, target, t)`` of a critic, or of the truth (``oracle``: −area-weighted MSE in
    units of the state std, the training reward)."""
    if critic == "oracle":
        mse = WeightedMSE(module.lat_weights, scale=module.normalizer.state_std)
        return lambda c, s, target, t: mse(module.physical(c), module.physical(target))
    fn = module.critic_scorer(critic)
    return lambda c, s, target, t: fn(c, s)


@torch.no_grad()
def planned_forecast(
    module: PlannerModule, batch: dict[str, torch.Tensor], steps: int, critic: str, beam: int, k: int
) -> tuple[torch.Tensor, SearchResult]:
    """Beam search over the whole forecast (horizon = steps, B = beam, K = k): the chosen path, normalised."""
    targets = batch["targets"][:, :steps] if critic == "oracle" else None
    result = module.plan(batch, steps, scorer(module, critic), BeamSearch(steps, beam, k), targets)
    return result.chosen.float(), result


def scores(
    module: ForecastModule,
    preds: torch.Tensor,
    batch: dict[str, torch.Tensor],
    reference: ClimateReference,
    leads: tuple[int, ...],
) -> dict[str, float]:
    """RMSE (physical units) of the reported channels, and CSI95 of |V250| and the T850 anomaly, at ``leads``
    (1-based step indices)."""
    phys = module.normalizer.denormalize_state(preds)
    truth = batch["targets_phys"][:, : preds.shape[1]].float()
    sums = squared_error_sums(phys, truth, module.lat_weights, batch["mask"])  # (K, C)
    rmse = (sums / preds.shape[0]).sqrt()
    names = module.manifest.names("state")
    out: dict[str, float] = {}
    for lead in leads:
        for name in REPORTED:
            out[f"rmse/{name}/{lead}"] = float(rmse[lead - 1, names.index(name)])
        for key, name, transform in (("csi95_absV250", "v_component_of_wind_250", "abs"),
                                     ("csi95_T850anom", "temperature_850", "anomaly")):  # fmt: skip
            c = names.index(name)
            ref = reference.mean_field[c] if transform == "anomaly" else None
            csi = CSI(c, reference.threshold(c, 95, transform), transform=transform, reference=ref,
                      lat_weights=module.lat_weights)  # fmt: skip
            out[f"{key}/{lead}"] = float(csi(phys[:, lead - 1], truth[:, lead - 1]).mean())
    return out


def timed(fn: Callable[..., object], *args: object, repeat: int = 1) -> tuple[object, float]:
    """(the result of the last call ``fn(*args)``, the best wall time of ``repeat`` calls in seconds)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best

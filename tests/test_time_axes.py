"""Time axes of real products: calendar-month stamps (month start, mid-month, month end), gaps, irregular axes.

Stores are real Zarr stores written with ``write_wb2_store``; expected times come from pandas calendar
arithmetic or are written out by hand, never from the code under test.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from lightning_helpers import quiet_trainer

from earthcast.cli import main as cli_main
from earthcast.datasets.channels import ChannelManifest
from earthcast.datasets.datamodule import WB2DataModule
from earthcast.datasets.statistics import cache_key
from earthcast.datasets.store import open_store
from earthcast.datasets.synthetic import synthetic_dataset
from earthcast.datasets.time_axis import TimeStep, advance_times, describe_time_axis, time_axis
from earthcast.datasets.zarr_store import write_wb2_store
from earthcast.errors import ConfigError, DataError, TimeAxisError
from earthcast.grids import dataset_geometry, wb2_grid
from earthcast.rollout.generator import InitialConditions, generate
from earthcast.rollout.initial import TruthSource
from earthcast.rollout.model import StepModel
from earthcast.rollout.session import RolloutConfig, run_rollout
from earthcast.scoring.evaluate import score
from earthcast.scoring.weights import latitude_weights
from earthcast.training import ForecastModule

GRID = wb2_grid("64x32_equiangular_conservative")
MONTH_STARTS = pd.date_range("2017-01-01", "2019-12-01", freq="MS")
# CMEMS-style monthly means stamped at the middle of each month: halfway between its start and the next one's
MID_MONTH = MONTH_STARTS + (MONTH_STARTS.shift(1, freq="MS") - MONTH_STARTS) / 2
SPLITS = {
    "train": ("2017-01-01", "2017-12-31"),
    "val": ("2018-01-01", "2018-12-31"),
    "test": ("2019", "2019-12-31"),
}


def _store(path: Path, times: pd.DatetimeIndex) -> str:
    ds = synthetic_dataset(GRID, times, pressure_variables=(), surface_variables=("2m_temperature",))
    write_wb2_store(ds, path, chunks={"time": 6})
    return str(path)


def _dm(store: str, tmp_path: Path, **kw) -> WB2DataModule:
    args = {
        "variables": {"2m_temperature": None},
        "forcings": ["hour_of_day", "day_of_year"],
        "n_input": 1,
        "n_target": 2,
        "step": "1MS",
        "batch_size": 4,
        "stats_cache_dir": str(tmp_path / "stats"),
    }
    return WB2DataModule(store, **(args | SPLITS | kw))


def _batches(dm: WB2DataModule, split: str) -> dict[str, torch.Tensor]:
    batches = list(dm.stream(split))
    return {key: torch.cat([b[key] for b in batches]) for key in ("inputs", "targets", "forcings", "time")}


def test_mid_month_stamps_are_the_cmems_ones() -> None:
    expected = ["2017-01-16T12:00", "2017-02-15T00:00", "2017-03-16T12:00", "2017-04-16T00:00"]
    assert [t.strftime("%Y-%m-%dT%H:%M") for t in MID_MONTH[:4]] == expected
    assert MID_MONTH[13] == pd.Timestamp("2018-02-15")  # 2018 is no leap year either


@pytest.mark.parametrize(
    ("times", "canonical", "described"),
    [
        (MONTH_STARTS, "1MS", "monthly (month start)"),
        (MID_MONTH, "1M-mid", "monthly (mid-month)"),
        (pd.date_range("2017-01-31", periods=36, freq="ME"), "1ME", "monthly (month end)"),
        (MONTH_STARTS + pd.Timedelta("14D"), "1MS+14D", "monthly (day 15, 00:00)"),
        (pd.date_range("2018-01-01", periods=20, freq="6h"), "6h", "6h"),
        (pd.date_range("2018-01-01", periods=20, freq="D"), "1D", "1D"),
    ],
)
def test_axis_kinds_are_detected(times: pd.DatetimeIndex, canonical: str, described: str) -> None:
    axis = time_axis(times.values, where="x")
    assert (str(axis), axis.describe()) == (canonical, described)
    assert TimeStep.parse(str(axis)) == axis


@pytest.mark.parametrize("times", [MONTH_STARTS, MID_MONTH], ids=["month-start", "mid-month"])
def test_monthly_windows_hold_the_right_months(tmp_path: Path, times: pd.DatetimeIndex) -> None:
    store = _store(tmp_path / "monthly.zarr", times)
    dm = _dm(store, tmp_path, step="monthly")
    assert dm.k == 1 and dm.manifest.time_step_hours == pytest.approx(730.485)
    assert dm.manifest.calendar_step == str(time_axis(times.values, where="x"))
    batch = _batches(dm, "test")
    inits = pd.DatetimeIndex(batch["time"].numpy().astype("datetime64[ns]"))
    # windows of 3 months inside 2019: inits January … October 2019, each the store's own stamp
    assert list(inits.month) == list(range(1, 11)) and set(inits.year) == {2019}
    assert inits.isin(times).all()
    ds = synthetic_dataset(GRID, times, pressure_variables=(), surface_variables=("2m_temperature",))
    for b, init in enumerate(inits):
        i = times.get_loc(init)
        np.testing.assert_array_equal(batch["inputs"][b, 0, 0].numpy(), ds["2m_temperature"][i].values)
        for lead in (1, 2):
            target_month = (init + pd.DateOffset(months=lead)).to_period("M")
            j = int(np.nonzero(times.to_period("M") == target_month)[0][0])
            np.testing.assert_array_equal(
                batch["targets"][b, lead - 1, 0].numpy(), ds["2m_temperature"][j].values
            )


def test_forcings_are_computed_at_the_true_stamps(tmp_path: Path) -> None:
    dm = _dm(_store(tmp_path / "mid.zarr", MID_MONTH), tmp_path)
    batch = _batches(dm, "test")
    names = dm.manifest.names("forcing")
    inits = pd.DatetimeIndex(batch["time"].numpy().astype("datetime64[ns]"))
    for b, init in enumerate(inits):
        i = MID_MONTH.get_loc(init)
        for j, stamp in enumerate(MID_MONTH[i : i + 3]):  # e.g. 2019-01-16T12, 2019-02-15T00, 2019-03-16T12
            doy = stamp.day_of_year
            expected = {
                "sin_day_of_year": np.sin(2 * np.pi * (doy - 1) / 365.25),
                "cos_day_of_year": np.cos(2 * np.pi * (doy - 1) / 365.25),
                "sin_hour_of_day": np.sin(2 * np.pi * stamp.hour / 24),
                "cos_hour_of_day": np.cos(2 * np.pi * stamp.hour / 24),
            }
            for c, name in enumerate(names):
                np.testing.assert_allclose(batch["forcings"][b, j, c].numpy(), expected[name], atol=1e-6)
    assert batch["forcings"][0, :, names.index("cos_hour_of_day"), 0, 0].tolist() == pytest.approx(
        [-1, 1, -1]
    )


def test_multi_month_step_is_a_stride(tmp_path: Path) -> None:
    dm = _dm(_store(tmp_path / "ms.zarr", MONTH_STARTS), tmp_path, step="3MS", n_target=1)
    assert (dm.k, dm.manifest.calendar_step) == (3, "3MS")
    batch = _batches(dm, "val")
    inits = pd.DatetimeIndex(batch["time"].numpy().astype("datetime64[ns]"))
    assert list(inits.month) == list(range(1, 10))  # January … September 2018, each with a target 3 months on
    ds = synthetic_dataset(GRID, MONTH_STARTS, pressure_variables=(), surface_variables=("2m_temperature",))
    later = ds["2m_temperature"].sel(time=inits + pd.DateOffset(months=3)).values
    np.testing.assert_array_equal(batch["targets"][:, 0, 0].numpy(), later)


def test_step_kind_must_match_the_axis(tmp_path: Path) -> None:
    monthly = _store(tmp_path / "m.zarr", MONTH_STARTS)
    for step in ("30D", "31D"):
        with pytest.raises(
            TimeAxisError, match=r"fixed duration but .* monthly \(month start\).*Use step '1MS'"
        ):
            _dm(monthly, tmp_path, step=step)
    bimonthly = _store(tmp_path / "2ms.zarr", MONTH_STARTS[::2])
    with pytest.raises(
        TimeAxisError, match=r"step 3MS is not a multiple of the time spacing 2MS .* 2MS or 4MS"
    ):
        _dm(bimonthly, tmp_path, step="3MS")
    assert _dm(bimonthly, tmp_path, step="1YS", n_target=1).k == 6
    hourly = _store(tmp_path / "h.zarr", pd.date_range("2018-01-01", periods=64, freq="6h"))
    with pytest.raises(TimeAxisError, match=r"in calendar months but .* uniform 6h axis"):
        _dm(hourly, tmp_path, step="1MS", train=None, val=None, test=None)


def test_a_missing_month_is_named(tmp_path: Path) -> None:
    times = MONTH_STARTS.delete([26, 30])  # 2019-03 and 2019-07
    store = _store(tmp_path / "gap.zarr", times)
    with pytest.raises(
        TimeAxisError, match=r"monthly \(month start\) but 2 month\(s\) are missing: 2019-03, 2019-07\."
    ):
        _dm(store, tmp_path)
    assert issubclass(TimeAxisError, DataError) and issubclass(TimeAxisError, ValueError)


def test_a_six_hourly_gap_names_the_missing_times(tmp_path: Path) -> None:
    times = pd.date_range("2018-01-01", periods=64, freq="6h").delete([10, 11, 40])
    store = _store(tmp_path / "gap6h.zarr", times)
    with pytest.raises(
        TimeAxisError,
        match=r"3 time\(s\) are missing: 2018-01-03T12:00:00, 2018-01-03T18:00:00, 2018-01-11T00:00:00\.",
    ):
        _dm(store, tmp_path, step="6h", train=None, val=None, test=None)


def test_duplicated_or_unsorted_times_say_nothing_is_missing() -> None:
    duplicated = MONTH_STARTS.insert(5, MONTH_STARTS[5])
    with pytest.raises(
        TimeAxisError, match=r"1 duplicated time\(s\): 2017-06-01T00:00:00.*nothing is missing"
    ):
        time_axis(duplicated.values, where="x")
    swapped = pd.date_range("2018-01-01", periods=8, freq="6h").values[[0, 1, 3, 2, 4, 5, 6, 7]]
    with pytest.raises(
        TimeAxisError, match=r"not sorted: 2018-01-01T18:00:00 is followed by.*nothing is missing"
    ):
        time_axis(swapped, where="x")
    assert describe_time_axis(duplicated.values) == (
        "irregular: has 1 duplicated time(s): 2017-06-01T00:00:00; cleaned: monthly (month start)"
    )


@pytest.mark.parametrize(
    ("times", "step", "offset"),
    [
        (pd.date_range("1950-01-01", "2030-12-01", freq="MS"), "1MS", lambda n: pd.DateOffset(months=n)),
        (
            pd.date_range("1950-01-01", "2030-12-01", freq="MS") + pd.Timedelta("14D12h"),
            "1MS+14D12h",
            lambda n: pd.DateOffset(months=n),
        ),
        (pd.date_range("1950-01-31", "2030-12-31", freq="ME"), "1ME", lambda n: pd.offsets.MonthEnd(n)),
        (pd.date_range("1950-01-01", "2030-12-01", freq="MS"), "3MS", lambda n: pd.DateOffset(months=3 * n)),
        (pd.date_range("1999-12-30", periods=50, freq="6h"), "6h", lambda n: pd.Timedelta(hours=6 * n)),
    ],
)
def test_advance_matches_pandas_offsets(times: pd.DatetimeIndex, step: str, offset) -> None:
    sample = times[:: max(1, len(times) // 40)]
    for n in (-14, -1, 0, 1, 2, 11, 25):
        expected = pd.DatetimeIndex([t + offset(n) for t in sample]).values.astype("datetime64[ns]")
        np.testing.assert_array_equal(advance_times(sample.values, n, step), expected)
    grid = advance_times(sample.values[:, None], np.arange(-2, 3)[None], step)  # broadcasting
    np.testing.assert_array_equal(grid[:, 3], advance_times(sample.values, 1, step))


def test_advance_mid_month() -> None:
    got = advance_times(np.array(["2019-12-16T12"], "datetime64[ns]"), np.arange(-1, 4), "1M-mid")
    expected = ["2019-11-16T00", "2019-12-16T12", "2020-01-16T12", "2020-02-15T12", "2020-03-16T12"]
    np.testing.assert_array_equal(got, np.array(expected, "datetime64[ns]"))  # 2020-02 has 29 days
    np.testing.assert_array_equal(advance_times(MID_MONTH.values[:-5], 5, "1M-mid"), MID_MONTH.values[5:])


def test_manifest_step_is_backward_compatible() -> None:
    old = {"state": [{"name": "t", "variable": "t", "level": None, "kind": "state", "units": "K"}],
           "time_step_hours": 24.0}  # fmt: skip
    manifest = ChannelManifest.from_dict(old)
    assert manifest.model_step == TimeStep(duration=pd.Timedelta("24h")) and manifest.calendar_step == ""
    monthly = ChannelManifest.from_dict(old | {"time_step_hours": 730.485, "calendar_step": "1M-mid"})
    assert ChannelManifest.from_dict(monthly.to_dict()).model_step == TimeStep.parse("1M-mid")
    assert monthly.differences(manifest) == ["time step differs (monthly (mid-month) vs 1D)"]
    key = cache_key("s", monthly, "a", "b", monthly.time_step_hours)
    assert key["calendar_step"] == "1M-mid" and "calendar_step" not in cache_key(
        "s", manifest, "a", "b", 24.0
    )


class _Recording(torch.nn.Module):
    """Persistence that keeps the forcings and valid times it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, state, static=None, forcings=None, time=None):
        self.calls.append((forcings.clone(), time.clone()))
        return self.net(state, static, forcings, time)


def test_monthly_model_trains_and_rolls_out_at_true_times(tmp_path: Path) -> None:
    store = _store(tmp_path / "mid.zarr", MID_MONTH)
    dm = _dm(store, tmp_path, batch_size=8)
    module = ForecastModule("persistence", manifest=dm.manifest, stats=dm.stats, val_steps=2)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    assert {"val/rmse/2m_temperature/1mo", "val/rmse/2m_temperature/2mo"} <= set(trainer.callback_metrics)
    init = torch.tensor([pd.Timestamp("2019-01-16T12").value, pd.Timestamp("2019-11-16").value])
    valid = pd.DatetimeIndex(module.valid_times(init, 3).numpy().ravel())
    # February 2020 has 29 days: its middle is the 15th at noon
    assert [t.strftime("%m-%dT%H") for t in valid] == [
        "02-15T00", "03-16T12", "04-16T00", "12-16T12", "01-16T12", "02-15T12"
    ]  # fmt: skip

    truth = TruthSource.open(store, module.manifest)
    inits = pd.DatetimeIndex(["2018-03-16T12"])
    np.testing.assert_array_equal(truth.input_times(inits, 2), [MID_MONTH[[13, 14]].values])
    with pytest.raises(ValueError, match="lacks 1 time"):
        truth.check_inits(pd.DatetimeIndex(["2018-03-01"]), 1)  # not a stamp of this axis
    net = _Recording(module.eval_model.eval())
    model = StepModel(net, module, module.manifest, module.stats, 1, torch.device("cpu"), "", {})
    ic = InitialConditions(
        inits.values,
        torch.from_numpy(truth.initial_states(inits, 1)),
        torch.from_numpy(truth.static_fields()),
    )
    steps = list(generate(model, ic, 3))
    np.testing.assert_array_equal([s.valid_times[0] for s in steps], MID_MONTH[15:18].values)
    names = module.manifest.names("forcing")
    for k, (forcings, time) in enumerate(net.calls):
        assert time.tolist() == [MID_MONTH[15 + k].value]
        for j, stamp in enumerate(MID_MONTH[14 + k : 16 + k]):  # the input time, then the target time
            doy = stamp.day_of_year
            got = forcings[0, j, names.index("sin_day_of_year")].numpy()
            np.testing.assert_allclose(got, np.sin(2 * np.pi * (doy - 1) / 365.25), atol=1e-6)

    trainer.save_checkpoint(tmp_path / "monthly.ckpt")
    cfg = RolloutConfig(
        str(tmp_path / "monthly.ckpt"), store, "2018-03-16T12,2018-06-16", "90d", str(tmp_path / "out.zarr")
    )
    with pytest.raises(
        ConfigError, match=r"--lead '90d' is not a whole number of the model's monthly \(mid-month\)"
    ):
        run_rollout(cfg)
    result = run_rollout(replace(cfg, lead="3 months", progress=False))
    out = xr.open_zarr(result.store)
    assert result.status == "complete" and out.sizes["prediction_timedelta"] == 3
    first = (
        out["2m_temperature"].sel(time="2018-03-16T12").values
    )  # persistence: every lead is the init state
    np.testing.assert_array_equal(
        first, np.broadcast_to(truth.initial_states(inits, 1)[0, 0, 0], first.shape)
    )
    # the store records the true valid times, and `earthcast score` scores against the truth at them
    starts = np.array(["2018-03-16T12", "2018-06-16"], dtype="datetime64[ns]")
    stamps = MID_MONTH.values
    where = [int(np.searchsorted(stamps, t)) for t in starts]
    np.testing.assert_array_equal(out["valid_time"].values, [stamps[i + 1 : i + 4] for i in where])
    ds = open_store(store)
    result_ds = score(out, ds)
    values = ds["2m_temperature"].transpose("time", "latitude", "longitude").values.astype(np.float64)
    weights = latitude_weights(ds["latitude"].values, dataset_geometry(ds))[:, None]
    mse = np.array(
        [
            [((values[i] - values[i + k]) ** 2 * weights).mean() / weights.mean() for k in (1, 2, 3)]
            for i in where
        ]
    )
    np.testing.assert_allclose(
        result_ds["2m_temperature"].sel(metric="rmse", region="global").values,
        np.sqrt(mse.mean(0)),
        rtol=1e-6,
    )


def _info(store: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(["data", "info", store]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("time"))


def test_data_info_describes_every_axis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _info(_store(tmp_path / "ms.zarr", MONTH_STARTS), capsys)
    assert line.endswith("2017-01-01 00:00:00 … 2019-12-01 00:00:00, 36 steps, monthly (month start)")
    assert _info(_store(tmp_path / "mid.zarr", MID_MONTH), capsys).endswith("36 steps, monthly (mid-month)")
    six = pd.date_range("2018-01-01", periods=64, freq="6h")
    assert _info(_store(tmp_path / "6h.zarr", six), capsys).endswith("64 steps, 6h")
    line = _info(_store(tmp_path / "gaps.zarr", six.delete([10, 11, 20, 30, 40])), capsys)
    assert line.endswith(
        "59 steps, irregular, mostly 6h: 4 gap(s): 2018-01-03T06:00:00 -> 2018-01-04T00:00:00, "
        "2018-01-05T18:00:00 -> 2018-01-06T06:00:00, 2018-01-08T06:00:00 -> 2018-01-08T18:00:00 and 1 more"
    )
    line = _info(_store(tmp_path / "missing.zarr", MONTH_STARTS.delete([26])), capsys)
    assert line.endswith(
        "irregular, mostly monthly (month start): 1 gap(s): 2019-02-01T00:00:00 -> 2019-04-01T00:00:00"
    )

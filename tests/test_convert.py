"""``earthcast data convert``: CDS netCDF (new and old layout), GRIB and CMEMS files -> WB2 Zarr stores.

Every input is a real file written here: netCDF with xarray/netCDF4, GRIB with ecCodes from its samples.
Expected values are built independently in NumPy from the arrays written into the files.
"""

from __future__ import annotations

import sys
import zipfile

import eccodes  # the `convert` extra (eccodes, cfgrib, h5netcdf[h5py]) is part of `dev`
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from convert_helpers import LAT_DESC, LON, UNITS, WB2, H, W, field, new_cds, series, six_hourly

from earthcast.commands.data import main as data_main
from earthcast.datasets.convert import convert_to_wb2
from earthcast.datasets.store import open_store
from earthcast.errors import (
    ConfigError,
    MissingDependencyError,
)


def test_new_cds_netcdf_round_trip_merges_single_and_pressure_levels(tmp_path):
    times = six_hourly("2020-01-01", 5)
    pl = new_cds(tmp_path / "pl.nc", times, ["t", "z", "q"], seed=1, levels=[1000, 850, 500])
    sl = new_cds(tmp_path / "sl.nc", times, ["t2m", "msl", "u10", "lsm"], seed=2)
    out = convert_to_wb2([tmp_path / "pl.nc", tmp_path / "sl.nc"], tmp_path / "era5.zarr", progress=False)

    ds = open_store(out)
    assert sorted(ds.data_vars) == sorted(WB2.values())
    assert ds["level"].values.tolist() == [500, 850, 1000]
    assert ds["latitude"].values.tolist() == LAT_DESC[::-1].tolist()
    np.testing.assert_array_equal(ds["time"].values, times.values)
    for short, values in {**pl, **sl}.items():
        da = ds[WB2[short]]
        assert da.attrs["units"] == UNITS[short]
        assert da.dtype == np.float32
        assert not any(k.startswith("GRIB") for k in da.attrs)
        # Levels ascending (the file has 1000, 850, 500) and latitude ascending: both flipped.
        expected = values[:, ::-1, ::-1] if values.ndim == 4 else values[:, ::-1]
        dims = (
            ("time", "level", "latitude", "longitude")
            if values.ndim == 4
            else ("time", "latitude", "longitude")
        )
        if short == "lsm":  # time-invariant: the first time step, no time dimension
            expected, dims = expected[0], dims[1:]
        assert da.dims == dims
        np.testing.assert_array_equal(da.values, expected)
    assert "expver" not in ds.variables and "number" not in ds.variables
    assert not list(tmp_path.glob(".era5.zarr.*"))  # nothing left behind


def _grib_message(short: str, when: pd.Timestamp, values: np.ndarray, level: int | None) -> int:
    """One GRIB2 message from ecCodes' samples on the test grid (north to south), 16-bit packing.

    ``short == "tp"`` is written as ERA5 writes it: an accumulation over the hour ending at ``when``, in a
    forecast from the previous 06/18 UTC base time.
    """
    sample = "regular_ll_pl_grib2" if level is not None else "regular_ll_sfc_grib2"
    h = eccodes.codes_grib_new_from_samples(sample)
    base = when
    if short == "tp":
        base = (when - pd.Timedelta("1h")).floor("12h") - pd.Timedelta("6h")
        base = base + pd.Timedelta("12h") if when - base > pd.Timedelta("12h") else base
    eccodes.codes_set_key_vals(
        h,
        {
            "Ni": W,
            "Nj": H,
            "latitudeOfFirstGridPointInDegrees": LAT_DESC[0],
            "latitudeOfLastGridPointInDegrees": LAT_DESC[-1],
            "longitudeOfFirstGridPointInDegrees": LON[0],
            "longitudeOfLastGridPointInDegrees": LON[-1],
            "iDirectionIncrementInDegrees": 2.0,
            "jDirectionIncrementInDegrees": 5.0,
            "dataDate": int(base.strftime("%Y%m%d")),
            "dataTime": base.hour * 100,
            "bitsPerValue": 16,
        },
    )
    if short == "tp":
        step = int((when - base) / pd.Timedelta("1h"))
        eccodes.codes_set(h, "productDefinitionTemplateNumber", 8)
        eccodes.codes_set_key_vals(
            h, {"shortName": "tp", "stepType": "accum", "startStep": step - 1, "endStep": step}
        )
    else:
        eccodes.codes_set(h, "shortName", short)
    if level is not None:
        eccodes.codes_set(h, "level", level)
    eccodes.codes_set_values(h, values.astype(np.float64).ravel())
    return h


def test_grib_round_trip_within_packing_tolerance(tmp_path):
    rng = np.random.default_rng(3)
    times = six_hourly("2021-06-01", 3)
    levels = [850, 500]
    written = {
        "t": field(rng, (3, 2, H, W), 250.0),
        "z": field(rng, (3, 2, H, W), 50000.0),
        "2t": field(rng, (3, H, W), 280.0),
        "10u": field(rng, (3, H, W), -5.0),  # at 10 m where 2t is at 2 m: two cfgrib hypercubes
        "msl": field(rng, (3, H, W), 101000.0),
        "tp": field(rng, (3, H, W), 0.0) * 1e-4,
    }
    with open(tmp_path / "era5.grib", "wb") as f:
        for i, when in enumerate(times):
            for short, values in written.items():
                for k, level in enumerate(levels if values.ndim == 4 else [None]):
                    h = _grib_message(short, when, values[i, k] if level else values[i], level)
                    eccodes.codes_write(h, f)
                    eccodes.codes_release(h)
    out = convert_to_wb2(tmp_path / "era5.grib", tmp_path / "grib.zarr", progress=False)

    ds = open_store(out)
    names = {
        "t": ("temperature", "K"),
        "z": ("geopotential", "m**2 s**-2"),
        "2t": ("2m_temperature", "K"),
        "10u": ("10m_u_component_of_wind", "m s**-1"),
        "msl": ("mean_sea_level_pressure", "Pa"),
        "tp": ("total_precipitation", "m"),
    }
    assert sorted(ds.data_vars) == sorted(name for name, _ in names.values())
    assert ds["level"].values.tolist() == [500, 850]
    np.testing.assert_array_equal(ds["time"].values, times.values)  # tp on the valid time, not its base time
    for short, values in written.items():
        name, units = names[short]
        expected = values[:, ::-1, ::-1] if values.ndim == 4 else values[:, ::-1]
        # 16-bit simple packing: the quantum is (max - min) / 2**16 per field; allow two quanta.
        tolerance = 2 * float(values.max() - values.min()) / 2**16
        np.testing.assert_allclose(ds[name].values, expected, rtol=0, atol=tolerance)
        assert ds[name].attrs["units"] == units


def test_old_cds_expver_dimension_is_merged(tmp_path):
    times = six_hourly("2023-03-01", 4)
    nan = np.nan
    # ERA5 (1) holds the first three steps, ERA5T (5) the last two; at step 2 both are valid: ERA5 wins.
    era5 = np.array([280.5, 281.0, 282.5, nan], dtype=np.float32)
    era5t = np.array([nan, nan, 290.0, 283.5], dtype=np.float32)
    t2m = np.stack([era5, era5t], axis=1)[:, :, None, None] * np.ones((1, 1, H, W), np.float32)
    ds = xr.Dataset(
        {
            "t2m": (
                ("time", "expver", "latitude", "longitude"),
                t2m,
                {"units": "K", "long_name": "2 metre temperature"},
            )
        },
        coords={"time": times, "expver": np.array([1, 5], np.int32), "latitude": LAT_DESC, "longitude": LON},
    )
    encoding = {
        "t2m": {"dtype": "int16", "scale_factor": 0.5, "add_offset": 270.0, "_FillValue": np.int16(-32767)}
    }
    ds.to_netcdf(tmp_path / "old.nc", format="NETCDF3_64BIT", encoding=encoding)
    out = convert_to_wb2(tmp_path / "old.nc", tmp_path / "old.zarr", progress=False)

    got = open_store(out)["2m_temperature"]
    assert got.dims == ("time", "latitude", "longitude")
    np.testing.assert_array_equal(got.values[:, 0, 0], [280.5, 281.0, 282.5, 283.5])
    assert np.all(got.values == got.values[:, :1, :1])


def test_grib_without_cfgrib_names_the_extra(tmp_path, monkeypatch):
    with open(tmp_path / "a.grib", "wb") as f:
        h = _grib_message("2t", pd.Timestamp("2020-01-01"), np.zeros((H, W)), None)
        eccodes.codes_write(h, f)
        eccodes.codes_release(h)
    monkeypatch.setitem(
        sys.modules, "cfgrib", None
    )  # as if not installed: `import cfgrib` raises ImportError
    with pytest.raises(MissingDependencyError, match=r'a\.grib.*pip install "earthcast\[convert\]"'):
        convert_to_wb2(tmp_path / "a.grib", tmp_path / "x.zarr")


def test_zipped_new_cds_download(tmp_path):
    """The new CDS zips a netCDF request that mixes instantaneous and accumulated variables."""
    times = six_hourly("2024-10-01", 3)
    instant = new_cds(tmp_path / "data_stream-oper_stepType-instant.nc", times, ["t2m"], seed=7)
    accum = new_cds(tmp_path / "data_stream-oper_stepType-accum.nc", times, ["tp"], seed=8)
    with zipfile.ZipFile(tmp_path / "download.zip", "w") as archive:
        for name in ("data_stream-oper_stepType-instant.nc", "data_stream-oper_stepType-accum.nc"):
            archive.write(tmp_path / name, name)
            (tmp_path / name).unlink()
    ds = open_store(convert_to_wb2(tmp_path / "download.zip", tmp_path / "z.zarr", progress=False))
    np.testing.assert_array_equal(ds["2m_temperature"].values, instant["t2m"][:, ::-1])
    np.testing.assert_array_equal(ds["total_precipitation"].values, accum["tp"][:, ::-1])
    assert ds["total_precipitation"].attrs["units"] == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download.zip", "z.zarr"]  # no scratch left


def test_cmems_ocean_netcdf_keeps_names_and_maps_depth_to_level(tmp_path):
    rng = np.random.default_rng(5)
    times = pd.date_range("2022-01-01", periods=3, freq="1D")
    depth = np.array([0.494025, 1.541375, 2.645669])
    lat = np.array([30.0, 30.5, 31.0])
    zos = rng.standard_normal((3, lat.size, W)).astype(np.float32)
    uo = rng.standard_normal((3, depth.size, lat.size, W)).astype(np.float32)
    vo = rng.standard_normal((3, depth.size, lat.size, W)).astype(np.float32)
    uo[:, :, 0, 0] = vo[:, :, 0, 0] = zos[:, 0, 0] = np.nan  # land
    dims4 = ("time", "depth", "latitude", "longitude")
    ds = xr.Dataset(
        {
            "zos": (
                ("time", "latitude", "longitude"),
                zos,
                {"units": "m", "standard_name": "sea_surface_height"},
            ),
            "uo": (dims4, uo, {"units": "m s-1", "standard_name": "eastward_sea_water_velocity"}),
            "vo": (dims4, vo, {"units": "m s-1", "standard_name": "northward_sea_water_velocity"}),
        },
        coords={
            "time": times,
            "depth": ("depth", depth, {"units": "m", "positive": "down"}),
            "latitude": lat,
            "longitude": LON,
        },
    )
    ds.to_netcdf(tmp_path / "cmems.nc")
    out = convert_to_wb2(tmp_path / "cmems.nc", tmp_path / "ocean.zarr", progress=False)

    got = open_store(out)
    assert sorted(got.data_vars) == ["uo", "vo", "zos"]
    np.testing.assert_array_equal(got["level"].values, depth)
    assert got["vo"].dims == ("time", "level", "latitude", "longitude")
    for name, values in {"zos": zos, "uo": uo, "vo": vo}.items():
        np.testing.assert_array_equal(got[name].values, values)  # NaN land points included
        assert got[name].attrs["units"] == ds[name].attrs["units"]


def test_cli_convert_glob_prints_the_store(tmp_path, capsys):
    series(tmp_path, ["2020-01-01", "2020-01-01T18"])
    assert (
        data_main(
            [
                "convert",
                str(tmp_path / "in" / "*.nc"),
                "--out",
                str(tmp_path / "c.zarr"),
                "--chunks",
                "time=4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "2m_temperature" in text and "6 steps" in text
    assert open_store(tmp_path / "c.zarr")["mean_sea_level_pressure"].encoding["chunks"][0] == 4
    with pytest.raises(SystemExit):
        data_main(["convert", str(tmp_path / "in"), "--out", str(tmp_path / "d.zarr"), "--chunks", "time=0"])
    with pytest.raises(ConfigError, match="--overwrite"):
        data_main(["convert", str(tmp_path / "in"), "--out", str(tmp_path / "c.zarr")])
    assert data_main(["convert", str(tmp_path / "in"), "--out", str(tmp_path / "c.zarr"), "--overwrite"]) == 0
    assert open_store(tmp_path / "c.zarr")["mean_sea_level_pressure"].encoding["chunks"][0] == 6  # auto: all

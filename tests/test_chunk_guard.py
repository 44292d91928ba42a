"""A truncated Blosc chunk raises an error on the Zarr v2 and v3 read paths instead of crashing the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numcodecs
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
import zarr.codecs

from earthcast.datasets import chunk_guard
from earthcast.datasets.store import open_store
from earthcast.errors import CorruptChunkError

# A Blosc chunk cut to its first 50 bytes, placed so that it ends exactly at a page followed by an unmapped
# page: numcodecs' unguarded decoder reads past the end and dies with SIGSEGV (checked by hand: exit -11).
PAGE_BOUNDARY_SCRIPT = textwrap.dedent(
    """
    import ctypes, mmap, sys
    import numcodecs, numpy as np
    from earthcast.datasets import chunk_guard
    chunk_guard.install()
    codec = numcodecs.get_codec({"id": "blosc"})
    chunk = bytes(codec.encode(np.random.default_rng(0).random(65536).astype("f4")))[:50]
    size = 64 * mmap.PAGESIZE
    region = mmap.mmap(-1, 2 * size)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(address + size), size, 0) == 0
    region[size - len(chunk) : size] = chunk
    try:
        codec.decode(np.frombuffer(region, np.uint8, count=len(chunk), offset=size - len(chunk)))
    except chunk_guard.TruncatedChunkError as err:
        print("raised:", err)
        sys.exit(0)
    sys.exit(3)
    """
)


def test_a_truncated_chunk_at_a_page_boundary_raises_instead_of_crashing() -> None:
    run = subprocess.run([sys.executable, "-c", PAGE_BOUNDARY_SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, f"exit {run.returncode} (-11 is a segmentation fault): {run.stderr[-2000:]}"
    assert "header gives" in run.stdout and "the chunk has 50" in run.stdout


def test_the_frame_check_against_hand_built_headers() -> None:
    header = np.zeros(16, np.uint8)
    header[12:16] = np.frombuffer(np.uint32(100).tobytes(), np.uint8)  # cbytes = 100, little-endian
    chunk_guard.check_blosc_frame(np.concatenate([header, np.zeros(84, np.uint8)]))  # exactly 100: fine
    with pytest.raises(chunk_guard.TruncatedChunkError, match="gives 100 compressed bytes, the chunk has 99"):
        chunk_guard.check_blosc_frame(np.concatenate([header, np.zeros(83, np.uint8)]))
    with pytest.raises(chunk_guard.TruncatedChunkError, match="shorter than the 16-byte Blosc header"):
        chunk_guard.check_blosc_frame(b"\x02\x01")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_truncated_chunk_in_a_store_names_variable_and_time(tmp_path: Path, zarr_format: int) -> None:
    """Both Zarr formats: intact chunks decode unchanged, a truncated one gives the named error."""
    chunk_guard.install()
    data = np.random.default_rng(1).random((8, 4, 6)).astype("f4")
    path = tmp_path / f"v{zarr_format}.zarr"
    ds = xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), data)},
        coords={
            "time": pd.date_range("2018-01-01", periods=8, freq="6h"),
            "latitude": np.linspace(-45.0, 45.0, 4),
            "longitude": np.arange(6) * 60.0,
        },
    )
    compressor = numcodecs.Blosc() if zarr_format == 2 else zarr.codecs.BloscCodec()
    encoding = {"t2m": {"chunks": (4, 4, 6), "compressors": [compressor]}}
    ds.to_zarr(path, zarr_format=zarr_format, encoding=encoding, consolidated=zarr_format == 2)
    np.testing.assert_array_equal(open_store(path)["t2m"].values, data)

    key = path / "t2m" / ("1.0.0" if zarr_format == 2 else "c/1/0/0")
    key.write_bytes(key.read_bytes()[:50])
    ds = open_store(path)
    np.testing.assert_array_equal(ds["t2m"].isel(time=slice(0, 4)).values, data[:4])
    with pytest.raises(chunk_guard.TruncatedChunkError, match="the chunk has 50"):
        ds["t2m"].load()


def test_guarded_codec_writes_the_same_bytes() -> None:
    """The guard changes decoding only: the v2 codec resolved by id encodes exactly like numcodecs' Blosc."""
    chunk_guard.install()
    codec = numcodecs.get_codec({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1})
    assert isinstance(codec, chunk_guard.CheckedBlosc)
    data = np.random.default_rng(2).random(4096).astype("f4")
    plain = numcodecs.blosc.Blosc(cname="lz4", clevel=5, shuffle=1)
    assert bytes(codec.encode(data)) == bytes(plain.encode(data))
    np.testing.assert_array_equal(np.frombuffer(codec.decode(plain.encode(data)), "f4"), data)


def test_datamodule_reports_the_truncated_chunk(tmp_path: Path) -> None:
    """The data layer turns the guard's error into the CorruptChunkError that names variable and time range
    (the full bad-input suite is in test_datasets_bad_input.py; this pins the guard's message into it)."""
    from earthcast.datasets.datamodule import WB2DataModule
    from earthcast.datasets.synthetic import synthetic_dataset
    from earthcast.datasets.zarr_store import write_wb2_store
    from earthcast.grids import wb2_grid

    store = tmp_path / "s.zarr"
    times = pd.date_range("2018-01-01", periods=64, freq="6h")
    write_wb2_store(
        synthetic_dataset(wb2_grid("64x32_equiangular_conservative"), times), store, chunks={"time": 8}
    )
    chunk = store / "temperature" / "1.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    dm = WB2DataModule(
        str(store),
        variables={"temperature": [500, 850]},
        stats_cache_dir=str(tmp_path),
        train=("2018-01-01", "2018-01-10"),
        val=("2018-01-11", "2018-01-13"),
        test=("2018-01-14", "2018-01-16"),
    )
    with pytest.raises(
        CorruptChunkError, match=r"'temperature' for 2018-01-03T00:00:00 .*TruncatedChunkError"
    ):
        _ = dm.stats

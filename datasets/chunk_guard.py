"""A truncated Blosc chunk fails with an error instead of crashing the process.

numcodecs' Blosc decoder trusts the compressed size written in the chunk's 16-byte header and reads that
many bytes, whatever the length of the buffer it was given. A chunk cut short (an interrupted download or
copy) is therefore read past its end: usually Blosc returns an error, but when the buffer ends at a page
boundary the process dies with a segmentation fault (``tests/test_chunk_guard.py`` reproduces the crash).
Zstd, zlib, LZ4, gzip, bz2 and LZMA stop at the end of their buffer and need no guard.

:func:`install` replaces the Blosc decoder that Zarr uses, for Zarr v2 arrays (numcodecs' ``"blosc"``
registry entry, which WB2 stores and earthcast's own stores use) and for Zarr v3 arrays (Zarr's ``"blosc"``
codec), by one that first checks the header against the buffer. Encoding is unchanged, and the stores written
are byte-identical. The readers turn the :class:`TruncatedChunkError` into a
:class:`~earthcast.errors.CorruptChunkError` that names the variable and time range.
"""

from __future__ import annotations

import numcodecs
import numpy as np
import zarr
import zarr.codecs
import zarr.registry
from numcodecs.blosc import Blosc
from numcodecs.compat import ensure_contiguous_ndarray
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer

__all__ = ["CheckedBlosc", "CheckedBloscCodec", "TruncatedChunkError", "check_blosc_frame", "install"]

HEADER_BYTES = 16  # Blosc 1 header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes (u32 LE)


class TruncatedChunkError(ValueError):
    """A compressed chunk is shorter than its own header says."""


def check_blosc_frame(buf: object) -> None:
    """Raise :class:`TruncatedChunkError` unless ``buf`` holds at least the ``cbytes`` its Blosc header gives.

    Args:
        buf: one compressed chunk (bytes, or any contiguous buffer).
    """
    raw = ensure_contiguous_ndarray(buf).view(np.uint8).reshape(-1)
    if raw.size < HEADER_BYTES:
        raise TruncatedChunkError(
            f"Blosc chunk of {raw.size} bytes is shorter than the {HEADER_BYTES}-byte Blosc header: truncated"
        )
    cbytes = int(raw[12:16].view("<u4")[0])
    if raw.size < cbytes:
        raise TruncatedChunkError(
            f"Blosc chunk is truncated: its header gives {cbytes} compressed bytes, the chunk has {raw.size}"
        )


class CheckedBlosc(Blosc):
    """numcodecs' :class:`~numcodecs.blosc.Blosc` (same ``codec_id``, same encoding) whose ``decode``
    checks the header against the buffer first."""

    def decode(self, buf: object, out: object = None) -> object:
        check_blosc_frame(buf)
        return super().decode(buf, out)


class CheckedBloscCodec(zarr.codecs.BloscCodec):
    """Zarr v3's ``blosc`` codec, with the same check before decoding."""

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        # ``_decode_single`` is the method Zarr's codec API asks codec implementations to provide.
        check_blosc_frame(chunk_bytes.as_numpy_array())
        return await super()._decode_single(chunk_bytes, chunk_spec)


_QUALNAME = f"{CheckedBloscCodec.__module__}.{CheckedBloscCodec.__qualname__}"


def install() -> None:
    """Make Zarr decode Blosc chunks through the checked codecs (idempotent; encoding is unchanged)."""
    if numcodecs.registry.codec_registry.get(Blosc.codec_id) is not CheckedBlosc:
        numcodecs.register_codec(CheckedBlosc)
    if zarr.config.get(f"codecs.{Blosc.codec_id}", None) != _QUALNAME:
        zarr.registry.register_codec(Blosc.codec_id, CheckedBloscCodec)
        zarr.config.set({f"codecs.{Blosc.codec_id}": _QUALNAME})

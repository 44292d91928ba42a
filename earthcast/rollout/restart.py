"""The run identity and the restart record that make a rollout resumable after a crash or ``kill -9``.

The record is a small binary file (JSON header + raw tensor bytes) saved after every written step (temporary file + ``os.replace``): the run
identity, the batch and next lead, the last N normalised states of the batch (exact float32), which
members are still running, the blow-ups so far, the torch RNG state and whether the run is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthcast.datasets.channels import ChannelManifest
from earthcast.errors import ConfigError

RECORD_NAME = "restart.bin"
MAGIC = b"EARTHCAST-RESTART-1\n"
IDENTITY_VERSION = 1


def canonical(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as it reads back from JSON (tuples become lists), for exact comparison."""
    return json.loads(json.dumps(identity))


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"{len(value)} values {value[0]} … {value[-1]}"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def identity_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run identities (empty if they are the same run)."""
    diffs: list[str] = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if a == b:
            continue
        if key == "manifest" and a is not None and b is not None:
            detail = ChannelManifest.from_dict(a).differences(ChannelManifest.from_dict(b))
            diffs.append(f"manifest: {'; '.join(detail) or 'statistics or metadata differ'}")
        else:
            diffs.append(f"{key}: {_short(a)} in the existing output vs {_short(b)} now")
    return diffs


def save_record(directory: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write the restart record atomically.

    Format: the magic line, an 8-byte little-endian header length, a JSON header (plain values plus, for
    each tensor, its dtype, shape and byte range), then the tensors' raw bytes. Much cheaper than
    ``torch.save`` (which would cost more than a small model's step) and exact.
    """
    plain = {k: v for k, v in record.items() if not isinstance(v, torch.Tensor)}
    blobs, specs, offset = [], {}, 0
    for key, value in record.items():
        if isinstance(value, torch.Tensor):
            array = value.detach().cpu().contiguous().numpy()
            specs[key] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
            blobs.append(array.tobytes())
            offset += array.nbytes
    header = json.dumps({"values": plain, "tensors": specs}).encode()
    final = Path(directory) / RECORD_NAME
    tmp = final.with_name(f".{RECORD_NAME}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(MAGIC + len(header).to_bytes(8, "little") + header + b"".join(blobs))
    os.replace(tmp, final)


def load_record(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The last restart record, or None if there is none."""
    path = Path(directory) / RECORD_NAME
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        if not raw.startswith(MAGIC):
            raise ConfigError("not an earthcast restart record")
        start = len(MAGIC) + 8
        size = int.from_bytes(raw[len(MAGIC) : start], "little")
        header = json.loads(raw[start : start + size])
        record = dict(header["values"])
        body = start + size
        for key, spec in header["tensors"].items():
            dtype = np.dtype(spec["dtype"])
            count = int(np.prod(spec["shape"]))
            values = np.frombuffer(raw, dtype=dtype, count=count, offset=body + spec["offset"])
            record[key] = torch.from_numpy(values.reshape(spec["shape"]).copy())
        return record
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"the restart record {str(path)!r} is unreadable ({type(err).__name__}: {err}); delete the output "
            "and its state directory, or rerun with --overwrite."
        ) from err

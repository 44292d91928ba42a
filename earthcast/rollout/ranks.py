"""Multi-process rollouts: which process (rank) computes which inits, and how the ranks share one store.

The launcher's environment gives the rank and the number of ranks, as torchrun (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) or SLURM (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``) set them; the
``RolloutConfig`` fields ``rank`` and ``world_size`` override them. There is no scheduler and no network
barrier: the run's batches of inits are split into ``world_size`` contiguous blocks, one per rank, so each
rank writes its own ``time`` slice of the one WB2 store (chunks are one init × one lead, so no chunk is
written by two ranks) and keeps its own restart state. Rank 0 creates the store skeleton (atomically: it
appears under its final name complete); the other ranks wait for it, checking its run identity.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from earthcast.errors import ConfigError, OutputExistsError
from earthcast.rollout.restart import identity_differences
from earthcast.rollout.writer import read_run_identity

ENV_PAIRS = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))
"""(rank, world size) environment variables, in order of preference."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a multi-process rollout: ``rank`` in ``0 … world_size - 1``."""

    rank: int
    world_size: int

    @property
    def tag(self) -> str:
        """``rank-R-of-W``: names this rank's state directory and aggregates file."""
        return f"rank-{self.rank}-of-{self.world_size}"

    def batches(self, n_batches: int) -> range:
        """This rank's block of batch indices (contiguous; block sizes differ by at most one).

        Raises:
            ConfigError: fewer batches than ranks (a rank would have nothing to do).
        """
        if n_batches < self.world_size:
            raise ConfigError(
                f"the run has {n_batches} batch(es) of inits for {self.world_size} ranks; lower --batch-size "
                "or start fewer processes so that every rank gets at least one batch."
            )
        return range(self.rank * n_batches // self.world_size, (self.rank + 1) * n_batches // self.world_size)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError as err:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer") from err


def resolve_ranks(rank: int | None, world_size: int | None, env: Mapping[str, str] | None = None) -> Ranks:
    """The rank and world size: the given values, else the launcher's environment, else 0 of 1.

    Raises:
        ConfigError: a rank outside ``0 … world_size - 1`` or a world size below 1.
    """
    env = os.environ if env is None else env
    for rank_var, size_var in ENV_PAIRS:
        if rank_var in env and size_var in env:
            rank = _int(env, rank_var) if rank is None else rank
            world_size = _int(env, size_var) if world_size is None else world_size
            break
    rank, world_size = rank or 0, 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"rank {rank} of world size {world_size} is invalid: the rank must be in 0 … world_size - 1 "
            "(check --rank / --world-size or the launcher's RANK / WORLD_SIZE, SLURM_PROCID / SLURM_NTASKS)."
        )
    return Ranks(rank, world_size)


def rank_device(device: str, env: Mapping[str, str] | None = None) -> str:
    """``cuda`` without an index becomes ``cuda:LOCAL_RANK`` (or ``SLURM_LOCALID``) when the launcher sets one,
    so the ranks of a node use different GPUs; any other device is returned unchanged."""
    env = os.environ if env is None else env
    if device != "cuda":
        return device
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name in env:
            return f"cuda:{_int(env, name)}"
    return device


def wait_for_store(path: Path, identity: dict, timeout: float, poll: float = 0.1) -> None:
    """Wait until rank 0 has created the store at ``path`` with this run's ``identity``.

    Raises:
        ConfigError: no store after ``timeout`` seconds (rank 0 failed or was never started).
        OutputExistsError: the store that appeared holds another run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = read_run_identity(path)
        if stored is not None:
            diffs = identity_differences(stored, identity)
            if diffs:
                raise OutputExistsError(
                    f"{path} was created by rank 0 for a different run:\n  - "
                    + "\n  - ".join(diffs)
                    + "\nStart every rank with the same checkpoint and options."
                )
            return
        time.sleep(poll)
    raise ConfigError(
        f"waited {timeout:g} s for rank 0 to create {path}, in vain: check rank 0's log (it creates the store), "
        "or raise store_wait (--store-wait) if its start-up is slow."
    )

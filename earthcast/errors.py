"""The errors earthcast raises on purpose.

Every class here is raised with a message that names the problem and the fix. The ``earthcast`` command
prints such an error as one line (``EARTHCAST_DEBUG=1`` shows its traceback); anything else that goes
wrong is a bug or an unexpected failure and keeps its full traceback.

Each class also derives from the built-in exception a Python user would catch for it (``ValueError`` for
bad data or settings, ``KeyError`` for a missing variable, ``FileNotFoundError`` for a missing store, …),
so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class EarthcastError(Exception):
    """Base class: an error raised on purpose, whose message names the problem and the fix."""

    def __str__(self) -> str:  # KeyError would otherwise print its message in quotes
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class DataError(EarthcastError, ValueError):
    """The data cannot serve the request: a wrong grid, NaNs, a bad time axis, unpaired vector components."""


class GridError(DataError):
    """A grid is not usable or does not match: non-monotonic or irregular coordinates, another geometry."""


class TimeAxisError(DataError):
    """A store's time axis cannot serve the requested windows (gaps, wrong step, too short)."""


class NaNInWindowError(DataError):
    """An unmasked NaN/Inf was found in data that a training window needs."""


class MissingVariableError(EarthcastError, KeyError):
    """A variable, level or static field that was asked for is not in the store."""


class StoreNotFoundError(EarthcastError, FileNotFoundError):
    """No store, file or demo data at the given path."""


class CorruptChunkError(EarthcastError, RuntimeError):
    """A Zarr chunk (or an input file) could not be read or decoded; the message names where."""


class ConfigError(EarthcastError, ValueError):
    """A setting is invalid or contradicts the data or another setting."""


class CheckpointError(EarthcastError, ValueError):
    """A checkpoint is missing, unreadable, not earthcast's, or does not match the data or config."""


class MissingDependencyError(EarthcastError, ImportError):
    """An optional dependency is needed for this feature; the message names the extra to install."""


class OutputExistsError(EarthcastError, FileExistsError):
    """An output already exists and would be overwritten, or belongs to another run; the message says how to
    resume it or overwrite it."""


class RunFailedError(EarthcastError, RuntimeError):
    """A stage of a run failed in a way the message explains (e.g. a rollout that blew up); what was written
    is kept."""

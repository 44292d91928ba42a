"""Commit computed steps to disk on a background thread, strictly in order, a bounded number in flight.

The model computes the next steps while step k is written (Zarr region write, aggregator update, restart
record, in that order). The queue holds at most ``depth`` steps, so memory stays flat (``depth`` steps of
fields and state) while a slow write (a file-system stall) does not hold up the model; the restart record
of a step is saved only after its data, so a kill at any point resumes correctly (at most ``depth + 1``
computed steps are lost and recomputed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType


class StepCommitter:
    """Runs submitted commit functions one after another on a worker thread.

    Use as a context manager; ``submit`` blocks while ``depth`` steps are waiting to be committed and
    re-raises the first error of the worker.
    """

    def __init__(self, depth: int = 1) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="rollout-commit", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as err:  # handed to the main thread
                    self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after the steps already submitted."""
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        """Wait until every submitted step is committed; re-raise a worker error."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def __enter__(self) -> StepCommitter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

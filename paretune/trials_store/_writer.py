"""Tracking writes off the search loop: one background thread that does them in order.

A trial's MLflow run is created in the loop (its id goes to the worker that logs its steps);
what follows it (the run's parameters, and at the end its final metrics, tags and end status)
is queued here, so the next trial is asked while MLflow writes. The study stays the record: a
driver killed with writes still queued leaves runs RUNNING or without parameters, and the next
:meth:`~paretune.trials_store.TrialsStore.start` closes them from the study
(:func:`~paretune.trials_store._reconcile.reconcile_runs`).

A write that fails is not retried here: the writer drops what is queued behind it (MLflow is
down, or would be hammered), and the store, told through :meth:`TrackingWriter.failures`, marks
those trials unlogged and catches them up once the tracking store answers again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TrackingWriter", "WriteFailure"]

_log = logging.getLogger(__name__)

# Writes waiting at most: a loop faster than MLflow then waits for it (back-pressure).
_MAX_QUEUED = 256


@dataclass(frozen=True)
class WriteFailure:
    """A queued write that failed (``error`` set) or was dropped after one that did."""

    trial_number: int
    what: str
    error: BaseException | None


class TrackingWriter:
    """An ordered queue of tracking writes, done by one daemon thread.

    Args:
        name: The thread's name (in stack dumps).
    """

    def __init__(self, name: str = "paretune-tracking") -> None:
        self._queue: queue.Queue[tuple[int, str, Callable[[], None]] | None] = queue.Queue(
            maxsize=_MAX_QUEUED
        )
        self._lock = threading.Lock()
        self._failures: list[WriteFailure] = []
        self._failing = False  # drop what follows a failure until the store has seen it
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, trial_number: int, what: str, write: Callable[[], None]) -> None:
        """Queue ``write`` (of trial ``trial_number``: ``what`` names it in a warning); waits
        while ``_MAX_QUEUED`` writes wait already."""
        if not self._thread.is_alive():
            raise RuntimeError("the tracking writer is closed")
        self._queue.put((trial_number, what, write))

    def drain(self) -> None:
        """Wait until every queued write is done (or dropped)."""
        self._queue.join()

    def failures(self) -> list[WriteFailure]:
        """The writes that failed or were dropped since the last call."""
        with self._lock:
            found, self._failures = self._failures, []
        return found

    def resume(self) -> None:
        """Write again after a failure (until then every queued write is dropped)."""
        with self._lock:
            self._failing = False

    def close(self) -> None:
        """Do what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                number, what, write = item
                with self._lock:
                    if self._failing:
                        self._failures.append(WriteFailure(number, what, None))
                        continue
                try:
                    write()
                except Exception as err:  # tracking is best-effort; the study is the record
                    _log.debug("tracking write failed (%s): %s", what, err)
                    with self._lock:
                        self._failures.append(WriteFailure(number, what, err))
                        self._failing = True
            finally:
                self._queue.task_done()

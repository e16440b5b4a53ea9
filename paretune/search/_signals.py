"""Stopping a search cleanly on SIGINT/SIGTERM, to the driver or to its whole process group."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from paretune._errors import ParetuneError

__all__ = [
    "SearchInterrupted",
    "clear_stop_request",
    "handle_stop_signal",
    "objective_in_main_thread",
    "stop_requested",
    "stop_signals",
]

_stop = threading.Event()
_stop_signal: str | None = None  # the name of the signal that requested the stop
# Set while an objective runs in the main thread: only then does a stop raise at once.
objective_in_main_thread = threading.Event()


class SearchInterrupted(ParetuneError):
    """The search was stopped (Ctrl-C, SIGTERM); running trials were failed and re-queued.

    A :class:`~paretune.ParetuneError` like every error paretune raises, but not a failure:
    catch it before ``ParetuneError`` (the CLI exits 130 for it, 1 for the others).
    """

    def __init__(self, requeued: list[int]) -> None:
        self.requeued = requeued
        super().__init__(f"interrupted; trials {requeued} were queued again")


def handle_stop_signal(signum: int, frame: Any) -> None:
    """A handler for SIGINT/SIGTERM that stops a search cleanly.

    It records the request, which the trial loop checks between trials and while it waits for
    workers, so bookkeeping is never cut in half. Only while an objective runs in the main
    thread, or on a second signal, does it also raise ``KeyboardInterrupt``. (Python's default
    handler raises anywhere, and an interrupt raised inside a finaliser is swallowed.)

    Worker processes ignore both signals, so a signal sent to the whole process group
    (``timeout``, Slurm, systemd, Kubernetes) reaches them without killing their trials: the
    driver stops them and queues their trials again.
    """
    global _stop_signal
    try:
        _stop_signal = signal.Signals(signum).name
    except ValueError:
        _stop_signal = str(signum)
    if _stop.is_set() or objective_in_main_thread.is_set():
        _stop.set()
        raise KeyboardInterrupt  # a second signal stops at once, wherever the driver is
    _stop.set()


def stop_reason() -> str:
    """Why the running trials of a stopped search were interrupted, as recorded on them:
    ``"stopped by the user (SIGINT)"``, ``"... (SIGTERM)"``; without a signal (a
    ``KeyboardInterrupt`` raised in this process), ``"stopped by the user"``."""
    return "stopped by the user" + (f" ({_stop_signal})" if _stop_signal else "")


def stop_requested() -> bool:
    """Whether a stop was requested and not yet honoured.

    A request stays until a trial loop honours it (:func:`~paretune.search.run_trials` clears
    it when it raises :class:`SearchInterrupted`) or :func:`clear_stop_request` drops it: a
    signal that arrives while a search opens its study and MLflow stops that search as soon as
    its loop begins, instead of being forgotten.
    """
    return _stop.is_set()


def clear_stop_request() -> None:
    """Drop a stop request (where a new scope of stop handling begins)."""
    global _stop_signal
    _stop.clear()
    _stop_signal = None


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM go to :func:`handle_stop_signal` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handle_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    clear_stop_request()  # a request from before this block is not this block's
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

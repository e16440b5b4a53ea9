"""Stopping a search: what a stop raises."""

from __future__ import annotations

import signal

import pytest

from paretune import ParetuneError
from paretune.search import SearchInterrupted, handle_stop_signal, stop_requested
from paretune.search._signals import clear_stop_request, stop_reason


def test_search_interrupted_is_a_paretune_error_that_names_the_requeued_trials() -> None:
    err = SearchInterrupted([3, 5])
    assert isinstance(err, ParetuneError)
    assert err.requeued == [3, 5]
    assert "[3, 5]" in str(err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_names_the_signal_that_asked_for_it(signum: signal.Signals) -> None:
    clear_stop_request()
    assert stop_reason() == "stopped by the user"  # a KeyboardInterrupt raised in-process
    try:
        handle_stop_signal(signum, None)
        assert stop_requested()
        assert stop_reason() == f"stopped by the user ({signum.name})"
    finally:
        clear_stop_request()
    assert not stop_requested() and stop_reason() == "stopped by the user"

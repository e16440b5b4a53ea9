"""Stopping a search: what a stop raises."""

from __future__ import annotations

from paretune import ParetuneError
from paretune.search import SearchInterrupted


def test_search_interrupted_is_a_paretune_error_that_names_the_requeued_trials() -> None:
    err = SearchInterrupted([3, 5])
    assert isinstance(err, ParetuneError)
    assert err.requeued == [3, 5]
    assert "[3, 5]" in str(err)

"""The tracking writer: MLflow writes off the search loop, in order, and never silently lost."""

from __future__ import annotations

import threading

import pytest

from paretune.trials_store._writer import TrackingWriter


def test_writes_are_done_in_the_order_they_were_queued() -> None:
    done: list[int] = []
    writer = TrackingWriter()
    for n in range(50):
        writer.submit(n, f"write {n}", lambda n=n: done.append(n))
    writer.drain()
    assert done == list(range(50))
    assert writer.failures() == []
    writer.close()


def test_a_failed_write_drops_what_follows_until_resumed_and_reports_each() -> None:
    done: list[int] = []
    release = threading.Event()
    writer = TrackingWriter()

    def fail() -> None:
        release.wait()
        raise ConnectionError("the tracking server is gone")

    writer.submit(0, "first", lambda: done.append(0))
    writer.submit(1, "second", fail)
    writer.submit(2, "third", lambda: done.append(2))  # queued behind the failure
    release.set()
    writer.drain()
    failures = writer.failures()
    assert done == [0]
    assert [(f.trial_number, f.what) for f in failures] == [(1, "second"), (2, "third")]
    assert isinstance(failures[0].error, ConnectionError)
    assert failures[1].error is None  # dropped, not tried
    writer.submit(3, "after the outage, before resume", lambda: done.append(3))
    writer.drain()
    assert [f.trial_number for f in writer.failures()] == [3]
    writer.resume()
    writer.submit(4, "after resume", lambda: done.append(4))
    writer.close()  # does what is queued first
    assert done == [0, 4]
    assert writer.failures() == []


def test_close_waits_for_the_queue_and_refuses_more() -> None:
    done: list[int] = []
    gate = threading.Event()
    writer = TrackingWriter()
    writer.submit(0, "slow", lambda: (gate.wait(), done.append(0)))
    closer = threading.Thread(target=writer.close)
    closer.start()
    assert done == []
    gate.set()
    closer.join()
    assert done == [0]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(1, "late", lambda: None)

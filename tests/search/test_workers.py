"""The worker pool, with real processes: deaths, hangs, signals, results, clean exits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import psutil
import pytest

from paretune.search._jobs import Outcome
from paretune.search._workers import _EXIT_GRACE, Handle, WorkerPool

# Generous: two shared cores, and a worker's start imports paretune (about 1.5 s alone).
DEADLINE = 60.0
ROOT = Path(__file__).resolve().parents[2]


class _LoadsBadly:
    """Pickles in the worker, fails to unpickle in the driver."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _explode, ()


def _explode() -> None:
    raise RuntimeError("this result does not load")


def work(job: tuple[str, Any]) -> Any:
    """The pool's target in these tests: ``(action, argument)`` jobs."""
    action, arg = job
    if action == "echo":
        return {"value": arg, "pid": os.getpid()}
    if action == "exit":
        os._exit(arg)
    if action == "await":  # announce the start, then finish when the test creates `go`
        started, go = arg
        # The moment the job began (CLOCK_MONOTONIC: the same in every process), written whole.
        Path(f"{started}.tmp").write_text(repr(time.monotonic()))
        os.replace(f"{started}.tmp", started)
        _await(lambda: Path(go).exists(), what=f"{go} to exist")
        return {"value": "went", "pid": os.getpid()}
    if action == "hang":  # announce the start, then wait for an event that never comes
        Path(arg).touch()
        threading.Event().wait()
    if action == "env":
        return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if action == "unpicklable":
        return threading.Lock()
    if action == "loads badly":
        return _LoadsBadly()
    if action == "raise":
        raise ValueError(arg)
    raise AssertionError(f"unknown action {action!r}")


def _await(condition: Callable[[], bool], *, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {DEADLINE:.0f} s for {what}")
        time.sleep(0.01)


def _await_start(handle: Handle, marker: Path) -> None:
    """Wait until ``handle``'s job touched ``marker``; fail at once if its worker died."""
    _await(lambda: marker.exists() or _gone(handle.pid), what=f"the job to touch {marker}")
    assert marker.exists(), f"worker {handle.pid} died before its job started"


def _gone(pid: int) -> bool:
    """Whether process ``pid`` is dead (a zombie nobody reaped is dead too).

    Dead means all its threads: a SIGKILLed process's main thread shows as a zombie while its
    other threads (a BLAS or torch pool) still exit and still hold its files, its pipe to the
    pool among them.
    """
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE and process.num_threads() <= 1
    except psutil.NoSuchProcess:
        return True


def _open_fds() -> int:
    resource_tracker.ensure_running()  # spawn's one shared helper, opened once per process
    return psutil.Process().num_fds()


def _results(pool: WorkerPool, n: int) -> list[tuple[Handle, Any]]:
    """The next ``n`` finished jobs."""
    results: list[tuple[Handle, Any]] = []
    deadline = time.monotonic() + DEADLINE
    while len(results) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"only {len(results)} of {n} jobs finished in {DEADLINE:.0f} s")
        results.extend(pool.wait(left))
    assert len(results) == n, results
    return results


def _pool(*, n_jobs: int = 1, threads: int = 1) -> WorkerPool:
    return WorkerPool(
        n_jobs=n_jobs,
        threads=threads,
        target=work,
        lost=lambda message: Outcome("FAIL", error=message, lost=True),
        error=lambda message: Outcome("FAIL", error=message),
    )


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="n_jobs >= 1"):
        _pool(n_jobs=0)
    with pytest.raises(ValueError, match="threads >= 1"):
        _pool(threads=0)
    with pytest.raises(TypeError, match="must be picklable"):
        WorkerPool(n_jobs=1, threads=1, target=lambda job: job, lost=str, error=str)


def test_a_dead_worker_fails_only_its_own_job(tmp_path):
    with _pool(n_jobs=2) as pool:
        survivor = pool.submit(("await", (tmp_path / "started", tmp_path / "go")))
        _await_start(survivor, tmp_path / "started")
        dying = pool.submit(("exit", 3))
        assert pool.free_slots() == 0

        [(handle, outcome)] = _results(pool, 1)
        assert handle is dying and outcome.state == "FAIL" and outcome.lost
        assert outcome.error == f"the worker process died (pid {dying.pid}, exit code 3)"
        assert pool.running() == [survivor] and pool.free_slots() == 1

        (tmp_path / "go").touch()
        [(handle, outcome)] = _results(pool, 1)
        assert handle is survivor and outcome == {"value": "went", "pid": survivor.pid}

        # A worker killed from outside (the out-of-memory killer) is named by its signal.
        hung = pool.submit(("hang", tmp_path / "hung"))
        assert hung.pid == survivor.pid  # workers serve many jobs
        _await_start(hung, tmp_path / "hung")
        os.kill(hung.pid, signal.SIGKILL)
        [(handle, outcome)] = _results(pool, 1)
        assert handle is hung and outcome.lost
        assert "killed by SIGKILL" in outcome.error
        assert pool.free_slots() == 2 and pool.running() == []


@pytest.mark.slow
def test_a_hung_job_is_cancelled_and_the_next_runs_in_a_fresh_worker(tmp_path):
    fds = _open_fds()
    with _pool(n_jobs=1) as pool:
        for attempt in range(2):  # cancel and resubmit, repeatedly
            started = tmp_path / f"started{attempt}"
            hung = pool.submit(("hang", started))
            _await_start(hung, started)
            assert pool.wait(0) == [] and pool.running() == [hung]

            pool.cancel(hung)
            assert pool.running() == [] and pool.free_slots() == 1
            assert not psutil.pid_exists(hung.pid)  # killed and reaped
            pool.cancel(hung)  # a second cancel is a no-op

            after = pool.submit(("echo", attempt))
            assert after.pid != hung.pid
            [(handle, outcome)] = _results(pool, 1)  # the cancelled job is never reported
            assert handle is after and outcome == {"value": attempt, "pid": after.pid}
    assert _open_fds() == fds  # no pipe or sentinel left open by the killed workers


def test_a_job_starts_when_its_worker_begins_it_not_when_the_worker_starts(tmp_path):
    """What a timeout is measured from: a fresh worker's start-up (spawn, imports) is not the
    job's time."""
    started, go = tmp_path / "started", tmp_path / "go"
    with _pool(n_jobs=1) as pool:
        submitted = time.monotonic()
        handle = pool.submit(("await", (started, go)))
        assert handle.started is None  # its worker is starting up
        _await_start(handle, started)
        began = float(started.read_text())
        assert pool.wait(0.5) == []  # the worker's word that it began, and no end yet
        assert handle.started is not None
        assert submitted < began <= handle.started  # read after the job began
        go.touch()
        [(done, outcome)] = _results(pool, 1)
        assert done is handle and outcome == {"value": "went", "pid": handle.pid}


def test_a_worker_ignores_stop_signals_from_its_start_on(tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    with _pool(n_jobs=1) as pool:
        handle = pool.submit(("await", (started, go)))
        # Sent while the worker boots (importing paretune takes a second), then while it runs
        # the job, as a stop of the whole process group would (Ctrl-C, timeout, Slurm).
        for signum in (signal.SIGTERM, signal.SIGINT):
            os.kill(handle.pid, signum)
        _await_start(handle, started)
        for signum in (signal.SIGTERM, signal.SIGINT):
            os.kill(handle.pid, signum)
        go.touch()
        [(_, outcome)] = _results(pool, 1)
        assert outcome == {"value": "went", "pid": handle.pid}


def test_workers_get_the_thread_variables():
    with _pool(threads=3) as pool:
        pool.submit(("env", None))
        [(_, outcome)] = _results(pool, 1)
    assert outcome == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}


def test_results_that_cannot_come_back_are_errors_and_the_worker_serves_on():
    with _pool(n_jobs=1) as pool:
        first = pool.submit(("unpicklable", None))
        [(_, outcome)] = _results(pool, 1)
        assert outcome.state == "FAIL" and not outcome.lost
        assert outcome.error.startswith("the job's result could not be sent to the driver:")
        assert "lock" in outcome.error

        pool.submit(("loads badly", None))
        [(_, outcome)] = _results(pool, 1)
        assert outcome.error.startswith("the job's result could not be read:")
        assert "this result does not load" in outcome.error

        pool.submit(("raise", "target itself failed"))
        [(_, outcome)] = _results(pool, 1)
        assert outcome.error.startswith("Traceback")
        assert "ValueError: target itself failed" in outcome.error

        last = pool.submit(("echo", 1))
        [(_, outcome)] = _results(pool, 1)
        assert last.pid == first.pid and outcome == {"value": 1, "pid": first.pid}


def test_submit_needs_a_free_slot(tmp_path):
    with _pool(n_jobs=1) as pool:
        pool.submit(("hang", tmp_path / "started"))
        with pytest.raises(RuntimeError, match="no free slot"):
            pool.submit(("echo", 1))


def test_a_worker_that_died_idle_is_replaced():
    with _pool(n_jobs=1) as pool:
        first = pool.submit(("echo", 1))
        _results(pool, 1)
        os.kill(first.pid, signal.SIGKILL)
        _await(lambda: _gone(first.pid), what="the idle worker to die")
        second = pool.submit(("echo", 2))
        [(_, outcome)] = _results(pool, 1)
        assert second.pid != first.pid and outcome == {"value": 2, "pid": second.pid}


def test_kill_leaves_no_process(tmp_path):
    fds = _open_fds()
    pool = _pool(n_jobs=2)
    handles = [pool.submit(("hang", tmp_path / f"started{i}")) for i in range(2)]
    for i, handle in enumerate(handles):
        _await_start(handle, tmp_path / f"started{i}")
    pool.kill()
    assert not any(psutil.pid_exists(h.pid) for h in handles)  # killed and reaped
    assert pool.running() == [] and pool.wait(0) == [] and pool.free_slots() == 2
    assert multiprocessing.active_children() == []
    assert _open_fds() == fds


def test_close_returns_at_once_and_leaks_no_pipe():
    fds = _open_fds()
    pool = _pool(n_jobs=2)
    handles = [pool.submit(("echo", i)) for i in range(2)]
    _results(pool, 2)
    assert len({h.pid for h in handles}) == 2

    begin = time.monotonic()
    pool.close()
    assert time.monotonic() - begin < _EXIT_GRACE  # the idle workers exited on request
    assert not any(psutil.pid_exists(h.pid) for h in handles)
    assert _open_fds() == fds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_its_driver(tmp_path):
    started = tmp_path / "started"
    driver_code = (
        "import sys, threading\n"
        "from tests.search.test_workers import _pool\n"
        "pool = _pool()\n"
        "print(pool.submit(('hang', sys.argv[1])).pid, flush=True)\n"
        "threading.Event().wait()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    worker_pid = None
    with subprocess.Popen(
        [sys.executable, "-c", driver_code, str(started)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as driver:
        try:
            assert driver.stdout is not None
            worker_pid = int(driver.stdout.readline())
            _await(started.exists, what="the worker's job to start")  # so its prctl has run
            driver.kill()
            driver.wait()
            _await(lambda: _gone(worker_pid), what="the orphaned worker to die")
        finally:
            driver.kill()
            if worker_pid is not None and not _gone(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)

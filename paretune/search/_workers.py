"""A pool of worker processes that loses nothing: one death, hang or signal costs one job.

Each slot of :class:`WorkerPool` is one ``spawn`` process with its own pipe. The driver waits
on the pipes and the process sentinels together, so it sees a result or a death at once and
can tell exactly whose job a dead worker took with it: only that job fails, as *lost*. Workers
ignore SIGINT and SIGTERM (a stop signal sent to the whole process group is the driver's to
handle: it re-queues running trials instead of recording them as failed) and die with the
driver (``PR_SET_PDEATHSIG`` on Linux), so a ``kill -9`` of the driver leaves no orphan
training on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["Handle", "WorkerPool"]

_log = logging.getLogger(__name__)

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
# linux/prctl.h
_PR_SET_PDEATHSIG = 1
# Seconds a worker that should be exiting on its own (an idle one told to stop, one whose pipe
# closed) gets before SIGKILL: its interpreter shutdown runs the objective's atexit hooks.
_EXIT_GRACE = 3.0
# Seconds to wait for a SIGKILLed worker to be reaped. One in uninterruptible sleep (a hung
# file system or GPU driver) can take longer; it is reaped later instead of blocking the driver.
_KILL_WAIT = 1.0


@dataclass(eq=False)
class Handle:
    """A job submitted to a :class:`WorkerPool`; compared and hashed by identity.

    Attributes:
        job: The job as submitted.
        started: ``time.monotonic()`` when the worker began the job, once
            :meth:`WorkerPool.wait` has seen the worker's word that it began; ``None`` until
            then. A worker started for the job announces it only after its start-up (importing
            what ``target`` needs), so a timeout measured from it does not count the start-up.
        pid: The worker process running the job.
    """

    job: Any
    started: float | None
    pid: int


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection  # the driver's end of the worker's pipe
    handle: Handle | None = None  # the job it runs; None while idle


class WorkerPool:
    """Runs jobs in up to ``n_jobs`` worker processes started with ``spawn``, one job each.

    Lifecycle:

    1. :meth:`submit` sends a job to an idle worker, starting one lazily (the first time, after
       a :meth:`cancel`, or in place of one that died while idle) while :meth:`free_slots` is
       positive. A worker serves many jobs, so what ``target`` caches per process (imported
       torch, a loaded model) is reused.
    2. :meth:`wait` returns the jobs finished since the last call as ``(handle, outcome)``.
       ``outcome`` is what ``target(job)`` returned; or ``error(message)`` when ``target``
       raised (the message is the traceback) or its result could not be sent back; or
       ``lost(message)`` when the worker died while running the job (the message names the exit
       code or the signal). A death costs only that job; the other workers go on.
    3. :meth:`cancel` SIGKILLs the worker running one job (a trial past its timeout); the job is
       never reported and its slot gets a fresh worker at the next :meth:`submit`.
    4. :meth:`close` (a finished search) lets idle workers exit and kills busy ones;
       :meth:`kill` (a stopped search) kills every worker at once. Either leaves no process,
       zombie or open pipe behind, and a later :meth:`submit` starts workers again. A pool
       garbage-collected or left open at interpreter exit kills its workers.

    Workers ignore SIGINT and SIGTERM from the moment they start, so a stop signal sent to the
    whole process group (Ctrl-C, ``timeout``, Slurm, systemd, Kubernetes) reaches only the
    driver, which decides what happens to running jobs. On Linux the kernel SIGKILLs a worker
    when the driver dies. Before loading ``target`` a worker sets ``OMP_NUM_THREADS`` (and
    MKL's and OpenBLAS's) to ``threads``, so that ``n_jobs`` workers share the machine's cores;
    torch, if something imported it earlier, is set to ``threads`` threads directly.

    Call it from one thread, which outlives the pool: it is not thread-safe, and on Linux a
    worker is killed when the thread whose :meth:`submit` started it exits.

    Args:
        n_jobs: How many jobs run at once (one worker process each).
        threads: CPU threads per worker process.
        target: Runs one job in a worker as ``target(job) -> outcome``; picklable (a
            module-level function), so are jobs and outcomes.
        lost: Builds the outcome of a job whose worker died, from a message
            ``"the worker process died (pid ..., exit code ...)"``.
        error: Builds the outcome of a job whose ``target`` raised (from the traceback) or
            whose result could not be sent to the driver (from the reason).

    Raises:
        ValueError: ``n_jobs`` or ``threads`` is below 1.
        TypeError: ``target`` cannot be pickled.
    """

    def __init__(
        self,
        *,
        n_jobs: int,
        threads: int,
        target: Callable[[Any], Any],
        lost: Callable[[str], Any],
        error: Callable[[str], Any],
    ) -> None:
        if n_jobs < 1:
            raise ValueError(f"`n_jobs >= 1` must hold, but got n_jobs={n_jobs}.")
        if threads < 1:
            raise ValueError(f"`threads >= 1` must hold, but got threads={threads}.")
        try:
            # Pickled here, unpickled in the worker only after the thread variables are set,
            # so the imports of target's module (torch) see them.
            self._target = pickle.dumps(target)
        except Exception as err:
            raise TypeError(
                f"`target` must be picklable (a module-level function), but got {target!r}: {err}"
            ) from err
        self.n_jobs = n_jobs
        self.threads = threads
        self._lost = lost
        self._error = error
        self._context = multiprocessing.get_context("spawn")
        # Mutated in place, never rebound: the finaliser below holds the same lists.
        self._workers: list[_Worker] = []
        self._dying: list[BaseProcess] = []  # SIGKILLed, not reaped yet
        # Runs when the pool is garbage-collected, and at interpreter exit before
        # multiprocessing joins its children (a join that would wait forever on a worker).
        multiprocessing.util.Finalize(
            self, _kill_all, args=(self._workers, self._dying), exitpriority=10
        )

    def free_slots(self) -> int:
        """How many more jobs :meth:`submit` accepts now."""
        return self.n_jobs - sum(w.handle is not None for w in self._workers)

    def running(self) -> list[Handle]:
        """The jobs submitted and not yet reported by :meth:`wait` (nor cancelled)."""
        return [w.handle for w in self._workers if w.handle is not None]

    def submit(self, job: Any) -> Handle:
        """Start ``job`` in an idle worker, starting a worker if none is idle.

        Raises:
            RuntimeError: No slot is free (:meth:`free_slots` is 0).
            Exception: ``job`` cannot be pickled (nothing was submitted then).
        """
        if self.free_slots() < 1:
            raise RuntimeError(
                f"no free slot: all {self.n_jobs} workers are busy; call wait() first"
            )
        self._reap_dying()
        message = _dumps(("job", job))  # fails before any worker is used
        for attempt in range(2):
            worker = self._idle_worker()
            try:
                worker.conn.send_bytes(message)
            except OSError:
                # It died after the liveness check; a second, fresh worker is not retried.
                self._retire(worker, kill=True)
                if attempt:
                    raise
                continue
            worker.handle = Handle(job=job, started=None, pid=_pid(worker))
            return worker.handle
        raise AssertionError("unreachable")

    def wait(self, timeout: float) -> list[tuple[Handle, Any]]:
        """The jobs finished since the last call, waiting up to ``timeout`` seconds for one.

        Returns at once when a job has finished or none is running.

        Returns:
            ``(handle, outcome)`` pairs: ``target``'s result; ``error(...)`` when ``target``
            raised or its result could not be sent back; ``lost(...)`` when the worker died,
            with its exit code or signal in the message.
        """
        deadline = time.monotonic() + timeout
        while True:
            busy = [w for w in self._workers if w.handle is not None]
            if not busy:
                return []
            watched = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            left = max(0.0, deadline - time.monotonic())
            ready = set(multiprocessing.connection.wait(watched, left))
            done = [
                self._collect(w) for w in busy if w.conn in ready or w.process.sentinel in ready
            ]
            finished = [pair for pair in done if pair is not None]
            # Only words that jobs began: wait on for an end, until the deadline.
            if finished or time.monotonic() >= deadline:
                return finished

    def cancel(self, handle: Handle) -> None:
        """SIGKILL the worker running ``handle``; its job is not reported by :meth:`wait`.

        A handle already reported (or cancelled) is ignored. The slot gets a fresh worker at
        the next :meth:`submit`.
        """
        for worker in self._workers:
            if worker.handle is handle:
                self._retire(worker, kill=True)
                return

    def kill(self) -> None:
        """SIGKILL every worker now; running jobs are dropped without being reported."""
        _kill_all(self._workers, self._dying)

    def close(self) -> None:
        """Let idle workers exit, kill busy ones (their jobs are dropped), and reap them all.

        Returns as soon as idle workers have exited; one that takes longer than a few seconds
        (an objective's atexit hook that hangs) is killed.
        """
        workers = list(self._workers)
        self._workers.clear()
        for worker in workers:
            if worker.handle is None:
                with contextlib.suppress(OSError):  # an idle worker that died meanwhile
                    worker.conn.send_bytes(_dumps(("stop", None)))
            else:
                worker.process.kill()
            worker.conn.close()
        processes = [w.process for w in workers]
        left = _reap(processes, time.monotonic() + _EXIT_GRACE)
        for process in left:
            _log.warning(
                "worker process %s did not exit within %.0f s; killed", process.pid, _EXIT_GRACE
            )
            process.kill()
        self._dying.extend(left)
        _kill_all(self._workers, self._dying)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _idle_worker(self) -> _Worker:
        """An idle, live worker: a running one if any, else a new one."""
        for worker in [w for w in self._workers if w.handle is None]:
            # The sentinel is ready from the moment the process ends, reaped or not.
            ended = multiprocessing.connection.wait([worker.process.sentinel], timeout=0)
            if worker.process.exitcode is None and not ended:
                return worker
            # Died between jobs (killed from outside, out of memory): it held no job.
            _log.warning(
                "worker process %s died while idle (%s); starting another",
                worker.process.pid,
                _describe_exit(worker.process.exitcode),
            )
            self._retire(worker, kill=False)
        return self._start()

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(theirs, self._target, self.threads, os.getpid()),
            name="paretune-worker",
            # Not a daemon: objectives may start processes of their own (DataLoader workers).
            daemon=False,
        )
        try:
            with _stop_signals_blocked():
                # The worker inherits the blocked mask, so a stop signal sent to the process
                # group while it boots waits until it ignores them, instead of killing it.
                # Here the signal waits a few milliseconds for the driver, and is not lost.
                process.start()
                worker = _Worker(process, ours)
                self._workers.append(worker)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker's copy only: its death then reads as EOF here
        return worker

    def _collect(self, worker: _Worker) -> tuple[Handle, Any] | None:
        """The handle and outcome of a worker whose pipe or sentinel is ready, or ``None``: it
        only said that it began its job."""
        handle = worker.handle
        assert handle is not None  # only busy workers are collected
        # A reply is read even when the sentinel fired too: the job finished, then the worker
        # died (its death is noticed at the next submit).
        while worker.conn.poll():
            try:
                kind, value = worker.conn.recv()
            except (EOFError, OSError):
                break  # the pipe closed without a (whole) reply: the worker died
            except Exception as err:  # a result that pickled in the worker but cannot load here
                worker.handle = None
                return handle, self._error(f"the job's result could not be read: {err!r}")
            if kind == "started":
                handle.started = time.monotonic()
                continue
            worker.handle = None
            return handle, value if kind == "done" else self._error(value)
        else:
            if not multiprocessing.connection.wait([worker.process.sentinel], timeout=0):
                return None  # alive, and nothing more to read
        exitcode = self._retire(worker, kill=False)
        message = f"the worker process died (pid {handle.pid}, {_describe_exit(exitcode)})"
        _log.warning("%s", message)
        return handle, self._lost(message)

    def _retire(self, worker: _Worker, *, kill: bool) -> int | None:
        """Forget ``worker``: close its pipe, SIGKILL it if asked or if it does not exit, reap it.

        Returns:
            Its exit code (negative: the signal that killed it) before any SIGKILL sent here;
            ``None`` when ``kill`` was asked or it had not exited within the grace period.
        """
        self._workers.remove(worker)
        worker.conn.close()
        process = worker.process
        exitcode = None
        if not kill:
            process.join(_EXIT_GRACE)  # its sentinel fired or its pipe closed: it is exiting
            exitcode = process.exitcode
        if process.exitcode is None:
            process.kill()
        self._dying.append(process)
        self._dying[:] = _reap(self._dying, time.monotonic() + _KILL_WAIT)
        return exitcode

    def _reap_dying(self) -> None:
        self._dying[:] = _reap(self._dying, time.monotonic())


def _pid(worker: _Worker) -> int:
    pid = worker.process.pid
    assert pid is not None  # started
    return pid


def _reap(processes: list[BaseProcess], deadline: float) -> list[BaseProcess]:
    """Join ``processes`` until ``deadline``, release those that exited; returns the others."""
    left = []
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            left.append(process)
        else:
            process.close()  # its sentinel's file descriptor
    return left


def _kill_all(workers: list[_Worker], dying: list[BaseProcess]) -> None:
    """SIGKILL and reap every worker (the pool's finaliser: it must not reference the pool)."""
    for worker in workers:
        worker.process.kill()
        worker.conn.close()
    dying.extend(w.process for w in workers)
    workers.clear()
    dying[:] = _reap(dying, time.monotonic() + _KILL_WAIT)
    for process in dying:
        _log.warning("worker process %s is still exiting after SIGKILL", process.pid)


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    # spawn starts multiprocessing's resource tracker the first time, and doing so unblocks
    # SIGINT/SIGTERM in this thread; started first, it leaves the mask alone.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == getattr(signal, "SIGKILL", None):
        return f"killed by {name}, for example by the out-of-memory killer"
    return f"killed by {name}"


# --- the worker side ---------------------------------------------------------------------


def _serve(conn: Connection, target: bytes, threads: int, driver_pid: int) -> None:
    """A worker's life: run the jobs received on ``conn`` until told to stop or orphaned."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        # Blocked by the driver around the start; a signal that arrived meanwhile is discarded.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with(driver_pid)
    _limit_threads(threads)
    run: Callable[[Any], Any]
    try:
        run = pickle.loads(target)
    except BaseException:
        # Every job fails with the reason, rather than the worker dying at each start (which
        # would read as a crash of the job).
        run = functools.partial(
            _fail, f"the worker could not load its target:\n{traceback.format_exc()}"
        )

    while True:
        try:
            kind, job = conn.recv()
        except (EOFError, OSError):
            return  # the driver closed the pipe or is gone
        except Exception:  # a job that does not load here (a class the worker cannot import)
            reply = ("error", f"the worker could not read the job:\n{traceback.format_exc()}")
        else:
            if kind == "stop":
                return
            try:
                # Its start-up is over: the driver measures a timeout from here.
                conn.send_bytes(_dumps(("started", None)))
            except OSError:
                return  # the driver is gone
            reply = _run(run, job)
            del job  # not kept alive while idle
        try:
            data = _dumps(reply)
        except Exception as err:
            data = _dumps(("error", f"the job's result could not be sent to the driver: {err!r}"))
        del reply
        try:
            conn.send_bytes(data)
        except OSError:
            return  # the driver is gone


def _run(target: Callable[[Any], Any], job: Any) -> tuple[str, Any]:
    try:
        return "done", target(job)
    except BaseException:  # SystemExit, KeyboardInterrupt too: the worker serves on
        return "error", traceback.format_exc()


def _fail(reason: str, job: Any) -> NoReturn:
    raise RuntimeError(reason)


def _dumps(message: tuple[str, Any]) -> memoryview:
    # Pickled whole before anything is written, so a failure leaves the pipe clean.
    return ForkingPickler.dumps(message)


def _die_with(driver_pid: int) -> None:
    """Make the kernel SIGKILL this process when the driver dies (Linux, best effort)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))
    # The driver may have died before the prctl: then this process was already re-parented.
    if os.getppid() != driver_pid:
        os._exit(1)


def _limit_threads(threads: int) -> None:
    # Read by torch's OpenMP and the BLAS libraries when they are first loaded in this process.
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    # spawn re-imports the driver's main module before this runs; it may have loaded torch.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)

"""Running a whole search from a spec: open the store, pick the controller and runner, run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretune.search._controllers import make_pruner, make_sampler
from paretune.search._local import LocalRunner
from paretune.search._runner import Runner, SearchInterrupted

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.spec import SearchSpec
    from paretune.trials_store import TrialsStore

__all__ = ["SearchResult", "make_runner", "open_store", "run_search"]


@dataclass
class SearchResult:
    """What a finished (or interrupted) search left behind."""

    store: TrialsStore
    pareto: list[FrozenTrial]
    counts: dict[str, int]
    recovered: list[int]
    seconds: float
    interrupted: bool = False


def make_runner(spec: SearchSpec) -> Runner:
    """The runner the spec's ``runner`` section describes."""
    r = spec.runner
    if r.type == "local":
        return LocalRunner(n_jobs=r.n_jobs, threads=r.threads)
    if r.type == "ray":
        from paretune.search._ray import RayRunner  # Ray is imported only when used

        return RayRunner(r)
    raise AssertionError(f"unhandled runner type {r.type!r}")  # the spec model forbids others


def open_store(spec: SearchSpec, *, create: bool = True, mlflow: bool = True) -> TrialsStore:
    """The spec's study with its controller attached (seeded for where the study stands)."""
    from paretune.trials_store import TrialsStore

    store = TrialsStore(spec, create=create, mlflow=mlflow)
    store.study.sampler = make_sampler(spec, n_existing_trials=len(store.study.trials))
    store.study.pruner = make_pruner(spec.pruner.name, spec.pruner.options)
    return store


def run_search(
    spec: SearchSpec,
    *,
    resume: bool = False,
    progress: Any = None,
    on_start: Any = None,
) -> SearchResult:
    """Run (or continue) the search a spec describes until its budget is spent.

    A study that already exists is continued: trials left RUNNING by a dead process are failed
    and queued again, completed trials are kept, and the budget counts what is already done.

    Args:
        spec: The validated spec.
        resume: Require the study to exist already.
        progress: Passed to the runner (see :meth:`Runner.run`).
        on_start: Called with the store once it is open and recovered (the CLI prints where
            things are and sizes its progress bar).

    Returns:
        The result; ``interrupted`` is set if the search was stopped by Ctrl-C/SIGTERM.
    """
    t0 = time.monotonic()
    store = open_store(spec, create=not resume)
    recovered = store.start()
    if on_start is not None:
        on_start(store, recovered)
    interrupted = False
    status = "FAILED"  # unless the runner returns or is stopped
    try:
        make_runner(spec).run(store, progress=progress)
        status = "FINISHED"
    except SearchInterrupted:
        interrupted, status = True, "KILLED"
    finally:
        store.close(status=status)
    return SearchResult(
        store=store,
        pareto=store.pareto_trials(),
        counts=store.counts(),
        recovered=recovered,
        seconds=time.monotonic() - t0,
        interrupted=interrupted,
    )

"""The runner extension point and the evaluation of one trial, shared by every runner."""

from __future__ import annotations

import abc
import logging
import math
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretune._errors import SearchFailed

if TYPE_CHECKING:
    from paretune.trials_store import TrialsStore

__all__ = [
    "FailureStreak",
    "Job",
    "Outcome",
    "Runner",
    "SearchInterrupted",
    "evaluate",
    "handle_stop_signal",
    "stop_requested",
]

_log = logging.getLogger(__name__)
_stop = threading.Event()
_objective_in_main_thread = False


def handle_stop_signal(signum: int, frame: Any) -> None:
    """A handler for SIGINT/SIGTERM that stops a search cleanly.

    It records the request, which runners check between trials and while they wait for
    workers, so bookkeeping is never cut in half. Only while an objective runs in the main
    thread, or on a second signal, does it also raise ``KeyboardInterrupt``. (Python's default
    handler raises anywhere, and an interrupt raised inside a finaliser is swallowed.)
    """
    if _stop.is_set() or _objective_in_main_thread:
        _stop.set()
        raise KeyboardInterrupt  # a second signal stops at once, wherever the driver is
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear_stop_request() -> None:
    _stop.clear()


class SearchInterrupted(Exception):
    """The search was stopped (Ctrl-C, SIGTERM); running trials were failed and re-queued."""

    def __init__(self, requeued: list[int]) -> None:
        self.requeued = requeued
        super().__init__(f"interrupted; trials {requeued} were queued again")


class Runner(abc.ABC):
    """Runs the trials of a study until its budget is spent.

    Lifecycle: :func:`paretune.search.run_search` opens the :class:`TrialsStore` (recovering
    stale trials), then calls :meth:`run` once. ``run`` asks the store for trials, evaluates
    them (here, in worker processes, on a Ray cluster), tells the store each outcome, and
    returns when the budget is spent. On ``KeyboardInterrupt`` it fails and re-queues the trials
    still running (``store.fail_interrupted``) and raises :class:`SearchInterrupted`.
    """

    @abc.abstractmethod
    def run(self, store: TrialsStore, *, progress: Any = None) -> None:
        """Evaluate trials until ``store``'s budget is spent.

        Args:
            store: The study to fill.
            progress: An object with ``update(store, frozen_trial)``, called after every
                finished trial (the CLI's progress bar), or ``None``.
        """


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a worker needs to evaluate one trial: plain data, so it pickles."""

    objective_type: str
    settings: Mapping[str, Any]
    metric_names: tuple[str, ...]
    constraint_metrics: tuple[str, ...] = ()
    trial_number: int
    trial_id: int
    params: Mapping[str, Any]
    seed: int
    storage_url: str | None = None
    study_name: str | None = None
    pruner: tuple[str, Mapping[str, Any]] = ("none", {})
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None


@dataclass
class Outcome:
    """What came of a job: ``state`` is COMPLETE, PRUNED or FAIL.

    ``last_step`` is the step of the objective's last ``ctx.report`` (``None``: it reported
    nothing); the final metrics are logged to MLflow after it. ``lost``: a FAIL because the
    worker process running it (or another one of its pool) died, so the job itself may not be
    at fault.
    """

    state: str
    metrics: dict[str, float] | None = None
    error: str | None = None
    last_step: int | None = None
    lost: bool = False


_objectives: dict[tuple[str, str], Any] = {}
_clients: dict[str, Any] = {}
_studies: dict[str, Any] = {}


def _objective(job: Job) -> Any:
    import json

    from paretune.objectives import build_objective

    key = (job.objective_type, json.dumps(job.settings, sort_keys=True, default=str))
    if key not in _objectives:
        _objectives[key] = build_objective(job.objective_type, job.settings)
    return _objectives[key]


def _connect_mlflow(job: Job, ctx: Any) -> None:
    """Reports become stepwise metrics of the trial's MLflow run."""
    if not (job.tracking_uri and job.mlflow_run_id):
        return
    from paretune.trials_store._mlflow import MlflowLink, _quiet_mlflow_logs

    if job.tracking_uri not in _clients:
        from mlflow import MlflowClient

        _quiet_mlflow_logs()
        _clients[job.tracking_uri] = MlflowClient(tracking_uri=job.tracking_uri)
    client = _clients[job.tracking_uri]
    run_id = job.mlflow_run_id
    logged: set[tuple[str, int]] | None = None

    def already_logged() -> set[tuple[str, int]]:
        # A retried attempt (Ray after a worker died) reports the steps of the first attempt
        # again: they are logged once. Looked up at the first report, so it costs nothing to
        # objectives that report nothing.
        run = client.get_run(run_id)
        history = client.get_metric_history
        return {(key, m.step) for key in run.data.metrics for m in history(run_id, key)}

    def to_mlflow(step: int, metrics: dict[str, float]) -> None:
        nonlocal logged
        try:
            if logged is None:
                logged = already_logged()
            fresh = {k: v for k, v in metrics.items() if (k, step) not in logged}
            if not fresh:
                return
            MlflowLink.log_batch_to(client, run_id, fresh, step=step)
        except Exception as err:  # tracking is best-effort: it must never fail a trial
            _log.warning(
                "could not log step %d of trial %d to MLflow: %s", step, job.trial_number, err
            )

    ctx.add_sink(to_mlflow)


def _connect_optuna(job: Job, ctx: Any) -> None:
    """One optimised metric: reports become the trial's intermediate values in the study, and
    ``ctx.should_prune()`` asks the spec's pruner (Optuna prunes single-objective studies)."""
    if not (job.storage_url and job.study_name and len(job.metric_names) == 1):
        return
    import optuna

    from paretune.search._controllers import make_pruner
    from paretune.trials_store._store import _quiet, make_storage

    key = f"{job.storage_url}#{job.study_name}#{job.pruner}"
    if key not in _studies:
        pruner = make_pruner(job.pruner[0], dict(job.pruner[1]))
        with _quiet():
            _studies[key] = optuna.load_study(
                study_name=job.study_name, storage=make_storage(job.storage_url), pruner=pruner
            )
    trial = optuna.trial.Trial(_studies[key], job.trial_id)
    name = job.metric_names[0]

    def to_optuna(step: int, metrics: dict[str, float]) -> None:
        if name in metrics:
            trial.report(metrics[name], step)

    ctx.add_sink(to_optuna)
    ctx.set_pruner(trial.should_prune)


class FailureStreak:
    """Counts the trials that failed in a row (in the order their outcomes are recorded).

    Args:
        limit: ``budget.max_failures_in_a_row``; ``None`` never stops a search.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.last_error: str | None = None
        self.last_trial: int | None = None

    def update(self, number: int, outcome: Outcome) -> None:
        if outcome.state == "FAIL":
            self.count += 1
            self.last_error, self.last_trial = outcome.error, number
        else:
            self.count = 0

    @property
    def reached(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def error(self) -> SearchFailed:
        lines = (self.last_error or "no error message").strip().splitlines() or ["?"]
        return SearchFailed(
            f"stopped: {self.count} trials failed in a row (budget.max_failures_in_a_row = "
            f"{self.limit}); the last, trial {self.last_trial}, with: {lines[-1][:500]}\n"
            "The failed trials stay in the study with their errors (`paretune export` shows "
            "them); fix the cause, then continue with `paretune resume` (failed trials count "
            "against the trial budget)."
        )


def record_outcome(store: TrialsStore, pending: Any, outcome: Outcome, progress: Any) -> Any:
    """Tell the store how a trial ended, then the progress display; returns the frozen trial.

    The final metrics are logged to MLflow one step after the objective's last report.
    """
    from optuna.trial import TrialState

    frozen = store.tell(
        pending,
        state=TrialState[outcome.state],
        metrics=outcome.metrics,
        error=outcome.error,
        final_step=0 if outcome.last_step is None else outcome.last_step + 1,
    )
    if progress is not None:
        progress.update(store, frozen)
    return frozen


def check_metrics(
    result: Any, names: tuple[str, ...], constraint_metrics: tuple[str, ...] = ()
) -> dict[str, float]:
    """The objective's return value as ``{name: float}``, or a ``ValueError`` saying why not.

    ``names`` (the optimised metrics) must be present and finite; ``constraint_metrics`` must
    be present (a constraint on a metric the objective never returns is a spec mistake that
    would otherwise make every trial silently infeasible).
    """
    if not isinstance(result, Mapping):
        raise ValueError(
            f"an objective must return a dict of metrics {list(names)}, but returned "
            f"{type(result).__name__}"
        )
    missing = [n for n in names if n not in result]
    if missing:
        raise ValueError(
            f"the objective's result lacks metric(s) {missing}; it returned keys {sorted(result)}"
        )
    unconstrained = [n for n in constraint_metrics if n not in result]
    if unconstrained:
        raise ValueError(
            f"the spec constrains metric(s) {unconstrained}, which the objective did not "
            f"return; it returned keys {sorted(result)}"
        )
    out: dict[str, float] = {}
    for k, v in result.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"metric {k!r} must be a number, but got {v!r}") from None
    bad = {n: out[n] for n in names if not math.isfinite(out[n])}
    if bad:
        raise ValueError(f"optimised metrics must be finite, but got {bad}")
    return out


def evaluate(job: Job, *, sinks: Sequence[Callable[[int, dict[str, float]], None]] = ()) -> Outcome:
    """Run one trial's objective (in the driver or a worker) and classify the outcome.

    Exceptions of the objective become FAIL outcomes with the traceback; ``KeyboardInterrupt``
    propagates (the runner handles it).

    Args:
        job: The trial to evaluate.
        sinks: More receivers of ``ctx.report(step, metrics)`` besides MLflow and Optuna (the
            Ray runner streams reports to Tune).
    """
    import optuna

    from paretune.objectives import TrialContext

    global _objective_in_main_thread

    ctx = TrialContext(trial_number=job.trial_number, seed=job.seed, settings=dict(job.settings))
    try:
        _connect_mlflow(job, ctx)
        _connect_optuna(job, ctx)
        for sink in sinks:
            ctx.add_sink(sink)
        objective = _objective(job)
        _objective_in_main_thread = threading.current_thread() is threading.main_thread()
        try:
            if _objective_in_main_thread and _stop.is_set():
                raise KeyboardInterrupt  # a stop arrived while the trial was being set up
            result = objective(dict(job.params), ctx)
        finally:
            _objective_in_main_thread = False
        metrics = check_metrics(result, job.metric_names, job.constraint_metrics)
    except optuna.TrialPruned:  # paretune's TrialPruned is a subclass
        step, last = ctx.history[-1] if ctx.history else (None, None)
        return Outcome("PRUNED", metrics=last, last_step=step)
    except KeyboardInterrupt:
        raise
    except BaseException:  # SystemExit from an argparse-using script is a failed trial too
        return Outcome("FAIL", error=traceback.format_exc(), last_step=_last_step(ctx))
    return Outcome("COMPLETE", metrics=metrics, last_step=_last_step(ctx))


def _last_step(ctx: Any) -> int | None:
    return ctx.history[-1][0] if ctx.history else None

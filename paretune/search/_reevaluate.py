"""Re-evaluating chosen trials with several seeds, at the search's or at full fidelity.

A search ranks candidates by one cheap, noisy evaluation each. Before anyone believes its Pareto
front, the front (and the baselines it is compared with) are trained again with several seeds,
usually at full fidelity, as AutoPEFT did: :func:`reevaluate` does that and reports the mean
and the spread of every metric.

Each evaluation is a trial of a companion Optuna study in the same storage, named
``<study>.reevaluate`` (``<study>.reevaluate-full`` at full fidelity), with the source trial's
params and the user attributes ``paretune.source_trial`` and ``paretune.seed``; its MLflow run
is nested under the study's parent run (tags ``paretune.reevaluation_of``, ``paretune.seed``,
``paretune.fidelity``). Evaluations that completed are kept: running the command again after a
crash or Ctrl-C does only what is missing, and asking for more seeds adds only the new ones.

Evaluations run one at a time in this process, or ``n_jobs`` at a time in spawned worker
processes (the spec's local runner settings by default) while this process keeps the records.
Seeds are ``0, 1, ..., n - 1`` for every candidate, so candidates are compared on the same
seeds. Full fidelity builds the objective with the setting ``use_full_fidelity: true``; an
objective type supports it by accepting that setting (``finetune`` does).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError
from paretune.search._runner import (
    Job,
    Outcome,
    clear_stop_request,
    evaluate,
    stop_requested,
)
from paretune.trials_store._mlflow import CHILD_RUN_ATTR, PARENT_RUN_ATTR
from paretune.trials_store._store import (
    BASELINE_ATTR,
    ERROR_ATTR,
    LABEL_ATTR,
    METRICS_ATTR,
    _is_orphaned,
    _quiet,
)

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from paretune.spec import SearchSpec
    from paretune.trials_store import TrialsStore

__all__ = [
    "Reevaluation",
    "dominates",
    "reevaluate",
    "reevaluation_study_name",
    "reevaluation_workers",
    "select_trials",
]

_log = logging.getLogger(__name__)

SOURCE_ATTR = "paretune.source_trial"
REEVAL_SEED_ATTR = "paretune.seed"
FULL_FIDELITY_SETTING = "use_full_fidelity"


@dataclass
class Reevaluation:
    """The re-evaluations of one trial of the study.

    Attributes:
        source: The trial re-evaluated (its params and search-time values).
        label: Its baseline label, if it was an enqueued baseline with one.
        baseline: Whether it was enqueued by the spec.
        runs: ``seed -> metrics`` of the evaluations that completed.
        failed: ``seed -> error`` of those that failed.
    """

    source: FrozenTrial
    label: str | None
    baseline: bool
    runs: dict[int, dict[str, float]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or f"trial {self.source.number}"

    def values(self, metric: str) -> list[float]:
        return [m[metric] for _, m in sorted(self.runs.items()) if metric in m]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """The sample standard deviation over seeds (``nan`` with fewer than two)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else math.nan


def reevaluation_study_name(study: str, *, full_fidelity: bool) -> str:
    return f"{study}.reevaluate" + ("-full" if full_fidelity else "")


def select_trials(
    store: TrialsStore,
    *,
    numbers: Sequence[int] = (),
    pareto: bool = False,
    baselines: bool = False,
    pareto_tolerance: Mapping[str, float] | None = None,
) -> list[FrozenTrial]:
    """The COMPLETE trials chosen by number, by being on the Pareto front, or by being baselines.

    With ``pareto_tolerance`` (metric name to margin), ``pareto`` also takes the near-front
    trials that no trial beats by at least the margins in every metric
    (:meth:`TrialsStore.pareto_trials`).

    Raises:
        ConfigError: Nothing was asked for, a number is not a COMPLETE trial of the study, or
            the selection is empty.
    """
    from optuna.trial import TrialState

    if not (numbers or pareto or baselines):
        raise ConfigError("say which trials to re-evaluate: --pareto, --baselines or --trials")
    complete = {
        t.number: t for t in store.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    chosen: dict[int, FrozenTrial] = {}
    missing = [n for n in numbers if n not in complete]
    if missing:
        raise ConfigError(
            f"trial(s) {missing} of study {store.spec.study!r} are not COMPLETE (or do not "
            f"exist); complete trials: {_ranges(sorted(complete))}"
        )
    for n in numbers:
        chosen[n] = complete[n]
    if pareto:
        for t in store.pareto_trials(pareto_tolerance):
            chosen[t.number] = t
    if baselines:
        for t in complete.values():
            if t.user_attrs.get(BASELINE_ATTR):
                chosen[t.number] = t
    if not chosen:
        raise ConfigError(
            f"nothing to re-evaluate: study {store.spec.study!r} has no "
            + ("Pareto-optimal or " if pareto else "")
            + ("baseline " if baselines else "")
            + "COMPLETE trials"
        )
    return [chosen[n] for n in sorted(chosen)]


ProgressCallback = Callable[[int, int, "Reevaluation", int, Outcome, float], None]


def reevaluate(
    spec: SearchSpec,
    *,
    numbers: Sequence[int] = (),
    pareto: bool = False,
    baselines: bool = False,
    pareto_tolerance: Mapping[str, float] | None = None,
    seeds: int = 3,
    full_fidelity: bool = False,
    n_jobs: int | None = None,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[Reevaluation]:
    """Evaluate chosen trials of a finished (or running) search again, with ``seeds`` seeds.

    Args:
        spec: The search's spec (its study must exist).
        numbers: Trial numbers to re-evaluate.
        pareto: Add the study's Pareto-optimal trials.
        baselines: Add the trials the spec enqueued (baselines).
        pareto_tolerance: With ``pareto``, also the near-front trials: metric name to a
            margin in its units; a trial is left out only when another is better by at least
            the margins in every metric. A search scores each candidate once, so trials
            within the noise of the front (e.g. one standard error of the accuracy) may be
            the better ones at full fidelity.
        seeds: Seeds per trial (``0 .. seeds - 1``).
        full_fidelity: Build the objective with ``use_full_fidelity: true``.
        n_jobs: Evaluations at once: 1 runs them in this process, more in that many spawned
            worker processes (:class:`~paretune.search._local.WorkerPool`; this process
            keeps the records). Default: the spec's ``runner.n_jobs`` for a local runner,
            else 1.
        threads: CPU threads per worker process (``n_jobs > 1``). Default: the spec's
            ``runner.threads`` for a local runner, else this machine's CPUs shared evenly.
        progress: Called after each evaluation as
            ``progress(done, total, reevaluation, seed, outcome, seconds)``.

    Returns:
        One :class:`Reevaluation` per chosen trial, in trial order, with every seed evaluated
        now or before.

    Raises:
        ConfigError: Bad arguments, or an objective without a full-fidelity mode.
        StudyError: The study does not exist.
        KeyboardInterrupt: Stopped; the evaluations that were running are failed and redone by
            the next call (those that had finished are kept).
    """
    import optuna
    from optuna.trial import TrialState

    from paretune.objectives import build_objective
    from paretune.trials_store import TrialsStore

    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"`seeds` must be an integer >= 1, but got {seeds!r}")
    n_jobs, threads = reevaluation_workers(spec, n_jobs, threads)
    clear_stop_request()  # a stop of an earlier search or re-evaluation in this process
    settings = dict(spec.objective.settings)
    if full_fidelity:
        settings[FULL_FIDELITY_SETTING] = True
        try:
            build_objective(spec.objective.type, settings)
        except ConfigError as err:
            if FULL_FIDELITY_SETTING in str(err):
                raise ConfigError(
                    f"objective type {spec.objective.type!r} has no full-fidelity mode (it "
                    f"does not accept the setting `{FULL_FIDELITY_SETTING}`); re-evaluate "
                    "without --full-fidelity"
                ) from None
            raise

    store = TrialsStore(spec, create=False, mlflow=True)
    chosen = select_trials(
        store,
        numbers=numbers,
        pareto=pareto,
        baselines=baselines,
        pareto_tolerance=pareto_tolerance,
    )
    with _quiet():
        companion = optuna.create_study(
            storage=store.storage,
            study_name=reevaluation_study_name(spec.study, full_fidelity=full_fidelity),
            directions=spec.directions,
            sampler=optuna.samplers.RandomSampler(seed=0),
            load_if_exists=True,
        )
        companion.set_metric_names([m.name for m in spec.metrics])
        companion.set_user_attr("paretune.source_study", spec.study)

    results = {
        t.number: Reevaluation(
            t, t.user_attrs.get(LABEL_ATTR), bool(t.user_attrs.get(BASELINE_ATTR))
        )
        for t in chosen
    }
    todo: list[tuple[Reevaluation, int]] = []
    for number, result in results.items():
        done = _earlier(companion, number)
        for seed in range(seeds):
            previous = done.get(seed)
            if previous is not None and previous.state == TrialState.COMPLETE:
                result.runs[seed] = dict(previous.user_attrs.get(METRICS_ATTR, {}))
            elif previous is not None and ERROR_ATTR in previous.user_attrs:
                result.failed[seed] = str(previous.user_attrs[ERROR_ATTR])
            else:
                todo.append((result, seed))
    parent = store.study.user_attrs.get(PARENT_RUN_ATTR)
    todo_left = list(reversed(todo))
    done_count = 0

    def start() -> _Started:
        result, seed = todo_left.pop()
        return _start(
            spec,
            store,
            companion,
            result,
            seed,
            settings,
            parent,
            full_fidelity=full_fidelity,
        )

    def finish(started: _Started, outcome: Outcome) -> None:
        nonlocal done_count
        _finish(spec, store, companion, started, outcome)
        done_count += 1
        if progress is not None:
            progress(
                done_count,
                len(todo),
                started.result,
                started.seed,
                outcome,
                time.monotonic() - started.t0,
            )

    def abandon(started: _Started) -> None:
        with contextlib.suppress(Exception):  # the stop or the error that got here matters more
            _abandon(store, companion, started)

    if n_jobs == 1:
        while todo_left:
            if stop_requested():
                raise KeyboardInterrupt  # Ctrl-C between two evaluations
            started = start()
            try:
                finish(started, evaluate(started.job))
            except BaseException:
                if not started.finished:
                    abandon(started)
                raise
        return list(results.values())

    from paretune.search._local import WorkerPool

    pool = WorkerPool(n_jobs, threads)
    in_flight: dict[Any, _Started] = {}
    try:
        while todo_left or in_flight:
            while todo_left and len(in_flight) < n_jobs and not stop_requested():
                started = start()
                try:
                    in_flight[pool.submit(started.job)] = started
                except BaseException:
                    abandon(started)
                    raise
            if stop_requested():
                raise KeyboardInterrupt
            ready, _ = cf.wait(list(in_flight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            for future in ready:
                finish(in_flight[future], pool.outcome(future))
                del in_flight[future]
    except BaseException:
        # Keep what finished; what was still running fails and is done by the next call.
        for future, started in in_flight.items():
            if future.done() and not started.finished:
                with contextlib.suppress(BaseException):
                    finish(started, pool.outcome(future))
        pool.kill()
        for started in in_flight.values():
            if not started.finished:
                abandon(started)
        raise
    finally:
        pool.close()
    return list(results.values())


def _earlier(companion: optuna.Study, number: int) -> dict[int, FrozenTrial]:
    """The latest finished evaluation of trial ``number`` per seed; stale RUNNING ones fail."""
    from optuna.trial import TrialState

    out: dict[int, FrozenTrial] = {}
    for t in companion.get_trials(deepcopy=False):
        if t.user_attrs.get(SOURCE_ATTR) != number:
            continue
        if t.state == TrialState.RUNNING:
            if _is_orphaned(t):
                # Left by a process that died: failed here, and evaluated again.
                with _quiet():
                    companion.tell(t.number, state=TrialState.FAIL)
            continue
        if t.state in (TrialState.COMPLETE, TrialState.FAIL):
            out[int(t.user_attrs[REEVAL_SEED_ATTR])] = t
    return out


@dataclass
class _Started:
    """One evaluation handed to the objective: its companion trial, MLflow run and job."""

    result: Reevaluation
    seed: int
    trial: optuna.Trial
    run_id: str | None
    job: Job
    t0: float = field(default_factory=time.monotonic)
    finished: bool = False  # its outcome is recorded (or it was abandoned)


def _start(
    spec: SearchSpec,
    store: TrialsStore,
    companion: optuna.Study,
    result: Reevaluation,
    seed: int,
    settings: Mapping[str, Any],
    parent: str | None,
    *,
    full_fidelity: bool,
) -> _Started:
    """Record the evaluation of ``result``'s trial with ``seed`` as RUNNING and build its job."""
    source = result.source
    attrs: dict[str, Any] = {SOURCE_ATTR: source.number, REEVAL_SEED_ATTR: seed}
    if result.label is not None:
        attrs[LABEL_ATTR] = result.label
    with _quiet():
        companion.enqueue_trial(dict(source.params), user_attrs=attrs)
        trial = companion.ask()  # owned by this process from here (the store's storage)
    params = spec.search_space.suggest(trial)
    run_id = None
    if store.mlflow is not None and parent is not None:
        tags = {
            "paretune.reevaluation_of": str(source.number),
            "paretune.seed": str(seed),
            "paretune.fidelity": "full" if full_fidelity else "search",
            "paretune.source_run": str(source.user_attrs.get(CHILD_RUN_ATTR, "")),
        }
        if result.label is not None:
            tags[LABEL_ATTR] = result.label
        try:
            run_id = store.mlflow.start_child(
                parent_run_id=parent,
                trial_number=source.number,
                params=params,
                tags=tags,
                run_name=f"reevaluate-trial-{source.number}-seed-{seed}",
            )
        except Exception as err:  # tracking is best-effort; the study is the record
            _log.warning("MLflow: no run for the re-evaluation of trial %d: %s", source.number, err)
    job = Job(
        objective_type=spec.objective.type,
        settings=settings,
        metric_names=tuple(m.name for m in spec.metrics),
        trial_number=source.number,
        trial_id=trial._trial_id,
        params=params,
        seed=seed,
        tracking_uri=store.tracking_uri if run_id else None,
        mlflow_run_id=run_id,
    )
    return _Started(result, seed, trial, run_id, job)


def _abandon(store: TrialsStore, companion: optuna.Study, started: _Started) -> None:
    """An evaluation stopped part-way (Ctrl-C): FAIL, so that the next call does it again."""
    from optuna.trial import TrialState

    started.finished = True
    with _quiet():
        companion.tell(started.trial, state=TrialState.FAIL)
    if started.run_id is not None and store.mlflow is not None:
        store.mlflow.finish_child(
            started.run_id, state="FAIL", tags={"paretune.fail_reason": "interrupted"}
        )


def _finish(
    spec: SearchSpec,
    store: TrialsStore,
    companion: optuna.Study,
    started: _Started,
    outcome: Outcome,
) -> None:
    """Record ``outcome`` in the companion study, in MLflow and in ``started.result``.

    An evaluation lost with its worker process (``outcome.lost``: that worker or another one
    of its pool died) is failed without an error, so that the next call does it again.
    """
    from optuna.trial import TrialState

    trial, run_id, result = started.trial, started.run_id, started.result
    if outcome.metrics is not None:
        trial.set_user_attr(METRICS_ATTR, outcome.metrics)
    if outcome.error is not None and not outcome.lost:
        trial.set_user_attr(ERROR_ATTR, outcome.error[-2000:])
    values = None
    state = TrialState.FAIL
    if outcome.state == "COMPLETE":
        assert outcome.metrics is not None
        values = [outcome.metrics[m.name] for m in spec.metrics]
        state = TrialState.COMPLETE
    companion.tell(trial, values=values, state=state)
    started.finished = True
    if run_id is not None and store.mlflow is not None:
        tags = {}
        if outcome.error:
            tags["paretune.error"] = outcome.error.strip().splitlines()[-1][:500]
        try:
            store.mlflow.finish_child(
                run_id,
                state=state.name,
                metrics=outcome.metrics,
                tags=tags,
                step=0 if outcome.last_step is None else outcome.last_step + 1,
            )
        except Exception as err:  # tracking is best-effort
            _log.warning(
                "MLflow: re-evaluation of trial %d not finished: %s", result.source.number, err
            )
    if outcome.state == "COMPLETE":
        assert outcome.metrics is not None
        result.runs[started.seed] = outcome.metrics
    else:
        result.failed[started.seed] = outcome.error or outcome.state


def reevaluation_workers(
    spec: SearchSpec, n_jobs: int | None, threads: int | None
) -> tuple[int, int]:
    """``(n_jobs, threads)``: the arguments, else the spec's local runner, else 1 job."""
    from paretune.search._local import default_threads
    from paretune.spec import LocalRunnerSpec

    local = spec.runner if isinstance(spec.runner, LocalRunnerSpec) else None
    if n_jobs is None:
        n_jobs = local.n_jobs if local is not None else 1
    if threads is None and local is not None:
        threads = local.threads
    for name, value in (("n_jobs", n_jobs), ("threads", threads)):
        bad = not isinstance(value, int) or isinstance(value, bool) or value < 1
        if value is not None and bad:
            raise ConfigError(f"`{name}` must be an integer >= 1, but got {value!r}")
    return n_jobs, default_threads(n_jobs) if threads is None else threads


def dominates(
    a: Reevaluation, b: Reevaluation, metrics: Sequence[str], directions: Sequence[str]
) -> bool:
    """Whether ``a``'s mean is at least as good as ``b``'s in every metric and better in one."""
    better = False
    for name, direction in zip(metrics, directions, strict=True):
        x, y = a.mean(name), b.mean(name)
        if math.isnan(x) or math.isnan(y):
            return False
        if direction == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def _ranges(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    parts, start, prev = [], numbers[0], numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)

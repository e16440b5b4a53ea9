"""Re-evaluating chosen trials with several seeds, at the search's or at full fidelity.

A search ranks candidates by one cheap, noisy evaluation each. Before anyone believes its Pareto
front, the front (and the baselines it is compared with) are trained again with several seeds,
usually at full fidelity, as AutoPEFT did: :func:`reevaluate` does that and reports the mean
and the spread of every metric.

Each evaluation is a trial of a companion Optuna study in the same storage, named
``<study>.reevaluate`` (``<study>.reevaluate-full`` at full fidelity), with the source trial's
params and the user attributes ``paretune.source_trial`` and ``paretune.seed``; its MLflow run
is nested under the study's parent run (tags ``paretune.reevaluation_of``, ``paretune.seed``,
``paretune.fidelity``) and named after its source: ``t012 reeval s1 lora r4 qv sa48 L3-5``
(``reeval-full`` at full fidelity). Evaluations that completed are kept: running the command
again after a crash or Ctrl-C does only what is missing, and asking for more seeds adds only
the new ones.

Evaluations run through the search's trial loop (:func:`~paretune.search.run_trials`): one at
a time in this process, or ``n_jobs`` at a time in worker processes, with the same handling of
stops, dead workers and timeouts. Seeds are ``0, 1, ..., n - 1`` for every candidate, so
candidates are compared on the same seeds. Full fidelity builds the objective with
``at_fidelity(1.0)`` (:class:`~paretune.objectives.BaseObjective`); ``finetune`` has it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError
from paretune.search._jobs import Job, ObjectiveRef, Outcome
from paretune.search._local import default_threads, make_executor
from paretune.search._loop import Budget, Started, StopPolicy, run_trials
from paretune.trials_store import (
    BASELINE_ATTR,
    CHILD_RUN_ATTR,
    ERROR_ATTR,
    LABEL_ATTR,
    METRICS_ATTR,
    PendingTrial,
    StudyConfig,
    TrialLink,
    TrialsStore,
    quiet,
)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "Reevaluation",
    "reevaluate",
    "reevaluation_study_name",
    "select_trials",
    "stored_reevaluations",
]

_log = logging.getLogger(__name__)

SOURCE_ATTR = "paretune.source_trial"
REEVAL_SEED_ATTR = "paretune.seed"


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
            f"trial(s) {missing} of study {store.config.name!r} are not COMPLETE (or do not "
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
            f"nothing to re-evaluate: study {store.config.name!r} has no "
            + ("Pareto-optimal or " if pareto else "")
            + ("baseline " if baselines else "")
            + "COMPLETE trials"
        )
    return [chosen[n] for n in sorted(chosen)]


ProgressCallback = Callable[[int, int, "Reevaluation", int, Outcome, float], None]


def reevaluate(
    study: StudyConfig,
    objective: ObjectiveRef,
    *,
    numbers: Sequence[int] = (),
    pareto: bool = False,
    baselines: bool = False,
    pareto_tolerance: Mapping[str, float] | None = None,
    seeds: int = 3,
    full_fidelity: bool = False,
    n_jobs: int = 1,
    threads: int | None = None,
    trial_timeout: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[Reevaluation]:
    """Evaluate chosen trials of a finished (or running) search again, with ``seeds`` seeds.

    Args:
        study: The search's study (it must exist).
        objective: The search's objective.
        numbers: Trial numbers to re-evaluate.
        pareto: Add the study's Pareto-optimal trials.
        baselines: Add the trials the spec enqueued (baselines).
        pareto_tolerance: With ``pareto``, also the near-front trials: metric name to a
            margin in its units; a trial is left out only when another is better by at least
            the margins in every metric. A search scores each candidate once, so trials
            within the noise of the front (e.g. one standard error of the accuracy) may be
            the better ones at full fidelity.
        seeds: Seeds per trial (``0 .. seeds - 1``).
        full_fidelity: Build the objective at full fidelity (``at_fidelity(1.0)``).
        n_jobs: Evaluations at once: 1 runs them in this process, more in that many worker
            processes (this process keeps the records).
        threads: CPU threads per worker process (default: this machine's CPUs shared evenly).
        trial_timeout: Seconds an evaluation may run before its worker is killed (it fails).
        progress: Called after each evaluation as
            ``progress(done, total, reevaluation, seed, outcome, seconds)``.

    Returns:
        One :class:`Reevaluation` per chosen trial, in trial order, with every seed evaluated
        now or before.

    Raises:
        ConfigError: Bad arguments, or an objective without a full-fidelity mode.
        StudyError: The study does not exist.
        SearchInterrupted: Stopped (Ctrl-C, SIGTERM, or a ``KeyboardInterrupt`` raised in this
            process); the evaluations that were running are failed and redone by the next
            call (those that had finished are kept); ``requeued`` names them.
    """
    from optuna.trial import TrialState

    from paretune.objectives import build_objective

    for name, value, low in (("seeds", seeds, 1), ("n_jobs", n_jobs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"`{name}` must be an integer >= {low}, but got {value!r}")
    if full_fidelity:
        objective = dataclasses.replace(objective, budget=1.0)
        build_objective(objective.type, objective.settings, budget=1.0)  # rejects early

    store = TrialsStore(study, create=False, mlflow=True)
    chosen = select_trials(
        store,
        numbers=numbers,
        pareto=pareto,
        baselines=baselines,
        pareto_tolerance=pareto_tolerance,
    )
    companion = TrialsStore(
        dataclasses.replace(
            study,
            name=reevaluation_study_name(study.name, full_fidelity=full_fidelity),
            tracking_uri=None,
            baselines=(),
            requeue=False,  # the next call redoes what is missing, seed by seed
        ),
        create=True,
        mlflow=False,
    )
    companion.study.set_user_attr("paretune.source_study", study.name)
    companion.log_under(store)  # the evaluations' runs are children of the study's parent
    companion.recover()

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
    source = _Evaluations(
        companion, objective, todo, full_fidelity=full_fidelity, progress=progress
    )
    executor = make_executor(
        n_jobs,
        default_threads(n_jobs) if threads is None else threads,
        in_driver=n_jobs == 1 and trial_timeout is None,
    )
    policy = StopPolicy(Budget(max_failures_in_a_row=None, trial_timeout=trial_timeout))
    run_trials(source, executor, policy)
    return list(results.values())


def _earlier(companion: TrialsStore, number: int) -> dict[int, FrozenTrial]:
    """The latest finished evaluation of trial ``number`` per seed."""
    from optuna.trial import TrialState

    out: dict[int, FrozenTrial] = {}
    for t in companion.study.get_trials(deepcopy=False):
        if t.user_attrs.get(SOURCE_ATTR) != number:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.FAIL):
            out[int(t.user_attrs[REEVAL_SEED_ATTR])] = t
    return out


class _Evaluations:
    """The trial loop's source: one companion trial per (chosen trial, seed) left to do."""

    def __init__(
        self,
        companion: TrialsStore,
        objective: ObjectiveRef,
        todo: list[tuple[Reevaluation, int]],
        *,
        full_fidelity: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.companion = companion
        self.objective = objective
        self.todo_left = list(reversed(todo))
        self.total = len(todo)
        self.done = 0
        self.full_fidelity = full_fidelity
        self.progress = progress
        self.t0: dict[int, float] = {}
        self.of: dict[int, tuple[Reevaluation, int]] = {}

    def next(self) -> Started | None:
        if not self.todo_left:
            return None
        result, seed = self.todo_left.pop()
        source = result.source
        attrs: dict[str, Any] = {SOURCE_ATTR: source.number, REEVAL_SEED_ATTR: seed}
        if result.label is not None:
            attrs[LABEL_ATTR] = result.label
        study = self.companion.study
        with quiet():
            study.enqueue_trial(dict(source.params), user_attrs=attrs)
            trial = study.ask()  # owned by this process from here (the store's storage)
        params = self.companion.space.suggest(trial)
        tags = {
            "paretune.reevaluation_of": str(source.number),
            "paretune.seed": str(seed),
            "paretune.fidelity": "full" if self.full_fidelity else "search",
            "paretune.source_run": str(source.user_attrs.get(CHILD_RUN_ATTR, "")),
        }
        if result.label is not None:
            tags[LABEL_ATTR] = result.label
        run_id = self.companion.start_run(
            trial,
            params,
            tags,
            run_name=self.companion.run_name(
                source.number,
                params,
                label=result.label,
                prefix=f"reeval{'-full' if self.full_fidelity else ''} s{seed}",
            ),
            trial_number=source.number,
        )
        pending = PendingTrial(trial, params, seed, run_id)
        config = self.companion.config
        job = Job(
            objective=self.objective,
            metric_names=tuple(config.metric_names),
            params=params,
            seed=seed,
            link=TrialLink(
                trial_number=source.number,
                trial_id=trial._trial_id,
                tracking_uri=self.companion.mlflow.tracking_uri
                if run_id and self.companion.mlflow
                else None,
                mlflow_run_id=run_id,
            ),
        )
        self.t0[trial.number] = time.monotonic()
        self.of[trial.number] = (result, seed)
        return Started(trial.number, job, pending)

    def finish(self, started: Started, outcome: Outcome) -> None:
        """Record ``outcome`` in the companion study, in MLflow and in the result.

        An evaluation lost with its worker process (``outcome.lost``) is failed without an
        error, so that the next call does it again.
        """
        from optuna.trial import TrialState

        error = None if outcome.lost else outcome.error
        self.companion.tell(
            started.token,
            state=TrialState.COMPLETE if outcome.state == "COMPLETE" else TrialState.FAIL,
            metrics=outcome.metrics,
            error=error,
            final_step=0 if outcome.last_step is None else outcome.last_step + 1,
        )
        result, seed = self.of.pop(started.number)
        if outcome.state == "COMPLETE":
            assert outcome.metrics is not None
            result.runs[seed] = outcome.metrics
        else:
            result.failed[seed] = outcome.error or outcome.state
        self.done += 1
        if self.progress is not None:
            seconds = time.monotonic() - self.t0.pop(started.number)
            self.progress(self.done, self.total, result, seed, outcome, seconds)

    def interrupt(self, started: Started, reason: str) -> bool:
        """Stopped part-way: FAIL without an error, so that the next call does it again."""
        return self.companion.fail_interrupted(started.token, reason=reason, requeue=False)


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


def stored_reevaluations(storage_url: str, study: str) -> dict[int, dict[int, dict[str, float]]]:
    """``paretune reevaluate``'s results for ``study``: trial number -> seed -> metrics.

    Both companion studies (the search's fidelity and ``--full-fidelity``) are read; where a
    trial was re-evaluated at both, the full-fidelity runs are kept. Missing companions give
    an empty mapping.
    """
    import optuna

    from paretune.trials_store import quiet

    out: dict[int, dict[int, dict[str, float]]] = {}
    storage = optuna.storages.RDBStorage(storage_url, skip_compatibility_check=True)
    try:
        names = {s.study_name for s in storage.get_all_studies()}
        for full in (False, True):
            name = reevaluation_study_name(study, full_fidelity=full)
            if name not in names:
                continue
            with quiet():
                companion = optuna.load_study(study_name=name, storage=storage)
            found: dict[int, dict[int, dict[str, float]]] = {}
            for t in companion.get_trials(deepcopy=False):
                source, metrics = t.user_attrs.get(SOURCE_ATTR), t.user_attrs.get(METRICS_ATTR)
                if t.state.name != "COMPLETE" or source is None or metrics is None:
                    continue
                seed = int(t.user_attrs.get(REEVAL_SEED_ATTR, t.number))
                found.setdefault(int(source), {})[seed] = dict(metrics)
            out.update(found)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return out

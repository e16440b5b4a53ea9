"""Running a whole search: open the study, attach the controller, run the runner, close."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paretune.search._controllers import (
    ControllerContext,
    controller_capabilities,
    make_sampler,
)
from paretune.search._jobs import DeciderRef, ObjectiveRef
from paretune.search._loop import Budget, StudyTrials
from paretune.search._runner import RunnerSettings, make_runner
from paretune.search._signals import SearchInterrupted

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from paretune.trials_store import StudyConfig, TrialsStore

__all__ = ["SearchPlan", "SearchResult", "open_store", "run_search"]


@dataclass(frozen=True, kw_only=True)
class SearchPlan:
    """Everything one search needs, in the narrow form each part takes.

    ``paretune.spec`` composes it from a spec (:meth:`SearchSpec.plan`); code that builds
    searches without YAML composes it directly.

    Attributes:
        study: The study (storage, tracking, metrics, space, constraints, baselines, seed).
        objective: What every trial evaluates.
        controller: The registered controller's name.
        controller_context: The controller factory's input.
        controller_options: Its options.
        pruner: The study's pruner (one optimised metric), or ``None``.
        budget: When to stop, and the per-trial rules.
        runner: The runner's validated settings.
        decider: What every trial's ``ctx.decide`` asks (a saved DAC policy), or ``None``:
            dynamic parameters are held.
    """

    study: StudyConfig
    objective: ObjectiveRef
    controller: str
    controller_context: ControllerContext
    controller_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: optuna.pruners.BasePruner | None = None
    budget: Budget = field(default_factory=Budget)
    runner: RunnerSettings
    decider: DeciderRef | None = None

    @property
    def constraint_metrics(self) -> tuple[str, ...]:
        return tuple(c.metric for c in self.study.constraints)


@dataclass
class SearchResult:
    """What a finished (or interrupted) search left behind."""

    store: TrialsStore
    pareto: list[FrozenTrial]
    counts: dict[str, int]
    recovered: list[int]
    seconds: float
    interrupted: bool = False


def open_store(
    plan: SearchPlan,
    *,
    create: bool = True,
    mlflow: bool = True,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> TrialsStore:
    """The plan's study with its controller and pruner attached.

    Args:
        sampler: The controller's sampler as built for an empty study, used where the study
            needs that same one (it is empty, or the seed does not depend on its size).
    """
    from paretune.trials_store import TrialsStore

    store = TrialsStore(plan.study, create=create, mlflow=mlflow)
    existing = len(store.study.get_trials(deepcopy=False))
    reseeded = (
        existing > 0
        and plan.controller_context.seed is not None
        and not controller_capabilities(plan.controller).keyed_by_trial
    )
    if sampler is None or reseeded:
        sampler = make_sampler(
            plan.controller,
            plan.controller_context,
            plan.controller_options,
            n_existing_trials=existing,
        )
    store.study.sampler = sampler
    if plan.pruner is not None:
        store.study.pruner = plan.pruner
    return store


def run_search(
    plan: SearchPlan,
    *,
    resume: bool = False,
    progress: Any = None,
    on_start: Callable[[TrialsStore, list[int]], None] | None = None,
    on_close: Callable[[TrialsStore], None] | None = None,
) -> SearchResult:
    """Run (or continue) a search until its budget is spent.

    A study that already exists is continued: trials left RUNNING by a dead process are failed
    and queued again, completed trials are kept, and the budget counts what is already done.

    Args:
        plan: The search.
        resume: Require the study to exist already.
        progress: Called as ``progress.update(store, frozen_trial)`` after each trial.
        on_start: Called with the store once it is open and recovered (the CLI prints where
            things are and sizes its progress bar).
        on_close: Called with the store before it closes, also after a stop or an error (the
            CLI logs the tables of the study as artifacts of its MLflow run).

    Returns:
        The result; ``interrupted`` is set if the search was stopped by Ctrl-C/SIGTERM.
    """
    t0 = time.monotonic()
    runner = make_runner(plan.runner)
    runner.check(
        metrics=plan.study.metric_names, pruning=plan.pruner is not None, budget=plan.budget
    )
    # The controller and its options are checked before the study exists: a bad option leaves
    # nothing behind.
    sampler = make_sampler(plan.controller, plan.controller_context, plan.controller_options)
    store = open_store(plan, create=not resume, sampler=sampler)
    interrupted = False
    status = "FAILED"  # unless the runner returns or is stopped
    recovered: list[int] = []
    try:
        recovered = store.start()
        if on_start is not None:
            on_start(store, recovered)
        trials = StudyTrials(
            store,
            plan.objective,
            pruner=plan.pruner,
            constraint_metrics=plan.constraint_metrics,
            progress=progress,
            decider=plan.decider,
        )
        runner.run(trials, plan.budget)
        status = "FINISHED"
    except SearchInterrupted:
        interrupted, status = True, "KILLED"
    finally:
        try:
            if on_close is not None:
                on_close(store)
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

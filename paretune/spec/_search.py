"""The whole search: :class:`SearchSpec`, and the narrow inputs it gives each package."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from paretune._errors import ConfigError
from paretune._validation import StrictModel
from paretune.objectives import plugin_location
from paretune.search import LocalRunnerSettings, RunnerSettings, runner_settings
from paretune.spec._review import ReportRefresh, ReportSpec
from paretune.spec._sections import (
    BudgetSpec,
    ControllerSpec,
    EnqueueSpec,
    ObjectiveSpec,
    PrunerSpec,
)

if TYPE_CHECKING:
    import optuna

    from paretune.objectives import BaseObjective, Metric
    from paretune.search import (
        Budget,
        ControllerContext,
        ObjectiveRef,
        Reevaluation,
        SearchPlan,
        SearchResult,
    )
    from paretune.spaces import SearchSpace
    from paretune.trials_store import Constraint, StudyConfig, TrialsStore

__all__ = ["KnownMetric", "SearchSpec"]

_Strict = StrictModel
_log = logging.getLogger(__name__)

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SearchSpec(_Strict):
    """A whole search. See the module docstring for an example.

    Attributes:
        study: The study's name (letters, digits, ``_.-``); names the Optuna study, the MLflow
            experiment and the default run directory.
        run_dir: Where the embedded stores live; default ``runs/<study>`` under the working
            directory.
        storage: An SQLAlchemy URL for the Optuna study (``postgresql://...``); default a
            SQLite file ``study.db`` in ``run_dir``.
        tracking_uri: The MLflow tracking URI; default a SQLite file ``mlflow.db`` in
            ``run_dir``.
        objective: What a trial computes.
        space: The searched parameters, ``{name: {type: float|int|categorical|fixed, ...}}``;
            registered problems bring their own.
        controller: Who proposes candidates.
        budget: When to stop.
        runner: Where trials run.
        pruner: Early stopping of unpromising trials (one optimised metric only).
        enqueue: Parameter sets evaluated first (baselines), once per study: bare params or
            ``{label: ..., params: {...}}``.
        report: The HTML report (:class:`ReportSpec`): rewritten every ``report.every``
            finished trials and at the end of a run, and logged to the MLflow parent run.
        plugins: Modules (``my_pkg.paretune_plugin``) or files (``plugin.py``, relative to the
            working directory) imported before the rest of the spec is read: they register
            controllers, runners and objective types (:func:`load_plugins`).
    """

    study: str
    run_dir: Path | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    objective: ObjectiveSpec
    space: dict[str, dict[str, Any]] | None = None
    controller: ControllerSpec = Field(default_factory=lambda: ControllerSpec(name="tpe"))
    budget: BudgetSpec
    runner: RunnerSettings = Field(default_factory=LocalRunnerSettings)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    enqueue: list[EnqueueSpec] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)
    report: ReportSpec = Field(default_factory=ReportSpec)

    _space: SearchSpace | None = PrivateAttr(default=None)
    _metrics: tuple[Metric, ...] | None = PrivateAttr(default=None)
    _reference_point: dict[str, float] | None = PrivateAttr(default=None)
    _max_hypervolume: float | None = PrivateAttr(default=None)
    _objective: BaseObjective | None = PrivateAttr(default=None)

    @field_validator("runner", mode="before")
    @classmethod
    def _registered_runner(cls, data: Any) -> Any:
        return runner_settings(data)

    @model_validator(mode="after")
    def _valid_name(self) -> SearchSpec:
        if not _STUDY_NAME.match(self.study):
            raise ValueError(
                f"study name {self.study!r} must start with a letter or digit and contain only "
                "letters, digits, '_', '.', '-'"
            )
        return self

    # -- resolved views (the objective's defaults merged in) ------------------------------

    @property
    def search_space(self) -> SearchSpace:
        """The :class:`paretune.spaces.SearchSpace` searched."""
        self._resolve()
        assert self._space is not None  # set by _resolve
        return self._space

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The optimised metrics as :class:`paretune.objectives.Metric`, in order."""
        self._resolve()
        assert self._metrics is not None  # set by _resolve
        return self._metrics

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [m.direction for m in self.metrics]

    @property
    def reference_point(self) -> dict[str, float] | None:
        """Per metric, the hypervolume reference (spec first, then the problem's own)."""
        self._resolve()
        return self._reference_point

    @property
    def max_hypervolume(self) -> float | None:
        """The problem's known optimal hypervolume (synthetic problems), if any."""
        self._resolve()
        return self._max_hypervolume

    @property
    def known_metrics(self) -> dict[str, Callable[[dict[str, Any]], float]]:
        """Optimised metrics the objective computes from the params alone, before training
        (its ``known_metrics`` and ``known_values``; e.g. ``finetune``'s trainable
        percentage), as one function of the params each."""
        self._resolve()
        objective = self._objective
        assert objective is not None  # set by _resolve
        names = set(objective.known_metrics)
        return {m.name: KnownMetric(objective, m.name) for m in self.metrics if m.name in names}

    @property
    def resolved_run_dir(self) -> Path:
        return (self.run_dir if self.run_dir is not None else Path("runs") / self.study).resolve()

    def _resolve(self) -> None:
        if self._metrics is not None:
            return
        from paretune.objectives import Metric, build_objective
        from paretune.spaces import SearchSpace

        objective = build_objective(self.objective.type, self.objective.settings)

        space: SearchSpace | None
        if self.space is not None:
            try:
                space = SearchSpace.from_dict(self.space)
            except ConfigError as err:
                raise err.prefixed("space") from None
        else:
            space = objective.space
            if space is None:
                raise ConfigError(
                    f"objective type {self.objective.type!r} declares no space; "
                    "add a `space:` section",
                    path=("space",),
                )

        if self.objective.metrics is not None:
            metrics = tuple(Metric(m.name, m.direction) for m in self.objective.metrics)
        else:
            metrics = tuple(objective.metrics)
            if not metrics:
                raise ConfigError(
                    f"objective type {self.objective.type!r} declares no metrics; add "
                    "`metrics: [{name: ..., direction: minimize|maximize}]`",
                    path=("objective", "metrics"),
                )
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"metric names must be unique, but got {names}", path=("objective", "metrics")
            )

        reference: Mapping[str, float] | None = self.objective.reference_point
        if reference is not None:
            if set(reference) != set(names):
                raise ConfigError(
                    f"reference_point must give one value per metric {names}, but got keys "
                    f"{sorted(reference)}",
                    path=("objective", "reference_point"),
                )
        else:
            reference = objective.reference_point
            if reference is not None and set(reference) != set(names):
                reference = None  # the problem's reference is for other metrics
        max_hv = objective.max_hypervolume
        if self.objective.metrics is not None or self.objective.reference_point is not None:
            max_hv = None  # only meaningful for the problem's own metrics and reference

        from paretune.search import make_runner

        make_runner(self.runner).check(
            metrics=names, pruning=self.pruner.name != "none", budget=self.search_budget()
        )
        if self.pruner.name != "none" and len(metrics) > 1:
            raise ConfigError(
                f"pruning needs a single optimised metric (Optuna prunes single-objective "
                f"studies), but the spec optimises {names}; set `pruner: {{name: none}}`",
                path=("pruner", "name"),
            )

        for i, entry in enumerate(self.enqueue):
            try:
                space.validate(entry.params)
            except ConfigError as err:
                raise err.prefixed("enqueue", i, "params") from None
        labels = [e.label for e in self.enqueue if e.label is not None]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"enqueue labels must be unique, but got {labels}", path=("enqueue",))

        self._space = space
        self._objective = objective
        self._reference_point = dict(reference) if reference is not None else None
        self._max_hypervolume = max_hv
        self._metrics = metrics

        from paretune.search import check_controller

        check_controller(self.controller.name, self.controller_context(), self.controller.options)

    def controller_context(self) -> ControllerContext:
        """The controller factory's input (:class:`~paretune.search.ControllerContext`)."""
        from paretune.search import ControllerContext
        from paretune.trials_store import MetricConstraints

        ref = self.reference_point
        known = self.known_metrics
        return ControllerContext(
            space=self.search_space,
            metrics=tuple(self.metrics),
            seed=self.controller.seed,
            constraints_func=(
                MetricConstraints(self.constraints) if self.objective.constraints else None
            ),
            reference_point=None if ref is None else tuple(ref[m.name] for m in self.metrics),
            known_objectives={
                i: known[m.name] for i, m in enumerate(self.metrics) if m.name in known
            },
        )

    def make_sampler(self, *, n_existing_trials: int = 0) -> optuna.samplers.BaseSampler:
        """The controller's Optuna sampler (see :func:`paretune.search.make_sampler`)."""
        from paretune.search import make_sampler

        return make_sampler(
            self.controller.name,
            self.controller_context(),
            self.controller.options,
            n_existing_trials=n_existing_trials,
        )

    def trial_seed(self, trial_number: int) -> int:
        """The seed handed to the objective of trial ``trial_number`` (stable across resumes)."""
        return self.study_config(read_only=True).trial_seed(trial_number)

    # -- the narrow inputs of each package ------------------------------------------------

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        """The outcome constraints as :class:`paretune.trials_store.Constraint`."""
        from paretune.trials_store import Constraint

        return tuple(Constraint(c.metric, max=c.max, min=c.min) for c in self.objective.constraints)

    def study_config(self, *, read_only: bool = False) -> StudyConfig:
        """The :class:`~paretune.trials_store.StudyConfig` of the spec's study.

        Args:
            read_only: For looking at an existing study (``status``, ``export``): the objective
                is not built (its data need not be present), the space is left out, and the
                metrics are the spec's own or else the stored study's.
        """
        from paretune.objectives import Metric
        from paretune.trials_store import Baseline, StudyConfig

        run_dir = self.resolved_run_dir
        embedded = self.storage is None or self.tracking_uri is None
        describe: CandidateName | None = None
        if read_only:
            named = self.objective.metrics or []
            metrics = tuple(Metric(m.name, m.direction) for m in named)
            space = None
        else:
            metrics, space = tuple(self.metrics), self.search_space
            assert self._objective is not None  # set by _resolve (search_space)
            describe = CandidateName(self._objective, space)
        return StudyConfig(
            name=self.study,
            storage_url=self.storage or f"sqlite:///{run_dir / 'study.db'}",
            tracking_uri=self.tracking_uri or f"sqlite:///{run_dir / 'mlflow.db'}",
            run_dir=run_dir if embedded or not read_only else None,
            # An embedded store keeps its artifacts beside it, not in the working directory.
            artifact_location=(run_dir / "mlartifacts").as_uri()
            if self.tracking_uri is None
            else None,
            metrics=metrics,
            space=space,
            describe=describe,
            constraints=self.constraints,
            baselines=tuple(Baseline(dict(e.params), e.label) for e in self.enqueue),
            seed=self.controller.seed,
        )

    def objective_ref(self) -> ObjectiveRef:
        """How workers rebuild the objective (:class:`~paretune.search.ObjectiveRef`)."""
        from paretune.search import ObjectiveRef

        return ObjectiveRef(
            type=self.objective.type,
            settings=dict(self.objective.settings),
            plugins=tuple(plugin_location(p) for p in self.plugins),
        )

    def search_budget(self) -> Budget:
        """The budget as the trial loop takes it (:class:`~paretune.search.Budget`)."""
        from paretune.search import Budget

        b = self.budget
        return Budget(
            trials=b.trials,
            wall_time=b.wall_time,
            max_failures_in_a_row=b.max_failures_in_a_row,
            trial_timeout=b.trial_timeout,
            max_retries=b.max_retries,
        )

    def run(
        self,
        *,
        resume: bool = False,
        progress: Any = None,
        on_start: Any = None,
        policy: str | Path | None = None,
    ) -> SearchResult:
        """Run (or continue) this search: :func:`paretune.search.run_search` on :meth:`plan`,
        with the spec logged to the study's MLflow parent run as ``spec.yaml`` when it starts
        (then ``on_start`` is called), the study's tables (``trials.csv``, ``pareto.csv``)
        and summary metrics (:func:`~paretune.dashboards.study_summary`) when it ends (also
        after a stop), and its HTML report written (and logged) every ``report.every``
        finished trials and at the end.

        Args:
            policy: A DAC policy saved by ``paretune dac`` (a file or an MLflow artifact URI)
                that every trial's dynamic parameter follows, greedily.

        Returns:
            The :class:`~paretune.search.SearchResult`.
        """
        from functools import partial

        from paretune.search import run_search

        refresh = ReportRefresh(
            self.report,
            self.report_path,
            reference_point=self.reference_point,
            progress=progress,
        )

        def on_close(store: TrialsStore) -> None:
            try:
                _on_close(self, store)
            finally:
                refresh.refresh(store)

        plan = self.plan()
        if policy is not None:
            plan = dataclasses.replace(plan, decider=self.policy_decider(policy))
        return run_search(
            plan,
            resume=resume,
            progress=refresh,
            on_start=partial(_on_start, self, on_start),
            on_close=on_close,
        )

    def policy_decider(self, source: str | Path) -> Any:
        """A saved policy as the decider of this search's trials (greedy).

        Raises:
            ConfigError: The objective has no dynamic parameter, or the policy controls
                another one.
        """
        from paretune.search.dac import PolicyDecider, load_policy

        self._resolve()
        assert self._objective is not None  # set by _resolve
        param = self._objective.dynamic
        if param is None:
            raise ConfigError(
                f"objective {self.objective.type!r} has no dynamic parameter for a policy to "
                "set; give it one (a `dynamic` setting).",
                path=("objective", "settings", "dynamic"),
            )
        policy = load_policy(source)
        theirs, ours = policy.param.to_dict(), param.to_dict()
        changed = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        if changed:
            differences = "; ".join(
                f"{k}: policy {theirs.get(k)!r}, objective {ours.get(k)!r}" for k in changed
            )
            raise ConfigError(
                f"the policy was trained for another dynamic parameter ({differences}); "
                "train one for this objective's, or set the objective's `dynamic` as the "
                "policy's.",
                path=("objective", "settings", "dynamic"),
            )
        return PolicyDecider(policy.snapshot(), greedy=True)

    @property
    def report_path(self) -> Path:
        """Where the HTML report goes: ``report.path``, else ``report.html`` in the run
        directory."""
        return self.report.path or self.resolved_run_dir / "report.html"

    def to_yaml(self) -> str:
        """The spec as YAML: what was given (with ``--set`` overrides applied), defaults left
        out; :func:`~paretune.spec.load_spec` reads it back to an equal spec."""
        import yaml

        data = self.model_dump(mode="json", exclude_unset=True, serialize_as_any=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def reevaluate(
        self, *, n_jobs: int | None = None, threads: int | None = None, **options: Any
    ) -> list[Reevaluation]:
        """:func:`paretune.search.reevaluate` on this spec's study and objective.

        ``n_jobs`` and ``threads`` default to the local runner's (else one job at a time);
        the budget's ``trial_timeout`` applies to each evaluation. Other keyword arguments
        are :func:`~paretune.search.reevaluate`'s.
        """
        from paretune.search import LocalRunnerSettings, reevaluate

        local = self.runner if isinstance(self.runner, LocalRunnerSettings) else None
        if n_jobs is None:
            n_jobs = local.n_jobs if local is not None else 1
        if threads is None and local is not None:
            threads = local.threads
        if threads is not None and (
            not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
        ):
            raise ConfigError(f"`threads` must be an integer >= 1, but got {threads!r}")
        return reevaluate(
            self.study_config(),
            self.objective_ref(),
            n_jobs=n_jobs,
            threads=threads,
            trial_timeout=self.budget.trial_timeout,
            **options,
        )

    def plan(self) -> SearchPlan:
        """The whole search in the narrow form each package takes
        (:class:`~paretune.search.SearchPlan`)."""
        from paretune.search import SearchPlan, make_pruner

        pruner = None
        if self.pruner.name != "none":
            pruner = make_pruner(self.pruner.name, self.pruner.options)
        return SearchPlan(
            study=self.study_config(),
            objective=self.objective_ref(),
            controller=self.controller.name,
            controller_context=self.controller_context(),
            controller_options=dict(self.controller.options),
            pruner=pruner,
            budget=self.search_budget(),
            runner=self.runner,
        )


def _on_start(
    spec: SearchSpec,
    then: Callable[[TrialsStore, list[int]], None] | None,
    store: TrialsStore,
    recovered: list[int],
) -> None:
    """:meth:`SearchSpec.run`'s start hook: the spec on the parent run, then ``then``."""
    if store.mlflow is not None and store.parent_run_id is not None:
        from paretune.dashboards import log_spec

        try:
            log_spec(store.mlflow, store.parent_run_id, spec.to_yaml())
        except Exception as err:  # tracking is best-effort; the study is the record
            _log.warning("MLflow: the spec was not logged to the study's run: %s", err)
    if then is not None:
        then(store, recovered)


def _on_close(spec: SearchSpec, store: TrialsStore) -> None:
    """:meth:`SearchSpec.run`'s close hook: the tables and the summary on the parent run
    (skipped while the tracking store does not answer: they are logged by the next run)."""
    if not store.tracking_available():
        return
    try:
        _log_tables(store)
    except Exception as err:  # tracking is best-effort; the study is the record
        store.tracking_failed(err, "the study's tables were not logged")
        return
    _log_summary(spec, store)


def _log_summary(spec: SearchSpec, store: TrialsStore) -> None:
    from paretune.dashboards import StudyData, log_study_summary

    if store.mlflow is None or store.parent_run_id is None:
        return
    try:
        study = StudyData.from_store(
            store, reference_point=spec.reference_point, reevaluations=False
        )
        log_study_summary(store.mlflow, store.parent_run_id, study)
    except Exception as err:  # tracking is best-effort; the study is the record
        _log.warning("MLflow: the study's summary was not logged to its run: %s", err)


def _log_tables(store: TrialsStore) -> None:
    from paretune.dashboards import log_study_tables
    from paretune.trials_store import export_trials

    if store.mlflow is None or store.parent_run_id is None:
        return
    log_study_tables(
        store.mlflow,
        store.parent_run_id,
        trials_csv=export_trials(store, "csv"),
        pareto_csv=export_trials(store, "csv", pareto_only=True),
    )


class CandidateName:
    """A candidate's run name: the objective's :meth:`~paretune.objectives.BaseObjective.describe`
    where it has one, else the searched space's :meth:`~paretune.spaces.SearchSpace.describe`
    (the spec's ``space:`` may replace the objective's own)."""

    def __init__(self, objective: BaseObjective, space: SearchSpace) -> None:
        self.objective = objective
        self.space = space

    def __call__(self, params: Mapping[str, Any]) -> str:
        return self.objective.describe(params) or self.space.describe(params)

    def __repr__(self) -> str:
        return f"CandidateName({type(self.objective).__name__})"


class KnownMetric:
    """One metric of an objective's ``known_values(params)``, as a function of the params."""

    def __init__(self, objective: BaseObjective, name: str) -> None:
        self.objective = objective
        self.name = name

    def __call__(self, params: dict[str, Any]) -> float:
        return float(self.objective.known_values(params)[self.name])

    def __repr__(self) -> str:
        return f"KnownMetric({self.name!r})"

"""The search spec: what a user writes (YAML) to describe one search, validated at the boundary.

A spec names the study, where trials are stored and tracked, the objective and its metrics, the
space, the controller, the budget and the runner::

    study: quickstart
    objective:
      type: branin_currin            # a registered objective, or `python` with settings.target
      metrics:                       # optional for registered problems (they declare their own)
        - {name: f0, direction: minimize}
        - {name: f1, direction: minimize}
    controller: {name: tpe, seed: 0}
    budget: {trials: 40}
    runner: {type: local, n_jobs: 1}   # or {type: ray, resources: {cpu: 1, gpu: 0.25}}

:func:`load_spec` reads and validates a spec; every problem becomes a :class:`ConfigError` whose
``path`` names the field (``objective.metrics[0].direction``) and whose message names the value
received and what is allowed. ``paretune schema`` prints the JSON schema of :class:`SearchSpec`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from paretune._errors import ConfigError, describe
from paretune._validation import StrictModel
from paretune.search import (
    LocalRunnerSettings,
    RayRunnerSettings,
    RunnerSettings,
    runner_settings,
)
from paretune.search._ray import ResourceRule, ResourcesSettings

__all__ = [
    "BudgetSpec",
    "ConstraintSpec",
    "ControllerSpec",
    "EnqueueSpec",
    "LocalRunnerSpec",
    "MetricSpec",
    "ObjectiveSpec",
    "PrunerSpec",
    "RayRunnerSpec",
    "ResourcesSpec",
    "SearchSpec",
    "load_plugins",
    "load_spec",
]

# The runner sections are the runners' own settings models (registered with the runners).
LocalRunnerSpec = LocalRunnerSettings
RayRunnerSpec = RayRunnerSettings
ResourcesSpec = ResourcesSettings
ResourceRuleSpec = ResourceRule


_Strict = StrictModel


class MetricSpec(_Strict):
    """One optimised metric: a key of the dict the objective returns, and its direction."""

    name: str = Field(min_length=1)
    direction: Literal["minimize", "maximize"]


class ConstraintSpec(_Strict):
    """An outcome constraint on a returned metric: feasible iff ``min <= metric <= max``.

    Controllers that support constraints (tpe, nsga2, gp) prefer feasible candidates; the Pareto
    front reports feasible trials only.
    """

    metric: str = Field(min_length=1)
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if self.max is None and self.min is None:
            raise ValueError("a constraint needs `max`, `min` or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"`min <= max` must hold, but got (min={self.min}, max={self.max})")
        return self


class ObjectiveSpec(_Strict):
    """What a trial computes.

    Attributes:
        type: A registered objective (``paretune.objectives.registered_objectives()``), or
            ``python`` with ``settings.target: "module:function"`` or ``"file.py:function"``.
        settings: Passed to the objective (``ctx.settings`` for ``python`` objectives).
        metrics: The optimised metrics with their directions; registered problems declare
            their own, which this overrides.
        constraints: Outcome constraints on returned metrics.
        reference_point: For hypervolume: a value per metric, worse than any interesting point.
    """

    type: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricSpec] | None = Field(default=None, min_length=1)
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    reference_point: dict[str, float] | None = None


class ControllerSpec(_Strict):
    """Who proposes the next candidate: an Optuna sampler chosen by name, seeded.

    ``options`` are keyword arguments of the sampler (for example ``n_startup_trials``).
    """

    name: str
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_controller(self) -> ControllerSpec:
        from paretune.search import controller_names

        if self.name not in controller_names():
            raise ValueError(
                f"unknown controller {self.name!r}; allowed: {', '.join(controller_names())}"
            )
        return self


class BudgetSpec(_Strict):
    """When to stop: after ``trials`` finished trials and/or ``wall_time`` seconds.

    Finished means COMPLETE, PRUNED, or FAIL because the objective raised. Trials failed by a
    crash or Ctrl-C are re-queued and do not count.

    ``max_failures_in_a_row``: a search whose trials fail one after another (a data path, a
    package or a device that every trial needs is missing) stops starting trials after this
    many, lets the running ones finish and ends with an error that quotes the last failure,
    instead of spending the rest of the budget on the same error. ``null``: never stop so.

    ``trial_timeout``: seconds a trial may run; past it, its worker process is killed (and
    replaced), the trial is recorded FAIL with the reason and the search goes on. With the
    local runner and ``n_jobs: 1`` the trial then runs in one worker process instead of the
    driver (a trial can only be stopped in a process of its own).

    ``max_retries``: how often a trial whose worker process died (out of memory, a segfault,
    ``os._exit``) is run again before it is recorded FAIL; its other attempts are not
    recorded, and the other workers' trials go on. (The ray runner has ``max_failures``.)
    """

    trials: int | None = Field(default=None, ge=1)
    wall_time: float | None = Field(default=None, gt=0)
    max_failures_in_a_row: int | None = Field(default=10, ge=1)
    trial_timeout: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.trials is None and self.wall_time is None:
            raise ValueError("a budget needs `trials`, `wall_time` (seconds) or both")
        return self


class PrunerSpec(_Strict):
    """When to stop a trial early, from what it reported (``ctx.report``): an Optuna pruner.

    Only for one optimised metric (Optuna prunes single-objective studies); ``options`` are
    the pruner's keyword arguments (for example ``n_warmup_steps`` of ``median``).
    """

    name: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    options: dict[str, Any] = Field(default_factory=dict)


class EnqueueSpec(_Strict):
    """A parameter set evaluated before the controller's own (a baseline), with a label.

    In YAML either the bare params (``{lr: 0.001, layers: 4}``) or
    ``{label: "LoRA r=8 on q,v", params: {...}}``; the label names the trial in tables,
    MLflow (tag ``paretune.label``) and ``reevaluate``.
    """

    params: dict[str, Any]
    label: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_params(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not (
            "params" in data
            and isinstance(data["params"], Mapping)
            and set(data) <= {"params", "label"}
        ):
            return {"params": dict(data)}
        return data


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

    _space: Any = PrivateAttr(default=None)
    _metrics: tuple[Any, ...] | None = PrivateAttr(default=None)
    _reference_point: dict[str, float] | None = PrivateAttr(default=None)
    _max_hypervolume: float | None = PrivateAttr(default=None)
    _objective: Any = PrivateAttr(default=None)

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
    def search_space(self) -> Any:
        """The :class:`paretune.spaces.SearchSpace` searched."""
        self._resolve()
        return self._space

    @property
    def metrics(self) -> tuple[Any, ...]:
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
        names = set(self._objective.known_metrics)
        return {
            m.name: KnownMetric(self._objective, m.name) for m in self.metrics if m.name in names
        }

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

        make_runner(self.runner).check(metrics=len(metrics), pruning=self.pruner.name != "none")
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

    def controller_context(self) -> Any:
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

    def make_sampler(self, *, n_existing_trials: int = 0) -> Any:
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
    def constraints(self) -> tuple[Any, ...]:
        """The outcome constraints as :class:`paretune.trials_store.Constraint`."""
        from paretune.trials_store import Constraint

        return tuple(Constraint(c.metric, max=c.max, min=c.min) for c in self.objective.constraints)

    def study_config(self, *, read_only: bool = False) -> Any:
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
        if read_only:
            named = self.objective.metrics or []
            metrics = tuple(Metric(m.name, m.direction) for m in named)
            space = None
        else:
            metrics, space = tuple(self.metrics), self.search_space
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
            constraints=self.constraints,
            baselines=tuple(Baseline(dict(e.params), e.label) for e in self.enqueue),
            seed=self.controller.seed,
        )

    def objective_ref(self) -> Any:
        """How workers rebuild the objective (:class:`~paretune.search.ObjectiveRef`)."""
        from paretune.search import ObjectiveRef

        return ObjectiveRef(type=self.objective.type, settings=dict(self.objective.settings))

    def search_budget(self) -> Any:
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

    def run(self, *, resume: bool = False, progress: Any = None, on_start: Any = None) -> Any:
        """Run (or continue) this search: :func:`paretune.search.run_search` on :meth:`plan`,
        with the study's tables (``trials.csv``, ``pareto.csv``) logged to its MLflow parent
        run when it ends (also after a stop).

        Returns:
            The :class:`~paretune.search.SearchResult`.
        """
        from paretune.search import run_search

        return run_search(
            self.plan(), resume=resume, progress=progress, on_start=on_start, on_close=_log_tables
        )

    def reevaluate(
        self, *, n_jobs: int | None = None, threads: int | None = None, **options: Any
    ) -> Any:
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

    def plan(self) -> Any:
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


def _log_tables(store: Any) -> None:
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


class KnownMetric:
    """One metric of an objective's ``known_values(params)``, as a function of the params."""

    def __init__(self, objective: Any, name: str) -> None:
        self.objective = objective
        self.name = name

    def __call__(self, params: dict[str, Any]) -> float:
        return float(self.objective.known_values(params)[self.name])

    def __repr__(self) -> str:
        return f"KnownMetric({self.name!r})"


def _format_validation_error(err: ValidationError) -> ConfigError:
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    if loc[:1] == ("runner",) and len(loc) > 1 and loc[1] in ("local", "ray"):
        loc = loc[:1] + loc[2:]  # the union's tag is not a field the user wrote
    msg = first["msg"]
    msg = msg.removeprefix("Value error, ")
    received = first.get("input")
    if first["type"] == "missing":
        message = f"required field is missing ({msg.lower()})"
    elif isinstance(received, Mapping) or first["type"] in ("value_error", "assertion_error"):
        message = msg
    else:
        message = f"got {describe(received)}: {msg}"
    more = len(err.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(message, path=[p for p in loc if isinstance(p, (str, int))])


def load_spec(
    source: str | Path | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    resolve: bool = True,
) -> SearchSpec:
    """Read, validate and resolve a spec.

    Args:
        source: A path to a YAML file, or the already-parsed mapping.
        overrides: ``"dotted.key=value"`` changes applied before validation (the CLI's
            ``--set``); the value is read as YAML (``3``, ``true``, ``[q, v]``, ``null``), and a
            list item is addressed by its index (``enqueue.0.label=...``).
        resolve: Build the objective and resolve the space, metrics and reference point
            (``False``: only read the spec, for looking at an existing study).

    Returns:
        The validated spec.

    Raises:
        ConfigError: The file cannot be read or parsed, or the spec is invalid; ``path`` names
            the field.
    """
    import yaml

    if isinstance(source, Mapping):
        data: Any = dict(source)
        origin = None
    else:
        origin = Path(source)
        try:
            text = origin.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read spec file {str(origin)!r}: {err.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{origin} is not valid YAML{line}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"a spec must be a mapping of keys (study, objective, budget, ...), but got "
            f"{type(data).__name__}"
        )
    data = apply_overrides(data, overrides)
    plugins = data.get("plugins") or []
    if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
        raise ConfigError(
            f"must be a list of modules or files, but got {describe(plugins)}", path=("plugins",)
        )
    load_plugins(plugins)
    try:
        # The runner section is validated by the model its type registered.
        data = {**data, "runner": runner_settings(data.get("runner") or {})}
    except ValidationError as err:
        raise _format_validation_error(err).prefixed("runner") from None
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err) from None
    if resolve:
        spec._resolve()
    _check_numbers(spec)
    return spec


def load_plugins(names: Sequence[str]) -> None:
    """Import each module (``my_pkg.plugin``) or file (``plugin.py``, relative to the working
    directory) once: what it registers (controllers, runners, objective types) is then usable.

    Raises:
        ConfigError: A module or file cannot be found (path ``plugins[i]``).
    """
    from paretune.objectives._registry import load_module

    for i, name in enumerate(names):
        try:
            load_module(name)
        except ConfigError as err:
            raise ConfigError(err.message, path=("plugins", i)) from None


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``"dotted.key=value"`` set (see :func:`load_spec`).

    Raises:
        ConfigError: An override is not ``key=value``, or its path runs through a value that is
            not a mapping or list, or through a list index out of range.
    """
    import copy

    import yaml

    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"an override must look like `objective.settings.epochs=2`, but got {item!r}"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {item!r}: {where!r} must be an index below {len(node)}"
                    )
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}  # a new (or empty) section
                    node = node[part]
            else:
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[:depth])!r} is "
                    f"{describe(node)}, not a section"
                )
    return out


def _check_numbers(spec: SearchSpec) -> None:
    if spec.objective.reference_point:
        for key, value in spec.objective.reference_point.items():
            if not math.isfinite(value):
                raise ConfigError(
                    f"must be finite, but got {value}", path=("objective", "reference_point", key)
                )

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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from paretune._errors import ConfigError, describe

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
    "load_spec",
]


class _Strict(BaseModel):
    """Base of every spec section: unknown keys are errors that list the allowed keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise ValueError(f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        return data


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
    """

    trials: int | None = Field(default=None, ge=1)
    wall_time: float | None = Field(default=None, gt=0)
    max_failures_in_a_row: int | None = Field(default=10, ge=1)

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


class LocalRunnerSpec(_Strict):
    """Evaluate trials on this machine: in the driver (``n_jobs: 1``) or in worker processes."""

    type: Literal["local"] = "local"
    n_jobs: int = Field(default=1, ge=1)
    # CPU threads of each worker process (n_jobs > 1); default: CPUs // n_jobs, at least 1.
    threads: int | None = Field(default=None, ge=1)


class ResourceRuleSpec(_Strict):
    """Resources for the candidates whose ``params`` match (each value, or any of a list)."""

    params: dict[str, Any] = Field(min_length=1)
    cpu: float | None = Field(default=None, ge=0)
    gpu: float | None = Field(default=None, ge=0)

    def matches(self, params: Mapping[str, Any]) -> bool:
        for name, wanted in self.params.items():
            if name not in params:
                return False
            options = wanted if isinstance(wanted, list) else [wanted]
            if params[name] not in options:
                return False
        return True


class ResourcesSpec(_Strict):
    """What one trial holds on a Ray worker: CPUs and a (fractional) share of GPUs.

    ``when`` computes the request from the candidate: the first rule whose ``params`` match
    overrides ``cpu``/``gpu`` (a proxy model gets a quarter GPU, the wide target a whole one)::

        resources:
          cpu: 1
          gpu: 0.25
          when:
            - {params: {width: [1024, 2048]}, gpu: 1}
    """

    cpu: float = Field(default=1.0, ge=0)
    gpu: float = Field(default=0.0, ge=0)
    when: list[ResourceRuleSpec] = Field(default_factory=list)

    def for_params(self, params: Mapping[str, Any]) -> dict[str, float]:
        cpu, gpu = self.cpu, self.gpu
        for rule in self.when:
            if rule.matches(params):
                cpu = rule.cpu if rule.cpu is not None else cpu
                gpu = rule.gpu if rule.gpu is not None else gpu
                break
        return {"cpu": cpu, "gpu": gpu}

    @model_validator(mode="after")
    def _whole_or_fraction(self) -> ResourcesSpec:
        gpus = [self.gpu] + [r.gpu for r in self.when if r.gpu is not None]
        for gpu in gpus:
            if gpu > 1 and gpu != int(gpu):
                raise ValueError(
                    f"a trial asks for a fraction of one GPU or for whole GPUs, but gpu={gpu}"
                )
        return self


class RayRunnerSpec(_Strict):
    """Evaluate trials on a Ray Tune worker pool (a local Ray cluster, or one at ``address``).

    Attributes:
        address: A running cluster to join (``auto``, ``ray://host:10001`` or ``host:6379``);
            unset, the runner starts a local cluster for the search and stops it after.
        num_cpus: CPUs of the local cluster (default: all of this machine's).
        num_gpus: GPUs of the local cluster (default: those Ray detects).
        max_concurrent: Trials running at once (default: as many as the cluster's resources
            hold when the search starts, from ``resources``' cpu and gpu).
        resources: Per-trial resources, fixed or by candidate.
        max_failures: How often a trial whose worker died is retried before it fails.
        reuse_actors: Keep worker processes between trials (much less per-trial overhead);
            not with ASHA, whose stopped trials Tune cannot reset.
        scheduler: ``fifo``, or ``asha`` to stop poor trials early from what they report
            (one optimised metric); ``scheduler_options`` are ``ASHAScheduler``'s arguments.
    """

    type: Literal["ray"]
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_failures: int = Field(default=2, ge=0)
    reuse_actors: bool = True
    scheduler: Literal["fifo", "asha"] = "fifo"
    scheduler_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _local_or_joined(self) -> RayRunnerSpec:
        if self.address is not None and (self.num_cpus is not None or self.num_gpus is not None):
            raise ValueError(
                "num_cpus/num_gpus size a local cluster; a joined cluster (address) has its own"
            )
        return self


RunnerSpec = Annotated[LocalRunnerSpec | RayRunnerSpec, Field(discriminator="type")]

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
    """

    study: str
    run_dir: Path | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    objective: ObjectiveSpec
    space: dict[str, dict[str, Any]] | None = None
    controller: ControllerSpec = Field(default_factory=lambda: ControllerSpec(name="tpe"))
    budget: BudgetSpec
    runner: RunnerSpec = Field(default_factory=LocalRunnerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    enqueue: list[EnqueueSpec] = Field(default_factory=list)

    _space: Any = PrivateAttr(default=None)
    _metrics: tuple[Any, ...] | None = PrivateAttr(default=None)
    _reference_point: dict[str, float] | None = PrivateAttr(default=None)
    _max_hypervolume: float | None = PrivateAttr(default=None)
    _objective: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _local_runner_by_default(cls, data: Any) -> Any:
        runner = data.get("runner") if isinstance(data, Mapping) else None
        if isinstance(runner, Mapping) and "type" not in runner:
            data = {**data, "runner": {"type": "local", **runner}}
        return data

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
        names = set(getattr(self._objective, "known_metrics", ()) or ())
        if not callable(getattr(self._objective, "known_values", None)):
            return {}
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
            space = getattr(objective, "space", None)
            if space is None:
                raise ConfigError(
                    f"objective type {self.objective.type!r} declares no space; "
                    "add a `space:` section",
                    path=("space",),
                )

        if self.objective.metrics is not None:
            metrics = tuple(Metric(m.name, m.direction) for m in self.objective.metrics)
        else:
            metrics = tuple(getattr(objective, "metrics", ()) or ())
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

        reference = self.objective.reference_point
        if reference is not None:
            if set(reference) != set(names):
                raise ConfigError(
                    f"reference_point must give one value per metric {names}, but got keys "
                    f"{sorted(reference)}",
                    path=("objective", "reference_point"),
                )
        else:
            reference = getattr(objective, "reference_point", None)
            if reference is not None and set(reference) != set(names):
                reference = None  # the problem's reference is for other metrics
        max_hv = getattr(objective, "max_hypervolume", None)
        if self.objective.metrics is not None or self.objective.reference_point is not None:
            max_hv = None  # only meaningful for the problem's own metrics and reference

        if isinstance(self.runner, RayRunnerSpec) and self.runner.scheduler == "asha":
            if len(metrics) > 1:
                raise ConfigError(
                    f"ASHA stops trials on one metric, but the spec optimises {names}; use "
                    "`scheduler: fifo`",
                    path=("runner", "scheduler"),
                )
            if self.pruner.name != "none":
                raise ConfigError(
                    "the spec has both an Optuna pruner and Ray's ASHA scheduler; choose one "
                    "(`pruner: {name: none}` or `scheduler: fifo`)",
                    path=("runner", "scheduler"),
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

    def trial_seed(self, trial_number: int) -> int:
        """The seed handed to the objective of trial ``trial_number`` (stable across resumes)."""
        base = self.controller.seed if self.controller.seed is not None else 0
        return (base * 1_000_003 + trial_number) % (2**31 - 1)


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
    source: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> SearchSpec:
    """Read, validate and resolve a spec.

    Args:
        source: A path to a YAML file, or the already-parsed mapping.
        overrides: ``"dotted.key=value"`` changes applied before validation (the CLI's
            ``--set``); the value is read as YAML (``3``, ``true``, ``[q, v]``, ``null``), and a
            list item is addressed by its index (``enqueue.0.label=...``).

    Returns:
        The validated spec, with its space, metrics and reference point resolved.

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
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err) from None
    spec._resolve()
    _check_numbers(spec)
    return spec


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

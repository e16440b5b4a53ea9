"""The sections of a spec, each a strict pydantic model (unknown keys are errors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from paretune._validation import StrictModel

__all__ = [
    "BudgetSpec",
    "ConstraintSpec",
    "ControllerSpec",
    "EnqueueSpec",
    "MetricSpec",
    "ObjectiveSpec",
    "PrunerSpec",
]

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

"""What the trials store needs to know about a study: :class:`StudyConfig`, nothing more."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from paretune._errors import ConfigError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric
    from paretune.spaces import SearchSpace

__all__ = [
    "Baseline",
    "Constraint",
    "MetricConstraints",
    "StudyConfig",
    "constraint_violations",
]


@dataclass(frozen=True)
class Constraint:
    """An outcome constraint on a returned metric: feasible iff ``min <= metric <= max``."""

    metric: str
    max: float | None = None
    min: float | None = None


@dataclass(frozen=True)
class Baseline:
    """A parameter set evaluated before the controller's own, once per study."""

    params: Mapping[str, Any]
    label: str | None = None


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """One study: where it is stored and tracked, what it optimises, and how trials are seeded.

    Attributes:
        name: The Optuna study name (and the MLflow experiment's).
        storage_url: An SQLAlchemy URL of the Optuna storage.
        tracking_uri: The MLflow tracking URI, or ``None`` for no MLflow.
        run_dir: A directory the store writes into (the embedded SQLite files, MLflow's local
            artifacts, Ray's trial directories); created and checked for writing when the
            store opens. ``None`` when every store is remote.
        artifact_location: Where MLflow stores the artifacts of a new experiment (``None``:
            MLflow's default for the tracking URI).
        metrics: The optimised metrics in order. Empty for a read-only look at an existing
            study: the stored metric names and directions are used.
        space: The searched space (``None``: the store cannot prepare trials, only read).
        describe: A candidate's short readable name, ``describe(params) -> str``, which names
            its trial's MLflow run after the trial number (``t012 lora r4 qv sa48 L3-5``);
            ``None``: the space's :meth:`~paretune.spaces.SearchSpace.describe`.
        constraints: Outcome constraints; infeasible trials are never on the Pareto front.
        baselines: Parameter sets queued once when the study is started.
        seed: The study seed; trial ``n`` gets :meth:`trial_seed` ``(n)``.
        requeue: Queue the parameters of an interrupted trial again (a search); ``False``
            where the caller redoes what is missing itself (re-evaluations).
    """

    name: str
    storage_url: str
    tracking_uri: str | None = None
    run_dir: Path | None = None
    artifact_location: str | None = None
    metrics: tuple[Metric, ...] = ()
    space: SearchSpace | None = None
    describe: Callable[[Mapping[str, Any]], str] | None = None
    constraints: tuple[Constraint, ...] = ()
    baselines: tuple[Baseline, ...] = ()
    seed: int | None = 0
    requeue: bool = True

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [m.direction for m in self.metrics]

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def trial_seed(self, trial_number: int) -> int:
        """The seed handed to the objective of trial ``trial_number`` (stable across resumes)."""
        base = self.seed if self.seed is not None else 0
        return (base * 1_000_003 + trial_number) % (2**31 - 1)

    def check_tolerance(self, tolerance: Mapping[str, float] | None) -> list[float]:
        """Per-metric margins in metric order, from ``{metric: margin}``.

        Raises:
            ConfigError: A margin is given for a metric the study does not optimise, or is
                negative or not finite.
        """
        names = self.metric_names
        unknown = sorted(set(tolerance or {}) - set(names))
        if unknown:
            raise ConfigError(
                f"a Pareto tolerance is given for {unknown}, which the study does not optimise; "
                f"its metrics are {names}."
            )
        margins = [float((tolerance or {}).get(n, 0.0)) for n in names]
        for name, margin in zip(names, margins, strict=True):
            if not (math.isfinite(margin) and margin >= 0):
                raise ConfigError(
                    f"the Pareto tolerance of {name!r} must be a finite number >= 0, but got "
                    f"{margin}."
                )
        return margins


def constraint_violations(
    constraints: Sequence[Constraint], metrics: Mapping[str, float] | None
) -> list[float]:
    """Optuna-style constraint values for ``metrics``: feasible iff every value is ``<= 0``.

    A missing metric (a failed or pruned trial) counts as violated.
    """
    out: list[float] = []
    for c in constraints:
        value = None if metrics is None else metrics.get(c.metric)
        if value is None or not math.isfinite(value):
            out.extend([1.0] * ((c.max is not None) + (c.min is not None)))
            continue
        if c.max is not None:
            out.append(float(value) - c.max)
        if c.min is not None:
            out.append(c.min - float(value))
    return out


class MetricConstraints:
    """``constraints_func`` for Optuna samplers; a class so samplers stay picklable (Ray)."""

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = tuple(constraints)

    def __call__(self, trial: FrozenTrial) -> list[float]:
        from paretune.trials_store._attrs import METRICS_ATTR

        return constraint_violations(self.constraints, trial.user_attrs.get(METRICS_ATTR))

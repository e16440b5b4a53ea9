"""What the figures read: one study's trials and what the spec says about them, read once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.objectives import pareto_mask
from paretune.trials_store import BASELINE_ATTR, LABEL_ATTR, METRICS_ATTR, constraint_violations

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric
    from paretune.trials_store import Constraint, TrialsStore

__all__ = ["StudyData"]


@dataclass(frozen=True, eq=False)
class StudyData:
    """A study as the figures see it: plain values, no storage.

    Build it with :meth:`from_store` (what ``paretune report`` does) or directly from trials
    (a notebook, a test). Every figure family reads this and nothing else, so a figure's data
    can be checked without a database.

    Attributes:
        name: The study's name.
        metrics: The optimised metrics, in the order of the trials' values.
        trials: Every trial, in number order (any state).
        constraints: Outcome constraints; a trial that violates one is infeasible.
        reference_point: Per metric, the hypervolume reference (``None``: taken from the
            trials, see :meth:`hypervolume_reference`).
        reevaluations: Trial number -> seed -> metrics, from ``paretune reevaluate``.
        attrs: The study's user attributes.
    """

    name: str
    metrics: tuple[Metric, ...]
    trials: tuple[FrozenTrial, ...]
    constraints: tuple[Constraint, ...] = ()
    reference_point: Mapping[str, float] | None = None
    reevaluations: Mapping[int, Mapping[int, Mapping[str, float]]] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_store(
        cls,
        store: TrialsStore,
        *,
        reference_point: Mapping[str, float] | None = None,
        reevaluations: bool = True,
    ) -> StudyData:
        """Read a study once.

        Args:
            store: The open study (a read-only store is enough).
            reference_point: The spec's hypervolume reference, if any.
            reevaluations: Read ``paretune reevaluate``'s companion study too (error bars).
        """
        from paretune.search import stored_reevaluations

        config = store.config
        metrics = tuple(config.metrics)
        if not metrics:  # a read-only store: the names and directions the study keeps
            from paretune.objectives import Metric

            names = store.study.metric_names or [
                f"f{i}" for i in range(len(store.study.directions))
            ]
            metrics = tuple(
                Metric(n, "minimize" if d.name == "MINIMIZE" else "maximize")
                for n, d in zip(names, store.study.directions, strict=True)
            )
        return cls(
            name=config.name,
            metrics=metrics,
            trials=tuple(store.study.get_trials(deepcopy=False)),
            constraints=tuple(config.constraints),
            reference_point=reference_point,
            reevaluations=(
                stored_reevaluations(config.storage_url, config.name) if reevaluations else {}
            ),
            attrs=dict(store.study.user_attrs),
        )

    # -- derived views (computed once) ------------------------------------------------------

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    @property
    def directions(self) -> list[str]:
        return [m.direction for m in self.metrics]

    @cached_property
    def complete(self) -> list[FrozenTrial]:
        """The COMPLETE trials with a finite value per metric, in number order."""
        out = []
        for t in self.trials:
            if t.state.name != "COMPLETE" or t.values is None:
                continue
            if len(t.values) == len(self.metrics) and all(math.isfinite(v) for v in t.values):
                out.append(t)
        return out

    @cached_property
    def values(self) -> np.ndarray:
        """The complete trials' values, ``(n, len(metrics))``."""
        return np.array([t.values for t in self.complete], dtype=float).reshape(
            len(self.complete), len(self.metrics)
        )

    @cached_property
    def feasible(self) -> np.ndarray:
        """Per complete trial, whether it meets every outcome constraint."""
        if not self.constraints:
            return np.ones(len(self.complete), dtype=bool)
        return np.array(
            [
                all(
                    v <= 0
                    for v in constraint_violations(self.constraints, t.user_attrs.get(METRICS_ATTR))
                )
                for t in self.complete
            ],
            dtype=bool,
        )

    @cached_property
    def on_front(self) -> np.ndarray:
        """Per complete trial, whether it is feasible and no feasible trial dominates it."""
        mask = np.zeros(len(self.complete), dtype=bool)
        if len(self.complete):
            keep = self.feasible
            mask[keep] = pareto_mask(self.values[keep], self.directions)
        return mask

    @property
    def pareto(self) -> list[FrozenTrial]:
        return [t for t, on in zip(self.complete, self.on_front, strict=True) if on]

    def label(self, trial: FrozenTrial) -> str | None:
        """A baseline's label (``"baseline"`` for an unlabelled one), else ``None``."""
        label = trial.user_attrs.get(LABEL_ATTR)
        if label is None and trial.user_attrs.get(BASELINE_ATTR):
            return "baseline"
        return None if label is None else str(label)

    def hypervolume_reference(self) -> np.ndarray:
        """The reference point: the spec's where given, else the worst feasible value of each
        metric pushed out by 10 % of its range (1 where the range is 0), as Optuna's
        ``plot_hypervolume_history`` asks its caller to choose one."""
        if self.reference_point is not None:
            return np.array([float(self.reference_point[n]) for n in self.metric_names])
        values = self.values[self.feasible] if len(self.complete) else self.values
        if not len(values):
            return np.zeros(len(self.metrics))
        signs = np.array([1.0 if d == "minimize" else -1.0 for d in self.directions])
        worst = (values * signs).max(axis=0)
        span = (values * signs).max(axis=0) - (values * signs).min(axis=0)
        margin = np.where(span > 0, 0.1 * span, 1.0)
        return (worst + margin) * signs

    def params_of(self, trials: Sequence[FrozenTrial]) -> list[str]:
        """The parameter names used by any of ``trials``, in first-seen order."""
        seen: dict[str, None] = {}
        for t in trials:
            for name in t.params:
                seen.setdefault(name, None)
        return list(seen)

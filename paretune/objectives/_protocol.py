"""The objective protocol: what a trial computes.

An objective is any callable ``objective(params, ctx) -> dict[str, float]``. ``params`` holds the
values of the active parameters of one candidate (inactive conditional parameters are absent);
``ctx`` is a :class:`TrialContext`. The returned mapping must contain every metric the spec names
(it may contain more: extra metrics are recorded but not optimised).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from optuna.exceptions import TrialPruned as _OptunaTrialPruned

from paretune._errors import ConfigError

if TYPE_CHECKING:
    from paretune.spaces.dynamic import Decision, DecisionState

__all__ = ["Decider", "Direction", "Metric", "Objective", "TrialContext", "TrialPruned"]

Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class Metric:
    """A named objective value and the direction in which it improves."""

    name: str
    direction: Direction

    def __post_init__(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(
                f"direction must be 'minimize' or 'maximize', but got {self.direction!r}.",
                path=(self.name, "direction"),
            )


class TrialPruned(_OptunaTrialPruned):
    """Raised by an objective (usually after :meth:`TrialContext.should_prune`) to stop early.

    The runner records the trial as PRUNED with its last reported values. It is Optuna's
    ``TrialPruned``, so objectives written for Optuna work unchanged.
    """


@runtime_checkable
class Objective(Protocol):
    """``objective(params, ctx) -> dict[str, float]``."""

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]: ...


ReportSink = Callable[[int, dict[str, float]], None]

#: What :meth:`TrialContext.decide` asks: ``decider(state) -> Decision`` (a policy, a replayed
#: schedule); see :mod:`paretune.spaces.dynamic`.
Decider = Callable[["DecisionState"], "Decision"]


@dataclass
class TrialContext:
    """What an objective knows about the trial it runs in, and how it talks back.

    Runners create it; an objective only reads its fields and calls :meth:`report`,
    :meth:`should_prune` and, for a setting it changes while it trains, :meth:`decide`.
    Constructed directly (``TrialContext(trial_number=0)``) it is a
    stand-alone context for calling an objective by hand: reports are kept in :attr:`history`.

    Attributes:
        trial_number: The Optuna trial number.
        seed: A seed derived from the study seed and the trial number; objectives seed their
            RNGs with it so a trial is reproducible.
        budget: The fidelity the trial runs at, the objective's
            :attr:`~paretune.objectives.BaseObjective.fidelity`: a fraction of its full fidelity
            (e.g. of the training data or of the steps), or ``None`` where the objective has one
            fidelity or its settings say how much a trial does.
        device: Where to compute, for example ``"cpu"`` or ``"cuda:0"``.
        settings: The objective's settings from the spec.
        history: ``(step, metrics)`` pairs in the order they were reported.
        decisions: The :class:`~paretune.spaces.dynamic.Decision` of each :meth:`decide`, in
            order (the trial's trajectory).
    """

    trial_number: int
    seed: int = 0
    budget: float | None = None
    device: str = "cpu"
    settings: Mapping[str, Any] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    _sinks: list[ReportSink] = field(default_factory=list, repr=False)
    _pruner: Callable[[], bool] | None = field(default=None, repr=False)
    _decider: Decider | None = field(default=None, repr=False)

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record intermediate metrics at ``step`` (learning curves, pruning decisions).

        Args:
            step: A non-negative step counter that increases between calls (an epoch, an
                optimiser step, a number of examples seen).
            metrics: Metric name to finite float.
        """
        if step < 0:
            raise ValueError(f"`step >= 0` must hold, but got step={step}.")
        if self.history and step <= self.history[-1][0]:
            raise ValueError(
                f"steps must increase between reports, but got step={step} after "
                f"step={self.history[-1][0]}."
            )
        values = {str(k): float(v) for k, v in metrics.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"reported metrics must be finite, but got {bad} at step={step}.")
        self.history.append((step, values))
        for sink in self._sinks:
            sink(step, values)

    def should_prune(self) -> bool:
        """Whether the study's pruner asks this trial to stop (``False`` without a pruner)."""
        return self._pruner() if self._pruner is not None else False

    def add_sink(self, sink: ReportSink) -> None:
        """Runners call this to forward every :meth:`report` (to Optuna, MLflow, Ray)."""
        self._sinks.append(sink)

    def set_pruner(self, pruner: Callable[[], bool]) -> None:
        """Runners call this to connect :meth:`should_prune` to the study's pruner."""
        self._pruner = pruner

    def decide(self, state: DecisionState) -> float:
        """The value of a dynamic parameter from now on (DAC), given the run's ``state``.

        An objective calls it every ``interval`` steps of its
        :class:`~paretune.spaces.dynamic.DynamicParam` with the state after the steps taken
        (:class:`~paretune.spaces.dynamic.StateTracker` builds it). The runner's decider (a
        policy being trained, a saved one, a replayed schedule) decides; without one the
        value is held (``state.value``). Every decision is kept in :attr:`decisions`.
        """
        if self._decider is None:
            from paretune.spaces.dynamic import Decision

            decision = Decision(state=state, action=None, value=state.value)
        else:
            decision = self._decider(state)
        self.decisions.append(decision)
        return decision.value

    @property
    def has_decider(self) -> bool:
        """Whether :meth:`decide` asks a decider (else it holds the value)."""
        return self._decider is not None

    def set_decider(self, decider: Decider | None) -> None:
        """Runners call this to connect :meth:`decide` to the trial's policy."""
        self._decider = decider

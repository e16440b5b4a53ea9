"""The objective extension point: an objective type, what it declares and its lifecycle."""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe
from paretune.objectives._protocol import Metric, TrialContext

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace
    from paretune.spaces.dynamic import DynamicParam

__all__ = ["BaseObjective", "FunctionObjective", "checked_budget"]


class BaseObjective(abc.ABC):
    """What a trial computes, and what is known about it before any trial runs.

    An objective type is registered under a name
    (:func:`~paretune.objectives.register_objective`) with a factory, usually the subclass
    itself, called with the spec's ``objective.settings`` as keyword arguments.

    Lifecycle:

    1. **Built in the driver** by :func:`~paretune.objectives.build_objective`. The
       constructor validates its settings (raising :class:`~paretune.ConfigError` with the
       setting's path) and declares :attr:`space`, :attr:`metrics` and the rest. Building
       must be cheap: load no data and no weights here (the first call does that).
    2. **Rebuilt in each worker process** from the same type name and settings, once per
       process, and cached there: an objective need not pickle, and what its first call loads
       (a tokenizer, a model) serves the next trials of that process.
    3. **Called once per trial** as ``objective(params, ctx)`` with the candidate's active
       parameters; it returns ``{metric: float}`` with at least every optimised metric.
       ``ctx.budget`` is :attr:`fidelity` and ``ctx.device`` is the device the runner gives
       the trial (``"cpu"``, ``"cuda"``); ``ctx.report(step, metrics)`` streams curves.

    :meth:`describe` names a candidate for people (the MLflow child run of trial 7 reads
    ``t007 w256 lr2^-8``); the default leaves it to the searched space
    (:meth:`~paretune.spaces.SearchSpace.describe`). Override it where the objective knows
    what matters in its params better than their names do, or where a setting that is not a
    parameter (a model's width) belongs in the name.

    :meth:`at_fidelity` gives the same objective at another fidelity (``paretune reevaluate
    --full-fidelity`` builds ``at_fidelity(1.0)``): its result is rebuilt in workers the same
    way, from the type name, the settings and the budget.

    Attributes:
        space: The parameters a candidate sets, or ``None``: the spec must give ``space:``.
        metrics: The metrics the objective returns with their directions, or ``()``: the spec
            must name them (``objective.metrics``).
        reference_point: Metric name to a value worse than any interesting one (hypervolume),
            or ``None``.
        max_hypervolume: The true Pareto front's hypervolume from :attr:`reference_point`, where
            known (synthetic problems), else ``None``.
        known_metrics: Metrics :meth:`known_values` computes from the params alone, before
            training (a trainable-parameter count): a controller may use them exactly instead
            of modelling them.
        fidelity: The fidelity this objective evaluates at, as a fraction of its full fidelity
            (``1.0``: full), or ``None`` where it has one fidelity or the settings alone say
            how much a trial does.
        dynamic: The setting it changes while it trains through ``ctx.decide``
            (:class:`~paretune.spaces.dynamic.DynamicParam`), or ``None``: what ``paretune
            dac`` trains a policy for.
        overridable: The settings a parameter of the same name overrides for one trial
            (what a DAC instance such as ``{seed: 3}`` may set), or ``None``: not declared.
    """

    space: SearchSpace | None = None
    metrics: tuple[Metric, ...] = ()
    reference_point: Mapping[str, float] | None = None
    max_hypervolume: float | None = None
    known_metrics: tuple[str, ...] = ()
    fidelity: float | None = None
    dynamic: DynamicParam | None = None
    overridable: tuple[str, ...] | None = None

    @abc.abstractmethod
    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Evaluate one candidate (see the class docstring for the contract)."""

    def known_values(self, params: Mapping[str, Any]) -> dict[str, float]:
        """The :attr:`known_metrics` of a candidate, computed without training.

        Raises:
            NotImplementedError: The objective declares no known metrics.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no known metrics")

    def describe(self, params: Mapping[str, Any]) -> str | None:
        """A short readable name of the candidate ``params`` (``w256 lr2^-8``), or ``None``
        (the default): the searched space names it. Called in the driver when a trial's
        MLflow run starts; it must be cheap and never train or load anything."""
        return None

    def at_fidelity(self, budget: float) -> BaseObjective:
        """This objective evaluating at ``budget`` (``0 < budget <= 1``; ``1.0``: full).

        The default supports no other fidelity than the one it has.

        Raises:
            ConfigError: The objective has no such fidelity.
        """
        if self.fidelity is not None and budget == self.fidelity:
            return self
        raise ConfigError(
            f"{type(self).__name__} has no fidelity levels (no full-fidelity mode), so it cannot "
            f"evaluate at budget={describe(budget)}; evaluate it at its own fidelity (for "
            "`paretune reevaluate`: without --full-fidelity)."
        )


class FunctionObjective(BaseObjective):
    """A plain function ``f(params, ctx) -> dict[str, float]`` as an objective type.

    What :func:`~paretune.objectives.build_objective` makes of a factory that returns a plain
    callable (the ``python`` type): it declares nothing, so the spec names the space and the
    metrics. It runs at any fidelity it is asked for (:meth:`at_fidelity`), which the function
    reads as ``ctx.budget``: ``None`` by default, ``1.0`` for ``paretune reevaluate
    --full-fidelity``.
    """

    def __init__(self, function: Callable[[dict[str, Any], TrialContext], Any]) -> None:
        if not callable(function):
            raise ConfigError(f"an objective must be callable, but got {describe(function)}.")
        self.function = function

    def at_fidelity(self, budget: float) -> FunctionObjective:
        """The same function, called with ``ctx.budget = budget``; what that means is the
        function's to decide.

        Raises:
            ConfigError: ``budget`` is not a number in ``(0, 1]``.
        """
        twin = FunctionObjective(self.function)
        twin.fidelity = checked_budget(
            budget, "a fidelity is a fraction of full fidelity in (0, 1]"
        )
        return twin

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        result: dict[str, float] = self.function(params, ctx)
        return result

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", None) or repr(self.function)
        at = "" if self.fidelity is None else f", fidelity={self.fidelity:g}"
        return f"FunctionObjective({name}{at})"


def checked_budget(budget: Any, rule: str) -> float:
    """``budget`` as a float in ``(0, 1]``.

    Raises:
        ConfigError: It is not a number in ``(0, 1]``; the message is ``rule`` and the value.
    """
    if (
        isinstance(budget, bool)
        or not isinstance(budget, numbers.Real)
        or not 0 < float(budget) <= 1
    ):
        raise ConfigError(f"{rule}, but got budget={describe(budget)}.")
    return float(budget)

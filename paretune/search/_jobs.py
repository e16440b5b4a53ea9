"""One trial as a worker sees it: the :class:`Job` it gets, the :class:`Outcome` it gives back.

:func:`evaluate` is what every runner calls where the trial runs (the driver, a worker process,
a Ray worker): it rebuilds the objective from its :class:`ObjectiveRef` (once per process),
connects the trial's reports to the study and to MLflow
(:func:`~paretune.trials_store.attach_trial`), calls the objective and classifies what came of
it.
"""

from __future__ import annotations

import json
import math
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from paretune.search._signals import objective_in_main_thread, stop_requested
from paretune.trials_store import TrialLink

if TYPE_CHECKING:
    from paretune.objectives import Decider, TrialContext

__all__ = ["DeciderRef", "Job", "ObjectiveRef", "Outcome", "check_metrics", "evaluate"]


class DeciderRef(Protocol):
    """What a job carries to give its trial a decider (:meth:`TrialContext.decide`): plain
    data that pickles (a policy's weights, a schedule to replay), built into the decider where
    the trial runs."""

    def build(self, ctx: TrialContext) -> Decider: ...


@dataclass(frozen=True, kw_only=True)
class ObjectiveRef:
    """How to rebuild an objective in any process: its registered type, settings and budget,
    and the plugins (modules, or ``.py`` files by absolute path) to import first, which
    register a type defined outside paretune in each worker process as in the driver."""

    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    budget: float | None = None
    plugins: tuple[str, ...] = ()

    def key(self) -> str:
        return json.dumps(
            [self.type, self.settings, self.budget, self.plugins], sort_keys=True, default=str
        )


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a worker needs to evaluate one trial: plain data, so it pickles.

    Attributes:
        objective: The objective to build (cached per process).
        metric_names: The optimised metrics, which the result must hold as finite numbers.
        constraint_metrics: Metrics the result must hold (constrained ones).
        params: The candidate.
        seed: The trial's seed (``ctx.seed``).
        link: Where the trial reports (study, MLflow run).
        device: ``ctx.device``; ``"auto"``: CUDA where this process sees a GPU, else CPU.
        decider: What ``ctx.decide`` asks (a snapshot of the policy being trained), or
            ``None``: dynamic parameters are held.
    """

    objective: ObjectiveRef
    metric_names: tuple[str, ...]
    constraint_metrics: tuple[str, ...] = ()
    params: Mapping[str, Any]
    seed: int
    link: TrialLink
    device: str = "auto"
    decider: DeciderRef | None = None

    @property
    def trial_number(self) -> int:
        return self.link.trial_number


@dataclass
class Outcome:
    """What came of a job: ``state`` is COMPLETE, PRUNED or FAIL.

    ``last_step`` is the step of the objective's last ``ctx.report`` (``None``: it reported
    nothing); the final metrics are logged to MLflow after it. ``lost``: a FAIL because the
    worker process running it died, so the job itself may not be at fault (it may be retried).
    ``trajectory``: the decisions of ``ctx.decide`` as plain data
    (:meth:`~paretune.spaces.dynamic.Decision.to_dict`), or ``None`` where it made none.
    """

    state: str
    metrics: dict[str, float] | None = None
    error: str | None = None
    last_step: int | None = None
    lost: bool = False
    trajectory: list[dict[str, Any]] | None = None


def lost(error: str) -> Outcome:
    """The outcome of a job whose worker process died."""
    return Outcome("FAIL", error=error, lost=True)


def failed(error: str) -> Outcome:
    return Outcome("FAIL", error=error)


_objectives: dict[str, Any] = {}


def _objective(ref: ObjectiveRef) -> Any:
    from paretune.objectives import build_objective, load_module

    key = ref.key()
    if key not in _objectives:
        for plugin in ref.plugins:  # imported once per process
            load_module(plugin)
        _objectives[key] = build_objective(ref.type, ref.settings, budget=ref.budget)
    return _objectives[key]


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` where torch sees a GPU in this process, else ``"cpu"``."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_metrics(
    result: Any, names: Sequence[str], constraint_metrics: Sequence[str] = ()
) -> dict[str, float]:
    """The objective's return value as ``{name: float}``, or a ``ValueError`` saying why not.

    ``names`` (the optimised metrics) must be present and finite; ``constraint_metrics`` must
    be present (a constraint on a metric the objective never returns is a spec mistake that
    would otherwise make every trial silently infeasible).
    """
    if not isinstance(result, Mapping):
        raise ValueError(
            f"an objective must return a dict of metrics {list(names)}, but returned "
            f"{type(result).__name__}"
        )
    missing = [n for n in names if n not in result]
    if missing:
        raise ValueError(
            f"the objective's result lacks metric(s) {missing}; it returned keys {sorted(result)}"
        )
    unconstrained = [n for n in constraint_metrics if n not in result]
    if unconstrained:
        raise ValueError(
            f"the spec constrains metric(s) {unconstrained}, which the objective did not "
            f"return; it returned keys {sorted(result)}"
        )
    out: dict[str, float] = {}
    for k, v in result.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"metric {k!r} must be a number, but got {v!r}") from None
    bad = {n: out[n] for n in names if not math.isfinite(out[n])}
    if bad:
        raise ValueError(f"optimised metrics must be finite, but got {bad}")
    return out


def evaluate(job: Job, *, sinks: Sequence[Callable[[int, dict[str, float]], None]] = ()) -> Outcome:
    """Run one trial's objective (in the driver or a worker) and classify the outcome.

    Exceptions of the objective become FAIL outcomes with the traceback; ``KeyboardInterrupt``
    propagates (the runner handles it).

    Args:
        job: The trial to evaluate.
        sinks: More receivers of ``ctx.report(step, metrics)`` besides MLflow and Optuna (the
            Ray runner streams reports to Tune).
    """
    import optuna

    from paretune.objectives import TrialContext
    from paretune.trials_store import attach_trial

    ctx: Any = None
    try:
        objective = _objective(job.objective)
        ctx = TrialContext(
            trial_number=job.trial_number,
            seed=job.seed,
            budget=objective.fidelity,
            device=resolve_device(job.device),
            settings=dict(job.objective.settings),
        )
        attach_trial(ctx, job.link)
        if job.decider is not None:
            ctx.set_decider(job.decider.build(ctx))
        for sink in sinks:
            ctx.add_sink(sink)
        main = threading.current_thread() is threading.main_thread()
        if main:
            objective_in_main_thread.set()
        try:
            if main and stop_requested():
                raise KeyboardInterrupt  # a stop arrived while the trial was being set up
            result = objective(dict(job.params), ctx)
        finally:
            objective_in_main_thread.clear()
        metrics = check_metrics(result, job.metric_names, job.constraint_metrics)
    except optuna.TrialPruned:  # paretune's TrialPruned is a subclass
        step, last = ctx.history[-1] if ctx.history else (None, None)
        return Outcome("PRUNED", metrics=last, last_step=step, trajectory=_trajectory(ctx))
    except KeyboardInterrupt:
        raise
    except BaseException:  # SystemExit from an argparse-using script is a failed trial too
        return Outcome(
            "FAIL",
            error=traceback.format_exc(),
            last_step=_last_step(ctx),
            trajectory=_trajectory(ctx),
        )
    return Outcome(
        "COMPLETE", metrics=metrics, last_step=_last_step(ctx), trajectory=_trajectory(ctx)
    )


def _last_step(ctx: Any) -> int | None:
    return ctx.history[-1][0] if ctx is not None and ctx.history else None


def _trajectory(ctx: Any) -> list[dict[str, Any]] | None:
    if ctx is None or not ctx.decisions:
        return None
    return [d.to_dict() for d in ctx.decisions]

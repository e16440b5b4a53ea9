"""Dynamic parameters: settings an objective changes during a run, decided every few steps.

Dynamic algorithm configuration (DAC, Adriaensen et al., JAIR 2022) controls a setting while a
run trains (its learning rate, a rank budget) from the run's state. Three pieces meet here:

* :class:`DynamicParam`: what may change, how (a set of actions that scale or set the value,
  or a range the value is set within), within which bounds, and how often a decision is taken
  (every ``interval`` steps);
* :class:`DecisionState`: what a decider sees at a decision: the run's progress, its current
  loss and the loss's recent slope, the gradient norm, the update-to-weight ratio and the
  parameter's current value; :class:`StateTracker` builds it from the quantities a training
  loop has at hand;
* :class:`Decision`: what was decided (the action, the new value and, for a learned policy, the
  action's log-probability), recorded by :meth:`~paretune.objectives.TrialContext.decide` in
  the trial's trajectory.

An objective with a dynamic parameter asks ``value = ctx.decide(state)`` every
``param.interval`` steps. Without a decider (a plain search) the value is held; the DAC trainer
(:mod:`paretune.search.dac`) gives each trial a policy, and a saved policy can be given to any
run.

Example:
    >>> from paretune.spaces.dynamic import DecisionState, DynamicParam
    >>> lr = DynamicParam("learning_rate", actions=(0.5, 1.0, 2.0), mode="scale",
    ...                   low=1e-5, high=1e-1, interval=25)
    >>> lr.apply(1e-3, 2)
    0.002
    >>> state = DecisionState(step=25, progress=0.1, loss=3.2, value=1e-3)
    >>> [round(x, 3) for x in state.features()][:2]
    [0.1, 3.2]

This module is plain Python and numpy: importing it loads no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from paretune._errors import ConfigError, describe

__all__ = [
    "FEATURES",
    "Decision",
    "DecisionState",
    "DynamicParam",
    "StateTracker",
    "dynamic_param_from_dict",
]

Mode = Literal["scale", "set"]

#: The features of a :class:`DecisionState`, in the order :meth:`DecisionState.features` gives.
FEATURES: tuple[str, ...] = (
    "progress",
    "loss",
    "loss_slope",
    "log10_grad_norm",
    "log10_update_ratio",
    "log2_value",
)


@dataclass(frozen=True, kw_only=True)
class DynamicParam:
    """A setting decided every ``interval`` steps while a run trains.

    With ``actions``, a decider picks one of them: ``mode="scale"`` multiplies the current
    value by it (``(0.5, 1.0, 2.0)``: halve, hold, double), ``mode="set"`` makes it the value.
    Without ``actions`` the decider returns a value in ``[low, high]`` (a continuous action, on
    a log scale where ``log``). The value always stays within ``[low, high]``.

    Attributes:
        name: The setting it controls (``learning_rate``).
        actions: The discrete actions, or ``None`` for a continuous one in ``[low, high]``.
        mode: ``"scale"`` or ``"set"`` (how a discrete action changes the value).
        low: The smallest value.
        high: The largest value.
        log: The value lives on a log scale (features and continuous actions use its log).
        interval: Steps between decisions (the first one is taken before the first step);
            required: a decision every step costs a policy call and a trajectory entry per step.
        initial: The value before the first decision, or ``None``: the objective's own setting.
    """

    name: str
    interval: int
    actions: tuple[float, ...] | None = None
    mode: Mode = "scale"
    low: float = 0.0
    high: float = math.inf
    log: bool = True
    initial: float | None = None

    def __post_init__(self) -> None:
        path = (self.name,)
        if not self.name:
            raise ConfigError("a dynamic parameter needs a name.", path=path)
        if self.mode not in ("scale", "set"):
            raise ConfigError(
                f"mode must be 'scale' or 'set', but got {self.mode!r}.", path=(*path, "mode")
            )
        if not (isinstance(self.interval, int) and self.interval >= 1):
            raise ConfigError(
                f"`interval >= 1` (steps between decisions) must hold, but got "
                f"{describe(self.interval)}.",
                path=(*path, "interval"),
            )
        if not self.low < self.high:
            raise ConfigError(
                f"`low < high` must hold, but got low={self.low:g}, high={self.high:g}.",
                path=(*path, "low"),
            )
        if self.log and self.low <= 0:
            raise ConfigError(
                f"a log-scale dynamic parameter needs low > 0, but got low={self.low:g}; "
                "set low, or log: false.",
                path=(*path, "low"),
            )
        if self.actions is not None:
            actions = tuple(float(a) for a in self.actions)
            if len(actions) < 2:
                raise ConfigError(
                    f"a decider needs at least two actions to choose from, but got "
                    f"{list(actions)}.",
                    path=(*path, "actions"),
                )
            if self.mode == "scale" and any(not (a > 0 and math.isfinite(a)) for a in actions):
                raise ConfigError(
                    f"scaling actions must be finite numbers > 0, but got {list(actions)}.",
                    path=(*path, "actions"),
                )
            object.__setattr__(self, "actions", actions)
        elif not math.isfinite(self.high):
            raise ConfigError(
                "a continuous dynamic parameter (no `actions`) needs a finite `high`.",
                path=(*path, "high"),
            )
        if self.initial is not None and not self.low <= self.initial <= self.high:
            raise ConfigError(
                f"`low <= initial <= high` must hold, but got initial={self.initial:g}.",
                path=(*path, "initial"),
            )

    @property
    def discrete(self) -> bool:
        """Whether a decider picks one of :attr:`actions` (else a value in the range)."""
        return self.actions is not None

    @property
    def n_actions(self) -> int:
        """How many discrete actions there are (0 for a continuous parameter)."""
        return 0 if self.actions is None else len(self.actions)

    def clip(self, value: float) -> float:
        """``value`` within ``[low, high]``."""
        return min(max(float(value), self.low), self.high)

    def apply(self, current: float, action: int | float) -> float:
        """The value after ``action``: a discrete action's index, or a continuous value.

        Raises:
            ValueError: The action is not an index of :attr:`actions`.
        """
        if self.actions is None:
            return self.clip(float(action))
        index = int(action)
        if index != action or not 0 <= index < len(self.actions):
            raise ValueError(
                f"`0 <= action < {len(self.actions)}` (an index of {list(self.actions)}) must "
                f"hold, but got action={action!r}."
            )
        chosen = self.actions[index]
        return self.clip(current * chosen if self.mode == "scale" else chosen)

    def hold_action(self) -> int | None:
        """The action that leaves the value as it is (scale by 1), where there is one."""
        if self.actions is None or self.mode != "scale":
            return None
        for i, a in enumerate(self.actions):
            if a == 1.0:
                return i
        return None

    def to_dict(self) -> dict[str, Any]:
        """The spec form, which :func:`dynamic_param_from_dict` reads back."""
        out = asdict(self)
        out["actions"] = None if self.actions is None else list(self.actions)
        if math.isinf(self.high):
            out.pop("high")
        return {k: v for k, v in out.items() if v is not None}


def dynamic_param_from_dict(spec: Mapping[str, Any], *, name: str | None = None) -> DynamicParam:
    """A :class:`DynamicParam` from its spec form (``{name, actions, mode, low, high, log,
    interval, initial}``; ``name`` may be given apart, as the key of a ``dynamic:`` mapping).

    Raises:
        ConfigError: An unknown key or an invalid value; the path names it.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a dynamic parameter is a mapping, but got {describe(spec)}.")
    data = dict(spec)
    if name is not None:
        data.setdefault("name", name)
    known = {"name", "actions", "mode", "low", "high", "log", "interval", "initial"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} of a dynamic parameter; allowed: "
            f"{', '.join(sorted(known))}.",
            path=(str(data.get("name", "?")), unknown[0]),
        )
    if "interval" not in data:
        raise ConfigError(
            "a dynamic parameter needs `interval`: the steps between decisions (e.g. 25).",
            path=(str(data.get("name", "?")), "interval"),
        )
    if isinstance(data.get("actions"), list):
        data["actions"] = tuple(data["actions"])
    for key in ("low", "high", "initial"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            data[key] = float(value)
        elif value is not None and not isinstance(value, float):
            raise ConfigError(
                f"{key} must be a number, but got {describe(value)}.",
                path=(str(data.get("name", "?")), key),
            )
    try:
        return DynamicParam(**data)
    except TypeError as err:
        raise ConfigError(str(err), path=(str(data.get("name", "?")),)) from None


@dataclass(frozen=True, kw_only=True)
class DecisionState:
    """What a decider sees when it decides (the DAC state).

    Attributes:
        step: Optimizer steps taken so far.
        progress: ``step / total steps``, in ``[0, 1]``.
        loss: The current training loss (smoothed over the last interval), or ``nan`` before
            the first step.
        loss_slope: The loss's change per 100 steps, the least-squares slope over the last two
            windows (negative while it falls), or 0 before there are two points.
        grad_norm: The global gradient norm (before clipping) at the last step, or ``nan``.
        update_ratio: The norm of the last update over the norm of the weights, or ``nan``.
        value: The controlled parameter's current value.
        name: The controlled parameter's name.
    """

    step: int
    progress: float
    loss: float = math.nan
    loss_slope: float = 0.0
    grad_norm: float = math.nan
    update_ratio: float = math.nan
    value: float = math.nan
    name: str = ""

    def features(self) -> list[float]:
        """The state as :data:`FEATURES`, finite (missing values are 0), on the scales a small
        policy network takes without further normalisation: logs of the norms and the value,
        the loss as it is, the slope clipped to ``[-10, 10]``."""

        def finite(x: float, default: float = 0.0) -> float:
            return x if math.isfinite(x) else default

        def log(x: float, base: float) -> float:
            return math.log(x, base) if math.isfinite(x) and x > 0 else 0.0

        return [
            finite(self.progress),
            finite(self.loss),
            max(-10.0, min(10.0, finite(self.loss_slope))),
            log(self.grad_norm, 10),
            log(self.update_ratio, 10),
            log(self.value, 2),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionState:
        def number(key: str, default: float = math.nan) -> float:
            value = data.get(key)
            return default if value is None else float(value)

        return cls(
            step=int(data["step"]),
            progress=number("progress"),
            loss=number("loss"),
            loss_slope=number("loss_slope", 0.0),
            grad_norm=number("grad_norm"),
            update_ratio=number("update_ratio"),
            value=number("value"),
            name=str(data.get("name", "")),
        )


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One decision of a trajectory.

    Attributes:
        state: What the decider saw.
        action: The discrete action's index, the continuous action's value, or ``None``: no
            decider (the value was held).
        value: The parameter's value after the action.
        log_prob: The action's log-probability under the policy that took it (``None``: not
            taken by a stochastic policy), which policy-gradient updates need.
        reward: The reward of the interval that followed, where the trainer has set it.
    """

    state: DecisionState
    action: int | float | None
    value: float
    log_prob: float | None = None
    reward: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the trajectory stored in the trial and logged to MLflow)."""
        return {
            "state": self.state.to_dict(),
            "action": self.action,
            "value": self.value,
            "log_prob": self.log_prob,
            "reward": self.reward,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            state=DecisionState.from_dict(data["state"]),
            action=data["action"],
            value=float(data["value"]),
            log_prob=data.get("log_prob"),
            reward=data.get("reward"),
        )


@dataclass
class StateTracker:
    """Builds :class:`DecisionState` from what a training loop has at hand.

    Call :meth:`observe` after each optimizer step and :meth:`state` at a decision.

    Args:
        total_steps: The steps of the whole run (for ``progress``).
        window: Steps over which the loss is smoothed and its slope measured.
    """

    total_steps: int
    window: int = 25
    _losses: list[tuple[int, float]] = field(default_factory=list, init=False, repr=False)
    _grad_norm: float = field(default=math.nan, init=False, repr=False)
    _update_ratio: float = field(default=math.nan, init=False, repr=False)

    def observe(
        self,
        step: int,
        loss: float,
        *,
        grad_norm: float | None = None,
        update_ratio: float | None = None,
    ) -> None:
        """Record the training loss after ``step`` steps (and the last gradient's norm and
        update-to-weight ratio where known)."""
        self._losses.append((step, float(loss)))
        del self._losses[: max(0, len(self._losses) - 2 * self.window)]
        if grad_norm is not None:
            self._grad_norm = float(grad_norm)
        if update_ratio is not None:
            self._update_ratio = float(update_ratio)

    def state(self, step: int, value: float, name: str = "") -> DecisionState:
        """The state after ``step`` steps, with the controlled parameter at ``value``."""
        recent = [(s, x) for s, x in self._losses if s > step - self.window]
        loss = sum(x for _, x in recent) / len(recent) if recent else math.nan
        # The least-squares slope over the last two windows' observations, per 100 steps:
        # robust to noise and to observations that are not one step apart.
        points = [(s, x) for s, x in self._losses if s > step - 2 * self.window]
        slope = 0.0
        if len(points) >= 2:
            mean_s = sum(s for s, _ in points) / len(points)
            mean_x = sum(x for _, x in points) / len(points)
            var = sum((s - mean_s) ** 2 for s, _ in points)
            if var > 0:
                cov = sum((s - mean_s) * (x - mean_x) for s, x in points)
                slope = cov / var * 100
        return DecisionState(
            step=step,
            progress=min(1.0, step / max(1, self.total_steps)),
            loss=loss,
            loss_slope=slope,
            grad_norm=self._grad_norm,
            update_ratio=self._update_ratio,
            value=float(value),
            name=name,
        )


def trajectory_to_dicts(decisions: Sequence[Decision]) -> list[dict[str, Any]]:
    """A trajectory as plain JSON data."""
    return [d.to_dict() for d in decisions]

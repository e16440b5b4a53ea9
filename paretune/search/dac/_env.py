"""A ``gymnasium.Env`` view of an objective that calls ``ctx.decide``.

The objective keeps its own loop: :class:`ObjectiveEnv` runs it in a background thread whose
:meth:`~paretune.objectives.TrialContext.decide` hands each decision state to the env and waits
for the action that :meth:`ObjectiveEnv.step` brings. The two threads take turns (one of them
is always waiting on a queue), so the objective needs no locking and runs as it would in a
trial.

Needs gymnasium (``pip install 'paretune[rl]'``); importing :mod:`paretune.search.dac` does
not load it, this module does.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, SupportsFloat

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.objectives import BaseObjective, Metric, TrialContext
from paretune.spaces.dynamic import FEATURES, Decision, DecisionState, DynamicParam

try:
    import gymnasium
    from gymnasium import spaces
except ImportError as err:  # pragma: no cover - exercised where gymnasium is missing
    raise ImportError(
        "paretune's ObjectiveEnv and train_on_env need gymnasium, which is not installed: "
        "pip install 'paretune[rl]'"
    ) from err

if TYPE_CHECKING:
    from paretune.objectives import Objective

__all__ = ["ObjectiveEnv"]

Reward = Literal["final"]
REWARDS: tuple[str, ...] = ("final",)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _EpisodeClosed(BaseException):
    """Raised inside the objective's thread by ``decide`` when the env stops the episode.

    A ``BaseException`` (like ``GeneratorExit``), so that an objective's ``except Exception``
    does not swallow it and the objective unwinds through its ``finally`` blocks.
    """


class ObjectiveEnv(gymnasium.Env):
    """An objective with a dynamic parameter as a ``gymnasium.Env``: one episode is one call
    of the objective on one instance; one step is one ``ctx.decide``.

    Observations are the decision state's :data:`~paretune.spaces.dynamic.FEATURES` (a
    ``float32`` Box of ``len(FEATURES)``, finite). Actions:

    * a discrete parameter (``actions``): ``Discrete(n)``, the action's index; the value is
      ``param.apply(current value, index)``;
    * a continuous parameter: a ``Box`` of shape ``(1,)`` over ``[log(low), log(high)]``
      (natural log) where ``param.log``, else over ``[low, high]``; the value is the action
      (``exp`` of it on a log scale), clipped to ``[low, high]`` (RL libraries do send
      actions outside the box).

    :meth:`action_for` turns a value (or a :class:`~paretune.spaces.dynamic.Decision`) into
    this action.

    ``reward="final"``: each step's reward is 0 until the objective returns, then the metric's
    value, negated where it is minimised; the step on which the objective returns is
    ``terminated``. Episodes are never truncated. An objective that returns without deciding
    at all (a budget of zero decisions) gives a first step that terminates whatever the
    action.

    ``info`` holds ``state`` (the :class:`~paretune.spaces.dynamic.DecisionState` as
    ``to_dict()``, ``None`` after the last decision), ``instance`` (its index) and
    ``params`` (the instance); a step's also ``value`` (what its action set the parameter to)
    and, on the terminating step, ``metrics`` (what the objective returned).

    An exception of the objective is raised by the :meth:`reset` or :meth:`step` that was
    waiting for it, with the objective's traceback; the episode is then over.

    Args:
        objective: ``objective(params, ctx) -> metrics`` that calls ``ctx.decide`` every
            ``param.interval`` steps.
        param: The dynamic parameter it decides.
        instances: The params of each instance (``{"seed": 3}``); an episode runs one,
            chosen by ``reset(options={"instance": i})`` or at random.
        reward: How the episode is rewarded (``"final"``).
        seed: Seeds the env's random generator when the first :meth:`reset` gives no seed
            (the instance chosen at random and the trial context's ``seed``).
        metric: The metric rewarded: a name among ``objective.metrics`` (default: the
            first), or a :class:`~paretune.objectives.Metric` for an objective that declares
            none.

    Example:
        >>> from paretune.objectives import NoisyQuadratic
        >>> objective = NoisyQuadratic(dynamic={"low": 0.01, "high": 1.0, "interval": 50})
        >>> env = ObjectiveEnv(objective, objective.dynamic, [{"seed": 0}, {"seed": 1}])
        >>> obs, info = env.reset(seed=0, options={"instance": 1})
        >>> obs.shape, info["state"]["step"]
        ((6,), 0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_for(0.1))
        >>> env.close()
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        objective: Objective,
        param: DynamicParam,
        instances: Sequence[Mapping[str, Any]],
        *,
        reward: Reward = "final",
        seed: int | None = None,
        metric: str | Metric | None = None,
    ) -> None:
        if not isinstance(param, DynamicParam):
            raise ConfigError(
                f"param must be a DynamicParam (the objective's dynamic parameter), but got "
                f"{describe(param)}."
            )
        if not instances or any(not isinstance(i, Mapping) for i in instances):
            raise ConfigError(
                "instances must be a non-empty sequence of parameter mappings ({'seed': 0}), "
                f"but got {describe(instances)}."
            )
        if reward not in REWARDS:
            raise ConfigError(
                f"reward must be one of {', '.join(REWARDS)}, but got {reward!r}.",
                path=("reward",),
            )
        self.objective = objective
        self.param = param
        self.instances = [dict(i) for i in instances]
        self.reward_kind = reward
        self.metric = _resolve_metric(objective, metric)
        self.observation_space = spaces.Box(
            low=-_FLOAT32_MAX, high=_FLOAT32_MAX, shape=(len(FEATURES),), dtype=np.float32
        )
        self.action_space: spaces.Space[Any]
        if param.discrete:
            self.action_space = spaces.Discrete(param.n_actions)
        else:
            low, high = (param.low, param.high)
            if param.log:
                low, high = math.log(low), math.log(high)
            self.action_space = spaces.Box(low=low, high=high, shape=(1,), dtype=np.float32)
        self._seed = seed
        self._seeded = False
        self._episodes = 0
        self._episode: _Episode | None = None
        self._state: DecisionState | None = None  # the decision waiting for an action
        self._result: Mapping[str, float] | None = None  # returned before any decision
        self._instance = 0
        self._obs = np.zeros(len(FEATURES), dtype=np.float32)
        #: The trial context of the current (or last) episode: its decisions and reports.
        self.context: TrialContext | None = None

    # -- gymnasium's API -----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (stopping a running one): the objective runs on
        ``options["instance"]`` (an index of ``instances``; default: one at random) until its
        first decision.

        Raises:
            ConfigError: The instance is not an index of ``instances``.
            Exception: Whatever the objective raised before its first decision.
        """
        self._stop()
        if seed is None and not self._seeded:
            seed = self._seed
        super().reset(seed=seed)
        self._seeded = True
        index = (options or {}).get("instance")
        if index is None:
            index = int(self.np_random.integers(len(self.instances)))
        elif (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not 0 <= index < len(self.instances)
        ):
            raise ConfigError(
                f"options['instance'] is an index of the {len(self.instances)} instances, "
                f"but got {describe(index)}.",
                path=("options", "instance"),
            )
        self._instance = int(index)
        self.context = TrialContext(
            trial_number=self._episodes, seed=int(self.np_random.integers(2**31 - 1))
        )
        self._episodes += 1
        self._episode = _Episode(
            self.objective, dict(self.instances[self._instance]), self.context, self._episodes
        )
        self._obs = np.zeros(len(FEATURES), dtype=np.float32)
        self._result = self._advance()
        return self._obs.copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply ``action`` to the waiting decision and run the objective to its next decision
        (reward 0) or to its end (the final reward, ``terminated``).

        Raises:
            gymnasium.error.ResetNeeded: No episode is running (before :meth:`reset`, after
                the episode ended or after :meth:`close`).
            ValueError: A discrete action that is not an index of the parameter's actions.
            Exception: Whatever the objective raised.
        """
        if self._result is not None:  # the objective returned without deciding
            metrics = self._result
            self._result = None
            return self._obs.copy(), self._reward(metrics), True, False, self._info(metrics=metrics)
        episode, state = self._episode, self._state
        if episode is None or state is None:
            raise gymnasium.error.ResetNeeded(
                "ObjectiveEnv.step needs a running episode: call reset() first (the last "
                "episode ended, or none was started)."
            )
        value = self._value(state, action)
        recorded = self._index(action) if self.param.discrete else value
        self._state = None
        episode.send(Decision(state=state, action=recorded, value=value))
        final = self._advance()
        if final is None:
            return self._obs.copy(), 0.0, False, False, self._info(value=value)
        return (
            self._obs.copy(),
            self._reward(final),
            True,
            False,
            self._info(value=value, metrics=final),
        )

    def close(self) -> None:
        """Stop a running episode: the objective's ``ctx.decide`` (where it waits for an
        action) raises an exception that unwinds it, and its thread is joined."""
        self._stop()
        super().close()

    def __del__(self) -> None:
        # An env dropped mid-episode: let its objective unwind (without waiting for it).
        episode = self.__dict__.get("_episode")
        if episode is not None:
            episode.stop(wait=False)

    # -- conversions -----------------------------------------------------------------------

    def action_for(self, value: float | Decision) -> int | np.ndarray:
        """The action that sets ``value`` (a continuous parameter), or a decision's action
        (its index for a discrete parameter, its value for a continuous one)."""
        if isinstance(value, Decision):
            if self.param.discrete:
                if value.action is None:
                    raise ValueError(f"a decision without an action index: {value}")
                return int(value.action)
            value = value.value
        if self.param.discrete:
            raise ValueError(
                f"{self.param.name} takes discrete actions (indices of "
                f"{list(self.param.actions or ())}), not a value: pass the index."
            )
        x = math.log(self.param.clip(value)) if self.param.log else self.param.clip(value)
        return np.array([x], dtype=np.float32)

    # -- helpers ---------------------------------------------------------------------------

    def _advance(self) -> Mapping[str, float] | None:
        """Wait for the objective: ``None`` when it asks for a decision (kept in
        ``_state``), its metrics when it returned. Re-raises its exception."""
        episode = self._episode
        assert episode is not None  # reset() and step() start or hold one
        kind, payload = episode.receive()
        if kind == "decide":
            self._state = payload
            self._obs = _observation(payload)
            return None
        self._episode = None
        episode.join()
        if kind == "error":
            raise payload
        return dict(payload)

    def _stop(self) -> None:
        if self._episode is not None:
            self._episode.stop()
        self._episode = None
        self._state = None
        self._result = None

    def _reward(self, metrics: Mapping[str, float]) -> float:
        if self.metric.name not in metrics:
            raise ConfigError(
                f"the objective returned no {self.metric.name!r} (the rewarded metric), only "
                f"{sorted(metrics)}; choose one with ObjectiveEnv(metric=...).",
                path=("metric",),
            )
        value = float(metrics[self.metric.name])
        return -value if self.metric.direction == "minimize" else value

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {
            "state": None if self._state is None else self._state.to_dict(),
            "instance": self._instance,
            "params": dict(self.instances[self._instance]),
            **extra,
        }

    @staticmethod
    def _index(action: Any) -> int:
        index = np.asarray(action).reshape(-1)
        if index.size != 1 or int(index[0]) != index[0]:
            raise ValueError(f"a discrete action is one index, but got {action!r}.")
        return int(index[0])

    def _value(self, state: DecisionState, action: Any) -> float:
        if self.param.discrete:
            return self.param.apply(state.value, self._index(action))
        x = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        return self.param.clip(math.exp(x) if self.param.log else x)


class _Episode:
    """One call of the objective in its own thread, and the two queues the threads take turns
    on: the objective puts ``("decide", state)`` and waits for ``("action", decision)`` or
    ``("stop", None)``; at its end it puts ``("done", metrics)``, ``("error", exception)`` or
    ``("closed", None)``."""

    def __init__(
        self, objective: Objective, params: dict[str, Any], ctx: TrialContext, number: int
    ) -> None:
        self._to_env: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._to_objective: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stopping = False
        ctx.set_decider(self._decide)
        self._thread = threading.Thread(
            target=self._run,
            args=(objective, params, ctx),
            name=f"paretune-objective-env-{number}",
            daemon=True,  # an env left open does not keep the interpreter alive
        )
        self._thread.start()

    def receive(self) -> tuple[str, Any]:
        return self._to_env.get()

    def send(self, decision: Decision) -> None:
        self._to_objective.put(("action", decision))

    def join(self) -> None:
        self._thread.join()

    def stop(self, *, wait: bool = True) -> None:
        """End the objective's run where it waits for an action (and join its thread)."""
        self._stopping = True
        self._to_objective.put(("stop", None))
        if wait:
            self._thread.join()

    # The objective's thread:

    def _decide(self, state: DecisionState) -> Decision:
        if self._stopping:  # an objective that caught the stop and asks again
            raise _EpisodeClosed
        self._to_env.put(("decide", state))
        kind, payload = self._to_objective.get()
        if kind == "stop":
            raise _EpisodeClosed
        decision: Decision = payload
        return decision

    def _run(self, objective: Objective, params: dict[str, Any], ctx: TrialContext) -> None:
        try:
            metrics = objective(params, ctx)
        except _EpisodeClosed:
            self._to_env.put(("closed", None))
        except BaseException as err:  # handed to the env's thread, which raises it
            self._to_env.put(("error", err))
        else:
            self._to_env.put(("done", metrics))


def _observation(state: DecisionState) -> np.ndarray:
    return np.clip(
        np.asarray(state.features(), dtype=np.float64), -_FLOAT32_MAX, _FLOAT32_MAX
    ).astype(np.float32)


def _resolve_metric(objective: Any, metric: str | Metric | None) -> Metric:
    if isinstance(metric, Metric):
        return metric
    declared = tuple(objective.metrics) if isinstance(objective, BaseObjective) else ()
    if metric is None:
        if not declared:
            raise ConfigError(
                "the objective declares no metrics: name the rewarded one with "
                "ObjectiveEnv(metric=Metric('loss', 'minimize')).",
                path=("metric",),
            )
        return declared[0]
    for m in declared:
        if m.name == metric:
            return m
    raise ConfigError(
        f"metric {metric!r} is not among the objective's metrics "
        f"({', '.join(m.name for m in declared) or 'none declared'}); pass a Metric to give "
        "its direction.",
        path=("metric",),
    )

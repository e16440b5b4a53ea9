"""Training a paretune :class:`~paretune.search.dac.Policy` on any ``gymnasium.Env``: a
paretune :class:`~paretune.search.dac.ObjectiveEnv`, or a foreign one (DACBench) through an
adapter from its observations to decision states."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from paretune._errors import ConfigError
from paretune.search.dac._env import ObjectiveEnv, gymnasium, spaces
from paretune.search.dac._policy import Policy
from paretune.search.dac._update import Episode, PolicyTrainer
from paretune.spaces.dynamic import Decision, DecisionState

__all__ = ["ToAction", "ToState", "run_episode", "train_on_env"]

#: ``to_state(obs, info, env) -> DecisionState``: a foreign env's observation as a state.
ToState = Callable[[Any, dict[str, Any], Any], DecisionState]
#: ``to_action(decision, env) -> action``: a policy's decision as the env's action.
ToAction = Callable[[Decision, Any], Any]


def train_on_env(
    env: gymnasium.Env,
    policy: Policy,
    trainer: PolicyTrainer,
    *,
    episodes: int,
    batch: int,
    instances: Sequence[Any] | None = None,
    seed: int = 0,
    to_state: ToState | None = None,
    to_action: ToAction | None = None,
) -> list[dict[str, float]]:
    """Train ``policy`` with ``trainer`` on ``env``: ``episodes`` episodes with actions sampled
    from the policy, an update every ``batch`` of them (and one on a last, smaller batch).

    Each episode's return (the sum of its rewards) is credited to all its decisions
    (:class:`~paretune.search.dac.Episode`); its instance, for the trainer's per-instance
    baselines, is what ``reset`` was given, else the ``info["instance"]`` that ``reset``
    returned, where the env tells it.

    Args:
        env: A gymnasium env; the policy's decisions become its actions.
        policy: The policy to train (in place); for an :class:`ObjectiveEnv`, over the env's
            dynamic parameter.
        trainer: Its trainer (REINFORCE or PPO).
        episodes: How many episodes to run.
        batch: Episodes per update.
        instances: The instances to cycle through, given to ``reset`` as
            ``options={"instance": instances[k % len(instances)]}`` (for an
            :class:`ObjectiveEnv`, indices of its instances); ``None``: the env chooses.
        seed: Seeds the action draws and each episode's ``reset(seed=...)``.
        to_state: ``(obs, info, env) -> DecisionState`` for an env whose ``info`` does not
            carry the state (``info["state"]``, as :class:`ObjectiveEnv`'s does).
        to_action: ``(decision, env) -> action``; default: :meth:`ObjectiveEnv.action_for`
            for an :class:`ObjectiveEnv`, the action's index for a ``Discrete`` action space,
            the value as a ``(1,)`` array for a ``Box`` one.

    Returns:
        Per update: the trainer's statistics (``loss``, ``entropy``, ``reward``: the mean
        return, ``episodes``) with ``update`` (its number, from 1), ``episodes_done`` and
        ``seconds`` (since training started).

    Raises:
        ConfigError: ``episodes`` or ``batch`` is not positive, or the policy controls
            another parameter than the env's.
    """
    if episodes < 1 or batch < 1:
        raise ConfigError(
            f"`episodes >= 1` and `batch >= 1` must hold, but got {episodes=}, {batch=}."
        )
    base = env.unwrapped
    if isinstance(base, ObjectiveEnv) and policy.param != base.param:
        raise ConfigError(
            f"the policy controls {policy.param}, but the env decides {base.param}; build the "
            "policy over the env's parameter (Policy(env.param, ...)).",
            path=("policy", "param"),
        )
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    stats: list[dict[str, float]] = []
    pending: list[Episode] = []
    for k in range(episodes):
        instance = None if instances is None else instances[k % len(instances)]
        pending.append(
            run_episode(
                env,
                policy,
                rng=rng,
                instance=instance,
                seed=int(rng.integers(2**31 - 1)),
                to_state=to_state,
                to_action=to_action,
            )
        )
        if len(pending) == batch or k == episodes - 1:
            row = trainer.update(pending)
            row.update(
                update=float(len(stats) + 1),
                episodes_done=float(k + 1),
                seconds=time.perf_counter() - start,
            )
            stats.append(row)
            pending = []
    return stats


def run_episode(
    env: gymnasium.Env,
    policy: Policy,
    *,
    rng: np.random.Generator | None = None,
    instance: Any = None,
    seed: int | None = None,
    to_state: ToState | None = None,
    to_action: ToAction | None = None,
) -> Episode:
    """One episode of ``policy`` on ``env``: actions sampled with ``rng``, or greedy (the most
    probable action) without one. The arguments are :func:`train_on_env`'s.

    Returns:
        The episode: its decisions (with their log-probabilities), its return and its
        instance (as text).
    """
    options = None if instance is None else {"instance": instance}
    obs, info = env.reset(seed=seed, options=options)
    label = instance if instance is not None else info.get("instance", "")
    decisions: list[Decision] = []
    total = 0.0
    while True:
        state = _state(obs, info, env, to_state)
        if state is None:  # an ObjectiveEnv whose objective returned without deciding
            action = env.action_space.sample()
        else:
            index, value, log_prob = policy.act(state, rng=rng)
            decision = Decision(state=state, action=index, value=value, log_prob=log_prob)
            decisions.append(decision)
            action = _action(decision, env, to_action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    return Episode(tuple(decisions), reward=total, instance=str(label))


def _state(
    obs: Any, info: dict[str, Any], env: Any, to_state: ToState | None
) -> DecisionState | None:
    if to_state is not None:
        return to_state(obs, info, env)
    if "state" not in info:
        raise ConfigError(
            "the env's info carries no decision state (info['state'], as ObjectiveEnv's "
            "does): pass to_state=(obs, info, env) -> DecisionState.",
            path=("to_state",),
        )
    data = info["state"]
    if data is None or isinstance(data, DecisionState):
        return data
    return DecisionState.from_dict(data)


def _action(decision: Decision, env: Any, to_action: ToAction | None) -> Any:
    if to_action is not None:
        return to_action(decision, env)
    base = env.unwrapped
    if isinstance(base, ObjectiveEnv):
        return base.action_for(decision)
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return int(space.start) + int(decision.action)  # type: ignore[arg-type]
    if isinstance(space, spaces.Box) and space.shape in ((1,), ()):
        return np.full(space.shape, decision.value, dtype=space.dtype)
    raise ConfigError(
        f"no default action for an action space {space}: pass to_action=(decision, env) -> action.",
        path=("to_action",),
    )

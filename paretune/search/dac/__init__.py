"""Dynamic algorithm configuration: policies that set a dynamic parameter while a run trains,
trained across runs and reused on new ones.

* :class:`Policy` (state features -> a distribution over actions), saved as JSON
  (:meth:`Policy.save`, :func:`load_policy`, also from an MLflow artifact URI);
* :class:`PolicyTrainer`: REINFORCE and PPO updates from finished :class:`Episode` s;
* :class:`PolicyDecider` and :class:`ScheduleDecider`: what a trial's ``ctx.decide`` asks
  (a policy snapshot, a replayed schedule), carried by the trial's job to its worker;
* :func:`run_dac`: a training run whose episodes are the trials of a study, on any runner;
* :class:`ObjectiveEnv`: a ``gymnasium.Env`` view of an objective that calls ``ctx.decide``,
  for external RL libraries; :func:`train_on_env` trains a :class:`Policy` on it or on any
  other gymnasium env (DACBench's) through an adapter of its observations.

:class:`ObjectiveEnv` and :func:`train_on_env` need gymnasium (``pip install 'paretune[rl]'``),
which is imported when one of them is first used, not with this package.

See :mod:`paretune.spaces.dynamic` for dynamic parameters and decision states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paretune.search.dac._deciders import PolicyDecider, ScheduleDecider
from paretune.search.dac._policy import Policy, PolicySnapshot, load_policy
from paretune.search.dac._run import (
    DAC_ATTR,
    DRIVER_ATTR,
    DACPlan,
    DACResult,
    claim_driver,
    dac_space,
    episode_rewards,
    held_out_results,
    run_dac,
)
from paretune.search.dac._update import ALGORITHMS, Episode, PolicyTrainer

if TYPE_CHECKING:
    from paretune.search.dac._env import ObjectiveEnv
    from paretune.search.dac._env_train import train_on_env

__all__ = [
    "ALGORITHMS",
    "DAC_ATTR",
    "DRIVER_ATTR",
    "DACPlan",
    "DACResult",
    "Episode",
    "ObjectiveEnv",
    "Policy",
    "PolicyDecider",
    "PolicySnapshot",
    "PolicyTrainer",
    "ScheduleDecider",
    "claim_driver",
    "dac_space",
    "episode_rewards",
    "held_out_results",
    "load_policy",
    "run_dac",
    "train_on_env",
]

# Names whose modules import gymnasium, an optional dependency: loaded on first use.
_LAZY = {
    "ObjectiveEnv": "paretune.search.dac._env",
    "train_on_env": "paretune.search.dac._env_train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

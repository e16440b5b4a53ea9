"""Dynamic algorithm configuration: policies that set a dynamic parameter while a run trains,
trained across runs and reused on new ones.

* :class:`Policy` (state features -> a distribution over actions), saved as JSON
  (:meth:`Policy.save`, :func:`load_policy`, also from an MLflow artifact URI);
* :class:`PolicyTrainer`: REINFORCE and PPO updates from finished :class:`Episode` s;
* :class:`PolicyDecider` and :class:`ScheduleDecider`: what a trial's ``ctx.decide`` asks
  (a policy snapshot, a replayed schedule), carried by the trial's job to its worker;
* :func:`run_dac`: a training run whose episodes are the trials of a study, on any runner;
* :class:`ObjectiveEnv`: a ``gymnasium.Env`` view of an objective that calls ``ctx.decide``,
  for external RL libraries.

See :mod:`paretune.spaces.dynamic` for dynamic parameters and decision states.
"""

from paretune.search.dac._deciders import PolicyDecider, ScheduleDecider
from paretune.search.dac._policy import Policy, PolicySnapshot, load_policy
from paretune.search.dac._run import (
    DAC_ATTR,
    DACPlan,
    DACResult,
    dac_space,
    episode_rewards,
    held_out_results,
    run_dac,
)
from paretune.search.dac._update import ALGORITHMS, Episode, PolicyTrainer

__all__ = [
    "ALGORITHMS",
    "DAC_ATTR",
    "DACPlan",
    "DACResult",
    "Episode",
    "Policy",
    "PolicyDecider",
    "PolicySnapshot",
    "PolicyTrainer",
    "ScheduleDecider",
    "dac_space",
    "episode_rewards",
    "held_out_results",
    "load_policy",
    "run_dac",
]

"""A policy-gradient controller: REINFORCE on a factorised policy over the search space.

:class:`ReinforceSampler` (``sampler``) is the Optuna adapter; one module per idea:

* ``levels``: the finite set of values each parameter is chosen from;
* ``policy``: one categorical per parameter, its draws and its Adam step;
* ``rewards``: a trial's values as one number (the value, MnasNet's reward, the hypervolume
  improvement);
* ``learner``: the replay of the completed trials as REINFORCE updates (baseline, running
  standard deviation, entropy bonus).
"""

from paretune.search._reinforce.sampler import ReinforceSampler

__all__ = ["ReinforceSampler"]

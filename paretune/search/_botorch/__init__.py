"""Multi-objective Bayesian optimisation on BoTorch, as an Optuna sampler.

:class:`BoTorchSampler` (``sampler``) is the Optuna adapter; the proposal it makes follows
the pipeline, one module per step:

* ``observations``: the completed trials the model learns from; ``subset``: those it is
  fitted to past ``max_fit_points``, and the acquisition's baseline;
* ``problem``: the space as BoTorch sees it (a :class:`~paretune.spaces.UnitCube` and the
  optimiser's discrete and categorical columns);
* ``gp``: the Gaussian process; ``known``: objectives computed instead of modelled;
* ``acquisition``: qLogNEHVI / qLogNEI and the reference point; ``kernel``: loading
  BoTorch's fused kernel without hanging on a dead compile's lock;
* ``optimize``: the acquisition optimiser; ``local``: proposals near the observed front;
* ``candidates``: the Sobol start-up and the model-free fallbacks; ``duplicates``: what
  existing trials hold, so that no proposal repeats one;
* ``proposal``: one model-based proposal, from the trials to the params.
"""

from paretune.search._botorch.sampler import BoTorchSampler

__all__ = ["BoTorchSampler"]

"""Who proposes the next candidate (controllers, all Optuna samplers) and who runs it (runners:
:class:`LocalRunner` on this machine, :class:`RayRunner` on a Ray Tune worker pool).

Controllers are chosen by name in the spec: ``random``, ``tpe``, ``nsga2``, ``gp`` (Optuna's
samplers) and ``botorch`` (:class:`BoTorchSampler`, multi-objective Bayesian optimisation on
BoTorch, also usable as a plain Optuna sampler). :func:`reevaluate` trains chosen trials (the
Pareto front, the baselines) again with several seeds, at the search's or at full fidelity.
"""

from paretune.search._botorch import BoTorchSampler
from paretune.search._controllers import controller_names, make_sampler
from paretune.search._local import LocalRunner
from paretune.search._ray import RayRunner
from paretune.search._reevaluate import Reevaluation, reevaluate
from paretune.search._run import SearchResult, make_runner, open_store, run_search
from paretune.search._runner import (
    Job,
    Outcome,
    Runner,
    SearchInterrupted,
    evaluate,
    handle_stop_signal,
    stop_requested,
)

__all__ = [
    "BoTorchSampler",
    "Job",
    "LocalRunner",
    "Outcome",
    "RayRunner",
    "Reevaluation",
    "Runner",
    "SearchInterrupted",
    "SearchResult",
    "controller_names",
    "evaluate",
    "handle_stop_signal",
    "make_runner",
    "make_sampler",
    "open_store",
    "reevaluate",
    "run_search",
    "stop_requested",
]

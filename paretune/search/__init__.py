"""Who proposes the next candidate (controllers, all Optuna samplers), who runs it (runners) and
the one trial loop they share.

Controllers are chosen by name in the spec: ``random``, ``tpe``, ``nsga2``, ``gp`` (Optuna's
samplers), ``botorch`` (:class:`BoTorchSampler`, multi-objective Bayesian optimisation on
BoTorch) and ``reinforce`` (:class:`ReinforceSampler`, a policy over the space trained with
REINFORCE, plain numpy), both also usable as plain Optuna samplers; :func:`register_controller`
adds more.
Runners are chosen by ``runner.type``: ``local`` (:class:`LocalRunner`) and ``ray``
(:class:`RayRunner`); :func:`register_runner` adds more. :func:`run_trials` is the trial loop
(stop policy, retries, timeouts, signals) that the local runner and :func:`reevaluate` run;
:func:`reevaluate` trains chosen trials (the Pareto front, the baselines) again with several
seeds, at the search's or at full fidelity.

:mod:`paretune.search.steplaw` (imported on demand, plain numpy) holds Step Law, the optimal
learning rate and batch size of LLM pre-training as power laws of the model and data size: the
centre of a learning-rate range, and the law refitted on a sweep's trials.
"""

from paretune.search._botorch import BoTorchSampler
from paretune.search._capabilities import Capabilities
from paretune.search._controllers import (
    ControllerContext,
    ControllerFactory,
    check_controller,
    controller_capabilities,
    controller_names,
    make_pruner,
    make_sampler,
    register_controller,
)
from paretune.search._jobs import DeciderRef, Job, ObjectiveRef, Outcome, evaluate
from paretune.search._local import LocalRunner, LocalRunnerSettings, default_threads
from paretune.search._loop import (
    Budget,
    Executor,
    InlineExecutor,
    Started,
    StopPolicy,
    StudyTrials,
    TrialSource,
    run_trials,
)
from paretune.search._ray import RayRunner, RayRunnerSettings
from paretune.search._reevaluate import Reevaluation, reevaluate, stored_reevaluations
from paretune.search._reinforce import ReinforceSampler
from paretune.search._run import SearchPlan, SearchResult, open_store, run_search
from paretune.search._runner import (
    Runner,
    RunnerSettings,
    make_runner,
    register_runner,
    runner_settings,
    runner_types,
)
from paretune.search._signals import (
    SearchInterrupted,
    handle_stop_signal,
    stop_requested,
    stop_signals,
)

register_runner("local", LocalRunner, LocalRunnerSettings)
register_runner("ray", RayRunner, RayRunnerSettings)

__all__ = [
    "BoTorchSampler",
    "Budget",
    "Capabilities",
    "ControllerContext",
    "ControllerFactory",
    "DeciderRef",
    "Executor",
    "InlineExecutor",
    "Job",
    "LocalRunner",
    "LocalRunnerSettings",
    "ObjectiveRef",
    "Outcome",
    "RayRunner",
    "RayRunnerSettings",
    "Reevaluation",
    "ReinforceSampler",
    "Runner",
    "RunnerSettings",
    "SearchInterrupted",
    "SearchPlan",
    "SearchResult",
    "Started",
    "StopPolicy",
    "StudyTrials",
    "TrialSource",
    "check_controller",
    "controller_capabilities",
    "controller_names",
    "default_threads",
    "evaluate",
    "handle_stop_signal",
    "make_pruner",
    "make_runner",
    "make_sampler",
    "open_store",
    "reevaluate",
    "register_controller",
    "register_runner",
    "run_search",
    "run_trials",
    "runner_settings",
    "runner_types",
    "stop_requested",
    "stop_signals",
    "stored_reevaluations",
]

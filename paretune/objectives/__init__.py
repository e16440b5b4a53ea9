"""What a trial computes: objective types, the context they run in, and how metric vectors
compare (Pareto dominance, fronts, hypervolume)."""

from paretune.objectives._base import BaseObjective, FunctionObjective
from paretune.objectives._noisy_quadratic import NoisyQuadratic
from paretune.objectives._pareto import dominates, hypervolume, log10_hv_difference, pareto_mask
from paretune.objectives._protocol import (
    Decider,
    Direction,
    Metric,
    Objective,
    TrialContext,
    TrialPruned,
)
from paretune.objectives._registry import (
    build_objective,
    load_module,
    plugin_location,
    register_objective,
    registered_objectives,
)
from paretune.objectives._synthetic import (
    DTLZ2,
    ZDT1,
    BraninCurrin,
    PeftLike,
    SyntheticProblem,
    VehicleSafety,
)
from paretune.objectives.finetune import Finetune
from paretune.objectives.lm import LM

__all__ = [
    "DTLZ2",
    "LM",
    "ZDT1",
    "BaseObjective",
    "BraninCurrin",
    "Decider",
    "Direction",
    "Finetune",
    "FunctionObjective",
    "Metric",
    "NoisyQuadratic",
    "Objective",
    "PeftLike",
    "SyntheticProblem",
    "TrialContext",
    "TrialPruned",
    "VehicleSafety",
    "build_objective",
    "dominates",
    "hypervolume",
    "load_module",
    "log10_hv_difference",
    "pareto_mask",
    "plugin_location",
    "register_objective",
    "registered_objectives",
]

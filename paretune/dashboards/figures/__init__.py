"""paretune's own figure families, one module each; importing this package registers them.

A new family is one new module here (or anywhere outside paretune): a
:class:`~paretune.dashboards.FigureFamily` subclass passed to
:func:`~paretune.dashboards.register_figure`. Each family's data class is what its
``extract`` returns (what tests and notebooks read).
"""

from paretune.dashboards.figures._actions import ActionEpisode, ActionPoint, Actions, ActionsData
from paretune.dashboards.figures._curves import CurvesData, CurveSet, LearningCurves
from paretune.dashboards.figures._hypervolume import (
    HypervolumeData,
    HypervolumeHistory,
    hypervolume_history,
)
from paretune.dashboards.figures._importance import ImportanceData, ParameterImportance
from paretune.dashboards.figures._mutransfer import (
    MuTransfer,
    TransferData,
    TransferPanel,
    TransferPoint,
)
from paretune.dashboards.figures._parallel import Axis, ParallelCoordinates, ParallelData
from paretune.dashboards.figures._pareto import ParetoData, ParetoFront, hover_text
from paretune.dashboards.figures._peft import PeftMap, PeftMapData, PeftRow, cost_metric

__all__ = [
    "ActionEpisode",
    "ActionPoint",
    "Actions",
    "ActionsData",
    "Axis",
    "CurveSet",
    "CurvesData",
    "HypervolumeData",
    "HypervolumeHistory",
    "ImportanceData",
    "LearningCurves",
    "MuTransfer",
    "ParallelCoordinates",
    "ParallelData",
    "ParameterImportance",
    "ParetoData",
    "ParetoFront",
    "PeftMap",
    "PeftMapData",
    "PeftRow",
    "TransferData",
    "TransferPanel",
    "TransferPoint",
    "cost_metric",
    "hover_text",
    "hypervolume_history",
]

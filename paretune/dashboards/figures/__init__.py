"""paretune's own figure families, one module each; importing this package registers them.

A new family is one new module here (or anywhere outside paretune): a
:class:`~paretune.dashboards.FigureFamily` subclass passed to
:func:`~paretune.dashboards.register_figure`.
"""

from paretune.dashboards.figures._curves import CurvesData, CurveSet, LearningCurves
from paretune.dashboards.figures._mutransfer import (
    MuTransfer,
    TransferData,
    TransferPanel,
    TransferPoint,
)
from paretune.dashboards.figures._peft import PeftMap, PeftMapData, PeftRow, cost_metric

__all__ = [
    "CurveSet",
    "CurvesData",
    "LearningCurves",
    "MuTransfer",
    "PeftMap",
    "PeftMapData",
    "PeftRow",
    "TransferData",
    "TransferPanel",
    "TransferPoint",
    "cost_metric",
]

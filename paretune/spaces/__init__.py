"""What can be searched: typed parameters, conditions, search spaces and their encodings.

A :class:`SearchSpace` is declared once, in Python or in its dictionary (YAML) form, and
converted where it is used: to Optuna distributions (:meth:`SearchSpace.suggest`,
:meth:`SearchSpace.distributions`) and to the numeric columns BoTorch works on
(:class:`Encoding`).

Example:
    >>> from paretune.spaces import Categorical, Condition, Float, SearchSpace
    >>> space = SearchSpace([
    ...     Categorical("optimizer", choices=("sgd", "adam")),
    ...     Float("lr", low=1e-5, high=1.0, log=True),
    ...     Float("momentum", low=0.0, high=0.99, condition=Condition("optimizer", ("sgd",))),
    ... ])
    >>> sorted(space.sample(0))  # doctest: +SKIP

``import paretune.spaces`` does not import torch; the methods that return tensors do.

:mod:`paretune.spaces.peft` (imported on demand) builds AutoPEFT spaces for transformer models;
:mod:`paretune.spaces.mup` applies muP to ``transformers`` decoders and
:mod:`paretune.spaces.schedules` holds learning-rate schedulers. The schedules' spec settings
(:class:`WSDSchedule`, :class:`PowerSchedule`, :class:`CosineSchedule`,
:class:`ConstantSchedule`) are here, without torch.
"""

from paretune.spaces._describe import compact_params, short_value
from paretune.spaces._dicts import param_from_dict, param_to_dict
from paretune.spaces._encoding import DimKind, Encoding
from paretune.spaces._params import Categorical, Condition, Fixed, Float, Int, Parameter
from paretune.spaces._schedule_settings import (
    ConstantSchedule,
    CosineSchedule,
    PowerSchedule,
    Schedule,
    WSDSchedule,
    schedule_from_dict,
)
from paretune.spaces._space import SearchSpace
from paretune.spaces._unit_cube import UnitCube

__all__ = [
    "Categorical",
    "Condition",
    "ConstantSchedule",
    "CosineSchedule",
    "DimKind",
    "Encoding",
    "Fixed",
    "Float",
    "Int",
    "Parameter",
    "PowerSchedule",
    "Schedule",
    "SearchSpace",
    "UnitCube",
    "WSDSchedule",
    "compact_params",
    "param_from_dict",
    "param_to_dict",
    "schedule_from_dict",
    "short_value",
]

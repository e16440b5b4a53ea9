"""The searched space of the finetune objective: PEFT parameters, then extra ones."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import ModelLayout

__all__ = ["searched_space"]


def searched_space(
    layout: ModelLayout,
    options: Mapping[str, Any] | None,
    extra: Mapping[str, Mapping[str, Any]] | None,
) -> SearchSpace:
    """:func:`~paretune.spaces.peft.peft_space` of ``layout`` with the ``space`` setting's
    options, then the parameters of the ``extra_space`` setting.

    Raises:
        ConfigError: An option is unknown or invalid (path ``space.<option>``), or an extra
            parameter is (path ``extra_space.<name>``).
    """
    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import peft_space

    options = {} if options is None else options
    allowed = [
        name
        for name, p in inspect.signature(peft_space).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"unknown space option {key!r}; the options are {allowed}.", path=("space", key)
            )
    try:
        space = peft_space(layout, **options)
    except ConfigError as err:
        raise err.prefixed("space") from None
    if extra is None:
        return space
    from paretune.spaces import param_from_dict

    try:
        # One parameter at a time, so that a condition may name a PEFT parameter (for example
        # a learning rate searched only when `method` is "peft").
        added = [param_from_dict(name, spec) for name, spec in extra.items()]
        return SearchSpace([*space, *added], rule=space.rule, describer=space.describer)
    except ConfigError as err:
        raise err.prefixed("extra_space") from None

"""The base of every validated settings model (a spec section, a runner's settings), and the
checks every registry (objective types, controllers, runners) makes of a new entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from paretune._errors import ConfigError, describe

__all__ = ["StrictModel", "check_registration"]


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors that list the allowed keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise ValueError(f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        return data


def check_registration(
    kind: str, registry: Mapping[str, Any], name: Any, factory: Any, *, replace: bool
) -> None:
    """Check a new entry of a registry of ``kind`` ("objective type", "controller").

    Raises:
        ConfigError: ``name`` is not a non-empty string or is taken (unless ``replace``), or
            ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} names must be non-empty strings, but got {name!r}.")
    if not callable(factory):
        raise ConfigError(f"the factory of {name!r} must be callable, but got {describe(factory)}.")
    if name in registry and not replace:
        raise ConfigError(
            f"the {kind} {name!r} is already registered. Pass replace=True to replace it."
        )

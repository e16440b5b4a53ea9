"""The base of every validated settings model (a spec section, a runner's settings), how its
pydantic errors become :class:`~paretune.ConfigError`, and the checks every registry (objective
types, controllers, runners) makes of a new entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from paretune._errors import ConfigError, describe

__all__ = ["FieldError", "StrictModel", "check_registration", "config_error"]


class FieldError(ValueError):
    """A model validator's error that belongs to a field (or a key below one).

    Pydantic locates what a model validator raises at the model; :func:`config_error` adds
    ``path`` to that location, so that a rule between fields names the field at fault
    (``data``, not the settings as a whole).

    Args:
        message: What is wrong and how to fix it.
        path: Where below the model, outermost key first, for example ``("validation",)``.
    """

    def __init__(self, message: str, *, path: Sequence[str | int]) -> None:
        super().__init__(message)
        self.path: tuple[str | int, ...] = tuple(path)


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors that list the allowed keys.

    An unknown key's error is located at the model (``runner: unknown key 'typo'``), or, where
    a subclass sets ``locate_unknown_keys``, at the key itself (``fidelity.steps: unknown key
    'steps'``), as pydantic locates a wrong value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Locate an unknown key's error at the key rather than at the model.
    locate_unknown_keys: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    message = f"unknown key {key!r}; allowed keys: {', '.join(allowed)}"
                    if cls.locate_unknown_keys:
                        raise FieldError(message, path=(key,))
                    raise ValueError(message)
        return data


def config_error(err: ValidationError) -> ConfigError:
    """The first error of ``err`` as a :class:`~paretune.ConfigError`.

    Its path is pydantic's location (string keys and list indices), followed by the path of a
    :class:`FieldError`; its message is the validator's for value errors and for mappings
    received, otherwise it names the value received (``got -1.0: Input should be greater than
    0``); ``(and 2 more errors)`` counts the rest.
    """
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    raised = first.get("ctx", {}).get("error")
    if isinstance(raised, FieldError):
        loc += raised.path
    msg = first["msg"]
    msg = msg.removeprefix("Value error, ")
    received = first.get("input")
    if first["type"] == "missing":
        message = f"required field is missing ({msg.lower()})"
    elif isinstance(received, Mapping) or first["type"] in ("value_error", "assertion_error"):
        message = msg
    else:
        message = f"got {describe(received)}: {msg}"
    more = len(err.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(message, path=[p for p in loc if isinstance(p, (str, int))])


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

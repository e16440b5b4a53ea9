"""Parameters to and from the spec's mapping form (``{type: float, low: 0, high: 1}``) and
Optuna's distributions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from paretune._errors import ConfigError, describe
from paretune.spaces._params import PARAMETER_TYPES, Categorical, Condition, Float, Int, Parameter

__all__ = ["param_from_dict", "param_from_optuna", "param_to_dict"]


def param_from_dict(name: Any, spec: Any) -> Parameter:
    """Build a parameter from its dictionary (YAML) form; see ``SearchSpace.from_dict``."""
    if not isinstance(name, str):
        raise ConfigError(
            f"parameter names must be strings, but got {describe(name)}; quote it in YAML."
        )
    types = ", ".join(repr(t) for t in PARAMETER_TYPES)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            "a parameter must be a mapping with a `type` key, e.g. {type: float, low: 0.0, "
            f"high: 1.0}}, but got {describe(spec)}.",
            path=(name,),
        )
    if "type" not in spec:
        raise ConfigError(f"`type` is required; allowed types: {types}.", path=(name, "type"))
    kind = spec["type"]
    cls = PARAMETER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(
            f"`type` must be one of {types}, but got {describe(kind)}.", path=(name, "type")
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "name"}  # type: ignore[arg-type]
    allowed = ", ".join(["type", *fields])
    for key in spec:
        if key != "type" and key not in fields:
            raise ConfigError(
                f"unknown key {describe(key)} for a {kind} parameter; allowed keys: {allowed}.",
                path=(name, str(key)),
            )
    for field in fields.values():
        required = field.default is dataclasses.MISSING
        if required and field.name not in spec:
            raise ConfigError(
                f"`{field.name}` is required for a {kind} parameter; allowed keys: {allowed}.",
                path=(name, field.name),
            )
    kwargs = {key: value for key, value in spec.items() if key != "type"}
    if "condition" in kwargs:
        kwargs["condition"] = _condition_from_dict(name, kwargs["condition"])
    factory: Any = cls  # a concrete dataclass; Parameter itself declares no constructor
    return factory(name, **kwargs)


def _condition_from_dict(name: str, spec: Any) -> Condition | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            "`condition` must map one parent parameter to the values that activate this one, "
            f"e.g. {{optimizer: [adam, adamw]}}, but got {describe(spec)}.",
            path=(name, "condition"),
        )
    ((parent, values),) = spec.items()
    try:
        return Condition(parent, values)
    except ConfigError as err:
        raise err.prefixed(name) from None


def param_from_optuna(name: str, distribution: BaseDistribution) -> Parameter:
    """The parameter that samples like an Optuna distribution.

    Raises:
        ConfigError: An unsupported distribution type; the path is ``name``.
    """
    d = distribution
    if isinstance(d, FloatDistribution):
        return Float(name, low=d.low, high=d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return Int(name, low=d.low, high=d.high, log=d.log, step=d.step)
    if isinstance(d, CategoricalDistribution):
        return Categorical(name, choices=tuple(d.choices))
    raise ConfigError(
        f"no parameter type for Optuna distribution {type(d).__name__}; use a Float, Int or "
        "Categorical distribution.",
        path=(name,),
    )


def param_to_dict(param: Parameter) -> dict[str, Any]:
    """The dictionary (YAML) form of ``param``, without its name; defaults are left out."""
    out: dict[str, Any] = {"type": param.type_name}
    for field in dataclasses.fields(param):  # type: ignore[arg-type]
        value = getattr(param, field.name)
        if field.name == "name" or (value is None and field.default is None):
            continue
        if isinstance(value, Condition):
            out["condition"] = {value.parent: list(value.values)}
        elif field.default is dataclasses.MISSING or value != field.default:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out

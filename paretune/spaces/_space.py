"""The search space: an ordered collection of parameters with conditions between them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.spaces._describe import compact_params
from paretune.spaces._dicts import param_from_dict, param_from_optuna, param_to_dict
from paretune.spaces._params import Parameter

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

__all__ = ["SearchSpace"]


class SearchSpace:
    """An ordered, validated collection of parameters.

    Declaration order matters: a parameter's condition may only name a parent declared before
    it, so sampling in order always knows the parent's value. A parameter is *active* when it
    has no condition, or when its parent is active and takes one of the condition's values;
    params dicts (what :meth:`suggest` and :meth:`sample` return, what :meth:`validate`
    accepts) hold exactly the active parameters.

    Args:
        params: The parameters, in declaration order.
        rule: A rule that params must satisfy beyond their ranges and conditions, for rules
            that conditions cannot express (a PEFT candidate needs at least one module in at
            least one layer): ``rule(params) -> bool`` on a params dict. :meth:`admits` applies
            it; model-based controllers (``botorch``) never propose a candidate it refuses, and
            objectives should refuse one early. It must be picklable (a module-level function
            or an instance of a module-level class) for worker processes and Ray.
        describer: A candidate's short readable name, ``describer(params) -> str``, for rules
            of naming that the parameter names alone do not give (the PEFT space writes
            ``lora r4 L3-5 sa48``). :meth:`describe` calls it; without one a candidate reads
            as ``k=v`` of its first parameters (:func:`~paretune.spaces.compact_params`).
            Picklable like ``rule``.

    Raises:
        ConfigError: Duplicate names, or a condition whose parent is unknown, declared later,
            or cannot take one of the condition's values. The path starts with the offending
            parameter's name.

    Example:
        >>> space = SearchSpace([
        ...     Categorical("optimizer", choices=("sgd", "adam")),
        ...     Float("lr", low=1e-5, high=1.0, log=True),
        ...     Float("momentum", low=0.0, high=0.99, condition=Condition("optimizer", ("sgd",))),
        ... ])
        >>> space.active({"optimizer": "adam", "lr": 0.01})
        ['optimizer', 'lr']
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        *,
        rule: Callable[[Mapping[str, Any]], bool] | None = None,
        describer: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        for name, hook in (("rule", rule), ("describer", describer)):
            if hook is not None and not callable(hook):
                raise ConfigError(f"`{name}` must be callable, but got {describe(hook)}.")
        self.rule = rule
        self.describer = describer
        if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
            raise ConfigError(
                "SearchSpace takes a list of parameters (use SearchSpace.from_dict for the "
                f"mapping form), but got {describe(params)}."
            )
        params = tuple(params)
        for i, param in enumerate(params):
            if not isinstance(param, Parameter):
                raise ConfigError(
                    f"each entry must be a Float, Int, Categorical or Fixed parameter, but got "
                    f"{describe(param)}.",
                    path=(i,),
                )
        by_name: dict[str, Parameter] = {}
        for i, param in enumerate(params):
            if param.name in by_name:
                raise ConfigError(
                    f"parameter names must be unique, but {param.name!r} is declared twice. "
                    "Rename one of them.",
                    path=(param.name,),
                )
            _check_condition(param, by_name, [p.name for p in params[i + 1 :]])
            by_name[param.name] = param
        self._params = tuple(params)
        self._by_name = by_name

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """Build a space from its dictionary (YAML) form.

        Each key is a parameter name, in declaration order; each value a mapping with ``type``
        (``float``, ``int``, ``categorical`` or ``fixed``) and that type's fields: ``low``,
        ``high``, ``log``, ``step`` (float, int); ``choices`` (categorical); ``value`` (fixed);
        and optionally ``condition``, a one-key mapping from the parent's name to a list of its
        values (or a single value)::

            optimizer: {type: categorical, choices: [sgd, adam]}
            lr: {type: float, low: 1.0e-5, high: 1.0, log: true}
            momentum: {type: float, low: 0.0, high: 0.99, condition: {optimizer: [sgd]}}

        Raises:
            ConfigError: Unknown or missing keys, an unknown type, or invalid values; the path
                is ``(name, field)`` and the message lists what is allowed.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                "a search space must be a mapping from parameter names to their settings, but "
                f"got {describe(mapping)}."
            )
        return cls([param_from_dict(name, spec) for name, spec in mapping.items()])

    @classmethod
    def from_distributions(cls, distributions: Mapping[str, BaseDistribution]) -> SearchSpace:
        """Build an unconditional space from Optuna distributions, in the mapping's order.

        Raises:
            ConfigError: A distribution that is not a Float, Int or Categorical distribution;
                the path is its name.
        """
        return cls(param_from_optuna(name, dist) for name, dist in distributions.items())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The dictionary (YAML) form, the inverse of :meth:`from_dict`; defaults are omitted.

        Keys follow declaration order, which conditions rely on: dump with
        ``yaml.safe_dump(space.to_dict(), sort_keys=False)``.
        """
        return {p.name: param_to_dict(p) for p in self._params}

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in declaration order."""
        return tuple(self._by_name)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r}; the space has {list(self.names)}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return self._params == other._params

    def __hash__(self) -> int:
        return hash(self._params)

    def __repr__(self) -> str:
        return f"SearchSpace({list(self._params)!r})"

    def active(self, params: Mapping[str, Any]) -> list[str]:
        """Names of the parameters active under ``params``, in declaration order.

        ``params`` may be partial: a parameter whose parent is missing counts as inactive.
        """
        active: set[str] = set()
        for param in self._params:
            cond = param.condition
            if cond is None or (
                cond.parent in active
                and cond.parent in params
                and cond.matches(params[cond.parent])
            ):
                active.add(param.name)
        return [name for name in self._by_name if name in active]

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether parameter ``name`` is active under (possibly partial) ``params``.

        Raises:
            KeyError: ``name`` is not in the space.
        """
        cond = self[name].condition
        if cond is None:
            return True
        return (
            cond.parent in params
            and cond.matches(params[cond.parent])
            and self.is_active(cond.parent, params)
        )

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Sample the active parameters from an Optuna trial, in declaration order.

        Inactive parameters are never suggested, so they are absent from the trial's params
        (and from its distributions), as in Optuna's define-by-run conditionals.

        Returns:
            The active parameters and their values.
        """
        values: dict[str, Any] = {}
        for param in self._params:
            if _activated(param, values):
                values[param.name] = param._suggest(trial)
        return values

    def distributions(self, params: Mapping[str, Any] | None = None) -> dict[str, BaseDistribution]:
        """Optuna distributions of every parameter, or of those active under ``params``."""
        names = self._by_name if params is None else self.active(params)
        return {name: self._by_name[name].to_optuna() for name in names}

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a complete params dict, e.g. one to enqueue as a trial.

        Args:
            params: Values of the active parameters, and of no others.

        Returns:
            The params in declaration order, each in its stored form (ints as ``int``,
            floats as ``float``, categorical values as the choice objects).

        Raises:
            ConfigError: An unknown or inactive parameter is present, an active one is missing,
                or a value is invalid; the path is the parameter's name.
        """
        if not isinstance(params, Mapping):
            raise ConfigError(f"params must be a mapping, but got {describe(params)}.")
        for name in params:
            if name not in self._by_name:
                raise ConfigError(
                    f"unknown parameter; the space has {list(self.names)}.", path=(str(name),)
                )
        out: dict[str, Any] = {}
        for param in self._params:
            name = param.name
            active = _activated(param, out)
            if active and name not in params:
                raise ConfigError(
                    f"parameter {name!r} is active{_because(param, out)} but missing. Add a "
                    "value for it.",
                    path=(name,),
                )
            if not active and name in params:
                raise ConfigError(
                    f"parameter {name!r} is inactive{_because(param, out)} but got "
                    f"{describe(params[name])}. Remove it.",
                    path=(name,),
                )
            if active:
                value = params[name]
                if not param.contains(value):
                    raise ConfigError(
                        f"{describe(value)} is not a valid value of {param!r}.", path=(name,)
                    )
                out[name] = param.canonical(value)
        return out

    def admits(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` satisfies the space's :attr:`rule` (always, without one).

        ``params`` is assumed valid (:meth:`validate`); a rule that raises on it refuses it.
        """
        if self.rule is None:
            return True
        try:
            return bool(self.rule(params))
        except Exception:
            return False

    def describe(self, params: Mapping[str, Any]) -> str:
        """A short readable name of the candidate ``params`` (an MLflow run's name after its
        trial number: ``t012 lora r4 L3-5 sa48``).

        The space's :attr:`describer` where it has one, else ``k=v`` of the first parameters
        in declaration order (:func:`~paretune.spaces.compact_params`). A describer that
        raises or returns no text falls back to the same: a name never stops a search.
        """
        if self.describer is not None:
            try:
                text = self.describer(params)
            except Exception:
                text = ""
            if isinstance(text, str) and text.strip():
                return text.strip()
        order = {name: i for i, name in enumerate(self._by_name)}
        ordered = dict(sorted(params.items(), key=lambda kv: order.get(kv[0], len(order))))
        return compact_params(ordered)

    def sample(self, rng: np.random.Generator | int | None = None) -> dict[str, Any]:
        """A random valid params dict, drawn in declaration order (so conditions hold).

        Each active parameter is uniform over its range (log-uniform for ``log``), or over its
        grid or choices.

        Args:
            rng: A numpy Generator, or a seed for a new one.
        """
        rng = np.random.default_rng(rng)
        values: dict[str, Any] = {}
        for param in self._params:
            if _activated(param, values):
                values[param.name] = param.sample(rng)
        return values


def _activated(param: Parameter, values: Mapping[str, Any]) -> bool:
    """Whether ``param`` is active, given ``values`` holding exactly the earlier active ones."""
    cond = param.condition
    return cond is None or (cond.parent in values and cond.matches(values[cond.parent]))


def _because(param: Parameter, values: Mapping[str, Any]) -> str:
    cond = param.condition
    if cond is None:
        return ""
    parent = describe(values[cond.parent]) if cond.parent in values else "inactive"
    return f" (it needs {cond.parent} in {list(cond.values)!r}; {cond.parent} is {parent})"


def _check_condition(
    param: Parameter, earlier: Mapping[str, Parameter], later: Sequence[str]
) -> None:
    cond = param.condition
    if cond is None:
        return
    path = (param.name, "condition")
    parent = earlier.get(cond.parent)
    if parent is None:
        if cond.parent == param.name:
            where = "is the parameter itself"
        elif cond.parent in later:
            where = "is declared after it; move it earlier"
        else:
            where = "does not exist"
        raise ConfigError(
            f"a condition's parent must be declared before the parameter, but {cond.parent!r} "
            f"{where}. Known earlier parameters: {list(earlier)}.",
            path=path,
        )
    for value in cond.values:
        if not parent.contains(value):
            raise ConfigError(
                f"condition values must be valid values of {cond.parent!r}, but got "
                f"{describe(value)}, which {parent!r} cannot take.",
                path=path,
            )

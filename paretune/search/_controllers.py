"""Controllers: who proposes the next candidate. Every controller is an Optuna sampler.

A controller is registered under a name with :func:`register_controller`: a factory that builds
the sampler from a :class:`ControllerContext` (the narrow input: space, metrics, constraints,
reference point, known objectives, seed) and the spec's ``controller.options``, and the
:class:`Capabilities` the controller declares. Optuna's samplers and paretune's
:class:`~paretune.search.BoTorchSampler` and :class:`~paretune.search.ReinforceSampler` are
registered here; a package registers its own the
same way, and the conformance suite (:mod:`paretune.testing`) checks them by what they declare.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from paretune._errors import ConfigError, describe
from paretune._validation import check_registration
from paretune.search._capabilities import Capabilities

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric
    from paretune.spaces import SearchSpace

__all__ = [
    "ControllerContext",
    "ControllerFactory",
    "check_controller",
    "controller_capabilities",
    "controller_names",
    "make_pruner",
    "make_sampler",
    "register_controller",
]


@dataclass(frozen=True, kw_only=True)
class ControllerContext:
    """What a controller factory is given about the search (never the whole spec).

    Attributes:
        space: The searched space.
        metrics: The optimised metrics, in the study's order.
        seed: The controller's seed (already offset for a resumed search unless the
            controller is keyed by trial), or ``None``.
        constraints_func: Optuna's ``constraints_func`` (values ``<= 0`` are feasible), or
            ``None`` without outcome constraints.
        reference_point: The hypervolume reference, one value per metric in order, or ``None``.
        known_objectives: Metric position to a function of the params, for metrics the
            objective computes before training (``finetune``'s trainable percentage).
    """

    space: SearchSpace
    metrics: tuple[Metric, ...]
    seed: int | None = None
    constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None
    reference_point: tuple[float, ...] | None = None
    known_objectives: Mapping[int, Callable[[dict[str, Any]], float]] = field(default_factory=dict)


class ControllerFactory(Protocol):
    """``factory(context, **options) -> optuna.samplers.BaseSampler``."""

    def __call__(
        self, context: ControllerContext, **options: Any
    ) -> optuna.samplers.BaseSampler: ...


@dataclass(frozen=True)
class _Registered:
    factory: ControllerFactory
    capabilities: Capabilities
    options: frozenset[str] | None  # None: any option (the factory takes **options)


_REGISTRY: dict[str, _Registered] = {}


def register_controller(
    name: str,
    factory: ControllerFactory,
    *,
    capabilities: Capabilities | None = None,
    options_of: Callable[..., Any] | None = None,
    replace: bool = False,
) -> None:
    """Make a controller available as ``controller.name: <name>`` in specs.

    Args:
        name: The name a spec uses.
        factory: Called as ``factory(context, **options)`` with a :class:`ControllerContext`
            and the spec's ``controller.options``; returns an Optuna sampler.
        capabilities: What the controller promises. ``None``: for an Optuna sampler class
            registered as its own factory, its class attribute ``capabilities`` (as
            :class:`~paretune.search.BoTorchSampler` declares it), if it has one; else the
            defaults of :class:`Capabilities`.
        options_of: A callable whose keyword parameters are the allowed options (the sampler
            class, when the factory forwards ``**options`` to it); default: the factory's own
            keyword parameters.
        replace: Replace an existing registration instead of failing.

    Raises:
        ConfigError: ``name`` is empty or taken, ``factory`` is not callable, or the
            capabilities (given or declared by the class) are not a :class:`Capabilities`.
    """
    check_registration("controller", _REGISTRY, name, factory, replace=replace)
    if capabilities is None:
        capabilities = _declared_capabilities(name, factory)
    if not isinstance(capabilities, Capabilities):
        raise ConfigError(
            f"capabilities of {name!r} must be a Capabilities, but got {describe(capabilities)}."
        )
    _REGISTRY[name] = _Registered(factory, capabilities, _option_names(options_of or factory))


def _declared_capabilities(name: str, factory: ControllerFactory) -> Capabilities:
    """What a sampler class registered as its own factory declares as its class attribute
    ``capabilities``; the defaults for a class that declares none and for other factories."""
    if not (isinstance(factory, type) and issubclass(factory, optuna.samplers.BaseSampler)):
        return Capabilities()
    # Static: a property or other descriptor is a wrong declaration, not something to call.
    declared = inspect.getattr_static(factory, "capabilities", None)
    if declared is None:
        return Capabilities()
    if not isinstance(declared, Capabilities):
        raise ConfigError(
            f"{factory.__qualname__}.capabilities (controller {name!r}) must be a Capabilities, "
            f"but got {describe(declared)}; declare it as "
            "`capabilities: ClassVar[Capabilities] = Capabilities(...)`."
        )
    return declared


def _option_names(target: Callable[..., Any]) -> frozenset[str] | None:
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    # What the context already gives is not an option.
    given = {"seed", "search_space", "constraints_func", "context"}
    return frozenset(p.name for p in parameters if p.kind in keyword and p.name not in given)


def controller_names() -> list[str]:
    """The registered controller names, in registration order."""
    return list(_REGISTRY)


def controller_capabilities(name: str) -> Capabilities:
    """What the controller ``name`` declares.

    Raises:
        ConfigError: No controller has that name.
    """
    return _lookup(name).capabilities


def _lookup(name: str) -> _Registered:
    registered = _REGISTRY.get(name)
    if registered is None:
        raise ConfigError(
            f"unknown controller {name!r}; allowed: {', '.join(controller_names())}",
            path=("controller", "name"),
        )
    return registered


def check_controller(
    name: str, context: ControllerContext, options: Mapping[str, Any] | None = None
) -> None:
    """Reject a search the controller ``name`` cannot serve, before anything runs: an option
    it does not take, or a need it does not declare (two or more metrics, outcome constraints,
    conditional parameters; see :class:`Capabilities`).

    Raises:
        ConfigError: With the path of the spec field to change.
    """
    registered = _lookup(name)
    allowed = registered.options
    for key in options or {}:
        if allowed is not None and key not in allowed:
            raise ConfigError(
                f"unknown option {key!r} for controller {name!r}; allowed: "
                f"{', '.join(sorted(allowed)) or 'none'}",
                path=("controller", "options", key),
            )
    can = registered.capabilities
    if len(context.metrics) > 1 and not can.multi_objective:
        raise ConfigError(
            f"controller {name!r} optimises one metric, but the search has "
            f"{len(context.metrics)} ({', '.join(m.name for m in context.metrics)}); choose a "
            f"multi-objective controller ({', '.join(_names_with('multi_objective'))})",
            path=("controller", "name"),
        )
    if context.constraints_func is not None and not can.constraints:
        raise ConfigError(
            f"controller {name!r} does not take outcome constraints; remove "
            f"`objective.constraints` or choose one that does "
            f"({', '.join(_names_with('constraints'))})",
            path=("controller", "name"),
        )
    if not can.conditional and any(p.condition is not None for p in context.space):
        raise ConfigError(
            f"controller {name!r} does not handle conditional parameters; choose one that does "
            f"({', '.join(_names_with('conditional'))})",
            path=("controller", "name"),
        )


def _names_with(capability: str) -> list[str]:
    return [n for n, r in _REGISTRY.items() if getattr(r.capabilities, capability)]


def make_sampler(
    name: str,
    context: ControllerContext,
    options: Mapping[str, Any] | None = None,
    *,
    n_existing_trials: int = 0,
) -> optuna.samplers.BaseSampler:
    """The sampler of the controller ``name`` for a search.

    The seed is offset by the number of trials already in the study, unless the controller
    declares ``keyed_by_trial``: a resumed search then does not replay the random draws of its
    first session (a seeded random sampler would propose the evaluated parameters again) and
    stays reproducible from storage.

    Raises:
        ConfigError: An unknown controller, an option it does not take, or a value it rejects.
    """
    registered = _lookup(name)
    options = dict(options or {})
    check_controller(name, context, options)
    if context.seed is not None and not registered.capabilities.keyed_by_trial:
        context = dataclasses.replace(context, seed=context.seed + n_existing_trials)
    try:
        return registered.factory(context, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{err}", path=("controller", "options")) from None


# -- the built-in controllers ----------------------------------------------------------------


def _random(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=context.seed, **options)


def _tpe(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    conditional = any(p.condition is not None for p in context.space)
    kwargs: dict[str, Any] = {
        "multivariate": True,
        # Conditional spaces: TPE models each group of co-occurring parameters jointly instead
        # of falling back to independent sampling.
        "group": conditional,
        # Running trials count as bad results, so parallel workers spread out.
        "constant_liar": True,
    }
    kwargs.update(options)
    return optuna.samplers.TPESampler(
        seed=context.seed, constraints_func=context.constraints_func, **kwargs
    )


def _nsga2(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(
        seed=context.seed, constraints_func=context.constraints_func, **options
    )


def _gp(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(
        seed=context.seed, constraints_func=context.constraints_func, **options
    )


def _botorch(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    from paretune.search._botorch import BoTorchSampler

    kwargs: dict[str, Any] = {
        "search_space": context.space,
        "constraints_func": context.constraints_func,
        "reference_point": None
        if context.reference_point is None
        else list(context.reference_point),
    }
    # Metrics the objective computes before training (finetune's trainable percentage) are
    # given to the acquisition exactly instead of being modelled; `known_objectives: {}` in
    # the options turns that off.
    known = dict(context.known_objectives)
    if known and len(known) < len(context.metrics):
        kwargs["known_objectives"] = known
    kwargs.update(options)
    return BoTorchSampler(seed=context.seed, **kwargs)


def _reinforce(context: ControllerContext, **options: Any) -> optuna.samplers.BaseSampler:
    from paretune.search._reinforce import ReinforceSampler

    kwargs: dict[str, Any] = {
        "search_space": context.space,
        "constraints_func": context.constraints_func,
        "reference_point": None
        if context.reference_point is None
        else list(context.reference_point),
    }
    kwargs.update(options)
    return ReinforceSampler(seed=context.seed, **kwargs)


def _register_builtins() -> None:
    from paretune.search._botorch import BoTorchSampler
    from paretune.search._reinforce import ReinforceSampler

    # Optuna's samplers promise no more than they document: TPE's constant liar and GP make
    # repeats unlikely, random and NSGA-II draw or breed without looking at running trials.
    register_controller(
        "random", _random, capabilities=Capabilities(), options_of=optuna.samplers.RandomSampler
    )
    register_controller(
        "tpe",
        _tpe,
        capabilities=Capabilities(constraints=True, pending=True),
        options_of=optuna.samplers.TPESampler,
    )
    register_controller(
        "nsga2",
        _nsga2,
        capabilities=Capabilities(constraints=True),
        options_of=optuna.samplers.NSGAIISampler,
    )
    register_controller(
        "gp",
        _gp,
        capabilities=Capabilities(constraints=True),
        options_of=optuna.samplers.GPSampler,
    )
    register_controller(
        "botorch",
        _botorch,
        # Declared by the class, beside the code that keeps the promises.
        capabilities=BoTorchSampler.capabilities,
        options_of=BoTorchSampler,
    )
    register_controller(
        "reinforce",
        _reinforce,
        capabilities=ReinforceSampler.capabilities,
        options_of=ReinforceSampler,
    )


_register_builtins()


# -- pruners ---------------------------------------------------------------------------------

_PRUNERS: dict[str, type] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner for the spec's ``pruner`` section.

    Raises:
        ConfigError: An option the pruner does not take, or a value it rejects.
    """
    cls = _PRUNERS[name]
    accepted = set(inspect.signature(cls).parameters)
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"unknown option {key!r} for pruner {name!r}; allowed: "
                f"{', '.join(sorted(accepted)) or 'none'}",
                path=("pruner", "options", key),
            )
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{err}", path=("pruner", "options")) from None

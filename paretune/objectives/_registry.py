"""Objective types by name: what the ``objective.type`` of a spec refers to.

A spec names an objective type and its settings::

    objective:
      type: dtlz2
      settings: {dim: 6, num_objectives: 2}

:func:`build_objective` looks the type up, checks the settings against the factory's
signature and calls ``factory(**settings)``, which returns the objective callable. Packages add
types with :func:`register_objective`.

The ``python`` type loads a user's objective function instead of building one::

    objective:
      type: python
      settings:
        target: my_package.tasks:train_and_eval   # or path/to/file.py:train_and_eval
        epochs: 3                                 # any other settings: free-form

``target`` names a callable ``f(params, ctx) -> dict[str, float]`` as ``module:attribute``
(an importable module) or ``file.py:attribute`` (a path, absolute or relative to the current
directory). It is loaded as is, not called as a factory; the runner passes the spec's settings
to every call as ``ctx.settings``, which is where the function reads ``epochs``. Its fidelity
is ``ctx.budget``: ``None`` in a search, ``1.0`` in ``paretune reevaluate --full-fidelity``
(:meth:`~paretune.objectives.FunctionObjective.at_fidelity`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from paretune._errors import ConfigError, describe
from paretune._validation import check_registration
from paretune.objectives._base import BaseObjective, FunctionObjective
from paretune.objectives._noisy_quadratic import NoisyQuadratic
from paretune.objectives._protocol import Objective
from paretune.objectives._synthetic import DTLZ2, ZDT1, BraninCurrin, PeftLike, VehicleSafety
from paretune.objectives.finetune import Finetune
from paretune.objectives.lm import LM

__all__ = ["build_objective", "register_objective", "registered_objectives"]

ObjectiveFactory = Callable[..., "BaseObjective | Objective"]

_REGISTRY: dict[str, ObjectiveFactory] = {}


def register_objective(name: str, factory: ObjectiveFactory, *, replace: bool = False) -> None:
    """Make ``factory`` available as the objective type ``name``.

    Args:
        name: The ``objective.type`` a spec uses.
        factory: Called as ``factory(**settings)`` with the spec's settings; returns a
            :class:`~paretune.objectives.BaseObjective` (usually the factory is the subclass
            itself), or a plain function ``f(params, ctx) -> dict[str, float]``, which is
            wrapped in a :class:`~paretune.objectives.FunctionObjective`. Its keyword
            parameters are the allowed settings (a ``**kwargs`` parameter allows any).
        replace: Replace an existing registration of ``name`` instead of failing.

    Raises:
        ConfigError: ``name`` is empty or already registered, or ``factory`` is not callable.
    """
    check_registration("objective type", _REGISTRY, name, factory, replace=replace)
    _REGISTRY[name] = factory


def registered_objectives() -> list[str]:
    """The registered objective type names, sorted."""
    return sorted(_REGISTRY)


def build_objective(
    type_name: str, settings: Mapping[str, Any] | None = None, *, budget: float | None = None
) -> BaseObjective:
    """The objective of type ``type_name`` built from ``settings``.

    Args:
        type_name: A registered objective type (see :func:`registered_objectives`).
        settings: Keyword arguments for the type's factory.
        budget: Build it at this fidelity (:meth:`BaseObjective.at_fidelity`); ``None``: the
            fidelity its settings give.

    Returns:
        The objective.

    Raises:
        ConfigError: The type is unknown (path ``objective.type``), a setting is unknown,
            missing or invalid (path ``objective.settings.<key>``, or ``objective.settings``
            when the factory does not say which).
    """
    factory = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if factory is None:
        raise ConfigError(
            f"unknown objective type {describe(type_name)}; registered types are "
            f"{registered_objectives()}. Register new ones with register_objective().",
            path=("objective", "type"),
        )
    settings = {} if settings is None else settings
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"settings must be a mapping, but got {describe(settings)}.",
            path=("objective", "settings"),
        )
    _check_settings(type_name, factory, settings)
    try:
        built = factory(**settings)
        objective = built if isinstance(built, BaseObjective) else FunctionObjective(built)
        return objective if budget is None else objective.at_fidelity(budget)
    except ConfigError as exc:
        raise exc.prefixed("objective", "settings") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the {type_name!r} objective rejected its settings: {exc}",
            path=("objective", "settings"),
        ) from exc


def _check_settings(type_name: str, factory: ObjectiveFactory, settings: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return
    params = signature.parameters.values()
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    allowed = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    for key in settings:
        if not isinstance(key, str):
            raise ConfigError(
                f"setting names must be strings, but got {describe(key)}.",
                path=("objective", "settings"),
            )
        if key not in allowed and not accepts_any:
            raise ConfigError(
                f"unknown setting {key!r} of the {type_name!r} objective; allowed settings are "
                f"{sorted(allowed)}.",
                path=("objective", "settings", key),
            )
    for p in params:
        required = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        if required and p.name not in settings:
            raise ConfigError(
                f"the {type_name!r} objective needs the setting {p.name!r}.",
                path=("objective", "settings", p.name),
            )


def load_python_objective(*, target: str, **settings: Any) -> Objective:
    """The ``python`` objective type: load the function ``target`` names.

    Args:
        target: ``"package.module:function"`` or ``"path/to/file.py:function"`` (relative to
            the current directory, or absolute); the attribute may be dotted
            (``module:Class.method``).
        **settings: Free-form settings for the function; they are not used here, the runner
            passes them to each call as ``ctx.settings``.

    Returns:
        The loaded callable.

    Raises:
        ConfigError: ``target`` is malformed, its module or file cannot be loaded, the attribute
            does not exist, or it is not a function of ``(params, ctx)`` (path ``target``).
    """
    del settings  # read by the objective from ctx.settings
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(
            f"`target` must look like 'package.module:function' or 'path/to/file.py:function', "
            f"but got {describe(target)}.",
            path=("target",),
        )
    location, attribute = (part.strip() for part in target.rsplit(":", 1))
    if not location or not attribute:
        raise ConfigError(
            f"`target` must name both a module or file and an attribute, but got {target!r}.",
            path=("target",),
        )
    module = load_module(location)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"{location!r} has no attribute {attribute!r}; check the name after the colon in "
                f"{target!r}.",
                path=("target",),
            )
        obj = getattr(obj, part)
    if inspect.isclass(obj) or not callable(obj):
        raise ConfigError(
            f"{target!r} must name a function f(params, ctx) -> dict[str, float], but it is "
            f"{describe(obj)}. To build objectives from settings, register a factory with "
            "register_objective().",
            path=("target",),
        )
    try:
        inspect.signature(obj).bind(None, None)
    except TypeError:
        raise ConfigError(
            f"{target!r} must accept two positional arguments (params, ctx), but its signature "
            f"is {inspect.signature(obj)}.",
            path=("target",),
        ) from None
    except ValueError:  # no signature available (some builtins): trust the target
        pass
    return obj


def load_module(location: str) -> Any:
    """The module ``location`` names: an importable name, or a ``.py`` file (relative to the
    current directory), loaded once.

    Raises:
        ConfigError: It cannot be found.
    """
    return _load_file(location) if _is_file(location) else _import_module(location)


def plugin_location(location: str) -> str:
    """``location`` as :func:`load_module` finds it from any working directory: a ``.py`` file
    by its absolute path (relative ones start at the current directory), a module by name."""
    if not _is_file(location):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else Path.cwd() / path)


def _is_file(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (name == missing or name.startswith(missing + ".")):
            raise  # the module exists but one of its own imports is missing
        raise ConfigError(
            f"cannot import the module {name!r} ({exc}). Check the name, or give a file path "
            "such as 'objectives/train.py:objective'.",
            path=("target",),
        ) from None


def _load_file(location: str) -> Any:
    path = Path(location).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_file():
        raise ConfigError(
            f"the file {str(path)!r} does not exist (relative paths start at the current "
            f"directory, {str(Path.cwd())!r}).",
            path=("target",),
        )
    # A stable, file-specific module name, so that loading the same file twice gives the same
    # module and its classes and dataclasses resolve through sys.modules.
    module_name = "paretune_user_objective_" + "".join(
        ch if ch.isalnum() else "_" for ch in str(path.resolve())
    )
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {str(path)!r} as a Python module.", path=("target",))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _register_builtins() -> None:
    register_objective("branin_currin", BraninCurrin)
    register_objective("dtlz2", DTLZ2)
    register_objective("vehicle_safety", VehicleSafety)
    register_objective("zdt1", ZDT1)
    register_objective("peft_like", PeftLike)
    register_objective("finetune", Finetune)
    register_objective("lm", LM)
    register_objective("noisy_quadratic", NoisyQuadratic)
    register_objective("python", load_python_objective)


_register_builtins()

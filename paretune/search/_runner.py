"""The runner extension point: where trials run, and the registry of runner types."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from paretune._errors import ConfigError, describe
from paretune._validation import StrictModel, check_registration

if TYPE_CHECKING:
    from paretune.search._loop import Budget, StudyTrials

__all__ = [
    "Runner",
    "RunnerSettings",
    "make_runner",
    "register_runner",
    "runner_settings",
    "runner_types",
]


class RunnerSettings(StrictModel):
    """The base of a runner's settings: the spec's ``runner:`` section (``type`` names it).

    The JSON schema of this base (that of a field typed ``RunnerSettings``, such as the spec's
    ``runner``) is a ``oneOf`` of the registered types' settings, each with its ``type``
    pinned, and required but for the default ``local``. It is made each time a schema is, so
    it lists the runners plugins have registered by then.
    """

    type: str

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler, /
    ) -> JsonSchemaValue:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        if cls is not RunnerSettings or not _REGISTRY:
            return schema
        branches = []
        for type_name, registered in _REGISTRY.items():
            model_schema = handler(registered.settings.__pydantic_core_schema__)
            branch = dict(handler.resolve_ref_schema(model_schema))
            # A model may declare `type` a plain `str`: the schema pins the registered name.
            properties = branch.get("properties", {})
            branch["properties"] = {
                **properties,
                "type": {**properties.get("type", {}), "const": type_name},
            }
            required = [r for r in branch.pop("required", []) if r != "type"]
            if type_name != _DEFAULT_TYPE:
                required.insert(0, "type")
            if required:
                branch["required"] = required
            branches.append(branch)
        return {
            "title": schema.get("title", cls.__name__),
            "description": inspect.cleandoc(cls.__doc__ or ""),
            "oneOf": branches,
        }


class Runner(abc.ABC):
    """Runs the trials of a study until its budget is spent.

    Lifecycle: a runner type is registered with :func:`register_runner` together with the
    pydantic model of its settings (a :class:`RunnerSettings` subclass). For a search,
    :func:`make_runner` validates the spec's ``runner:`` section against that model and builds
    the runner with :meth:`from_settings`; :func:`~paretune.search.run_search` then opens and
    starts the study and calls :meth:`run` once. ``run`` starts trials while
    ``StopPolicy(budget)`` allows, evaluates each with :func:`~paretune.search.evaluate` where
    it runs (setting ``ctx.budget`` and ``ctx.device`` through the :class:`Job`), records each
    ending through ``trials`` (:class:`~paretune.search.StudyTrials`: tell, MLflow, progress),
    and returns when no trial runs and none may start. On SIGINT/SIGTERM (see
    :func:`~paretune.search.handle_stop_signal`) it interrupts the running trials
    (``trials.interrupt``: failed and queued again) and raises
    :class:`~paretune.search.SearchInterrupted`. A runner that evaluates in this machine's
    processes can reuse :func:`~paretune.search.run_trials`, which does all of this.
    """

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> Runner:
        """The runner for validated ``settings`` (default: its fields as keyword arguments)."""
        return cls(**settings.model_dump(exclude={"type"}))

    @abc.abstractmethod
    def run(self, trials: StudyTrials, budget: Budget) -> None:
        """Evaluate trials until the budget is spent (see the class docstring).

        Args:
            trials: The study's trials: ``next()`` asks one, ``finish``/``interrupt`` record it.
            budget: When to stop starting trials, and the per-trial rules.
        """

    def check(self, *, metrics: Sequence[str], pruning: bool, budget: Budget) -> None:
        """Reject a search this runner cannot run (called when the spec is loaded, so that a
        search it cannot finish never starts).

        Args:
            metrics: The names of the metrics the search optimises.
            pruning: Whether an Optuna pruner is set.
            budget: The search's budget (a runner may not support each of its limits).

        Raises:
            ConfigError: With the path of the offending setting.
        """
        return  # most runners run any search


@dataclass(frozen=True)
class _Registered:
    runner: type[Runner]
    settings: type[RunnerSettings]


_REGISTRY: dict[str, _Registered] = {}

#: The type of a ``runner:`` section without one.
_DEFAULT_TYPE = "local"


def register_runner(
    type_name: str,
    runner_cls: type[Runner],
    settings_model: type[RunnerSettings],
    *,
    replace: bool = False,
) -> None:
    """Make a runner available as ``runner: {type: <type_name>, ...}`` in specs.

    Args:
        type_name: The ``runner.type`` a spec uses.
        runner_cls: A :class:`Runner` subclass.
        settings_model: The pydantic model of its settings (a :class:`RunnerSettings`
            subclass whose ``type`` field is ``Literal[type_name]`` or a plain ``str``).
        replace: Replace an existing registration instead of failing.

    Raises:
        ConfigError: A bad name or class, or ``type_name`` is taken.
    """
    if not (isinstance(runner_cls, type) and issubclass(runner_cls, Runner)):
        raise ConfigError(f"a runner must subclass Runner, but got {describe(runner_cls)}.")
    if not (isinstance(settings_model, type) and issubclass(settings_model, RunnerSettings)):
        raise ConfigError(
            f"runner settings must subclass RunnerSettings, but got {describe(settings_model)}."
        )
    check_registration("runner type", _REGISTRY, type_name, runner_cls, replace=replace)
    _REGISTRY[type_name] = _Registered(runner_cls, settings_model)


def runner_types() -> list[str]:
    """The registered runner types, in registration order."""
    return list(_REGISTRY)


def runner_settings(data: Mapping[str, Any] | RunnerSettings) -> RunnerSettings:
    """``data`` (a spec's ``runner:`` section) validated by its type's model.

    A section without ``type`` is a local runner's. Settings already validated are checked to
    be of a registered type and its model.

    Raises:
        ConfigError: An unknown type (path ``runner.type``), settings of another type's model
            (path ``runner``); pydantic's ``ValidationError`` for invalid settings (the spec
            reports it with its path).
    """
    if isinstance(data, RunnerSettings):
        _registered(data)
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"must be a mapping with a `type`, but got {describe(data)}", path=("runner",)
        )
    data = {"type": _DEFAULT_TYPE, **data}
    return _registration(data["type"]).settings.model_validate(data)


def make_runner(settings: RunnerSettings) -> Runner:
    """The runner ``settings`` describe.

    Raises:
        ConfigError: As :func:`runner_settings` for settings of an unknown type or of another
            type's model.
    """
    return _registered(settings).runner.from_settings(settings)


def _registration(type_name: object) -> _Registered:
    registered = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if registered is None:
        raise ConfigError(
            f"unknown runner type {describe(type_name)}; allowed: {', '.join(runner_types())}",
            path=("runner", "type"),
        )
    return registered


def _registered(settings: RunnerSettings) -> _Registered:
    registered = _registration(settings.type)
    if not isinstance(settings, registered.settings):
        raise ConfigError(
            f"settings of runner type {settings.type!r} must be a "
            f"{registered.settings.__name__}, but got a {type(settings).__name__}; validate "
            "the section with runner_settings",
            path=("runner",),
        )
    return registered

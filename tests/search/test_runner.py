"""The runner registry: registration, settings by type, the runner they build, and the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from paretune import ConfigError
from paretune.search import (
    LocalRunner,
    LocalRunnerSettings,
    Runner,
    RunnerSettings,
    _runner,
    make_runner,
    register_runner,
    runner_settings,
    runner_types,
)


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved = dict(_runner._REGISTRY)
    yield
    _runner._REGISTRY.clear()
    _runner._REGISTRY.update(saved)


class EchoSettings(RunnerSettings):
    type: str = "echo"  # a plain `str`, as register_runner allows
    label: str = "x"


class EchoRunner(Runner):
    def __init__(self, *, label: str) -> None:
        self.label = label

    def run(self, trials: Any, budget: Any) -> None:
        raise NotImplementedError


def test_builtin_runners_are_registered() -> None:
    assert runner_types()[:2] == ["local", "ray"]


def test_a_section_without_type_is_local() -> None:
    settings = runner_settings({"n_jobs": 2})
    assert settings == LocalRunnerSettings(n_jobs=2)
    assert isinstance(make_runner(settings), LocalRunner)


def test_a_registered_runner_is_built_from_its_settings() -> None:
    register_runner("echo", EchoRunner, EchoSettings)
    runner = make_runner(runner_settings({"type": "echo", "label": "y"}))
    assert isinstance(runner, EchoRunner) and runner.label == "y"


def test_registration_leaves_the_runner_class_alone() -> None:
    register_runner("echo", EchoRunner, EchoSettings)
    assert "settings_model" not in vars(EchoRunner)


def test_settings_of_an_unknown_type_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        runner_settings({"type": "nope"})
    assert info.value.path == ("runner", "type")
    assert "'nope'" in str(info.value) and "local, ray" in str(info.value)


def test_settings_instances_of_an_unregistered_type_are_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        runner_settings(EchoSettings())
    assert info.value.path == ("runner", "type")
    assert "'echo'" in str(info.value) and "local, ray" in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_runner(EchoSettings())
    assert info.value.path == ("runner", "type")
    assert "'echo'" in str(info.value) and "local, ray" in str(info.value)


def test_settings_instances_of_another_types_model_are_rejected() -> None:
    register_runner("echo", EchoRunner, EchoSettings)
    with pytest.raises(ConfigError) as info:
        runner_settings(EchoSettings(type="local"))
    assert info.value.path == ("runner",)
    assert "EchoSettings" in str(info.value) and "LocalRunnerSettings" in str(info.value)
    assert runner_settings(EchoSettings()) == EchoSettings()


def test_the_schema_lists_a_plugin_runner_with_its_type_pinned() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from paretune.spec import SearchSpec

    register_runner("echo", EchoRunner, EchoSettings)
    validator = jsonschema.Draft202012Validator(SearchSpec.model_json_schema())
    base = {"study": "s", "objective": {"type": "branin_currin"}, "budget": {"trials": 1}}
    assert validator.is_valid({**base, "runner": {"type": "echo", "label": "y"}})
    # one branch each: `echo`'s plain-str `type` does not also take local sections
    assert validator.is_valid({**base, "runner": {"type": "local"}})
    assert validator.is_valid({**base, "runner": {}})
    assert not validator.is_valid({**base, "runner": {"label": "y"}})  # local has no label

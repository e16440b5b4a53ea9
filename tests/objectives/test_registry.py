from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paretune._errors import ConfigError
from paretune.objectives import (
    DTLZ2,
    FunctionObjective,
    PeftLike,
    SyntheticProblem,
    TrialContext,
    _registry,
    build_objective,
    register_objective,
    registered_objectives,
)

BUILTINS = [
    "branin_currin", "dtlz2", "finetune", "lm", "noisy_quadratic", "peft_like", "python",
    "vehicle_safety", "zdt1",
]  # fmt: skip

USER_OBJECTIVE = """
def objective(params, ctx):
    return {"y": params["x"] * ctx.settings.get("scale", 1.0)}

not_callable = 3

class Problem:
    def __init__(self, params, ctx):
        pass

def one_argument(params):
    return {}
"""


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved = dict(_registry._REGISTRY)
    yield
    _registry._REGISTRY.clear()
    _registry._REGISTRY.update(saved)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_objectives.py"
    path.write_text(textwrap.dedent(USER_OBJECTIVE))
    return path


def test_builtins_are_registered() -> None:
    assert registered_objectives() == BUILTINS


# `python`, `finetune` and `lm` need settings or data (a target, a model, a corpus), and
# `noisy_quadratic` is no multi-objective problem: tested in their own modules.
@pytest.mark.parametrize(
    "name", [n for n in BUILTINS if n not in ("python", "finetune", "lm", "noisy_quadratic")]
)
def test_builtins_build_their_problem_with_default_settings(name: str) -> None:
    problem = build_objective(name, {})
    assert isinstance(problem, SyntheticProblem)
    assert problem.name == name


def test_settings_reach_the_factory() -> None:
    problem = build_objective("dtlz2", {"dim": 5, "num_objectives": 3})
    assert isinstance(problem, DTLZ2)
    assert len(problem.space) == 5 and len(problem.metrics) == 3
    peft = build_objective("peft_like", {"n_layers": 4, "noise_std": 0.01})
    assert isinstance(peft, PeftLike) and peft.n_layers == 4 and peft.noise_std == 0.01
    assert isinstance(build_objective("zdt1"), SyntheticProblem)  # settings default to none


def test_unknown_type_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_objective("dtlz3", {})
    assert info.value.path == ("objective", "type")
    for name in BUILTINS:
        assert name in str(info.value)


def test_unknown_setting_names_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_objective("dtlz2", {"dim": 6, "n_objectives": 2})
    assert info.value.path == ("objective", "settings", "n_objectives")
    assert "['dim', 'num_objectives']" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_objective("branin_currin", {"dim": 2})
    assert info.value.path == ("objective", "settings", "dim")


@pytest.mark.parametrize(
    ("name", "settings", "key"),
    [
        ("dtlz2", {"dim": 2}, "dim"),
        ("dtlz2", {"dim": "six"}, "dim"),
        ("zdt1", {"dim": 1}, "dim"),
        ("peft_like", {"n_layers": 0}, "n_layers"),
        ("peft_like", {"noise_std": -1.0}, "noise_std"),
    ],
)
def test_invalid_setting_values_are_located(name: str, settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_objective(name, settings)
    assert info.value.path == ("objective", "settings", key)


def test_settings_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        build_objective("zdt1", [("dim", 3)])  # type: ignore[arg-type]
    assert info.value.path == ("objective", "settings")


def test_register_a_custom_factory() -> None:
    def factory(*, offset: float = 0.0, scale: float) -> Any:
        return lambda params, ctx: {"y": scale * params["x"] + offset}

    register_objective("affine", factory)
    assert "affine" in registered_objectives()
    objective = build_objective("affine", {"scale": 2.0})
    assert objective({"x": 3.0}, TrialContext(trial_number=0)) == {"y": 6.0}
    with pytest.raises(ConfigError) as info:
        build_objective("affine", {})
    assert info.value.path == ("objective", "settings", "scale")
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("affine", factory)
    register_objective("affine", lambda: lambda params, ctx: {"y": 0.0}, replace=True)
    assert build_objective("affine")({"x": 3.0}, TrialContext(trial_number=0)) == {"y": 0.0}


def test_factory_errors_become_config_errors() -> None:
    def picky(*, level: int = 0) -> Any:
        raise ValueError(f"level {level} is not supported")

    register_objective("picky", picky)
    with pytest.raises(ConfigError, match="level 3 is not supported") as info:
        build_objective("picky", {"level": 3})
    assert info.value.path == ("objective", "settings")


def test_factory_with_var_keywords_accepts_any_setting() -> None:
    register_objective("open", lambda **kw: lambda params, ctx: dict(kw))
    objective = build_objective("open", {"anything": 1.0})
    assert objective({}, TrialContext(trial_number=0)) == {"anything": 1.0}


def test_register_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        register_objective("", lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="callable"):
        register_objective("x", 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# the python type


def test_python_target_from_an_absolute_file(user_file: Path) -> None:
    objective = build_objective(
        "python", {"target": f"{user_file}:objective", "scale": 2.0, "epochs": 3}
    )
    ctx = TrialContext(trial_number=0, settings={"scale": 2.0})
    assert objective({"x": 1.5}, ctx) == {"y": 3.0}


def test_python_target_from_a_relative_file(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(user_file.parent)
    objective = build_objective("python", {"target": "user_objectives.py:objective"})
    assert objective({"x": 1.5}, TrialContext(trial_number=0)) == {"y": 1.5}
    # Loading the same file again gives the same function.
    again = build_objective("python", {"target": "./user_objectives.py:objective"})
    assert isinstance(again, FunctionObjective) and isinstance(objective, FunctionObjective)
    assert again.function is objective.function


def test_python_target_at_a_fidelity_reads_it_as_ctx_budget(user_file: Path) -> None:
    settings = {"target": f"{user_file}:objective"}
    assert build_objective("python", settings).fidelity is None
    full = build_objective("python", settings, budget=1.0)
    assert isinstance(full, FunctionObjective) and full.fidelity == 1.0
    assert full.at_fidelity(0.25).fidelity == 0.25 and full.fidelity == 1.0
    for budget in (0, 1.5, True, "full"):
        with pytest.raises(ConfigError, match=r"in \(0, 1\]") as info:
            build_objective("python", settings, budget=budget)  # type: ignore[arg-type]
        assert info.value.path == ("objective", "settings")


def test_python_target_from_a_module(user_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    objective = build_objective("python", {"target": "user_objectives:objective"})
    assert objective({"x": 2.0}, TrialContext(trial_number=0)) == {"y": 2.0}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{file}:missing", "has no attribute 'missing'"),
        ("{file}:not_callable", "must name a function"),
        ("{file}:Problem", "must name a function"),
        ("{file}:one_argument", "two positional arguments"),
        ("{dir}/absent.py:objective", "does not exist"),
        ("paretune_no_such_module:objective", "cannot import the module"),
        ("paretune.no_such_module:objective", "cannot import the module"),
        ("paretune.objectives:no_such_function", "has no attribute"),
        ("objective_without_colon", "must look like"),
        ("{file}:", "both a module or file and an attribute"),
    ],
)
def test_python_target_errors(user_file: Path, target: str, message: str) -> None:
    target = target.format(file=user_file, dir=user_file.parent)
    with pytest.raises(ConfigError, match=message) as info:
        build_objective("python", {"target": target})
    assert info.value.path == ("objective", "settings", "target")


def test_python_target_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        build_objective("python", {"scale": 2.0})
    assert info.value.path == ("objective", "settings", "target")


def test_python_target_whose_own_import_fails_shows_the_real_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_objectives.py").write_text("import paretune_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="paretune_missing_dependency"):
        build_objective("python", {"target": "broken_objectives:objective"})

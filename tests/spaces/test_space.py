from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from paretune import ConfigError
from paretune.spaces import (
    Categorical,
    Condition,
    Fixed,
    Float,
    Int,
    Parameter,
    SearchSpace,
    compact_params,
    short_value,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def chain() -> SearchSpace:
    return SearchSpace(
        [
            Categorical("opt", choices=("sgd", "adam")),
            Categorical("nesterov", choices=(True, False), condition=Condition("opt", ("sgd",))),
            Float("damp", low=0.0, high=1.0, condition=Condition("nesterov", (True,))),
        ]
    )


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "path", "text"),
    [
        ([Fixed("a", value=1), Fixed("a", value=2)], ("a",), "'a'"),
        ([Fixed("b", value=1, condition=Condition("a", (1,)))], ("b", "condition"), "'a'"),
        (
            [Fixed("b", value=1, condition=Condition("a", (1,))), Fixed("a", value=1)],
            ("b", "condition"),
            "declared after",
        ),
        ([Fixed("b", value=1, condition=Condition("b", (1,)))], ("b", "condition"), "itself"),
        (
            [
                Categorical("a", choices=("x", "y")),
                Fixed("b", value=1, condition=Condition("a", "z")),
            ],
            ("b", "condition"),
            "'z'",
        ),
        (
            [Int("a", low=0, high=4, step=2), Fixed("b", value=1, condition=Condition("a", 3))],
            ("b", "condition"),
            "3",
        ),
        ([Fixed("a", value=1), "b"], (1,), "'b'"),
    ],
)
def test_invalid_spaces(params: list[Any], path: tuple[Any, ...], text: str) -> None:
    with pytest.raises(ConfigError) as info:
        SearchSpace(params)
    assert info.value.path == path
    assert text in str(info.value)


def test_space_rejects_a_mapping() -> None:
    with pytest.raises(ConfigError, match="from_dict"):
        SearchSpace({"a": {"type": "fixed", "value": 1}})  # type: ignore[arg-type]


def test_container_protocol(mixed_space: SearchSpace) -> None:
    assert mixed_space.names[:3] == ("optimizer", "lr", "momentum")
    assert len(mixed_space) == len(mixed_space.names) == 12
    assert [p.name for p in mixed_space] == list(mixed_space.names)
    assert all(isinstance(p, Parameter) for p in mixed_space)
    assert mixed_space["lr"] == Float("lr", low=1e-5, high=1.0, log=True)
    assert "lr" in mixed_space and "nope" not in mixed_space
    with pytest.raises(KeyError, match="nope"):
        mixed_space["nope"]
    assert SearchSpace(list(mixed_space)) == mixed_space
    assert SearchSpace(p for p in mixed_space) == mixed_space


# --- conditions -----------------------------------------------------------------------------


def test_chain_of_two_conditions() -> None:
    space = chain()
    assert space.active({"opt": "sgd", "nesterov": True}) == ["opt", "nesterov", "damp"]
    assert space.active({"opt": "sgd", "nesterov": False}) == ["opt", "nesterov"]
    assert space.active({"opt": "adam"}) == ["opt"]
    # A stale child value does not activate the grandchild once the parent switches off.
    assert space.active({"opt": "adam", "nesterov": True}) == ["opt"]
    assert space.is_active("damp", {"opt": "sgd", "nesterov": True})
    assert not space.is_active("damp", {"opt": "adam", "nesterov": True})
    assert not space.is_active("nesterov", {})  # partial: the parent is not known yet
    assert space.is_active("opt", {})
    with pytest.raises(KeyError):
        space.is_active("nope", {})


def test_distributions(mixed_space: SearchSpace) -> None:
    everything = mixed_space.distributions()
    assert list(everything) == list(mixed_space.names)
    some = mixed_space.distributions({"optimizer": "adam"})
    assert "beta2" in some and "momentum" not in some and "dampening" not in some
    assert some["lr"] == optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)


# --- validate -------------------------------------------------------------------------------


def test_validate_returns_canonical_params() -> None:
    space = SearchSpace(
        [Int("n", low=0, high=10), Categorical("c", choices=(1, "a")), Fixed("f", value=2.5)]
    )
    out = space.validate({"f": 2.5, "c": 1.0, "n": 3.0})
    assert out == {"n": 3, "c": 1, "f": 2.5}
    assert list(out) == ["n", "c", "f"]
    assert type(out["n"]) is int and type(out["c"]) is int


@pytest.mark.parametrize(
    ("params", "path", "text"),
    [
        ({"opt": "adam", "nesterov": True}, ("nesterov",), "inactive"),
        ({"opt": "sgd", "nesterov": False, "damp": 0.5}, ("damp",), "inactive"),
        ({"opt": "sgd"}, ("nesterov",), "missing"),
        ({"opt": "sgd", "nesterov": True}, ("damp",), "missing"),
        ({"opt": "adam", "lr": 0.1}, ("lr",), "unknown"),
        ({"opt": "momentum"}, ("opt",), "'momentum'"),
        ({"opt": "sgd", "nesterov": True, "damp": 1.5}, ("damp",), "1.5"),
        ({"opt": "sgd", "nesterov": 1, "damp": 0.5}, ("nesterov",), "1"),
    ],
)
def test_validate_rejects(params: dict[str, Any], path: tuple[str, ...], text: str) -> None:
    with pytest.raises(ConfigError) as info:
        chain().validate(params)
    assert info.value.path == path
    assert text in str(info.value)


# --- sampling -------------------------------------------------------------------------------


def test_sample_is_valid_and_seeded(mixed_space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    samples = [mixed_space.sample(rng) for _ in range(300)]
    for params in samples:
        assert mixed_space.validate(params) == params
        assert list(params) == mixed_space.active(params)
    assert {p["optimizer"] for p in samples} == {"sgd", "adam", "rmsprop"}
    assert any("dampening" in p for p in samples)
    assert mixed_space.sample(3) == mixed_space.sample(np.random.default_rng(3))


def test_sample_is_log_uniform_for_log_ranges() -> None:
    space = SearchSpace([Float("lr", low=1e-5, high=1.0, log=True)])
    rng = np.random.default_rng(0)
    logs = np.array([math.log10(space.sample(rng)["lr"]) for _ in range(4000)])
    # log10(lr) is uniform on [-5, 0]: 40% of the mass lies below 1e-3.
    assert abs(np.mean(logs < -3) - 0.4) < 0.03
    assert logs.min() >= -5 and logs.max() <= 0


@pytest.mark.parametrize(
    "sampler",
    [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)],
    ids=["random", "tpe"],
)
def test_suggest_on_a_real_study(
    mixed_space: SearchSpace,
    sampler: optuna.samplers.BaseSampler,
    assert_same_params: Callable[..., None],
) -> None:
    returned: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = mixed_space.suggest(trial)
        returned.append(params)
        return params["lr"] + params.get("momentum", 0.0)

    study = optuna.create_study(sampler=sampler)  # in-memory storage
    study.optimize(objective, n_trials=50)
    assert len(study.trials) == 50
    for trial, params in zip(study.trials, returned, strict=True):
        assert trial.params == params
        assert list(params) == mixed_space.active(params)
        # validate() snaps Optuna's 0.15000000000000002 to the grid value 0.15.
        assert_same_params(mixed_space.validate(params), params)
        assert trial.distributions == mixed_space.distributions(params)
        assert params["seed"] == 7 and params["layers"] == 2 and params["warmup"] == 0.1
    assert {p["optimizer"] for p in returned} == {"sgd", "adam", "rmsprop"}


def test_enqueued_params_come_back_from_suggest(mixed_space: SearchSpace) -> None:
    params = mixed_space.validate(mixed_space.sample(1))
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    assert mixed_space.suggest(trial) == params


# --- dictionary (YAML) form -----------------------------------------------------------------

YAML = """
optimizer: {type: categorical, choices: [sgd, adam]}
lr: {type: float, low: 1.0e-5, high: 1.0, log: true}
momentum: {type: float, low: 0.0, high: 0.99, condition: {optimizer: [sgd]}}
nesterov: {type: categorical, choices: [true, false], condition: {optimizer: sgd}}
layers: {type: int, low: 2, high: 24, step: 2}
seed: {type: fixed, value: 0}
"""


def test_from_yaml() -> None:
    space = SearchSpace.from_dict(yaml.safe_load(YAML))
    assert space == SearchSpace(
        [
            Categorical("optimizer", choices=("sgd", "adam")),
            Float("lr", low=1e-5, high=1.0, log=True),
            Float("momentum", low=0.0, high=0.99, condition=Condition("optimizer", ("sgd",))),
            Categorical("nesterov", choices=(True, False), condition=Condition("optimizer", "sgd")),
            Int("layers", low=2, high=24, step=2),
            Fixed("seed", value=0),
        ]
    )


def test_dict_round_trip(mixed_space: SearchSpace) -> None:
    as_dict = mixed_space.to_dict()
    assert as_dict["lr"] == {"type": "float", "low": 1e-5, "high": 1.0, "log": True}
    assert as_dict["nesterov"]["condition"] == {"optimizer": ["sgd"]}
    assert SearchSpace.from_dict(as_dict) == mixed_space
    # The dictionary form survives YAML unchanged.
    text = yaml.safe_dump(as_dict, sort_keys=False)  # declaration order matters
    assert SearchSpace.from_dict(yaml.safe_load(text)) == mixed_space


@pytest.mark.parametrize(
    ("spec", "path", "texts"),
    [
        ({"lr": {"type": "float", "lo": 0, "high": 1}}, ("lr", "lo"), ["'lo'", "low, high"]),
        ({"lr": {"type": "double", "low": 0}}, ("lr", "type"), ["'double'", "'float'", "'int'"]),
        ({"lr": {"low": 0, "high": 1}}, ("lr", "type"), ["'categorical'"]),
        ({"lr": {"type": "float", "high": 1}}, ("lr", "low"), ["required", "low"]),
        ({"lr": {"type": "float", "low": "small", "high": 1}}, ("lr", "low"), ["'small'"]),
        ({"lr": {"type": "int", "low": 0, "high": 4, "choices": [1]}}, ("lr", "choices"), ["step"]),
        ({"c": {"type": "categorical", "choices": "a"}}, ("c", "choices"), ["'a'"]),
        ({"c": {"type": "categorical"}}, ("c", "choices"), ["required"]),
        ({"f": {"type": "fixed"}}, ("f", "value"), ["required"]),
        ({"lr": [0, 1]}, ("lr",), ["[0, 1]", "type"]),
        (
            {
                "a": {"type": "fixed", "value": 1},
                "b": {"type": "fixed", "value": 2, "condition": "a"},
            },
            ("b", "condition"),
            ["'a'"],
        ),
        (
            {
                "a": {"type": "fixed", "value": 1},
                "b": {"type": "fixed", "value": 2, "condition": {"a": [1], "c": [2]}},
            },
            ("b", "condition"),
            ["'c'"],
        ),
        (
            {"b": {"type": "fixed", "value": 2, "condition": {"a": [1]}}},
            ("b", "condition"),
            ["'a'", "does not exist"],
        ),
        (
            {
                "a": {"type": "fixed", "value": 1},
                "b": {"type": "fixed", "value": 2, "condition": {"a": []}},
            },
            ("b", "condition", "values"),
            ["empty"],
        ),
    ],
)
def test_from_dict_errors(spec: Any, path: tuple[str, ...], texts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict(spec)
    assert info.value.path == path
    for text in texts:
        assert text in str(info.value)


def test_from_dict_rejects_non_mappings_and_non_string_names() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        SearchSpace.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="quote"):
        SearchSpace.from_dict({1: {"type": "fixed", "value": 1}})  # type: ignore[dict-item]


def _x_below_half(params):  # module level: picklable
    return params["x"] < 0.5


def test_a_rule_decides_what_the_space_admits() -> None:
    import pickle

    space = SearchSpace([Float("x", low=0.0, high=1.0)], rule=_x_below_half)
    assert space.admits({"x": 0.2}) and not space.admits({"x": 0.7})
    assert SearchSpace([Float("x", low=0.0, high=1.0)]).admits({"x": 0.7})  # no rule
    assert not space.admits({"y": 1.0})  # a rule that raises refuses
    assert pickle.loads(pickle.dumps(space)).admits({"x": 0.2})
    with pytest.raises(ConfigError, match="`rule` must be callable"):
        SearchSpace([Float("x", low=0.0, high=1.0)], rule=3)  # type: ignore[arg-type]


def _x_as_percent(params):  # module level: picklable
    return f"x {params['x']:.0%}"


def test_a_candidate_reads_as_its_first_params_unless_the_space_has_a_describer() -> None:
    import pickle

    params = [Float("lr", low=1e-5, high=1.0, log=True), Int("rank", low=1, high=64)]
    plain = SearchSpace([*params, *(Float(f"x{i}", low=0.0, high=1.0) for i in range(4))])
    candidate = {"x3": 0.5, "rank": 8, "lr": 0.000316, "x0": 0.12345, "x1": 1.0, "x2": 0.0}
    # Declaration order, numbers shortened, the rest counted.
    assert plain.describe(candidate) == "lr=3.16e-4 rank=8 x0=0.123 x1=1 +2"
    space = SearchSpace([Float("x", low=0.0, high=1.0)], describer=_x_as_percent)
    assert space.describe({"x": 0.25}) == "x 25%"
    assert pickle.loads(pickle.dumps(space)).describe({"x": 0.25}) == "x 25%"
    # A describer that fails names the candidate the default way: a name never stops a search.
    assert space.describe({"y": 0.25}) == "y=0.25"
    with pytest.raises(ConfigError, match="`describer` must be callable"):
        SearchSpace(params, describer="lr")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0316, "0.0316"), (0.00316, "3.16e-3"), (2.0**-8, "3.91e-3"), (12345.6, "1.23e4"),
     (-0.5, "-0.5"), (0.0, "0"), (float("inf"), "inf"), (7, "7"), (np.int64(3), "3"),
     (False, "off"), ("qkvo+ffn", "qkvo+ffn"), ("a_very_long_category_name", "a_very_long_cat~")],
)  # fmt: skip
def test_short_values(value: Any, text: str) -> None:
    assert short_value(value) == text


def test_compact_params_skips_and_counts() -> None:
    assert compact_params({}) == ""
    assert compact_params({"a": 1, "b": 2, "c": 3}, limit=2) == "a=1 b=2 +1"
    assert compact_params({"a": 1, "b": 2, "c": 3}, skip=("b",)) == "a=1 c=3"

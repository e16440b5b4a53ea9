"""The finetune objective's settings model on its own: defaults, the JSON schema, the rules
between settings, and searched values checked like the settings they override. Nothing is
loaded: no model, no data."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from paretune import ConfigError
from paretune._validation import config_error
from paretune.objectives.finetune import Fidelity, FinetuneSettings, SplitFractions
from paretune.objectives.finetune._fidelity import schedules


def settings(**values: object) -> FinetuneSettings:
    return FinetuneSettings.model_validate({"model": "m", "data": "d.csv", **values})


def error(**values: object) -> ConfigError:
    with pytest.raises(ValidationError) as info:
        settings(**values)
    return config_error(info.value)


def test_defaults_and_frozen():
    s = settings()
    assert (s.learning_rate, s.full_learning_rate, s.weight_decay) == (1e-3, 5e-5, 0.0)
    assert (s.batch_size, s.eval_batch_size, s.warmup_ratio) == (32, 128, 0.06)
    assert (s.precision, s.group_by_length, s.device) == ("fp32", True, None)
    assert s.data_settings().fractions == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert s.data_settings().files == {}
    with pytest.raises(ValidationError, match="frozen"):
        s.batch_size = 8  # type: ignore[misc]
    # The settings are valid anywhere: files are looked for when the objective is built.
    assert settings(data="no/such/file.csv").data == "no/such/file.csv"


@pytest.mark.parametrize("model", [FinetuneSettings, Fidelity, SplitFractions])
def test_every_field_is_documented(model):
    documented = set(re.findall(r"^        (\w+):", model.__doc__ or "", flags=re.MULTILINE))
    assert documented == set(model.model_fields)


def test_json_schema():
    schema = FinetuneSettings.model_json_schema()
    json.dumps(schema)  # plain JSON
    assert schema["required"] == ["model"] and schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(FinetuneSettings.model_fields)
    props = schema["properties"]
    assert props["learning_rate"]["exclusiveMinimum"] == 0
    assert props["warmup_ratio"]["minimum"] == 0 and props["warmup_ratio"]["exclusiveMaximum"] == 1
    assert props["precision"]["enum"] == ["fp32", "bf16", "auto"]
    assert set(schema["$defs"]) == {"Fidelity", "SplitFractions"}
    fidelity = schema["$defs"]["Fidelity"]["properties"]
    assert fidelity["epochs"]["exclusiveMinimum"] == 0 and fidelity["epochs"]["default"] == 1.0


@pytest.mark.parametrize(
    ("values", "path", "words"),
    [
        ({"train": "t.csv"}, ("data",), "not both"),
        ({"data": None}, ("data",), "no data"),
        ({"data": None, "train": "t.csv"}, ("validation",), "`validation` is needed"),
        ({"data": None, "validation": "v.csv", "test": "x.csv"}, ("train",), "`train` is needed"),
        ({"split_fractions": {"train": 0.7, "validation": 0.2}}, ("split_fractions",), "sum to"),
        (
            {"split_fractions": {"validation": 0.5, "test": 0.5}},
            ("split_fractions", "train"),
            "missing",
        ),
        ({"fidelity": {"epochs": 1, "step": 2}}, ("fidelity", "step"), "allowed keys: "),
        ({"full_fidelity": {"max_length": 2.0}}, ("full_fidelity", "max_length"), "integer"),
        ({"fidelity": {"epochs": True}}, ("fidelity", "epochs"), "got True"),
        ({"batch_size": 8.0}, ("batch_size",), "integer"),
        ({"stratify": 1}, ("stratify",), "boolean"),
        (
            {"learning_rate_multipliers": {"lora": 2.0, "adapter": 3.0}},
            ("learning_rate_multipliers", "adapter"),
            "the kinds are lora, serial",
        ),
        ({"precision": "fp16"}, ("precision",), "'fp32', 'bf16' or 'auto'"),
        ({"lora_dropout": 1.0}, ("lora_dropout",), "less than 1"),
        ({"weight_decay": float("nan")}, ("weight_decay",), "finite"),
        ({"learning_rate": 0, "batch_size": 0}, ("learning_rate",), "(and 1 more error)"),
    ],
)
def test_invalid_settings_are_located(values, path, words):
    err = error(**values)
    assert err.path == path
    assert words in err.message


def test_split_files_instead_of_data():
    s = settings(data=None, train="t.csv", validation="v.csv")
    assert s.data_settings().files == {"train": "t.csv", "validation": "v.csv"}
    fractions = settings(split_fractions={"train": 0.9, "validation": 0.1}).data_settings()
    assert fractions.fractions == {"train": 0.9, "validation": 0.1, "test": 0.0}


def test_full_fidelity_overrides_the_search_fidelity_key_by_key():
    search = Fidelity(train_examples=100, epochs=2, max_length=32, eval_examples=50)
    assert schedules(search, None) == (search, Fidelity(epochs=2, max_length=32))
    _, full = schedules(search, Fidelity.model_validate({"epochs": 3, "train_examples": 500}))
    assert full == Fidelity(train_examples=500, epochs=3, max_length=32)
    # An explicit null is an override too: all rows, or the default length.
    _, full = schedules(search, Fidelity.model_validate({"max_length": None}))
    assert full == Fidelity(epochs=2)
    assert schedules(None, None) == (Fidelity(), Fidelity())


def test_searched_values_win_and_are_checked_like_the_settings():
    s = settings(learning_rate_multipliers={"prefix": 30.0}, lora_dropout=0.1)
    hyper, dropout = s.for_trial({"batch_size": 8, "lora_dropout": 0.2}, full=False, device="cpu")
    assert (hyper.learning_rate, hyper.batch_size, dropout) == (1e-3, 8, 0.2)
    assert hyper.lr_multipliers == {"prefix": 30.0}
    full, _ = s.for_trial({}, full=True, device="cpu")
    assert full.learning_rate == 5e-5 and full.lr_multipliers == {}
    searched, _ = s.for_trial({"learning_rate": 0.01}, full=True, device="cpu")
    assert searched.learning_rate == 0.01  # a searched rate is used by full fine-tuning too
    for name, value in [("batch_size", 0), ("batch_size", 8.0), ("warmup_ratio", 1.0)]:
        with pytest.raises(ConfigError) as info:
            s.for_trial({name: value}, full=False, device="cpu")
        assert info.value.path == (name,)
    # Parameters that are no settings (the PEFT ones) are not the settings' business.
    assert s.for_trial({"lora_rank": 0}, full=False, device="cpu")[0].batch_size == 32

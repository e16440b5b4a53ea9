"""A PEFT candidate's short name (what its MLflow run is called)."""

from __future__ import annotations

import pickle

import pytest

from paretune.spaces.peft import describe_model, layer_ranges, peft_space

from .conftest import tiny_config


@pytest.fixture(scope="module")
def bert():
    return describe_model(tiny_config("bert"))  # 3 layers


def test_layer_ranges():
    assert layer_ranges([]) == ""
    assert layer_ranges([4, 0, 2, 3, 7]) == "0,2-4,7"
    assert layer_ranges(range(12)) == "0-11"


def test_shared_layers_follow_the_modules(bert):
    space = peft_space(bert)
    params = {"serial_size": 16, "parallel_size": 0, "prefix_length": 2, "lora_rank": 4,
              "lora_alpha_ratio": 2.0, "lora_targets": "qv",
              "layer_0": False, "layer_1": True, "layer_2": True}  # fmt: skip
    assert space.describe(space.validate(params)) == "lora r4 qv sa16 px2 L1-2"
    assert pickle.loads(pickle.dumps(space)).describe(params) == "lora r4 qv sa16 px2 L1-2"


def test_per_module_layers_follow_each_module_and_per_layer_ranks_read_as_a_range(bert):
    space = peft_space(bert, modules=("lora", "serial"), layer_selection="per_module")
    params = {"lora_rank": 8, "lora_alpha_ratio": 2.0, "lora_targets": "qkvo",
              "serial_size": 4, "lora_layer_0": True, "lora_layer_1": False,
              "lora_layer_2": False, "serial_layer_0": False, "serial_layer_1": True,
              "serial_layer_2": True}  # fmt: skip
    assert space.describe(space.validate(params)) == "lora r8 qkvo L0 sa4 L1-2"
    ranks = peft_space(bert, modules=("lora",), per_layer_lora_ranks=True)
    params = {"lora": True, "lora_alpha_ratio": 2.0, "lora_targets": "qv", "lora_rank_0": 2,
              "lora_rank_1": 0, "lora_rank_2": 8, "layer_0": True, "layer_1": True,
              "layer_2": True}  # fmt: skip
    assert ranks.describe(ranks.validate(params)) == "lora r2-8 qv L0,2"


def test_full_fine_tuning_an_empty_candidate_and_extra_parameters(bert):
    from paretune.objectives.finetune._space import searched_space

    space = searched_space(
        bert,
        {"full_finetune": True, "modules": ["serial"], "layer_selection": "none"},
        {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}},
    )
    assert space.describe({"method": "full", "learning_rate": 0.0003}) == "full learning_rate=3e-4"
    assert space.describe({"method": "peft", "serial_size": 0, "learning_rate": 0.02}) == (
        "none learning_rate=0.02"
    )

from __future__ import annotations

import numpy as np
import optuna
import pytest

from paretune import ConfigError
from paretune.spaces import Categorical, Fixed
from paretune.spaces.peft import (
    AUTOPEFT_SIZES,
    MODULE_SWITCHES,
    PeftPlan,
    count_trainable,
    decode_params,
    describe_model,
    is_valid,
    layer_count,
    lora_target_names,
    peft_space,
    repair,
    scale_sizes,
)

from .conftest import tiny_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

SIZES_32 = (0, 1, 2, 4, 8, 16, 32)  # AutoPEFT's list scaled from hidden 768 to 32


@pytest.fixture(scope="module")
def bert():
    return describe_model(tiny_config("bert"))


@pytest.fixture(scope="module")
def llama():
    return describe_model(tiny_config("llama"))


@pytest.fixture(scope="module")
def gpt2():
    return describe_model(tiny_config("gpt2"))


# --- sizes and targets ----------------------------------------------------------------------


def test_scale_sizes():
    assert scale_sizes(AUTOPEFT_SIZES, 768) == AUTOPEFT_SIZES
    assert scale_sizes(AUTOPEFT_SIZES, 384) == (0, 1, 2, 3, 6, 12, 24, 48, 96, 192, 384)
    assert scale_sizes(AUTOPEFT_SIZES, 32) == SIZES_32
    assert scale_sizes((1, 3), 32) == (1,)  # present stays present: never rounded to 0


@pytest.mark.parametrize(
    ("sizes", "hidden", "path"),
    [((), 32, "sizes"), ((1, -2), 32, "sizes"), ((1, True), 32, "sizes"), ((1,), 0, "hidden_size")],
)
def test_scale_sizes_rejects_bad_input(sizes, hidden, path):
    with pytest.raises(ConfigError) as info:
        scale_sizes(sizes, hidden)
    assert info.value.path == (path,)


def test_lora_target_groups(bert, llama, gpt2):
    assert lora_target_names(bert, "qv") == ("attention.self.query", "attention.self.value")
    assert lora_target_names(bert, "qkvo+ffn") == bert.names(
        "q", "k", "v", "o", "ffn_in", "ffn_out"
    )
    assert lora_target_names(llama, "o+ffn") == (
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
    # GPT-2's fused projection: q, k and v all mean c_attn.
    assert lora_target_names(gpt2, "qv") == lora_target_names(gpt2, "qkv") == ("attn.c_attn",)
    assert lora_target_names(gpt2, "qkvo") == ("attn.c_attn", "attn.c_proj")


@pytest.mark.parametrize("group", ["", "qx", "qq", "q+", "mlp", 3])
def test_malformed_target_groups_are_refused(bert, group):
    with pytest.raises(ConfigError, match="target group") as info:
        lora_target_names(bert, group)
    assert info.value.path == ("lora_targets",)


# --- the space ------------------------------------------------------------------------------


def test_shared_space(bert):
    space = peft_space(bert)
    assert space.names == (
        "serial_size", "parallel_size", "prefix_length", "lora_rank", "lora_alpha_ratio",
        "lora_targets", "layer_0", "layer_1", "layer_2",
    )  # fmt: skip
    assert space["serial_size"] == Categorical("serial_size", choices=SIZES_32, ordered=True)
    assert space["prefix_length"].choices == SIZES_32
    assert space["lora_rank"].choices == (0, 1, 2, 4, 8, 16, 32, 64)
    # Sizes and ranks are ordinal (neighbours behave alike); target groups and switches not.
    assert space["prefix_length"].ordered and space["lora_rank"].ordered
    assert not space["lora_targets"].ordered and not space["layer_1"].ordered
    ratio = space["lora_alpha_ratio"]
    assert isinstance(ratio, Fixed) and ratio.value == 2.0
    assert ratio.condition.parent == "lora_rank" and 0 not in ratio.condition.values
    assert space["lora_targets"].choices == ("qv", "qkvo", "qkvo+ffn")
    assert space["layer_1"] == Categorical("layer_1", choices=(False, True))


def test_explicit_prefix_lengths_are_tokens_and_not_rescaled(bert):
    space = peft_space(bert, prefix_lengths=[0, 5, 10, 20])
    assert space["prefix_length"].choices == (0, 5, 10, 20)
    assert space["serial_size"].choices == SIZES_32  # adapter sizes still follow the width


def test_lora_settings_are_active_only_with_lora(bert):
    space = peft_space(bert)
    off = {"serial_size": 2, "parallel_size": 0, "prefix_length": 0, "lora_rank": 0}
    assert "lora_alpha_ratio" not in space.active(off)
    assert "lora_targets" not in space.active(off)
    assert {"lora_alpha_ratio", "lora_targets"} <= set(space.active({**off, "lora_rank": 8}))


def test_per_module_space(bert):
    space = peft_space(bert, modules=("lora", "serial"), layer_selection="per_module")
    assert space.names[:4] == ("lora_rank", "lora_alpha_ratio", "lora_targets", "serial_size")
    assert "layer_0" not in space
    switch = space["serial_layer_2"]
    assert switch.condition.parent == "serial_size" and 0 not in switch.condition.values
    assert space["lora_layer_0"].condition.parent == "lora_rank"
    params = space.sample(0)
    assert all(
        name.startswith("lora_") == (params["lora_rank"] > 0)
        for name in params
        if name.startswith("lora_") and name != "lora_rank"
    )


def test_space_without_layer_selection(bert):
    space = peft_space(bert, layer_selection="none")
    assert not any("layer_" in name for name in space.names)


def test_per_layer_lora_ranks(bert):
    space = peft_space(bert, per_layer_lora_ranks=True, modules=("lora",))
    assert space.names == (
        "lora", "lora_alpha_ratio", "lora_targets", "lora_rank_0", "lora_rank_1", "lora_rank_2",
        "layer_0", "layer_1", "layer_2",
    )  # fmt: skip
    assert space["lora_rank_1"].condition.parent == "lora"
    per_module = peft_space(bert, per_layer_lora_ranks=True, layer_selection="per_module")
    assert not any(name.startswith("lora_layer_") for name in per_module.names)


def test_space_options(bert):
    space = peft_space(
        bert,
        modules=("parallel", "lora"),
        sizes=(4, 8),
        scale_to_hidden=False,
        lora_alpha=(8.0, 16.0),
        lora_targets=("qkvo",),
    )
    assert space["parallel_size"].choices == (4, 8)
    assert space["layer_0"].condition is None  # sizes without 0: the module is always there
    assert space["lora_alpha"].choices == (8.0, 16.0)
    assert space["lora_targets"] == Fixed(
        "lora_targets", value="qkvo", condition=space["lora_targets"].condition
    )


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"modules": ("serial", "adapter")}, ("modules",)),
        ({"modules": ()}, ("modules",)),
        ({"modules": "serial"}, ("modules",)),
        ({"modules": ("lora", "lora")}, ("modules",)),
        ({"layer_selection": "per_layer"}, ("layer_selection",)),
        ({"sizes": (0, -1)}, ("sizes",)),
        ({"prefix_lengths": ()}, ("prefix_lengths",)),
        ({"lora_ranks": (0, 1.5)}, ("lora_ranks",)),
        ({"lora_alpha": 16.0, "lora_alpha_ratio": 2.0}, ("lora_alpha",)),
        ({"lora_alpha": (16.0, 0.0)}, ("lora_alpha",)),
        ({"lora_alpha_ratio": (1.0, -2.0)}, ("lora_alpha_ratio",)),
        ({"lora_targets": ("qv", "qz")}, ("lora_targets",)),
        ({"lora_targets": "qv"}, ("lora_targets",)),
        ({"per_layer_lora_ranks": True, "lora_ranks": (0,)}, ("lora_ranks",)),
        ({"per_layer_lora_ranks": 1}, ("per_layer_lora_ranks",)),
    ],
)
def test_bad_arguments_are_refused(bert, kwargs, path):
    with pytest.raises(ConfigError) as info:
        peft_space(bert, **kwargs)
    assert info.value.path == path


def test_optuna_suggests_through_the_conditions(bert):
    space = peft_space(bert, layer_selection="per_module", per_layer_lora_ranks=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        params = space.suggest(trial)
        assert space.validate(params) == params == trial.params
        decode_params(params, bert)
        study.tell(trial, 0.0)


# --- decoding, validity, repair -------------------------------------------------------------


def test_decode_shared_layers_and_lora_ratio(bert):
    params = {
        "serial_size": 4, "parallel_size": 0, "prefix_length": 2, "lora_rank": 8,
        "lora_alpha_ratio": 2.0, "lora_targets": "qv",
        "layer_0": True, "layer_1": False, "layer_2": True, "lr": 1e-3,
    }  # fmt: skip
    plan = decode_params(params, bert)
    assert plan == PeftPlan(
        n_layers=3,
        serial_size=4, serial_layers=(0, 2),
        prefix_length=2, prefix_layers=(0, 2),
        lora_targets="qv", lora_layers=(0, 2), lora_ranks=(8, 8), lora_alphas=(16.0, 16.0),
    )  # fmt: skip
    assert plan.active_modules == ("serial", "prefix", "lora")


def test_decode_per_module_and_per_layer_ranks(bert):
    params = {
        "serial_size": 4, "serial_layer_0": False, "serial_layer_1": True, "serial_layer_2": False,
        "lora": True, "lora_alpha": 4.0, "lora_targets": "qkvo",
        "lora_rank_0": 2, "lora_rank_1": 0, "lora_rank_2": 16,
    }  # fmt: skip
    plan = decode_params(params, bert)
    assert (plan.serial_layers, plan.parallel_layers) == ((1,), ())
    assert (plan.lora_layers, plan.lora_ranks, plan.lora_alphas) == ((0, 2), (2, 16), (4.0, 4.0))
    assert plan.layer_sizes("serial") == {1: 4}
    assert plan.layer_sizes("lora") == {0: 2, 2: 16}
    assert plan.layer_sizes("prefix") == {}
    with pytest.raises(ValueError, match="`module` must be one of"):
        plan.layer_sizes("adapter")
    assert decode_params({"parallel_size": 2}, bert).parallel_layers == (0, 1, 2)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"serial_size": 2, "layer_3": True}, ("layer_3",)),
        ({"serial_size": -1}, ("serial_size",)),
        ({"serial_size": 2, "layer_0": "yes"}, ("layer_0",)),
        ({"lora_rank": 4, "lora_alpha": 8.0}, ("lora_targets",)),
        ({"lora_rank": 4, "lora_targets": "qv"}, ("lora_alpha",)),
        ({"lora_rank": 4, "lora_targets": "qy", "lora_alpha": 8.0}, ("lora_targets",)),
    ],
)
def test_decode_refuses_bad_params(bert, params, path):
    with pytest.raises(ConfigError) as info:
        decode_params(params, bert)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ({"serial_size": 2, "layer_0": False, "layer_1": True}, True),
        ({"serial_size": 2, "layer_0": False, "layer_1": False}, False),
        ({"serial_size": 0, "prefix_length": 0, "lora_rank": 0, "layer_0": True}, False),
        ({"serial_size": 2}, True),  # no switches: every layer
        ({"serial_size": 2, "serial_layer_0": False, "prefix_length": 0}, False),
        ({"lora": True, "lora_rank_0": 0, "lora_rank_1": 0}, False),
    ],
)
def test_is_valid(params, valid):
    assert is_valid(params) is valid


def test_layer_count_and_module_switches_read_a_study_s_names(bert):
    assert layer_count(peft_space(bert).names) == 3
    assert layer_count(["serial_size", "prefix_layer_4", "lora_rank_1", "lr"]) == 5
    assert layer_count(peft_space(bert, layer_selection="none").names) is None
    assert layer_count(["lora_rank", "lora_targets"]) is None  # one rank: not a layer's
    spaces = [
        peft_space(bert, layer_selection=s, per_layer_lora_ranks=p)
        for s in ("shared", "per_module", "none")
        for p in (False, True)
    ]
    assert all(set(MODULE_SWITCHES) & set(space.names) for space in spaces)
    assert set(MODULE_SWITCHES) == {
        "serial_size", "parallel_size", "prefix_length", "lora_rank", "lora",
    }  # fmt: skip


def test_the_space_admits_exactly_the_valid_candidates(bert):
    import pickle

    space = peft_space(bert, full_finetune=True)
    samples = [space.sample(seed) for seed in range(200)]
    assert any(not is_valid(p, bert) for p in samples)  # the space holds invalid ones
    assert all(space.admits(p) == is_valid(p, bert) for p in samples)
    assert space.admits({"method": "full"})
    assert pickle.loads(pickle.dumps(space)).admits({"method": "full"})


def test_repair_switches_on_the_top_layer(bert):
    space = peft_space(bert)
    params = space.sample(0) | {
        "serial_size": 4,
        "layer_0": False,
        "layer_1": False,
        "layer_2": False,
    }
    fixed = repair(params, space)
    assert fixed == params | {"layer_2": True}
    assert repair(fixed, space) == fixed


def test_repair_switches_on_the_first_module(bert):
    space = peft_space(bert, layer_selection="per_module", modules=("prefix", "lora"))
    fixed = repair({"prefix_length": 0, "lora_rank": 0}, space)
    assert fixed == {
        "prefix_length": 1, "lora_rank": 0,
        "prefix_layer_0": False, "prefix_layer_1": False, "prefix_layer_2": True,
    }  # fmt: skip


def test_repair_per_layer_ranks(bert):
    space = peft_space(bert, modules=("lora",), per_layer_lora_ranks=True)
    params = {"lora": False, "layer_0": True, "layer_1": False, "layer_2": False}
    fixed = repair(params, space)
    assert is_valid(fixed, bert) and fixed["lora"] is True
    assert decode_params(fixed, bert).lora_layers == (2,)


def test_repair_of_a_space_that_is_never_valid(bert):
    space = peft_space(bert, modules=("serial",), sizes=(0,))
    with pytest.raises(ConfigError, match="no module with a nonzero size"):
        repair({"serial_size": 0, "layer_0": True, "layer_1": True, "layer_2": True}, space)


@pytest.mark.parametrize("selection", ["shared", "per_module", "none"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_repair_always_gives_a_valid_candidate_of_the_space(bert, selection, per_layer):
    space = peft_space(
        bert,
        layer_selection=selection,
        per_layer_lora_ranks=per_layer,
        sizes=(0, 4),
        lora_ranks=(0, 2),
    )
    rng = np.random.default_rng(0)
    invalid = 0
    for _ in range(100):
        params = space.sample(rng)
        invalid += not is_valid(params, bert)
        fixed = repair(params, space)
        assert space.validate(fixed) == fixed and is_valid(fixed, bert)
    assert invalid > 0  # two sizes per module: invalid candidates are common here


# --- counting -------------------------------------------------------------------------------


def test_count_by_hand(bert, llama):
    params = {
        "serial_size": 4, "parallel_size": 2, "prefix_length": 3, "lora_rank": 8,
        "lora_alpha_ratio": 2.0, "lora_targets": "qv+ffn",
        "layer_0": True, "layer_1": False, "layer_2": True,
    }  # fmt: skip
    count = count_trainable(bert, params, head_params=66)
    h = 32
    assert count.serial == 2 * (2 * h * 4 + 4 + h)
    assert count.parallel == 2 * (2 * h * 2 + 2 + h)
    assert count.prefix == 2 * (2 * 3 * 4 * 8)
    assert count.lora == 2 * 8 * ((h + h) * 2 + (h + 64) + (64 + h))
    assert count.total == count.serial + count.parallel + count.prefix + count.lora + 66
    assert count.percent == pytest.approx(100 * count.total / bert.backbone_params)
    # LLaMA: grouped-query prefixes (2 kv heads) and narrower k/v projections.
    count = count_trainable(llama, {"prefix_length": 3, "lora_rank": 2, "lora_alpha": 4.0,
                                    "lora_targets": "kv", "layer_0": True})  # fmt: skip
    assert count.prefix == 1 * 2 * 3 * 2 * 8
    assert count.lora == 2 * (32 + 16) * 2
    assert count.head == 0
    assert count_trainable(bert, decode_params(params, bert)) == count_trainable(bert, params)


def test_count_refuses_a_bad_head_size(bert):
    with pytest.raises(ConfigError) as info:
        count_trainable(bert, {"serial_size": 1}, head_params=-1)
    assert info.value.path == ("head_params",)

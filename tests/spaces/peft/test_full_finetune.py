"""``peft_space(..., full_finetune=True)``: the ``method`` switch between PEFT and full tuning."""

from __future__ import annotations

import copy

import numpy as np
import optuna
import pytest
import torch

from paretune import ConfigError
from paretune.spaces import Categorical
from paretune.spaces.peft import (
    DEFAULT_HEAD_NAMES,
    METHOD_PARAM,
    PeftPlan,
    count_trainable,
    decode_params,
    describe_model,
    is_valid,
    materialize,
    peft_space,
    repair,
    trainable_parameters,
)

from .conftest import tiny_classifier, tiny_config

OPTIONS = [
    {},
    {"layer_selection": "per_module"},
    {"layer_selection": "none", "modules": ("lora",)},
    {"per_layer_lora_ranks": True},
    {"modules": ("parallel",), "sizes": (4, 8), "scale_to_hidden": False},  # no 0: no condition
]


@pytest.fixture(scope="module")
def bert():
    return describe_model(tiny_config("bert"))


@pytest.mark.parametrize("options", OPTIONS)
def test_the_option_off_leaves_the_space_unchanged(bert, options):
    assert peft_space(bert, **options) == peft_space(bert, **options, full_finetune=False)
    assert METHOD_PARAM not in peft_space(bert, **options)


@pytest.mark.parametrize("options", OPTIONS)
def test_every_peft_parameter_depends_on_the_method(bert, options):
    plain = peft_space(bert, **options)
    space = peft_space(bert, **options, full_finetune=True)
    assert space.names == (METHOD_PARAM, *plain.names)
    assert space[METHOD_PARAM] == Categorical(METHOD_PARAM, choices=("peft", "full"))
    for param in plain:
        conditioned = space[param.name]
        if param.condition is None:
            assert conditioned.condition.parent == METHOD_PARAM
            assert conditioned.condition.values == ("peft",)
        else:  # hangs off a module switch, which depends on the method
            assert conditioned.condition == param.condition
            assert space[param.condition.parent].condition.parent == METHOD_PARAM
    assert space.active({METHOD_PARAM: "full"}) == [METHOD_PARAM]
    params = plain.sample(0)
    assert space.validate({METHOD_PARAM: "peft", **params}) == {METHOD_PARAM: "peft", **params}


def test_full_candidates_are_valid_and_count_the_whole_model(bert):
    params = {METHOD_PARAM: "full"}
    assert is_valid(params) and is_valid(params, bert)
    assert decode_params(params, bert) == PeftPlan(n_layers=3, full=True)
    assert decode_params(params, bert).describe().startswith("full fine-tuning")
    count = count_trainable(bert, params, head_params=66)
    assert count.full == bert.backbone_params
    assert count.total == bert.backbone_params + 66
    assert count.percent == pytest.approx(100 * (bert.backbone_params + 66) / bert.backbone_params)
    # "peft" (or no method) counts as before.
    peft = {"serial_size": 4, "layer_0": True}
    assert count_trainable(bert, {METHOD_PARAM: "peft", **peft}) == count_trainable(bert, peft)
    assert count_trainable(bert, peft).full == 0


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "distilbert"])
def test_full_materialises_with_every_parameter_trainable(family, batch):
    backbone = tiny_classifier(family)
    layout = describe_model(backbone)
    head = sum(
        p.numel()
        for name, m in backbone.named_children()
        if name in DEFAULT_HEAD_NAMES
        for p in m.parameters()
    )
    model = materialize(copy.deepcopy(backbone), {METHOD_PARAM: "full"}, layout)
    trainable = trainable_parameters(model)
    assert sum(trainable.values()) == sum(p.numel() for p in model.parameters())
    assert sum(trainable.values()) == count_trainable(layout, {METHOD_PARAM: "full"},
                                                      head_params=head).total  # fmt: skip
    # Nothing was added: the model computes what the backbone computes.
    assert model.state_dict().keys() == backbone.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, backbone(**batch).logits)
    with pytest.raises(ConfigError, match="materialised before"):
        materialize(model, {METHOD_PARAM: "full"})


def test_random_candidates_count_exactly(batch):
    backbone = tiny_classifier("bert")
    layout = describe_model(backbone)
    space = peft_space(layout, full_finetune=True, sizes=(0, 4), lora_ranks=(0, 2))
    head = 32 * 2 + 2
    rng = np.random.default_rng(0)
    methods = set()
    for _ in range(12):
        params = repair(space.sample(rng), space)
        methods.add(params[METHOD_PARAM])
        model = materialize(copy.deepcopy(backbone), params, layout)
        count = count_trainable(layout, params, head_params=head)
        assert sum(trainable_parameters(model).values()) == count.total, params
    assert methods == {"peft", "full"}


def test_repair_keeps_full_and_repairs_peft(bert):
    space = peft_space(bert, full_finetune=True)
    assert repair({METHOD_PARAM: "full"}, space) == {METHOD_PARAM: "full"}
    params = {METHOD_PARAM: "peft", **peft_space(bert).sample(0), "serial_size": 4}
    params |= {f"layer_{i}": False for i in range(3)}
    fixed = repair(params, space)
    assert fixed[METHOD_PARAM] == "peft" and fixed["layer_2"] is True and is_valid(fixed, bert)


def test_optuna_samples_both_methods(bert):
    space = peft_space(bert, full_finetune=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        seen.add(params[METHOD_PARAM])
        if params[METHOD_PARAM] == "full":
            assert params == {METHOD_PARAM: "full"}
        assert space.validate(params) == params == trial.params
        study.tell(trial, 0.0)
    assert seen == {"peft", "full"}


def test_bad_method_and_option(bert):
    with pytest.raises(ConfigError, match="'peft', 'full'") as info:
        decode_params({METHOD_PARAM: "lora"}, bert)
    assert info.value.path == (METHOD_PARAM,)
    with pytest.raises(ConfigError) as info:
        peft_space(bert, full_finetune="yes")
    assert info.value.path == ("full_finetune",)

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from peft.tuners.lora import LoraLayer

from paretune import ConfigError
from paretune.spaces.peft import (
    DEFAULT_HEAD_NAMES,
    MODULE_KINDS,
    InvalidPeftConfig,
    count_trainable,
    decode_params,
    describe_model,
    is_valid,
    materialize,
    module_kind,
    peft_space,
    repair,
    trainable_parameters,
)

from .conftest import tiny_base_model, tiny_classifier

# Every kind of space, so that random candidates cover shared, per-module and no layer
# selection, global and per-layer LoRA ranks, and all target groups.
SPACE_OPTIONS = [
    {"layer_selection": selection, "per_layer_lora_ranks": per_layer}
    for selection, per_layer in itertools.product(("shared", "per_module", "none"), (False, True))
]


def head_size(model: torch.nn.Module) -> int:
    heads = [m for name, m in model.named_children() if name in DEFAULT_HEAD_NAMES]
    return sum(p.numel() for head in heads for p in head.parameters())


def candidates(layout: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random valid candidates over all kinds of space (invalid ones are repaired)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        space = peft_space(layout, **SPACE_OPTIONS[i % len(SPACE_OPTIONS)])
        params = space.sample(rng)
        out.append(params if is_valid(params, layout) else repair(params, space))
    return out


@pytest.mark.parametrize(
    ("family", "n", "seed"),
    [("bert", 24, 0), ("llama", 24, 1), ("gpt2", 6, 2), ("distilbert", 6, 3)],
)
def test_random_candidates_count_train_and_start_as_the_backbone(family, n, seed, batch):
    backbone = tiny_classifier(family)
    layout = describe_model(backbone)
    head = head_size(backbone)
    with torch.no_grad():
        reference = backbone(**batch).logits
    for params in candidates(layout, n, seed):
        model = materialize(copy.deepcopy(backbone), params, layout)
        trainable = trainable_parameters(model)
        # The analytic count is exact, module by module: module_kind (which sets each
        # module's learning rate) names every trainable parameter's module right.
        count = count_trainable(layout, params, head_params=head)
        assert sum(trainable.values()) == count.total
        by_kind = dict.fromkeys(MODULE_KINDS, 0)
        for name, size in trainable.items():
            by_kind[module_kind(name)] += size
        assert by_kind == {k: getattr(count, k) for k in MODULE_KINDS}, params
        # Only PEFT modules and the head train.
        assert all(
            "lora_" in name or "paretune_" in name or name.split(".")[0] in DEFAULT_HEAD_NAMES
            for name in trainable
        ), params
        # Forward and backward in training mode; gradients exactly on the trainable parameters.
        model.train()
        model(**batch).loss.backward()
        for name, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, (name, params)
        # Zero-initialised adapters and LoRA leave the backbone's function unchanged (a prefix
        # does not, so it is left out of this check).
        plan = dataclasses.replace(decode_params(params, layout), prefix_length=0, prefix_layers=())
        if plan.is_valid:
            model = materialize(copy.deepcopy(backbone), plan, layout).eval()
            with torch.no_grad():
                torch.testing.assert_close(model(**batch).logits, reference, atol=1e-6, rtol=1e-5)


def test_random_candidates_cover_every_module():
    layout = describe_model(tiny_classifier("bert").config)
    plans = [decode_params(params, layout) for params in candidates(layout, 24, 0)]
    assert {m for plan in plans for m in plan.active_modules} == {
        "serial",
        "parallel",
        "prefix",
        "lora",
    }
    assert sum(not plan.prefix_layers for plan in plans) >= 2
    assert any(len(set(plan.lora_ranks)) > 1 for plan in plans)  # per-layer ranks


def test_lora_goes_through_peft_with_per_layer_ranks_and_alphas(make_classifier):
    model = make_classifier("bert")
    layout = describe_model(model)
    params = {
        "lora": True, "lora_alpha_ratio": 2.0, "lora_targets": "qv+ffn",
        "lora_rank_0": 4, "lora_rank_1": 0, "lora_rank_2": 16,
    }  # fmt: skip
    materialize(model, params, layout)
    adapted = {
        name: (m.r["default"], m.scaling["default"])
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    layer = "bert.encoder.layer"
    assert adapted == {
        f"{layer}.{i}.{name}": (rank, 2.0)
        for i, rank in ((0, 4), (2, 16))
        for name in (
            "attention.self.query",
            "attention.self.value",
            "intermediate.dense",
            "output.dense",
        )
    }
    # BERT's FFN `output.dense` is adapted, its namesake `attention.output.dense` is not.
    assert not isinstance(model.get_submodule(f"{layer}.0.attention.output.dense"), LoraLayer)


def test_gpt2_lora_on_conv1d_and_prefix(make_classifier, batch):
    model = make_classifier("gpt2")
    params = {"lora_rank": 2, "lora_alpha": 4.0, "lora_targets": "qv", "prefix_length": 2}
    materialize(model, params)
    assert isinstance(model.get_submodule("transformer.h.1.attn.c_attn"), LoraLayer)
    model(**batch).loss.backward()


def test_invalid_candidate_never_reaches_the_model(make_classifier):
    model = make_classifier("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {
        "serial_size": 8,
        "lora_rank": 0,
        "layer_0": False,
        "layer_1": False,
        "layer_2": False,
    }
    with pytest.raises(InvalidPeftConfig, match="at least one module") as info:
        materialize(model, params)
    assert isinstance(info.value, ConfigError)
    assert model.state_dict().keys() == before.keys()
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_is_materialised_once(make_classifier):
    model = materialize(make_classifier("bert"), {"serial_size": 2})
    with pytest.raises(ConfigError, match="materialised before"):
        materialize(model, {"serial_size": 2})


def test_head_names(make_classifier):
    model = materialize(make_classifier("distilbert"), {"parallel_size": 2})
    assert {name.split(".")[0] for name in trainable_parameters(model)} == {
        "distilbert", "pre_classifier", "classifier",
    }  # fmt: skip
    model = materialize(make_classifier("bert"), {"parallel_size": 2}, task_head_names=())
    assert all(".paretune_" in name for name in trainable_parameters(model))
    with pytest.raises(ConfigError, match="'cls'") as info:
        materialize(make_classifier("bert"), {"parallel_size": 2}, task_head_names=["cls"])
    assert info.value.path == ("task_head_names",)


def test_layout_of_another_model_is_refused(make_classifier):
    layout = describe_model(make_classifier("llama"))
    with pytest.raises(ConfigError, match="layout must describe this model"):
        materialize(make_classifier("bert"), {"serial_size": 2}, layout)


def test_prefix_needs_eager_or_sdpa(make_classifier):
    model = make_classifier("bert")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ConfigError, match="eager or sdpa") as info:
        materialize(model, {"prefix_length": 2})
    assert info.value.path == ("prefix_length",)


# --- prefix tuning --------------------------------------------------------------------------

PREFIX = {"prefix_length": 3, "layer_0": True, "layer_1": False, "layer_2": True}


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "distilbert"])
def test_prefix_is_the_same_under_eager_and_sdpa(family, batch):
    eager = tiny_base_model(family, attn_implementation="eager")
    sdpa = tiny_base_model(family, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    for model in (eager, sdpa):
        torch.manual_seed(1)
        materialize(model, PREFIX)
    inputs = {"input_ids": batch["input_ids"]}
    for mask in (None, batch["attention_mask"]):  # sdpa gets no mask without padding
        a = eager(**inputs, attention_mask=mask).last_hidden_state
        b = sdpa(**inputs, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # The prefix changes the function, and only where it was put.
    plain = tiny_base_model(family, attn_implementation="sdpa")
    assert not torch.allclose(plain(**inputs).last_hidden_state, b, atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_prefix_keeps_decoders_causal_and_cacheable(family, implementation, batch):
    model = materialize(tiny_base_model(family, attn_implementation=implementation), PREFIX)
    ids = batch["input_ids"][:1]
    changed = ids.clone()
    changed[0, -1] = 3 if ids[0, -1] != 3 else 4
    full = model(input_ids=ids).last_hidden_state
    other = model(input_ids=changed).last_hidden_state
    torch.testing.assert_close(full[:, :-1], other[:, :-1])  # the future stays hidden
    assert not torch.allclose(full[:, -1], other[:, -1])
    # A KV cache holds the tokens' keys only; the prefix is prepended again at every step.
    first = model(input_ids=ids[:, :4], use_cache=True)
    step = model(input_ids=ids[:, 4:5], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(step.last_hidden_state[:, 0], full[:, 4], atol=1e-5, rtol=1e-4)


def test_prefix_equals_attending_to_virtual_tokens():
    # An encoder layer with a prefix whose keys and values are those of P extra hidden states
    # computes, for the real tokens, what the plain layer computes on [extra; real].
    model = tiny_base_model("bert", attn_implementation="eager")
    plain = copy.deepcopy(model.encoder.layer[0])
    materialize(model, {"prefix_length": 2, "layer_0": True, "layer_1": False, "layer_2": False})
    attention = model.encoder.layer[0].attention.self
    virtual, real = torch.randn(1, 2, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        attention.paretune_prefix.key.copy_(attention.key(virtual).view(2, 4, 8).transpose(0, 1))
        attention.paretune_prefix.value.copy_(
            attention.value(virtual).view(2, 4, 8).transpose(0, 1)
        )
        expected = plain(torch.cat([virtual, real], dim=1))[:, 2:]
        got = model.encoder.layer[0](real)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_prefixed_model_survives_deepcopy(make_classifier, batch):
    model = materialize(make_classifier("llama"), PREFIX)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(**batch).logits, model(**batch).logits)
    assert clone.model.layers[0].self_attn.config.base is clone.config


def test_layout_from_a_config_fits_a_model_without_pooler(batch):
    import transformers

    from .conftest import tiny_config

    config = tiny_config("bert", num_labels=3)
    layout = describe_model(config)  # AutoModel: BertModel with its pooler
    model = transformers.BertForTokenClassification(config)
    assert layout.backbone_params > sum(p.numel() for p in model.bert.parameters())
    materialize(model, {"serial_size": 2}, layout)
    model(input_ids=batch["input_ids"]).logits.sum().backward()


def test_materialised_model_unpickles_in_a_fresh_process(make_classifier, batch, tmp_path):
    # A Ray worker gets the model pickled; the prefix attention function must be registered
    # there before the first forward, without the worker importing paretune itself.
    model = materialize(make_classifier("llama"), {"prefix_length": 2, "parallel_size": 2})
    path = tmp_path / "model.pt"
    torch.save({"model": model, "ids": batch["input_ids"]}, path)
    code = (
        "import json, torch; torch.set_num_threads(1); "
        f"d = torch.load({str(path)!r}, weights_only=False); "
        "print(json.dumps(d['model'](input_ids=d['ids']).logits.tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = model(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(torch.tensor(json.loads(out.stdout)), expected)

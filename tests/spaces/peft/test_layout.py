from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers

from paretune import ConfigError
from paretune.spaces.peft import ModelLayout, describe_model

from .conftest import tiny_classifier, tiny_config


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, paretune.spaces.peft; "
        "print(' '.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bert_layout():
    layout = describe_model(tiny_classifier("bert"))
    assert (layout.family, layout.model_type, layout.n_layers) == ("bert", "bert", 3)
    assert (layout.hidden_size, layout.n_heads, layout.n_kv_heads, layout.head_dim) == (32, 4, 4, 8)
    assert layout.ffn_size == 64
    assert (layout.layers_path, layout.attention, layout.layers_pattern) == (
        "encoder.layer",
        "attention.self",
        "layer",
    )
    assert layout.names("q", "k", "v") == (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    )
    assert layout.names("o") == ("attention.output.dense",)
    assert layout.names("ffn_in", "ffn_out") == ("intermediate.dense", "output.dense")
    assert layout.projection("intermediate.dense").out_features == 64
    assert not layout.conv1d and not layout.fused_qkv


def test_llama_layout_with_grouped_query_attention():
    layout = describe_model(tiny_classifier("llama"))
    assert (layout.family, layout.layers_path, layout.attention) == ("llama", "layers", "self_attn")
    assert (layout.n_heads, layout.n_kv_heads, layout.head_dim) == (4, 2, 8)
    assert layout.names("ffn_in") == ("mlp.gate_proj", "mlp.up_proj")
    assert layout.names("ffn_out") == ("mlp.down_proj",)
    k = layout.projection("self_attn.k_proj")
    assert (k.in_features, k.out_features) == (32, 16)


def test_gpt2_layout_has_fused_conv1d_projections():
    layout = describe_model(tiny_classifier("gpt2"))
    assert layout.family == "gpt2" and layout.conv1d and layout.fused_qkv
    assert layout.names("qkv", "o") == ("attn.c_attn", "attn.c_proj")
    assert layout.names("ffn_in", "ffn_out") == ("mlp.c_fc", "mlp.c_proj")
    qkv = layout.projection("attn.c_attn")
    assert (qkv.in_features, qkv.out_features) == (32, 96)
    assert layout.ffn_size == 128  # GPT-2's default FFN is 4 x hidden


def test_distilbert_layout():
    layout = describe_model(tiny_classifier("distilbert"))
    assert (layout.family, layout.layers_path, layout.attention) == (
        "distilbert",
        "transformer.layer",
        "attention",
    )
    assert layout.names("q", "o", "ffn_in", "ffn_out") == (
        "attention.q_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    )


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "distilbert"])
def test_config_and_model_give_the_same_layout(family):
    model = tiny_classifier(family)
    from_config = describe_model(model.config)
    assert from_config == describe_model(model)
    assert from_config.backbone_params == sum(p.numel() for p in model.base_model.parameters())
    assert isinstance(from_config, ModelLayout)
    hash(from_config)  # frozen and hashable


@pytest.mark.parametrize(
    ("config", "family", "n_kv_heads"),
    [
        (transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, vocab_size=100), "bert", 4),
        (transformers.Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=1, intermediate_size=96, vocab_size=100),
         "llama", 1),
    ],
)  # fmt: skip
def test_relatives_are_described_from_their_configs(config, family, n_kv_heads):
    layout = describe_model(config)
    assert (layout.family, layout.n_layers, layout.n_kv_heads) == (family, 2, n_kv_heads)


def test_explicit_head_dim_is_read_from_the_config():
    layout = describe_model(tiny_config("llama", head_dim=16))
    assert (layout.head_dim, layout.n_kv_heads) == (16, 2)
    assert layout.projection("self_attn.q_proj").out_features == 64


def test_unknown_model_type_with_known_module_names_is_recognised():
    model = tiny_classifier("llama")
    model.config.model_type = "my-llama"
    layout = describe_model(model)
    assert (layout.family, layout.model_type) == ("llama", "my-llama")


def test_model_without_addressable_layers_names_what_was_looked_for():
    class Tiny(transformers.PreTrainedModel):
        config_class = transformers.PretrainedConfig

        def __init__(self, config):
            super().__init__(config)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    with pytest.raises(ConfigError, match=r"encoder\.layer.*query") as info:
        describe_model(Tiny(transformers.PretrainedConfig()))
    assert info.value.path == ("model",)
    assert "q_proj" in str(info.value) and "c_attn" in str(info.value)


@pytest.mark.parametrize("value", [torch.nn.Linear(2, 2), "bert-base-uncased", 3])
def test_non_transformers_input_is_refused(value):
    with pytest.raises(ConfigError, match="transformers model"):
        describe_model(value)

"""muP applied to transformers decoders: roles, init, learning rates, multipliers, and that
the rules survive deepcopy, state_dict and torch.compile."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from paretune import ConfigError
from paretune.spaces.mup import (
    MuReadout,
    parametrize,
    transfer_space,
    width_config,
)

HEAD = 16


def _llama(width: int, **extra: object) -> LlamaForCausalLM:
    base = LlamaConfig(
        hidden_size=HEAD,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=HEAD,
        intermediate_size=4 * HEAD,
        num_hidden_layers=2,
        vocab_size=64,
        max_position_embeddings=32,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        **extra,
    )
    return LlamaForCausalLM(width_config(base, width)).eval()


def _gpt2(width: int) -> GPT2LMHeadModel:
    base = GPT2Config(
        n_embd=HEAD,
        n_head=1,
        n_layer=2,
        vocab_size=64,
        n_positions=32,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(width_config(base, width)).eval()  # eval: no dropout


BUILDERS = {"llama": _llama, "gpt2": _gpt2}


def _tokens() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_width_config_grows_heads_at_a_fixed_head_dim(arch: str) -> None:
    model = BUILDERS[arch](4 * HEAD)
    config = model.config
    assert config.hidden_size == 4 * HEAD
    assert config.num_attention_heads == 4
    inner = getattr(config, "intermediate_size", None) or config.n_inner or 4 * config.hidden_size
    assert inner == 4 * 4 * HEAD


def test_width_config_rejects_a_width_that_is_not_whole_heads() -> None:
    with pytest.raises(ConfigError, match=r"multiple of 16, but got width=40"):
        width_config(_llama(HEAD).config, 40)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_roles_follow_which_dimensions_grow(arch: str) -> None:
    model = BUILDERS[arch](4 * HEAD)
    rules = parametrize(model, base_width=HEAD)
    readout = [n for n, r in rules.roles.items() if r == "readout"]
    assert readout == ["lm_head.weight"]
    for name, param in model.named_parameters():
        role = rules.roles[name]
        if param.ndim == 1:
            assert role == "vector", name
        elif "wte" in name or "wpe" in name or "embed_tokens" in name:
            assert role == "input", name
        elif name != "lm_head.weight":
            assert role == "hidden", name


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_param_groups_divide_hidden_lr_by_width_mult_under_mup_only(arch: str) -> None:
    for kind, hidden_factor in (("mup", 1 / 8), ("sp", 1.0)):
        model = BUILDERS[arch](8 * HEAD)
        rules = parametrize(model, base_width=HEAD, kind=kind)
        groups = {g["role"]: g for g in rules.param_groups(model, lr=0.01, weight_decay=0.1)}
        assert groups["hidden"]["lr"] == pytest.approx(0.01 * hidden_factor, rel=1e-12)
        for role in ("input", "readout", "vector"):
            assert groups[role]["lr"] == pytest.approx(0.01, rel=1e-12)
        assert groups["vector"]["weight_decay"] == 0.0
        # AdamW decays by lr * weight_decay: muP keeps that product at the base width's.
        assert groups["hidden"]["weight_decay"] == pytest.approx(0.1 / hidden_factor)
        assert groups["input"]["weight_decay"] == 0.1
        # Every trainable parameter is in exactly one group.
        grouped = [id(p) for g in groups.values() for p in g["params"]]
        assert sorted(grouped) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_initialisation_scales_hidden_std_by_root_width_mult(arch: str) -> None:
    model = BUILDERS[arch](16 * HEAD)
    rules = parametrize(
        model, base_width=HEAD, init_std=0.05, generator=torch.Generator().manual_seed(0)
    )
    hidden = torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if rules.roles[n] == "hidden"]
    )
    inputs = torch.cat(
        [p.detach().flatten() for n, p in model.named_parameters() if rules.roles[n] == "input"]
    )
    assert float(hidden.std()) == pytest.approx(0.05 / 4, rel=0.02)
    assert float(inputs.std()) == pytest.approx(0.05, rel=0.02)
    assert float(model.lm_head.weight.detach().std()) == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_multipliers_are_installed(arch: str) -> None:
    model = BUILDERS[arch](4 * HEAD)
    parametrize(model, base_width=HEAD, output_multiplier=2.0, attention_multiplier=3.0)
    assert isinstance(model.lm_head, MuReadout)
    assert model.lm_head.output_multiplier == pytest.approx(2.0 / 4)
    scalings = [
        m.scaling for m in model.modules() if hasattr(m, "scaling") and hasattr(m, "head_dim")
    ]
    assert len(scalings) == 2
    assert all(s == pytest.approx(3.0 / math.sqrt(HEAD)) for s in scalings)
    # The readout multiplier really multiplies the logits.
    x = _tokens()
    logits = model(input_ids=x).logits
    model.lm_head.output_multiplier *= 2
    assert torch.allclose(model(input_ids=x).logits, 2 * logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_mup_equals_sp_at_the_base_width(arch: str) -> None:
    outputs = []
    for kind in ("mup", "sp"):
        model = BUILDERS[arch](2 * HEAD)
        parametrize(
            model, base_width=2 * HEAD, kind=kind, generator=torch.Generator().manual_seed(3)
        )
        outputs.append(model(input_ids=_tokens()).logits)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_rules_survive_deepcopy_save_and_state_dict(arch: str) -> None:
    model = BUILDERS[arch](4 * HEAD)
    parametrize(model, base_width=HEAD, output_multiplier=1.5, attention_multiplier=0.5)
    x = _tokens()
    expected = model(input_ids=x).logits

    twin = copy.deepcopy(model)
    assert isinstance(twin.lm_head, MuReadout)
    torch.testing.assert_close(twin(input_ids=x).logits, expected)

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded(input_ids=x).logits, expected)

    # A state_dict holds the weights; a model built and parametrised the same way takes them.
    fresh = BUILDERS[arch](4 * HEAD)
    parametrize(
        fresh,
        base_width=HEAD,
        output_multiplier=1.5,
        attention_multiplier=0.5,
        generator=torch.Generator().manual_seed(99),
    )
    assert set(fresh.state_dict()) == set(model.state_dict())
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(input_ids=x).logits, expected)
    # And the rules are in the config, for save_pretrained.
    assert fresh.config.paretune_parametrization["output_multiplier"] == 1.5


@pytest.mark.slow
def test_rules_survive_torch_compile() -> None:
    model = _llama(4 * HEAD)
    rules = parametrize(model, base_width=HEAD, output_multiplier=2.0)
    x = _tokens()
    expected = model(input_ids=x).logits
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(input_ids=x).logits, expected, rtol=1e-4, atol=1e-5)
    # The compiled module's parameters (named with its prefix) map onto the same groups.
    groups = rules.param_groups(compiled, lr=1e-3)
    assert {g["role"] for g in groups} == {"input", "hidden", "readout", "vector"}


def test_tied_readout_is_refused() -> None:
    model = _llama(2 * HEAD)
    model.lm_head.weight = model.model.embed_tokens.weight
    with pytest.raises(ConfigError, match="tie_word_embeddings=False"):
        parametrize(model, base_width=HEAD)


def test_parametrising_twice_is_refused() -> None:
    model = _llama(2 * HEAD)
    parametrize(model, base_width=HEAD)
    with pytest.raises(ConfigError, match="parametrised already"):
        parametrize(model, base_width=HEAD)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "umup"}, "one of sp, mup"),
        ({"init_std": 0.0}, "init_std"),
        ({"output_multiplier": float("nan")}, "output_multiplier"),
        ({"base_width": 24}, "multiple of 16"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"base_width": HEAD, **kwargs}
    with pytest.raises(ConfigError, match=match):
        parametrize(_llama(2 * HEAD), **arguments)  # type: ignore[arg-type]


def test_transfer_space_keeps_width_out() -> None:
    space = transfer_space(
        ("learning_rate", "output_multiplier"), ranges={"learning_rate": (1e-4, 1e-2)}
    )
    assert list(space.names) == ["learning_rate", "output_multiplier"]
    with pytest.raises(ConfigError, match="does not transfer across width"):
        transfer_space(("learning_rate", "width"))
    with pytest.raises(ConfigError, match="not a transferable"):
        transfer_space(("momentum",))


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_attention_multiplier_changes_the_forward_pass(arch: str, attention: str) -> None:
    x = _tokens()
    logits = {}
    for multiplier in (1.0, 3.0):
        model = BUILDERS[arch](4 * HEAD)
        model.config._attn_implementation = attention
        parametrize(
            model,
            base_width=HEAD,
            attention_multiplier=multiplier,
            generator=torch.Generator().manual_seed(0),
        )
        logits[multiplier] = model(input_ids=x).logits
        last = model
    assert not torch.allclose(logits[1.0], logits[3.0], atol=1e-6)
    # Setting the scale by hand gives the parametrised model's output: the forward reads it.
    for module in last.modules():
        if hasattr(module, "scaling") and hasattr(module, "head_dim"):
            module.scaling = 1.0 / math.sqrt(HEAD)
    torch.testing.assert_close(last(input_ids=x).logits, logits[1.0])

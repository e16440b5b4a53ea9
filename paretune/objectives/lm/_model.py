"""The lm objective's decoder: a ``transformers`` config at a width, the model built from it
and parametrised (:mod:`paretune.spaces.mup`), and what it costs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from paretune.objectives.lm._shape import Shape
from paretune.spaces.mup import Parametrization, parametrize, width_config

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["build_model", "decoder_config", "non_embedding_params", "training_flops"]


def decoder_config(shape: Shape) -> PretrainedConfig:
    """The ``transformers`` config of ``shape``: untied readout, no dropout, eager-free
    (SDPA) attention."""
    if shape.architecture == "gpt2":
        from transformers import GPT2Config

        config: PretrainedConfig = GPT2Config(
            n_embd=shape.head_dim,
            n_head=1,
            n_layer=shape.depth,
            n_inner=shape.mlp_ratio * shape.head_dim,
            n_positions=shape.sequence_length,
            vocab_size=shape.vocab_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=False,
        )
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(
            hidden_size=shape.head_dim,
            num_attention_heads=1,
            num_key_value_heads=1,
            head_dim=shape.head_dim,
            intermediate_size=shape.mlp_ratio * shape.head_dim,
            num_hidden_layers=shape.depth,
            max_position_embeddings=shape.sequence_length,
            vocab_size=shape.vocab_size,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            tie_word_embeddings=False,
        )
    return width_config(config, shape.width)


def build_model(
    shape: Shape,
    *,
    base_width: int,
    kind: Literal["sp", "mup"],
    init_std: float,
    output_multiplier: float,
    attention_multiplier: float,
    readout_zero_init: bool,
    seed: int,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, Parametrization]:
    """The decoder of ``shape``, initialised from ``seed`` alone and parametrised."""
    from transformers import AutoModelForCausalLM

    config = decoder_config(shape)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    generator = torch.Generator(device=device).manual_seed(seed)
    rules = parametrize(
        model,
        base_width=base_width,
        kind=kind,
        init_std=init_std,
        output_multiplier=output_multiplier,
        attention_multiplier=attention_multiplier,
        readout_zero_init=readout_zero_init,
        generator=generator,
    )
    return model, rules


def non_embedding_params(model: torch.nn.Module, rules: Parametrization) -> int:
    """Parameters outside the input embeddings (token and position), readout included: the
    ``N`` of ``6 N D`` and of Step Law."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if rules.roles[name.removeprefix("_orig_mod.")] != "input"
    )


def training_flops(shape: Shape, n_params: int, tokens: int) -> float:
    """``6 N D`` plus attention's ``6 * depth * sequence_length * width`` per token (Kaplan et
    al. 2020, section 2.1: forward ``2N + 2 n_layer n_ctx d_attn``, backward twice that)."""
    per_token = 6.0 * n_params + 6.0 * shape.depth * shape.sequence_length * shape.width
    return per_token * tokens


def count_non_embedding(shape: Shape, *, base_width: int) -> int:
    """:func:`non_embedding_params` of the decoder of ``shape``, built on the meta device (no
    memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(decoder_config(shape))
        rules = parametrize(model, base_width=base_width)
    return non_embedding_params(model, rules)

"""Tiny random-initialised transformers (hidden 32, 3 layers) of each supported family."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs tiny models: one torch thread (see tests/conftest.py)."""


def tiny_config(family: str, **overrides: Any) -> Any:
    """The config of a 3-layer, 32-wide model of ``family``, with 2 labels."""
    if family == "bert":
        kwargs: dict[str, Any] = dict(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            vocab_size=100,
        )  # fmt: skip
        return transformers.BertConfig(**{**kwargs, **overrides})
    if family == "llama":
        kwargs = dict(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, vocab_size=100, pad_token_id=0,
        )  # fmt: skip
        return transformers.LlamaConfig(**{**kwargs, **overrides})
    if family == "gpt2":
        kwargs = dict(
            n_embd=32, n_layer=3, n_head=4, n_positions=64, vocab_size=100, pad_token_id=0,
            bos_token_id=1, eos_token_id=2,
        )  # fmt: skip
        return transformers.GPT2Config(**{**kwargs, **overrides})
    if family == "distilbert":
        kwargs = dict(dim=32, n_layers=3, n_heads=4, hidden_dim=64, vocab_size=100)
        return transformers.DistilBertConfig(**{**kwargs, **overrides})
    raise ValueError(family)


def tiny_classifier(family: str, *, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised sequence classifier of ``family`` in eval mode."""
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def tiny_base_model(family: str, *, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised base model (no head) of ``family`` in eval mode."""
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(tiny_config(family, **overrides)).eval()


@pytest.fixture
def make_classifier() -> Callable[..., Any]:
    return tiny_classifier


@pytest.fixture
def make_base_model() -> Callable[..., Any]:
    return tiny_base_model


@pytest.fixture
def batch() -> dict[str, Any]:
    """Two sequences of 7 tokens, the second padded after 5 (right padding)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 100, (2, 7), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    input_ids[1, 5:] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([0, 1]),
    }

"""Width as a config setting: the same decoder at another width, grown by attention heads at a
fixed head dimension."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["config_width", "head_dim", "width_config"]


def config_width(config: PretrainedConfig) -> int:
    """The config's width (``hidden_size``; GPT-2's ``n_embd``)."""
    width = getattr(config, "hidden_size", None)
    if not isinstance(width, int) or width <= 0:
        raise ConfigError(
            f"a width-parametrised decoder needs an integer hidden_size, but "
            f"{type(config).__name__} has hidden_size={describe(width)}."
        )
    return width


def head_dim(config: PretrainedConfig) -> int:
    """The config's attention head dimension (``head_dim``, else ``hidden_size / heads``)."""
    explicit = getattr(config, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    heads = getattr(config, "num_attention_heads", None)
    width = config_width(config)
    if not isinstance(heads, int) or heads <= 0 or width % heads:
        raise ConfigError(
            f"{type(config).__name__} has no head dimension: hidden_size={width} is not a "
            f"multiple of num_attention_heads={describe(heads)}."
        )
    return width // heads


def width_config(config: PretrainedConfig, width: int) -> PretrainedConfig:
    """A copy of ``config`` at ``width``: more heads of the same dimension, and the MLP's inner
    size (``intermediate_size``, GPT-2's ``n_inner``) and the key/value heads scaled by the
    same ratio.

    Supports LLaMA-style configs (``hidden_size``, ``num_attention_heads``,
    ``num_key_value_heads``, ``intermediate_size``, optional ``head_dim``: LLaMA, Mistral,
    Qwen2 and their kin) and GPT-2 (``n_embd``, ``n_head``, ``n_inner``; ``n_inner=None`` is
    4 x width and stays so).

    Raises:
        ConfigError: ``width`` is not a positive multiple of the head dimension, or a scaled
            size (key/value heads, MLP inner size) would not be a whole number.
    """
    dim = head_dim(config)
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0 or width % dim:
        raise ConfigError(
            f"width grows by attention heads of dimension {dim}, so it must be a positive "
            f"multiple of {dim}, but got width={describe(width)}."
        )
    old = config_width(config)
    heads = width // dim
    out = copy.deepcopy(config)
    updates: dict[str, Any] = {"hidden_size": width, "num_attention_heads": heads}
    if hasattr(config, "num_key_value_heads") and config.num_key_value_heads is not None:
        groups, rest = divmod(config.num_attention_heads, config.num_key_value_heads)
        if rest or heads % groups:
            raise ConfigError(
                f"{heads} attention heads at width {width} cannot share key/value heads in "
                f"groups of {groups} as {type(config).__name__} does; choose a width whose "
                f"number of heads is a multiple of {groups}."
            )
        updates["num_key_value_heads"] = heads // groups
    for name in ("intermediate_size", "n_inner"):
        inner = getattr(config, name, None)
        if isinstance(inner, int):
            scaled, rest = divmod(inner * width, old)
            if rest:
                raise ConfigError(
                    f"{name}={inner} at hidden_size={old} does not scale to a whole number at "
                    f"width {width}; choose widths whose ratio divides it."
                )
            updates[name] = scaled
    if getattr(config, "head_dim", None) is not None:
        updates["head_dim"] = dim
    for name, value in updates.items():
        setattr(out, name, value)
    return out

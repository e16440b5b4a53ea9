"""The PEFT modules peft does not have: bottleneck adapters and per-layer prefixes.

Serial and parallel adapters sit on a layer's FFN through forward hooks, so module names and
the backbone's state-dict keys stay as they are (and LoRA, injected first, is inside the
hooked modules). Prefixes enter through the attention function; see
:class:`PrefixAttentionConfig`. Importing this module registers that function with
transformers, so a materialised model unpickled in another process (a Ray worker) runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "PREFIX_ATTENTION",
    "BottleneckAdapter",
    "FfnAdapters",
    "PrefixAttentionConfig",
    "PrefixKV",
]

PREFIX_ATTENTION = "paretune_prefix"
"""The name under which the prefix attention function is registered with transformers."""
PARALLEL_SCALING = 4.0


class BottleneckAdapter(nn.Module):
    """``up(relu(down(x)))``: a bottleneck of width ``size`` with biases.

    The up-projection starts at zero, so the adapter adds exactly nothing until it trains and
    the adapted model starts as the backbone.

    Args:
        hidden_size: Input and output width.
        size: Bottleneck width.
    """

    def __init__(self, hidden_size: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, size)
        self.up = nn.Linear(size, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class FfnAdapters(nn.Module):
    """The adapters of one layer's FFN and the hooks that apply them.

    With ``y`` the FFN output projection's output and ``x`` the FFN's input, the output
    becomes ``y + serial(y) + 4.0 * parallel(x)``: the serial adapter after the FFN (Pfeiffer
    placement: one adapter per layer, after the FFN, with its own skip connection, before the
    layer's residual and norm), the parallel one beside it (He et al. 2022, scaling 4.0).

    Args:
        hidden_size: The FFN's input and output width.
        serial: Serial adapter bottleneck, 0 for none.
        parallel: Parallel adapter bottleneck, 0 for none.
    """

    def __init__(self, hidden_size: int, *, serial: int, parallel: int) -> None:
        super().__init__()
        self.serial = BottleneckAdapter(hidden_size, serial) if serial else None
        self.parallel = BottleneckAdapter(hidden_size, parallel) if parallel else None
        self._inputs: list[torch.Tensor] = []

    def attach(self, ffn_in: nn.Module, ffn_out: nn.Module) -> None:
        """Hook onto the FFN's first input projection and its output projection."""
        if self.parallel is not None:
            ffn_in.register_forward_pre_hook(self._capture, with_kwargs=True)
        ffn_out.register_forward_hook(self._adapt)

    def _capture(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Chunked FFNs and gradient checkpointing call input and output projection in pairs,
        # so one pending input at a time is all there is.
        self._inputs = [args[0] if args else next(iter(kwargs.values()))]

    def _adapt(
        self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor
    ) -> torch.Tensor:
        y = output
        if self.serial is not None:
            y = y + self.serial(y)
        if self.parallel is not None:
            if not self._inputs:
                raise RuntimeError(
                    "the parallel adapter's FFN output ran without its input projection; "
                    "this model calls its FFN in a way paretune does not support."
                )
            y = y + PARALLEL_SCALING * self.parallel(self._inputs.pop())
        return y


class PrefixKV(nn.Module):
    """Learned key and value prefixes of one self-attention module.

    Args:
        n_kv_heads: Number of key/value heads.
        length: Number of prefix positions.
        head_dim: Width of one head.
        std: Standard deviation of the normal initialisation.
    """

    def __init__(self, n_kv_heads: int, length: int, head_dim: int, *, std: float = 0.02) -> None:
        super().__init__()
        self.key = nn.Parameter(torch.randn(n_kv_heads, length, head_dim) * std)
        self.value = nn.Parameter(torch.randn(n_kv_heads, length, head_dim) * std)

    @property
    def length(self) -> int:
        return int(self.key.shape[1])

    def forward(self, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, each `batch x n_kv_heads x length x head_dim`."""
        shape = (batch, *self.key.shape)
        return self.key.to(dtype).expand(shape), self.value.to(dtype).expand(shape)


class PrefixAttentionConfig:
    """The attention module's config as its module sees it, with our attention function.

    Why this design: a per-layer prefix must reach the keys after they are projected (and,
    in LLaMA, rotated) and before attention, for BERT-style encoders as well as GPT-2 and
    LLaMA decoders. peft's prefix tuning passes the prefixes as ``past_key_values``: all layers
    or none, and only for models that take a cache (not BERT encoders). Concatenating at the
    key/value projections' outputs breaks the models' reshapes (``view(batch, seq, -1, d)``)
    and, in LLaMA, would rotate the prefix. In transformers 5 every self-attention module
    calls ``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager)``
    with the final keys, values and mask. So each selected module gets this view of its
    config: it answers :data:`PREFIX_ATTENTION` for ``_attn_implementation`` and forwards
    every other attribute to the model's config. The registered function prepends the
    module's :class:`PrefixKV` to keys and values, extends the mask so every query sees the
    prefix, and calls the function the model's config names (the module's own eager function
    for ``"eager"``). Masks are built by the model from its own config, untouched; other
    layers and other models are unaffected; a KV cache stores keys without the prefix, which
    is prepended again at every step.

    Args:
        config: The model's config.
    """

    def __init__(self, config: Any) -> None:
        object.__setattr__(self, "_paretune_base", config)

    @property
    def _attn_implementation(self) -> str:
        return PREFIX_ATTENTION

    @property
    def base(self) -> Any:
        """The model's config."""
        return object.__getattribute__(self, "_paretune_base")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle protocols: this object's own, not the base's
            raise AttributeError(name)
        try:
            base = object.__getattribute__(self, "_paretune_base")
        except AttributeError:  # during unpickling and copying, before __init__ state exists
            raise AttributeError(name) from None
        return getattr(base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.base, name, value)


def register_prefix_attention() -> None:
    """Register :func:`prefix_attention_forward` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PREFIX_ATTENTION, prefix_attention_forward)


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention of ``module`` with its prefix prepended to ``key`` and ``value``.

    ``query`` is `b x heads x t x d`, ``key`` and ``value`` `b x kv_heads x s x d`; the mask is
    ``None`` or `b x 1 x t x s'` (``s' >= s``), boolean (True attends) or additive.
    """
    prefix: PrefixKV = module.paretune_prefix  # type: ignore[assignment]
    config = module.config
    base_name = (
        config.base._attn_implementation if isinstance(config, PrefixAttentionConfig) else None
    )
    attention = _base_attention(module, base_name)
    t, s = query.shape[2], key.shape[2]
    if attention_mask is None:
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        if base_name == "sdpa" and causal and t > 1:
            # sdpa would apply `is_causal` itself, but top-left aligned: with prefix columns
            # in front that would hide keys, so the causal mask is written out.
            if s > t:  # as sdpa does for a prefill into an empty static cache
                key, value, s = key[:, :, :t], value[:, :, :t], t
            attention_mask = torch.ones(t, s, dtype=torch.bool, device=query.device).tril()
            attention_mask = attention_mask[None, None]
            kwargs.pop("is_causal", None)
    pk, pv = prefix(key.shape[0], key.dtype)
    key = torch.cat([pk, key], dim=2)
    value = torch.cat([pv, value], dim=2)
    if attention_mask is not None:
        if attention_mask.dim() != 4:
            raise RuntimeError(
                "prefix tuning needs a 4-d attention mask (eager or sdpa attention), but got "
                f"one of shape {tuple(attention_mask.shape)}."
            )
        mask = attention_mask[..., :s]
        if mask.dtype == torch.bool:
            fill = torch.ones(
                (*mask.shape[:-1], prefix.length), dtype=torch.bool, device=mask.device
            )
        else:
            fill = torch.zeros(
                (*mask.shape[:-1], prefix.length), dtype=mask.dtype, device=mask.device
            )
        attention_mask = torch.cat([fill, mask], dim=-1)
    return attention(module, query, key, value, attention_mask, **kwargs)


def _base_attention(module: nn.Module, name: str | None) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name in (None, "eager"):
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            raise RuntimeError(
                f"{type(module).__name__} has no eager_attention_forward in its module; use "
                "sdpa attention with prefix tuning."
            )
        return eager
    if name not in ("sdpa",):
        raise RuntimeError(
            f"prefix tuning supports eager and sdpa attention, but the model uses {name!r}. "
            "Load it with attn_implementation='sdpa' or 'eager'."
        )
    return ALL_ATTENTION_FUNCTIONS[name]


register_prefix_attention()

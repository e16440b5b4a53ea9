"""A decoder's shape, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ARCHITECTURES", "Architecture", "Shape"]

Architecture = Literal["llama", "gpt2"]
ARCHITECTURES: tuple[str, ...] = ("llama", "gpt2")


@dataclass(frozen=True)
class Shape:
    """A decoder's shape: what the config is built from.

    Attributes:
        architecture: ``"llama"`` (RMSNorm, rotary positions, SwiGLU) or ``"gpt2"``.
        width: ``hidden_size``; a multiple of ``head_dim``.
        depth: Decoder blocks.
        head_dim: Attention head dimension (fixed across widths).
        mlp_ratio: The MLP's inner size over the width.
        vocab_size: Tokens in the vocabulary.
        sequence_length: Positions.
    """

    architecture: Architecture
    width: int
    depth: int
    head_dim: int
    mlp_ratio: int
    vocab_size: int
    sequence_length: int

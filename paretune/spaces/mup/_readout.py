"""The readout with its output multiplier, as a layer class ``torch.save`` and
``torch.compile`` know."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MuReadout"]


class MuReadout(nn.Linear):
    """An ``nn.Linear`` readout whose logits are multiplied by :attr:`output_multiplier`.

    :func:`~paretune.spaces.mup.parametrize` turns a model's output embedding into one in place
    (its class changes; its weight, its name in the ``state_dict`` and any sharing stay), so
    the multiplier survives ``copy.deepcopy``, pickling and ``torch.compile``: it is a plain
    attribute of an importable class, read in :meth:`forward`.

    Attributes:
        output_multiplier: ``output_multiplier / width_mult`` under muP, ``output_multiplier``
            under standard parametrization.
    """

    output_multiplier: float = 1.0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * self.output_multiplier

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, output_multiplier={self.output_multiplier:g}"

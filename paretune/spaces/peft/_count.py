"""The number of trainable parameters of a PEFT candidate, from its params alone."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paretune._errors import ConfigError, describe
from paretune.spaces.peft._layout import ModelLayout
from paretune.spaces.peft._plan import PeftPlan, decode_params
from paretune.spaces.peft._space import lora_target_names

__all__ = ["TrainableCount", "count_trainable"]


@dataclass(frozen=True)
class TrainableCount:
    """Trainable parameters of a materialised candidate, by module.

    Attributes:
        serial: Serial adapters: ``2 h m + m + h`` per layer (down- and up-projection with
            biases, ``h`` hidden size, ``m`` bottleneck).
        parallel: Parallel adapters, the same formula.
        prefix: Prefixes: ``2 p n_kv d`` per layer (keys and values, ``p`` prefix length,
            ``n_kv`` key/value heads of width ``d``).
        lora: LoRA: ``r (in + out)`` per adapted projection (``A`` and ``B``, no bias).
        head: The task head (as passed to :func:`count_trainable`).
        backbone: All parameters of the base model, trainable or not.
        full: The base model's parameters that train under full fine-tuning
            (``method == "full"``): :attr:`backbone` then, else 0.
    """

    serial: int
    parallel: int
    prefix: int
    lora: int
    head: int
    backbone: int
    full: int = 0

    @property
    def total(self) -> int:
        """All trainable parameters: PEFT modules (or the whole base model) plus the task head."""
        return self.serial + self.parallel + self.prefix + self.lora + self.full + self.head

    @property
    def percent(self) -> float:
        """:attr:`total` as a percentage of :attr:`backbone` (AutoPEFT's cost objective).

        Full fine-tuning counts the head as well, so it is a little above 100.
        """
        return 100.0 * self.total / self.backbone if self.backbone else float("inf")


def count_trainable(
    layout: ModelLayout, params: Mapping[str, Any] | PeftPlan, *, head_params: int = 0
) -> TrainableCount:
    """Count the parameters :func:`~paretune.spaces.peft.materialize` makes trainable.

    The count comes from the layout and the params alone, without building anything, and
    equals ``sum(p.numel() for p in model.parameters() if p.requires_grad)`` of the
    materialised model when ``head_params`` is the size of its task head. An invalid candidate
    (no module in any layer) counts only its head. Full fine-tuning (``method == "full"``)
    counts the whole base model plus the head: every parameter of a model that consists of
    its base model and its task head.

    Args:
        layout: The model's layout.
        params: A params dict of :func:`~paretune.spaces.peft.peft_space`, or its plan.
        head_params: Parameters of the task head that trains with the modules (e.g.
            ``hidden_size * num_labels + num_labels`` for BERT's classifier).

    Raises:
        ConfigError: ``head_params`` is not an integer >= 0, or the params do not decode
            (see :func:`~paretune.spaces.peft.decode_params`).
    """
    if isinstance(head_params, bool) or not isinstance(head_params, numbers.Integral):
        raise ConfigError(
            f"`head_params` must be an integer >= 0, but got {describe(head_params)}.",
            path=("head_params",),
        )
    if head_params < 0:
        raise ConfigError(
            f"`head_params >= 0` must hold, but got head_params={head_params}.",
            path=("head_params",),
        )
    plan = params if isinstance(params, PeftPlan) else decode_params(params, layout)
    if plan.full:
        backbone = layout.backbone_params
        return TrainableCount(0, 0, 0, 0, head=int(head_params), backbone=backbone, full=backbone)
    h = layout.hidden_size

    def adapter(size: int, layers: tuple[int, ...]) -> int:
        return len(layers) * (2 * h * size + size + h)

    lora = 0
    if plan.lora_targets is not None:
        projections = [layout.projection(n) for n in lora_target_names(layout, plan.lora_targets)]
        width = sum(p.in_features + p.out_features for p in projections)
        lora = width * sum(plan.lora_ranks)
    return TrainableCount(
        serial=adapter(plan.serial_size, plan.serial_layers),
        parallel=adapter(plan.parallel_size, plan.parallel_layers),
        prefix=len(plan.prefix_layers)
        * 2
        * plan.prefix_length
        * layout.n_kv_heads
        * layout.head_dim,
        lora=lora,
        head=int(head_params),
        backbone=layout.backbone_params,
    )

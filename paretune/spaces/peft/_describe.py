"""A PEFT candidate's short name: which modules, how big, in which layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paretune.spaces._describe import compact_params
from paretune.spaces.peft._plan import (
    _LAYER_RANK,
    _MODULE_SWITCH,
    _SHARED_SWITCH,
    PeftPlan,
    decode_params,
)
from paretune.spaces.peft._space import LORA_SWITCH, METHOD_PARAM, SIZE_PARAMS

__all__ = ["PeftDescriber", "describe_plan", "layer_ranges"]

# Keys of the PEFT space besides the layer switches and per-layer ranks.
_PEFT_KEYS = frozenset(
    {METHOD_PARAM, LORA_SWITCH, "lora_alpha", "lora_alpha_ratio", "lora_targets"}
    | set(SIZE_PARAMS.values())
)


def layer_ranges(layers: Sequence[int]) -> str:
    """Layer indices as ranges: ``(0, 2, 3, 4, 7)`` reads ``0,2-4,7``."""
    runs: list[list[int]] = []
    for i in sorted(set(layers)):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def describe_plan(plan: PeftPlan) -> str:
    """``lora r4 qv sa48 L3-5``: LoRA (rank, or its range across layers, and target group),
    serial adapter ``sa``, parallel adapter ``pa`` and prefix ``px`` with their sizes, each
    group of modules followed by the layers it goes into; ``full`` for full fine-tuning and
    ``none`` for a candidate with no module in any layer."""
    if plan.full:
        return "full"
    modules: list[tuple[str, tuple[int, ...]]] = []
    if plan.lora_layers:
        low, high = min(plan.lora_ranks), max(plan.lora_ranks)
        rank = f"r{low}" if low == high else f"r{low}-{high}"
        modules.append((f"lora {rank} {plan.lora_targets}", plan.lora_layers))
    for short, size, layers in (
        ("sa", plan.serial_size, plan.serial_layers),
        ("pa", plan.parallel_size, plan.parallel_layers),
        ("px", plan.prefix_length, plan.prefix_layers),
    ):
        if layers:
            modules.append((f"{short}{size}", layers))
    if not modules:
        return "none"
    parts: list[str] = []
    for i, (text, layers) in enumerate(modules):
        parts.append(text)
        last_of_group = i + 1 == len(modules) or modules[i + 1][1] != layers
        if last_of_group:
            parts.append(f"L{layer_ranges(layers)}")
    return " ".join(parts)


class PeftDescriber:
    """The describer of a PEFT space (:meth:`~paretune.spaces.SearchSpace.describe`): the plan
    of a candidate by :func:`describe_plan`, then ``k=v`` of the parameters that are not PEFT
    ones (a learning rate joined to the space). Picklable, unlike a closure.

    Example:
        >>> PeftDescriber(6)({"lora_rank": 4, "lora_alpha_ratio": 2.0, "lora_targets": "qv",
        ...     "serial_size": 48, **{f"layer_{i}": 3 <= i <= 5 for i in range(6)}})
        'lora r4 qv sa48 L3-5'
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers

    def __call__(self, params: Mapping[str, Any]) -> str:
        plan = describe_plan(decode_params(params, self.n_layers))
        extra = compact_params(params, skip=[k for k in params if _is_peft_key(k)])
        return f"{plan} {extra}".strip()

    def __repr__(self) -> str:
        return f"PeftDescriber(n_layers={self.n_layers})"


def _is_peft_key(name: str) -> bool:
    return name in _PEFT_KEYS or any(
        p.fullmatch(name) for p in (_SHARED_SWITCH, _MODULE_SWITCH, _LAYER_RANK)
    )

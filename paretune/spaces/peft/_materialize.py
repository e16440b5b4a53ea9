"""Turn a PEFT candidate into a model ready to train."""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe
from paretune.spaces.peft._layout import ModelLayout, describe_model
from paretune.spaces.peft._plan import InvalidPeftConfig, PeftPlan, decode_params
from paretune.spaces.peft._space import lora_target_names

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_HEAD_NAMES",
    "MODULE_KINDS",
    "materialize",
    "module_kind",
    "trainable_parameters",
]

DEFAULT_HEAD_NAMES = ("pre_classifier", "classifier", "score", "qa_outputs")
"""Names of the top-level task heads that train by default (new, randomly initialised layers
of transformers' sequence/token classification and question answering models)."""
# Set on a materialised model; a second materialisation would stack modules and hooks.
_MARK = "paretune_peft_plan"
_ADAPTERS = "paretune_ffn_adapters"
_PREFIX = "paretune_prefix"


def materialize(
    model: torch.nn.Module,
    params: Mapping[str, Any] | PeftPlan,
    layout: ModelLayout | None = None,
    *,
    task_head_names: Sequence[str] | None = None,
    lora_dropout: float = 0.0,
) -> torch.nn.Module:
    """Add a candidate's PEFT modules to ``model`` and freeze everything else but the head.

    ``model`` is changed in place and returned:

    - LoRA through ``peft`` (``inject_adapter_in_model``, so the model keeps its class and
      forward): a ``LoraConfig`` whose ``target_modules`` are the full paths of the targeted
      projections in the selected layers (a suffix such as BERT's ``output.dense`` would also
      match ``attention.output.dense``), with ``layers_to_transform``, and ``rank_pattern`` /
      ``alpha_pattern`` keyed by full path when ranks differ between layers. ``B`` starts at 0.
    - Serial and parallel bottleneck adapters on the FFN of the selected layers: a module
      ``paretune_ffn_adapters`` in each layer, applied by forward hooks on the FFN's
      projections (so backbone names and state-dict keys do not change); up-projections
      start at 0.
    - Per-layer prefixes in the selected layers' self-attention: a module ``paretune_prefix``
      in the attention module, prepended to keys and values by a registered transformers
      attention function that only those modules call (eager or sdpa attention; the design
      is explained in ``paretune/spaces/peft/_modules.py``).
    - ``requires_grad`` is true for exactly the PEFT modules' parameters and the task head's;
      :func:`trainable_parameters` lists them. Their number is
      :func:`~paretune.spaces.peft.count_trainable` with the head's size.
    - Full fine-tuning (``method == "full"``, see ``peft_space(..., full_finetune=True)``)
      adds nothing and makes every parameter of the model trainable.

    Without prefixes the materialised model computes what the backbone computes until it
    trains. New modules take the device and dtype of their layer; random initialisations use
    torch's global generator (seed it for reproducible runs).

    Args:
        model: A transformers model of a supported family, not materialised before.
        params: A params dict of :func:`~paretune.spaces.peft.peft_space` (other keys are
            ignored), or its plan.
        layout: The model's layout; ``None`` describes ``model``.
        task_head_names: Paths of the modules that train besides the PEFT modules; ``None``
            takes the model's top-level modules named in :data:`DEFAULT_HEAD_NAMES`, ``()``
            trains no head. A head that shares weights with the backbone (a tied LM head)
            unfreezes them too.
        lora_dropout: Dropout on LoRA's input.

    Returns:
        ``model``.

    Raises:
        InvalidPeftConfig: The candidate puts no module into any layer; the model is left
            untouched.
        ConfigError: The params do not decode, the layout does not fit the model, a head name
            is unknown, the model was materialised before, or prefixes meet an attention
            implementation other than eager and sdpa.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"`model` must be a torch module, but got {describe(model)}.", path=("model",)
        )
    if getattr(model, _MARK, None) is not None:
        raise ConfigError(
            "this model was materialised before; adding a second candidate would stack "
            "modules and hooks. Materialise a fresh copy of the backbone.",
            path=("model",),
        )
    if (
        isinstance(lora_dropout, bool)
        or not isinstance(lora_dropout, numbers.Real)
        or not (0.0 <= float(lora_dropout) < 1.0)
    ):
        raise ConfigError(
            f"`0 <= lora_dropout < 1` must hold, but got {describe(lora_dropout)}.",
            path=("lora_dropout",),
        )
    actual = describe_model(model)
    layout = actual if layout is None else _check_layout(layout, actual)
    plan = params if isinstance(params, PeftPlan) else decode_params(params, layout)
    if not plan.is_valid:
        raise InvalidPeftConfig(
            "a PEFT candidate must put at least one module (nonzero size) into at least one "
            f"selected layer, but this one has {plan.describe()}"
            f"{_sizes_note(params)}. Sample another candidate, or repair(params, space).",
        )
    base = getattr(model, "base_model", model)
    base_path = next(name for name, module in model.named_modules() if module is base)
    layers = _layers(base, layout)
    heads = _heads(model, base, task_head_names)
    if plan.full:
        for p in model.parameters():
            p.requires_grad_(True)
        setattr(model, _MARK, plan)
        return model
    if plan.prefix_layers:
        implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if implementation not in ("eager", "sdpa"):
            raise ConfigError(
                "prefix tuning needs eager or sdpa attention, but the model uses "
                f"{implementation!r}. Load it with attn_implementation='sdpa' or 'eager'.",
                path=("prefix_length",),
            )

    trainable: list[torch.nn.Parameter] = []
    if plan.lora_layers:
        layers_path = ".".join(p for p in (base_path, layout.layers_path) if p)
        trainable += _inject_lora(model, layout, plan, layers_path, float(lora_dropout))
    trainable += _add_ffn_adapters(layers, layout, plan)
    trainable += _add_prefixes(model, layers, layout, plan)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    for head in heads:
        for p in head.parameters():
            p.requires_grad_(True)
    setattr(model, _MARK, plan)
    return model


def trainable_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Names and sizes of the parameters of ``model`` that have ``requires_grad``."""
    return {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}


MODULE_KINDS = ("lora", "serial", "parallel", "prefix", "head")
"""What :func:`module_kind` calls the trainable parameters of a materialised model."""


def module_kind(name: str) -> str:
    """The kind of PEFT module a parameter of a materialised model belongs to, by its name:
    ``"lora"`` (peft's LoRA matrices), ``"serial"`` / ``"parallel"`` (bottleneck adapters),
    ``"prefix"``, or ``"head"`` for everything else (the task head; the backbone under full
    fine-tuning)."""
    parts = name.split(".")
    if _PREFIX in parts:
        return "prefix"
    if _ADAPTERS in parts:
        after = parts[parts.index(_ADAPTERS) + 1 :]
        if after and after[0] in ("serial", "parallel"):
            return after[0]
    if any(part.startswith("lora_") for part in parts):
        return "lora"
    return "head"


def _sizes_note(params: Mapping[str, Any] | PeftPlan) -> str:
    if isinstance(params, PeftPlan):
        return ""
    keys = ("serial_size", "parallel_size", "prefix_length", "lora_rank", "lora")
    shown = {k: params[k] for k in keys if k in params}
    return f" (sizes {shown})" if shown else ""


def _check_layout(layout: ModelLayout, actual: ModelLayout) -> ModelLayout:
    """``layout`` if it describes the model that ``actual`` was read from.

    The backbone size may differ (a layout from a config counts ``AutoModel``'s base model,
    which may have a pooler that the model's base lacks); the given layout's count is kept.
    """
    if not isinstance(layout, ModelLayout):
        raise ConfigError(
            f"`layout` must be a ModelLayout or None, but got {describe(layout)}.",
            path=("layout",),
        )
    differ = [
        field.name
        for field in dataclasses.fields(ModelLayout)
        if field.name != "backbone_params"
        and getattr(layout, field.name) != getattr(actual, field.name)
    ]
    if differ:
        shown = ", ".join(
            f"{name}={getattr(layout, name)!r} vs {getattr(actual, name)!r}"
            for name in differ
            if name != "projections"
        )
        raise ConfigError(
            f"the layout must describe this model, but they differ in {differ} ({shown}). "
            "Pass layout=None or describe_model(model).",
            path=("layout",),
        )
    return layout


def _layers(base: torch.nn.Module, layout: ModelLayout) -> list[torch.nn.Module]:
    # describe_model found a ModuleList there.
    return list(base.get_submodule(layout.layers_path).children())


def _heads(
    model: torch.nn.Module, base: torch.nn.Module, names: Sequence[str] | None
) -> list[torch.nn.Module]:
    if names is None:
        if model is base:
            return []
        return [m for n, m in model.named_children() if n in DEFAULT_HEAD_NAMES]
    if isinstance(names, str):
        raise ConfigError(
            f"`task_head_names` must be a list of module paths, but got {names!r}; write "
            f"[{names!r}].",
            path=("task_head_names",),
        )
    heads = []
    for name in names:
        try:
            heads.append(model.get_submodule(name))
        except AttributeError:
            children = [n for n, _ in model.named_children()]
            raise ConfigError(
                f"each task head must be a module of the model, but {name!r} is not; its "
                f"top-level modules are {children}.",
                path=("task_head_names",),
            ) from None
    return heads


def _inject_lora(
    model: torch.nn.Module,
    layout: ModelLayout,
    plan: PeftPlan,
    layers_path: str,
    dropout: float,
) -> list[torch.nn.Parameter]:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    names = lora_target_names(layout, plan.lora_targets or "")
    paths: dict[str, tuple[int, float]] = {}
    for layer, rank, alpha in zip(plan.lora_layers, plan.lora_ranks, plan.lora_alphas, strict=True):
        for name in names:
            paths[f"{layers_path}.{layer}.{name}"] = (rank, alpha)
    rank, alpha = plan.lora_ranks[0], plan.lora_alphas[0]
    uniform_rank = all(r == rank for r in plan.lora_ranks)
    uniform_alpha = all(a == alpha for a in plan.lora_alphas)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; a float works
        lora_dropout=dropout,
        target_modules=list(paths),
        layers_to_transform=list(plan.lora_layers),
        layers_pattern=layout.layers_pattern,
        rank_pattern={} if uniform_rank else {re.escape(p): r for p, (r, _) in paths.items()},
        alpha_pattern={} if uniform_alpha else {re.escape(p): a for p, (_, a) in paths.items()},
        fan_in_fan_out=layout.conv1d,
        bias="none",
    )
    inject_adapter_in_model(config, model)
    trainable: list[torch.nn.Parameter] = []
    adapted = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            adapted += 1
            trainable += [*module.lora_A.parameters(), *module.lora_B.parameters()]
    if adapted != len(paths):  # pragma: no cover - a peft change in how targets match
        raise RuntimeError(
            f"peft adapted {adapted} modules, expected the {len(paths)} in {list(paths)}."
        )
    return trainable


def _add_ffn_adapters(
    layers: list[torch.nn.Module], layout: ModelLayout, plan: PeftPlan
) -> list[torch.nn.Parameter]:
    from paretune.spaces.peft._modules import FfnAdapters

    serial, parallel = set(plan.serial_layers), set(plan.parallel_layers)
    (ffn_in, *_), (ffn_out,) = layout.names("ffn_in"), layout.names("ffn_out")
    trainable: list[torch.nn.Parameter] = []
    for i in sorted(serial | parallel):
        layer = layers[i]
        adapters = FfnAdapters(
            layout.hidden_size,
            serial=plan.serial_size if i in serial else 0,
            parallel=plan.parallel_size if i in parallel else 0,
        )
        ref = next(layer.parameters())
        adapters.to(device=ref.device, dtype=ref.dtype)
        layer.add_module(_ADAPTERS, adapters)
        adapters.attach(layer.get_submodule(ffn_in), layer.get_submodule(ffn_out))
        trainable += adapters.parameters()
    return trainable


def _add_prefixes(
    model: torch.nn.Module, layers: list[torch.nn.Module], layout: ModelLayout, plan: PeftPlan
) -> list[torch.nn.Parameter]:
    from paretune.spaces.peft._modules import (
        PrefixAttentionConfig,
        PrefixKV,
        register_prefix_attention,
    )

    if not plan.prefix_layers:
        return []
    register_prefix_attention()
    std = getattr(getattr(model, "config", None), "initializer_range", None)
    std = float(std) if isinstance(std, (int, float)) else 0.02
    trainable: list[torch.nn.Parameter] = []
    for i in plan.prefix_layers:
        attention = layers[i].get_submodule(layout.attention)
        prefix = PrefixKV(layout.n_kv_heads, plan.prefix_length, layout.head_dim, std=std)
        ref = next(attention.parameters())
        prefix.to(device=ref.device, dtype=ref.dtype)
        attention.add_module(_PREFIX, prefix)
        # Only this module sees the prefix attention function; see PrefixAttentionConfig.
        setattr(attention, "config", PrefixAttentionConfig(attention.config))  # noqa: B010
        trainable += prefix.parameters()
    return trainable

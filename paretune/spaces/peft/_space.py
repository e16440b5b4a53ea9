"""The AutoPEFT search space, extended with LoRA, built for one model's layout."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, cast

from paretune._errors import ConfigError, describe
from paretune.spaces._params import Categorical, Condition, Fixed, Parameter
from paretune.spaces._space import SearchSpace
from paretune.spaces.peft._layout import ModelLayout

__all__ = [
    "AUTOPEFT_SIZES",
    "LAYER_SELECTIONS",
    "LORA_RANKS",
    "LORA_TARGETS",
    "METHODS",
    "METHOD_PARAM",
    "MODULES",
    "lora_target_names",
    "peft_space",
    "scale_sizes",
]

AUTOPEFT_SIZES = (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)
"""AutoPEFT's adapter sizes and prefix lengths for hidden size 768; 0 means the module is absent."""
LORA_RANKS = (0, 1, 2, 4, 8, 16, 32, 64)
"""Default LoRA ranks; 0 means no LoRA."""
LORA_TARGETS = ("qv", "qkvo", "qkvo+ffn")
"""Default LoRA target groups (see :func:`lora_target_names`)."""
MODULES = ("serial", "parallel", "prefix", "lora")
"""The PEFT modules a space can search."""
LAYER_SELECTIONS = ("shared", "per_module", "none")
"""How a space selects layers (see :func:`peft_space`)."""
METHOD_PARAM = "method"
"""The parameter that chooses PEFT or full fine-tuning (``peft_space(..., full_finetune=True)``)."""
METHODS = ("peft", "full")
"""Its values: the PEFT modules the other parameters describe, or full fine-tuning."""

REFERENCE_HIDDEN = 768
DEFAULT_ALPHA_RATIO = 2.0
# The parameter that switches each module on (its size; for per-layer LoRA ranks, a flag).
SIZE_PARAMS = {
    "serial": "serial_size",
    "parallel": "parallel_size",
    "prefix": "prefix_length",
    "lora": "lora_rank",
}
LORA_SWITCH = "lora"


def scale_sizes(
    sizes: Sequence[int], hidden_size: int, *, reference: int = REFERENCE_HIDDEN
) -> tuple[int, ...]:
    """AutoPEFT's sizes rescaled from a ``reference``-wide model to ``hidden_size``.

    Each nonzero size becomes ``round(size * hidden_size / reference)`` (halves round up), at
    least 1 so that a present module stays present; 0 (absent) stays 0. The result is sorted
    and has no duplicates.

    Example:
        >>> scale_sizes(AUTOPEFT_SIZES, 384)
        (0, 1, 2, 3, 6, 12, 24, 48, 96, 192, 384)
    """
    sizes = _sizes(sizes, "sizes")
    for value, name in ((hidden_size, "hidden_size"), (reference, "reference")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(
                f"`{name}` must be a positive integer, but got {describe(value)}.", path=(name,)
            )
    out = {0 if s == 0 else max(1, math.floor(s * hidden_size / reference + 0.5)) for s in sizes}
    return tuple(sorted(out))


def lora_target_names(layout: ModelLayout, group: str) -> tuple[str, ...]:
    """The layer-relative projection paths a LoRA target group names, for ``layout``.

    A group joins parts with ``+``: ``"ffn"`` (every FFN input and output projection) or a
    string of the letters ``q``, ``k``, ``v``, ``o`` (attention query, key, value, output);
    e.g. ``"qv"``, ``"qkvo"``, ``"qkvo+ffn"``, ``"o+ffn"``. On models with a fused
    query-key-value projection (GPT-2's ``c_attn``) any of ``q``, ``k``, ``v`` adapts the fused
    projection, so ``"qv"`` and ``"qkv"`` are the same there.

    Raises:
        ConfigError: ``group`` is not of that form; the path is ``("lora_targets",)``.
    """
    roles: set[str] = set()
    parts = group.split("+") if isinstance(group, str) else []
    for part in parts:
        if part == "ffn":
            roles.update(("ffn_in", "ffn_out"))
        elif part and set(part) <= set("qkvo") and len(set(part)) == len(part):
            roles.update(part)
        else:
            roles.clear()
            break
    if not roles:
        raise ConfigError(
            "a LoRA target group must join parts with '+', each 'ffn' or distinct letters of "
            f"'qkvo' (e.g. 'qv', 'qkvo', 'qkvo+ffn'), but got {describe(group)}.",
            path=("lora_targets",),
        )
    if layout.fused_qkv and roles & {"q", "k", "v"}:
        roles.add("qkv")
    return layout.names(*roles)


def peft_space(
    layout: ModelLayout,
    *,
    modules: Sequence[str] = MODULES,
    sizes: Sequence[int] = AUTOPEFT_SIZES,
    prefix_lengths: Sequence[int] | None = None,
    scale_to_hidden: bool = True,
    layer_selection: str = "shared",
    lora_ranks: Sequence[int] = LORA_RANKS,
    lora_alpha: float | Sequence[float] | None = None,
    lora_alpha_ratio: float | Sequence[float] | None = None,
    lora_targets: Sequence[str] = LORA_TARGETS,
    per_layer_lora_ranks: bool = False,
    full_finetune: bool = False,
) -> SearchSpace:
    """The AutoPEFT search space (plus LoRA) for a model with ``layout``.

    Parameters, in declaration order (``L = layout.n_layers``; each a categorical unless it
    has one value, then it is :class:`~paretune.spaces.Fixed`):

    - ``serial_size``: bottleneck of a serial adapter after the FFN (Pfeiffer placement);
    - ``parallel_size``: bottleneck of a parallel adapter beside the FFN (scaling 4.0);
    - ``prefix_length``: number of learned key/value prefix vectors in self-attention;
    - ``lora_rank`` (0 = no LoRA), or with ``per_layer_lora_ranks`` a flag ``lora`` and one
      ``lora_rank_{i}`` per layer (0 = no LoRA in layer ``i``), active when ``lora`` is true;
    - ``lora_alpha``, or ``lora_alpha_ratio`` (``alpha = ratio * rank``; the default, fixed
      at 2.0), and ``lora_targets`` (a target group, see :func:`lora_target_names`), active
      only when LoRA is on;
    - layer switches, categorical ``(False, True)``: with ``layer_selection="shared"`` one
      ``layer_{i}`` per layer shared by all modules (AutoPEFT's choice); with
      ``"per_module"`` one ``{module}_layer_{i}`` per module and layer, active only when the
      module is on (per-layer LoRA ranks select LoRA's layers themselves); with ``"none"``
      every module goes into every layer.

    With ``full_finetune`` the space starts with a categorical ``method`` in ``("peft",
    "full")`` and every parameter above is active only when ``method == "peft"`` (directly,
    or through the module switch it already depends on). ``method == "full"`` is full
    fine-tuning: every parameter of the model trains (:func:`~paretune.spaces.peft.is_valid`
    holds, :func:`~paretune.spaces.peft.count_trainable` counts the whole model,
    :func:`~paretune.spaces.peft.materialize` unfreezes everything); it is the reference row
    a PEFT search is compared with (enqueue ``{"method": "full"}``).

    Sizes 0 mean the module is absent; for hidden size 768 AutoPEFT's list is
    :data:`AUTOPEFT_SIZES`, and with ``scale_to_hidden`` the lists are rescaled to
    ``layout.hidden_size`` by :func:`scale_sizes`.

    Validity: a candidate is valid iff at least one module is active in at least one layer
    (:func:`~paretune.spaces.peft.is_valid`). Conditions cannot express that, so the space
    also holds invalid candidates (all switches off, or every size 0); they are rare in the
    shared layout (``2^-L`` of the masks) and :func:`~paretune.spaces.peft.materialize` refuses
    them with :class:`~paretune.spaces.peft.InvalidPeftConfig` before anything trains.
    :func:`~paretune.spaces.peft.repair` maps one to a nearby valid candidate.

    Args:
        layout: The model's layout (:func:`~paretune.spaces.peft.describe_model`).
        modules: Which of ``"serial"``, ``"parallel"``, ``"prefix"``, ``"lora"`` to search;
            their order is the declaration order.
        sizes: Adapter bottleneck sizes (for a 768-wide model when ``scale_to_hidden``).
        prefix_lengths: Prefix lengths in tokens, used as given; ``None`` uses the (rescaled)
            adapter sizes, as AutoPEFT did.
        scale_to_hidden: Rescale ``sizes`` from 768 to the model's hidden size.
        layer_selection: ``"shared"``, ``"per_module"`` or ``"none"``.
        lora_ranks: LoRA ranks, not rescaled; 0 means no LoRA.
        lora_alpha: LoRA alpha values (one value is fixed, several are searched); at most
            one of ``lora_alpha`` and ``lora_alpha_ratio`` may be set.
        lora_alpha_ratio: Values of ``alpha / rank``; when neither is set, the ratio is 2.0.
        lora_targets: LoRA target groups to choose from.
        per_layer_lora_ranks: Search one LoRA rank per layer instead of one for all layers
            (materialised with ``peft``'s ``rank_pattern``).
        full_finetune: Add the ``method`` parameter that chooses between this PEFT space and
            full fine-tuning.

    Returns:
        The space; its params decode with :func:`~paretune.spaces.peft.decode_params` and
        read as ``lora r4 qv sa48 L3-5`` (:meth:`~paretune.spaces.SearchSpace.describe`,
        :func:`~paretune.spaces.peft.describe_plan`).

    Raises:
        ConfigError: An invalid argument; the path is the argument's name.
    """
    if not isinstance(layout, ModelLayout):
        raise ConfigError(
            f"`layout` must be a ModelLayout (from describe_model), but got {describe(layout)}.",
            path=("layout",),
        )
    chosen = _modules(modules)
    if layer_selection not in LAYER_SELECTIONS:
        raise ConfigError(
            f"`layer_selection` must be one of {list(LAYER_SELECTIONS)}, but got "
            f"{describe(layer_selection)}.",
            path=("layer_selection",),
        )
    for flag, value in (
        ("scale_to_hidden", scale_to_hidden),
        ("per_layer_lora_ranks", per_layer_lora_ranks),
        ("full_finetune", full_finetune),
    ):
        if not isinstance(value, bool):
            raise ConfigError(
                f"`{flag}` must be true or false, but got {describe(value)}.", path=(flag,)
            )
    adapter_sizes = _sizes(sizes, "sizes")
    if scale_to_hidden:
        adapter_sizes = scale_sizes(adapter_sizes, layout.hidden_size)
    # A prefix length counts tokens, not hidden units: explicit lengths are used as given.
    lengths = adapter_sizes if prefix_lengths is None else _sizes(prefix_lengths, "prefix_lengths")
    ranks = _sizes(lora_ranks, "lora_ranks")
    alpha_name, alphas = _alphas(lora_alpha, lora_alpha_ratio)
    targets = _targets(lora_targets, layout)
    if per_layer_lora_ranks and not any(ranks):
        raise ConfigError(
            f"`lora_ranks` must hold a nonzero rank for per-layer ranks, but got {list(ranks)}.",
            path=("lora_ranks",),
        )

    n = layout.n_layers
    params: list[Parameter] = []
    on: dict[str, Condition | None] = {}  # module -> the condition "module is switched on"
    for module in chosen:
        if module == "lora" and per_layer_lora_ranks:
            params.append(Categorical(LORA_SWITCH, choices=(False, True)))
            on[module] = Condition(LORA_SWITCH, (True,))
        else:
            choices = (
                lengths if module == "prefix" else ranks if module == "lora" else adapter_sizes
            )
            params.append(_choice(SIZE_PARAMS[module], choices, None))
            nonzero = tuple(c for c in choices if c)
            if nonzero:
                on[module] = Condition(SIZE_PARAMS[module], nonzero) if 0 in choices else None
        if module == "lora" and module in on:
            params.append(_choice(alpha_name, alphas, on[module]))
            params.append(_choice("lora_targets", targets, on[module], ordered=False))
            if per_layer_lora_ranks:
                params.extend(_choice(f"lora_rank_{i}", ranks, on[module]) for i in range(n))
    if layer_selection == "shared":
        params.extend(Categorical(f"layer_{i}", choices=(False, True)) for i in range(n))
    elif layer_selection == "per_module":
        for module, condition in on.items():
            if module == "lora" and per_layer_lora_ranks:
                continue  # a rank of 0 drops LoRA from a layer
            params.extend(
                Categorical(f"{module}_layer_{i}", choices=(False, True), condition=condition)
                for i in range(n)
            )
    if full_finetune:
        # Parameters with a condition hang off a module switch, which now depends on the method.
        peft_only = Condition(METHOD_PARAM, ("peft",))
        params = [
            Categorical(METHOD_PARAM, choices=METHODS),
            *(p if p.condition is not None else _conditioned(p, peft_only) for p in params),
        ]
    from paretune.spaces.peft._describe import PeftDescriber  # it reads plans: after _plan

    return SearchSpace(params, rule=PeftRule(n), describer=PeftDescriber(n))


class PeftRule:
    """The rule of a PEFT space: :func:`~paretune.spaces.peft.is_valid` for ``n_layers``
    (picklable, unlike a closure)."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers

    def __call__(self, params: Mapping[str, Any]) -> bool:
        from paretune.spaces.peft._plan import is_valid

        return is_valid(params, self.n_layers)

    def __repr__(self) -> str:
        return f"PeftRule(n_layers={self.n_layers})"


def _conditioned(param: Parameter, condition: Condition) -> Parameter:
    """``param`` (a frozen dataclass, like every parameter) with ``condition``."""
    out: Parameter = dataclasses.replace(cast(Any, param), condition=condition)
    return out


def _choice(
    name: str, choices: Sequence[Any], condition: Condition | None, *, ordered: bool = True
) -> Parameter:
    """One value fixed, or a categorical: ordered (sizes, ranks, alphas) unless told otherwise,
    so that model-based controllers see that neighbouring sizes behave alike."""
    if len(choices) == 1:
        return Fixed(name, value=choices[0], condition=condition)
    return Categorical(name, choices=tuple(choices), condition=condition, ordered=ordered)


def _modules(modules: Any) -> tuple[str, ...]:
    if isinstance(modules, str) or not isinstance(modules, Sequence):
        raise ConfigError(
            f"`modules` must be a list of module names from {list(MODULES)}, but got "
            f"{describe(modules)}.",
            path=("modules",),
        )
    out = tuple(modules)
    unknown = [m for m in out if m not in MODULES]
    if unknown or not out or len(set(out)) != len(out):
        raise ConfigError(
            f"`modules` must list distinct names from {list(MODULES)}, at least one, but got "
            f"{list(out)!r}.",
            path=("modules",),
        )
    return out


def _sizes(sizes: Any, name: str) -> tuple[int, ...]:
    if isinstance(sizes, str) or not isinstance(sizes, Sequence) or not sizes:
        raise ConfigError(
            f"`{name}` must be a non-empty list of integers >= 0, but got {describe(sizes)}.",
            path=(name,),
        )
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ConfigError(
                f"`{name}` must hold integers >= 0, but got {describe(s)} in {list(sizes)!r}.",
                path=(name,),
            )
    return tuple(sorted({int(s) for s in sizes}))


def _alphas(
    alpha: float | Sequence[float] | None, ratio: float | Sequence[float] | None
) -> tuple[str, tuple[float, ...]]:
    if alpha is not None and ratio is not None:
        raise ConfigError(
            "at most one of `lora_alpha` and `lora_alpha_ratio` may be set, but got "
            f"lora_alpha={alpha!r}, lora_alpha_ratio={ratio!r}. Drop one of them.",
            path=("lora_alpha",),
        )
    if alpha is None and ratio is None:
        ratio = DEFAULT_ALPHA_RATIO
    name, values = ("lora_alpha", alpha) if alpha is not None else ("lora_alpha_ratio", ratio)
    seq = values if isinstance(values, Sequence) and not isinstance(values, str) else (values,)
    out: list[float] = []
    for v in seq:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < float(v) < math.inf:
            raise ConfigError(
                f"`{name}` must be positive finite numbers, but got {describe(v)}.", path=(name,)
            )
        if float(v) not in out:
            out.append(float(v))
    if not out:
        raise ConfigError(f"`{name}` must hold at least one value, but got [].", path=(name,))
    return name, tuple(out)


def _targets(targets: Any, layout: ModelLayout) -> tuple[str, ...]:
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
        raise ConfigError(
            "`lora_targets` must be a non-empty list of target groups such as "
            f"{list(LORA_TARGETS)}, but got {describe(targets)}.",
            path=("lora_targets",),
        )
    out: list[str] = []
    for group in targets:
        lora_target_names(layout, group)  # raises on a malformed group
        if group not in out:
            out.append(group)
    return tuple(out)

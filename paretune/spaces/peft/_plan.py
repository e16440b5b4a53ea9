"""From a params dict to what goes into which layer; validity and repair of candidates."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.spaces._params import Categorical, Fixed
from paretune.spaces._space import SearchSpace
from paretune.spaces.peft._layout import ModelLayout
from paretune.spaces.peft._space import (
    LORA_SWITCH,
    METHOD_PARAM,
    METHODS,
    MODULES,
    SIZE_PARAMS,
    lora_target_names,
)

__all__ = [
    "MODULE_SWITCHES",
    "InvalidPeftConfig",
    "PeftPlan",
    "decode_params",
    "is_valid",
    "layer_count",
    "repair",
]

MODULE_SWITCHES = (*SIZE_PARAMS.values(), LORA_SWITCH)
"""The parameters of :func:`~paretune.spaces.peft.peft_space` that switch a module on: its
size (``serial_size``, ``parallel_size``, ``prefix_length``, ``lora_rank``) or, with per-layer
LoRA ranks, the flag ``lora``. A study of a PEFT space has at least one of them."""

_SHARED_SWITCH = re.compile(r"layer_(\d+)")
_MODULE_SWITCH = re.compile(r"(serial|parallel|prefix|lora)_layer_(\d+)")
_LAYER_RANK = re.compile(r"lora_rank_(\d+)")


class InvalidPeftConfig(ConfigError):
    """A PEFT candidate that puts no module into any layer, so it has nothing to train.

    (A full fine-tuning candidate, ``method == "full"``, is always valid.)

    Raised by :func:`~paretune.spaces.peft.materialize` before the model is touched. It is a
    :class:`~paretune.ConfigError` (and so a ``ValueError``); a runner records the trial as
    failed.
    """


@dataclass(frozen=True)
class PeftPlan:
    """What a params dict puts into which layer; the one reading of params that the counter
    and the materialiser share.

    A module's ``*_layers`` is empty when the module is absent (size 0, switched off, or no
    layer selected for it). A full fine-tuning plan (``full``) has no modules.

    Attributes:
        n_layers: Number of layers of the model.
        full: Full fine-tuning (``method == "full"``): every parameter of the model trains.
        serial_size: Serial adapter bottleneck (0 = absent).
        serial_layers: Layers that get a serial adapter.
        parallel_size: Parallel adapter bottleneck (0 = absent).
        parallel_layers: Layers that get a parallel adapter.
        prefix_length: Number of prefix vectors (0 = absent).
        prefix_layers: Layers whose self-attention gets a prefix.
        lora_targets: The LoRA target group, ``None`` without LoRA.
        lora_layers: Layers that get LoRA.
        lora_ranks: The rank in each of ``lora_layers``.
        lora_alphas: The alpha in each of ``lora_layers``.
    """

    n_layers: int
    serial_size: int = 0
    serial_layers: tuple[int, ...] = ()
    parallel_size: int = 0
    parallel_layers: tuple[int, ...] = ()
    prefix_length: int = 0
    prefix_layers: tuple[int, ...] = ()
    lora_targets: str | None = None
    lora_layers: tuple[int, ...] = ()
    lora_ranks: tuple[int, ...] = ()
    lora_alphas: tuple[float, ...] = ()
    full: bool = False

    @property
    def active_modules(self) -> tuple[str, ...]:
        """The modules present in at least one layer, in :data:`MODULES` order."""
        layers = {
            "serial": self.serial_layers,
            "parallel": self.parallel_layers,
            "prefix": self.prefix_layers,
            "lora": self.lora_layers,
        }
        return tuple(m for m in MODULES if layers[m])

    def layer_sizes(self, module: str) -> dict[int, int]:
        """Layer -> the size ``module`` has there (bottleneck, prefix length or LoRA rank),
        for the layers it is in, ascending; empty when it is absent.

        Raises:
            ValueError: ``module`` is not one of :data:`MODULES`.
        """
        if module == "lora":
            return dict(zip(self.lora_layers, self.lora_ranks, strict=True))
        if module not in MODULES:
            raise ValueError(f"`module` must be one of {list(MODULES)}, but got {module!r}.")
        size = getattr(self, SIZE_PARAMS[module])  # the plan's field: serial_size, ...
        return dict.fromkeys(getattr(self, f"{module}_layers"), size)

    @property
    def is_valid(self) -> bool:
        """Full fine-tuning, or at least one module in at least one layer."""
        return self.full or bool(self.active_modules)

    def describe(self) -> str:
        """A one-line summary for messages and logs."""
        if self.full:
            return "full fine-tuning (every parameter trains)"
        parts = []
        if self.serial_layers:
            parts.append(f"serial {self.serial_size} in layers {list(self.serial_layers)}")
        if self.parallel_layers:
            parts.append(f"parallel {self.parallel_size} in layers {list(self.parallel_layers)}")
        if self.prefix_layers:
            parts.append(f"prefix {self.prefix_length} in layers {list(self.prefix_layers)}")
        if self.lora_layers:
            ranks = dict(zip(self.lora_layers, self.lora_ranks, strict=True))
            parts.append(f"LoRA {self.lora_targets} with ranks {ranks}")
        return "; ".join(parts) or "no PEFT module in any layer"


def decode_params(params: Mapping[str, Any], layout: ModelLayout | int) -> PeftPlan:
    """Read the PEFT part of a params dict (from :func:`peft_space`) into a :class:`PeftPlan`.

    Keys the PEFT space does not define (a learning rate, say) are ignored, so the params of a
    space that joins the PEFT parameters with others decode as well. Missing module sizes
    count as 0. A module's layers are its own switches ``{module}_layer_{i}`` if there are
    any, else the shared switches ``layer_{i}`` if there are any, else all layers.
    ``method == "full"`` (``peft_space(..., full_finetune=True)``) decodes to a full
    fine-tuning plan, whatever the other keys say; a missing ``method`` means ``"peft"``.

    Args:
        params: A params dict.
        layout: The model's layout, or just its number of layers.

    Raises:
        ConfigError: A value of the wrong type, a layer index beyond the model, or LoRA on
            without ``lora_targets`` and an alpha; the path is the parameter's name.
    """
    n = layout.n_layers if isinstance(layout, ModelLayout) else layout
    method = params.get(METHOD_PARAM, "peft")
    if method not in METHODS:
        raise ConfigError(
            f"must be one of {list(METHODS)}, but got {describe(method)}.", path=(METHOD_PARAM,)
        )
    if method == "full":
        return PeftPlan(n_layers=n, full=True)
    shared: list[int] | None = None
    per_module: dict[str, list[int]] = {}
    layer_ranks: dict[int, int] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            continue
        if m := _SHARED_SWITCH.fullmatch(key):
            shared = shared if shared is not None else []
            if _switch(key, value, n, int(m[1])):
                shared.append(int(m[1]))
        elif m := _MODULE_SWITCH.fullmatch(key):
            selected = per_module.setdefault(m[1], [])
            if _switch(key, value, n, int(m[2])):
                selected.append(int(m[2]))
        elif m := _LAYER_RANK.fullmatch(key):
            _index(key, int(m[1]), n)
            layer_ranks[int(m[1])] = _size(key, value)

    def layers_of(module: str) -> tuple[int, ...]:
        if module in per_module:
            return tuple(sorted(per_module[module]))
        if shared is not None:
            return tuple(sorted(shared))
        return tuple(range(n))

    fields: dict[str, Any] = {}
    for module in ("serial", "parallel", "prefix"):
        name = SIZE_PARAMS[module]  # also the plan's field: serial_size, ..., prefix_length
        size = _size(name, params.get(name, 0))
        fields[name] = size
        fields[f"{module}_layers"] = layers_of(module) if size else ()

    if LORA_SWITCH in params:
        on = params[LORA_SWITCH]
        if not isinstance(on, (bool, np.bool_)):
            raise ConfigError(
                f"must be true or false, but got {describe(on)}.", path=(LORA_SWITCH,)
            )
        ranks = {i: layer_ranks.get(i, 0) for i in layers_of("lora")} if on else {}
    else:
        rank = _size("lora_rank", params.get("lora_rank", 0))
        ranks = dict.fromkeys(layers_of("lora"), rank) if rank else {}
    ranks = {i: r for i, r in ranks.items() if r}
    if ranks:
        if "lora_targets" not in params:
            raise ConfigError(
                "LoRA is on, so `lora_targets` must be set (e.g. 'qv').", path=("lora_targets",)
            )
        targets = params["lora_targets"]
        if not isinstance(targets, str):
            raise ConfigError(
                f"must be a target group such as 'qv', but got {describe(targets)}.",
                path=("lora_targets",),
            )
        if isinstance(layout, ModelLayout):
            lora_target_names(layout, targets)  # raises on a malformed group
        alphas = {i: _alpha(params, r) for i, r in ranks.items()}
        fields.update(
            lora_targets=targets,
            lora_layers=tuple(ranks),
            lora_ranks=tuple(ranks.values()),
            lora_alphas=tuple(alphas.values()),
        )
    return PeftPlan(n_layers=n, **fields)


def is_valid(params: Mapping[str, Any], layout: ModelLayout | int | None = None) -> bool:
    """Whether a candidate puts at least one module into at least one layer.

    The rule, AutoPEFT's: at least one selected layer and at least one present module (size,
    rank or prefix length above 0), and, where layers are selected per module, at least one
    module present in one of its selected layers. Full fine-tuning (``method == "full"``) is
    always valid.

    Args:
        params: A params dict of :func:`peft_space`.
        layout: The model's layout or number of layers; without it the layer count is read
            from the params (a space without layer switches uses every layer, so the count
            does not matter there).

    Raises:
        ConfigError: As :func:`decode_params`.
    """
    if layout is None:
        layout = layer_count(key for key in params if isinstance(key, str)) or 1
    return decode_params(params, layout).is_valid


def layer_count(names: Iterable[str]) -> int | None:
    """The number of layers that parameter names of :func:`~paretune.spaces.peft.peft_space`
    select among: the largest index of a layer switch (``layer_{i}``, ``{module}_layer_{i}``)
    or per-layer rank (``lora_rank_{i}``), plus one.

    ``None`` when no name selects a layer (``layer_selection="none"``: every module goes
    into every layer). Pass the names of a whole study: per-module switches exist only while
    their module is on, so one trial's names may not reach the top layer.

    Example:
        >>> layer_count(["serial_size", "layer_0", "layer_11", "learning_rate"])
        12
    """
    indices = [i for i in map(_layer_index, names) if i is not None]
    return max(indices) + 1 if indices else None


def repair(params: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A valid candidate of ``space`` close to ``params``: ``params`` itself when valid.

    Repairs are deterministic and minimal: when no module is switched on, the first module of
    the space gets its smallest nonzero size (or LoRA its switch); when the modules that are on
    have no layer, the top layer is selected for them (and gets the smallest nonzero rank under
    per-layer LoRA ranks). Parameters that become active take their first choice (switches:
    ``False``); parameters that become inactive are dropped.

    Use it for candidates that paretune did not sample from a trial, e.g. an initial design to
    enqueue; a trial's own params are what Optuna recorded, so repairing them would train
    something else than what is stored.

    Raises:
        ConfigError: ``params`` is not a params dict of ``space`` (see
            :meth:`SearchSpace.validate`), or the space can never be valid (no module has a
            nonzero size).
    """
    out = space.validate(params)
    top = _top_layer(space)
    if is_valid(out, top + 1):
        return out
    if not any(_module_on(out, m) for m in MODULES):
        switches = (*SIZE_PARAMS.values(), LORA_SWITCH)
        for name in (p.name for p in space if p.name in switches):
            nonzero = _on_values(space, name)
            if nonzero:
                out[name] = nonzero[0]
                break
        else:
            raise ConfigError(
                "the space has no module with a nonzero size, so none of its candidates is "
                "valid. Give some module a nonzero size.",
                path=("modules",),
            )
    out = _fill(out, space)
    if not is_valid(out, top + 1):
        on = [m for m in MODULES if _module_on(out, m)]
        for name in (f"layer_{top}", *(f"{m}_layer_{top}" for m in on)):
            if name in space:
                out[name] = True
        if f"lora_rank_{top}" in space and out.get(LORA_SWITCH) is True:
            rank = out.get(f"lora_rank_{top}", 0)
            out[f"lora_rank_{top}"] = rank or _on_values(space, f"lora_rank_{top}")[0]
        out = _fill(out, space)
    out = space.validate(out)
    if not is_valid(out, top + 1):  # pragma: no cover - the steps above always suffice
        raise ConfigError(f"cannot repair {describe(dict(params))} in this space.")
    return out


def _fill(values: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """``values`` with newly active parameters at their first choice, inactive ones dropped."""
    out: dict[str, Any] = {}
    for param in space:
        cond = param.condition
        if cond is not None and not (cond.parent in out and cond.matches(out[cond.parent])):
            continue
        if param.name in values:
            out[param.name] = values[param.name]
        elif isinstance(param, Categorical):
            out[param.name] = param.choices[0]
        elif isinstance(param, Fixed):
            out[param.name] = param.value
        else:  # pragma: no cover - peft_space declares only categorical and fixed parameters
            raise ConfigError(f"cannot choose a default for {param!r}.", path=(param.name,))
    return out


def _on_values(space: SearchSpace, name: str) -> list[Any]:
    param = space[name]
    choices = param.choices if isinstance(param, Categorical) else (getattr(param, "value", 0),)
    return [c for c in choices if _is_on(c)]


def _is_on(value: Any) -> bool:
    return value is True or (not isinstance(value, bool) and isinstance(value, int) and value > 0)


def _top_layer(space: SearchSpace) -> int:
    return (layer_count(space.names) or 1) - 1


def _layer_index(name: str) -> int | None:
    """The layer a switch or per-layer rank belongs to, ``None`` for other names."""
    for pattern in (_SHARED_SWITCH, _MODULE_SWITCH, _LAYER_RANK):
        if m := pattern.fullmatch(name):
            return int(m[m.lastindex or 0])
    return None


def _module_on(values: Mapping[str, Any], module: str) -> bool:
    """Whether ``module`` is switched on (whatever its layers)."""
    if module == "lora" and LORA_SWITCH in values:
        return values[LORA_SWITCH] is True
    return _is_on(values.get(SIZE_PARAMS[module], 0))


def _index(key: str, index: int, n: int) -> int:
    if index >= n:
        raise ConfigError(
            f"layer indices must be below the model's {n} layers, but got {key!r}. Build the "
            "space from this model's layout.",
            path=(key,),
        )
    return index


def _switch(key: str, value: Any, n: int, index: int) -> bool:
    _index(key, index, n)
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"must be true or false, but got {describe(value)}.", path=(key,))
    return bool(value)


def _size(key: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"must be an integer >= 0, but got {describe(value)}.", path=(key,))
    return int(value)


def _alpha(params: Mapping[str, Any], rank: int) -> float:
    for key, scale in (("lora_alpha", 1), ("lora_alpha_ratio", rank)):
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
                raise ConfigError(
                    f"must be a positive number, but got {describe(value)}.", path=(key,)
                )
            return float(value) * scale
    raise ConfigError(
        "LoRA is on, so `lora_alpha` or `lora_alpha_ratio` must be set.", path=("lora_alpha",)
    )

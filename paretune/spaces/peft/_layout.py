"""What a transformer looks like to a PEFT search: layers, widths and the projections to adapt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe

if TYPE_CHECKING:
    import torch

__all__ = ["ModelLayout", "Projection", "describe_model"]

ROLES = ("q", "k", "v", "qkv", "o", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class Projection:
    """One linear map of a transformer layer that LoRA can adapt.

    Attributes:
        role: ``"q"``, ``"k"``, ``"v"``, ``"qkv"`` (a fused query-key-value projection),
            ``"o"`` (attention output), ``"ffn_in"`` (one of the FFN's input projections; LLaMA
            has two, gate and up) or ``"ffn_out"``.
        name: Its path relative to a layer, e.g. ``"attention.self.query"``.
        in_features: Input width.
        out_features: Output width.
    """

    role: str
    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelLayout:
    """The shape of a transformer as the PEFT space, the counter and the materialiser see it.

    Build it with :func:`describe_model`. Module paths are relative: :attr:`layers_path` inside
    the base model (``model.base_model``, e.g. ``BertModel`` inside
    ``BertForSequenceClassification``), everything else inside one layer.

    Attributes:
        family: ``"bert"`` (BERT, RoBERTa and their relatives), ``"distilbert"``, ``"gpt2"`` or
            ``"llama"`` (LLaMA, Mistral, Qwen2/3, SmolLM2, ...).
        model_type: The config's ``model_type``, e.g. ``"roberta"``.
        n_layers: Number of transformer layers.
        hidden_size: Width of the residual stream.
        n_heads: Number of query heads.
        n_kv_heads: Number of key/value heads (fewer than ``n_heads`` under grouped-query
            attention).
        head_dim: Width of one head.
        ffn_size: Inner width of the FFN.
        layers_path: Path of the layer list inside the base model, e.g. ``"encoder.layer"``.
        attention: Path of the self-attention module inside a layer (the module that calls
            the attention function), e.g. ``"attention.self"``.
        projections: The attention and FFN projections of one layer.
        conv1d: Whether the projections are GPT-2 ``Conv1D`` modules (weights stored
            ``in x out``), which LoRA handles with ``fan_in_fan_out=True``.
        backbone_params: Number of parameters of the base model (without a task head): the
            denominator of the trainable-parameter percentage.
    """

    family: str
    model_type: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    layers_path: str
    attention: str
    projections: tuple[Projection, ...]
    conv1d: bool
    backbone_params: int

    def names(self, *roles: str) -> tuple[str, ...]:
        """Layer-relative paths of the projections with the given roles, in layout order."""
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown projection role(s) {unknown}; roles are {list(ROLES)}.")
        return tuple(p.name for p in self.projections if p.role in roles)

    def projection(self, name: str) -> Projection:
        """The projection at layer-relative path ``name``."""
        for p in self.projections:
            if p.name == name:
                return p
        raise KeyError(
            f"no projection {name!r}; the layout has {[p.name for p in self.projections]}."
        )

    @property
    def fused_qkv(self) -> bool:
        """Whether query, key and value come from one fused projection (GPT-2's ``c_attn``)."""
        return any(p.role == "qkv" for p in self.projections)

    @property
    def layers_pattern(self) -> str:
        """The last component of :attr:`layers_path` (``"layer"``, ``"h"``, ``"layers"``), the
        name ``peft`` uses to find a module's layer index."""
        return self.layers_path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class _Template:
    """Where one architecture family keeps its layers and projections."""

    family: str
    model_types: tuple[str, ...]
    layers_path: str
    attention: str
    projections: tuple[tuple[str, str], ...]  # (role, layer-relative path)

    def looked_for(self) -> str:
        names = ", ".join(name for _, name in self.projections)
        return f"{self.family}: {self.layers_path}[i].{{{names}}}"


_TEMPLATES = (
    _Template(
        family="bert",
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"),
        layers_path="encoder.layer",
        attention="attention.self",
        projections=(
            ("q", "attention.self.query"),
            ("k", "attention.self.key"),
            ("v", "attention.self.value"),
            ("o", "attention.output.dense"),
            ("ffn_in", "intermediate.dense"),
            ("ffn_out", "output.dense"),
        ),
    ),
    _Template(
        family="distilbert",
        model_types=("distilbert",),
        layers_path="transformer.layer",
        attention="attention",
        projections=(
            ("q", "attention.q_lin"),
            ("k", "attention.k_lin"),
            ("v", "attention.v_lin"),
            ("o", "attention.out_lin"),
            ("ffn_in", "ffn.lin1"),
            ("ffn_out", "ffn.lin2"),
        ),
    ),
    _Template(
        family="gpt2",
        model_types=("gpt2",),
        layers_path="h",
        attention="attn",
        projections=(
            ("qkv", "attn.c_attn"),
            ("o", "attn.c_proj"),
            ("ffn_in", "mlp.c_fc"),
            ("ffn_out", "mlp.c_proj"),
        ),
    ),
    _Template(
        family="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3"),
        layers_path="layers",
        attention="self_attn",
        projections=(
            ("q", "self_attn.q_proj"),
            ("k", "self_attn.k_proj"),
            ("v", "self_attn.v_proj"),
            ("o", "self_attn.o_proj"),
            ("ffn_in", "mlp.gate_proj"),
            ("ffn_in", "mlp.up_proj"),
            ("ffn_out", "mlp.down_proj"),
        ),
    ),
)

SUPPORTED_MODEL_TYPES = tuple(t for tpl in _TEMPLATES for t in tpl.model_types)


def describe_model(model_or_config: Any) -> ModelLayout:
    """The layout of a transformers model, or of the base model a config describes.

    A model is read as it is: widths come from its modules' weights, the parameter count from
    its base model. A config (``transformers.PretrainedConfig``) is turned into its
    ``AutoModel`` base model on the ``meta`` device, which allocates no memory, and read the
    same way.

    Known ``model_type`` values (:data:`SUPPORTED_MODEL_TYPES`) pick the family directly;
    other models are matched against each family's module names, so a LLaMA-style model of
    another ``model_type`` works when its modules are named like LLaMA's.

    Args:
        model_or_config: A ``transformers`` model (with or without a task head) or its config.

    Returns:
        The model's :class:`ModelLayout`.

    Raises:
        ConfigError: The argument is neither a model nor a config, or no family's layer list
            and projections are found in it; the message lists what was looked for.
    """
    import torch
    from transformers import PretrainedConfig

    config: Any
    if isinstance(model_or_config, PretrainedConfig):
        config = model_or_config
        base = _meta_base_model(config)
    elif isinstance(model_or_config, torch.nn.Module):
        model = model_or_config
        config = getattr(model, "config", None)
        if not isinstance(config, PretrainedConfig):
            raise ConfigError(
                "describe_model needs a transformers model (one with a `config`), but got a "
                f"{type(model).__name__} without one. Pass a transformers model or its config.",
                path=("model",),
            )
        base = getattr(model, "base_model", model)
    else:
        raise ConfigError(
            "describe_model takes a transformers model or its config, but got "
            f"{describe(model_or_config)} of type {type(model_or_config).__name__}.",
            path=("model",),
        )
    model_type = str(getattr(config, "model_type", ""))
    known = [t for t in _TEMPLATES if model_type in t.model_types]
    for template in known or _TEMPLATES:
        layers = _find_layers(base, template)
        if layers is not None:
            return _read_layout(template, model_type, config, base, layers)
    looked_for = "; ".join(t.looked_for() for t in (known or _TEMPLATES))
    raise ConfigError(
        f"cannot find addressable transformer layers in a {type(base).__name__} "
        f"(model_type {model_type!r}): looked for {looked_for}. Supported model types: "
        f"{list(SUPPORTED_MODEL_TYPES)}.",
        path=("model",),
    )


def _meta_base_model(config: Any) -> torch.nn.Module:
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            return AutoModel.from_config(config)
    except (ValueError, KeyError) as err:
        raise ConfigError(
            f"cannot build a model from a {type(config).__name__} (model_type "
            f"{getattr(config, 'model_type', None)!r}): {err}. Supported model types: "
            f"{list(SUPPORTED_MODEL_TYPES)}.",
            path=("model",),
        ) from None


def _find_layers(base: torch.nn.Module, template: _Template) -> list[torch.nn.Module] | None:
    """The template's layer list in ``base`` if every layer has every projection."""
    import torch

    try:
        layers = base.get_submodule(template.layers_path)
    except AttributeError:
        return None
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None
    for layer in layers:
        for _, name in template.projections:
            try:
                layer.get_submodule(name)
            except AttributeError:
                return None
        try:
            layer.get_submodule(template.attention)
        except AttributeError:
            return None
    return list(layers)


def _widths(module: torch.nn.Module, where: str) -> tuple[int, int, bool]:
    """``(in_features, out_features, is_conv1d)`` of a Linear or a GPT-2 Conv1D."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features, False
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):
        # Conv1D stores its weight as `in x out`.
        return int(weight.shape[0]), int(weight.shape[1]), True
    raise ConfigError(
        f"the projection at {where} must be a torch Linear or a transformers Conv1D, but it is "
        f"a {type(module).__name__}. Describe the model before adding adapters to it.",
        path=("model",),
    )


def _config_int(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _read_layout(
    template: _Template,
    model_type: str,
    config: Any,
    base: torch.nn.Module,
    layers: list[torch.nn.Module],
) -> ModelLayout:
    projections: list[Projection] = []
    conv1d = False
    for role, name in template.projections:
        where = f"{template.layers_path}.0.{name}"
        fan_in, fan_out, is_conv = _widths(layers[0].get_submodule(name), where)
        conv1d = conv1d or is_conv
        projections.append(Projection(role, name, fan_in, fan_out))
    for i, layer in enumerate(layers[1:], start=1):
        for p in projections:
            widths = _widths(layer.get_submodule(p.name), f"{template.layers_path}.{i}.{p.name}")
            if widths[:2] != (p.in_features, p.out_features):
                raise ConfigError(
                    f"every layer must have the same widths, but {template.layers_path}.{i}."
                    f"{p.name} is {widths[0]} -> {widths[1]} and layer 0's is "
                    f"{p.in_features} -> {p.out_features}. Models with heterogeneous layers "
                    "are not supported.",
                    path=("model",),
                )
    by_role: Mapping[str, Projection] = {p.role: p for p in projections}
    hidden = by_role["ffn_out"].out_features
    n_heads = _config_int(config, "num_attention_heads", "n_head", "n_heads")
    if n_heads is None:
        raise ConfigError(
            f"the config of a {type(base).__name__} must state its number of attention heads "
            "(`num_attention_heads`), but it does not.",
            path=("model", "config"),
        )
    head_dim = _config_int(config, "head_dim") or hidden // n_heads
    n_kv_heads = n_heads if "qkv" in by_role else by_role["k"].out_features // head_dim
    backbone_params = sum(p.numel() for p in base.parameters())
    return ModelLayout(
        family=template.family,
        model_type=model_type,
        n_layers=len(layers),
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        ffn_size=by_role["ffn_out"].in_features,
        layers_path=template.layers_path,
        attention=template.attention,
        projections=tuple(projections),
        conv1d=conv1d,
        backbone_params=int(backbone_params),
    )

"""The muP rules applied to a ``transformers`` decoder without editing its code: which
parameter plays which role, its initialisation, its Adam learning-rate multiplier, and the
output and attention multipliers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import nn

from paretune._errors import ConfigError, describe
from paretune.spaces.mup._readout import MuReadout
from paretune.spaces.mup._widths import config_width, head_dim, width_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["PARAMETRIZATIONS", "ROLES", "Parametrization", "parametrize"]

Kind = Literal["sp", "mup"]
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")
Role = Literal["input", "hidden", "readout", "vector"]
#: ``input``: matrices with one width dimension (token and position embeddings); ``hidden``:
#: matrices with two (attention and MLP projections); ``readout``: the output embedding;
#: ``vector``: biases and norm weights.
ROLES: tuple[Role, ...] = get_args(Role)

# The config key the rules' settings are recorded under.
CONFIG_KEY = "paretune_parametrization"


@dataclass(frozen=True)
class Parametrization:
    """The rules :func:`parametrize` applied to one model.

    Attributes:
        kind: ``"mup"`` or ``"sp"`` (standard parametrization: every rule is width-free).
        width: The model's width (``hidden_size``).
        base_width: The width at which muP equals standard parametrization.
        init_std: The initialisation std at the base width.
        output_multiplier: The logits' multiplier at the base width.
        attention_multiplier: The attention logits' multiplier over ``1/sqrt(head_dim)``.
        roles: Parameter name (``named_parameters``) to its role, one of :data:`ROLES`.
    """

    kind: Kind
    width: int
    base_width: int
    init_std: float
    output_multiplier: float
    attention_multiplier: float
    roles: Mapping[str, Role] = field(repr=False)

    @property
    def width_mult(self) -> float:
        """``width / base_width``."""
        return self.width / self.base_width

    def lr_multiplier(self, role: Role) -> float:
        """The Adam learning-rate multiplier of a role: ``1 / width_mult`` for hidden matrices
        under muP, 1 otherwise."""
        return 1.0 / self.width_mult if self.kind == "mup" and role == "hidden" else 1.0

    def init_std_of(self, role: Role) -> float:
        """The initialisation std of a role's weights (biases start at 0, norm weights at 1)."""
        if self.kind == "mup" and role == "hidden":
            return self.init_std / math.sqrt(self.width_mult)
        return self.init_std

    def param_groups(
        self, model: nn.Module, *, lr: float, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups for Adam or AdamW, one per role that has parameters.

        Each group's ``lr`` is ``lr`` times its role's :meth:`lr_multiplier`, so a schedule
        that scales every group's initial LR (``LambdaLR``,
        :mod:`paretune.spaces.schedules`) keeps the multipliers. Vectors (biases, norm
        weights) get no weight decay. AdamW decays a weight by ``lr * weight_decay`` a step,
        so hidden matrices get ``weight_decay`` times ``width_mult`` under muP: their decay
        per step stays what it is at the base width (as ``mup.MuAdamW`` does). Groups carry
        ``role`` and ``lr_multiplier`` keys.

        Raises:
            ConfigError: ``model`` has trainable parameters these rules do not know.
        """
        grouped: dict[Role, list[nn.Parameter]] = {role: [] for role in ROLES}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            role = self.roles.get(_plain(name))
            if role is None:
                raise ConfigError(
                    f"parameter {name!r} is not one these rules were made for; build the "
                    "parameter groups from the model passed to parametrize()."
                )
            grouped[role].append(param)
        return [
            {
                "params": params,
                "lr": lr * self.lr_multiplier(role),
                "weight_decay": 0.0
                if role == "vector"
                else weight_decay / self.lr_multiplier(role),
                "role": role,
                "lr_multiplier": self.lr_multiplier(role),
            }
            for role, params in grouped.items()
            if params
        ]


def parametrize(
    model: PreTrainedModel,
    *,
    base_width: int,
    kind: Kind = "mup",
    init_std: float = 0.02,
    output_multiplier: float = 1.0,
    attention_multiplier: float = 1.0,
    readout_zero_init: bool = False,
    generator: torch.Generator | None = None,
) -> Parametrization:
    """Apply muP (or standard parametrization) to a ``transformers`` causal LM, in place.

    The rules, for Adam (Tensor Programs V, Table 3, with width grown by heads at a fixed head
    dimension; ``width_mult = width / base_width``):

    ============  ==========================  ================  ======================
    role          init std                    Adam LR           forward
    ============  ==========================  ================  ======================
    input         ``init_std``                ``lr``
    hidden        ``init_std/sqrt(wm)``       ``lr / wm``
    readout       ``init_std`` (or 0)         ``lr``            logits x ``out / wm``
    vector        bias 0, norm weight 1       ``lr``
    attention                                                   ``attn/sqrt(d)``
    ============  ==========================  ================  ======================

    Under ``kind="sp"`` every ``wm`` above is 1, so the two agree at the base width. muP's
    attention scale ``1/d`` (set to equal ``1/sqrt(d)`` at the base head dimension) is the
    constant ``1/sqrt(d)`` when the head dimension is fixed, times ``attention_multiplier``.

    Roles are found as ``mup.set_base_shapes`` finds them, without editing the model's code:
    two copies of the config at the base width and twice it are built on the meta device
    (no memory, no weights), and a dimension that differs between them grows with width.
    The output embedding is the readout; it must not be tied to the input embedding
    (``tie_word_embeddings=False``). The readout becomes a :class:`MuReadout` and each
    attention module's ``scaling`` is set, so the rules are part of the model: they survive
    ``copy.deepcopy``, ``torch.save`` of the whole model and ``torch.compile``. A
    ``state_dict`` carries weights only: load it into a model built and parametrised the
    same way. The rules' settings are also written to ``model.config`` under
    ``paretune_parametrization``, as a record: ``from_pretrained`` does not install the
    multipliers again (build the model, :func:`parametrize` it, then load the weights).

    Every parameter is initialised again (from ``generator``, else torch's global RNG, in
    ``named_parameters`` order), so models of two parametrizations built from the same seed
    share their random draws.

    Args:
        model: A causal LM (``LlamaForCausalLM``, ``GPT2LMHeadModel`` and kin) whose config
            sets its width; :func:`~paretune.spaces.mup.width_config` makes one at any width.
        base_width: The width at which muP equals standard parametrization; a multiple of
            the head dimension.
        kind: ``"mup"`` or ``"sp"``.
        init_std: The initialisation std at the base width.
        output_multiplier: The logits' multiplier at the base width.
        attention_multiplier: The attention logits' multiplier over ``1/sqrt(head_dim)``.
        readout_zero_init: Start the readout at 0 (muP's recommendation for the widest
            models; the coordinate check starts from the same init either way).
        generator: The random generator of the initialisation.

    Returns:
        The rules applied, with the parameter groups for the optimizer
        (:meth:`Parametrization.param_groups`).

    Raises:
        ConfigError: An unknown kind, a non-positive multiplier or std, a base width that is
            not a multiple of the head dimension, a tied or non-linear readout, or a model that
            was parametrised already.
    """
    if kind not in PARAMETRIZATIONS:
        raise ConfigError(
            f"the parametrization must be one of {', '.join(PARAMETRIZATIONS)}, but got "
            f"{describe(kind)}."
        )
    for name, value in (
        ("init_std", init_std),
        ("output_multiplier", output_multiplier),
        ("attention_multiplier", attention_multiplier),
    ):
        if not (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            raise ConfigError(
                f"must be a finite number > 0, but got {describe(value)}", path=(name,)
            )
    config = model.config
    if getattr(config, CONFIG_KEY, None):
        raise ConfigError(
            "this model was parametrised already; build a fresh model to parametrise it again."
        )
    width = config_width(config)
    base = width_config(config, base_width)
    readout = model.get_output_embeddings()
    if not isinstance(readout, nn.Linear):
        raise ConfigError(
            f"the readout (output embedding) must be an nn.Linear, but {type(model).__name__}'s "
            f"is {type(readout).__name__}."
        )
    embedding = model.get_input_embeddings()
    if embedding is not None and readout.weight is getattr(embedding, "weight", None):
        raise ConfigError(
            "muP scales the readout and the input embedding differently, so they cannot share "
            "a weight: build the model with tie_word_embeddings=False."
        )

    rules = Parametrization(
        kind=kind,
        width=width,
        base_width=base_width,
        init_std=float(init_std),
        output_multiplier=float(output_multiplier),
        attention_multiplier=float(attention_multiplier),
        roles=_roles(model, base, readout.weight),
    )
    _initialise(model, rules, readout_zero_init=readout_zero_init, generator=generator)
    readout.__class__ = MuReadout
    assert isinstance(readout, MuReadout)  # for mypy: the class was just set
    readout.output_multiplier = rules.output_multiplier / (
        rules.width_mult if kind == "mup" else 1.0
    )
    base_head = head_dim(base)
    for module in model.modules():
        dim, scaling = getattr(module, "head_dim", None), getattr(module, "scaling", None)
        if isinstance(scaling, float) and isinstance(dim, int):
            # GPT-2's optional 1/(layer+1) and unscaled variants are kept as factors.
            natural = scaling * math.sqrt(dim)
            mup_factor = math.sqrt(base_head / dim) if kind == "mup" else 1.0
            scaled = natural * rules.attention_multiplier * mup_factor / math.sqrt(dim)
            setattr(module, "scaling", scaled)  # noqa: B010 (a plain attribute of HF's modules)
    setattr(
        config,
        CONFIG_KEY,
        {
            "kind": kind,
            "base_width": base_width,
            "init_std": rules.init_std,
            "output_multiplier": rules.output_multiplier,
            "attention_multiplier": rules.attention_multiplier,
        },
    )
    return rules


def _roles(model: nn.Module, base: Any, readout: torch.Tensor) -> dict[str, Role]:
    """Each parameter's role, from which of its dimensions grow with width."""
    wider = width_config(base, 2 * base.hidden_size)
    shapes = [_meta_shapes(type(model), cfg) for cfg in (base, wider)]
    roles: dict[str, Role] = {}
    for name, param in model.named_parameters():
        key = _plain(name)
        if key not in shapes[0]:
            raise ConfigError(
                f"parameter {name!r} is not in a fresh {type(model).__name__}; parametrise the "
                "model before adding modules to it."
            )
        grows = sum(a != b for a, b in zip(shapes[0][key], shapes[1][key], strict=True))
        if param is readout:
            roles[key] = "readout"
        elif param.ndim < 2:
            roles[key] = "vector"
        elif grows == 2:
            roles[key] = "hidden"
        else:
            roles[key] = "input"
    return roles


def _meta_shapes(cls: type, config: Any) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = cls(config)
    return {_plain(name): tuple(p.shape) for name, p in model.named_parameters()}


def _initialise(
    model: nn.Module,
    rules: Parametrization,
    *,
    readout_zero_init: bool,
    generator: torch.Generator | None,
) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            role = rules.roles[_plain(name)]
            if role == "vector":
                param.fill_(0.0 if name.endswith("bias") else 1.0)
            elif role == "readout" and readout_zero_init:
                param.zero_()
            else:
                param.normal_(0.0, rules.init_std_of(role), generator=generator)


def _plain(name: str) -> str:
    """A parameter's name without the prefix ``torch.compile`` adds."""
    return name.removeprefix("_orig_mod.")

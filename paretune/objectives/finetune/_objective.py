"""The ``finetune`` objective type: the :class:`Finetune` class (see the package docstring)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretune.objectives._base import BaseObjective
from paretune.objectives._protocol import Metric, TrialContext
from paretune.objectives.finetune._costs import (
    KNOWN_METRICS,
    analytic_count,
    check_materialised,
    count_metrics,
)
from paretune.objectives.finetune._data import LabelledData
from paretune.objectives.finetune._fidelity import (
    Fidelity,
    checked_budget,
    scaled,
    schedules,
    with_lengths,
)
from paretune.objectives.finetune._loading import Loaded
from paretune.objectives.finetune._model import load_config, model_layout, resolve_model
from paretune.objectives.finetune._settings import data_settings, training_settings
from paretune.objectives.finetune._space import searched_space

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import ModelLayout

__all__ = ["Finetune"]

_log = logging.getLogger(__name__)


class Finetune(BaseObjective):
    """The ``finetune`` objective: train a PEFT candidate (or the full model) and score it.

    See :mod:`paretune.objectives.finetune` for the model, data, fidelity and training rules.
    Settings are the keyword arguments; a spec gives them under ``objective.settings``.

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
        fidelity: How much a search trial trains and evaluates, see :class:`Fidelity`.
        full_fidelity: Overrides of ``fidelity`` for full-fidelity evaluations
            (:meth:`at_fidelity`).
        device: Where to train (``"cpu"``, ``"cuda:0"``); ``None`` uses ``ctx.device``.

    Attributes:
        search_schedule: How much search trials train and evaluate (``max_length`` resolved).
        full_schedule: How much full-fidelity trials train and evaluate (``max_length``
            resolved).
        schedule: How much this objective's trials train and evaluate, before a budget:
            :attr:`search_schedule`, or :attr:`full_schedule` at a :attr:`fidelity`.
        fidelity: ``None`` as built (the settings say how much a trial does), or the budget
            of :meth:`at_fidelity`: a fraction of full fidelity.
        space: The searched space: :func:`~paretune.spaces.peft.peft_space` of the model's
            layout with ``space``'s options, then ``extra_space``.
        metrics: ``accuracy`` (maximize) and ``trainable_percent`` (minimize).
        layout: The model's layout, read from its config.
        settings: The settings this objective was built from.

    Raises:
        ConfigError: A setting is invalid, the model's config cannot be loaded, the model has
            no layers the PEFT space can address, or a data file does not exist; the path names
            the setting.
    """

    #: The metrics :meth:`known_values` gives before training (a controller may use them
    #: exactly instead of modelling them).
    known_metrics: tuple[str, ...] = KNOWN_METRICS

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
        device: str | None = None,
    ) -> None:
        self.settings: dict[str, Any] = {
            name: value for name, value in locals().items() if name not in ("self", "__class__")
        }
        self.training_settings = training_settings(
            learning_rate=learning_rate,
            learning_rate_multipliers=learning_rate_multipliers,
            full_learning_rate=full_learning_rate,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            max_grad_norm=max_grad_norm,
            lora_dropout=lora_dropout,
            group_by_length=group_by_length,
            precision=precision,
            device=device,
        )
        search, full = schedules(fidelity, full_fidelity)
        self.data_settings = data_settings(
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

        self.model_path: str = resolve_model(model)
        self.config = load_config(self.model_path, model)
        positions = getattr(self.config, "max_position_embeddings", None)
        positions = positions if isinstance(positions, int) and positions > 0 else None
        self.search_schedule, self.full_schedule = with_lengths(search, full, positions)
        self.schedule: Fidelity = self.search_schedule
        self.fidelity: float | None = None
        self.layout: ModelLayout = model_layout(self.config, model)
        self.space: SearchSpace = searched_space(self.layout, space, extra_space)
        self.metrics: tuple[Metric, ...] = (
            Metric("accuracy", "maximize"),
            Metric("trainable_percent", "minimize"),
        )
        self._shared = Loaded(
            model=model,
            model_path=self.model_path,
            layout=self.layout,
            data_settings=self.data_settings,
        )

    def __repr__(self) -> str:
        return (
            f"Finetune(model={self.settings['model']!r}, fidelity={self.fidelity}, "
            f"schedule={self.schedule}, params={list(self.space.names)})"
        )

    # -- fidelity ---------------------------------------------------------------------------

    def at_fidelity(self, budget: float) -> Finetune:
        """The same objective at ``budget`` of full fidelity.

        ``1.0`` trains and evaluates as the ``full_fidelity`` settings say (every training,
        validation and test row unless they say otherwise); a smaller budget trains on that
        fraction of full fidelity's training rows (at least one), with its other values.
        The result shares this one's loaded data, tokenizer and weights within the process.

        Raises:
            ConfigError: ``budget`` is not a number in ``(0, 1]``.
        """
        budget = checked_budget(budget)
        if budget == self.fidelity:
            return self
        twin = copy.copy(self)
        twin.settings = dict(self.settings)
        twin.schedule = self.full_schedule
        twin.fidelity = budget
        return twin

    # -- loading ----------------------------------------------------------------------------

    @property
    def data(self) -> LabelledData:
        """The labelled splits (read and checked on first use, then kept)."""
        return self._shared.load_data()

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels in id order (their sorted values, as strings)."""
        return self.data.label_names

    def prepare(self) -> None:
        """Load and check the data, the tokenizer and the weights now rather than in the first
        trial (each is loaded once per process)."""
        self._shared.counting()
        self._shared.load_base_model()

    def known_values(self, params: Mapping[str, Any]) -> dict[str, float]:
        """``trainable_params`` and ``trainable_percent`` of a candidate, as its trial will
        report them, from the params alone (the analytic count; nothing is trained or built).

        The first call reads the tokenizer and the labels (the task head's size depends on
        them); later calls take microseconds.
        """
        from paretune.spaces.peft import decode_params

        return count_metrics(analytic_count(self._shared, decode_params(params, self.layout)))

    # -- one trial --------------------------------------------------------------------------

    def trial_schedule(self, budget: float | None) -> Fidelity:
        """How much a trial at ``budget`` (``ctx.budget``) trains and evaluates: :attr:`schedule`
        on ``budget`` of its training rows (at least one); ``None``: :attr:`schedule`.

        Raises:
            ConfigError: ``budget`` is not a number in ``(0, 1]``.
        """
        if budget is None:
            return self.schedule
        return scaled(self.schedule, checked_budget(budget), self.data.size("train"))

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

        from paretune.objectives.finetune._train import evaluate, train
        from paretune.spaces.peft import InvalidPeftConfig, decode_params

        plan = decode_params(params, self.layout)
        if not plan.is_valid:
            raise InvalidPeftConfig(
                "a PEFT candidate must put at least one module (nonzero size) into at least one "
                f"selected layer, but this one has {plan.describe()}; it was not trained."
            )
        device = self.training_settings.device or ctx.device
        hyper, lora_dropout = self.training_settings.for_trial(
            params, full=plan.full, device=device
        )
        schedule = self.trial_schedule(ctx.budget)  # the runner passes self.fidelity
        count = analytic_count(self._shared, plan)

        train_data, validation, test = self._shared.encoded(schedule)
        _, pad_id = self._shared.load_tokenizer()
        self._shared.load_base_model()
        started = time.perf_counter()
        model = self._shared.candidate_model(
            plan, seed=ctx.seed, device=device, lora_dropout=lora_dropout
        )
        check_materialised(model, count, plan)
        setup_seconds = time.perf_counter() - started
        _log.info(
            "trial %d: %s; %d trainable parameters (%.3f%%); %d train examples, %.2f epochs, "
            "lr %g%s, on %s",
            ctx.trial_number,
            plan.describe(),
            count.total,
            count.percent,
            len(train_data),
            schedule.epochs,
            hyper.learning_rate,
            _factors(hyper.lr_multipliers),
            device,
        )

        try:
            result = train(
                model,
                train_data=train_data,
                validation=validation,
                hyper=hyper,
                epochs=schedule.epochs,
                evals_per_epoch=schedule.evals_per_epoch,
                seed=ctx.seed,
                pad_id=pad_id,
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
                    batch_size=hyper.eval_batch_size,
                    pad_id=pad_id,
                    device=device,
                    precision=hyper.precision,
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
        metrics |= count_metrics(count) | {
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


def _factors(multipliers: Mapping[str, float]) -> str:
    """`` (x lora 3, prefix 30)`` for the log line of a trial, or nothing without factors."""
    if not multipliers:
        return ""
    return " (x " + ", ".join(f"{k} {v:g}" for k, v in multipliers.items()) + ")"

"""The ``lm`` objective type: the :class:`LM` class (see the package docstring)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe
from paretune.objectives._base import BaseObjective, checked_budget
from paretune.objectives._protocol import Metric, TrialContext, TrialPruned
from paretune.objectives.lm._data import load_corpus
from paretune.objectives.lm._settings import OVERRIDABLE, LMSettings, checked

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace

__all__ = ["LM"]

_log = logging.getLogger(__name__)


class LM(BaseObjective):
    """The ``lm`` objective: pretrain a decoder from scratch and return its validation loss.

    See :mod:`paretune.objectives.lm` for the model, data, schedule and fidelity rules.

    Args:
        **settings: The settings, validated by :class:`LMSettings` (whose attributes document
            each one).

    Attributes:
        validated: The settings, validated, defaults filled in.
        settings: The settings as given.
        space: The searched parameters (``space`` setting; default: the learning rate from
            2^-14 to 2^-3, log scale).
        metrics: ``val_loss`` (minimize).
        fidelity: ``None`` as built; a budget from :meth:`at_fidelity` scales the width when
            ``width_fidelity`` is set.

    Raises:
        ConfigError: A setting is invalid (the path names it) or a data file does not exist.
    """

    metrics: tuple[Metric, ...] = (Metric("val_loss", "minimize"),)

    def __init__(self, **settings: Any) -> None:
        from paretune.objectives._paths import resolve_file

        self.settings: dict[str, Any] = dict(settings)
        self.validated: LMSettings = checked(settings)
        for index, name in enumerate(self.validated.data):
            try:
                resolve_file(name, "data")
            except ConfigError as err:
                raise ConfigError(err.message, path=("data", index)) from None
        self.space: SearchSpace = _space(self.validated)
        self.fidelity: float | None = None
        self.dynamic = self.validated.dynamic_lr()
        self.overridable = OVERRIDABLE

    def __repr__(self) -> str:
        v = self.validated
        return (
            f"LM({v.architecture}, width={v.width}, depth={v.depth}, {v.parametrization}, "
            f"steps={v.total_steps}, fidelity={self.fidelity}, params={list(self.space.names)})"
        )

    def describe(self, params: Mapping[str, Any]) -> str:
        """``w256 lr2^-8``: the width a trial trains (its ``width`` parameter, else the
        setting's), the learning rate as a power of 2 (where searched), ``k=v`` of the other
        parameters and the seed (``s1``, where searched), as muTransfer's figures read them."""
        from paretune.spaces import compact_params

        width = params.get("width", self.width_at(self.fidelity))
        parts = [f"w{width}"]
        lr = params.get("learning_rate")
        if isinstance(lr, (int, float)) and lr > 0:
            parts.append(f"lr2^{math.log2(lr):.3g}")
        parts.append(compact_params(params, skip=("width", "learning_rate", "seed")))
        if "seed" in params:
            parts.append(f"s{params['seed']}")
        return " ".join(p for p in parts if p)

    def at_fidelity(self, budget: float) -> LM:
        """This objective at ``budget``: with ``width_fidelity``, a trial's width is ``budget``
        times the width (rounded to whole heads, at least one); without it, only ``1.0`` (the
        settings' own run) is a fidelity.

        Raises:
            ConfigError: ``budget`` is not in ``(0, 1]``, or it is below 1 without
                ``width_fidelity``.
        """
        budget = checked_budget(budget, "the lm objective takes a budget in (0, 1]")
        if budget != 1.0 and not self.validated.width_fidelity:
            raise ConfigError(
                f"the lm objective has one fidelity unless width_fidelity is set, but got "
                f"budget={describe(budget)}; set width_fidelity: true to scale the width."
            )
        twin = LM(**self.settings)
        twin.fidelity = budget
        return twin

    def width_at(self, budget: float | None) -> int:
        """The width a trial at ``budget`` trains."""
        v = self.validated
        if budget is None or not v.width_fidelity:
            return v.width
        heads = max(1, round(budget * v.width / v.head_dim))
        return heads * v.head_dim

    def non_embedding_params(self, width: int | None = None) -> int:
        """The parameters outside the input embeddings (Step Law's ``N``) at ``width`` (default:
        the settings' width), counted on a model built without memory."""
        from paretune.objectives.lm._model import count_non_embedding

        v = self.validated
        settings = v if width is None else v.for_trial({"width": width})
        vocab = load_corpus(v.data, v.tokenizer, v.validation_fraction).vocab_size
        return count_non_embedding(settings.shape(vocab), base_width=v.base_width)

    @property
    def tokens(self) -> int:
        """Training tokens per run: steps x batch size x sequence length."""
        v = self.validated
        return v.total_steps * v.batch_size * v.sequence_length

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        from paretune.objectives.lm._train import Run

        # Only a budget sets the width; without one a `width` parameter (or the setting) does.
        width = (
            self.width_at(ctx.budget)
            if self.validated.width_fidelity and ctx.budget is not None
            else None
        )
        settings = self.validated.for_trial(params, width=width)
        corpus = load_corpus(settings.data, settings.tokenizer, settings.validation_fraction)
        seed = settings.seed if settings.seed is not None else ctx.seed
        device = settings.device or ctx.device
        run = Run(settings, corpus, seed=seed, device=device)
        _log.info(
            "trial %d: %s width %d, depth %d, %s, lr %g, %d steps of %d tokens, seed %d, on %s",
            ctx.trial_number,
            settings.architecture,
            settings.width,
            settings.depth,
            settings.parametrization,
            settings.peak_learning_rate,
            run.total_steps,
            run.tokens_per_step,
            seed,
            device,
        )
        decide = ctx.decide if run.dynamic is not None else None
        result = run.train(report=ctx.report, should_stop=ctx.should_prune, decide=decide)
        if result.steps < run.total_steps:
            raise TrialPruned(f"pruned after {result.steps} of {run.total_steps} steps")
        _log.info(
            "trial %d done: validation loss %.4f in %.1f s",
            ctx.trial_number,
            result.val_loss,
            result.seconds,
        )
        return result.metrics() | {
            "width": float(settings.width),
            "log2_lr": math.log2(settings.peak_learning_rate),
        }


def _space(settings: LMSettings) -> SearchSpace:
    from paretune.spaces import SearchSpace, param_from_dict
    from paretune.spaces.mup import transfer_space

    if settings.space is None:
        return transfer_space(("learning_rate",))
    params = []
    for name, spec in settings.space.items():
        try:
            params.append(param_from_dict(name, spec))
        except ConfigError as err:
            raise err.prefixed("space") from None
    return SearchSpace(params)

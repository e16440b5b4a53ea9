"""What a finetune objective loads in a process: data, tokenizer, token ids, weights; and the
fresh model of each trial."""

from __future__ import annotations

import copy
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError
from paretune.objectives.finetune._data import DataSettings, LabelledData, TokenCache, load_data
from paretune.objectives.finetune._model import quiet_transformers
from paretune.objectives.finetune._train import Encoded

if TYPE_CHECKING:
    import torch

    from paretune.objectives.finetune._fidelity import Fidelity
    from paretune.spaces.peft import ModelLayout, PeftPlan

__all__ = ["Loaded"]

_log = logging.getLogger(__name__)


class Loaded:
    """What a process loads once and every trial reuses, also across the objectives built from
    the same model and data settings (the same objective at another fidelity).

    Each part is loaded on first use: building an objective loads nothing.

    Args:
        model: The ``model`` setting (for messages).
        model_path: The directory or hub name it resolves to.
        layout: The model's layout from its config (for messages).
        data_settings: Where the data comes from.

    Attributes:
        data: The labelled splits, once loaded.
        tokenizer: The tokenizer, once loaded (it pads with ``pad_id``).
        tokens: Token ids of the rows, per split and length, tokenised as needed.
        layout: The classifier's layout, with the exact backbone size, once counted.
        head_params: The parameters of the classifier's task head, once counted.
        base_model: The classifier with its pretrained weights, on the CPU, once loaded.
        timings: ``data_seconds`` and ``load_seconds``, as they were measured.
    """

    def __init__(
        self, *, model: str, model_path: str, layout: ModelLayout, data_settings: DataSettings
    ) -> None:
        self.model = model
        self.model_path = model_path
        self.config_layout = layout
        self.data_settings = data_settings
        self.data: LabelledData | None = None
        self.tokenizer: Any = None
        self.pad_id: int | None = None
        self.tokens: TokenCache | None = None
        self.layout: ModelLayout | None = None
        self.head_params: int | None = None
        self.base_model: Any = None
        self.timings: dict[str, float] = {}

    def load_data(self) -> LabelledData:
        """The labelled splits (read and checked on the first call)."""
        if self.data is None:
            started = time.perf_counter()
            self.data = load_data(self.data_settings)
            self.timings["data_seconds"] = time.perf_counter() - started
            _log.info("finetune data: %s", self.data.summary())
        return self.data

    def load_tokenizer(self) -> tuple[Any, int]:
        """The tokenizer and its padding id: its end-of-sequence token where it has no
        padding token (decoders).

        Raises:
            ConfigError: It cannot be loaded, or it has nothing to pad with (path ``model``).
        """
        if self.tokenizer is None or self.pad_id is None:
            from transformers import AutoTokenizer

            try:
                with quiet_transformers():
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
            self.tokenizer = tokenizer
            self.pad_id = int(tokenizer.pad_token_id)
            self.tokens = TokenCache(tokenizer, self.load_data())
        return self.tokenizer, self.pad_id

    def classifier_config(self) -> Any:
        """The model's config with the task's labels and the padding id."""
        from transformers import AutoConfig

        _, pad_id = self.load_tokenizer()
        names = self.load_data().label_names
        return AutoConfig.from_pretrained(
            self.model_path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            pad_token_id=pad_id,
        )

    def counting(self) -> tuple[ModelLayout, int]:
        """The classifier's layout and head size, from a model on the meta device (no weights,
        no memory): what the analytic count needs.

        Raises:
            ConfigError: transformers has no sequence classifier for the model (path ``model``).
        """
        if self.layout is None or self.head_params is None:
            import torch
            from transformers import AutoModelForSequenceClassification

            from paretune.spaces.peft import DEFAULT_HEAD_NAMES, describe_model

            config = self.classifier_config()
            try:
                with torch.device("meta"), quiet_transformers():
                    meta = AutoModelForSequenceClassification.from_config(config)
            except (ValueError, KeyError) as err:
                raise ConfigError(
                    f"{self.model!r} (model type {self.config_layout.model_type!r}) has no "
                    f"sequence classification model in transformers: {err}",
                    path=("model",),
                ) from None
            self.layout = describe_model(meta)
            self.head_params = sum(
                p.numel()
                for name, module in meta.named_children()
                if name in DEFAULT_HEAD_NAMES
                for p in module.parameters()
            )
        return self.layout, self.head_params

    def load_base_model(self) -> Any:
        """The classifier with its pretrained weights, on the CPU; trials train copies.

        Raises:
            ConfigError: The weights cannot be loaded (path ``model``).
        """
        if self.base_model is None:
            from transformers import AutoModelForSequenceClassification

            config = self.classifier_config()
            started = time.perf_counter()
            try:
                with quiet_transformers():
                    model = AutoModelForSequenceClassification.from_pretrained(
                        self.model_path, config=config
                    )
            except (OSError, ValueError) as err:
                raise ConfigError(
                    f"cannot load the weights of {self.model_path!r}: {err}", path=("model",)
                ) from None
            self.base_model = model.cpu()
            self.timings["load_seconds"] = time.perf_counter() - started
            _log.info(
                "finetune model: %s loaded in %.1f s (%s, %d layers, hidden %d)",
                self.model_path,
                self.timings["load_seconds"],
                type(model).__name__,
                self.config_layout.n_layers,
                self.config_layout.hidden_size,
            )
        return self.base_model

    def encoded(self, schedule: Fidelity) -> tuple[Encoded, Encoded, Encoded | None]:
        """The training, validation and test rows ``schedule`` uses, tokenised (no test
        split: ``None``)."""
        data = self.load_data()
        self.load_tokenizer()
        tokens = self.tokens
        length = schedule.max_length
        assert tokens is not None and length is not None  # set by load_tokenizer, Finetune

        def encoded(split: str, n: int | None) -> Encoded:
            rows = data.size(split) if n is None else min(n, data.size(split))
            return Encoded(tokens.ids(split, rows, length), data.labels[split][:rows])

        test = encoded("test", schedule.eval_examples) if "test" in data.texts else None
        return (
            encoded("train", schedule.train_examples),
            encoded("validation", schedule.eval_examples),
            test,
        )

    def candidate_model(
        self, plan: PeftPlan, *, seed: int, device: str, lora_dropout: float
    ) -> torch.nn.Module:
        """A copy of the base model with a fresh task head and ``plan``'s modules, on
        ``device``; torch, numpy and ``random`` are seeded with ``seed`` first."""
        from paretune.spaces.peft import materialize

        base = self.load_base_model()
        _seed_everything(seed)
        model = copy.deepcopy(base)
        _reset_heads(model)
        model.to(device)
        materialize(model, plan, self.counting()[0], lora_dropout=lora_dropout)
        return model


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

"""The coordinate check: does a parametrization keep every activation's size independent of
width after a few training steps? (Tensor Programs V, section D.1; ``mup.coord_check``.)"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.objectives.lm._data import load_corpus
from paretune.objectives.lm._settings import LMSettings

__all__ = [
    "COORD_CHECK_LEARNING_RATE",
    "COORD_CHECK_SEEDS",
    "COORD_CHECK_STEPS",
    "COORD_CHECK_TOLERANCE",
    "COORD_CHECK_WIDTHS",
    "CoordCheck",
    "coordinate_check",
]

#: mup's coordinate checks take a few Adam steps at a learning rate large enough that
#: standard parametrization's updates (of size ``lr * width`` in the logits) show.
COORD_CHECK_STEPS = 4
COORD_CHECK_LEARNING_RATE = 3e-3
COORD_CHECK_TOLERANCE = 0.1
#: Widths 64 to 1024: the check's slopes need a 16x range to tell drift from noise.
COORD_CHECK_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 1024)
COORD_CHECK_SEEDS = 3


@dataclass(frozen=True)
class CoordCheck:
    """Mean absolute activations per module across widths, and their log-log slopes.

    Attributes:
        parametrization: ``"mup"`` or ``"sp"``.
        widths: The widths checked, ascending.
        values: Module name to its mean ``|activation|`` at each width (mean over seeds),
            measured after the last step on fixed validation windows. Modules:
            ``embedding``, ``block<i>.attention``, ``block<i>.mlp``, ``logits``.
        slopes: Module name to the least-squares slope of ``log(value)`` against
            ``log(width)``: 0 when the size does not depend on width, 0.5 when it grows like
            ``sqrt(width)``.
        tolerance: The largest ``|slope|`` that passes.
        steps: Adam steps taken before measuring.
        learning_rate: Their learning rate.
        seeds: Seeds averaged.
    """

    parametrization: str
    widths: tuple[int, ...]
    values: dict[str, list[float]]
    slopes: dict[str, float]
    tolerance: float
    steps: int
    learning_rate: float
    seeds: int

    @property
    def worst(self) -> tuple[str, float]:
        """The module whose slope is farthest from 0, and its slope."""
        name = max(self.slopes, key=lambda k: abs(self.slopes[k]))
        return name, self.slopes[name]

    @property
    def ok(self) -> bool:
        """Whether every slope is within ``+-tolerance``."""
        return all(abs(s) <= self.tolerance for s in self.slopes.values())

    def to_json(self) -> dict[str, Any]:
        """``{"widths", "values", "slopes", "ok"}`` and the settings of the check."""
        return {
            "widths": list(self.widths),
            "values": self.values,
            "slopes": self.slopes,
            "ok": self.ok,
            "parametrization": self.parametrization,
            "tolerance": self.tolerance,
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "seeds": self.seeds,
        }


def coordinate_check(
    settings: LMSettings,
    *,
    widths: Sequence[int] = COORD_CHECK_WIDTHS,
    steps: int = COORD_CHECK_STEPS,
    seeds: int = COORD_CHECK_SEEDS,
    learning_rate: float = COORD_CHECK_LEARNING_RATE,
    tolerance: float = COORD_CHECK_TOLERANCE,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> CoordCheck:
    """Train ``settings``' decoder at each width for ``steps`` Adam steps at a constant
    ``learning_rate`` (no warmup, no clipping) and measure every module's activations.

    Each seed's initialisation and batches are shared across widths (paired). ``settings``
    gives everything else: architecture, depth, head dimension, parametrization, base width,
    multipliers, data.

    Args:
        settings: The lm settings; their width, schedule and steps are replaced.
        widths: At least two distinct widths, multiples of ``settings.head_dim``.
        steps: Adam steps before measuring (at least 1).
        seeds: Seeds averaged per width.
        learning_rate: The constant learning rate.
        tolerance: The largest ``|slope|`` that passes.
        device: Where to train.
        progress: Called with ``(runs done, runs in all)`` after each run.

    Raises:
        ConfigError: Fewer than two widths, a width that is not a multiple of the head
            dimension, a non-positive count or rate.
    """
    from paretune.objectives.lm._train import Run
    from paretune.spaces import ConstantSchedule

    ordered = tuple(sorted(set(widths)))
    if len(ordered) < 2:
        raise ConfigError(
            f"a slope needs at least two distinct widths, but got {describe(list(widths))}.",
            path=("widths",),
        )
    for name, value in (("steps", steps), ("seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"must be an integer >= 1, but got {describe(value)}", path=(name,))
    for name, number in (("learning_rate", learning_rate), ("tolerance", tolerance)):
        if not (
            isinstance(number, float | int)
            and not isinstance(number, bool)
            and math.isfinite(number)
            and number > 0
        ):
            raise ConfigError(
                f"must be a finite number > 0, but got {describe(number)}", path=(name,)
            )
    odd = [w for w in ordered if w % settings.head_dim]
    if odd:
        raise ConfigError(
            f"every width must be a multiple of head_dim={settings.head_dim}, but got {odd[0]}.",
            path=("widths",),
        )
    corpus = load_corpus(settings.data, settings.tokenizer, settings.validation_fraction)
    totals: dict[str, np.ndarray] = {}
    done, runs = 0, len(ordered) * seeds
    for index, width in enumerate(ordered):
        for seed in range(seeds):
            trial = settings.model_copy(
                update={
                    "width": width,
                    "steps": steps,
                    "tokens": None,
                    "learning_rate": float(learning_rate),
                    "schedule": ConstantSchedule(warmup_fraction=0.0),
                    "warmup_fraction": None,
                    "decay_fraction": None,
                    "max_grad_norm": None,
                }
            )
            run = Run(trial, corpus, seed=seed, device=device)
            for _ in range(steps):
                run.step()
            for name, size in _activations(run).items():
                totals.setdefault(name, np.zeros(len(ordered)))[index] += size / seeds
            done += 1
            if progress is not None:
                progress(done, runs)
    log_widths = np.log(np.asarray(ordered, dtype=float))
    slopes = {
        name: float(np.polyfit(log_widths, np.log(values), 1)[0]) for name, values in totals.items()
    }
    return CoordCheck(
        parametrization=settings.parametrization,
        widths=ordered,
        values={name: [float(v) for v in values] for name, values in totals.items()},
        slopes=slopes,
        tolerance=float(tolerance),
        steps=steps,
        learning_rate=float(learning_rate),
        seeds=seeds,
    )


def _activations(run: Any) -> dict[str, float]:
    """Mean ``|activation|`` of each watched module on the first validation windows."""
    import torch

    model = run.model
    watched: dict[Any, str] = {model.get_input_embeddings(): "embedding"}
    block = -1
    for module in model.modules():
        kind = type(module).__name__
        if kind.endswith("DecoderLayer") or kind.endswith("Block"):
            block += 1
        elif kind.endswith("Attention"):
            watched[module] = f"block{block}.attention"
        elif kind.endswith("MLP"):
            watched[module] = f"block{block}.mlp"
    watched[model.get_output_embeddings()] = "logits"
    sizes: dict[str, float] = {}

    def hook(module: Any, _inputs: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        sizes[watched[module]] = float(tensor.detach().abs().float().mean())

    handles = [module.register_forward_hook(hook) for module in watched]
    try:
        with torch.no_grad():
            run.loss(run.validation[:64])
    finally:
        for handle in handles:
            handle.remove()
    if not all(math.isfinite(v) and v > 0 for v in sizes.values()):
        raise RuntimeError(f"an activation is zero or not finite: {sizes}")
    return sizes

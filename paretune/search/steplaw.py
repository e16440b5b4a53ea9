"""Step Law: the optimal learning rate and batch size of LLM pre-training as power laws.

Li et al., "Predictable Scale: Part I -- Optimal Hyperparameter Scaling Law in Large Language
Model Pretraining" (arXiv:2503.04715) trained about 3,700 dense and MoE models from scratch
over grids of learning rate and batch size, and fit the near-optimal learning rates and batch
sizes of each (model size, data size) cell:

    lr*(N, D)  = 1.79 * N**-0.713 * D**0.307
    batch*(D)  = 0.58 * D**0.571        (tokens per optimizer step)

where ``N`` is the number of non-embedding parameters and ``D`` the number of training tokens.
What was checked, and where:

* The constants and the two forms: the paper's summary on its project page
  (https://step-law.github.io) and the paper's abstract (https://arxiv.org/abs/2503.04715,
  HTML v7), repeated by https://www.sciencestack.ai/paper/2503.04715 and
  https://www.emergentmind.com/papers/2503.04715, which also gives ``N`` as non-embedding
  parameters and ``D`` in tokens.
* Batch size in tokens: the authors' fitting code (https://github.com/step-law/steplaw,
  ``code/fit_tool.py``) multiplies the batch size in sequences by the sequence length before
  fitting ("change to token level") and reports ``bs / seq_len`` as the batch in sequences; the
  project page's heatmaps are labelled "Optimal Token-Wise BatchSize". The same code fits both
  laws by ordinary least squares on natural logarithms (``lr`` on ``ln N`` and ``ln D``, the
  batch on ``ln D`` only). Its rows are every run whose final smoothed training loss is within
  0.25% of its cell's lowest (``query_optimal_lr_bs_data``, ``filter_threshold=0.0025``),
  averaged over bootstrap resamples.
* Not confirmed from the sources read for this module: the training recipe behind the
  constants (optimizer, warmup, decay shape, final learning rate). The learning rate of the law
  is the peak of the run's schedule; a different optimizer or schedule (for instance a much
  lower or higher final learning rate) moves the optimum, so treat the law as the centre of a
  search (:func:`lr_range`) and refit it on your own runs.

Everything here is plain ``numpy``: importing this module loads neither torch nor Optuna.

Example:
    >>> from paretune.search import steplaw
    >>> round(steplaw.step_law_lr(1e9, 1e11), 6)  # 1B non-embedding parameters, 100B tokens
    0.001632
    >>> round(steplaw.step_law_batch_tokens(1e11))  # tokens per step: 541 sequences of 2048
    1107715
    >>> low, high = steplaw.lr_range(1e9, 1e11)  # for Float("lr", low, high, log=True)
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from paretune._errors import ConfigError, describe

__all__ = [
    "BATCH_COEFFICIENT",
    "BATCH_D_EXPONENT",
    "LR_COEFFICIENT",
    "LR_D_EXPONENT",
    "LR_N_EXPONENT",
    "lr_range",
    "step_law_batch_tokens",
    "step_law_lr",
]

#: ``c`` of ``lr* = c * N**alpha * D**beta``.
LR_COEFFICIENT = 1.79
#: ``alpha``: the exponent of the non-embedding parameter count.
LR_N_EXPONENT = -0.713
#: ``beta``: the exponent of the training tokens.
LR_D_EXPONENT = 0.307
#: The coefficient of ``batch* = 0.58 * D**0.571`` (tokens).
BATCH_COEFFICIENT = 0.58
#: The exponent of the training tokens in the optimal batch size.
BATCH_D_EXPONENT = 0.571


@overload
def step_law_lr(n_params: float, tokens: float) -> float: ...
@overload
def step_law_lr(n_params: np.ndarray, tokens: float | np.ndarray) -> np.ndarray: ...
@overload
def step_law_lr(n_params: float, tokens: np.ndarray) -> np.ndarray: ...
def step_law_lr(n_params: Any, tokens: Any) -> Any:
    """Step Law's optimal peak learning rate, ``1.79 * n_params**-0.713 * tokens**0.307``.

    Args:
        n_params: Non-embedding parameters ``N`` (a number or an array).
        tokens: Training tokens ``D`` (a number or an array broadcastable with ``n_params``).

    Returns:
        A float for two numbers, otherwise an array of the broadcast shape.

    Raises:
        ConfigError: A value is not a finite positive number, or the shapes do not broadcast.
    """
    n = _positive(n_params, "n_params")
    d = _positive(tokens, "tokens")
    _broadcast(n, d)
    return _out(LR_COEFFICIENT * n**LR_N_EXPONENT * d**LR_D_EXPONENT)


@overload
def step_law_batch_tokens(tokens: float) -> float: ...
@overload
def step_law_batch_tokens(tokens: np.ndarray) -> np.ndarray: ...
def step_law_batch_tokens(tokens: Any) -> Any:
    """Step Law's optimal batch size in tokens per optimizer step, ``0.58 * tokens**0.571``.

    Divide by the sequence length for the batch in sequences. It does not depend on the model
    size.

    Args:
        tokens: Training tokens ``D`` (a number or an array).

    Returns:
        A float for a number, otherwise an array of the same shape.

    Raises:
        ConfigError: A value is not a finite positive number.
    """
    d = _positive(tokens, "tokens")
    return _out(BATCH_COEFFICIENT * d**BATCH_D_EXPONENT)


def lr_range(n_params: float, tokens: float, *, octaves: float = 2.0) -> tuple[float, float]:
    """A log-range of learning rates centred on Step Law's: ``lr* / 2**octaves`` to
    ``lr* * 2**octaves``.

    The bounds of a log-uniform learning-rate parameter whose centre (in log space) is
    :func:`step_law_lr`, for example ``Float("lr", *lr_range(n, d), log=True)``. The default,
    two octaves on each side, spans a factor of 16: room for a recipe whose optimum is off the
    law's by up to a factor of 4 either way.

    Args:
        n_params: Non-embedding parameters ``N``.
        tokens: Training tokens ``D``.
        octaves: Powers of two on each side of the centre; finite and positive.

    Returns:
        ``(low, high)`` with ``sqrt(low * high) == step_law_lr(n_params, tokens)``.

    Raises:
        ConfigError: An argument is not a finite positive number.
    """
    centre = step_law_lr(_scalar(n_params, "n_params"), _scalar(tokens, "tokens"))
    width = _scalar(octaves, "octaves")
    factor = 2.0**width
    return centre / factor, centre * factor


def _positive(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 array whose entries are all finite and positive."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ConfigError(f"`{name}` must be a positive number, but got {describe(value)}.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"`{name}` must be a positive number or an array of them, but got {describe(value)}."
        ) from None
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        where = "" if arr.ndim == 0 else f" at index {np.argwhere(bad)[0].tolist()}"
        raise ConfigError(
            f"`{name}` must be finite and > 0, but got {float(arr[bad].flat[0])!r}{where}."
            + (" Count non-embedding parameters." if name == "n_params" else "")
        )
    return arr


def _scalar(value: Any, name: str) -> float:
    arr = _positive(value, name)
    if arr.ndim != 0:
        raise ConfigError(f"`{name}` must be one number, but got an array of shape {arr.shape}.")
    return float(arr)


def _broadcast(a: np.ndarray, b: np.ndarray) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ConfigError(
            f"`n_params` and `tokens` must broadcast together, but got shapes {a.shape} and "
            f"{b.shape}."
        ) from None


def _out(arr: np.ndarray) -> Any:
    """A float for a 0-d result, the array otherwise."""
    return float(arr) if np.ndim(arr) == 0 else arr

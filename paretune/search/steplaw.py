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
  batch on ``ln D`` only), which is what :func:`fit_step_law` does for the learning rate. Its
  rows are every run whose final smoothed training loss is within 0.25% of its cell's lowest
  (``query_optimal_lr_bs_data``, ``filter_threshold=0.0025``), averaged over bootstrap
  resamples; :func:`best_lr_per_cell` gives one row per cell instead.
* Not confirmed from the sources read for this module: the training recipe behind the
  constants (optimizer, warmup, decay shape, final learning rate). The learning rate of the law
  is the peak of the run's schedule; a different optimizer or schedule (for instance a much
  lower or higher final learning rate) moves the optimum, so treat the law as the centre of a
  search (:func:`lr_range`) and refit it on your own runs (:func:`best_lr_per_cell`, then
  :func:`fit_step_law`).

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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from paretune._errors import ConfigError, describe

__all__ = [
    "BATCH_COEFFICIENT",
    "BATCH_D_EXPONENT",
    "LR_COEFFICIENT",
    "LR_D_EXPONENT",
    "LR_N_EXPONENT",
    "StepLawFit",
    "best_lr_per_cell",
    "fit_step_law",
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

# The exponents a fit may hold at Step Law's value, in the order of StepLawFit's parameters.
_EXPONENTS = {"alpha": LR_N_EXPONENT, "beta": LR_D_EXPONENT}
# ln values closer than this count as one value: a run's N or D is the same number.
_SAME_LOG = 1e-9


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


@dataclass(frozen=True)
class StepLawFit:
    """A learning-rate law ``lr = c * N**alpha * D**beta`` fitted by least squares on logs.

    :func:`fit_step_law` builds it. Its statistics are those of the regression
    ``ln lr = ln c + alpha ln N + beta ln D + e`` with independent normal errors ``e``; an
    exponent in :attr:`fixed` was held at Step Law's value, not fitted.

    Attributes:
        c: The coefficient.
        alpha: The exponent of the non-embedding parameters ``N``.
        beta: The exponent of the training tokens ``D``.
        residual_std: The estimated standard deviation of ``e`` (natural log), ``sqrt(RSS /
            dof)``; NaN when ``dof`` is 0 (as many runs as free parameters: an exact fit
            that says nothing about the scatter).
        n_points: The runs (rows) fitted.
        fixed: The exponents held at Step Law's value: ``"alpha"`` when every run has the
            same ``N``, ``"beta"`` when every run has the same ``D`` (the data cannot
            separate such an exponent from ``c``), and those named in ``fix``.
        covariance: `3 x 3` estimated covariance of ``(ln c, alpha, beta)``; a fixed
            exponent's row and column are 0 (it does not vary), and every entry of a fitted
            parameter is NaN when ``dof`` is 0.
    """

    c: float
    alpha: float
    beta: float
    residual_std: float
    n_points: int
    fixed: tuple[str, ...]
    covariance: tuple[tuple[float, float, float], ...]

    @property
    def log_c(self) -> float:
        """``ln c``, the intercept of the regression."""
        return math.log(self.c)

    @property
    def dof(self) -> int:
        """Residual degrees of freedom: runs minus free parameters."""
        return self.n_points - (3 - len(self.fixed))

    @property
    def stderr(self) -> tuple[float, float, float]:
        """Standard errors of ``(ln c, alpha, beta)``; NaN for a fixed exponent (it was not
        estimated) and for every parameter when ``dof`` is 0."""
        diag = np.sqrt(np.diag(np.asarray(self.covariance, dtype=np.float64)))
        out = [float(v) for v in diag]
        for name in self.fixed:
            out[_position(name)] = math.nan
        return out[0], out[1], out[2]

    @overload
    def predict(self, n_params: float, tokens: float) -> float: ...
    @overload
    def predict(self, n_params: np.ndarray, tokens: float | np.ndarray) -> np.ndarray: ...
    @overload
    def predict(self, n_params: float, tokens: np.ndarray) -> np.ndarray: ...
    def predict(self, n_params: Any, tokens: Any) -> Any:
        """The fitted learning rate ``c * n_params**alpha * tokens**beta``.

        Args:
            n_params: Non-embedding parameters ``N`` (a number or an array).
            tokens: Training tokens ``D`` (a number or an array broadcastable with it).

        Returns:
            A float for two numbers, otherwise an array of the broadcast shape.

        Raises:
            ConfigError: A value is not a finite positive number, or the shapes do not
                broadcast.
        """
        n = _positive(n_params, "n_params")
        d = _positive(tokens, "tokens")
        _broadcast(n, d)
        return _out(np.exp(self.log_c + self.alpha * np.log(n) + self.beta * np.log(d)))

    @overload
    def interval(
        self, n_params: float, tokens: float, *, level: float = 0.9
    ) -> tuple[float, float]: ...
    @overload
    def interval(
        self, n_params: np.ndarray, tokens: float | np.ndarray, *, level: float = 0.9
    ) -> tuple[np.ndarray, np.ndarray]: ...
    @overload
    def interval(
        self, n_params: float, tokens: np.ndarray, *, level: float = 0.9
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def interval(self, n_params: Any, tokens: Any, *, level: float = 0.9) -> Any:
        """A multiplicative prediction interval for the best learning rate of a new run.

        With ``x = (1, ln N, ln D)``, the interval is ``predict(N, D) * exp(+-q * s)`` where
        ``s**2 = residual_std**2 + x' covariance x`` (the scatter of one run around the law
        plus the uncertainty of the law itself) and ``q`` is the Student t quantile with
        ``dof`` degrees of freedom that leaves ``(1 - level) / 2`` in each tail. A fixed
        exponent counts as exact, so far from the fitted runs' ``N`` (or ``D``) the interval
        is too narrow by whatever error Step Law's exponent has there.

        Args:
            n_params: Non-embedding parameters ``N`` (a number or an array).
            tokens: Training tokens ``D`` (a number or an array broadcastable with it).
            level: The probability the interval covers, in ``(0, 1)``.

        Returns:
            ``(low, high)``: floats for two numbers, otherwise arrays of the broadcast shape.

        Raises:
            ConfigError: An argument is out of range, or ``dof`` is 0 (the fit has no
                residual scatter to go on).
        """
        if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
            raise ConfigError(f"`0 < level < 1` must hold, but got level={describe(level)}.")
        if self.dof < 1 or not math.isfinite(self.residual_std):
            raise ConfigError(
                f"a prediction interval needs more runs than free parameters, but this fit has "
                f"{self.n_points} runs for {3 - len(self.fixed)} free parameters (dof = "
                f"{self.dof}); fit at least one more run."
            )
        n = _positive(n_params, "n_params")
        d = _positive(tokens, "tokens")
        shape = _broadcast(n, d)
        x = np.stack(
            [np.ones(shape), np.broadcast_to(np.log(n), shape), np.broadcast_to(np.log(d), shape)],
            axis=-1,
        )
        cov = np.asarray(self.covariance, dtype=np.float64)
        spread = np.sqrt(self.residual_std**2 + np.einsum("...i,ij,...j->...", x, cov, x))
        half = _t_quantile(float(level), self.dof) * spread
        centre = np.exp(x @ np.array([self.log_c, self.alpha, self.beta]))
        return _out(centre * np.exp(-half)), _out(centre * np.exp(half))


def fit_step_law(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    lr: Sequence[float] | np.ndarray,
    *,
    fix: Sequence[str] = (),
) -> StepLawFit:
    """Fit ``lr = c * N**alpha * D**beta`` to the best learning rates of ``k`` runs.

    Ordinary least squares of ``ln lr`` on ``ln N`` and ``ln D``, as the paper's own fitting
    code does. An exponent whose variable does not vary (every run at one ``N``, or at one
    ``D``) cannot be told apart from ``c``: it is held at Step Law's value (``alpha = -0.713``,
    ``beta = 0.307``) and listed in :attr:`StepLawFit.fixed`, and ``c`` absorbs the rest. A
    single run thus calibrates ``c`` of Step Law's exponents.

    Args:
        n_params: `k` non-embedding parameter counts.
        tokens: `k` training token counts.
        lr: `k` learning rates, for example the ``lr`` of :func:`best_lr_per_cell`.
        fix: Exponents (``"alpha"``, ``"beta"``) to hold at Step Law's value even where the
            data could fit them.

    Returns:
        The fit.

    Raises:
        ConfigError: The arrays are not one-dimensional of one length ``k``, a value is not a
            finite positive number, ``fix`` names something else, there are fewer runs than
            free parameters, or ``ln D`` is a linear function of ``ln N`` across the runs (a
            fixed tokens-per-parameter ratio), which leaves ``alpha`` and ``beta``
            inseparable.
    """
    n = _positive(n_params, "n_params")
    d = _positive(tokens, "tokens")
    y = np.log(_positive(lr, "lr"))
    if not (n.ndim == d.ndim == y.ndim == 1 and n.shape == d.shape == y.shape):
        raise ConfigError(
            f"`n_params`, `tokens` and `lr` must be one-dimensional with one value per run, but "
            f"got shapes {n.shape}, {d.shape} and {y.shape}."
        )
    held = _held(fix)
    k = y.shape[0]
    x_n, x_d = np.log(n), np.log(d)
    if k and np.ptp(x_n) <= _SAME_LOG:
        held.add("alpha")
    if k and np.ptp(x_d) <= _SAME_LOG:
        held.add("beta")
    fixed = tuple(name for name in _EXPONENTS if name in held)
    free = [name for name in _EXPONENTS if name not in held]
    p = 1 + len(free)
    if k < p:
        names = ", ".join(["ln c", *free])
        raise ConfigError(
            f"fitting {names} needs at least {p} runs (one per free parameter), but got {k}. "
            "Add runs, or hold an exponent at Step Law's value with fix=('beta',) or "
            "fix=('alpha',)."
        )
    columns = {"alpha": x_n, "beta": x_d}
    if len(free) == 2:
        centred = np.column_stack([x_n - x_n.mean(), x_d - x_d.mean()])
        s = np.linalg.svd(centred, compute_uv=False)
        if s[-1] <= 1e-9 * s[0]:
            raise ConfigError(
                f"ln(tokens) is a linear function of ln(n_params) across these {k} runs (for "
                "example one tokens-per-parameter ratio), so alpha and beta cannot be told "
                "apart. Add runs off that line (another ratio), or pass fix=('beta',) to hold "
                f"beta at Step Law's {LR_D_EXPONENT}."
            )
    target = y - sum(_EXPONENTS[name] * columns[name] for name in fixed)
    design = np.column_stack([np.ones(k), *(columns[name] for name in free)])
    theta, *_ = np.linalg.lstsq(design, target, rcond=None)
    dof = k - p
    residuals = target - design @ theta
    variance = float(residuals @ residuals) / dof if dof > 0 else math.nan
    cov_free = variance * np.linalg.inv(design.T @ design)
    index = [0, *(_position(name) for name in free)]
    cov = np.zeros((3, 3))
    cov[np.ix_(index, index)] = cov_free
    values = dict(zip(["log_c", *free], (float(v) for v in theta), strict=True))
    return StepLawFit(
        c=math.exp(values["log_c"]),
        alpha=values.get("alpha", LR_N_EXPONENT),
        beta=values.get("beta", LR_D_EXPONENT),
        residual_std=math.sqrt(variance),
        n_points=k,
        fixed=fixed,
        covariance=tuple((float(a), float(b), float(c)) for a, b, c in cov),
    )


def best_lr_per_cell(
    rows: Iterable[Sequence[float]], *, refine: bool = False
) -> list[tuple[float, float, float, float]]:
    """The best learning rate of each ``(n_params, tokens)`` cell of a learning-rate sweep.

    Rows are ``(n_params, tokens, lr, loss)``, for example one per completed trial of a study.
    A cell is one exact ``(n_params, tokens)`` pair. Within a cell, runs of the same ``lr``
    (seeds) count once with their mean loss, and the best ``lr`` is the one of the lowest loss
    (the smaller ``lr`` on a tie). Rows with a NaN or infinite loss (diverged runs) are left
    out; a cell with no other row is left out of the result.

    With ``refine``, a parabola in ``log2(lr)`` through the best ``lr`` and its two neighbours
    on the cell's grid (the next smaller and the next larger ``lr``) replaces the grid point by
    the parabola's vertex, which lies between grid points. The grid point stays when the best
    ``lr`` is the smallest or the largest of the cell (the sweep did not bracket the optimum:
    widen it) and, as a guard, when the parabola is not convex or its vertex lies outside the
    two neighbours (which a lowest middle point rules out, up to rounding: by the tie rule the
    smaller neighbour's loss is strictly higher).

    Args:
        rows: ``(n_params, tokens, lr, loss)`` rows; ``n_params``, ``tokens`` and ``lr`` are
            finite positive numbers.
        refine: Replace the grid point by the parabola's vertex where it applies.

    Returns:
        ``(n_params, tokens, lr, loss)`` per cell, sorted by ``(n_params, tokens)``; ``loss``
        is the (mean) loss measured at the best grid point, also when ``lr`` is refined.

    Raises:
        ConfigError: A row does not have four numbers, or ``n_params``, ``tokens`` or ``lr``
            is not a finite positive number.
    """
    cells: dict[tuple[float, float], dict[float, list[float]]] = {}
    for i, row in enumerate(rows):
        n, d, lr, loss = _row(row, i)
        if math.isfinite(loss):
            cells.setdefault((n, d), {}).setdefault(lr, []).append(loss)
    out = []
    for (n, d), by_lr in sorted(cells.items()):
        lrs = sorted(by_lr)
        losses = [float(np.mean(by_lr[lr])) for lr in lrs]
        best = int(np.argmin(losses))  # the first minimum: the smaller lr on a tie
        lr = lrs[best]
        if refine and 0 < best < len(lrs) - 1:
            lr = _vertex(lrs[best - 1 : best + 2], losses[best - 1 : best + 2], default=lr)
        out.append((n, d, lr, losses[best]))
    return out


def _vertex(lrs: Sequence[float], losses: Sequence[float], *, default: float) -> float:
    """The ``lr`` at the vertex of the parabola in ``log2(lr)`` through three points (``lrs``
    increasing), or ``default`` if the parabola is not convex or its vertex leaves them."""
    x0, x1, x2 = (math.log2(v) for v in lrs)
    y0, y1, y2 = losses
    slope_left = (y1 - y0) / (x1 - x0)
    slope_right = (y2 - y1) / (x2 - x1)
    curvature = (slope_right - slope_left) / (x2 - x0)  # the x**2 coefficient
    if not curvature > 0:
        return default
    # p(x) = y0 + slope_left (x - x0) + curvature (x - x0)(x - x1); p'(x) = 0 here:
    x = (x0 + x1) / 2 - slope_left / (2 * curvature)
    if not x0 <= x <= x2:
        return default
    return float(2.0**x)


def _t_quantile(level: float, dof: int) -> float:
    """The ``q`` with ``P(|T| <= q) = level`` for Student's t with integer ``dof >= 1``."""
    low, high = 0.0, 1.0
    while _t_central(high, dof) < level:
        low, high = high, high * 2.0
    for _ in range(200):  # bisection; the central probability increases with q
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if _t_central(mid, dof) < level:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _t_central(q: float, dof: int) -> float:
    """``P(|T| <= q)`` for Student's t with integer ``dof``: the finite series in
    ``theta = atan(q / sqrt(dof))`` of Abramowitz and Stegun 26.7.3-4."""
    theta = math.atan(q / math.sqrt(dof))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:
        # sin(theta) * sum_{j < dof/2} cos(theta)**(2j) * prod_{i <= j} (2i - 1) / (2i)
        j = np.arange(1, dof // 2)
        coefficients = np.cumprod((2 * j - 1) / (2 * j))
        return float(sin * (1.0 + np.sum(coefficients * cos2**j)))
    if dof == 1:
        return 2.0 * theta / math.pi
    # 2/pi * (theta + sin(theta) cos(theta) * sum_{j < (dof-1)/2} cos(theta)**(2j) *
    # prod_{i <= j} (2i) / (2i + 1))
    j = np.arange(1, (dof - 1) // 2)
    coefficients = np.cumprod((2 * j) / (2 * j + 1))
    cos = math.cos(theta)
    return float(2.0 / math.pi * (theta + sin * cos * (1.0 + np.sum(coefficients * cos2**j))))


def _held(fix: Sequence[str]) -> set[str]:
    if isinstance(fix, str):
        raise ConfigError(
            f"`fix` must be a sequence of exponent names, but got the string {fix!r}; write "
            f"fix=({fix!r},)."
        )
    held = set()
    for name in fix:
        if name not in _EXPONENTS:
            raise ConfigError(
                f"`fix` may name 'alpha' (the exponent of n_params) and 'beta' (of tokens), "
                f"but got {describe(name)}.",
                path=("fix",),
            )
        held.add(name)
    return held


def _position(name: str) -> int:
    """The index of an exponent in ``(ln c, alpha, beta)``."""
    return 1 + list(_EXPONENTS).index(name)


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


def _row(row: Sequence[float], i: int) -> tuple[float, float, float, float]:
    try:
        n, d, lr, loss = row
    except (TypeError, ValueError):
        raise ConfigError(
            f"each row must be (n_params, tokens, lr, loss), but got {describe(row)}.",
            path=("rows", i),
        ) from None
    try:
        values = (
            _scalar(n, "n_params"),
            _scalar(d, "tokens"),
            _scalar(lr, "lr"),
            float(loss),
        )
    except ConfigError as err:
        raise err.prefixed("rows", i) from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"`loss` must be a number, but got {describe(loss)}.", path=("rows", i)
        ) from None
    return values

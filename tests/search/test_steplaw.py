from __future__ import annotations

import ast
import doctest
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from paretune._errors import ConfigError
from paretune.search import steplaw
from paretune.search.steplaw import (
    StepLawFit,
    best_lr_per_cell,
    fit_step_law,
    lr_range,
    step_law_batch_tokens,
    step_law_lr,
)


def _synthetic(
    rng: np.random.Generator, k: int, c: float, alpha: float, beta: float, noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`k` runs at log-uniform N in [1e7, 1e10] and D in [1e9, 1e12] whose best lr follows the
    law times a log-normal error of standard deviation ``noise``."""
    n = 10.0 ** rng.uniform(7, 10, size=k)
    d = 10.0 ** rng.uniform(9, 12, size=k)
    lr = c * n**alpha * d**beta * np.exp(noise * rng.standard_normal(k))
    return n, d, lr


# -- the published law ---------------------------------------------------------------------------


def test_the_formulas_match_hand_computed_values() -> None:
    # log10 lr = log10(1.79) - 0.713 * 9 + 0.307 * 11 = 0.252853 - 6.417 + 3.377 = -2.787147
    assert step_law_lr(1e9, 1e11) == pytest.approx(10**-2.787147, rel=1e-6)
    assert step_law_lr(1e9, 1e11) == pytest.approx(1.6325e-3, rel=1e-4)
    # log10 batch = log10(0.58) + 0.571 * 11 = -0.236572 + 6.281 = 6.044428
    assert step_law_batch_tokens(1e11) == pytest.approx(10**6.044428, rel=1e-6)
    assert step_law_lr(1, 1) == pytest.approx(1.79)
    assert step_law_batch_tokens(1) == pytest.approx(0.58)
    # Doubling N scales the lr by 2**-0.713; doubling D by 2**0.307 (and the batch by 2**0.571).
    assert step_law_lr(2e8, 1e10) / step_law_lr(1e8, 1e10) == pytest.approx(2**-0.713)
    assert step_law_lr(1e8, 2e10) / step_law_lr(1e8, 1e10) == pytest.approx(2**0.307)
    assert step_law_batch_tokens(2e10) / step_law_batch_tokens(1e10) == pytest.approx(2**0.571)


def test_the_formulas_take_arrays_and_broadcast() -> None:
    n = np.array([1e8, 1e9, 1e10])
    d = np.array([[1e10], [1e11]])
    lr = step_law_lr(n, d)
    assert isinstance(lr, np.ndarray) and lr.shape == (2, 3)
    assert lr[1, 1] == pytest.approx(step_law_lr(1e9, 1e11))
    assert isinstance(step_law_lr(10**9, 10**11), float)  # ints are numbers too
    batch = step_law_batch_tokens(np.array([1e10, 1e11]))
    assert isinstance(batch, np.ndarray)
    assert batch[1] == pytest.approx(step_law_batch_tokens(1e11))


def test_lr_range_is_centred_on_the_law() -> None:
    centre = step_law_lr(3e8, 6e9)
    low, high = lr_range(3e8, 6e9)
    assert math.sqrt(low * high) == pytest.approx(centre)
    assert high / low == pytest.approx(2.0**4)  # two octaves on each side
    low, high = lr_range(3e8, 6e9, octaves=0.5)
    assert (low, high) == pytest.approx((centre / 2**0.5, centre * 2**0.5))


def test_the_module_docstring_examples_run() -> None:
    result = doctest.testmod(steplaw)
    assert result.attempted > 0 and result.failed == 0


def test_the_module_imports_numpy_and_the_base_only() -> None:
    # Neither torch nor Optuna, and no other module of paretune.search.
    tree = ast.parse(Path(steplaw.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    allowed = {"__future__", "math", "collections.abc", "dataclasses", "typing", "numpy"}
    assert imported <= allowed | {"paretune._errors"}, imported
    assert set(steplaw.__all__) <= set(dir(steplaw))


# -- fitting -------------------------------------------------------------------------------------


def test_the_fit_recovers_a_noiseless_law_exactly() -> None:
    n, d = np.meshgrid([1e7, 1e8, 1e9], [1e9, 1e10, 1e11])
    n, d = n.ravel(), d.ravel()
    lr = 0.5 * n**-0.6 * d**0.25
    fit = fit_step_law(n, d, lr)
    assert fit.fixed == ()
    assert (fit.c, fit.alpha, fit.beta) == pytest.approx((0.5, -0.6, 0.25), rel=1e-9)
    assert fit.residual_std < 1e-12
    assert (fit.n_points, fit.dof) == (9, 6)
    assert fit.predict(3e8, 2e10) == pytest.approx(0.5 * 3e8**-0.6 * 2e10**0.25, rel=1e-9)


def test_the_fit_of_noisy_runs_is_within_its_standard_errors() -> None:
    rng = np.random.default_rng(0)
    truth = (math.log(1.79), -0.713, 0.307)
    fit = fit_step_law(*_synthetic(rng, 40, 1.79, -0.713, 0.307, noise=0.1))
    estimate = (fit.log_c, fit.alpha, fit.beta)
    for value, true, se in zip(estimate, truth, fit.stderr, strict=True):
        assert 0 < se < 1
        assert abs(value - true) < 3 * se
    assert fit.residual_std == pytest.approx(0.1, rel=0.3)


def test_the_standard_errors_match_the_spread_of_repeated_fits() -> None:
    # The brute force for the covariance: refit many noisy samples at the same (N, D).
    rng = np.random.default_rng(1)
    n, d, _ = _synthetic(rng, 12, 1.0, -0.7, 0.3, noise=0.0)
    fits = [
        fit_step_law(n, d, 1.0 * n**-0.7 * d**0.3 * np.exp(0.2 * rng.standard_normal(12)))
        for _ in range(2000)
    ]
    spread = np.std([(f.log_c, f.alpha, f.beta) for f in fits], axis=0)
    reported = np.sqrt(np.mean([np.square(f.stderr) for f in fits], axis=0))
    np.testing.assert_allclose(reported, spread, rtol=0.1)


def test_the_prediction_interval_covers_new_runs_at_its_level() -> None:
    rng = np.random.default_rng(2)
    covered = 0
    trials = 1000
    for _ in range(trials):
        n, d, lr = _synthetic(rng, 6, 2.0, -0.7, 0.3, noise=0.3)
        fit = fit_step_law(n, d, lr)
        n_new, d_new, lr_new = _synthetic(rng, 1, 2.0, -0.7, 0.3, noise=0.3)
        low, high = fit.interval(n_new[0], d_new[0], level=0.8)
        covered += low <= lr_new[0] <= high
    # Exact t intervals: the count is Binomial(1000, 0.8), standard deviation 12.6.
    assert abs(covered / trials - 0.8) < 0.04


def test_the_interval_brackets_the_prediction_and_vectorises() -> None:
    fit = fit_step_law(*_synthetic(np.random.default_rng(3), 10, 1.0, -0.7, 0.3, noise=0.2))
    centre = fit.predict(1e9, 1e11)
    low90, high90 = fit.interval(1e9, 1e11)
    low99, high99 = fit.interval(1e9, 1e11, level=0.99)
    assert low99 < low90 < centre < high90 < high99
    assert math.sqrt(low90 * high90) == pytest.approx(centre)  # multiplicative: symmetric in log
    lows, highs = fit.interval(np.array([1e8, 1e9]), 1e11)
    assert (lows[1], highs[1]) == pytest.approx((low90, high90))
    # The half-width in log space is a t quantile times the prediction's standard error.
    x = np.array([1.0, math.log(1e9), math.log(1e11)])
    se = math.sqrt(fit.residual_std**2 + x @ np.asarray(fit.covariance) @ x)
    assert math.log(high90 / centre) == pytest.approx(stats.t.ppf(0.95, fit.dof) * se)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 30, 31, 1000])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_the_t_quantile_matches_scipy(dof: int, level: float) -> None:
    q = steplaw._t_quantile(level, dof)
    assert q == pytest.approx(stats.t.ppf((1 + level) / 2, dof), rel=1e-9)


def test_one_n_for_every_run_fixes_alpha() -> None:
    d = np.array([1e9, 1e10, 1e11, 1e12])
    lr = 0.3 * 1e8**-0.5 * d**0.25  # alpha = -0.5 cannot be seen at one N
    fit = fit_step_law(np.full(4, 1e8), d, lr)
    assert fit.fixed == ("alpha",)
    assert fit.alpha == steplaw.LR_N_EXPONENT
    assert fit.beta == pytest.approx(0.25, rel=1e-9)
    assert fit.predict(1e8, 5e10) == pytest.approx(0.3 * 1e8**-0.5 * 5e10**0.25, rel=1e-9)
    assert math.isnan(fit.stderr[1]) and not math.isnan(fit.stderr[2])
    assert np.asarray(fit.covariance)[1].tolist() == [0.0, 0.0, 0.0]
    assert fit.dof == 2


def test_one_d_for_every_run_fixes_beta() -> None:
    n = np.array([1e7, 1e8, 1e9])
    fit = fit_step_law(n, np.full(3, 1e11), 2.0 * n**-0.8 * 1e11**0.1)
    assert fit.fixed == ("beta",)
    assert (fit.alpha, fit.beta) == pytest.approx((-0.8, steplaw.LR_D_EXPONENT), rel=1e-9)
    assert math.isnan(fit.stderr[2])


def test_one_run_calibrates_the_coefficient_of_step_law() -> None:
    fit = fit_step_law([1e9], [1e11], [3e-3])
    assert fit.fixed == ("alpha", "beta")
    assert fit.predict(1e9, 1e11) == pytest.approx(3e-3)
    assert fit.c == pytest.approx(1.79 * 3e-3 / step_law_lr(1e9, 1e11))
    assert fit.dof == 0 and math.isnan(fit.residual_std)
    with pytest.raises(ConfigError, match="more runs than free parameters"):
        fit.interval(1e9, 1e11)


def test_fix_holds_an_exponent_that_the_data_could_fit() -> None:
    n, d, lr = _synthetic(np.random.default_rng(4), 8, 1.0, -0.6, 0.2, noise=0.0)
    fit = fit_step_law(n, d, lr, fix=("beta",))
    assert fit.fixed == ("beta",) and fit.beta == steplaw.LR_D_EXPONENT
    assert fit.residual_std > 0.01  # the wrong beta no longer fits exactly


def test_too_few_runs_for_the_free_parameters_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"at least 3 runs .* but got 2"):
        fit_step_law([1e8, 1e9], [1e10, 1e11], [1e-3, 5e-4])
    with pytest.raises(ConfigError, match=r"at least 3 runs .* but got 0"):
        fit_step_law([], [], [])
    # Holding beta leaves two free parameters: two runs are enough.
    fit = fit_step_law([1e8, 1e9], [1e10, 1e11], [1e-3, 5e-4], fix=("beta",))
    assert fit.dof == 0


def test_a_fixed_tokens_per_parameter_ratio_is_an_error_with_a_way_out() -> None:
    n = np.array([1e7, 1e8, 1e9, 1e10])
    d = 20 * n
    lr = step_law_lr(n, d)
    with pytest.raises(ConfigError, match=r"cannot be told apart.*fix=\('beta',\)"):
        fit_step_law(n, d, lr)
    assert fit_step_law(n, d, lr, fix=("beta",)).alpha == pytest.approx(-0.713)


def test_the_fit_is_a_frozen_value() -> None:
    fit = fit_step_law([1e9], [1e11], [1e-3])
    assert isinstance(fit, StepLawFit)
    with pytest.raises(AttributeError):
        fit.c = 2.0  # type: ignore[misc]


# -- the best lr of each cell --------------------------------------------------------------------


def _brute_force_best(rows: list[tuple[float, float, float, float]], refine: bool) -> list:
    """Each cell's best lr, written independently of the module: explicit sums for the mean
    of repeated lrs, tuple order for ties, numpy's polyfit for the parabola."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    for n, d, lr, loss in rows:
        if not (math.isnan(loss) or math.isinf(loss)):
            cells[(n, d)][lr].append(loss)
    out = []
    for n, d in sorted(cells):
        grid = sorted(cells[(n, d)])
        mean = {lr: sum(v) / len(v) for lr, v in cells[(n, d)].items()}
        loss, lr = min((mean[lr], lr) for lr in grid)
        i = grid.index(lr)
        if refine and 0 < i < len(grid) - 1:
            x = [math.log2(v) for v in grid[i - 1 : i + 2]]
            a, b, _ = np.polyfit(x, [mean[v] for v in grid[i - 1 : i + 2]], 2)
            if a > 0 and x[0] <= -b / (2 * a) <= x[2]:
                lr = 2 ** (-b / (2 * a))
        out.append((n, d, lr, loss))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("refine", [False, True])
def test_best_lr_per_cell_matches_a_brute_force(seed: int, refine: bool) -> None:
    rng = np.random.default_rng(seed)
    grid = 2.0 ** np.arange(-14, -4)
    rows = []
    for n in (1e7, 1e8, 1e9):
        for d in (1e9, 1e10):
            for lr in rng.choice(grid, size=int(rng.integers(1, 8)), replace=False):
                for _ in range(int(rng.integers(1, 3))):  # some lrs run with two seeds
                    loss = float(rng.choice([rng.uniform(2, 4), np.nan, np.inf], p=[0.8, 0.1, 0.1]))
                    rows.append((n, d, float(lr), loss))
    rng.shuffle(rows)
    got = best_lr_per_cell(rows, refine=refine)
    want = _brute_force_best(rows, refine)
    assert [cell[:2] for cell in got] == [cell[:2] for cell in want]
    np.testing.assert_allclose([cell[2:] for cell in got], [cell[2:] for cell in want], rtol=1e-9)


def test_refining_finds_the_vertex_of_a_parabolic_loss() -> None:
    best = 2.0**-9.3  # between the grid points 2**-10 and 2**-9
    rows = [(1e8, 1e10, 2.0**e, 3.0 + 0.1 * (e + 9.3) ** 2) for e in range(-12, -5)]
    [(_, _, lr, loss)] = best_lr_per_cell(rows, refine=True)
    assert lr == pytest.approx(best, rel=1e-12)
    assert loss == pytest.approx(3.0 + 0.1 * 0.3**2)  # the loss measured at the grid point 2**-9
    assert best_lr_per_cell(rows)[0][2] == 2.0**-9


def test_refining_keeps_the_grid_point_at_the_edge_or_on_a_flat_loss() -> None:
    edge = [(1e8, 1e10, 2.0**e, float(e + 20)) for e in range(-12, -8)]  # best at the smallest lr
    assert best_lr_per_cell(edge, refine=True)[0][2] == 2.0**-12
    flat = [(1e8, 1e10, 2.0**e, 3.0) for e in range(-12, -8)]  # a tie: the smallest lr, kept
    assert best_lr_per_cell(flat, refine=True)[0][2] == 2.0**-12
    # The tie goes to the smaller lr, so its smaller neighbour is strictly worse: refined.
    plateau = [(1e8, 1e10, 2.0**e, 1.0 if e != -12 else 5.0) for e in range(-12, -8)]
    assert 2.0**-11 < best_lr_per_cell(plateau, refine=True)[0][2] < 2.0**-10


def test_the_vertex_guard_keeps_the_default() -> None:
    # Three points whose middle one is lowest always give a convex parabola with its vertex
    # between them; the guard is for anything else.
    assert steplaw._vertex([1.0, 2.0, 4.0], [1.0, 1.0, 1.0], default=2.0) == 2.0  # flat
    assert steplaw._vertex([1.0, 2.0, 4.0], [1.0, 2.0, 1.0], default=2.0) == 2.0  # concave
    assert steplaw._vertex([1.0, 2.0, 4.0], [3.0, 2.0, 1.2], default=2.0) == 2.0  # past 4
    assert steplaw._vertex([1.0, 2.0, 4.0], [2.0, 1.0, 2.0], default=2.0) == pytest.approx(2.0)


def test_best_lr_per_cell_leaves_out_cells_without_a_finite_loss() -> None:
    rows = [(1e8, 1e10, 1e-3, math.nan), (1e9, 1e10, 1e-3, 2.5), (1e9, 1e10, 2e-3, math.inf)]
    assert best_lr_per_cell(rows) == [(1e9, 1e10, 1e-3, 2.5)]
    assert best_lr_per_cell([]) == []


def test_the_cells_fit_back_to_the_law_they_came_from() -> None:
    # A sweep whose loss is a parabola in log2(lr) around Step Law's lr: refined, the cells'
    # best lrs give back Step Law's constants.
    rows = []
    for n in (1e7, 1e8, 1e9):
        for d in (1e9, 1e10, 1e11):
            centre = math.log2(step_law_lr(n, d))
            for e in range(-16, 0):
                rows.append((n, d, 2.0**e, 3.0 + 0.05 * (e - centre) ** 2))
    cells = best_lr_per_cell(rows, refine=True)
    fit = fit_step_law(*np.array([cell[:3] for cell in cells]).T)
    assert (fit.c, fit.alpha, fit.beta) == pytest.approx((1.79, -0.713, 0.307), rel=1e-9)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: step_law_lr(0, 1e10), "`n_params` must be finite and > 0, but got 0.0"),
        (lambda: step_law_lr(-1e8, 1e10), "Count non-embedding parameters"),
        (lambda: step_law_lr(1e8, math.nan), "`tokens` must be finite and > 0, but got nan"),
        (lambda: step_law_lr(1e8, math.inf), "`tokens` must be finite and > 0, but got inf"),
        (lambda: step_law_lr("1e8", 1e10), "`n_params` must be a positive number"),
        (lambda: step_law_lr(True, 1e10), "`n_params` must be a positive number"),
        (lambda: step_law_lr([1e8, 0.0], 1e10), "but got 0.0 at index \\[1\\]"),
        (lambda: step_law_lr(np.ones(3), np.ones(2)), "must broadcast together"),
        (lambda: step_law_batch_tokens(-5), "`tokens` must be finite and > 0"),
        (lambda: lr_range(1e8, 1e10, octaves=0), "`octaves` must be finite and > 0"),
        (lambda: lr_range(1e8, 1e10, octaves=math.nan), "`octaves` must be finite and > 0"),
        (lambda: lr_range(np.ones(2), 1e10), "`n_params` must be one number"),
        (lambda: fit_step_law([1e8, 1e9], [1e10], [1e-3, 1e-3]), "one value per run"),
        (lambda: fit_step_law([1e8], [1e10], [0.0]), "`lr` must be finite and > 0"),
        (lambda: fit_step_law([1e8], [1e10], [1e-3], fix=("gamma",)), "may name 'alpha'"),
        (lambda: fit_step_law([1e8], [1e10], [1e-3], fix="beta"), "write fix=\\('beta',\\)"),
        (lambda: best_lr_per_cell([(1e8, 1e10, 1e-3)]), "rows\\[0\\]: each row must be"),
        (lambda: best_lr_per_cell([(1e8, 1e10, 1e-3, 2.0), (1e8, 1e10, -1e-3, 2.0)]),
         "rows\\[1\\]: `lr` must be finite and > 0"),
        (lambda: best_lr_per_cell([(1e8, 1e10, 1e-3, "low")]), "rows\\[0\\]: `loss` must be"),
    ],
)  # fmt: skip
def test_bad_input_is_a_config_error(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_an_interval_level_outside_zero_to_one_is_a_config_error(level: float) -> None:
    fit = fit_step_law(*_synthetic(np.random.default_rng(5), 5, 1.0, -0.7, 0.3, noise=0.1))
    with pytest.raises(ConfigError, match="`0 < level < 1` must hold"):
        fit.interval(1e9, 1e11, level=level)

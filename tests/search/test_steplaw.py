from __future__ import annotations

import ast
import doctest
import math
from pathlib import Path

import numpy as np
import pytest

from paretune._errors import ConfigError
from paretune.search import steplaw
from paretune.search.steplaw import (
    lr_range,
    step_law_batch_tokens,
    step_law_lr,
)

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
    ],
)  # fmt: skip
def test_bad_input_is_a_config_error(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()

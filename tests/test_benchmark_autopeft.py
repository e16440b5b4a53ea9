"""The verdicts of ``benchmarks/autopeft.py``: which re-evaluated search trials dominate a
baseline on the means over seeds, and which rows are on the front of the means."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from paretune.search._reevaluate import Reevaluation

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def autopeft() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("autopeft")
    finally:
        sys.path.remove(str(BENCHMARKS))


def reevaluation(
    number: int,
    percent: float,
    accuracies: list[float],
    *,
    label: str | None = None,
    search_accuracy: float = 0.75,
) -> Reevaluation:
    trial = optuna.trial.create_trial(
        values=[search_accuracy, percent],
        params={"lora_rank": number + 1},
        distributions={"lora_rank": optuna.distributions.IntDistribution(1, 64)},
    )
    trial.number = number
    return Reevaluation(
        source=trial,
        label=label,
        baseline=label is not None,
        runs={
            seed: {"accuracy": acc, "trainable_percent": percent}
            for seed, acc in enumerate(accuracies)
        },
    )


LORA = "LoRA r=8 q,v"
SERIAL = "serial adapter (Pfeiffer, reduction 16)"


def test_a_baseline_is_dominated_only_by_a_smaller_trial_with_a_mean_at_least_as_high(
    autopeft: Any,
) -> None:
    results = [
        reevaluation(0, 0.328, [0.78, 0.79, 0.78], label=LORA),
        reevaluation(1, 0.501, [0.77, 0.77, 0.78], label=SERIAL),
        # Equal mean to LoRA with fewer parameters: dominates (at least as high is enough).
        reevaluation(5, 0.200, [0.79, 0.78, 0.78]),
        # Higher mean but more parameters than LoRA: dominates the serial adapter only.
        reevaluation(6, 0.400, [0.80, 0.80, 0.80]),
        # Fewer parameters, lower mean: dominates nothing.
        reevaluation(7, 0.050, [0.70, 0.71, 0.72]),
    ]
    rows, checks = autopeft.report_rows(results, pareto={0, 6, 7})

    verdicts = {c["baseline"]: c for c in checks}
    assert verdicts[LORA]["dominated_by"] == [5]
    assert sorted(verdicts[SERIAL]["dominated_by"]) == [5, 6]
    assert verdicts[LORA]["required"] and verdicts[SERIAL]["required"]
    by_trial = {row["trial"]: row for row in rows}
    assert by_trial[5]["accuracy_mean"] == pytest.approx(0.7833333, abs=1e-6)
    assert by_trial[0]["pareto"] and not by_trial[5]["pareto"]
    # The front of the means: 7 (cheapest), 5 (ties LoRA's mean with fewer parameters), 6.
    assert {t for t, row in by_trial.items() if row["front_of_means"]} == {5, 6, 7}


def test_a_baseline_without_a_completed_seed_gets_no_verdict(autopeft: Any) -> None:
    failed = reevaluation(0, 0.328, [], label=LORA)
    failed.failed = {0: "RuntimeError: out of memory", 1: "RuntimeError: out of memory"}
    results = [failed, reevaluation(4, 0.1, [0.9, 0.9])]
    rows, checks = autopeft.report_rows(results, pareto={4})

    assert checks == [{"baseline": LORA, "required": True, "measured": False, "dominated_by": []}]
    lora = next(row for row in rows if row["trial"] == 0)
    assert lora["trainable_percent"] == 0.328  # the search's value: known before training
    assert math.isnan(lora["accuracy_mean"]) and not lora["front_of_means"]


def test_the_table_says_which_baselines_the_search_did_not_beat(autopeft: Any) -> None:
    results = [
        reevaluation(0, 0.328, [0.80, 0.80], label=LORA),
        reevaluation(3, 0.2, [0.79, 0.78]),
    ]
    rows, checks = autopeft.report_rows(results, pareto={0, 3})
    spec = type("Spec", (), {"study": "autopeft"})()
    args = type("Args", (), {"search_fidelity": False, "seeds": 2})()
    text = autopeft.render(spec, rows, checks, {"COMPLETE": 2}, None, 60.0, args)

    assert f"- {LORA} (required): NOT dominated by any re-evaluated search trial" in text
    assert "| 3 |  | yes | yes | 0.200 | 0.7500 | 0.7850 ± 0.0071 |" in text

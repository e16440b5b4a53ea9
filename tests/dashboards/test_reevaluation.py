from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from paretune.dashboards import (
    dominance_lines,
    reevaluation_line,
    reevaluation_table,
    write_reevaluation_csv,
)
from paretune.search import Outcome
from tests.dashboards.conftest import F0_MIN_ACC_MAX, read_table, reevaluation


def test_table_shows_search_values_beside_mean_and_std_over_seeds() -> None:
    r = reevaluation(
        7,
        {0: {"f0": 1.0, "accuracy": 0.8}, 1: {"f0": 2.0, "accuracy": 0.9}},
        values=[1.25, 0.85],
        params={"rank": 8, "lr": 0.001, "alpha": 16, "dropout": 0.1, "layers": "all"},
    )
    titles, [row] = read_table(reevaluation_table([r], F0_MIN_ACC_MAX))
    assert titles == [
        "trial", "baseline", "seeds", "f0 ↓ (search)", "f0 mean ± std", "accuracy ↑ (search)",
        "accuracy mean ± std", "params",
    ]  # fmt: skip
    assert row == {
        "trial": "7",
        "baseline": "",
        "seeds": "2",
        "f0 ↓ (search)": "1.25",
        "f0 mean ± std": "1.5 ± 0.71",
        "accuracy ↑ (search)": "0.85",
        "accuracy mean ± std": "0.85 ± 0.071",
        "params": "rank=8, lr=0.001, alpha=16, dropout=0.1, ... (+1)",
    }


def test_one_seed_shows_the_mean_alone_and_none_a_dash() -> None:
    one = reevaluation(1, {0: {"f0": 0.5, "accuracy": 0.7}})
    none = reevaluation(2, {})
    _, (row1, row2) = read_table(reevaluation_table([one, none], F0_MIN_ACC_MAX))
    assert (row1["seeds"], row1["f0 mean ± std"], row1["accuracy mean ± std"]) == (
        "1",
        "0.5",
        "0.7",
    )
    assert (row2["seeds"], row2["f0 mean ± std"], row2["accuracy mean ± std"]) == ("0", "-", "-")


def test_baseline_column_shows_the_label_or_yes() -> None:
    labelled = reevaluation(0, {}, label="full-ft", baseline=True)
    bare = reevaluation(1, {}, baseline=True)
    found = reevaluation(2, {})
    _, rows = read_table(reevaluation_table([labelled, bare, found], F0_MIN_ACC_MAX))
    assert [r["baseline"] for r in rows] == ["full-ft", "yes", ""]


def test_dominance_lines_judge_baselines_on_the_means() -> None:
    def runs(f0: tuple[float, float], acc: tuple[float, float]) -> dict[int, dict[str, float]]:
        return {i: {"f0": f0[i], "accuracy": acc[i]} for i in (0, 1)}

    base = reevaluation(0, runs((1.0, 1.2), (0.5, 0.5)), label="lora", baseline=True)  # 1.1, 0.5
    lonely = reevaluation(9, runs((0.0, 0.0), (1.0, 1.0)), baseline=True)
    results = [
        base,
        reevaluation(1, runs((1.0, 1.2), (0.6, 0.6))),  # better accuracy, same f0: dominates
        reevaluation(2, runs((0.9, 1.1), (0.5, 0.5))),  # lower f0, same accuracy: dominates
        reevaluation(3, runs((1.0, 1.2), (0.5, 0.5))),  # equal means: does not
        reevaluation(4, runs((0.5, 0.5), (0.4, 0.4))),  # a trade-off: does not
        reevaluation(5, {}),  # nothing completed: decides nothing
        lonely,
    ]
    assert dominance_lines(results, F0_MIN_ACC_MAX) == [
        "lora: dominated (mean over seeds) by trial(s) 1, 2",
        "trial 9: not dominated by any re-evaluated search trial",
    ]
    assert dominance_lines(results[1:6], F0_MIN_ACC_MAX) == []  # no baselines, no verdicts


def test_a_baseline_no_seed_completed_is_not_dominated() -> None:
    base = reevaluation(0, {}, label="lora", baseline=True)
    winner = reevaluation(1, {0: {"f0": -1e9, "accuracy": 1e9}})
    assert dominance_lines([base, winner], F0_MIN_ACC_MAX) == [
        "lora: not dominated by any re-evaluated search trial"
    ]


def test_progress_line_shows_the_metrics_or_the_last_error_line() -> None:
    r = reevaluation(12, {})
    done = Outcome("COMPLETE", metrics={"f0": 0.123456789, "accuracy": 0.5, "extra": 1.0})
    line = reevaluation_line(3, 8, r, 1, done, 41.4, metrics=F0_MIN_ACC_MAX)
    assert line == "[3/8] trial 12 seed 1: f0=0.123457, accuracy=0.5 (41 s)"
    failed = Outcome("FAIL", error="Traceback ...\n  ...\nRuntimeError: out of memory\n")
    line = reevaluation_line(4, 8, r, 2, failed, 3.0, metrics=F0_MIN_ACC_MAX)
    assert line == "[4/8] trial 12 seed 2: FAIL: RuntimeError: out of memory (3 s)"
    assert reevaluation_line(1, 1, r, 0, Outcome("FAIL"), 0.0, metrics=F0_MIN_ACC_MAX) == (
        "[1/1] trial 12 seed 0: FAIL:  (0 s)"
    )


def test_csv_has_one_row_per_run_with_extra_metrics_and_json_params(tmp_path: Path) -> None:
    base = reevaluation(
        0, {1: {"f0": 2.0, "accuracy": 0.5}}, params={"x": 0.0}, label="lora", baseline=True
    )
    found = reevaluation(
        5,
        {1: {"f0": 1.0, "accuracy": 0.7, "seconds": 3.0}, 0: {"f0": 1.5, "accuracy": 0.6}},
        params={"x": 0.25, "kind": "serial"},
    )
    path = tmp_path / "re.csv"
    write_reevaluation_csv([base, found], F0_MIN_ACC_MAX, path)
    with path.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == [
            "trial", "label", "baseline", "seed", "f0", "accuracy", "seconds", "params",
        ]  # fmt: skip
    assert [(r["trial"], r["seed"]) for r in rows] == [("0", "1"), ("5", "0"), ("5", "1")]
    assert rows[0]["label"] == "lora" and rows[0]["baseline"] == "True"
    assert rows[0]["seconds"] == "" and rows[2]["seconds"] == "3.0"
    assert rows[1]["label"] == "" and rows[1]["baseline"] == "False"
    assert json.loads(rows[1]["params"]) == {"x": 0.25, "kind": "serial"}
    assert math.isclose(float(rows[2]["accuracy"]), 0.7)

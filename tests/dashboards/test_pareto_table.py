from __future__ import annotations

from paretune.dashboards import pareto_table
from paretune.objectives import Metric
from tests.dashboards.conftest import F0_MIN_ACC_MAX, read_table, trial


def test_header_names_each_metric_with_its_direction() -> None:
    text = pareto_table([trial(4, [0.25, 0.9], {"x": 0.1})], F0_MIN_ACC_MAX)
    header, rule, row = text.splitlines()
    assert header.split() == ["trial", "f0", "↓", "accuracy", "↑", "params"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert row.split() == ["4", "0.25", "0.9", "x=0.1"]


def test_baseline_column_only_when_a_trial_carries_a_label() -> None:
    plain = [trial(1, [1.0, 0.5], {"x": 0.1}), trial(2, [0.5, 0.4], {"x": 0.2})]
    assert "baseline" not in pareto_table(plain, F0_MIN_ACC_MAX)
    # A baseline enqueued without a label does not add the column either.
    unlabelled = [trial(0, [2.0, 0.1], {"x": 0.0}, **{"paretune.baseline": True}), *plain]
    assert "baseline" not in pareto_table(unlabelled, F0_MIN_ACC_MAX)

    labelled = [trial(0, [2.0, 0.1], {"x": 0.0}, **{"paretune.label": "lora-r8"}), *plain]
    titles, rows = read_table(pareto_table(labelled, F0_MIN_ACC_MAX))
    assert titles == ["trial", "baseline", "f0 ↓", "accuracy ↑", "params"]
    assert [(r["trial"], r["baseline"], r["f0 ↓"]) for r in rows] == [
        ("0", "lora-r8", "2"),
        ("1", "", "1"),
        ("2", "", "0.5"),
    ]


def test_params_beyond_max_params_are_counted_not_shown() -> None:
    params = {f"p{i}": i for i in range(9)}
    text = pareto_table([trial(0, [1.0], params)], [Metric("loss", "minimize")])
    row = text.splitlines()[2]
    assert "p0=0, p1=1, p2=2, p3=3, p4=4, p5=5, ... (+3)" in row
    assert "p6" not in row
    short = pareto_table([trial(0, [1.0], params)], [Metric("loss", "minimize")], max_params=2)
    assert short.splitlines()[2].endswith("p0=0, p1=1, ... (+7)")

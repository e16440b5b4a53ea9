from __future__ import annotations

from paretune.dashboards import pareto_section, run_summary, status_summary, where_lines
from tests.dashboards.conftest import F0_MIN_ACC_MAX, trial

COUNTS = {"RUNNING": 0, "COMPLETE": 8, "PRUNED": 0, "FAIL": 1, "WAITING": 0}


def test_where_names_the_study_the_tracking_store_and_how_to_browse_them() -> None:
    text = where_lines(
        study="bbc", storage_url="sqlite:///run/study.db", tracking_uri="sqlite:///run/mlflow.db"
    )
    assert text.splitlines() == [
        "study:  bbc in sqlite:///run/study.db",
        "mlflow: sqlite:///run/mlflow.db (experiment 'bbc')",
        "        browse: mlflow ui --backend-store-uri sqlite:///run/mlflow.db",
        "        optuna-dashboard sqlite:///run/study.db",
    ]


def test_where_on_a_tracking_server_browses_the_server_itself() -> None:
    text = where_lines(study="bbc", storage_url="sqlite:///s.db", tracking_uri="http://m:5000")
    assert "        browse: http://m:5000" in text.splitlines()
    assert "mlflow ui" not in text


def test_where_without_mlflow_or_without_hints() -> None:
    untracked = where_lines(study="bbc", storage_url="sqlite:///s.db")
    assert untracked.splitlines() == [
        "study:  bbc in sqlite:///s.db",
        "        optuna-dashboard sqlite:///s.db",
    ]
    brief = where_lines(
        study="bbc", storage_url="sqlite:///s.db", tracking_uri="http://m:5000", hints=False
    )
    assert brief.splitlines() == ["study:  bbc in sqlite:///s.db", "mlflow: http://m:5000"]


def test_run_and_status_summaries_count_only_states_that_occur() -> None:
    assert run_summary(COUNTS, 12.34, interrupted=False) == "done in 12.3 s: 8 complete, 1 fail"
    assert run_summary(COUNTS, 5.0, interrupted=True).startswith("stopped in 5.0 s: ")
    assert status_summary("bbc", finished=9, total=60, counts=COUNTS).splitlines() == [
        "study 'bbc': 9 / 60 trials finished",
        "  complete=8, fail=1",
    ]
    no_budget = status_summary("bbc", finished=9, total=None, counts=COUNTS)
    assert no_budget.splitlines()[0] == "study 'bbc': 9 trials finished"


def test_pareto_section_counts_the_front_above_its_table() -> None:
    front = [trial(3, [0.5, 0.9], {"x": 0.1}), trial(8, [0.2, 0.7], {"x": 0.3})]
    lines = pareto_section(front, F0_MIN_ACC_MAX).splitlines()
    assert lines[0] == "Pareto front (2 trial(s)):"
    assert lines[1].startswith("trial") and len(lines) == 5
    assert pareto_section([], F0_MIN_ACC_MAX).splitlines()[0] == "Pareto front (0 trial(s)):"

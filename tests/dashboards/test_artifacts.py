"""The study's tables on its MLflow parent run, in a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretune.dashboards import log_study_tables
from paretune.trials_store import MlflowLink

TRIALS = "number,state,metric_f0,param_x,pareto\n0,COMPLETE,0.5,0.1,True\n1,FAIL,,0.9,False\n"
PARETO = "number,state,metric_f0,param_x,pareto\n0,COMPLETE,0.5,0.1,True\n"


@pytest.fixture
def link(tmp_path: Path) -> MlflowLink:
    return MlflowLink(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        experiment="tables",
        artifact_location=(tmp_path / "mlartifacts").as_uri(),
    )


def _artifacts(link: MlflowLink, run_id: str, tmp_path: Path) -> dict[str, str]:
    from mlflow.artifacts import download_artifacts

    names = [a.path for a in link.client.list_artifacts(run_id)]
    out = {}
    for name in names:
        local = download_artifacts(
            run_id=run_id,
            artifact_path=name,
            dst_path=str(tmp_path / "dl"),
            tracking_uri=link.tracking_uri,
        )
        out[name] = Path(local).read_text(encoding="utf-8")
    return out


def test_parent_run_gets_trials_and_pareto_csv(link: MlflowLink, tmp_path: Path) -> None:
    run_id = link.start_parent(study_name="tables", run_id=None, tags={})
    log_study_tables(link, run_id, trials_csv=TRIALS, pareto_csv=PARETO)
    assert _artifacts(link, run_id, tmp_path) == {"trials.csv": TRIALS, "pareto.csv": PARETO}
    assert (tmp_path / "mlartifacts").is_dir()  # where the experiment keeps them


def test_logging_again_replaces_the_tables_even_after_the_run_ended(
    link: MlflowLink, tmp_path: Path
) -> None:
    run_id = link.start_parent(study_name="tables", run_id=None, tags={})
    log_study_tables(link, run_id, trials_csv=TRIALS, pareto_csv=PARETO)
    link.end_parent(run_id)
    more = TRIALS + "2,COMPLETE,0.4,0.2,True\n"
    log_study_tables(link, run_id, trials_csv=more, pareto_csv=PARETO)
    assert _artifacts(link, run_id, tmp_path) == {"trials.csv": more, "pareto.csv": PARETO}
    assert link.client.get_run(run_id).info.status == "FINISHED"


def _study(*, constraints=()):
    import optuna

    from paretune.dashboards import StudyData

    from .conftest import F0_MIN_ACC_MAX, trial

    done = [
        trial(0, [1.0, 0.5], {"x": 0.1}, **{"paretune.metrics": {"f0": 1.0, "accuracy": 0.5}}),
        trial(1, [2.0, 0.9], {"x": 0.2}, **{"paretune.metrics": {"f0": 2.0, "accuracy": 0.9}}),
        trial(2, [3.0, 0.4], {"x": 0.3}, **{"paretune.metrics": {"f0": 3.0, "accuracy": 0.4}}),
        trial(3, [0.5, 0.95], {"x": 0.4}, **{"paretune.metrics": {"f0": 0.5, "accuracy": 0.95}}),
    ]
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    failed.number = 4
    return StudyData(
        name="summary",
        metrics=F0_MIN_ACC_MAX,
        trials=(*done, failed),
        constraints=constraints,
        reference_point={"f0": 4.0, "accuracy": 0.0},
    )


def test_the_summary_counts_states_and_gives_the_best_values_and_the_hypervolume() -> None:
    from paretune.dashboards import study_summary

    summary = study_summary(_study())
    assert summary == {
        "trials": 5, "trials_complete": 4, "trials_pruned": 0, "trials_fail": 1,
        "trials_running": 0, "trials_waiting": 0, "pareto_trials": 1,
        "best_f0": 0.5, "best_accuracy": 0.95,
        "hypervolume": pytest.approx((4.0 - 0.5) * 0.95),  # trial 3 dominates the others
    }  # fmt: skip


def test_infeasible_trials_count_in_states_only() -> None:
    from paretune.dashboards import study_summary
    from paretune.trials_store import Constraint

    summary = study_summary(_study(constraints=(Constraint("accuracy", max=0.92),)))
    assert summary["trials_complete"] == 4
    assert summary["best_accuracy"] == 0.9 and summary["best_f0"] == 1.0
    # Trials 0 and 1 are the front of the feasible ones: [1, 4) x [0, 0.5) and [2, 4) x [0.5, 0.9).
    assert summary["hypervolume"] == pytest.approx(3.0 * 0.5 + 2.0 * 0.4)
    assert summary["pareto_trials"] == 2


def test_the_summary_and_the_spec_go_to_the_parent_run(link: MlflowLink, tmp_path: Path) -> None:
    from paretune.dashboards import log_spec, log_study_summary

    run_id = link.start_parent(study_name="tables", run_id=None, tags={})
    log_spec(link, run_id, "study: tables\n")
    logged = log_study_summary(link, run_id, _study())
    run = link.client.get_run(run_id)
    assert run.data.metrics == pytest.approx(logged)
    assert run.data.tags["paretune.hypervolume_reference"] == "f0=4, accuracy=0"
    history = link.client.get_metric_history(run_id, "hypervolume")
    assert [m.step for m in history] == [5]  # the study's number of trials
    assert _artifacts(link, run_id, tmp_path) == {"spec.yaml": "study: tables\n"}

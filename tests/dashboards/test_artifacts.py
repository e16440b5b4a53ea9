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

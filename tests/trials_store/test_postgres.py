"""The study on PostgreSQL: a real server on 127.0.0.1 (see ``postgres_server`` in
tests/conftest.py), the local runner's workers, resume, two drivers on one study, the CLI.

Skipped, with the reason, only where PostgreSQL or psycopg2 is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from paretune._errors import StudyError
from paretune.cli import main
from paretune.search import run_search
from paretune.spec import load_spec
from tests.conftest import counting_spec, loss_spec

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _evaluations(counter: Path) -> list[dict]:
    if not counter.exists():
        return []
    return [json.loads(line) for line in counter.read_text().splitlines() if line.strip()]


def _states(url: str, study: str) -> dict[str, int]:
    trials = optuna.load_study(study_name=study, storage=url).trials
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.slow
def test_a_search_on_postgresql_spends_its_budget_and_resume_adds_only_the_rest(
    tmp_path: Path, counting_objective, postgres_url: str
) -> None:
    data = counting_spec(
        tmp_path, counting_objective, trials=6, n_jobs=2, sleep=0.1, wait_for_drivers=2
    )
    data["storage"] = postgres_url
    result = run_search(load_spec(data).plan())
    assert result.store.storage_url == postgres_url
    assert result.counts["COMPLETE"] == 6 and result.counts["RUNNING"] == 0

    # The record is in PostgreSQL (nothing went to a SQLite file), as another process sees it.
    assert not (tmp_path / "run" / "study.db").exists()
    study = optuna.load_study(study_name="counting", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == len(complete) == 6
    evaluations = _evaluations(counting_objective[1])
    assert sorted(line["trial"] for line in evaluations) == list(range(6))
    assert len({line["pid"] for line in evaluations}) == 2  # both workers wrote to the study
    done_before = [t.params for t in complete]

    more = data | {"budget": {"trials": 9}, "runner": {"type": "local", "n_jobs": 1}}
    resumed = run_search(load_spec(more).plan(), resume=True)
    assert resumed.counts["COMPLETE"] == 9 and resumed.recovered == []
    study = optuna.load_study(study_name="counting", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 9
    evaluations = _evaluations(counting_objective[1])
    assert sorted(line["trial"] for line in evaluations) == list(range(9))  # 3 more, once each
    for line in evaluations[6:]:
        assert line["params"] not in done_before


@pytest.mark.slow
def test_two_drivers_on_one_postgresql_study_stop_together_at_the_budget(
    tmp_path: Path, counting_objective, postgres_url: str
) -> None:
    budget, counter = 8, counting_objective[1]
    # Each driver's first trial waits until the other driver evaluates too: on a busy machine
    # the second one's start-up can take longer than the first one's whole budget.
    data = counting_spec(tmp_path, counting_objective, trials=budget, sleep=1.0, wait_for_drivers=2)
    data["storage"] = postgres_url
    path = _write(tmp_path, data)
    cmd = [sys.executable, "-m", "paretune.cli", "run", str(path), "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        # The second driver starts once the first has created the study and is evaluating.
        deadline = time.monotonic() + 120
        while not Path(f"{counter}.started").exists():
            assert procs[0].poll() is None, procs[0].communicate()[1].decode()
            assert time.monotonic() < deadline, "the first driver evaluated nothing"
            time.sleep(0.05)
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
        errors = [proc.communicate(timeout=120)[1].decode() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first, second = procs
    assert first.returncode == 0, errors[0]
    assert second.returncode == 0, errors[1]

    study = optuna.load_study(study_name="counting", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # LocalRunner: several drivers stop together at the budget, give or take one trial each.
    assert budget <= len(complete) <= budget + 2
    assert len(study.trials) == len(complete)  # nothing failed, nothing left RUNNING
    # No completed trial was lost or evaluated twice: one evaluation per trial, and each
    # trial holds the values its own evaluation computed.
    evaluations = _evaluations(counter)
    assert sorted(line["trial"] for line in evaluations) == [t.number for t in complete]
    by_trial = {line["trial"]: line for line in evaluations}
    for t in complete:
        assert by_trial[t.number]["params"] == t.params
    assert len({line["pid"] for line in evaluations}) == 2  # both drivers evaluated trials


@pytest.mark.slow
def test_status_and_export_read_a_postgresql_study_whose_workers_reported_curves(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = """
        def objective(params, ctx):
            for step in range(3):
                ctx.report(step, {"loss": params["x"] + 1.0 / (step + 1)})
            return {"loss": params["x"]}
    """
    data = loss_spec(
        tmp_path, source, study="curves", trials=4, storage=postgres_url, runner={"n_jobs": 2}
    )
    path = _write(tmp_path, data)
    assert main(["status", str(path)]) == 1  # no study yet
    assert "no study named 'curves'" in capsys.readouterr().err
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    # The worker processes wrote the reports into PostgreSQL as intermediate values.
    study = optuna.load_study(study_name="curves", storage=postgres_url)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in study.trials)

    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 / 4 trials finished" in out and "complete=4" in out
    assert f"study:  curves in {postgres_url}" in out
    out_json = tmp_path / "trials.json"
    assert main(["export", str(path), "--format", "json", "-o", str(out_json)]) == 0
    records = json.loads(out_json.read_text())
    assert [r["number"] for r in records] == list(range(4))
    assert all(r["state"] == "COMPLETE" for r in records)
    assert [r["values"]["loss"] for r in records] == [t.values[0] for t in study.trials]
    assert _states(postgres_url, "curves") == {"COMPLETE": 4}


def test_a_missing_postgresql_database_is_a_study_error(postgres_server, tmp_path: Path) -> None:
    data = loss_spec(
        tmp_path, "def objective(params, ctx): return {'loss': 0.0}", study="s", trials=1
    )
    data["storage"] = postgres_server.url("no_such_database")
    with pytest.raises(StudyError, match=r"cannot open the study storage .*no_such_database"):
        run_search(load_spec(data).plan())


OPEN_AT = """
import sys, time
from paretune.spec import load_spec
from paretune.trials_store import TrialsStore

start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
store = TrialsStore(load_spec(sys.argv[1]).study_config())
store.start()
print("opened", store.study.study_name)
print("parent", store.parent_run_id)
store.close()
"""


@pytest.mark.slow
def test_two_drivers_opening_a_new_study_at_the_same_moment_both_succeed(
    tmp_path: Path, counting_objective, postgres_url: str
) -> None:
    """Both create Optuna's tables in the empty database and the MLflow store in the run
    directory at once: the loser of each race tries again instead of failing. They share one
    MLflow parent run: the driver that created the study made it, the other waited for it."""
    from mlflow import MlflowClient

    data = counting_spec(tmp_path, counting_objective)
    data["storage"] = postgres_url
    path = _write(tmp_path, data)
    start = time.time() + 8  # both processes have imported everything by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, str(path), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    parents = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "opened counting" in out
        parents.update(line.split()[1] for line in out.splitlines() if line.startswith("parent"))
    study = optuna.load_study(study_name="counting", storage=postgres_url)
    assert study.trials == []
    assert parents == {study.user_attrs["paretune.mlflow_parent_run_id"]}
    client = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("counting")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == list(parents)

"""The MLflow tracking server dies mid-search and comes back: nothing is lost.

A real ``mlflow server`` (tests/trials_store/mlflow_server.py) tracks a search over HTTP; a
watcher thread kills it (SIGKILL, the whole process group) once trials have completed, and
starts it again on the same port and store once more have completed without it. The search
must go on while it is down, log what it missed once it is back (every trial: one finished
child run with its final metrics), and, when it ends with the server down, list what is not
logged in ``paretune status`` until ``paretune resume`` logs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from paretune.cli import main
from paretune.search import run_search
from paretune.spec import load_spec
from paretune.trials_store import _store_runs
from tests.conftest import counting_spec
from tests.trials_store.mlflow_server import MlflowServer, start_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[MlflowServer]:
    running = start_server()
    yield running
    running.stop()


def _complete(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="counting", storage=storage)
    except Exception:  # not created yet, or the search is creating its tables right now
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _when(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _check_every_trial_logged(storage: str, tracking_uri: str) -> None:
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="counting", storage=storage)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("counting")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_trial: dict[str, list] = {}
    for run in runs:
        if "paretune.trial_id" in run.data.tags:
            by_trial.setdefault(run.data.tags["paretune.trial_id"], []).append(run)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert complete
    for t in complete:
        found = by_trial.get(str(t._trial_id), [])
        assert len(found) == 1, f"trial {t.number}: {len(found)} runs"
        run = found[0]
        assert run.info.status == "FINISHED", f"trial {t.number}: run {run.info.status}"
        assert run.data.tags["paretune.state"] == "COMPLETE"
        assert [run.data.metrics.get("f0"), run.data.metrics.get("f1")] == t.values


def test_a_search_goes_on_through_an_mlflow_outage_and_logs_what_it_missed(
    tmp_path: Path, counting_objective, server: MlflowServer, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(_store_runs, "_TRACKING_RETRY_S", 1.0)
    # Trials 8 and later wait for the gate: the search cannot end before the server is back.
    gate = tmp_path / "gate"
    data = counting_spec(
        tmp_path, counting_objective, trials=16, sleep=0.2, gate=str(gate), gate_from=8
    )
    data["tracking_uri"] = server.uri
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    outage: dict[str, int] = {}

    failures: list[BaseException] = []

    def watcher() -> None:
        try:
            _when(lambda: _complete(storage) >= 3, 300, "3 trials")
            server.kill()
            outage["killed_at"] = _complete(storage)
            more = outage["killed_at"] + 3
            _when(lambda: _complete(storage) >= more, 300, "3 trials without MLflow")
            server.restart()
            outage["restarted_at"] = _complete(storage)
        except BaseException as err:  # reported below; the gated trials must not wait on it
            failures.append(err)
        finally:
            gate.touch()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    result = run_search(load_spec(data).plan())
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert not failures, failures
    assert result.counts["COMPLETE"] == 16
    assert outage["restarted_at"] <= 8  # the server came back while the search ran
    _check_every_trial_logged(storage, server.uri)

    # The server dies in a search that ends before it is back: `status` lists what is not
    # logged, and the next `resume` logs it.
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data | {"budget": {"trials": 19}}))

    def killer() -> None:
        _when(lambda: _complete(storage) >= 17, 120, "the resumed search's first trial")
        server.kill()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    assert main(["resume", str(spec_path), "--no-progress"]) == 0
    thread.join(timeout=60)
    assert _complete(storage) == 19
    server.restart()
    missing = _not_logged(storage, server.uri)
    assert missing and missing[-1] == 18
    capsys.readouterr()
    assert main(["status", str(spec_path)]) == 0
    listed = ", ".join(f"t{n:03d}" for n in missing)
    line = f"not in MLflow yet: {len(missing)} finished trials ({listed})"
    assert line in capsys.readouterr().out
    assert main(["resume", str(spec_path), "--no-progress"]) == 0
    _check_every_trial_logged(storage, server.uri)
    capsys.readouterr()
    assert main(["status", str(spec_path)]) == 0
    assert "not in MLflow yet" not in capsys.readouterr().out


def _not_logged(storage: str, tracking_uri: str) -> list[int]:
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="counting", storage=storage)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("counting")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    finished = {r.data.tags.get("paretune.trial_id") for r in runs if r.info.status == "FINISHED"}
    return [t.number for t in study.trials if str(t._trial_id) not in finished]

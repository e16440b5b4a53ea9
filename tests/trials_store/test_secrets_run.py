"""A search whose storage and tracking URLs carry passwords shows them nowhere.

The study is on PostgreSQL (``postgresql://postgres:PASSWORD@...``; the test server trusts
127.0.0.1, so any password connects) and tracked by an ``mlflow server`` reached as
``http://paretune:PASSWORD@...``. The search runs on the Ray runner (whose trial directories
and experiment state Tune writes into the run directory), then ``status``, ``export`` (CSV and
JSON) and ``report`` run, each as users run them: the ``paretune`` command in a process of its
own. Neither password may appear in anything they print, in any file of the run directory, the
exports or the report, in any MLflow parameter, tag or artifact, or in the tracking server's
store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import counting_spec
from tests.trials_store.mlflow_server import MlflowServer, start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[MlflowServer]:
    running = start_server()
    yield running
    running.stop()


def _paretune(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "paretune.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"paretune {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _files_holding(root: Path, secrets: list[str], *, skip: set[Path]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip:
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_passwords_in_the_storage_and_tracking_urls_appear_in_no_output(
    tmp_path: Path, counting_objective, postgres_url: str, server: MlflowServer
) -> None:
    from mlflow import MlflowClient

    db_password = f"Db{uuid.uuid4().hex[:12]}"
    tracking_password = f"Ml{uuid.uuid4().hex[:12]}"
    secrets = [db_password, tracking_password]
    user, rest = postgres_url.split("://", 1)[1].split("@", 1)
    scheme = postgres_url.split("://", 1)[0]
    data = counting_spec(tmp_path, counting_objective, trials=4)
    data["storage"] = f"{scheme}://{user}:{db_password}@{rest}"
    data["tracking_uri"] = server.uri.replace("http://", f"http://paretune:{tracking_password}@")
    data["runner"] = {"type": "ray", "num_cpus": 2}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))

    shown = _paretune("run", str(spec), "--no-progress", cwd=tmp_path)
    assert "4 complete" in shown or "COMPLETE" in shown.upper()
    shown += _paretune("status", str(spec), cwd=tmp_path)
    shown += _paretune("export", str(spec), "--format", "csv", "-o", "trials.csv", cwd=tmp_path)
    shown += _paretune("export", str(spec), "--format", "json", "-o", "trials.json", cwd=tmp_path)
    shown += _paretune("report", str(spec), "-o", "report.html", cwd=tmp_path)
    # The URLs are there, masked: the user sees where the study is.
    assert f"{user}:***@" in shown
    for secret in secrets:
        assert secret not in shown

    assert (tmp_path / "trials.csv").stat().st_size > 0
    assert (tmp_path / "report.html").stat().st_size > 0
    assert any((tmp_path / "run").rglob("params.pkl"))  # Tune wrote its trial directories
    assert _files_holding(tmp_path, secrets, skip={spec}) == []
    assert _files_holding(server.root, secrets, skip=set()) == []  # runs, tags, artifacts

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("counting")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == 5  # the study's run and its 4 trials'
    for run in runs:
        texts = [*run.data.params.values(), *run.data.tags.values(), *run.data.params]
        assert not [t for t in texts for s in secrets if s in t], run.info.run_name
    parent = next(r for r in runs if r.data.tags.get("paretune.role") == "study")
    assert parent.data.tags["paretune.storage"] == f"{scheme}://{user}:***@{rest}"

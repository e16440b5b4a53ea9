"""The Ray runner on a cluster of two nodes, as a user runs it on two machines: ``ray start
--head`` and ``ray start --address`` (here both on 127.0.0.1, told apart by their node names),
the study in PostgreSQL, the runs on an ``mlflow server`` over HTTP, and ``paretune run`` with
``address: auto``. The second node's raylet is killed with SIGKILL mid-search: its trial is
retried on the head, and the budget is met with every trial recorded once.

Every process the test starts (the Ray nodes, PostgreSQL, the MLflow server, the driver) is
stopped by its own process or session id, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import xy_spec
from tests.search.ray_cluster import NODE_ENV, RayCluster, start_cluster
from tests.test_cli import ROOT, _mlflow_runs
from tests.trials_store.mlflow_server import MlflowServer
from tests.trials_store.mlflow_server import start_server as start_mlflow

pytest.importorskip("ray.tune")

pytestmark = pytest.mark.xdist_group("ray")

# Token authentication (Ray 2.60 turns it on when ~/.ray/auth_token exists) would need the
# token on every node; the test's cluster is reachable from this machine only.
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}

NODE_OBJECTIVE = """
    import json, os, time

    def objective(params, ctx):
        line = {
            "trial": ctx.trial_number,
            "node": os.environ.get("PARETUNE_TEST_NODE", "?"),
            "pid": os.getpid(),
            "params": params,
            "time": time.time(),
        }
        log = ctx.settings["log"]
        with open(log + ".started", "a") as f:
            f.write(json.dumps(line) + "\\n")
        ctx.report(0, {"partial": params["x"]})
        deadline = time.time() + ctx.settings["seconds"]
        while time.time() < deadline:  # killed in here, after the report of step 0
            time.sleep(0.05)
        ctx.report(1, {"partial": params["x"] + 1})
        with open(log, "a") as f:
            f.write(json.dumps(line) + "\\n")
        return {"f0": (params["x"] - 0.3) ** 2 + params["y"], "f1": (params["x"] - 0.7) ** 2}
"""


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def mlflow_server() -> Iterator[MlflowServer]:
    server = start_mlflow()
    try:
        yield server
    finally:
        server.stop()
        assert not server.processes()


@pytest.fixture
def two_nodes() -> Iterator[RayCluster]:
    """A head with 1 CPU and a node ``second`` with 1 CPU and a resource of its own."""
    cluster = start_cluster(num_cpus=1, env=RAY_ENV)
    try:
        cluster.add_node("second", num_cpus=1, resources={"second": 1})
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.leftovers()


def _wait_for(condition, *, what: str, timeout: float, driver: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if driver.poll() is not None:
            pytest.fail(f"the search ended before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_search_on_two_nodes_survives_the_kill_of_one(
    tmp_path: Path, postgres_url: str, mlflow_server: MlflowServer, two_nodes: RayCluster
) -> None:
    t0 = time.monotonic()
    budget = 8
    source = tmp_path / "node_objective.py"
    source.write_text(textwrap.dedent(NODE_OBJECTIVE))
    log = tmp_path / "evaluations.jsonl"
    started = Path(f"{log}.started")
    spec = xy_spec(
        tmp_path, f"{source}:objective", study="two-nodes", trials=budget, log=str(log), seconds=2.0
    )
    spec["storage"] = postgres_url
    spec["tracking_uri"] = mlflow_server.uri
    spec["runner"] = {
        "type": "ray",
        "address": "auto",
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "max_failures": 2,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    # `address: auto` finds the cluster as on a cluster's machine: through RAY_ADDRESS here
    # (not /tmp/ray's record of the latest cluster, which another cluster may have written).
    driver_log = tmp_path / "driver.log"
    env = {**two_nodes.env, "RAY_ADDRESS": two_nodes.address}
    env.pop(NODE_ENV, None)
    with open(driver_log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "paretune.cli", "run", str(path), "--no-progress"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    phases = {"set-up": time.monotonic() - t0}
    try:
        t1 = time.monotonic()

        def second_busy_again() -> dict | None:
            # A trial of the second node finished, and a later one began there less than a
            # second ago (of its 2 s): killed now, it is killed inside the objective.
            begun = _lines(started)  # read before the finished ones: still running below
            done = _lines(log)
            if not any(line["node"] == "second" for line in done):
                return None
            finished = {line["trial"] for line in done}
            running = [
                line
                for line in begun
                if line["node"] == "second"
                and line["trial"] not in finished
                and time.time() - line["time"] < 1.0
            ]
            return running[-1] if running else None

        victim = _wait_for(
            second_busy_again,
            what="trial running on the second node after one finished there",
            timeout=240,
            driver=driver,
            log=driver_log,
        )
        raylet = two_nodes.raylet_pid("second")
        assert raylet is not None
        os.kill(raylet, signal.SIGKILL)
        phases["until the kill"] = time.monotonic() - t1

        t2 = time.monotonic()
        code = driver.wait(timeout=300)
        phases["after the kill"] = time.monotonic() - t2
        output = driver_log.read_text()
        assert code == 0, output[-4000:]
    finally:
        if driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    t3 = time.monotonic()
    # The study: the budget exactly, nothing left running.
    study = optuna.load_study(study_name="two-nodes", storage=postgres_url)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == budget, states
    assert not states[TrialState.RUNNING] and not states[TrialState.WAITING], states
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]

    # The killed trial was retried on the head and recorded once; no other trial was retried.
    victims = {victim["trial"]}
    retried = {t.number for t in study.trials if "paretune.retries" in t.user_attrs}
    assert retried == victims, (retried, victims)
    evaluations = _lines(log)
    finished = Counter(line["trial"] for line in evaluations)
    assert set(finished) == {t.number for t in complete}
    assert all(n == 1 for n in finished.values()), finished  # every trial evaluated once...
    attempts = Counter(line["trial"] for line in _lines(started))
    assert {n for n, k in attempts.items() if k > 1} <= victims  # ...the killed one twice
    retry = next(line for line in evaluations if line["trial"] == victim["trial"])
    assert retry["node"] == "head" and attempts[victim["trial"]] == 2
    # No parameters evaluated twice under two trial numbers.
    params = [json.dumps(line["params"], sort_keys=True) for line in evaluations]
    assert len(set(params)) == len(params)
    assert {line["node"] for line in evaluations} == {"head", "second"}

    # MLflow: one finished child run per trial, with its final metrics, tagged by its node.
    parents, children = _mlflow_runs(mlflow_server.uri, "two-nodes")
    assert len(parents) == 1
    by_trial = Counter(c.data.tags["paretune.trial"] for c in children)
    assert sorted(int(n) for n in by_trial) == sorted(t.number for t in complete), by_trial
    assert all(n == 1 for n in by_trial.values()), by_trial
    nodes = {}
    for child in children:
        number = int(child.data.tags["paretune.trial"])
        assert child.info.status == "FINISHED", number
        assert child.data.tags["paretune.state"] == "COMPLETE", number
        assert {"f0", "f1"} <= set(child.data.metrics), number
        trial = study.trials[number]
        assert child.data.metrics["f0"] == pytest.approx(trial.values[0])
        nodes[number] = child.data.tags["paretune.node"]
        assert child.data.tags.get("paretune.node_id")
    # Every trial's steps are logged once; the killed trial's too (reported on both nodes).
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    steps = {
        int(c.data.tags["paretune.trial"]): sorted(
            m.step for m in client.get_metric_history(c.info.run_id, "partial")
        )
        for c in children
    }
    assert all(s == [0, 1] for s in steps.values()), (steps, victim["trial"])
    names = {n: ("second" if " node second " in tag else "head") for n, tag in nodes.items()}
    assert all(" node head " in tag or " node second " in tag for tag in nodes.values()), nodes
    assert set(names.values()) == {"head", "second"}
    for line in evaluations:  # the tag names the node that ran the recorded evaluation
        assert names[line["trial"]] == line["node"], (line, nodes[line["trial"]])
    phases["checks"] = time.monotonic() - t3
    phases["test"] = time.monotonic() - t0
    print("phases (s):", {k: round(v, 1) for k, v in phases.items()})

"""The Ray runner: the same study and MLflow runs as the local runner, fractional GPUs, retries
of dead workers, kill -9 and Ctrl-C of the driver, ASHA.

Every test starts a local Ray cluster with 2 CPUs (the runner's ``num_cpus``) and no dashboard,
and the runner shuts it down when the search ends.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from paretune import SearchFailed
from paretune.search import run_search
from paretune.spec import load_spec
from tests.conftest import counting_spec, loss_spec
from tests.search.ray_cluster import stop_group, wait_unreaped
from tests.test_cli import (
    ROOT,
    _evaluations,
    _mlflow_runs,
    _wait_inside_objective,
    run_cli,
    start_run,
    write,
)

pytest.importorskip("ray.tune")

# One xdist worker runs them all, one after the other: two local Ray clusters at once on a
# 2-core machine would each get half of it.
pytestmark = pytest.mark.xdist_group("ray")

RAY = {"type": "ray", "num_cpus": 2}


def _overlapping(trials: list) -> int:
    """The largest number of trials that ran at one moment."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials],
        key=lambda e: (e[0], e[1]),
    )
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    return most


@pytest.mark.slow
def test_quickstart_on_ray_fills_the_same_study_and_nests_mlflow_runs(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["run_dir"] = str(tmp_path / "run")
    spec["runner"] = {**RAY, "max_concurrent": 2}
    result = run_search(load_spec(spec).plan())
    budget = spec["budget"]["trials"]
    assert result.counts["COMPLETE"] == budget and not result.counts["RUNNING"]

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/run/study.db")
    assert len(study.trials) == budget
    assert all(t.user_attrs["paretune.metrics"].keys() == {"f0", "f1"} for t in study.trials)

    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/run/mlflow.db", "quickstart")
    assert len(parents) == 1 and len(children) == budget
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(int(c.data.tags["paretune.trial"]) for c in children) == list(range(budget))
    for child in children:
        assert set(child.data.params) == {"x0", "x1"}
        assert {"f0", "f1"} <= set(child.data.metrics)
        assert child.data.tags["paretune.state"] == "COMPLETE"
        assert child.info.status == "FINISHED"
        # Evaluated in a Ray worker, not in the driver.
        node = child.data.tags["paretune.node"]
        assert f"pid {os.getpid()}" not in node
        assert len(child.data.tags["paretune.node_id"]) == 56  # Ray's node id, in hex


SHARED_GPU = """
    import glob, json, os, time

    def objective(params, ctx):
        import ray

        folder = ctx.settings["folder"]
        start = time.time()
        with open(os.path.join(folder, f"started-{ctx.trial_number}"), "w") as f:
            f.write(params["model"])
        together = 1
        if params["model"] == "proxy" and ctx.trial_number < 4:
            # The four enqueued proxies wait for each other: they all finish only if Ray ran
            # four of them at once on the one GPU.
            deadline = time.time() + 90
            while time.time() < deadline:
                together = len(glob.glob(os.path.join(folder, "started-[0-3]")))
                if together == 4:
                    break
                time.sleep(0.05)
        time.sleep(0.5)
        record = {
            "trial": ctx.trial_number, "model": params["model"], "start": start,
            "end": time.time(), "together": together, "gpus": ray.get_gpu_ids(),
        }
        with open(os.path.join(folder, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\\n")
        return {"loss": params["x"]}
"""


@pytest.mark.slow
def test_ray_workers_share_a_postgresql_study(tmp_path: Path, postgres_url: str) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec.update(run_dir=str(tmp_path / "run"), storage=postgres_url, budget={"trials": 8})
    spec["runner"] = {**RAY, "max_concurrent": 2}
    result = run_search(load_spec(spec).plan())
    assert result.counts["COMPLETE"] == 8
    study = optuna.load_study(study_name="quickstart", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    assert not (tmp_path / "run" / "study.db").exists()


@pytest.mark.slow
def test_fractional_gpus_run_four_trials_on_one_gpu(tmp_path: Path) -> None:
    """`gpu: 0.25` puts four trials on one GPU at once; a `when` rule gives the `target`
    candidates the whole GPU, so they run alone. (Ray schedules a declared GPU the same way
    on a machine without one, which is what makes this testable on CPU.)"""
    runner = {
        **RAY,
        "num_cpus": 4,
        "num_gpus": 1,
        "resources": {"cpu": 0.5, "gpu": 0.25, "when": [{"params": {"model": "target"}, "gpu": 1}]},
    }
    data = loss_spec(tmp_path, SHARED_GPU, study="gpus", trials=8, runner=runner)
    data["objective"]["settings"]["folder"] = str(tmp_path)
    data["space"]["model"] = {"type": "categorical", "choices": ["proxy", "target"]}
    data["enqueue"] = [{"x": 0.1 * i, "model": "proxy"} for i in range(4)] + [
        {"x": 0.9, "model": "target"}
    ]
    result = run_search(load_spec(data).plan())
    assert result.counts["COMPLETE"] == 8
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first = [r for r in log if r["trial"] < 4]
    assert len(first) == 4 and all(r["together"] == 4 for r in first)
    assert all(r["gpus"] == [0] or r["gpus"] == ["0"] for r in log)  # one GPU, shared
    targets = [r for r in log if r["model"] == "target"]
    assert targets
    for t in targets:  # a whole GPU: nothing else ran meanwhile
        for o in log:
            if o is not t:
                assert o["end"] <= t["start"] or o["start"] >= t["end"], (t, o)


WORKER_KILLED_ONCE = """
    import json, os, time

    def objective(params, ctx):
        marker = ctx.settings["marker"]
        with open(marker + ".started", "a") as f:
            f.write(f"{ctx.trial_number}\\n")
        for step in range(3):
            ctx.report(step, {"partial": params["x"] + step})
        if ctx.trial_number == 1 and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)  # killed here
        return {"loss": params["x"]}
"""


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_trial_recorded_once(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    data = loss_spec(
        tmp_path, WORKER_KILLED_ONCE, study="killed", trials=4, runner={**RAY, "max_failures": 2}
    )
    data["objective"]["settings"]["marker"] = str(marker)

    def kill_when_written() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                time.sleep(0.3)
                os.kill(int(marker.read_text()), signal.SIGKILL)  # the worker, mid-trial
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_written, daemon=True)
    killer.start()
    result = run_search(load_spec(data).plan())
    killer.join(timeout=1)

    counts = result.counts
    assert counts["COMPLETE"] == 4 and counts["FAIL"] == 0 and not counts["RUNNING"]
    trials = result.store.study.trials
    assert len(trials) == 4
    started = Path(f"{marker}.started").read_text().split()
    assert started.count("1") == 2  # trial 1 ran twice: killed, then retried
    assert trials[1].user_attrs["paretune.retries"] == 1
    assert all("paretune.retries" not in t.user_attrs for t in trials if t.number != 1)

    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path}/run/mlflow.db"
    _, children = _mlflow_runs(tracking, "killed")
    assert len(children) == 4  # one child run per trial, the retried one included
    retried = next(c for c in children if c.data.tags["paretune.trial"] == "1")
    assert retried.info.status == "FINISHED"
    # The retry reported steps 0-2 again; each is logged once.
    history = MlflowClient(tracking_uri=tracking).get_metric_history(retried.info.run_id, "partial")
    assert sorted(m.step for m in history) == [0, 1, 2]


@pytest.mark.slow
def test_an_objective_error_fails_its_trial_without_retries(tmp_path: Path, monkeypatch) -> None:
    source = """
        def objective(params, ctx):
            if params["x"] > 0.5:
                raise ValueError("x too large")
            return {"loss": params["x"]}
    """
    data = loss_spec(tmp_path, source, study="errors", trials=6, seed=1, runner=RAY)
    # A relative objective file: trials work in the driver's directory, not Tune's.
    monkeypatch.chdir(tmp_path)
    data["objective"]["settings"]["target"] = "errors_objective.py:objective"
    result = run_search(load_spec(data).plan())
    failed = [t for t in result.store.study.trials if t.state == TrialState.FAIL]
    assert failed and result.counts["COMPLETE"] + len(failed) == 6
    for t in failed:
        assert "ValueError: x too large" in t.user_attrs["paretune.error"]
        assert "paretune.retries" not in t.user_attrs


@pytest.mark.slow
def test_asha_stops_poor_trials_early_and_they_are_pruned(tmp_path: Path) -> None:
    source = """
        def objective(params, ctx):
            loss = 1.0
            for step in range(9):
                loss = params["x"] + 1.0 / (step + 1)
                ctx.report(step, {"loss": loss})
            return {"loss": loss}
    """
    runner = {
        **RAY,
        "max_concurrent": 1,
        "scheduler": "asha",
        "scheduler_options": {"max_t": 10, "grace_period": 1, "reduction_factor": 3},
    }
    data = loss_spec(tmp_path, source, study="asha", trials=6, runner=runner)
    result = run_search(load_spec(data).plan())
    trials = result.store.study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 6
    for t in pruned:
        # Stopped early, recorded at its last report (intermediate values at the objective's
        # own steps).
        assert len(t.intermediate_values) < 9
        last = max(t.intermediate_values)
        assert t.user_attrs["paretune.metrics"]["loss"] == t.intermediate_values[last]
    assert all(len(t.intermediate_values) == 9 for t in complete)


@pytest.mark.slow
def test_the_wall_time_stops_new_trials_and_lets_running_ones_finish(
    tmp_path: Path, counting_objective
) -> None:
    data = counting_spec(tmp_path, counting_objective, sleep=1.5)
    data["budget"] = {"wall_time": 15}
    data["runner"] = {**RAY, "max_concurrent": 2}
    result = run_search(load_spec(data).plan())
    assert not result.interrupted
    counts = result.counts
    assert counts["COMPLETE"] >= 2
    assert counts["FAIL"] == counts["RUNNING"] == counts["WAITING"] == 0  # none cut off
    assert len(result.store.study.trials) <= 2 * 15 / 1.5 + 2  # two at a time, then stopped


@pytest.mark.slow
def test_kill_9_of_the_driver_then_resume_finishes_without_rerunning(
    tmp_path: Path, counting_objective
) -> None:
    budget = 12
    spec = counting_spec(tmp_path, counting_objective, trials=budget, controller="tpe", sleep=1.0)
    spec["runner"] = {**RAY, "max_concurrent": 2}
    path = write(tmp_path, spec)
    counter = counting_objective[1]
    proc = start_run(path)
    try:
        _wait_inside_objective(proc, counter, finished=budget // 2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; Ray's processes are left alone
        # Reaped at once: `resume` takes a zombie driver for a live owner of its trials.
        proc.wait()
        time.sleep(1.0)  # a trial still running in a worker may finish, unrecorded

        storage = f"sqlite:///{tmp_path}/run/study.db"
        study = optuna.load_study(study_name="counting", storage=storage)
        done_before = {t.number: t.params for t in study.trials if t.state == TrialState.COMPLETE}
        assert 0 < len(done_before) < budget
        assert any(t.state == TrialState.RUNNING for t in study.trials)
        n_lines = len(_evaluations(counter))

        resumed = run_cli("resume", str(path), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        assert "recovered" in resumed.stdout

        study = optuna.load_study(study_name="counting", storage=storage)
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        states = [(t.number, t.state.name, sorted(t.user_attrs)) for t in study.trials]
        assert len(complete) == budget, states
        assert not [t for t in study.trials if t.state == TrialState.RUNNING], states
        after = _evaluations(counter)[n_lines:]
        assert after
        for line in after:  # nothing completed before the kill ran again
            assert line["params"] not in done_before.values()
        numbers = [line["trial"] for line in _evaluations(counter)]
        recorded = {t.number for t in complete}
        # Each recorded trial was evaluated by exactly one attempt of its own number.
        assert all(numbers.count(n) == 1 for n in recorded)
    finally:
        stop_group(proc)  # the driver, and what Ray left of the killed driver's cluster


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT-to-the-group", "SIGTERM-to-the-driver"],
)
def test_a_stop_signal_stops_the_pool_requeues_and_resume_finishes(
    tmp_path: Path, counting_objective, signum: signal.Signals, group: bool
) -> None:
    budget = 8
    spec = counting_spec(tmp_path, counting_objective, trials=budget, sleep=1.5)
    spec["runner"] = {**RAY, "max_concurrent": 2}
    path = write(tmp_path, spec)
    proc = start_run(path)
    try:
        _wait_inside_objective(proc, counting_objective[1], finished=2)
        # Ctrl-C goes to the whole group (Ray's own processes ignore it). SIGTERM goes to the
        # driver: sent to the group it also ends the local cluster's GCS, which the driver
        # then cannot reach (`paretune resume` recovers that study; README, Ray runner).
        if group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        # Waited for without reaping it: stop_group below must not meet a reused group id.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
        reader.start()
        code = wait_unreaped(proc.pid, 120)
        reader.join(timeout=30)
        err = "".join(chunks)
        assert code == 130, err
        assert "paretune resume" in err

        storage = f"sqlite:///{tmp_path}/run/study.db"
        study = optuna.load_study(study_name="counting", storage=storage)
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]
        interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
        assert 1 <= len(interrupted) <= 2
        assert all(
            "stopped by the user" in t.user_attrs["paretune.interrupted"] for t in interrupted
        )

        resumed = run_cli("resume", str(path), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        study = optuna.load_study(study_name="counting", storage=storage)
        assert sum(t.state == TrialState.COMPLETE for t in study.trials) == budget
    finally:
        stop_group(proc)


# -- the spec section (no cluster needed) ---------------------------------------------------


def _ray_spec(tmp_path: Path, counting_objective, **runner) -> dict:
    data = counting_spec(tmp_path, counting_objective)
    data["runner"] = {"type": "ray", **runner}
    return data


@pytest.mark.parametrize(
    ("runner", "path", "words"),
    [
        ({"scheduler": "asha"}, ("runner", "scheduler"), ["ASHA", "one metric", "f0"]),
        ({"resources": {"gpu": 1.5}}, ("runner", "resources"), ["fraction", "1.5"]),
        ({"address": "auto", "num_cpus": 2}, ("runner",), ["local cluster", "address"]),
        ({"max_concurrent": 0}, ("runner", "max_concurrent"), ["greater than or equal to 1"]),
        (
            {"resources": {"when": [{"params": {}}]}},
            ("runner", "resources", "when", 0, "params"),
            [],
        ),
        ({"typo": 1}, ("runner",), ["unknown key 'typo'"]),
    ],
)
def test_bad_ray_runner_sections_name_the_field(
    tmp_path: Path, counting_objective, runner: dict, path: tuple, words: list[str]
) -> None:
    from paretune import ConfigError

    with pytest.raises(ConfigError) as info:
        load_spec(_ray_spec(tmp_path, counting_objective, **runner))
    assert info.value.path == path
    for word in words:
        assert word in str(info.value)


def test_a_trial_timeout_on_ray_is_rejected_when_the_spec_is_loaded(
    tmp_path: Path, counting_objective
) -> None:
    from paretune import ConfigError

    data = _ray_spec(tmp_path, counting_objective)
    data["budget"]["trial_timeout"] = 30
    with pytest.raises(ConfigError) as info:
        load_spec(data)
    assert info.value.path == ("budget", "trial_timeout")
    assert "ray runner" in str(info.value)


def test_resources_follow_the_first_matching_rule(tmp_path: Path, counting_objective) -> None:
    rules = [
        {"params": {"model": ["large", "xl"]}, "gpu": 1},
        {"params": {"model": "large"}, "gpu": 0.5, "cpu": 4},
    ]
    spec = load_spec(
        _ray_spec(tmp_path, counting_objective, resources={"cpu": 2, "gpu": 0.25, "when": rules})
    )
    resources = spec.runner.resources
    assert resources.for_params({"model": "small"}) == {"cpu": 2, "gpu": 0.25}
    assert resources.for_params({"model": "large"}) == {"cpu": 2, "gpu": 1}
    assert resources.for_params({"model": "xl", "x": 0.1}) == {"cpu": 2, "gpu": 1}
    assert resources.for_params({}) == {"cpu": 2, "gpu": 0.25}  # the param is inactive


def test_a_runner_section_without_type_is_the_local_runner(tmp_path, counting_objective) -> None:
    data = counting_spec(tmp_path, counting_objective)
    data["runner"] = {"n_jobs": 2}
    assert load_spec(data).runner.type == "local"


@pytest.mark.parametrize(
    ("runner", "cluster", "expected"),
    [
        ({"resources": {"cpu": 1, "gpu": 0.25}}, {"CPU": 16.0, "GPU": 1.0}, 4),
        ({"resources": {"cpu": 2}}, {"CPU": 16.0, "GPU": 1.0}, 8),
        ({"resources": {"cpu": 4}}, {"CPU": 2.0}, 1),  # too big to fit: still one at a time
        ({"max_concurrent": 3, "resources": {"cpu": 1}}, {"CPU": 16.0}, 3),
    ],
)
def test_concurrency_defaults_to_what_the_cluster_holds(
    tmp_path: Path, counting_objective, runner: dict, cluster: dict, expected: int
) -> None:
    from paretune.search import RayRunner

    spec = load_spec(_ray_spec(tmp_path, counting_objective, **runner))
    assert RayRunner(spec.runner)._concurrency(cluster) == expected


@pytest.mark.slow
def test_a_ray_search_whose_trials_keep_failing_stops_with_the_last_error(
    tmp_path: Path, counting_objective
) -> None:
    spec = counting_spec(tmp_path, counting_objective, trials=30, fail_above=-1.0)
    spec["budget"]["max_failures_in_a_row"] = 3
    spec["runner"] = {**RAY, "max_concurrent": 2}
    with pytest.raises(SearchFailed, match=r"[34] trials failed in a row.*x too large"):
        run_search(load_spec(spec).plan())
    study = optuna.load_study(study_name="counting", storage=f"sqlite:///{tmp_path}/run/study.db")
    assert all(t.state == TrialState.FAIL for t in study.trials)
    assert 3 <= len(study.trials) <= 4  # none started after the third; the running one finished


def test_the_node_tag_tells_apart_two_nodes_of_one_host() -> None:
    from paretune.search._ray_tune import node_label

    head = node_label(host="box", ip="10.0.0.5", name="head", pid=11)
    second = node_label(host="box", ip="10.0.0.5", name="second", pid=11)
    assert head == "box (10.0.0.5) node head pid 11"
    assert second != head
    # Ray names a node by its IP address unless told otherwise: said once.
    assert node_label(host="box", ip="10.0.0.5", name="10.0.0.5", pid=7) == "box (10.0.0.5) pid 7"
    assert node_label(host="box", ip="10.0.0.5", name=None, pid=7) == "box (10.0.0.5) pid 7"

"""The local runner: budget, workers, duplicates, dead workers, interrupts."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter

import psutil
import pytest
from optuna.trial import TrialState

from paretune import SearchFailed
from paretune.search import Budget, LocalRunner, StudyTrials, open_store, run_search
from paretune.spec import load_spec
from tests.conftest import counting_spec, loss_spec
from tests.test_cli import run_cli, write


def test_n_jobs_must_be_positive():
    with pytest.raises(ValueError, match="n_jobs >= 1"):
        LocalRunner(n_jobs=0)


@pytest.mark.slow
def test_workers_run_trials_concurrently_in_other_processes(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=6, n_jobs=2, sleep=0.5))
    result = run_search(spec.plan())
    assert result.counts["COMPLETE"] == 6
    lines = [json.loads(x) for x in counting_objective[1].read_text().splitlines()]
    pids = {line["pid"] for line in lines}
    assert os.getpid() not in pids and len(pids) == 2
    trials = result.store.study.trials
    # Some trials overlapped in time: two workers were busy at once.
    overlaps = sum(
        a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        for i, a in enumerate(trials)
        for b in trials[i + 1 :]
    )
    assert overlaps >= 2


THREADS_OBJECTIVE = """
import torch

def objective(params, ctx):
    return {"loss": params["x"], "threads": float(torch.get_num_threads())}
"""


@pytest.mark.slow
@pytest.mark.parametrize("threads", [None, 1])
def test_workers_share_the_cpus_instead_of_each_taking_all(tmp_path, threads):
    """Without ``threads``, each of the n_jobs workers gets CPUs // n_jobs torch threads (at
    least 1); with it, exactly that many."""
    runner = {"n_jobs": 2} if threads is None else {"n_jobs": 2, "threads": threads}
    data = loss_spec(tmp_path, THREADS_OBJECTIVE, study="threads", trials=2, runner=runner)
    data["objective"]["metrics"] = [
        {"name": "loss", "direction": "minimize"},
        {"name": "threads", "direction": "minimize"},
    ]
    result = run_search(load_spec(data).plan())
    expected = max(1, (os.cpu_count() or 1) // 2) if threads is None else threads
    assert [t.values[1] for t in result.store.study.trials] == [expected, expected]


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads >= 1"):
        LocalRunner(n_jobs=2, threads=0)


@pytest.mark.slow
def test_duplicate_parameters_are_not_evaluated_again(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective, trials=6)
    data["space"] = {
        "x": {"type": "categorical", "choices": [0.1, 0.9]},
        "y": {"type": "fixed", "value": 0.5},
    }
    result = run_search(load_spec(data).plan())
    assert result.counts["COMPLETE"] == 6
    evaluated = counting_objective[1].read_text().splitlines()
    assert len(evaluated) == 2  # only two distinct candidates exist
    dupes = [t for t in result.store.study.trials if "paretune.duplicate_of" in t.user_attrs]
    assert len(dupes) == 4
    for t in dupes:
        twin = result.store.study.trials[t.user_attrs["paretune.duplicate_of"]]
        assert t.params == twin.params and t.values == twin.values


@pytest.mark.slow
def test_a_dying_worker_fails_its_trial_and_the_search_goes_on(tmp_path):
    source = """
        import os
        def objective(params, ctx):
            if params["x"] > 0.7:
                os._exit(3)  # the worker process dies, as under the OOM killer
            return {"loss": params["x"]}
    """
    data = loss_spec(tmp_path, source, study="crashy", trials=10, seed=3, runner={"n_jobs": 2})
    result = run_search(load_spec(data).plan())
    counts = result.counts
    assert counts["COMPLETE"] + counts["FAIL"] == 10
    assert counts["FAIL"] >= 1
    for t in result.store.study.trials:
        if t.state == TrialState.FAIL:
            assert "died" in t.user_attrs["paretune.error"]


# Logs each attempt's start and end as JSON lines (one write each, so lines of concurrent
# workers never interleave): "trial", "pid", "event" and the time.
FAULTY_OBJECTIVE = """
import json, os, threading, time
from pathlib import Path

def log(ctx, event):
    line = {"trial": ctx.trial_number, "pid": os.getpid(), "event": event, "t": time.time()}
    fd = os.open(ctx.settings["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(line) + "\\n").encode())
    os.close(fd)

def wait_for(path):
    while not Path(path).exists():
        time.sleep(0.01)

def objective(params, ctx):
    log(ctx, "start")
    mode, marks = ctx.settings["mode"], Path(ctx.settings["log"]).parent
    if mode == "hang" and params["x"] > 0.5:
        threading.Event().wait()  # blocks forever, as a deadlocked data loader would
    if mode == "die":
        os._exit(1)
    if mode == "die once" and ctx.trial_number == 0 and not (marks / "died").exists():
        wait_for(marks / "started-1")  # trial 1 runs in the other worker meanwhile
        (marks / "died").touch()
        os._exit(1)
    if mode == "die once" and ctx.trial_number == 1:
        (marks / "started-1").touch()
        wait_for(marks / "died")  # it goes on after its neighbour died
    log(ctx, "end")
    return {"loss": params["x"]}
"""


def faulty_search(tmp_path, mode: str, *, trials: int, n_jobs: int, **budget):
    """A search whose objective misbehaves as ``mode`` says (see FAULTY_OBJECTIVE)."""
    data = loss_spec(
        tmp_path,
        FAULTY_OBJECTIVE,
        study=mode.replace(" ", "_"),
        trials=trials,
        seed=5,
        runner={"n_jobs": n_jobs, "device": "cpu"},
    )
    data["objective"]["settings"].update(mode=mode, log=str(tmp_path / "attempts.jsonl"))
    data["budget"].update(budget)
    return load_spec(data).plan()


def attempts(tmp_path) -> list[dict]:
    path = tmp_path / "attempts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _no_worker_left() -> None:
    """No worker process of this test's searches runs (multiprocessing's resource tracker, a
    child of this process for good, is none)."""
    workers = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
    assert not workers, workers


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_hung_trial_is_killed_at_its_timeout_and_the_search_goes_on(tmp_path, n_jobs):
    plan = faulty_search(tmp_path, "hang", trials=6, n_jobs=n_jobs, trial_timeout=2.0)
    started = time.monotonic()
    result = run_search(plan)
    seconds = time.monotonic() - started
    print(f"hung trials, n_jobs={n_jobs}: {result.counts} in {seconds:.1f} s")
    trials = result.store.study.trials
    hung = [t for t in trials if t.params["x"] > 0.5]
    assert 1 <= len(hung) < len(trials) == 6  # the seed draws both kinds
    for t in trials:
        if t in hung:
            assert t.state == TrialState.FAIL
            assert "longer than budget.trial_timeout = 2 s" in t.user_attrs["paretune.error"]
        else:
            assert t.state == TrialState.COMPLETE
    assert result.counts["RUNNING"] == 0 and result.counts["WAITING"] == 0
    # Each hung attempt ran once (a timeout is not retried), in a worker that was then killed.
    runs = attempts(tmp_path)
    assert sorted(e["trial"] for e in runs if e["event"] == "start") == list(range(6))
    for hanging in (e for e in runs if e["trial"] in {t.number for t in hung}):
        later = [e for e in runs if e["pid"] == hanging["pid"] and e["t"] > hanging["t"]]
        assert not later  # its worker was killed: nothing else ran in it
    assert os.getpid() not in {e["pid"] for e in runs}
    _no_worker_left()
    assert seconds < 60


@pytest.mark.slow
def test_a_worker_that_dies_costs_one_retry_and_spares_the_other_workers_trial(tmp_path):
    plan = faulty_search(tmp_path, "die once", trials=4, n_jobs=2)
    result = run_search(plan)
    print(f"a worker died once, n_jobs=2: {result.counts}")
    assert result.counts["COMPLETE"] == 4 and len(result.store.study.trials) == 4
    runs = attempts(tmp_path)
    first, retry = [e for e in runs if e["trial"] == 0 and e["event"] == "start"]
    assert first["pid"] != retry["pid"]  # the retry ran in a fresh worker
    assert [e["event"] for e in runs if e["trial"] == 0] == ["start", "start", "end"]
    # Trial 1 ran beside the death in the other worker, untouched: one attempt, one process.
    neighbour = [e for e in runs if e["trial"] == 1]
    assert [e["event"] for e in neighbour] == ["start", "end"]
    assert neighbour[0]["pid"] == neighbour[1]["pid"] != first["pid"]
    assert neighbour[0]["t"] < retry["t"]  # it was running when trial 0's worker died
    _no_worker_left()


@pytest.mark.slow
def test_an_objective_that_always_kills_its_worker_fails_after_its_retries(tmp_path):
    n_jobs = 2
    plan = faulty_search(tmp_path, "die", trials=10, n_jobs=n_jobs, max_failures_in_a_row=3)
    with pytest.raises(SearchFailed, match=r"trials failed in a row.*died.*exit code 1"):
        run_search(plan)
    store = open_store(plan, create=False, mlflow=False)
    counts = store.counts()
    print(f"an objective that always dies, n_jobs={n_jobs}: {counts}")
    trials = store.study.trials
    assert 3 <= counts["FAIL"] == len(trials) <= 2 + n_jobs  # it stopped after 3 in a row
    starts = Counter(e["trial"] for e in attempts(tmp_path))
    assert starts == {t.number: 2 for t in trials}  # the attempt and max_retries = 1 retry
    for t in trials:
        assert "the worker process died" in t.user_attrs["paretune.error"]
    _no_worker_left()


@pytest.mark.slow
def test_reports_feed_optunas_pruner_for_one_objective(tmp_path):
    source = """
        import paretune.objectives as po

        def objective(params, ctx):
            loss = 1.0
            for step in range(10):
                loss = params["x"] + 1.0 / (step + 1)  # larger x: worse at every step
                ctx.report(step, {"loss": loss})
                if ctx.should_prune():
                    raise po.TrialPruned()
            return {"loss": loss}
    """
    pruner = {"name": "median", "options": {"n_startup_trials": 3}}
    data = loss_spec(tmp_path, source, study="pruned", trials=12, pruner=pruner)
    result = run_search(load_spec(data).plan())
    trials = result.store.study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner stopped nothing"
    for t in pruned:
        assert len(t.intermediate_values) < 10  # stopped early
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(len(t.intermediate_values) == 10 for t in complete)
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == 12


def test_pruning_a_multi_objective_search_is_refused(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective)
    data["pruner"] = {"name": "median"}
    with pytest.raises(ValueError, match="single optimised metric") as info:
        load_spec(data)
    assert info.value.path == ("pruner", "name")


@pytest.mark.slow
def test_an_objective_calling_sys_exit_fails_its_trial_only(tmp_path):
    source = "import sys\n\ndef objective(params, ctx):\n    sys.exit(2)\n"
    data = loss_spec(tmp_path, source, study="exits", trials=2)
    result = run_search(load_spec(data).plan())
    assert result.counts["FAIL"] == 2 and not result.counts["RUNNING"]
    assert "SystemExit" in result.store.study.trials[0].user_attrs["paretune.error"]


@pytest.mark.slow
def test_an_exhausted_space_stops_a_wall_time_search(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective)
    data["space"] = {
        "x": {"type": "categorical", "choices": [0.1]},
        "y": {"type": "fixed", "value": 0.5},
    }
    data["budget"] = {"wall_time": 600}
    spec = load_spec(data)
    store = open_store(spec.plan())
    store.start()
    started = time.monotonic()
    trials = StudyTrials(store, spec.objective_ref())
    LocalRunner().run(trials, Budget(wall_time=600, max_consecutive_duplicates=3))
    store.close()
    assert time.monotonic() - started < 120  # far from the 600 s budget
    trials = store.study.trials
    assert len(trials) == 4 and len(counting_objective[1].read_text().splitlines()) == 1
    assert all("paretune.duplicate_of" in t.user_attrs for t in trials[1:])


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_search_whose_trials_keep_failing_stops_with_the_last_error(
    tmp_path, counting_objective, n_jobs
):
    spec = counting_spec(tmp_path, counting_objective, trials=30, n_jobs=n_jobs, fail_above=-1.0)
    spec["budget"]["max_failures_in_a_row"] = 3
    with pytest.raises(SearchFailed, match=r"[34] trials failed in a row.*x too large") as caught:
        run_search(load_spec(spec).plan())
    assert "paretune resume" in str(caught.value)
    store = open_store(load_spec(spec).plan(), create=False, mlflow=False)
    states = [t.state for t in store.study.trials]
    # No trial is started after the third failure; those already running finish.
    assert states.count(TrialState.FAIL) == len(states)
    assert 3 <= len(states) <= 2 + n_jobs


def test_the_cli_reports_a_search_stopped_by_failures_and_exits_non_zero(
    tmp_path, counting_objective
):
    spec = counting_spec(tmp_path, counting_objective, trials=30, fail_above=-1.0)
    spec["budget"]["max_failures_in_a_row"] = 2
    path = write(tmp_path, spec)
    proc = run_cli("run", str(path), "--no-progress")
    assert proc.returncode == 1
    assert "2 trials failed in a row" in proc.stderr and "x too large" in proc.stderr

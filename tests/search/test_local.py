"""The local runner: budget, workers, duplicates, dead workers, interrupts."""

from __future__ import annotations

import json
import os
import time

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


def test_failures_in_a_row_are_counted_anew_after_each_success(tmp_path, counting_objective):
    # About half of the trials fail (x > 0.5), never two in a row... and never 8.
    spec = counting_spec(tmp_path, counting_objective, trials=12, fail_above=0.5)
    spec["budget"]["max_failures_in_a_row"] = 8
    result = run_search(load_spec(spec).plan())
    assert result.counts["COMPLETE"] + result.counts["FAIL"] == 12
    assert result.counts["FAIL"] >= 2


def test_the_cli_reports_a_search_stopped_by_failures_and_exits_non_zero(
    tmp_path, counting_objective
):
    spec = counting_spec(tmp_path, counting_objective, trials=30, fail_above=-1.0)
    spec["budget"]["max_failures_in_a_row"] = 2
    path = write(tmp_path, spec)
    proc = run_cli("run", str(path), "--no-progress")
    assert proc.returncode == 1
    assert "2 trials failed in a row" in proc.stderr and "x too large" in proc.stderr

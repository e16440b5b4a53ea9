"""The trials store: the study a spec opens, the MLflow link, recovery, budget, export."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from paretune import StudyError
from paretune.search import open_store, run_search
from paretune.spec import load_spec
from paretune.trials_store import TrialsStore, export_trials
from paretune.trials_store import _store_runs as store_runs_module
from paretune.trials_store._attrs import CLAIM_ATTR_PREFIX, OWNER_ATTR, RETRY_OF_ATTR
from paretune.trials_store._ownership import owner_token
from tests.conftest import counting_spec


def _dead_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return owner_token(int(proc.stdout)).rsplit(":", 1)[0] + ":12345"


def test_storage_and_tracking_default_to_sqlite_files_in_run_dir(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective))
    store = open_store(spec.plan(), mlflow=False)
    assert store.storage_url == f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert (tmp_path / "run" / "study.db").exists()
    assert store.study.metric_names == ["f0", "f1"]


def test_directions_must_match_an_existing_study(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective)
    open_store(load_spec(data).plan(), mlflow=False)
    data["objective"]["metrics"][1]["direction"] = "maximize"
    with pytest.raises(StudyError, match="optimises"):
        open_store(load_spec(data).plan(), mlflow=False)


def test_resume_requires_an_existing_study(tmp_path, counting_objective):
    with pytest.raises(StudyError, match="no study named"):
        open_store(load_spec(counting_spec(tmp_path, counting_objective)).plan(), create=False)


def test_unreachable_storage_is_a_clear_error(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective)
    data["storage"] = f"sqlite:///{tmp_path}/no/such/dir/study.db"
    with pytest.raises(StudyError, match="cannot open the study storage"):
        open_store(load_spec(data).plan(), mlflow=False)


def test_recover_fails_and_requeues_trials_of_dead_processes_only(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=3))
    store = open_store(spec.plan(), mlflow=False)
    dead = store.study.ask()
    dead.suggest_float("x", 0, 1)
    dead.suggest_float("y", 0, 1)
    dead.set_user_attr(OWNER_ATTR, _dead_owner())
    alive = store.study.ask()
    alive.set_user_attr(OWNER_ATTR, owner_token())  # this process: still running

    recovered = store.recover()

    assert recovered == [dead.number]
    trials = store.study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    assert waiting[0].params == trials[dead.number].params
    assert waiting[0].user_attrs[RETRY_OF_ATTR] == dead.number
    # The interrupted trial does not count against the budget; its retry will.
    assert store.n_finished() == 0


@pytest.mark.slow
def test_failing_objective_is_recorded_and_counted(tmp_path, counting_objective):
    # x > 0.5 raises in the objective: those trials FAIL with the traceback and still count.
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=10, fail_above=0.5))
    result = run_search(spec.plan())
    counts = result.counts
    assert counts["COMPLETE"] + counts["FAIL"] == 10 and counts["FAIL"] > 0
    failed = [t for t in result.store.study.trials if t.state == TrialState.FAIL]
    assert all("x too large" in t.user_attrs["paretune.error"] for t in failed)
    client = result.store.mlflow.client
    run = client.get_run(failed[0].user_attrs["paretune.mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "x too large" in run.data.tags["paretune.error"]


@pytest.mark.slow
def test_reports_reach_mlflow_as_stepwise_metrics(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=2, steps=3))
    result = run_search(spec.plan())
    t = result.store.study.trials[0]
    client = result.store.mlflow.client
    history = client.get_metric_history(t.user_attrs["paretune.mlflow_run_id"], "partial")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx([t.params["x"] * k for k in (1, 2, 3)])


@pytest.mark.slow
def test_baselines_are_enqueued_once_and_run_first(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective, trials=3)
    data["enqueue"] = [{"x": 0.25, "y": 0.5}, {"x": 0.75, "y": 0.5}]
    result = run_search(load_spec(data).plan())
    trials = result.store.study.trials
    assert [t.params for t in trials[:2]] == data["enqueue"]
    data["budget"]["trials"] = 4
    result = run_search(load_spec(data).plan())
    assert len(result.store.study.trials) == 4
    assert [t.params for t in result.store.study.trials].count({"x": 0.25, "y": 0.5}) == 1


@pytest.mark.slow
def test_labelled_baselines_carry_their_label_to_the_study_mlflow_and_tables(
    tmp_path, counting_objective
):
    from mlflow import MlflowClient

    from paretune.dashboards import pareto_table

    data = counting_spec(tmp_path, counting_objective, trials=3)
    data["enqueue"] = [
        {"label": "corner", "params": {"x": 0.0, "y": 0.0}},
        {"x": 0.75, "y": 0.5},  # bare params: a baseline without a label
    ]
    result = run_search(load_spec(data).plan())
    first, second, third = result.store.study.trials
    assert first.params == {"x": 0.0, "y": 0.0}
    assert first.user_attrs["paretune.label"] == "corner"
    assert first.user_attrs["paretune.baseline"] is True
    assert second.user_attrs["paretune.baseline"] is True
    assert "paretune.label" not in second.user_attrs
    assert "paretune.baseline" not in third.user_attrs
    run = MlflowClient(result.store.tracking_uri).get_run(
        first.user_attrs["paretune.mlflow_run_id"]
    )
    assert run.data.tags["paretune.label"] == "corner"
    table = pareto_table([first, second], load_spec(data).metrics)
    assert table.splitlines()[0].split()[:2] == ["trial", "baseline"]
    assert "corner" in table.splitlines()[2]


def _parent_runs(tracking_uri: str, experiment: str = "counting") -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`paretune.role` = 'study'")
    return [r.info.run_id for r in runs]


def test_set_study_system_attr_once_keeps_the_first_value(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective))
    store = TrialsStore(spec.study_config(), mlflow=False)
    study_id = store.storage.get_study_id_from_name("counting")
    assert store.storage.set_study_system_attr_once(study_id, "k", {"a": 1}) == {"a": 1}
    assert store.storage.set_study_system_attr_once(study_id, "k", {"a": 2}) == {"a": 1}
    assert store.storage.get_study_system_attrs(study_id)["k"] == {"a": 1}


def test_a_second_driver_uses_the_parent_run_the_first_recorded(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective))
    first = TrialsStore(spec.study_config())
    second = TrialsStore(spec.study_config())  # the study exists now: this driver loads it
    second.start()  # the driver that did not create the study starts first: it sets it up
    first.start()
    assert first.parent_run_id == second.parent_run_id is not None
    assert _parent_runs(first.tracking_uri) == [first.parent_run_id]
    assert first.study.user_attrs["paretune.mlflow_parent_run_id"] == first.parent_run_id
    second.close()
    first.close()


def test_a_driver_waits_for_the_parent_run_another_is_setting_up(tmp_path, counting_objective):
    """A live driver claimed the set-up: the others wait for its record, then use that run."""
    import threading

    spec = load_spec(counting_spec(tmp_path, counting_objective))
    other = TrialsStore(spec.study_config())
    study_id = other.storage.get_study_id_from_name("counting")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a live process holds claim 0
        other.storage.set_study_system_attr_once(
            study_id, "paretune.mlflow_parent_claim.0", owner_token(holder.pid)
        )
        waiting = threading.Thread(target=other.start)
        waiting.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # it is waiting, and has made no run
            assert waiting.is_alive() and _parent_runs(other.tracking_uri) == []
            time.sleep(0.1)
        assert other.mlflow is not None
        run = other.mlflow.start_parent(study_name="counting", run_id=None, tags={})
        other.storage.set_study_system_attr_once(study_id, "paretune.mlflow_parent_run", run)
        waiting.join(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert not waiting.is_alive()
    assert other.parent_run_id == run
    assert _parent_runs(other.tracking_uri) == [run]
    other.close()


def test_a_driver_takes_over_the_parent_run_of_a_claimant_that_died(
    tmp_path, counting_objective, monkeypatch
):
    monkeypatch.setattr(store_runs_module, "_PARENT_WAIT_S", 600.0)  # death, not time, decides
    spec = load_spec(counting_spec(tmp_path, counting_objective))
    other = TrialsStore(spec.study_config())
    study_id = other.storage.get_study_id_from_name("counting")
    other.storage.set_study_system_attr_once(
        study_id, "paretune.mlflow_parent_claim.0", _dead_owner()
    )
    begun = time.monotonic()
    other.start()
    assert time.monotonic() - begun < 10
    assert other.parent_run_id is not None
    assert other.study.user_attrs["paretune.mlflow_parent_run_id"] == other.parent_run_id
    assert _parent_runs(other.tracking_uri) == [other.parent_run_id]
    other.close()


@pytest.mark.slow
def test_constraints_exclude_infeasible_trials_from_the_front(tmp_path, counting_objective):
    data = counting_spec(tmp_path, counting_objective, trials=12, controller="tpe")
    data["objective"]["constraints"] = [{"metric": "extra", "max": 1.2}]
    result = run_search(load_spec(data).plan())
    store = result.store
    assert result.pareto
    for t in result.pareto:
        assert t.user_attrs["paretune.metrics"]["extra"] <= 1.2
    infeasible = [t for t in store.study.trials if not store.feasible(t)]
    assert infeasible  # the constraint binds on this problem
    assert not {t.number for t in infeasible} & {t.number for t in result.pareto}


def test_export_of_an_empty_study(tmp_path, counting_objective):
    store = open_store(load_spec(counting_spec(tmp_path, counting_objective)).plan(), mlflow=False)
    assert export_trials(store, "json") == "[]\n"
    with pytest.raises(ValueError, match="unknown export format"):
        export_trials(store, "xml")


def test_plain_optuna_can_read_the_study(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=3))
    store = open_store(spec.plan(), mlflow=False)
    store.start()
    study = optuna.load_study(study_name="counting", storage=store.storage_url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]


def test_owners_in_another_pid_space_are_left_to_the_heartbeat(tmp_path, counting_objective):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=3))
    store = open_store(spec.plan(), mlflow=False)
    host, _, pid, started = _dead_owner().rsplit(":", 3)
    other_container = f"{host}:someotherboot/pid[4026531836]:{pid}:{started}"
    trial = store.study.ask()
    trial.set_user_attr(OWNER_ATTR, other_container)
    assert store.recover() == []
    assert store.study.trials[trial.number].state == TrialState.RUNNING


@pytest.mark.slow
def test_a_constraint_on_a_metric_the_objective_never_returns_fails_the_trial(
    tmp_path, counting_objective
):
    data = counting_spec(tmp_path, counting_objective, trials=2, controller="tpe")
    data["objective"]["constraints"] = [{"metric": "params_pct", "max": 1.0}]
    result = run_search(load_spec(data).plan())
    assert result.counts["FAIL"] == 2
    error = result.store.study.trials[0].user_attrs["paretune.error"]
    assert "constrains metric(s) ['params_pct']" in error and "'extra'" in error


_ASK_AND_DIE = """
import os, signal, sys
import optuna
from paretune.trials_store._ownership import make_storage
study = optuna.load_study(study_name="counting", storage=make_storage(sys.argv[1]))
trial = study.ask()  # Optuna has made it RUNNING; paretune has not prepared it yet
print(trial.number, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("queued", [False, True], ids=["new", "queued"])
def test_a_driver_killed_right_after_asking_leaves_a_trial_that_is_recovered(
    tmp_path, counting_objective, queued
):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=3))
    store = open_store(spec.plan(), mlflow=False)
    if queued:
        store.study.enqueue_trial({"x": 0.25, "y": 0.5})
    proc = subprocess.run([sys.executable, "-c", _ASK_AND_DIE, store.storage_url],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    number = int(proc.stdout)
    assert store.study.trials[number].state == TrialState.RUNNING

    assert store.recover() == [number]

    trials = store.study.get_trials(deepcopy=False)
    assert trials[number].state == TrialState.FAIL
    assert store.n_finished(running=True) == 0  # the orphan holds no place in the budget
    if queued:  # its parameters are queued again, and the next trial runs them
        retry = store.ask()
        assert retry.params == {"x": 0.25, "y": 0.5}
        assert retry.trial.user_attrs[RETRY_OF_ATTR] == number


def test_an_unowned_trial_is_recovered_once_every_process_that_claimed_it_is_dead(
    tmp_path, counting_objective
):
    spec = load_spec(counting_spec(tmp_path, counting_objective, trials=3))
    store = open_store(spec.plan(), mlflow=False)
    # Plain Optuna makes trials RUNNING without paretune's records.
    plain = optuna.load_study(study_name="counting", storage=store.storage_url)
    claimed = plain.ask()  # claimed by a live and a dead process, the owner not yet recorded
    for token in (_dead_owner(), owner_token()):
        store.storage.set_trial_system_attr(claimed._trial_id, CLAIM_ATTR_PREFIX + token, token)
    foreign = plain.ask()
    orphan = plain.ask()  # its only claimant died before recording itself as the owner
    dead = _dead_owner()
    store.storage.set_trial_system_attr(orphan._trial_id, CLAIM_ATTR_PREFIX + dead, dead)

    assert store.recover() == [orphan.number]
    assert store.study.trials[claimed.number].state == TrialState.RUNNING
    assert store.study.trials[foreign.number].state == TrialState.RUNNING


def test_child_runs_are_named_by_trial_number_and_label_or_params(tmp_path, counting_objective):
    from mlflow import MlflowClient

    data = counting_spec(tmp_path, counting_objective, trials=3)
    data["enqueue"] = [{"label": "corner", "params": {"x": 0.0, "y": 0.0}}, {"x": 0.75, "y": 0.5}]
    result = run_search(load_spec(data).plan())
    store = result.store
    client = MlflowClient(store.tracking_uri)

    def name(t):
        return client.get_run(t.user_attrs["paretune.mlflow_run_id"]).info.run_name

    first, second, third = store.study.trials
    assert name(first) == "t000 corner"
    assert name(second) == "t001 x=0.75 y=0.5"
    assert name(third) == f"t002 x={third.params['x']:.3g} y={third.params['y']:.3g}"
    # A finished trial whose driver died before it started a run gets one, named the same way.
    lost = store.study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    store.study.tell(lost, [0.5, 0.5])
    store.reconcile_mlflow()
    runs = client.search_runs(
        [store.mlflow.experiment_id], filter_string=f"tags.`paretune.trial` = '{lost.number}'"
    )
    assert [r.info.run_name for r in runs] == [f"t003 x={lost.params['x']:.3g}"]


def test_the_pareto_tags_follow_the_front_when_a_resumed_search_changes_it(
    tmp_path, counting_objective
):
    from mlflow import MlflowClient

    def tagged_front(store: TrialsStore) -> tuple[set[int], set[int]]:
        client = MlflowClient(store.tracking_uri)
        experiment = client.get_experiment_by_name("counting")
        runs = client.search_runs([experiment.experiment_id], "tags.`paretune.trial` != ''")
        tagged = {int(r.data.tags["paretune.trial"]) for r in runs
                  if r.data.tags["paretune.pareto"] == "true"}  # fmt: skip
        return tagged, {t.number for t in store.pareto_trials()}

    data = counting_spec(tmp_path, counting_objective, trials=3)
    first = run_search(load_spec(data).plan()).store
    tagged, first_front = tagged_front(first)
    assert tagged == first_front
    more = run_search(load_spec(data | {"budget": {"trials": 14}}).plan(), resume=True).store
    tagged, front = tagged_front(more)
    assert front - first_front  # (the study's seed fixes the trials) trials joined the front
    assert tagged == front


def test_an_exited_process_not_yet_reaped_owns_nothing() -> None:
    from paretune.trials_store._ownership import owner_is_dead

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owner_token(child.pid)
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        assert owner_is_dead(token)  # a zombie: exited, its parent has not waited for it yet
    finally:
        child.wait()
    assert owner_is_dead(token)

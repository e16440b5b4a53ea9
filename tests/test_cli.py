"""The `paretune` command: exit codes and messages, a full run, kill -9 and resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from paretune.cli import main
from tests.conftest import counting_spec

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paretune.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


BAD_INPUTS = {
    "unknown key": (
        lambda s: s["objective"].update(metric="x"),
        ["objective", "unknown key 'metric'", "allowed keys"],
    ),
    "low > high": (
        lambda s: s["space"]["x"].update(low=2.0, high=1.0),
        ["space.x", "low", "2.0", "1.0"],
    ),
    "unknown controller": (
        lambda s: s["controller"].update(name="cmaes"),
        ["controller", "'cmaes'", "tpe", "nsga2"],
    ),
    "unknown objective": (
        lambda s: s["objective"].update(type="nope"),
        ["objective.type", "'nope'", "branin_currin"],
    ),
    "metric without direction": (
        lambda s: s["objective"]["metrics"][0].pop("direction"),
        ["objective.metrics[0].direction", "missing"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_message(
    case: str, tmp_path: Path, counting_objective, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = counting_spec(tmp_path, counting_objective)
    mutate, expected = BAD_INPUTS[case]
    mutate(spec)
    code = main(["run", str(write(tmp_path, spec)), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("paretune: invalid spec")
    assert len(err.strip().splitlines()) == 1, err
    for piece in expected:
        assert piece in err, (piece, err)
    assert not (tmp_path / "run").exists()  # nothing ran


def test_unreadable_spec_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "cannot read spec file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "objective" in schema["properties"]


VALID_RUNNERS = [
    {"type": "local", "n_jobs": 2},
    {"n_jobs": 2, "threads": 1},  # a section without a type is the local runner's
    {},
    {"type": "ray", "num_cpus": 2, "resources": {"cpu": 1}},
]
INVALID_RUNNERS = [
    {"type": "nope"},
    {"type": "local", "typo": 1},
    {"n_jobs": 0},
    {"address": "auto"},  # a ray setting without `type: ray` is a local section's unknown key
    {"type": "ray", "n_jobs": 2},
]


def _printed_schema(capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def _resolved(schema: dict, node: dict) -> dict:
    return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node


def _runner_branches(schema: dict) -> dict[str, dict]:
    """The printed runner schema's alternatives, by the type each is for."""
    runner = _resolved(schema, schema["properties"]["runner"])
    branches = [_resolved(schema, b) for b in runner["oneOf"]]
    return {b["properties"]["type"]["const"]: b for b in branches}


def test_schema_describes_every_registered_runner(capsys: pytest.CaptureFixture[str]) -> None:
    from paretune.search import runner_types

    schema = _printed_schema(capsys)
    branches = _runner_branches(schema)
    assert sorted(branches) == sorted(runner_types())
    assert "type" not in branches["local"].get("required", [])  # type-less sections are local
    assert "type" in branches["ray"]["required"]
    assert {"n_jobs", "threads", "device"} <= set(branches["local"]["properties"])


def test_examples_and_runner_sections_validate_against_the_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(_printed_schema(capsys))
    assert main(["schema", "--mutransfer"]) == 0
    workflow = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    assert main(["schema", "--dac"]) == 0
    dac = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    kinds = {"mutransfer": workflow, "dac": dac}
    for path in examples:
        spec = yaml.safe_load(path.read_text())
        # A muTransfer or DAC spec is its own schema; a search spec is neither, and vice versa.
        own = next((v for key, v in kinds.items() if key in spec), validator)
        own.validate(spec)
        for other in (validator, workflow, dac):
            if other is not own:
                assert not other.is_valid(spec), path
    base = {"study": "s", "objective": {"type": "branin_currin"}, "budget": {"trials": 1}}
    for runner in VALID_RUNNERS:
        validator.validate({**base, "runner": runner})
    for runner in INVALID_RUNNERS:
        assert not validator.is_valid({**base, "runner": runner}), runner


def test_an_interrupt_that_reaches_the_cli_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from paretune import cli
    from paretune.search import SearchInterrupted

    def interrupted(args: object) -> int:
        raise SearchInterrupted([3])

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert main(["schema"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("paretune: interrupted") and "[3]" in err and "error" not in err


def _mlflow_runs(tracking_uri: str, experiment: str) -> tuple[list, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get("paretune.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["run_dir"] = str(tmp_path / "run")
    path = write(tmp_path, spec)
    proc = run_cli("run", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout
    report = tmp_path / "run" / "report.html"
    assert f"report: {report} " in proc.stdout and report.is_file()  # written at the end
    budget = spec["budget"]["trials"]

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/run/study.db")
    assert len(study.trials) == budget
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Every Pareto trial is printed with its number.
    for t in study.best_trials:
        assert any(line.split()[0] == str(t.number) for line in proc.stdout.splitlines() if line)

    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/run/mlflow.db", "quickstart")
    assert len(parents) == 1 and len(children) == budget
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    child = children[0]
    assert set(child.data.params) == {"x0", "x1"}
    assert {"f0", "f1"} <= set(child.data.metrics)
    assert child.data.tags["paretune.state"] == "COMPLETE"
    pareto_tags = {
        c.data.tags["paretune.trial"] for c in children if c.data.tags["paretune.pareto"] == "true"
    }
    assert pareto_tags == {str(t.number) for t in study.best_trials}

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/run/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert artifacts == {"trials.csv", "pareto.csv", "spec.yaml", "report.html"}
    assert (tmp_path / "run" / "mlartifacts").is_dir()  # beside the store, not in the cwd
    summary = parents[0].data.metrics
    assert summary["trials"] == summary["trials_complete"] == budget
    assert summary["pareto_trials"] == len(study.best_trials)
    assert summary["best_f0"] == min(t.values[0] for t in study.trials)
    assert summary["hypervolume"] > 0  # the problem's reference point, which trials beat
    names = sorted(c.info.run_name for c in children)
    assert names[0] == "t000 x0={:.3g} x1={:.3g}".format(*study.trials[0].params.values())
    assert [n.split()[0] for n in names] == [f"t{i:03d}" for i in range(budget)]

    # A second run of the finished study evaluates nothing more.
    again = run_cli("run", str(path), "--no-progress")
    assert again.returncode == 0
    assert (
        len(
            optuna.load_study(
                study_name="quickstart", storage=f"sqlite:///{tmp_path}/run/study.db"
            ).trials
        )
        == budget
    )


def start_run(path: Path) -> subprocess.Popen:
    """``paretune run SPEC`` in the background, in a session of its own (a test can signal the
    driver alone or its whole group); stderr is kept for the test's messages."""
    return subprocess.Popen(
        [sys.executable, "-m", "paretune.cli", "run", str(path), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _evaluations(counter: Path) -> list[dict]:
    if not counter.exists():
        return []
    return [json.loads(line) for line in counter.read_text().splitlines() if line.strip()]


def _wait_inside_objective(proc: subprocess.Popen, counter: Path, *, finished: int) -> None:
    """Wait until `finished` evaluations are done and a later one is inside its objective."""
    started = Path(f"{counter}.started")
    deadline = time.monotonic() + 180
    while True:
        done = _evaluations(counter)
        begun = started.read_text().split() if started.exists() else []
        if len(done) >= finished and len(begun) > len(done):
            break
        assert proc.poll() is None, "the search ended early"
        assert time.monotonic() < deadline, "the search made no progress"
        time.sleep(0.02)
    time.sleep(0.1)  # well inside the objective's sleep


LOGGED_OBJECTIVE = """
import json, os, random, time

def _log(path, event, params, ctx):
    line = {"event": event, "trial": ctx.trial_number, "params": params, "t": time.time()}
    # One write of one line with O_APPEND: lines of concurrent workers never interleave, and
    # a kill -9 leaves whole lines only.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)

def objective(params, ctx):
    _log(ctx.settings["log"], "start", params, ctx)
    time.sleep(random.uniform(*ctx.settings["sleep"]))
    _log(ctx.settings["log"], "end", params, ctx)
    return {"f0": params["x"], "f1": 1.0 - params["x"] + params["y"]}
"""


def logged_spec(tmp_path: Path, *, trials: int, n_jobs: int, **budget: object) -> Path:
    """A spec whose objective sleeps a random time in ``settings.sleep`` and logs the start and
    the end of every evaluation to ``tmp_path / "evaluations.jsonl"``."""
    source = tmp_path / "logged_objective.py"
    source.write_text(LOGGED_OBJECTIVE)
    spec = counting_spec(tmp_path, (source, tmp_path / "unused"), trials=trials, n_jobs=n_jobs)
    spec["objective"]["settings"] = {
        "target": f"{source}:objective",
        "log": str(tmp_path / "evaluations.jsonl"),
        "sleep": [0.2, 0.5],
    }
    spec["budget"].update(budget)
    return write(tmp_path, spec)


def _states(db: Path) -> Counter[str]:
    """The study's trials by state, read straight from its SQLite file (no Optuna import)."""
    if not db.exists():
        return Counter()
    deadline = time.monotonic() + 60
    while True:
        try:
            # Read-write: after a kill -9 in a transaction, the first reader rolls it back.
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
                rows = conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state")
                return Counter(dict(rows.fetchall()))
        except sqlite3.OperationalError:  # the tables are being created: asked again
            assert time.monotonic() < deadline, f"{db} stayed unreadable for 60 s"
            time.sleep(0.01)


def _progress(db: Path) -> int:
    """Trials started (created RUNNING or claimed from the queue) plus trials completed: it grows
    with every start and every completion, and nothing else changes it."""
    states = _states(db)
    return sum(n for state, n in states.items() if state != "WAITING") + states["COMPLETE"]


def _kill_after_progress(path: Path, db: Path, *, events: int, delay: float) -> None:
    """Start ``paretune run``; once it has started or completed ``events`` trials, wait
    ``delay`` seconds and SIGKILL its whole process group (the driver and its workers)."""
    before = _progress(db)
    proc = start_run(path)
    deadline = time.monotonic() + 120
    while _progress(db) < before + events:
        assert proc.poll() is None, f"the search ended before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the search made no progress in 120 s"
        time.sleep(0.01)
    time.sleep(delay)  # the random moment of the kill, not a wait for something to happen
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


@pytest.mark.slow
def test_kill_9_while_a_new_run_directory_is_set_up_is_recovered(tmp_path: Path) -> None:
    """Kills while the first run makes its study and MLflow store (MLflow migrates a new
    database for seconds): the next run starts as if nothing had happened."""
    path = logged_spec(tmp_path, trials=2, n_jobs=1)
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    for _ in range(4):
        proc = start_run(path)
        deadline = time.monotonic() + 120
        while not list(run_dir.glob("*mlflow.db*")):  # the tracking store is being made
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no tracking store was begun in 120 s"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 2.5))  # the random moment of the kill
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    final = run_cli("run", str(path), "--no-progress")
    assert final.returncode == 0, final.stderr
    study = optuna.load_study(study_name="counting", storage=f"sqlite:///{run_dir}/study.db")
    assert Counter(t.state.name for t in study.trials)["COMPLETE"] == 2
    parents, children = _mlflow_runs(f"sqlite:///{run_dir}/mlflow.db", "counting")
    assert len(parents) == 1 and len(children) == len(study.trials)
    assert not list(run_dir.glob(".mlflow.db.new-*"))  # what killed creations left is gone


def check_evaluated_once(study: optuna.Study, evaluations: list[dict]) -> None:
    """No completed parameter set was evaluated again.

    Precisely: every evaluation (a "start" line) of the parameters of a COMPLETE trial T ran in
    T itself or in one of the trials T retries (the ``paretune.retry_of`` chain: each was
    interrupted, so its result was never recorded), and T's own evaluation ran and ended once.
    An interrupted trial may have ended its evaluation before the kill that lost the result
    (a kill between the objective's return and the record): that evaluation is repeated by
    the retry, necessarily, and is not a second evaluation of a *completed* parameter set.
    """
    by_number = {t.number: t for t in study.trials}
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        chain, number = {t.number}, t.user_attrs.get("paretune.retry_of")
        while number is not None:
            chain.add(number)
            assert by_number[number].state == optuna.trial.TrialState.FAIL
            number = by_number[number].user_attrs.get("paretune.retry_of")
        runs = [e for e in evaluations if e["params"] == t.params]
        assert {e["trial"] for e in runs} <= chain, (t.number, chain, runs)
        own = [e["event"] for e in runs if e["trial"] == t.number]
        assert own == ["start", "end"], (t.number, own)


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_kill_9_at_random_moments_loses_and_repeats_nothing(tmp_path: Path, n_jobs: int) -> None:
    """20 kill -9s of the whole process group, each at a random moment after the search made
    progress, and a rerun after each: the budget is met exactly, nothing is left running, no
    completed parameter set is evaluated again, and every trial has one finished MLflow run."""
    budget, kills = 10, 20
    path = logged_spec(tmp_path, trials=budget, n_jobs=n_jobs)
    db = tmp_path / "run" / "study.db"
    rng = random.Random(1234 + n_jobs)
    for _ in range(kills):
        # After one to three starts or completions, anywhere in the next 0.6 s: a trial's
        # set-up (ask, parameters, MLflow run), its objective, its record, the next ask. Near
        # the end of the budget, only right after the first start: every trial sleeps at least
        # 0.2 s, so none completes before that kill, and every kill lands in a running search.
        if budget - _states(db)["COMPLETE"] > 2 * n_jobs + 1:
            events, delay = rng.randint(1, 3), rng.uniform(0.0, 0.6)
        else:
            events, delay = 1, rng.uniform(0.0, 0.15)
        _kill_after_progress(path, db, events=events, delay=delay)

    killed = dict(_states(db))
    final = run_cli("run", str(path), "--no-progress")
    assert final.returncode == 0, final.stderr

    study = optuna.load_study(study_name="counting", storage=f"sqlite:///{db}")
    states = Counter(t.state.name for t in study.trials)
    print(f"n_jobs={n_jobs}: after {kills} kills {killed}; after the final run {dict(states)}")
    assert states["COMPLETE"] == budget
    assert states["RUNNING"] == 0 and states["WAITING"] == 0
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:  # every failure is an interruption...
            assert "paretune.interrupted" in t.user_attrs, t.user_attrs
            retries = [r for r in study.trials if r.user_attrs.get("paretune.retry_of") == t.number]
            assert len(retries) == 1  # ...done again exactly once
            assert t.params.items() <= retries[0].params.items()
    evaluations = [json.loads(x) for x in (tmp_path / "evaluations.jsonl").read_text().splitlines()]
    check_evaluated_once(study, evaluations)

    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/run/mlflow.db", "counting")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = Counter(c.data.tags["paretune.trial_id"] for c in children)
    assert runs == Counter(str(t._trial_id) for t in study.trials)  # one run per trial
    by_id = {c.data.tags["paretune.trial_id"]: c for c in children}
    for t in study.trials:
        run = by_id[str(t._trial_id)]
        assert run.data.tags["paretune.trial"] == str(t.number)
        assert run.data.tags["paretune.state"] == t.state.name
        assert run.info.status == ("FINISHED" if t.state.name == "COMPLETE" else "FAILED")


@pytest.mark.slow
def test_status_and_export(
    tmp_path: Path, counting_objective, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = counting_spec(tmp_path, counting_objective, trials=5)
    path = write(tmp_path, spec)
    for command in ("status", "export"):  # no study yet, not even a run directory
        assert main([command, str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("paretune: error: no study named 'counting'"), err
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # looking created nothing
    (tmp_path / "run").mkdir()
    assert main(["status", str(path)]) == 1  # a run directory without a study
    assert "no study named 'counting'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "study.db").exists()
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    # Looking at a study needs neither its objective nor the objective's data.
    counting_objective[0].unlink()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "5 / 5 trials finished" in out and "complete=5" in out
    out_json = tmp_path / "trials.json"
    assert main(["export", str(path), "--format", "json", "-o", str(out_json)]) == 0
    records = json.loads(out_json.read_text())
    assert [r["number"] for r in records] == list(range(5))
    assert all(r["state"] == "COMPLETE" and set(r["params"]) == {"x", "y"} for r in records)
    assert all(set(r["metrics"]) == {"f0", "f1", "extra"} for r in records)
    assert main(["export", str(path), "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    header = csv_text.splitlines()[0].split(",")
    assert {"number", "state", "metric_f0", "param_x", "pareto", "mlflow_run_id"} <= set(header)
    assert len(csv_text.strip().splitlines()) == 6


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unwritable_dir(tmp_path: Path) -> Path:
    """A run directory that cannot be created: under /sys for root (EPERM even for root),
    under a read-only directory for anyone else."""
    if os.geteuid() == 0:
        return Path("/sys/paretune-test/run")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "run"


@pytest.mark.parametrize("broken", ["tracking server", "run directory"])
def test_a_setup_that_cannot_work_exits_1_at_once_with_one_line(
    tmp_path: Path, counting_objective, broken: str
) -> None:
    spec = counting_spec(tmp_path, counting_objective)
    if broken == "tracking server":
        uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
        spec["tracking_uri"] = uri
        expected = [f"the MLflow tracking server {uri!r} does not answer"]
    else:
        spec["run_dir"] = str(_unwritable_dir(tmp_path))
        expected = [f"cannot write to the run directory {spec['run_dir']!r}", "`run_dir`"]
    started = time.monotonic()
    proc = run_cli("run", str(write(tmp_path, spec)), "--no-progress", timeout=60)
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("paretune: error: ")
    for piece in expected:
        assert piece in proc.stderr, proc.stderr
    assert seconds < 10, f"{seconds:.1f} s"
    assert not list(tmp_path.rglob("study.db")) and not list(tmp_path.rglob("mlflow.db"))


def test_set_overrides_the_spec_for_run_and_status(
    tmp_path: Path, counting_objective, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, counting_spec(tmp_path, counting_objective, trials=5))
    args = ["--set", "study=other", "--set", "budget.trials=2"]
    assert main(["run", str(path), "--no-progress", *args]) == 0
    assert main(["status", str(path), *args]) == 0
    assert "study 'other': 2 / 2 trials finished" in capsys.readouterr().out
    assert main(["status", str(path)]) == 1  # the file's own study was never run
    assert main(["run", str(path), "--set", "budget.trials"]) == 2
    assert "must look like" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_stop_signal_requeues_running_trials_and_resume_finishes(
    tmp_path: Path, counting_objective, n_jobs: int, signum: signal.Signals
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, `timeout`, Slurm, Kubernetes) to the whole process
    group: the driver stops at once with one line saying how to continue, the running trials
    are failed and queued again, and `resume` finishes the budget."""
    budget = 8
    # Each trial sleeps 1 s so that one is still running when the signal lands: with 0.5 s
    # both workers' trials finished first on a loaded 2-core machine (0 interrupted, CI).
    spec = counting_spec(tmp_path, counting_objective, trials=budget, n_jobs=n_jobs, sleep=1.0)
    path = write(tmp_path, spec)
    counter = counting_objective[1]
    proc = start_run(path)
    _wait_inside_objective(proc, counter, finished=2)
    os.killpg(proc.pid, signum)
    signalled = time.monotonic()
    _, err = proc.communicate(timeout=120)
    seconds = time.monotonic() - signalled
    assert proc.returncode == 130, err
    assert seconds < 15, f"{seconds:.1f} s from the signal to the exit"
    assert err.strip().splitlines() == [
        f"interrupted: running trials were queued again; continue with `paretune resume {path}`"
    ], err

    storage = f"sqlite:///{tmp_path}/run/study.db"
    study = optuna.load_study(study_name="counting", storage=storage)
    states = Counter(t.state.name for t in study.trials)
    print(f"{signum.name}, n_jobs={n_jobs}: {dict(states)} {seconds:.1f} s after the signal")
    assert states["RUNNING"] == 0
    interrupted = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert 1 <= len(interrupted) <= n_jobs
    assert states["WAITING"] == len(interrupted)  # each queued again, once
    for t in interrupted:
        assert t.user_attrs["paretune.interrupted"] == f"stopped by the user ({signum.name})"
        [retry] = [r for r in study.trials if r.user_attrs.get("paretune.retry_of") == t.number]
        assert retry.state == optuna.trial.TrialState.WAITING and retry.params == t.params

    resumed = run_cli("resume", str(path), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="counting", storage=storage)
    states = Counter(t.state.name for t in study.trials)
    print(f"{signum.name}, n_jobs={n_jobs}: after resume {dict(states)}")
    assert states["COMPLETE"] == budget and states["FAIL"] == len(interrupted)
    assert states["RUNNING"] == states["WAITING"] == 0


@pytest.mark.slow
def test_a_stop_signal_while_the_search_starts_up_is_not_lost(
    tmp_path: Path, counting_objective
) -> None:
    """SIGTERM after the study is opened but before the trial loop runs (MLflow's set-up takes
    seconds): the search stops there instead of running its whole budget."""
    path = write(tmp_path, counting_spec(tmp_path, counting_objective, trials=8, sleep=1.0))
    proc = start_run(path)
    db = tmp_path / "run" / "study.db"
    deadline = time.monotonic() + 120
    while not db.exists():  # the study is being opened; the trial loop has not begun
        assert proc.poll() is None and time.monotonic() < deadline, "no study was opened"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    states = _states(db)
    print(f"SIGTERM during the start-up: {dict(states)}")
    assert states["COMPLETE"] == 0 and states["RUNNING"] == 0


@pytest.mark.slow
def test_two_drivers_on_one_study_stop_at_the_budget(tmp_path: Path, counting_objective) -> None:
    budget = 10
    # Each driver's first trial waits until the other evaluates too: the second driver's
    # start-up takes seconds on a loaded machine, long enough to miss the whole budget.
    spec = counting_spec(tmp_path, counting_objective, trials=budget, sleep=1.0, wait_for_drivers=2)
    path = write(tmp_path, spec)
    cmd = [sys.executable, "-m", "paretune.cli", "run", str(path), "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_inside_objective(first, counting_objective[1], finished=0)  # the study exists
    second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0

    study = optuna.load_study(study_name="counting", storage=f"sqlite:///{tmp_path}/run/study.db")
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert budget <= complete <= budget + 1  # a count and an ask are not atomic
    assert len(study.trials) == complete
    pids = {line["pid"] for line in _evaluations(counting_objective[1])}
    assert len(pids) == 2  # both drivers evaluated trials
    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/run/mlflow.db", "counting")
    assert len(parents) == 1 and len(children) == complete
    assert parents[0].info.status == "FINISHED"  # ended by whichever driver stopped last

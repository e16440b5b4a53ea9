"""Fixtures shared across the suite: tiny objectives written to files, spec builders."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

COUNTING_OBJECTIVE = '''
import json, os, time

def objective(params, ctx):
    """Two objectives over x, y; appends one line per finished evaluation to a counter file."""
    with open(ctx.settings["counter"] + ".started", "a") as f:
        f.write(f"{ctx.trial_number}\\n")
    drivers = ctx.settings.get("wait_for_drivers", 0)
    if drivers:  # go on only once that many processes evaluate trials
        pids = ctx.settings["counter"] + ".pids"
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\\n")
        deadline = time.time() + 120
        while True:
            with open(pids) as f:
                if len(set(f.read().split())) >= drivers:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"no {drivers} processes evaluated trials within 120 s")
            time.sleep(0.05)
    gate = ctx.settings.get("gate")  # trials from gate_from on wait until this file exists
    if gate and ctx.trial_number >= ctx.settings.get("gate_from", 0):
        deadline = time.time() + 300
        while not os.path.exists(gate):
            if time.time() > deadline:
                raise RuntimeError(f"the gate {gate} did not open within 300 s")
            time.sleep(0.05)
    time.sleep(ctx.settings.get("sleep", 0.0))
    for step in range(ctx.settings.get("steps", 0)):
        ctx.report(step, {"partial": params["x"] * (step + 1)})
    if params.get("x", 0.0) > ctx.settings.get("fail_above", 2.0):
        raise RuntimeError("x too large for this objective")
    f0 = (params["x"] - 0.3) ** 2 + params.get("y", 0.0)
    f1 = (params["x"] - 0.7) ** 2 + (1.0 - params.get("y", 0.0))
    with open(ctx.settings["counter"], "a") as f:
        line = {"trial": ctx.trial_number, "params": params, "pid": os.getpid()}
        f.write(json.dumps(line) + "\\n")
    return {"f0": f0, "f1": f1, "extra": f0 + f1}
'''


@pytest.fixture
def counting_objective(tmp_path: Path) -> tuple[Path, Path]:
    """A python objective file and the counter file it appends to."""
    src = tmp_path / "counting_objective.py"
    src.write_text(textwrap.dedent(COUNTING_OBJECTIVE))
    return src, tmp_path / "evaluations.jsonl"


def counting_spec(
    tmp_path: Path,
    objective: tuple[Path, Path],
    *,
    trials: int = 8,
    controller: str = "random",
    n_jobs: int = 1,
    **settings: Any,
) -> dict[str, Any]:
    src, counter = objective
    return xy_spec(
        tmp_path,
        f"{src}:objective",
        study="counting",
        trials=trials,
        controller=controller,
        n_jobs=n_jobs,
        counter=str(counter),
        **settings,
    )


def xy_spec(
    tmp_path: Path,
    target: str,
    *,
    study: str,
    trials: int,
    controller: str = "random",
    n_jobs: int = 1,
    **settings: Any,
) -> dict[str, Any]:
    """A spec over ``x, y`` in [0, 1] minimising the metrics ``f0, f1`` of the ``python``
    objective ``target``, with ``settings``, stored under ``tmp_path/run``."""
    return {
        "study": study,
        "run_dir": str(tmp_path / "run"),
        "objective": {
            "type": "python",
            "settings": {"target": target, **settings},
            "metrics": [
                {"name": "f0", "direction": "minimize"},
                {"name": "f1", "direction": "minimize"},
            ],
        },
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "y": {"type": "float", "low": 0.0, "high": 1.0},
        },
        "controller": {"name": controller, "seed": 0},
        "budget": {"trials": trials},
        "runner": {"type": "local", "n_jobs": n_jobs},
    }


def loss_spec(
    tmp_path: Path, source: str, *, study: str, trials: int, seed: int = 0, **sections: Any
) -> dict[str, Any]:
    """A one-metric (``loss``, minimised) spec over ``x`` in [0, 1] whose objective is the
    function ``objective`` in a file written from ``source``; ``sections`` override the spec."""
    src = tmp_path / f"{study}_objective.py"
    src.write_text(textwrap.dedent(source))
    return {
        "study": study,
        "run_dir": str(tmp_path / "run"),
        "objective": {
            "type": "python",
            "settings": {"target": f"{src}:objective"},
            "metrics": [{"name": "loss", "direction": "minimize"}],
        },
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "controller": {"name": "random", "seed": seed},
        "budget": {"trials": trials},
        **sections,
    }


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module that fits GPs or runs tiny models: on a small
    shared machine the thread pool only adds contention (several times slower with two busy
    cores). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 for the whole session (Debian's binaries, started by
    :mod:`tests.trials_store.postgres_server`, stopped by its pid); skips with the reason where
    PostgreSQL or psycopg2 is not installed."""
    from tests.trials_store import postgres_server as pg

    reason = pg.unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = pg.start_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request: pytest.FixtureRequest) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg2://...``) of a fresh database for this test."""
    return postgres_server.new_database(request.node.name)

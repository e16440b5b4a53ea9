"""``paretune ui``: the MLflow UI (or optuna-dashboard) on a real study, started as a real
process on a free port, and every process of it gone after Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from paretune import StudyError
from paretune.dashboards import ServerCommand, UiServer
from paretune.dashboards._ui import free_port

from .ui_process import UiProcess, get, group_gone, study_spec


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return study_spec(tmp_path_factory.mktemp("ui"))


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.slow
def test_the_mlflow_ui_serves_the_study_and_sigterm_stops_all_of_it(
    spec: Path, tmp_path: Path
) -> None:
    port = free_port()
    ui = UiProcess(spec, "--port", str(port), cwd=tmp_path)
    try:
        url, pgid, pages = ui.served()
        assert url == f"http://127.0.0.1:{port}/"
        assert get(url)[0] == 200
        found = json.loads(
            get(f"{url}api/2.0/mlflow/experiments/get-by-name?"
                + urlencode({"experiment_name": "ui-study"}))[1]
        )  # fmt: skip
        experiment_id = found["experiment"]["experiment_id"]
        runs = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        assert pages == {"experiment": url + runs}
        assert ui.stop(signal.SIGTERM) == 0
    finally:
        if ui.proc.poll() is None:
            ui.kill()
    assert group_gone(pgid), "a process of the MLflow UI outlived paretune ui"
    assert _refused(port)
    assert not (tmp_path / "mlartifacts").exists()  # nothing written to the working directory


@pytest.mark.slow
def test_dashboard_serves_the_study_and_ctrl_c_stops_all_of_it(spec: Path) -> None:
    port = free_port()
    ui = UiProcess(spec, "--dashboard", "--port", str(port))
    try:
        url, pgid, pages = ui.served()
        studies = json.loads(get(f"{url}api/studies")[1])["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "ui-study"]
        assert pages == {"study": f"{url}dashboard/studies/{study['study_id']}"}
        assert get(pages["study"])[0] == 200
        assert ui.stop(signal.SIGINT) == 0
    finally:
        if ui.proc.poll() is None:
            ui.kill()
    assert group_gone(pgid), "a process of optuna-dashboard outlived paretune ui"
    assert _refused(port)


def test_a_port_in_use_is_a_clear_error(spec: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ui = UiProcess(spec, "--port", str(port))
        assert ui.finish() == 1
    assert f"port {port} on 127.0.0.1 is in use; choose another one with --port" in ui.output


def test_a_study_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    from paretune.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(
        f"study: nothing\nrun_dir: {tmp_path / 'run'}\nobjective: {{type: branin_currin}}\n"
        "budget: {trials: 1}\n"
    )
    assert main(["ui", str(path), "--port", "0"]) == 1
    assert not (tmp_path / "run").exists()


# -- the server process on its own (a tiny HTTP server stands in for the UI) -----------------

EXITS = "import sys; print('cannot start: boom', file=sys.stderr); sys.exit(3)"

# The leader ignores SIGTERM only while it starts its child (which keeps ignoring it), then
# dies of SIGTERM: the child is orphaned and must still be killed and reaped.
STUBBORN = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", sys.argv[1]])
signal.signal(signal.SIGTERM, signal.SIG_DFL)
child.wait()
"""


def test_a_server_that_exits_at_once_is_reported_with_its_output() -> None:
    server = UiServer(
        ServerCommand("stub", (sys.executable, "-c", EXITS)), host="127.0.0.1", port=free_port()
    )
    with pytest.raises(StudyError, match=r"exited with code 3 .*\n.*cannot start: boom"):
        server.start(timeout=60)
    assert group_gone(server.pgid)


def test_a_server_that_cannot_be_started_is_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-server")
    server = UiServer(ServerCommand("stub", (missing,)), host="127.0.0.1", port=free_port())
    with pytest.raises(StudyError, match=r"cannot start the stub \(.*no-such-server\)"):
        server.start(timeout=60)


def test_stop_kills_and_reaps_an_orphan_that_ignores_sigterm() -> None:
    port = free_port()
    command = ServerCommand("stub", (sys.executable, "-c", STUBBORN, str(port)))
    server = UiServer(command, host="127.0.0.1", port=port)
    assert server.start(timeout=60)
    assert get(server.url)[0] == 200
    t0 = time.monotonic()
    server.stop(grace=1.0)
    assert time.monotonic() - t0 >= 1.0  # SIGTERM was not enough: SIGKILL after the grace
    assert group_gone(server.pgid)
    assert _refused(port)

"""A throwaway ``mlflow server`` for tests: 127.0.0.1, an SQLite backend and a local artifact
directory in a fresh folder, stopped by its session id.

:func:`start_server` starts ``mlflow server`` (one worker) on a free port as a child process in
a session of its own and waits until ``/health`` answers; :meth:`MlflowServer.stop` stops the
processes of that session (the server and the workers it forks: SIGTERM, then SIGKILL) and
removes the folder. Runs reach it over HTTP at :attr:`MlflowServer.uri`, as every node of a
cluster would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.search.ray_cluster import free_port, session_processes

__all__ = ["MlflowServer", "start_server"]

HOST = "127.0.0.1"


@dataclass
class MlflowServer:
    """A running server; :attr:`uri` is its tracking URI (``http://127.0.0.1:PORT``)."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no server log)"

    def processes(self) -> list[int]:
        """The live processes of the server's session (none after :meth:`stop`)."""
        return list(session_processes(self.process.pid))

    def kill(self, timeout: float = 20.0) -> None:
        """Kill the server now (SIGKILL to its session), keeping its store: an outage.
        :meth:`restart` brings it back on the same port and store."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)

    def restart(self, timeout: float = 120.0) -> None:
        """Start the server again on its port and store (after :meth:`kill`)."""
        self.process = _launch(self.root, self.port, self.log)
        _wait_until_it_answers(self, timeout)

    def stop(self, timeout: float = 20.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout / 2
            while time.monotonic() < deadline and self.processes():
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        shutil.rmtree(self.root, ignore_errors=True)


def _launch(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow)] if mlflow.is_file() else [sys.executable, "-m", "mlflow"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                *command,
                "server",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_until_it_answers(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"mlflow server exited with code {code}:\n{server.log_text()}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"mlflow server (pid {server.process.pid}) did not answer on {server.uri} "
                f"within {timeout:.0f} s:\n{server.log_text()[-3000:]}"
            )
        time.sleep(0.2)


def start_server(*, timeout: float = 120.0) -> MlflowServer:
    """Start ``mlflow server`` on a free port of 127.0.0.1 and wait until it answers.

    Raises:
        RuntimeError: The server exited, or did not answer within ``timeout`` seconds (the
            message holds its log).
    """
    root = Path(tempfile.mkdtemp(prefix="paretune-mlflow-"))
    port = free_port()
    log = root / "server.log"
    server = MlflowServer(process=_launch(root, port, log), port=port, root=root, log=log)
    try:
        _wait_until_it_answers(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server

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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MlflowServer", "start_server"]

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _session(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


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
        return _session(self.process.pid)

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


def start_server(*, timeout: float = 120.0) -> MlflowServer:
    """Start ``mlflow server`` on a free port of 127.0.0.1 and wait until it answers.

    Raises:
        RuntimeError: The server exited, or did not answer within ``timeout`` seconds (the
            message holds its log).
    """
    root = Path(tempfile.mkdtemp(prefix="paretune-mlflow-"))
    port = _free_port()
    log = root / "server.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow)] if mlflow.is_file() else [sys.executable, "-m", "mlflow"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
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
    server = MlflowServer(process=process, port=port, root=root, log=log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(f"mlflow server exited with code {code}:\n{server.log_text()}")
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server (pid {process.pid}) did not answer on {server.uri} within "
                    f"{timeout:.0f} s:\n{server.log_text()[-3000:]}"
                )
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise

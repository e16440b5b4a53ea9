"""``paretune ui``: the MLflow UI (or optuna-dashboard) on a study's stores, started and
stopped whole.

The server runs as a child process in a process group of its own, so a Ctrl-C in the terminal
reaches ``paretune ui`` alone, which then stops the whole group: SIGTERM, and SIGKILL for what
is left after a grace period. The MLflow UI is several processes (the ``mlflow`` command starts
uvicorn); on Linux ``paretune ui`` adopts the ones whose parent exits first (a child
subreaper), so every process of the group is reaped, not left behind as a zombie.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from paretune._errors import StudyError

__all__ = [
    "DEFAULT_PORTS",
    "ServerCommand",
    "UiServer",
    "dashboard_command",
    "mlflow_ui_command",
    "serve",
    "serve_study_ui",
]

#: The port each UI listens on by default: MLflow's and optuna-dashboard's own defaults.
DEFAULT_PORTS = {"mlflow": 5000, "dashboard": 8080}
#: Seconds a server has to answer after it starts (the MLflow UI takes 10-20 s on 2 busy cores).
STARTUP_TIMEOUT_S = 180.0
#: Seconds a server has to exit after SIGTERM before the rest of its group is killed.
STOP_GRACE_S = 10.0
# Linux prctl option: orphaned descendants are re-parented to this process (and reaped here).
_PR_SET_CHILD_SUBREAPER = 36
# How often the startup and the wait look at the server.
_POLL_S = 0.2


@dataclass(frozen=True)
class ServerCommand:
    """A UI server to start.

    Attributes:
        name: What it is called in messages (``MLflow UI``).
        argv: The command line.
        ready_path: The path that answers once the server serves.
        env: Environment variables set for it (on top of this process's).
    """

    name: str
    argv: tuple[str, ...]
    ready_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)


def mlflow_ui_command(
    tracking_uri: str, *, host: str, port: int, artifact_root: str | None = None
) -> ServerCommand:
    """``mlflow ui`` on the tracking store ``tracking_uri`` (any store the ``mlflow`` command
    takes: ``sqlite:///...``, ``postgresql://...``, a directory).

    Args:
        tracking_uri: The backend store.
        host: The interface to bind.
        port: The port.
        artifact_root: Where the store keeps artifacts (``file:///.../mlartifacts`` for the
            embedded store): the root of experiments the UI would create, and the directory
            its artifact proxy serves, so that nothing is written to the working directory.
            The study's experiment keeps its own location either way, which the server reads
            directly (the UI shows the parent run's ``trials.csv`` and ``spec.yaml``).
    """
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    argv += ["--host", host, "--port", str(port), "--workers", "1"]
    if artifact_root is not None:
        argv += ["--default-artifact-root", artifact_root, "--artifacts-destination", artifact_root]
    # Job execution (GenAI evaluation jobs) starts eight more processes; browsing needs none.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}  # fmt: skip
    return ServerCommand("MLflow UI", tuple(argv), ready_path="/health", env=env)


def dashboard_command(storage_url: str, *, host: str, port: int) -> ServerCommand:
    """``optuna-dashboard`` on the Optuna storage ``storage_url``.

    Raises:
        StudyError: optuna-dashboard is not installed.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    program = shutil.which("optuna-dashboard", path=path)
    if program is None:
        raise StudyError(
            "optuna-dashboard is not installed (the `optuna-dashboard` command was not found "
            "beside this Python or on PATH); install it with `pip install optuna-dashboard`."
        )
    argv = (program, storage_url, "--host", host, "--port", str(port), "--quiet")
    return ServerCommand("optuna-dashboard", argv, ready_path="/api/meta")


def _url_host(host: str) -> str:
    """The host to connect to for a server bound to ``host`` (any interface: this machine)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` now (the OS's choice)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port(host: str, port: int) -> None:
    """Raise where ``port`` on ``host`` cannot be listened on (in use, not this machine's).

    Raises:
        StudyError: The port is taken or the address cannot be bound; the message says which.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # As servers do: a port whose last connections are closing (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StudyError(
                    f"port {port} on {host} is in use; choose another one with --port "
                    "(--port 0: any free port)."
                ) from None
            raise StudyError(f"cannot listen on {host}:{port}: {err.strerror or err}.") from None


class UiServer:
    """A UI server process in its own process group; :meth:`stop` ends the whole group.

    Args:
        command: What to start.
        host: The interface it binds (for its URL).
        port: Its port.
    """

    def __init__(self, command: ServerCommand, *, host: str, port: int) -> None:
        self.command = command
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._tail = ""
        self._subreaper = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:5000/``."""
        return f"http://{_url_host(self.host)}:{self.port}/"

    @property
    def pgid(self) -> int:
        """The server's process group (its leader's pid)."""
        assert self.process is not None, "not started"
        return self.process.pid

    def start(
        self, *, timeout: float = STARTUP_TIMEOUT_S, cancel: threading.Event | None = None
    ) -> bool:
        """Start the server and return once it answers HTTP at its ``ready_path``.

        Args:
            timeout: Seconds it has to answer.
            cancel: Return early, without waiting for it, once this is set (a Ctrl-C).

        Returns:
            Whether it answers (``False``: cancelled; it still runs, :meth:`stop` ends it).

        Raises:
            StudyError: The port is in use, or the server exited or did not answer within
                ``timeout`` seconds (then it is stopped; the message ends with its last output).
        """
        check_port(self.host, self.port)
        self._subreaper = _set_subreaper(True)
        # Open while the server runs; stop() keeps its tail and closes it.
        self._output = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.command.env},
                start_new_session=True,  # its own group: a terminal's Ctrl-C reaches us alone
            )
        except OSError as err:
            self.stop()
            raise StudyError(
                f"cannot start the {self.command.name} ({self.command.argv[0]}): {err}"
            ) from None
        deadline = time.monotonic() + timeout
        ready = urllib.parse.urljoin(self.url, self.command.ready_path)
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise StudyError(
                    f"the {self.command.name} exited with code {code} before it answered at "
                    f"{self.url}; its last output:\n{self.output_tail()}"
                )
            if cancel is not None and cancel.is_set():
                return False
            if _answers(ready):
                return True
            if time.monotonic() > deadline:
                self.stop()
                raise StudyError(
                    f"the {self.command.name} did not answer at {self.url} within "
                    f"{timeout:g} s; its last output:\n{self.output_tail()}"
                )
            time.sleep(_POLL_S)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output_tail(self, *, lines: int = 20) -> str:
        """The server's last ``lines`` lines of output (stdout and stderr)."""
        if self._output is None:
            return "\n".join(self._tail.splitlines()[-lines:])
        self._output.flush()
        self._output.seek(0, os.SEEK_END)
        size = self._output.tell()
        self._output.seek(max(0, size - 8192))
        text = self._output.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, grace: float = STOP_GRACE_S) -> None:
        """End every process of the server's group: SIGTERM, then SIGKILL after ``grace``
        seconds; return once none is left (all reaped). Safe to call twice."""
        if self.process is None:
            self._release()
            return
        pgid = self.pgid
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, self.process, grace):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, self.process, 10.0)
        self.process.poll()
        self._release()

    def _release(self) -> None:
        """Keep the output's tail, close its file, and stop adopting orphans."""
        if self._output is not None:
            self._tail = self.output_tail(lines=100)
            self._output.close()
            self._output = None
        if self._subreaper:
            _set_subreaper(False)
            self._subreaper = False


def _answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_group_gone(pgid: int, leader: subprocess.Popen[bytes], timeout: float) -> bool:
    """Reap the group's processes until none is left (``True``) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        leader.poll()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-pgid, os.WNOHANG)[0]:  # adopted members (subreaper)
                pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # pragma: no cover - a process of the group changed owner
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _set_subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return False


@contextlib.contextmanager
def _stop_on_signals(signals: Sequence[int]) -> Iterator[threading.Event]:
    """An event set by any of ``signals`` inside the block (handlers restored after)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def serve(
    server: UiServer,
    *,
    say: Callable[[str], None],
    links: Callable[[UiServer], list[str]] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> None:
    """Start ``server``, say where it is, and keep it until Ctrl-C, SIGTERM or SIGHUP; then
    stop its whole process group and return.

    Args:
        server: The server, not started.
        say: Prints a line.
        links: More lines once it answers (the study's page), given the server.
        startup_timeout: Seconds it has to answer.

    Raises:
        StudyError: It could not start (see :meth:`UiServer.start`) or exited by itself.
    """
    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        signals.append(signal.SIGHUP)  # a closed terminal: the server has no terminal of its own
    with _stop_on_signals(signals) as stop:
        try:
            if not server.start(timeout=startup_timeout, cancel=stop):
                return
            say(f"{server.command.name} (process group {server.pgid}): {server.url}")
            for line in links(server) if links is not None else []:
                say(line)
            say("Ctrl-C stops it.")
            while not stop.wait(_POLL_S * 2.5):
                if not server.running():
                    code = server.process.returncode if server.process is not None else None
                    raise StudyError(
                        f"the {server.command.name} exited by itself with code {code}; its "
                        f"last output:\n{server.output_tail()}"
                    )
        finally:
            server.stop()


def _get_json(url: str) -> Any:
    """The JSON at ``url``, or ``None`` when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def mlflow_experiment_links(study: str) -> Callable[[UiServer], list[str]]:
    """The line with the URL of the runs of the MLflow experiment named ``study`` (its id
    asked of the server)."""

    def links(server: UiServer) -> list[str]:
        query = urllib.parse.urlencode({"experiment_name": study})
        found = _get_json(f"{server.url}api/2.0/mlflow/experiments/get-by-name?{query}")
        experiment = (found or {}).get("experiment")
        if not experiment:
            return [f"no MLflow experiment named {study!r} yet: run the search first"]
        # MLflow 3 opens an experiment on its GenAI overview; the runs (trials) are the table of
        # its model-training view.
        page = f"#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning"
        return [f"experiment {study!r}: {server.url}{page}"]

    return links


def dashboard_study_links(study: str) -> Callable[[UiServer], list[str]]:
    """The line with the URL of the study ``study`` in optuna-dashboard."""

    def links(server: UiServer) -> list[str]:
        found = _get_json(f"{server.url}api/studies") or {}
        # optuna-dashboard 0.21 calls the list `study_summaries` (a rename to `studies` is planned).
        listed = found.get("study_summaries", found.get("studies", []))
        ids = [s["study_id"] for s in listed if s.get("study_name") == study]
        if not ids:
            return [f"no study named {study!r} in this storage"]
        return [f"study {study!r}: {server.url}dashboard/studies/{ids[0]}"]

    return links


def serve_study_ui(
    *,
    study: str,
    storage_url: str,
    tracking_uri: str | None,
    artifact_location: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    dashboard: bool = False,
    say: Callable[[str], None] = print,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> None:
    """``paretune ui``: the MLflow UI on a study's tracking store (or optuna-dashboard on its
    storage), on ``host`` (this machine only, by default), until Ctrl-C or SIGTERM.

    A tracking server (``http://...``) needs no UI started: its URL is said instead.

    Args:
        study: The study's name (the MLflow experiment's).
        storage_url: The Optuna storage (``--dashboard``).
        tracking_uri: The MLflow tracking URI.
        artifact_location: Where the store keeps artifacts (the embedded store's
            ``mlartifacts`` directory); default: beside an SQLite store's file.
        host: The interface to bind.
        port: The port (``None``: 5000 for MLflow, 8080 for optuna-dashboard; 0: any free).
        dashboard: optuna-dashboard instead of the MLflow UI.
        say: Prints a line.
        startup_timeout: Seconds the server has to answer.

    Raises:
        StudyError: The store does not exist, the port is in use, or the server failed.
    """
    kind = "dashboard" if dashboard else "mlflow"
    if port is None:
        port = DEFAULT_PORTS[kind]
    elif port == 0:
        port = free_port(host)
    if dashboard:
        _check_exists(storage_url, "Optuna storage")
        command = dashboard_command(storage_url, host=host, port=port)
        links = dashboard_study_links(study)
    else:
        if tracking_uri is None:
            raise StudyError(f"study {study!r} has no MLflow tracking URI; set `tracking_uri`.")
        if tracking_uri.startswith(("http://", "https://")):
            say(f"study {study!r} is tracked by the MLflow server {tracking_uri}: open it there")
            return
        _check_exists(tracking_uri, "MLflow tracking store")
        sqlite = _sqlite_file(tracking_uri)
        if artifact_location is None and sqlite is not None:
            artifact_location = (sqlite.parent / "mlartifacts").as_uri()
        command = mlflow_ui_command(
            tracking_uri, host=host, port=port, artifact_root=artifact_location
        )
        links = mlflow_experiment_links(study)
    serve(UiServer(command, host=host, port=port), say=say, links=links,
          startup_timeout=startup_timeout)  # fmt: skip


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, ``None`` for other URLs and in-memory databases."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(name).absolute() if name and name != ":memory:" else None


def _check_exists(url: str, what: str) -> None:
    """Raise where ``url`` is an SQLite file or a directory store that does not exist: a
    server would create an empty one instead of showing the study."""
    path = _sqlite_file(url)
    if path is None and "://" not in url:
        path = Path(url).absolute()  # a directory store (MLflow's file store)
    elif url.startswith("file://"):
        path = Path(urllib.parse.urlparse(url).path)
    if path is not None and not path.exists():
        raise StudyError(
            f"there is no {what} at {str(path)!r} (from {url!r}); run the search first, or "
            "point the spec at the store that holds it."
        )

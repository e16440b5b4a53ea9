"""A throwaway PostgreSQL server for tests: Debian's binaries, 127.0.0.1 only, stopped by pid.

:func:`start_server` runs ``initdb`` into a fresh directory and starts ``postgres`` on a free
port of 127.0.0.1 as a child process; :meth:`PostgresServer.stop` stops that process by its id
(SIGINT, PostgreSQL's fast shutdown, then SIGKILL) and removes the directory. As root the
server runs as the ``postgres`` user, since PostgreSQL refuses to run as root.

:func:`unavailable` says why no server can be started here (no binaries, no psycopg2, no user
to run as); the fixtures skip with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PostgresServer", "find_bin_dir", "start_server", "unavailable"]

HOST = "127.0.0.1"
SERVER_USER = "postgres"  # the superuser initdb creates, and the OS user that runs it as root
NOT_INSTALLED = "PostgreSQL is not installed (apt-get install postgresql)"


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin$", path)
    return tuple(int(p) for p in match.group(1).split(".") if p) if match else ()


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: the PATH's first, else the highest
    version under Debian's ``/usr/lib/postgresql/*/bin``."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        real = Path(os.path.realpath(on_path)).parent
        if (real / "postgres").is_file():
            return real
    candidates = [
        d
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres"))
    ]
    if not candidates:
        return None
    return Path(max(candidates, key=_version_key))


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the ``postgres`` user (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid, "extra_groups": []}


def unavailable() -> str | None:
    """Why no test server can be started on this machine, or ``None`` when one can."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install 'paretune[postgres]')"
    if find_bin_dir() is None:
        return NOT_INSTALLED
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (
                f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as "
                "(PostgreSQL refuses to run as root)"
            )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; ``url(db)`` is the SQLAlchemy URL of one of its databases."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    _stopped: bool = field(default=False, repr=False)
    _databases: int = field(default=0, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{SERVER_USER}@{HOST}:{self.port}/{database}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no server log)"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(
            host=HOST, port=self.port, user=SERVER_USER, dbname=database, connect_timeout=5
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def new_database(self, label: str = "") -> str:
        """Create a database of its own (named after ``label``) and return its URL."""
        self._databases += 1
        return self.create_database(
            f"t{self._databases}_{re.sub(r'[^a-z0-9_]', '_', label.lower())}"[:63]
        )

    def stop(self, timeout: float = 30.0, *, remove: bool = True) -> None:
        """Stop the server by its process id and remove its directory (unless told not to)."""
        if not self._stopped:
            self._stopped = True
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGINT)  # fast shutdown: ends the sessions
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                    self.process.wait(timeout=timeout)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _write_config(data: Path) -> None:
    # Trust, but only over the socket directory and 127.0.0.1: nothing else can reach it.
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="ascii"
    )


def start_server(*, timeout: float = 60.0, attempts: int = 3) -> PostgresServer:
    """initdb into a fresh directory and start ``postgres`` on a free port of 127.0.0.1.

    Raises:
        RuntimeError: initdb failed, or the server did not accept connections within
            ``timeout`` seconds (the message holds the server's log).
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    bin_dir = find_bin_dir()
    assert bin_dir is not None  # unavailable() checked
    run_as = _run_as()
    root = Path(tempfile.mkdtemp(prefix="paretune-pg-"))  # under /tmp: the server user can enter
    try:
        if run_as:
            os.chown(root, pwd.getpwnam(SERVER_USER).pw_uid, run_as["group"])
        data, sockets = root / "data", root / "sock"
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SERVER_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            **run_as,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        _write_config(data)
        sockets.mkdir()
        if run_as:
            os.chown(sockets, pwd.getpwnam(SERVER_USER).pw_uid, run_as["group"])
        error = ""
        for _ in range(attempts):
            server = _launch(bin_dir, root, data, sockets, run_as)
            error = _wait_ready(server, timeout) or ""
            if not error:
                return server
            server.stop(remove=False)
            if "could not bind" not in error:
                break  # else another process took the port: try another one
        raise RuntimeError(error)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _launch(
    bin_dir: Path, root: Path, data: Path, sockets: Path, run_as: dict[str, Any]
) -> PostgresServer:
    port = _free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-k",
                str(sockets),
                "-h",
                HOST,
                "-p",
                str(port),
                # A test server: durability is not needed, speed is.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the tests does not kill it before teardown
            **run_as,
        )
    return PostgresServer(process=process, port=port, root=root, log=log)


def _wait_ready(server: PostgresServer, timeout: float) -> str | None:
    """``None`` once the server accepts connections, else what went wrong with its log."""
    import psycopg2

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            return f"postgres exited with code {code} at start:\n{server.log_text()}"
        try:
            server.connect().close()
            return None
        except psycopg2.OperationalError as err:
            last = err
        time.sleep(0.1)
    return (
        f"postgres (pid {server.pid}) accepted no connection on {HOST}:{server.port} within "
        f"{timeout:.0f} s (last error: {last}); server log:\n{server.log_text()}"
    )

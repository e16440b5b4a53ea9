"""A throwaway multi-node Ray cluster for tests: ``ray start`` processes on 127.0.0.1, stopped
by their session id (never ``ray stop``, which would stop every Ray cluster on the machine).

:func:`start_cluster` runs ``ray start --head`` on a free port, and :meth:`RayCluster.add_node`
joins more nodes with ``ray start --address``, each with its own CPUs, a custom resource and a
node name; every ``ray start`` runs in a session of its own, so the processes its node starts
(GCS, raylet, agents, workers: Ray moves workers to process groups of their own, but not to
other sessions) are found by that session id. :meth:`RayCluster.raylet_pid` finds a node's
raylet (to kill it); :meth:`RayCluster.stop` stops every process of every node.

Process ids wrap around within minutes on a busy machine (``pid_max`` 32768), so a session id is
only trusted while its number is reserved: each ``ray start`` process is waited for without
being reaped (``waitid(WNOWAIT)``), and its zombie keeps the number until :meth:`RayCluster.stop`
has stopped the session and reaps it.

Both nodes share the host and its IP address here; ``--node-name`` tells them apart in Ray,
and the environment variable ``PARETUNE_TEST_NODE`` (inherited by the node's workers) tells an
objective which node runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NODE_ENV", "RayCluster", "free_port", "start_cluster", "stop_group", "wait_unreaped"]

HOST = "127.0.0.1"
NODE_ENV = "PARETUNE_TEST_NODE"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ray_command() -> str:
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed (pip install 'ray[tune]')")
    return found


def session_processes(sid: int) -> dict[int, str]:
    """The live (not zombie) processes of session ``sid``: pid -> command name."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            out[int(entry)] = comm
    return out


def wait_unreaped(pid: int, timeout: float) -> int | None:
    """The exit code of child ``pid`` once it exits (``None``: still running after ``timeout``
    seconds), leaving it a zombie: its pid, which is also its session's id, stays reserved."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        time.sleep(0.05)
    return None


def stop_group(process: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group that ``process`` leads (started with ``start_new_session``:
    a driver and what its local Ray cluster left), then reap ``process``.

    ``process`` must not have been reaped yet (wait for it with :func:`wait_unreaped`): until
    then its pid, the group's id, cannot be handed to another process, whose group a late
    ``killpg`` would otherwise kill (a PostgreSQL server of another test, say).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class RayNode:
    """One ``ray start``: its node name and the session its processes run in."""

    name: str
    process: subprocess.Popen[bytes]  # `ray start`: exited, not reaped until stop()
    log: Path

    @property
    def sid(self) -> int:
        return self.process.pid

    def processes(self) -> dict[int, str]:
        return session_processes(self.sid)


@dataclass
class RayCluster:
    """A running cluster: ``address`` is the head's GCS address (``127.0.0.1:PORT``)."""

    port: int
    root: Path
    env: dict[str, str]
    nodes: list[RayNode] = field(default_factory=list)
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def node(self, name: str) -> RayNode:
        return next(n for n in self.nodes if n.name == name)

    def _start(self, name: str, args: list[str], timeout: float) -> RayNode:
        log = self.root / f"{name}.log"
        env = {**self.env, NODE_ENV: name}
        # Each node's agents listen on ports of their own (both nodes share the host).
        ports = [
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [_ray_command(), "start", *args, *ports, "--node-name", name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        node = RayNode(name=name, process=process, log=log)
        self.nodes.append(node)  # stopped with the others even if it fails to start
        code = wait_unreaped(process.pid, timeout)
        if code is None:
            process.kill()
        if code != 0:
            raise RuntimeError(
                f"`ray start` of node {name!r} failed ({code}):\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        if self.raylet_pid(name) is None:
            raise RuntimeError(f"node {name!r} has no raylet after `ray start`")
        return node

    def add_node(
        self, name: str, *, num_cpus: int, resources: dict[str, float] | None = None
    ) -> RayNode:
        """Join a node with ``ray start --address`` (its own CPUs and custom resources)."""
        return self._start(
            name,
            [
                "--address",
                self.address,
                "--node-ip-address",
                HOST,
                "--num-cpus",
                str(num_cpus),
                "--resources",
                json.dumps(resources or {}),
                "--disable-usage-stats",
            ],
            timeout=120,
        )

    def raylet_pid(self, name: str) -> int | None:
        """The pid of node ``name``'s raylet, or ``None`` when it is not running."""
        pids = [pid for pid, comm in self.node(name).processes().items() if comm == "raylet"]
        return pids[0] if len(pids) == 1 else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process of every node (SIGTERM, then SIGKILL) and remove the directory."""
        if self._stopped:
            return
        self._stopped = True
        for sig, wait in ((signal.SIGTERM, timeout / 2), (signal.SIGKILL, timeout / 2)):
            for node in reversed(self.nodes):
                for pid in node.processes():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(n.processes() for n in self.nodes):
                time.sleep(0.1)
        for node in self.nodes:  # frees the session ids
            node.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> dict[int, str]:
        """The processes of the cluster still running (none after :meth:`stop`)."""
        out: dict[int, str] = {}
        for node in self.nodes:
            out.update(node.processes())
        return out


def start_cluster(
    *, num_cpus: int, resources: dict[str, float] | None = None, env: dict[str, str] | None = None
) -> RayCluster:
    """``ray start --head`` on a free port of 127.0.0.1, without dashboard or usage stats.

    ``env`` is added to the environment of every node's processes (and so of their workers).
    """
    # A short directory: Ray's socket paths under it must stay below 107 characters.
    root = Path(tempfile.mkdtemp(prefix="ptray-", dir="/tmp"))
    cluster = RayCluster(
        port=free_port(),
        root=root,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
    )
    try:
        cluster._start(
            "head",
            [
                "--head",
                "--node-ip-address",
                HOST,
                "--port",
                str(cluster.port),
                "--num-cpus",
                str(num_cpus),
                "--resources",
                json.dumps(resources or {}),
                "--include-dashboard=false",
                "--dashboard-port",
                str(free_port()),
                "--disable-usage-stats",
                "--temp-dir",
                str(root / "ray"),
            ],
            timeout=120,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster

"""``paretune ui`` as a real subprocess: a study to serve, the lines it prints, its stop."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: Seconds ``paretune ui`` has to print its URLs (the MLflow UI starts in 10-20 s on 2 busy cores).
STARTUP_S = 240.0


def study_spec(directory: Path, *, trials: int = 6, study: str = "ui-study") -> Path:
    """A spec of a quick two-objective study (BraninCurrin, random proposals) in
    ``directory``, and the study run to its budget."""
    from paretune.cli import main

    spec = {
        "study": study,
        "run_dir": str(directory / "run"),
        "objective": {"type": "branin_currin"},
        "controller": {"name": "random", "seed": 0},
        "budget": {"trials": trials},
    }
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert main(["run", str(path), "--no-progress"]) == 0
    return path


class UiProcess:
    """``paretune ui SPEC ARGS`` started in a session of its own, its output read line by
    line as it comes (a thread puts each line on a queue)."""

    def __init__(self, spec: Path, *args: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paretune.cli", "ui", str(spec), *args],
            cwd=cwd or ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)  # the output ended: the process exits

    def wait_for(self, pattern: str, timeout: float = STARTUP_S) -> re.Match[str]:
        """The first line (from the start) that matches ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if m := re.search(pattern, line):
                return m
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout:g} s:\n" + self.output
                ) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"paretune ui ended without {pattern!r}:\n" + self.output)
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def finish(self, timeout: float = 120.0) -> int:
        """Its exit code, once it exits by itself, with all its output read."""
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        self._queue.put(None)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def served(self) -> tuple[str, int, dict[str, str]]:
        """Once it serves: the server's URL, its process group, and the study's page by kind
        (``experiment``, ``study``)."""
        m = self.wait_for(r"\(process group (\d+)\): (http://\S+)")
        self.wait_for(r"^Ctrl-C stops it")
        pages = {}
        for line in self.lines:
            if p := re.match(r"^(experiment|study) '[^']*': (http://\S+)$", line):
                pages[p[1]] = p[2]
        return m[2], int(m[1]), pages

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``signum`` to ``paretune ui`` alone; its exit code."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """After a failed test: nothing left behind (the server's group, then this one)."""
        for line in self.lines:
            if m := re.search(r"\(process group (\d+)\)", line):
                _kill_group(int(m[1]))
        _kill_group(self.proc.pid)
        self.proc.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_gone(pgid: int) -> bool:
    """Whether no process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def get(url: str, **kwargs: Any) -> tuple[int, bytes]:
    """The status and the body of a GET of ``url``."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30, **kwargs) as response:
        return response.status, response.read()

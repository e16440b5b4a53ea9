"""What the benchmarks share: the machine and package versions a result was measured with,
JSON-lines result records, seed lists, mean ± standard error and markdown tables.

The scripts import it by name (``from _harness import ...``): ``benchmarks/`` is on
``sys.path`` when one of them runs as a script. Importing it puts the checkout's root on
``sys.path`` as well, so the scripts run from a checkout without installing paretune.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

if str(ROOT) not in sys.path:  # run as a script from a checkout without installing paretune
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------
# Machine and versions


# The CPU features a result depends on that the model name does not tell ("AMD EPYC" has been
# both): bf16 is computed only with AVX512-BF16 or AMX; on the AVX2-only machine of 2026-12-01
# it was emulated, several times slower than fp32, and the AutoPEFT search ran in fp32
# (README.md).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@cache
def machine() -> dict[str, Any]:
    """``cpus``, ``cpu_model``, ``platform`` and ``cpu_flags`` (those of :data:`CPU_FLAGS`
    the CPU has, from ``/proc/cpuinfo``; None where there is none to read)."""
    info: dict[str, str] = {}  # the first value of each key (the first CPU's)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = [f for f in CPU_FLAGS if f in info["flags"].split()] if "flags" in info else None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "cpu_flags": flags,
    }


def machine_text(m: dict[str, Any]) -> str:
    """``"2 CPUs (AMD EPYC ...)"`` for a :func:`machine` dict (also one read from a record)."""
    return f"{m['cpus']} CPUs ({m['cpu_model']})"


def versions(*dists: str, git: bool = False, omit_missing: bool = False) -> dict[str, str | None]:
    """Python's version, then each distribution's (``None`` where it is not installed, or left
    out with ``omit_missing``), then with ``git`` the checkout's commit as ``paretune_git``.

    A new dict on every call (the look-ups are cached): callers may add to it.
    """
    return dict(_versions(dists, git, omit_missing))


@cache
def _versions(dists: tuple[str, ...], git: bool, omit_missing: bool) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if not omit_missing:
                out[dist] = None
    if git:
        out["paretune_git"] = git_commit()
    return out


def git_commit() -> str | None:
    """The checkout's short commit, ``+dirty`` when ``paretune/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "paretune")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions_text(v: dict[str, str | None], keys: Iterable[str] | None = None) -> str:
    """``"python 3.11.7, torch 2.13.0, ..."`` for ``keys`` (default: all) of a versions dict."""
    keys = v if keys is None else keys
    return ", ".join(f"{k} {v.get(k) or 'not installed'}" for k in keys)


# --------------------------------------------------------------------------------------------
# Records: one JSON object a line, appended as each result is finished


def stamp() -> dict[str, Any]:
    """The fields every record starts its provenance with: ``finished`` and ``argv``."""
    return {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line (values JSON cannot hold as their ``str``), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        # After an interrupted write the file ends in a partial line; start a new one.
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(json.dumps(record, default=str).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def end_session(
    *,
    record: bool,
    results: Path,
    record_version: int,
    header: dict[str, Any],
    rows: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    session: Path,
    keep: bool,
) -> int:
    """The end of a benchmark run with run directories under ``session`` and PASS / FAIL
    checks: append the record (``record``), keep or remove ``session``, and the exit code (1
    when a row has an error or a check failed)."""
    import shutil

    if record:
        append_record(
            results,
            {"record_version": record_version, **stamp(), **header, "rows": rows, "checks": checks},
        )
        print(f"\nrecorded in {results}")
    if keep:
        print(f"run directories kept in {session}")
    else:
        shutil.rmtree(session, ignore_errors=True)
    failed = any(r.get("error") for r in rows) or any(c["result"] == "FAIL" for c in checks)
    return 1 if failed else 0


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``path`` in order (none if it does not exist); invalid lines are skipped
    with a warning on stderr (an interrupted write leaves a partial line: its run is redone)."""
    if not path.exists():
        return []
    records = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"warning: {path}:{number} is not valid JSON; ignored", file=sys.stderr)
    return records


# --------------------------------------------------------------------------------------------
# Command line


def parse_ints(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,5"`` or a mix of both, as a sorted list without repeats."""
    out: list[int] = []
    for part in text.split(","):
        low, sep, high = part.partition("-")
        try:
            out += list(range(int(low), int(high) + 1)) if sep else [int(part)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected integers or ranges like 0-4, got {text!r}"
            ) from None
    return sorted(set(out))


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """``threads`` if given, else the CPUs shared among ``jobs`` parallel runs (at least 1)."""
    return threads or max(1, (os.cpu_count() or 1) // jobs)


# --------------------------------------------------------------------------------------------
# Statistics and tables


@dataclass(frozen=True)
class Stat:
    """Mean and standard error of the mean over ``n`` values (seeds, usually)."""

    mean: float
    se: float  # NaN with one value
    n: int

    def text(self, digits: int) -> str:
        se = "-" if math.isnan(self.se) else f"{self.se:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {se}"


def stat(values: Sequence[float]) -> Stat | None:
    """The :class:`Stat` of ``values`` (sample standard deviation / sqrt(n)); None if empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan
    return Stat(float(arr.mean()), se, len(arr))


def fmt(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, ``"-"`` for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: the header, the ``|---|`` rule, a line a row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines

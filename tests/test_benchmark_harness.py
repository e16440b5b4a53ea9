"""``benchmarks/_harness.py``: the machine and versions the benchmark tables print, the JSONL
records (round trip, interrupted writes, the records already in ``benchmarks/results/``), and
the small statistics and table helpers the scripts share."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Any:
    """Imports a module of ``benchmarks/`` by name, as the scripts import each other."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def harness(bench: Any) -> Any:
    return bench("_harness")


def test_a_record_round_trips_and_values_json_cannot_hold_are_written_as_text(
    harness: Any, tmp_path: Path
) -> None:
    path = tmp_path / "results" / "x.jsonl"  # the folder is created
    first = {"seed": 0, "values": [[0.5, 1.0]], "machine": harness.machine()}
    harness.append_record(path, first)
    harness.append_record(path, {"seed": 1, "cache": tmp_path})

    assert harness.read_records(path) == [first, {"seed": 1, "cache": str(tmp_path)}]
    assert harness.read_records(tmp_path / "missing.jsonl") == []


def test_an_interrupted_write_loses_only_its_own_record(
    harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.jsonl"
    harness.append_record(path, {"seed": 0})
    with path.open("a") as f:
        f.write('{"seed": 1, "val')  # the process died mid-line
    harness.append_record(path, {"seed": 2})

    assert harness.read_records(path) == [{"seed": 0}, {"seed": 2}]
    assert f"{path}:2 is not valid JSON; ignored" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((BENCHMARKS / "results").glob("*.jsonl")), ids=str)
def test_the_recorded_results_are_still_read(harness: Any, path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = harness.read_records(path)

    assert len(records) == len(lines)
    assert all({"finished", "argv", "machine"} <= set(r) for r in records)


def test_the_machine_has_what_the_tables_print(harness: Any) -> None:
    m = harness.machine()

    assert {"cpus", "cpu_model", "platform", "cpu_flags"} <= set(m)
    assert m["cpus"] >= 1 and m["cpu_model"]
    if Path("/proc/cpuinfo").exists():
        assert set(m["cpu_flags"]) <= set(harness.CPU_FLAGS)
    assert harness.machine_text(m) == f"{m['cpus']} CPUs ({m['cpu_model']})"


def test_versions_python_first_then_the_distributions_then_the_commit(harness: Any) -> None:
    v = harness.versions("optuna", "no-such-distribution", git=True)

    assert list(v) == ["python", "optuna", "no-such-distribution", "paretune_git"]
    assert v["optuna"] and v["no-such-distribution"] is None
    assert "no-such-distribution" not in harness.versions("no-such-distribution", omit_missing=True)
    assert harness.versions_text(v, ["python", "no-such-distribution"]) == (
        f"python {v['python']}, no-such-distribution not installed"
    )
    # Callers add to the dict (mobo.py: the sources' hash); the next call is not affected.
    v["paretune_source"] = "v2:0"
    assert "paretune_source" not in harness.versions("optuna", "no-such-distribution", git=True)


def test_the_overhead_table_prints_the_harness_machine_and_versions(bench: Any) -> None:
    overhead, harness = bench("overhead"), bench("_harness")
    header = {
        "trials": 4,
        "seed": 0,
        "ray_cpus": 2,
        "anchor_storage": "memory",
        "loadavg_before": [0.1, 0.1, 0.1],
        "loadavg_after": [0.2, 0.2, 0.2],
        "total_s": 3.0,
        "machine": harness.machine(),
        "versions": harness.versions("optuna", "ray", "mlflow", "paretune", git=True),
    }
    row = {"runner": "ray", "sleep": 2.0, "workers": 2, "trials": 4, "error": "timed out\nlog"}
    lines = overhead.render([row], [], header).splitlines()

    assert lines[2].startswith(f"Machine: {harness.machine_text(header['machine'])}; ")
    header_cells = lines[4].count(" | ") + 1
    assert lines[5] == "|" + "|".join(["---"] * header_cells) + "|"
    assert lines[6].startswith("| ray | 2 | 2 | ERROR: timed out |")
    assert lines[6].count("|") == lines[4].count("|")  # an error row has every column


def test_the_autopeft_record_describes_the_machine_and_what_it_trains_with(bench: Any) -> None:
    m = bench("autopeft").machine_record()

    assert {"cpus", "cpu_model", "platform", "torch_threads", "versions"} <= set(m)
    assert {"python", "torch", "optuna"} <= set(m["versions"])
    assert None not in m["versions"].values()  # what is not installed is left out


def test_seed_lists(harness: Any) -> None:
    assert harness.parse_ints("0-2,5,1") == [0, 1, 2, 5]
    with pytest.raises(argparse.ArgumentTypeError, match="ranges like 0-4"):
        harness.parse_ints("0-x")
    assert harness.threads_per_job(1, 3) == 3
    assert harness.threads_per_job(10**6) == 1


def test_mean_and_standard_error(harness: Any) -> None:
    st = harness.stat([1.0, 2.0, 3.0])

    assert (st.mean, st.n) == (2.0, 3)
    assert st.se == pytest.approx(1 / math.sqrt(3))
    assert st.text(2) == "2.00 ± 0.58"
    assert harness.stat([5.0]).text(1) == "5.0 ± -"  # no spread from one seed
    assert harness.stat([]) is None


def test_table_helpers(harness: Any) -> None:
    assert harness.markdown_table(["a", "b"], [["1", ""]]) == ["| a | b |", "|---|---|", "| 1 |  |"]
    assert [harness.fmt(x, 2) for x in (None, math.nan, 1.234)] == ["-", "-", "1.23"]
    assert json.loads(json.dumps(harness.stamp()))["argv"] == sys.argv

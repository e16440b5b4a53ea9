"""Per-trial overhead of paretune's search loop as a study grows to 10k trials, against Optuna.

    python benchmarks/scale.py                    # SQLite and PostgreSQL, 1k/5k/10k trials
    python benchmarks/scale.py --record           # the same, appended to results/scale.jsonl
    python benchmarks/scale.py --sizes 100,200 --window 50 --storages sqlite   # a smoke test

Every cell grows one study, in a fresh Python process, to the largest of ``--sizes`` trials
(random sampler, seed 0, one float parameter, an objective that returns at once), in stages:
one call per size, each continuing the study of the previous one. The cells, per storage kind:

- ``optuna``: plain Optuna, ``study.ask()`` / ``trial.suggest_float`` / ``study.tell()`` with
  ``RandomSampler`` on a study opened from the storage URL (Optuna's cached RDB storage);
- ``optuna+mlflow``: the same loop, and after each ``tell`` optuna-integration's
  ``MLflowCallback`` (a tracking run per trial: Optuna doing paretune's job); skipped when
  optuna-integration is not installed (``pip install --no-deps optuna-integration``);
- ``paretune``: ``paretune.search.run_search`` with the ``random`` controller and the local
  runner (``n_jobs: 1``: the objective runs in the driver), continued with ``resume=True`` for
  each later size: the search loop users run (budget check, ask with recovery and the duplicate
  check, the MLflow child run started and finished, tell);
- ``paretune+pg-mlflow`` (PostgreSQL only): the same with the MLflow tracking store in a
  database of the same PostgreSQL server instead of ``mlflow.db`` (``--pg-tracking``).

MLflow runs on a SQLite ``mlflow.db`` beside the study unless the cell says otherwise; the
PostgreSQL study of each cell is a database of its own on a throwaway server
(``tests/trials_store/postgres_server.py``: 127.0.0.1, fsync off); without PostgreSQL those
cells are skipped with the reason.

What is measured:

- per-trial time: the wall time between the ends of consecutive trials (perf_counter, taken in
  the loop: Optuna's after ``tell`` and the callback, paretune's in the ``progress`` hook), i.e.
  everything the loop does for one trial; the median and p90 over the last ``--window`` trials
  before each size (the first trials of a stage, after a restart, are never in a window when
  the window is shorter than the stage);
- for paretune's studies at each size: the duplicate check (``TrialsStore._completed_twin`` on
  parameters no trial has: a full look; the first call on a freshly opened store, then the
  median of the next ``REPEATS`` calls with one new trial added before each), and
  ``paretune status SPEC`` and ``paretune export SPEC --format csv`` as subprocesses (wall time,
  Python's start-up and imports included: what a user waits).

Acceptance (issue 23): at the largest size paretune's median per-trial time <= 1.5x plain
Optuna's on the same storage, <= 50 ms on SQLite; ``status`` and ``export`` < 5 s each.
The ratio to ``optuna+mlflow`` is printed beside it (MLflow's own per-run cost is in both).

The 1-minute load average is printed before and after: compare numbers from an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

RESULTS = harness.RESULTS_DIR / "scale.jsonl"
RECORD_VERSION = 1
STORAGES = ("sqlite", "postgresql")
CELLS = ("optuna", "optuna+mlflow", "paretune", "paretune+pg-mlflow")
IDLE_LOAD = 0.5
REPEATS = 5  # warm duplicate checks per size
# Acceptance (issue 23).
MAX_RATIO = 1.5
MAX_SQLITE_S = 0.050
MAX_CLI_S = 5.0

OBJECTIVE_SOURCE = '''\
"""The benchmark's objective: returns ``x`` as the loss, at once."""


def objective(params, ctx):
    return {"loss": float(params["x"])}
'''


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="study sizes (trials)")
    parser.add_argument("--window", type=int, default=200, help="trials before each size")
    parser.add_argument("--storages", default=",".join(STORAGES), help="of: sqlite, postgresql")
    parser.add_argument(
        "--cells", default="optuna,optuna+mlflow,paretune", help="of: " + ", ".join(CELLS)
    )
    parser.add_argument(
        "--pg-tracking",
        action="store_true",
        help="also paretune with the MLflow tracking store on the PostgreSQL server",
    )
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run every cell at once (the anchors and paretune under the same load)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell-timeout", type=float, default=1800, help="seconds per cell")
    parser.add_argument("--out-dir", default=os.path.join(tempfile.gettempdir(), "paretune-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    parser.add_argument("--results", default=str(RESULTS), help="the JSONL file of --record")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one cell, in a fresh process
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))

    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    if not sizes or args.window < 1 or sizes[0] < args.window:
        parser.error(f"every size must be >= --window ({args.window}), got {sizes}")
    storages = [s for s in args.storages.split(",") if s]
    cells = [c for c in args.cells.split(",") if c]
    if args.pg_tracking and "paretune+pg-mlflow" not in cells:
        cells.append("paretune+pg-mlflow")
    bad = sorted(set(storages) - set(STORAGES)) + sorted(set(cells) - set(CELLS))
    if bad:
        parser.error(f"unknown storages or cells {bad}")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=out_dir))
    load_before = os.getloadavg()
    info = harness.machine()
    print(
        f"paretune scale: cells {cells} on {storages}, sizes {sizes}, window {args.window}, "
        f"in {session}\nmachine: {harness.machine_text(info)}; 1-min load average "
        f"{load_before[0]:.2f}",
        flush=True,
    )
    if load_before[0] > IDLE_LOAD:
        print(f"WARNING: the 1-min load average is {load_before[0]:.2f} (> {IDLE_LOAD})")

    t_all = time.monotonic()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    integration = harness.versions("optuna-integration")["optuna-integration"]
    servers = []
    configs: list[dict[str, Any]] = []
    # A stop (SIGTERM, Ctrl-C) still stops the cells and the PostgreSQL server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for storage in storages:
            server = None
            if storage == "postgresql":
                pg = _postgres_module()
                reason = pg.unavailable()
                if reason is None:
                    try:
                        server = pg.start_server()
                        servers.append(server)
                    except RuntimeError as err:
                        reason = f"the server did not start: {str(err).splitlines()[0]}"
                if reason is not None:
                    skipped.append(f"postgresql cells skipped: {reason}")
                    print(skipped[-1], flush=True)
                    continue
            for cell in cells:
                if cell == "paretune+pg-mlflow" and storage != "postgresql":
                    continue
                if cell == "optuna+mlflow" and integration is None:
                    skipped.append(
                        "optuna+mlflow skipped: optuna-integration is not installed "
                        "(pip install --no-deps optuna-integration)"
                    )
                    continue
                run_dir = session / f"{storage}-{cell.replace('+', '-')}"
                run_dir.mkdir(parents=True)
                config: dict[str, Any] = {
                    "cell": cell,
                    "storage_kind": storage,
                    "sizes": sizes,
                    "window": args.window,
                    "seed": args.seed,
                    "run_dir": str(run_dir),
                    "storage": f"sqlite:///{run_dir / 'study.db'}",
                    "tracking_uri": f"sqlite:///{run_dir / 'mlflow.db'}",
                }
                if server is not None:
                    label = cell.replace("+", "_").replace("-", "_")
                    config["storage"] = server.new_database(f"study_{label}")
                    if cell == "paretune+pg-mlflow":
                        config["tracking_uri"] = server.new_database(f"mlflow_{label}")
                configs.append(config)
        if args.parallel:
            print(f"{len(configs)} cells at once ...", flush=True)
            rows = run_children(configs, args.cell_timeout)
        else:
            for config in configs:
                print(f"[{config['storage_kind']} {config['cell']}] ...", flush=True)
                rows += run_children([config], args.cell_timeout)
        for row in rows:
            if row.get("error"):
                print(f"[{row['storage']} {row['cell']}] ERROR: {row['error']}", flush=True)
            else:
                reached = row["stages"][-1]["n"] if row["stages"] else 0
                print(
                    f"[{row['storage']} {row['cell']}] {reached} trials in {row['wall_s']:.0f} s",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    total_s = time.monotonic() - t_all
    load_after = os.getloadavg()

    checks = acceptance(rows, sizes[-1])
    header = {
        "sizes": sizes,
        "window": args.window,
        "seed": args.seed,
        "parallel": args.parallel,
        "cell_timeout_s": args.cell_timeout,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "total_s": total_s,
        "skipped": skipped,
        "machine": info,
        "versions": harness.versions(
            "optuna",
            "optuna-integration",
            "mlflow",
            "sqlalchemy",
            "psycopg2-binary",
            "paretune",
            git=True,
        ),
    }
    print()
    print(render(rows, checks, header))
    return harness.end_session(
        record=args.record,
        results=Path(args.results),
        record_version=RECORD_VERSION,
        header=header,
        rows=rows,
        checks=checks,
        session=session,
        keep=args.keep,
    )


def _postgres_module() -> ModuleType:
    """The test suite's throwaway PostgreSQL server (not part of the package)."""
    path = harness.ROOT / "tests" / "trials_store" / "postgres_server.py"
    spec = importlib.util.spec_from_file_location("_scale_postgres_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_children(configs: list[dict[str, Any]], cell_timeout: float) -> list[dict[str, Any]]:
    """Run cells at once, each in a fresh Python process; a cell's last stdout line is its
    result. A cell stops growing its study ``cell_timeout`` seconds after it started."""
    procs = []
    try:
        for config in configs:
            config = {**config, "deadline": time.time() + cell_timeout}
            log = Path(config["run_dir"]) / "child.log"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            with log.open("w") as err:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                    env=env,
                )  # fmt: skip
            procs.append((config, log, proc))
        # A grace after the deadline: the trial then running, and run_search's close.
        return [_result(config, log, proc, 900) for config, log, proc in procs]
    finally:
        for _, _, proc in procs:  # only those still running after an error or a stop
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _result(
    config: dict[str, Any], log: Path, proc: subprocess.Popen[str], grace: float
) -> dict[str, Any]:
    base = {"cell": config["cell"], "storage": config["storage_kind"]}
    try:
        out, _ = proc.communicate(timeout=max(1.0, config["deadline"] + grace - time.time()))
        error = None
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        error = f"timed out (log: {log})"
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    final = [r for r in records if "stages" in r]
    if error is None and (proc.returncode != 0 or not final):
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        error = f"exit status {proc.returncode} (log: {log})\n" + "\n".join(tail)
    if error is not None:  # the sizes it reached before
        return {**base, "stages": [r["stage"] for r in records if "stage" in r], "error": error}
    return {**base, **final[-1]}


# --------------------------------------------------------------------------------------------
# One cell, in a child process


def child(config: dict[str, Any]) -> int:
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")  # MLflowCallback is experimental; MLflow's notices
    grow = _grow_paretune if config["cell"].startswith("paretune") else _grow_optuna
    t0 = time.monotonic()
    stages = grow(config)
    print(json.dumps({"stages": stages, "wall_s": time.monotonic() - t0}), flush=True)
    return 0


class _Clock:
    """Per-trial times: the gaps between consecutive ``tick`` calls (ends of trials)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._last: float | None = None

    def restart(self) -> None:
        self._last = None  # a new stage: its first trial's gap includes the start-up; not kept

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now


def _window(gaps: Sequence[float], window: int) -> dict[str, Any]:
    last = list(gaps[-window:])
    if not last:
        return {"window_n": 0}
    return {
        "window_n": len(last),
        "median_s": statistics.median(last),
        "p90_s": sorted(last)[int(0.9 * (len(last) - 1))],
        "mean_s": statistics.fmean(last),
    }


def _grow_optuna(config: dict[str, Any]) -> list[dict[str, Any]]:
    import optuna

    callback: Callable[[optuna.Study, Any], None] | None = None
    if config["cell"] == "optuna+mlflow":
        from optuna_integration.mlflow import MLflowCallback

        callback = MLflowCallback(tracking_uri=config["tracking_uri"], metric_name="loss")
    study = optuna.create_study(
        study_name="scale",
        storage=config["storage"],
        sampler=optuna.samplers.RandomSampler(seed=config["seed"]),
        direction="minimize",
    )
    clock = _Clock()
    stages = []
    n = 0
    for size in config["sizes"]:
        clock.restart()
        clock.tick()
        stage_gaps = len(clock.gaps)
        while n < size and time.time() < config["deadline"]:
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            frozen = study.tell(trial, x)
            if callback is not None:
                callback(study, frozen)
            n += 1
            clock.tick()
        stages.append({"size": size, "n": n, **_window(clock.gaps[stage_gaps:], config["window"])})
        print(json.dumps({"stage": stages[-1]}), flush=True)
        if n < size:
            break
    return stages


def _grow_paretune(config: dict[str, Any]) -> list[dict[str, Any]]:
    import yaml

    from paretune.search import run_search
    from paretune.spec import load_spec
    from paretune.trials_store import TrialsStore

    run_dir = Path(config["run_dir"])
    objective_file = run_dir / "objective.py"
    objective_file.write_text(OBJECTIVE_SOURCE)
    sizes = config["sizes"]
    data: dict[str, Any] = {
        "study": "scale",
        "run_dir": str(run_dir),
        "storage": config["storage"],
        "tracking_uri": config["tracking_uri"],
        "objective": {
            "type": "python",
            "settings": {"target": f"{objective_file}:objective"},
            "metrics": [{"name": "loss", "direction": "minimize"}],
        },
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "controller": {"name": "random", "seed": config["seed"]},
        "budget": {"trials": sizes[-1], "wall_time": max(1.0, config["deadline"] - time.time())},
        "runner": {"type": "local", "n_jobs": 1},
    }
    spec_file = run_dir / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    plan = load_spec(str(spec_file)).plan()
    clock = _Clock()
    stages: list[dict[str, Any]] = []

    class Progress:
        """Ticks the clock; at each size, the window's times and the study's costs (the
        search waits meanwhile; the next trial's time, which includes that wait, is left out)."""

        n = 0
        last = 0.0

        def update(self, store: Any, trial: Any) -> None:
            clock.tick()
            self.n += 1
            self.last = time.perf_counter()
            if len(stages) < len(sizes) and self.n == sizes[len(stages)]:
                stage = {"size": self.n, "n": self.n, **_window(clock.gaps, config["window"])}
                stage.update(_study_costs(TrialsStore, plan, spec_file, run_dir))
                stages.append(stage)
                print(json.dumps({"stage": stage}), flush=True)
                clock.restart()

    progress = Progress()
    run_search(plan, progress=progress)
    t_close = progress.last or None
    if len(stages) < len(sizes):  # stopped by the cell's time limit
        size = sizes[len(stages)]
        stages.append({"size": size, "n": progress.n, **_window(clock.gaps, config["window"])})
    if t_close is not None:  # run_search's close: the MLflow parent run and the Pareto tags
        stages[-1]["close_s"] = time.perf_counter() - t_close
    return stages


def _study_costs(store_type: Any, plan: Any, spec_file: Path, run_dir: Path) -> dict[str, Any]:
    """The duplicate check on a fresh store and warm, and the CLI's status and export."""
    out: dict[str, Any] = {}
    store = store_type(plan.study, create=False, mlflow=False)
    absent = {"x": -1.0}  # no trial has it: the check looks at every completed trial
    t = time.perf_counter()
    assert store._completed_twin(absent) is None
    out["twin_first_s"] = time.perf_counter() - t
    warm = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        store._completed_twin(absent)
        warm.append(time.perf_counter() - t)
    out["twin_warm_s"] = statistics.median(warm)
    store.storage.remove_session()
    with contextlib.suppress(Exception):
        store.storage.engine.dispose()
    for command in (["status"], ["export", "--format", "csv", "--output", "trials.csv"]):
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "paretune.cli", *command[:1], str(spec_file), *command[1:]],
            cwd=run_dir,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(harness.ROOT)},
        )
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"paretune {command[0]} failed:\n{proc.stderr[-2000:]}")
        out[f"{command[0]}_s"] = seconds
    return out


# --------------------------------------------------------------------------------------------
# Acceptance and the table


def _stage(rows: list[dict[str, Any]], storage: str, cell: str, size: int) -> dict[str, Any] | None:
    for r in rows:
        if (r["storage"], r["cell"]) == (storage, cell):
            for s in r.get("stages", []):
                if s["size"] == size and s["n"] >= size and "median_s" in s:
                    return s
    return None


def acceptance(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(criterion: str, value: float | None, ok: bool, note: str = "") -> None:
        checks.append(
            {
                "criterion": criterion,
                "value": value,
                "note": note,
                "result": "n/a" if value is None else ("PASS" if ok else "FAIL"),
            }
        )

    for storage in STORAGES:
        for cell in ("paretune", "paretune+pg-mlflow"):
            ours = _stage(rows, storage, cell, size)
            if ours is None:
                continue
            plain = _stage(rows, storage, "optuna", size)
            tracked = _stage(rows, storage, "optuna+mlflow", size)
            ratio = None if plain is None else ours["median_s"] / plain["median_s"]
            note = ""
            if tracked is not None:
                note = f"{ours['median_s'] / tracked['median_s']:.2f}x optuna+mlflow"
            check(
                f"{storage} {cell} at {size}: median per-trial <= {MAX_RATIO}x plain optuna",
                ratio,
                ratio is not None and ratio <= MAX_RATIO,
                note,
            )
            if storage == "sqlite":
                value = ours["median_s"]
                check(
                    f"sqlite {cell} at {size}: median per-trial <= {MAX_SQLITE_S * 1000:.0f} ms",
                    value,
                    value <= MAX_SQLITE_S,
                )
            for what in ("status", "export"):
                value = ours.get(f"{what}_s")
                check(
                    f"{storage} {cell} at {size}: `paretune {what}` < {MAX_CLI_S:g} s",
                    value,
                    value is not None and value < MAX_CLI_S,
                )
    return checks


def render(rows: list[dict[str, Any]], checks: list[dict[str, Any]], header: dict[str, Any]) -> str:
    v = header["versions"]
    out = [
        f"Per-trial time as a study grows (random sampler, seed {header['seed']}, one float, "
        f"0 s objective): median and p90 over the last {header['window']} trials before each "
        "size; paretune = run_search, local runner n_jobs 1, MLflow child run per trial.",
        "Versions: " + harness.versions_text(v),
        f"Machine: {harness.machine_text(header['machine'])}; 1-min load average "
        f"{header['loadavg_before'][0]:.2f} before, {header['loadavg_after'][0]:.2f} after; "
        f"all cells {header['total_s']:.0f} s",
        "",
    ]
    table_head = [
        "storage",
        "cell",
        "trials",
        "median ms",
        "p90 ms",
        "x optuna",
        "x optuna+mlflow",
        "twin first ms",
        "twin warm ms",
        "status s",
        "export s",
        "close s",
    ]
    cells = []
    for r in rows:
        if r.get("error"):
            first = r["error"].splitlines()[0]
            cells.append([r["storage"], r["cell"], f"ERROR: {first}", *[""] * 9])
        for s in r.get("stages", []):
            plain = _stage(rows, r["storage"], "optuna", s["size"])
            tracked = _stage(rows, r["storage"], "optuna+mlflow", s["size"])

            def ratio(
                anchor: dict[str, Any] | None, s: dict[str, Any] = s, cell: str = r["cell"]
            ) -> str:
                if anchor is None or "median_s" not in s or cell.startswith("optuna"):
                    return "-"
                return f"{s['median_s'] / anchor['median_s']:.2f}"

            def ms(x: float | None) -> str:
                return "-" if x is None else f"{x * 1000:.1f}"

            reached = str(s["size"]) if s["n"] >= s["size"] else f"{s['n']} of {s['size']}"
            cells.append(
                [
                    r["storage"],
                    r["cell"],
                    reached,
                    ms(s.get("median_s")),
                    ms(s.get("p90_s")),
                    ratio(plain),
                    ratio(tracked),
                    ms(s.get("twin_first_s")),
                    ms(s.get("twin_warm_s")),
                    harness.fmt(s.get("status_s"), 2),
                    harness.fmt(s.get("export_s"), 2),
                    harness.fmt(s.get("close_s"), 1),
                ]
            )
    out += harness.markdown_table(table_head, cells)
    if checks:
        out += ["", "Acceptance:"]
        for c in checks:
            value = "-" if c["value"] is None else f"{c['value']:.3f}"
            note = f"; {c['note']}" if c.get("note") else ""
            out.append(f"- {c['result']}: {c['criterion']} ({value}{note})")
    for line in header["skipped"]:
        out.append(f"- {line}")
    for r in rows:
        if r.get("error"):
            out += ["", f"{r['storage']} {r['cell']} failed:", r["error"]]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

"""Per-trial overhead and throughput of paretune's runners, against a plain Optuna loop.

    python benchmarks/overhead.py             # optuna, local, ray; 0 s and 2 s; 1 and 2 workers
    python benchmarks/overhead.py --record    # the same, appended to results/overhead.jsonl
    python benchmarks/overhead.py --runners local,optuna --trials 6   # a quick smoke test

Every run is one search of ``--trials`` trials (random sampler, seed 0, one float parameter)
whose objective sleeps ``--sleeps`` seconds and returns the parameter. The runs are:

- ``optuna``: the anchor, a plain ``optuna.create_study(...).optimize(objective, n_trials,
  n_jobs=workers)`` on a SQLite study of its own (``--anchor-storage memory`` for an in-memory
  one), same sampler, same objective; no MLflow;
- ``local``: ``paretune.search.run_search`` with ``runner: {type: local, n_jobs: workers}``;
- ``ray``: ``run_search`` with ``runner: {type: ray, num_cpus: 2, max_concurrent: workers,
  resources: {cpu: 1, gpu: 0}, reuse_actors: true}`` (a local Ray cluster per run).

paretune runs keep MLflow on, as users run them (a SQLite ``mlflow.db`` in the run directory;
one parent run per study, a child run per trial). Each run is a fresh Python process, so the
start-up includes what a user's ``paretune run`` pays (importing Ray, starting the cluster).

What is measured, from the trials' ``datetime_start``/``datetime_complete`` in the study the run
leaves and the wall clock of the child process:

- startup: from the call (``run_search`` / ``create_study``) to the first trial's start;
- first result: from the call to the first trial's completion (Ray's worker start is here);
- per-trial overhead (1 worker): ``(complete_i - complete_{i-1}) - sleep`` for consecutive
  trials, median and p90 over the trials after the first 2; and the total wall time / n;
- throughput: trials per second from the first trial's start to the last completion; for more
  than one worker, the ratio to the 1-worker run of the same runner and objective (the
  acceptance criterion). It includes the workers' warm-up (the local runner spawns its worker
  processes, Ray starts its actors, when the first trials are already started), so it also
  shows the steady throughput: ``(n - w) / (complete_n - complete_w)`` with ``w`` workers,
  i.e. the completions after the first ``w``, and its ratio to 1 worker.

The trials do not use the CPU (they sleep), but Ray starts its worker processes at nice 15
(``RAY_worker_niceness``): compare numbers taken on an otherwise idle machine only. The 1-minute
load average is printed before and after, with a warning above 0.5.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script

RESULTS = harness.RESULTS_DIR / "overhead.jsonl"
RUNNERS = ("optuna", "local", "ray")
RECORD_VERSION = 1
SKIP_FIRST = 2  # per-trial overhead is measured after the first 2 trials (start-up)
IDLE_LOAD = 0.5
# Acceptance (the issue): 2 workers on 2 cores, 2 s objective, >= 1.8x the 1-worker throughput;
# Ray's median per-trial overhead for the 0 s objective after start-up < 0.5 s.
MIN_SPEEDUP = 1.8
MAX_RAY_OVERHEAD = 0.5

OBJECTIVE_SOURCE = '''\
"""The benchmark's objective: sleep ``settings["sleep"]`` seconds, return ``x`` as the loss."""

import time


def objective(params, ctx):
    time.sleep(float(ctx.settings.get("sleep", 0.0)))
    return {"loss": float(params["x"])}
'''


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runners", default=",".join(RUNNERS), help="of: " + ", ".join(RUNNERS))
    parser.add_argument("--sleeps", default="0,2", help="objective seconds, comma-separated")
    parser.add_argument("--trials", type=int, default=30, help="trials per run")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="concurrent trials (local n_jobs, ray max_concurrent, optuna n_jobs)",
    )
    parser.add_argument(
        "--parallel-zero",
        action="store_true",
        help="also run the 0 s objective with more than 1 worker (default: 1 worker only)",
    )
    parser.add_argument(
        "--ray-cpus", type=int, default=None, help="the local Ray cluster's CPUs (default 2)"
    )
    parser.add_argument("--anchor-storage", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out-dir", default=os.path.join(tempfile.gettempdir(), "paretune-overhead")
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    parser.add_argument("--results", default=str(RESULTS), help="the JSONL file of --record")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run, in a fresh process
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))

    runners = [r for r in args.runners.split(",") if r]
    unknown = sorted(set(runners) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown runners {unknown}; choose from {', '.join(RUNNERS)}")
    sleeps = [float(s) for s in args.sleeps.split(",") if s]
    workers = sorted({int(w) for w in args.workers.split(",") if w})
    if args.trials <= SKIP_FIRST + 1:
        parser.error(f"--trials must be > {SKIP_FIRST + 1}")
    ray_cpus = args.ray_cpus or max(2, *workers)

    configs = [
        {"runner": runner, "sleep": sleep, "workers": w}
        for sleep in sleeps
        for w in workers
        if w == 1 or sleep > 0 or args.parallel_zero
        for runner in runners
    ]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=out_dir))

    load_before = os.getloadavg()
    info = harness.machine()
    print(
        f"paretune runner overhead: {len(configs)} runs of {args.trials} trials in {session}\n"
        f"machine: {harness.machine_text(info)}; 1-min load average "
        f"{load_before[0]:.2f}",
        flush=True,
    )
    if load_before[0] > IDLE_LOAD:
        print(
            f"WARNING: the 1-min load average is {load_before[0]:.2f} (> {IDLE_LOAD}): other work "
            "is running; Ray's workers run at nice 15 and the timings are not comparable with "
            "an idle machine's",
            flush=True,
        )
    estimate = sum(args.trials * c["sleep"] / c["workers"] for c in configs)
    print(f"the objectives alone sleep {estimate / 60:.1f} min in total", flush=True)

    t_all = time.monotonic()
    rows = []
    for i, config in enumerate(configs, 1):
        config = {
            **config,
            "trials": args.trials,
            "seed": args.seed,
            "ray_cpus": ray_cpus,
            "anchor_storage": args.anchor_storage,
            "run_dir": str(
                session / f"{config['runner']}-s{config['sleep']:g}-w{config['workers']}"
            ),
        }
        label = f"{config['runner']} {config['sleep']:g} s x{config['workers']}"
        print(f"[{i}/{len(configs)}] {label} ...", end=" ", flush=True)
        row = run_child(config, args.timeout)
        rows.append(row)
        if row.get("error"):
            print(f"ERROR: {row['error']}", flush=True)
        else:
            print(
                f"{row['complete']}/{row['trials']} complete, wall {row['wall_s']:.1f} s, "
                f"{row['throughput']:.3f} trials/s",
                flush=True,
            )
    total_s = time.monotonic() - t_all
    load_after = os.getloadavg()

    add_ratios(rows)
    checks = acceptance(rows)
    header = {
        "trials": args.trials,
        "seed": args.seed,
        "ray_cpus": ray_cpus,
        "anchor_storage": args.anchor_storage,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "total_s": total_s,
        "machine": info,
        "versions": harness.versions("optuna", "ray", "mlflow", "paretune", git=True),
    }
    print()
    print(render(rows, checks, header))
    if load_before[0] > IDLE_LOAD:
        print(
            f"\nWARNING: measured with a 1-min load average of {load_before[0]:.2f} before the "
            f"runs (> {IDLE_LOAD}); rerun on an idle machine before recording numbers."
        )
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


# --------------------------------------------------------------------------------------------
# One run, in a child process


def run_child(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one configuration in a fresh Python process; its last stdout line is the result."""
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "child.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config)]
    base = {k: config[k] for k in ("runner", "sleep", "workers", "trials")}
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The child leads its own process group (Ray's processes included): end that group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {**base, "error": f"timed out after {timeout:.0f} s (log: {log})"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        return {
            **base,
            "error": f"exit status {proc.returncode} (log: {log})\n" + "\n".join(tail),
        }
    return {**base, **json.loads(lines[-1])}


def child(config: dict[str, Any]) -> int:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    run_dir = Path(config["run_dir"])
    objective_file = run_dir / "objective.py"
    objective_file.write_text(OBJECTIVE_SOURCE)
    study_name = f"overhead-{config['runner']}"
    storage = f"sqlite:///{run_dir / 'study.db'}"

    if config["runner"] == "optuna":
        sleep = float(config["sleep"])

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            time.sleep(sleep)
            return x

        anchor_storage = None if config["anchor_storage"] == "memory" else storage
        t_call = now()
        study = optuna.create_study(
            study_name=study_name,
            storage=anchor_storage,
            sampler=optuna.samplers.RandomSampler(seed=config["seed"]),
            direction="minimize",
        )
        study.optimize(objective, n_trials=config["trials"], n_jobs=config["workers"])
        t_end = now()
        trials = study.get_trials(deepcopy=False)
    else:
        from paretune.search import run_search
        from paretune.spec import load_spec

        if config["runner"] == "local":
            runner: dict[str, Any] = {"type": "local", "n_jobs": config["workers"]}
        else:
            runner = {
                "type": "ray",
                "num_cpus": config["ray_cpus"],
                "max_concurrent": config["workers"],
                "resources": {"cpu": 1, "gpu": 0},
                "reuse_actors": True,
            }
        spec = load_spec(
            {
                "study": study_name,
                "run_dir": str(run_dir),
                "objective": {
                    "type": "python",
                    "settings": {"target": f"{objective_file}:objective", "sleep": config["sleep"]},
                    "metrics": [{"name": "loss", "direction": "minimize"}],
                },
                "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                "controller": {"name": "random", "seed": config["seed"]},
                "budget": {"trials": config["trials"]},
                "runner": runner,
            }
        )
        t_call = now()
        run_search(spec)
        t_end = now()
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(
            deepcopy=False
        )
    result = measure(trials, float(config["sleep"]), int(config["workers"]), t_call, t_end)
    if config["runner"] != "optuna":
        result["mlflow_db"] = (run_dir / "mlflow.db").exists()
    print(json.dumps(result), flush=True)
    return 0


def now() -> float:
    # Optuna stamps trials with the naive local ``datetime.now()``; so do we.
    return dt.datetime.now().timestamp()


def measure(
    trials: Sequence[Any], sleep: float, workers: int, t_call: float, t_end: float
) -> dict[str, Any]:
    done = [t for t in trials if t.state.name == "COMPLETE" and t.datetime_complete is not None]
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    out: dict[str, Any] = {
        "complete": len(done),
        "states": states,
        "wall_s": t_end - t_call,
        "loadavg_end": os.getloadavg()[0],
    }
    if not done:
        return {**out, "error": f"no trial completed: {states}"}
    starts = sorted(t.datetime_start.timestamp() for t in trials if t.datetime_start is not None)
    completes = sorted(t.datetime_complete.timestamp() for t in done)
    gaps = [b - a - sleep for a, b in itertools.pairwise(completes)]
    after = gaps[SKIP_FIRST - 1 :]  # gap i is between completions i and i+1 (0-based)
    span = completes[-1] - starts[0]
    out.update(
        startup_s=starts[0] - t_call,
        first_result_s=completes[0] - t_call,
        teardown_s=t_end - completes[-1],
        wall_per_trial_s=(t_end - t_call) / len(done),
        throughput=len(done) / span if span > 0 else math.nan,
        steady_throughput=steady_throughput(completes, workers),
        durations_s=[
            t.datetime_complete.timestamp() - t.datetime_start.timestamp()
            for t in sorted(done, key=lambda t: t.number)
        ],
        gaps_s=gaps,
    )
    if workers == 1 and after:
        out["overhead_median_s"] = statistics.median(after)
        out["overhead_p90_s"] = percentile(after, 90)
    return out


def steady_throughput(completes: Sequence[float], workers: int) -> float:
    """Completions per second after the first ``workers`` (the warm-up) completed."""
    if len(completes) <= workers:
        return math.nan
    span = completes[-1] - completes[workers - 1]
    return (len(completes) - workers) / span if span > 0 else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (pos - low)


# --------------------------------------------------------------------------------------------
# The table


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Throughput relative to 1 worker (same runner and objective) and to optuna's."""
    ok = [r for r in rows if not r.get("error")]
    for r in ok:
        one = next(
            (
                o
                for o in ok
                if (o["runner"], o["sleep"], o["workers"]) == (r["runner"], r["sleep"], 1)
            ),
            None,
        )
        if one is not None and r["workers"] > 1:
            r["speedup_vs_1_worker"] = r["throughput"] / one["throughput"]
            r["steady_speedup_vs_1_worker"] = r["steady_throughput"] / one["steady_throughput"]
        anchor = next(
            (
                o
                for o in ok
                if o["runner"] == "optuna"
                and (o["sleep"], o["workers"]) == (r["sleep"], r["workers"])
            ),
            None,
        )
        if anchor is not None and r["runner"] != "optuna":
            r["throughput_vs_optuna"] = r["throughput"] / anchor["throughput"]
            if "overhead_median_s" in r and "overhead_median_s" in anchor:
                r["overhead_minus_optuna_s"] = r["overhead_median_s"] - anchor["overhead_median_s"]


def acceptance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for runner in ("local", "ray"):
        two = [
            r
            for r in rows
            if r["runner"] == runner
            and r["sleep"] == 2
            and r["workers"] == 2
            and not r.get("error")
        ]
        if two and "speedup_vs_1_worker" in two[0]:
            ratio = two[0]["speedup_vs_1_worker"]
            steady = two[0]["steady_speedup_vs_1_worker"]
            checks.append(
                {
                    "criterion": f"{runner}: 2 s objective, 2 workers >= {MIN_SPEEDUP}x 1 worker",
                    "value": ratio,
                    "note": f"steady, after warm-up: {steady:.2f}x",
                    "result": "PASS" if ratio >= MIN_SPEEDUP else "FAIL",
                }
            )
    zero = [
        r
        for r in rows
        if r["runner"] == "ray" and r["sleep"] == 0 and r["workers"] == 1 and not r.get("error")
    ]
    if zero and "overhead_median_s" in zero[0]:
        value = zero[0]["overhead_median_s"]
        checks.append(
            {
                "criterion": (
                    f"ray: 0 s objective, median per-trial overhead < {MAX_RAY_OVERHEAD} s"
                ),
                "value": value,
                "result": "PASS" if value < MAX_RAY_OVERHEAD else "FAIL",
            }
        )
    return checks


def render(rows: list[dict[str, Any]], checks: list[dict[str, Any]], header: dict[str, Any]) -> str:
    v = header["versions"]
    m = header["machine"]
    anchor = (
        "in-memory study" if header["anchor_storage"] == "memory" else "SQLite study (study.db)"
    )
    out = [
        f"Runner overhead, {header['trials']} trials per run, random sampler (seed "
        f"{header['seed']}), objective = time.sleep(s). MLflow ON for local and ray (SQLite "
        f"mlflow.db + study.db in the run dir, a child run per trial); optuna = plain "
        f"study.optimize on a {anchor}, no MLflow. Ray: local cluster of {header['ray_cpus']} "
        "CPUs, 1 CPU per trial, max_concurrent = workers, reuse_actors.",
        f"Versions: python {v['python']}, optuna {v['optuna']}, ray {v['ray']}, mlflow "
        f"{v['mlflow']}, paretune {v['paretune_git']}",
        f"Machine: {harness.machine_text(m)}; 1-min load average "
        f"{header['loadavg_before'][0]:.2f} before, {header['loadavg_after'][0]:.2f} after; "
        f"all runs {header['total_s']:.0f} s",
        "",
    ]
    header = [
        "runner",
        "objective s",
        "workers",
        "complete",
        "startup s",
        "first result s",
        f"overhead median s (after {SKIP_FIRST})",
        "overhead p90 s",
        "median - optuna s",
        "wall / n s",
        "trials/s",
        "x 1 worker",
        "x optuna",
        "steady trials/s",
        "steady x 1 worker",
        "teardown s",
    ]
    cells = []
    for r in rows:
        run = [r["runner"], f"{r['sleep']:g}", str(r["workers"])]
        if r.get("error"):
            first = r["error"].splitlines()[0]
            cells.append([*run, f"ERROR: {first}", *[""] * (len(header) - len(run) - 1)])
            continue
        cells.append(
            [
                *run,
                f"{r['complete']}/{r['trials']}",
                harness.fmt(r["startup_s"], 2),
                harness.fmt(r["first_result_s"], 2),
                harness.fmt(r.get("overhead_median_s")),
                harness.fmt(r.get("overhead_p90_s")),
                harness.fmt(r.get("overhead_minus_optuna_s")),
                harness.fmt(r["wall_per_trial_s"]),
                harness.fmt(r["throughput"]),
                harness.fmt(r.get("speedup_vs_1_worker"), 2),
                harness.fmt(r.get("throughput_vs_optuna"), 2),
                harness.fmt(r["steady_throughput"]),
                harness.fmt(r.get("steady_speedup_vs_1_worker"), 2),
                harness.fmt(r["teardown_s"], 2),
            ]
        )
    out += harness.markdown_table(header, cells)
    if checks:
        out += ["", "Acceptance:"]
        out += [
            f"- {c['criterion']}: {c['result']} ({c['value']:.3f}"
            + (f"; {c['note']})" if c.get("note") else ")")
            for c in checks
        ]
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        out += ["", f"{r['runner']} {r['sleep']:g} s x{r['workers']} failed:", r["error"]]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

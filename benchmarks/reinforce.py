"""Benchmark of the ``reinforce`` controller on PeftLike against random search and BoTorch.

The runs are those of ``mobo.py`` (the same ask/tell loop on an in-memory study, the same
problem, the arguments the controllers pass from a spec): :class:`paretune.search.ReinforceSampler`
(``reinforce``), Optuna's ``RandomSampler`` (``random``) and paretune's ``BoTorchSampler``
(``paretune``), each seed to the largest budget. The table gives, per sampler and budget, the
hypervolume as a share of the maximum and ``log10(max HV - HV)``, each as the mean over seeds
with its 95 % t-interval, and the paired difference of ``log10(max HV - HV)`` against random
search on the same seeds (negative: better than random) with its 95 % t-interval.

Runs are cached in ``benchmarks/results/reinforce.jsonl`` (``mobo.py``'s record format); a
cached ``reinforce`` run made with other sources of ``paretune/search/_reinforce/`` is run
again.

Usage (see benchmarks/README.md)::

    python benchmarks/reinforce.py                    # seeds 0-4, budget 100, the three samplers
    python benchmarks/reinforce.py --table-only       # the table from the cache
    python benchmarks/reinforce.py --seeds 10-19 --samplers random,reinforce \\
        --sampler-kwargs 'reinforce={"lr": 0.3}'      # tuning, on other seeds
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import math
import multiprocessing
import shlex
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import mobo
import numpy as np

DEFAULT_CACHE = harness.RESULTS_DIR / "reinforce.jsonl"
PROBLEM = "PeftLike"
SAMPLERS = ("random", "reinforce", "paretune")
ANCHOR = "random"


@cache
def reinforce_source() -> str:
    """A short hash of ``paretune/search/_reinforce/``, the sources a reinforce run depends on
    beyond those of ``mobo.source_hash`` (the problem, the space)."""
    package = harness.ROOT / "paretune" / "search" / "_reinforce"
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def current(record: dict[str, Any]) -> bool:
    """Whether a cached record was made with the current sources of its sampler."""
    if record["sampler"] == "reinforce":
        return record["versions"].get("reinforce_source") == reinforce_source()
    return True


def cached_runs(path: Path) -> dict[str, dict[str, Any]]:
    return mobo.longest_runs(r for r in harness.read_records(path) if current(r))


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (NaN for fewer than two values)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr.mean()), math.nan
    half = stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr))
    return float(arr.mean()), float(half)


def fmt_interval(values: Sequence[float], digits: int) -> str:
    if not values:
        return "-"
    mean, half = t_interval(values)
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def execute(tasks: list[mobo.Task], args: argparse.Namespace) -> list[str]:
    """Run the tasks the cache does not answer; return the labels of the failed ones."""
    cached = cached_runs(args.cache)
    todo = [t for t in tasks if cached.get(t.key(), {}).get("n_trials", 0) < t.n_trials]
    todo.sort(key=lambda t: t.sampler != "paretune")  # the slow ones first
    print(
        f"{len(tasks)} runs planned, {len(tasks) - len(todo)} in the cache ({args.cache}), "
        f"{len(todo)} to run with {args.jobs} job(s)",
        flush=True,
    )
    failed: list[str] = []
    start = time.perf_counter()

    def finished(i: int, task: mobo.Task, record: dict[str, Any] | None, err: str) -> None:
        prefix = f"[{i}/{len(todo)}] {task.label()}"
        if record is None:
            failed.append(task.label())
            print(f"{prefix}: FAILED {err}", flush=True)
            return
        record["versions"]["reinforce_source"] = reinforce_source()
        harness.append_record(args.cache, record)
        q = mobo.quality(task.problem, record, task.n_trials)
        print(f"{prefix}: {record['wall_s']:.1f} s; log10(HV gap) {q:.3f}", flush=True)

    if args.jobs == 1:
        for i, task in enumerate(todo, 1):
            try:
                finished(i, task, mobo.run_task(task, args.threads), "")
            except Exception as err:
                finished(i, task, None, f"{type(err).__name__}: {err}")
    elif todo:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=context, initializer=mobo._worker_init, initargs=(args.threads,)
        ) as pool:
            futures = {pool.submit(mobo._run_in_worker, t, args.threads): t for t in todo}
            for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
                try:
                    finished(i, futures[future], future.result(), "")
                except Exception as err:
                    finished(i, futures[future], None, f"{type(err).__name__}: {err}")
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    return failed


def render_table(args: argparse.Namespace, kwargs: dict[str, dict[str, Any]]) -> str:
    runs = cached_runs(args.cache)
    problem = mobo.make_problem(PROBLEM)

    def records(sampler: str, budget: int) -> dict[int, dict[str, Any]]:
        out = {}
        for seed in args.seeds:
            key = mobo.run_key(PROBLEM, sampler, seed, mobo.SEQUENTIAL, kwargs.get(sampler, {}))
            r = runs.get(key)
            if r is not None and r["n_trials"] >= budget:
                out[seed] = r
        return out

    used = [r for s in args.samplers for r in records(s, min(args.budgets)).values()]
    versions = mobo.describe_values(
        used,
        lambda r: harness.versions_text(
            r["versions"], (k for k in r["versions"] if k in ("python", "optuna", "botorch"))
        ),
    )
    git = mobo.describe_values(used, lambda r: str(r["versions"].get("paretune_git")))
    machine = mobo.describe_values(used, lambda r: harness.machine_text(r["machine"]))
    loads = [x for r in used for x in r.get("loadavg", [])]
    lines = [
        f"- Machine: {machine}"
        + (f"; 1-min load average during runs {min(loads):.1f}-{max(loads):.1f}" if loads else ""),
        f"- Versions: {versions}; paretune {git}",
        f"- Command: `{shlex.join(['python', *sys.argv])}`",
        f"- Problem: {PROBLEM} (max HV {problem.max_hypervolume:.4f}); seeds "
        f"{mobo.seeds_text(args.seeds)}; budgets {', '.join(map(str, args.budgets))}",
        "",
        "Mean over seeds [95 % t-interval]; `vs random`: the paired difference of "
        "log10(max HV - HV) against random search on the same seeds (negative is better), "
        "`wins`: seeds where it beats random; s/suggestion: median over all trials.",
        "",
    ]
    rows = []
    for budget in args.budgets:
        anchor = records(ANCHOR, budget)
        for sampler in args.samplers:
            found = records(sampler, budget)
            if not found:
                rows.append([str(budget), mobo.sampler_label(sampler, {}), "0", "-", "-", "-"])
                continue
            gaps = {s: mobo.quality(PROBLEM, r, budget) for s, r in found.items()}
            shares = []
            for r in found.values():
                rows_ = [dict(zip(r["metrics"], v, strict=True)) for v in r["values"][:budget]]
                shares.append(problem.hypervolume(rows_) / problem.max_hypervolume)
            paired = [
                gaps[s] - mobo.quality(PROBLEM, anchor[s], budget) for s in gaps if s in anchor
            ]
            vs = "-"
            if sampler != ANCHOR and paired:
                wins = sum(d < 0 for d in paired)
                vs = f"{fmt_interval(paired, 3)}; wins {wins}/{len(paired)}"
            times = [t for r in found.values() for t in r["suggest_s"][:budget]]
            rows.append(
                [
                    str(budget),
                    mobo.sampler_label(sampler, kwargs.get(sampler, {})),
                    str(len(found)),
                    fmt_interval(shares, 3),
                    fmt_interval(list(gaps.values()), 3),
                    vs,
                    mobo.fmt_seconds(float(np.median(times))),
                ]
            )
    header = ["trials", "sampler", "seeds", "HV / max HV", "log10(HV gap) ↓", "vs random"]
    header += ["s/suggestion"]
    lines += harness.markdown_table(header, rows)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--samplers",
        type=lambda s: mobo.parse_list(s, SAMPLERS, "sampler"),
        default=list(SAMPLERS),
        help=f"comma-separated, of {', '.join(SAMPLERS)} (paretune: the botorch controller)",
    )
    parser.add_argument("--seeds", type=harness.parse_ints, default=list(range(5)), help="e.g. 0-4")
    parser.add_argument("--budgets", type=harness.parse_ints, default=[100], help="trial counts")
    parser.add_argument(
        "--sampler-kwargs",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="keyword arguments of a sampler, e.g. reinforce='{\"lr\": 0.3}' (part of the key)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="JSONL results file")
    parser.add_argument("--table-only", action="store_true", help="print the table from the cache")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = mobo.parse_kwargs(args.sampler_kwargs, False)
    failed: list[str] = []
    if not args.table_only:
        n_trials = max(args.budgets)
        tasks = [
            mobo.Task(PROBLEM, s, seed, n_trials, kwargs=kwargs.get(s, {}))
            for s in args.samplers
            for seed in args.seeds
        ]
        try:
            failed = execute(tasks, args)
        except KeyboardInterrupt:
            print("\ninterrupted; finished runs are in the cache", file=sys.stderr)
            return 130
    print()
    print(render_table(args, kwargs))
    if failed:
        print(f"\n{len(failed)} run(s) failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

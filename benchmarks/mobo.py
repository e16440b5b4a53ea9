"""Benchmark of multi-objective samplers on paretune's synthetic problems.

Every sampler, our :class:`paretune.search.BoTorchSampler` and the anchors (Optuna's random,
TPE, NSGA-II and GP samplers, optuna-integration's BoTorchSampler), is driven by the same
ask/tell loop on an in-memory Optuna study, with the same seeds and budgets. A run goes to the
largest budget; the hypervolume at a smaller budget is that of the run's first trials (the
samplers do not know the budget). Runs are cached in a JSONL file, one record per run, so the
benchmark can be interrupted, resumed and split across invocations.

Usage (see benchmarks/README.md)::

    python benchmarks/mobo.py --jobs 2                 # the main grid
    python benchmarks/mobo.py --pending 4              # 4 simulated workers (paretune)
    python benchmarks/mobo.py --timing-growth          # paretune's cost per suggestion to 500
    python benchmarks/mobo.py --table-only --check     # the table and the acceptance checks
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import logging
import math
import multiprocessing
import os
import shlex
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import _mixed as mixed
import numpy as np

DEFAULT_CACHE = harness.RESULTS_DIR / "mobo.jsonl"
PROBLEMS = ("BraninCurrin", "DTLZ2", "VehicleSafety", "PeftLike")
# Mixed integer/categorical variants (benchmarks/_mixed.py), run when named in --problems.
MIXED_PROBLEMS = tuple(mixed.mixed_problems())
SAMPLERS = ("random", "tpe", "nsga2", "gp", "optuna-integration", "paretune", "reinforce")
SEQUENTIAL = "sequential"
INSTALL_OPTUNA_INTEGRATION = "pip install --no-deps optuna-integration"
TIMING_WINDOWS = ((31, 40), (91, 100), (191, 200), (491, 500))  # 1-based trial numbers, inclusive
GROWTH_PROBLEMS = ("BraninCurrin", "DTLZ2")
GROWTH_TRIALS = 500
TABLE_VERSIONS = ("python", "torch", "optuna", "botorch", "optuna-integration")
RECORD_VERSION = 1


# --------------------------------------------------------------------------------------------
# Problems and samplers


@cache
def make_problem(name: str) -> Any:
    """The problem instance for a name of :data:`PROBLEMS` or :data:`MIXED_PROBLEMS` (cached:
    PeftLike builds its front)."""
    if name in MIXED_PROBLEMS:
        return mixed.mixed_problems()[name]()
    from paretune import objectives

    return getattr(objectives, name)()


def make_sampler(name: str, problem: Any, seed: int, kwargs: dict[str, Any]) -> Any:
    """A fresh sampler for one run; ``kwargs`` are added to (and override) our settings."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **kwargs)
    if name == "tpe":
        # The settings of paretune's `tpe` controller (paretune/search/_controllers.py).
        conditional = any(p.condition is not None for p in problem.space)
        options = {"multivariate": True, "group": conditional, "constant_liar": True}
        return optuna.samplers.TPESampler(seed=seed, **{**options, **kwargs})
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kwargs)
    if name == "optuna-integration":
        integration = importlib.import_module("optuna_integration")
        options = dict(kwargs)
        if isinstance(options.get("candidates_func"), str):
            # A documented candidates function by name, e.g. "qnehvi_candidates_func".
            botorch_module = importlib.import_module("optuna_integration.botorch")
            options["candidates_func"] = getattr(botorch_module, options["candidates_func"])
        return integration.BoTorchSampler(seed=seed, **options)
    if name == "paretune":
        from paretune.search import BoTorchSampler

        # The arguments paretune's `botorch` controller passes from a spec.
        reference = [problem.reference_point[m.name] for m in problem.metrics]
        return BoTorchSampler(
            seed=seed, search_space=problem.space, reference_point=reference, **kwargs
        )
    if name == "reinforce":
        from paretune.search import ReinforceSampler

        # The arguments paretune's `reinforce` controller passes from a spec.
        reference = [problem.reference_point[m.name] for m in problem.metrics]
        return ReinforceSampler(
            seed=seed, search_space=problem.space, reference_point=reference, **kwargs
        )
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")


def optuna_integration_available() -> bool:
    try:
        importlib.import_module("optuna_integration")
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# One run


@dataclass(frozen=True)
class Task:
    """One (problem, sampler, seed, mode, sampler kwargs) run to ``n_trials`` trials."""

    problem: str
    sampler: str
    seed: int
    n_trials: int
    mode: str = SEQUENTIAL  # or "pendingN": N trials kept RUNNING
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Smaller budgets at which a partial record (same key) goes to ``cache`` while the run
    # goes on, so that a long run stopped early still answers the budgets it passed.
    checkpoints: tuple[int, ...] = ()
    cache: Path | None = None

    def key(self) -> str:
        return run_key(self.problem, self.sampler, self.seed, self.mode, self.kwargs)

    def label(self) -> str:
        return (
            f"{self.problem} {sampler_label(self.sampler, self.kwargs)} seed={self.seed} "
            f"{self.mode} n={self.n_trials}"
        )


def run_key(problem: str, sampler: str, seed: int, mode: str, kwargs: dict[str, Any]) -> str:
    """The cache key. A record with this key and ``n_trials >= b`` answers budget ``b``."""
    return json.dumps([problem, sampler, seed, mode, kwargs], sort_keys=True)


def sampler_label(sampler: str, kwargs: dict[str, Any]) -> str:
    if not kwargs:
        return sampler
    options = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"{sampler}({options})"


def pending_workers(mode: str) -> int:
    return 1 if mode == SEQUENTIAL else int(mode.removeprefix("pending"))


class _CountingHandler(logging.Handler):
    """Counts the warnings the samplers log (e.g. paretune's fallback to a random candidate)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}: {record.getMessage()[:80]}"] += 1


def run_task(task: Task, threads: int) -> dict[str, Any]:
    """Run one task and return its cache record.

    The sequential mode asks, evaluates and tells one trial at a time. ``pendingN`` keeps ``N``
    trials RUNNING: it asks ``N``, then tells the oldest and asks a new one until ``n_trials``
    have been asked, so each proposal is made with ``N - 1`` trials pending, as with ``N``
    workers whose trials take equally long.
    """
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = make_problem(task.problem)
    names = [m.name for m in problem.metrics]
    params_list: list[dict[str, Any]] = []
    values_list: list[list[float]] = []
    suggest_s: list[float] = []
    running: list[tuple[Any, dict[str, Any]]] = []

    def ask() -> None:
        start = time.perf_counter()
        trial = study.ask()
        # Optuna samplers do their work when the first parameter is suggested.
        params = problem.space.suggest(trial)
        suggest_s.append(time.perf_counter() - start)
        params_list.append(params)
        running.append((trial, params))

    def tell_oldest() -> None:
        trial, params = running.pop(0)
        result = problem.evaluate(params)
        values = [float(result[name]) for name in names]
        values_list.append(values)
        study.tell(trial, values)

    def record(n: int) -> dict[str, Any]:
        """The record of the first ``n`` told trials."""
        warning_counts = Counter(f"{w.category.__name__}: {str(w.message)[:80]}" for w in caught)
        warning_counts.update(handler.counts)
        return {
            "record_version": RECORD_VERSION,
            "key": task.key(),
            "problem": task.problem,
            "sampler": task.sampler,
            "seed": task.seed,
            "mode": task.mode,
            "kwargs": task.kwargs,
            "n_trials": n,
            "metrics": names,
            "params": [_jsonable(p) for p in params_list[:n]],
            "values": values_list[:n],
            "suggest_s": suggest_s[:n],
            "wall_s": time.perf_counter() - start,
            "threads": threads,
            # 1-minute load averages: timings taken on a busy machine are not comparable.
            "loadavg": [load_start, os.getloadavg()[0]],
            "warnings": dict(warning_counts.most_common(20)),
            **harness.stamp(),
            "machine": harness.machine(),
            "versions": versions(),
        }

    handler = _CountingHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    width = pending_workers(task.mode)
    checkpoints = sorted(c for c in task.checkpoints if c < task.n_trials)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study = optuna.create_study(
                directions=[m.direction for m in problem.metrics],
                sampler=make_sampler(task.sampler, problem, task.seed, task.kwargs),
            )
            while len(params_list) < min(width, task.n_trials):
                ask()
            while running:
                tell_oldest()
                if task.cache is not None and checkpoints and len(values_list) == checkpoints[0]:
                    harness.append_record(task.cache, record(checkpoints.pop(0)))
                if len(params_list) < task.n_trials:
                    ask()
            result = record(task.n_trials)
    finally:
        root.removeHandler(handler)
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(task: Task, threads: int) -> dict[str, Any]:
    return run_task(task, threads)


# --------------------------------------------------------------------------------------------
# Machine and versions


@cache
def versions() -> dict[str, str | None]:
    """The versions of what a run depends on, the git commit and the hash of its sources."""
    out = harness.versions("torch", "optuna", "botorch", "optuna-integration", "paretune", git=True)
    out["paretune_source"] = source_hash()
    return out


# The paretune sources a run's trials depend on: the sampler, the space and its encoding, the
# problems, the hypervolume. Edits elsewhere in the package do not make cached runs stale. A
# name ending in "/" stands for the package's modules.
SOURCE_FILES = (
    "search/_botorch/",
    "search/_controllers.py",
    "spaces/_encoding.py",
    "spaces/_unit_cube.py",
    "spaces/_params.py",
    "spaces/_space.py",
    "objectives/_synthetic.py",
    "objectives/_pareto.py",
)


@cache
def source_hash() -> str:
    """A short hash of the paretune sources that decide a run's trials (``SOURCE_FILES``)."""
    import hashlib

    import paretune

    package = Path(paretune.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        paths = sorted((package / name).glob("*.py")) if name.endswith("/") else [package / name]
        for path in paths:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return "v3:" + digest.hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# The cache


def longest_runs(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per key, the record with the most trials (the latest among equals)."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record["key"]
        if key not in best or record["n_trials"] >= best[key]["n_trials"]:
            best[key] = record
    return best


# --------------------------------------------------------------------------------------------
# Statistics


def quality(problem_name: str, record: dict[str, Any], budget: int) -> float:
    """log10(max HV - HV) of the first ``budget`` trials, or the HV where max HV is unknown."""
    from paretune.objectives import log10_hv_difference

    problem = make_problem(problem_name)
    rows = [dict(zip(record["metrics"], v, strict=True)) for v in record["values"][:budget]]
    hv = problem.hypervolume(rows)
    if problem.max_hypervolume is None:
        return hv
    return log10_hv_difference(hv, problem.max_hypervolume)


def exceeds_max(problem_name: str, record: dict[str, Any], budget: int) -> bool:
    """Whether the run's HV reached the problem's maximum (an estimate for some problems)."""
    problem = make_problem(problem_name)
    if problem.max_hypervolume is None:
        return False
    return quality(problem_name, record, budget) <= math.log10(1e-12) + 1e-9


def lower_is_better(problem_name: str) -> bool:
    return make_problem(problem_name).max_hypervolume is not None


def metric_name(problem_name: str) -> str:
    return "log10(HV gap) ↓" if lower_is_better(problem_name) else "HV ↑"


def duplicates(record: dict[str, Any], budget: int | None = None) -> int:
    """Trials whose params dict equals that of an earlier trial."""
    seen = {json.dumps(p, sort_keys=True) for p in record["params"][:budget]}
    return len(record["params"][:budget]) - len(seen)


def timing_windows(n_trials: int) -> list[tuple[int, int]]:
    """The standard windows a run of ``n_trials`` reaches, else its last ten trials."""
    windows = [w for w in TIMING_WINDOWS if w[1] <= n_trials]
    return windows or [(max(1, n_trials - 9), n_trials)]


def window_median(records: Iterable[dict[str, Any]], low: int, high: int) -> float | None:
    """Median seconds per suggestion over trials ``low..high`` (1-based) of all the records."""
    times = [t for r in records if r["n_trials"] >= high for t in r["suggest_s"][low - 1 : high]]
    return float(np.median(times)) if times else None


# --------------------------------------------------------------------------------------------
# Selection of cached runs


@dataclass
class Selection:
    """What a table or a check looks at: filters plus the cached runs they select."""

    problems: list[str]
    samplers: list[str]
    seeds: list[int]
    budgets: list[int]
    kwargs: dict[str, dict[str, Any]]
    runs: dict[str, dict[str, Any]]

    def record(self, problem: str, sampler: str, seed: int, mode: str) -> dict[str, Any] | None:
        return self.runs.get(run_key(problem, sampler, seed, mode, self.kwargs.get(sampler, {})))

    def records(
        self, problem: str, sampler: str, mode: str = SEQUENTIAL, *, min_trials: int = 0
    ) -> list[dict[str, Any]]:
        found = (self.record(problem, sampler, seed, mode) for seed in self.seeds)
        return [r for r in found if r is not None and r["n_trials"] >= min_trials]

    def quality(
        self, problem: str, sampler: str, budget: int, mode: str = SEQUENTIAL
    ) -> harness.Stat | None:
        records = self.records(problem, sampler, mode, min_trials=budget)
        return harness.stat([quality(problem, r, budget) for r in records])

    def label(self, sampler: str) -> str:
        return sampler_label(sampler, self.kwargs.get(sampler, {}))

    def selected(self) -> list[dict[str, Any]]:
        """The cached runs (any mode) that the filters select."""
        return [
            r
            for r in self.runs.values()
            if r["problem"] in self.problems
            and r["sampler"] in self.samplers
            and r["seed"] in self.seeds
            and r["kwargs"] == self.kwargs.get(r["sampler"], {})
        ]

    def pending_modes(self) -> list[str]:
        modes = {r["mode"] for r in self.runs.values() if r["mode"] != SEQUENTIAL}
        return sorted(modes, key=pending_workers)


# --------------------------------------------------------------------------------------------
# The table


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2g}" if x < 0.01 else f"{x:.3g}" if x < 10 else f"{x:.0f}"


def describe_values(records: Iterable[dict[str, Any]], get: Callable[[dict], str]) -> str:
    values = sorted({get(r) for r in records})
    return " / ".join(values) if values else "-"


def seeds_text(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))


def render_table(sel: Selection, notes: dict[str, str]) -> str:
    used = sel.selected()
    current = versions()
    lines = []
    if used:
        hardware = describe_values(
            used, lambda r: f"{r['machine']['cpus']} CPUs, {r['machine']['cpu_model']}"
        )
        vers = describe_values(
            used,
            lambda r: harness.versions_text(
                r["versions"], (k for k in r["versions"] if k in TABLE_VERSIONS)
            ),
        )
        git = describe_values(used, lambda r: str(r["versions"].get("paretune_git")))
        threads = describe_values(used, lambda r: str(r["threads"]))
        loads = [x for r in used for x in r.get("loadavg", [])]
        if loads:
            threads += f"; 1-min load average during runs {min(loads):.1f}-{max(loads):.1f}"
    else:
        m = harness.machine()
        hardware = f"{m['cpus']} CPUs, {m['cpu_model']}"
        vers = harness.versions_text(current, TABLE_VERSIONS)
        git, threads = str(current.get("paretune_git")), "-"
    lines += [
        f"- Machine: {hardware}; torch threads per run: {threads}",
        f"- Versions: {vers}; paretune {git}",
        f"- Command: `{shlex.join(['python', *sys.argv])}`",
        f"- Seeds: {seeds_text(sel.seeds)}; budgets: {', '.join(map(str, sel.budgets))} trials",
        "",
        "Quality: log10(max HV - HV) where the maximum hypervolume is known (lower is better), "
        "else the hypervolume (higher is better); mean ± standard error over seeds, the best "
        "mean of a row in bold; `(n=k)` where fewer seeds than listed were cached.",
        "",
    ]
    labels = [sel.label(s) for s in sel.samplers]
    rows = []
    for problem in sel.problems:
        for budget in sel.budgets:
            stats = [sel.quality(problem, s, budget) for s in sel.samplers]
            means = [st.mean for st in stats if st is not None]
            best = (min if lower_is_better(problem) else max)(means) if means else None
            digits = 2 if lower_is_better(problem) else 3
            cells = []
            for sampler, st in zip(sel.samplers, stats, strict=True):
                if st is None:
                    cells.append("skipped (see note)" if sampler in notes else "-")
                    continue
                text = st.text(digits)
                if len(means) > 1 and st.mean == best:
                    text = f"**{text}**"
                if st.n < len(sel.seeds):
                    text += f" (n={st.n})"
                cells.append(text)
            rows.append([problem, metric_name(problem), str(budget), *cells])
    lines += harness.markdown_table(["problem", "quality", "trials", *labels], rows)

    windows = timing_windows(max(sel.budgets))
    lines += [
        "",
        "Seconds per suggestion (`study.ask()` + `space.suggest(trial)`): median over the "
        "listed trials (1-based) of all seeds.",
        "",
    ]
    rows = []
    for problem in sel.problems:
        for low, high in windows:
            cells = [
                fmt_seconds(window_median(sel.records(problem, s, min_trials=high), low, high))
                for s in sel.samplers
            ]
            rows.append([problem, f"{low}-{high}", *cells])
    lines += harness.markdown_table(["problem", "trials", *labels], rows)

    exceeded = sorted(
        {
            f"{r['problem']} {sel.label(r['sampler'])} seed {r['seed']} @{b}"
            for r in used
            for b in sel.budgets
            if r["n_trials"] >= b and exceeds_max(r["problem"], r, b)
        }
    )
    if exceeded:
        lines += [
            "",
            "Warning: these runs reached the problem's maximum hypervolume (an estimate for "
            "BraninCurrin and VehicleSafety), so their gap is the floor 1e-12: "
            + "; ".join(exceeded),
        ]
    source = source_hash()
    stale = sorted(
        {
            f"{sel.label(r['sampler'])} on {r['problem']}"
            for r in used
            if r["sampler"] == "paretune" and r["versions"].get("paretune_source") != source
        }
    )
    if stale:
        lines += [
            "",
            f"Warning: cached runs of {', '.join(stale)} were made with other paretune sources "
            f"than the current ones ({source}); delete their lines from the cache (or use a new "
            "--cache) to measure the current code.",
        ]
    lines += render_pending(sel)
    lines += render_growth(sel)
    for sampler, note in notes.items():
        if sampler in sel.samplers:
            lines += ["", f"{sampler}: {note}."]
    return "\n".join(lines)


def render_pending(sel: Selection) -> list[str]:
    modes = sel.pending_modes()
    if not modes:
        return []
    lines = [
        "",
        "Asynchronous mode (`pendingN`: N trials kept RUNNING, the oldest told first) against "
        "the sequential runs of the same seeds; duplicates: trials whose params equal an "
        "earlier trial's, summed over seeds. `sequential @b-(N-1)`: the sequential runs with "
        "N - 1 fewer trials, i.e. as if the results still outstanding at the last proposal "
        "were never made.",
        "",
    ]
    header = ["problem", "sampler", "mode", "seeds"]
    header += [f"quality @{b}" for b in sel.budgets] + ["duplicates"]
    header += [f"sequential @{b}-(N-1)" for b in sel.budgets]
    rows = []
    for problem in sel.problems:
        for sampler in sel.samplers:
            pending = [m for m in modes if sel.records(problem, sampler, m)]
            if not pending:
                continue
            for mode in [SEQUENTIAL, *pending]:
                records = sel.records(problem, sampler, mode)
                digits = 2 if lower_is_better(problem) else 3
                cells = []
                for budget in sel.budgets:
                    st = sel.quality(problem, sampler, budget, mode)
                    cells.append("-" if st is None else st.text(digits))
                dups = sum(duplicates(r) for r in records)
                lagged = []
                for budget in sel.budgets:
                    st = None
                    if mode != SEQUENTIAL:
                        st = sel.quality(
                            problem, sampler, budget - pending_workers(mode) + 1, SEQUENTIAL
                        )
                    lagged.append("-" if st is None else st.text(digits))
                rows.append(
                    [
                        problem,
                        sel.label(sampler),
                        mode,
                        str(len(records)),
                        *cells,
                        str(dups),
                        *lagged,
                    ]
                )
    return lines + harness.markdown_table(header, rows)


def growth_records(sel: Selection) -> list[dict[str, Any]]:
    seed = min(sel.seeds)
    found = [sel.record(p, "paretune", seed, SEQUENTIAL) for p in GROWTH_PROBLEMS]
    # A run stopped early still shows the windows it reached (its checkpoint records).
    return [r for r in found if r is not None and r["n_trials"] >= TIMING_WINDOWS[1][1]]


def render_growth(sel: Selection) -> list[str]:
    records = growth_records(sel)
    if not records:
        return []
    lines = [
        "",
        f"Growth of paretune's seconds per suggestion (one seed, up to {GROWTH_TRIALS} trials; "
        "median over the listed trials, 1-min load average at the start and the end):",
        "",
    ]
    rows = [
        [r["problem"], str(r["seed"]), str(r["threads"])]
        + [fmt_seconds(window_median([r], low, high)) for low, high in TIMING_WINDOWS]
        + [" - ".join(f"{x:.1f}" for x in r["loadavg"])]
        for r in records
    ]
    header = [
        "problem", "seed", "threads", *(f"{lo}-{hi}" for lo, hi in TIMING_WINDOWS), "load"
    ]  # fmt: skip
    return lines + harness.markdown_table(header, rows)


# --------------------------------------------------------------------------------------------
# Acceptance checks


def run_checks(sel: Selection) -> bool:
    """Print PASS / FAIL / N/A for each acceptance criterion; False if any failed."""
    results: list[tuple[str, str, str]] = []  # (status, criterion, detail)
    ours = "paretune"

    def better(problem: str, a: harness.Stat, b: harness.Stat) -> bool:
        return a.mean < b.mean if lower_is_better(problem) else a.mean > b.mean

    def add(criterion: str, ok: bool | None, detail: str) -> None:
        results.append(({True: "PASS", False: "FAIL", None: "N/A"}[ok], criterion, detail))

    # (a)
    p, gp = sel.quality("BraninCurrin", ours, 40), sel.quality("BraninCurrin", "gp", 40)
    if p is None or gp is None:
        add("(a) BraninCurrin@40: paretune <= 0.25 and < gp", None, "missing runs")
    else:
        ok = p.mean <= 0.25 and p.mean < gp.mean
        add(
            "(a) BraninCurrin@40: paretune <= 0.25 and < gp",
            ok,
            f"paretune {p.mean:.3f}, gp {gp.mean:.3f}",
        )

    # (b)
    for problem in PROBLEMS:
        name = f"(b) {problem}@40: paretune better than tpe, nsga2; not worse than gp by > 1 SE"
        stats = {s: sel.quality(problem, s, 40) for s in (ours, "tpe", "nsga2", "gp")}
        if any(v is None for v in stats.values()):
            missing = [s for s, v in stats.items() if v is None]
            add(name, None, f"missing runs: {', '.join(missing)}")
            continue
        p, tpe, nsga2, gp = (stats[s] for s in (ours, "tpe", "nsga2", "gp"))
        assert p is not None and tpe is not None and nsga2 is not None and gp is not None
        se = math.sqrt(_sq(p.se) + _sq(gp.se))
        gap = (p.mean - gp.mean) if lower_is_better(problem) else (gp.mean - p.mean)
        ok = better(problem, p, tpe) and better(problem, p, nsga2) and gap <= se
        add(
            name,
            ok,
            f"paretune {p.mean:.3f}, tpe {tpe.mean:.3f}, nsga2 {nsga2.mean:.3f}, gp "
            f"{gp.mean:.3f}; paretune worse than gp by {gap:.3f} vs SE sqrt(se_p^2 + se_gp^2) "
            f"= {se:.3f}",
        )

    # (c)
    for budget in (40, 100):
        name = f"(c) PeftLike@{budget}: paretune better than tpe, nsga2, random"
        stats = {s: sel.quality("PeftLike", s, budget) for s in (ours, "tpe", "nsga2", "random")}
        if any(v is None for v in stats.values()):
            missing = [s for s, v in stats.items() if v is None]
            add(name, None, f"missing runs: {', '.join(missing)}")
            continue
        p = stats[ours]
        assert p is not None
        others = {s: v for s, v in stats.items() if s != ours and v is not None}
        ok = all(better("PeftLike", p, v) for v in others.values())
        detail = ", ".join(f"{s} {v.mean:.3f}" for s, v in stats.items() if v is not None)
        add(name, ok, detail)

    # (d)
    for problem in ("BraninCurrin", "DTLZ2"):
        name = f"(d) {problem}: paretune median s/suggestion at trials 31-40 <= 2 s"
        median = window_median(sel.records(problem, ours, min_trials=40), 31, 40)
        if median is None:
            add(name, None, "missing runs")
        else:
            add(name, median <= 2.0, f"{median:.3f} s")

    # (e)
    modes = [m for m in sel.pending_modes() if pending_workers(m) == 4] or sel.pending_modes()
    mode = modes[0] if modes else "pending4"
    for problem in PROBLEMS:
        name = (
            f"(e) {problem} {mode}: no duplicates, quality@40 not worse than sequential by > 1 SE"
        )
        pending = sel.records(problem, ours, mode, min_trials=40)
        if not pending:
            add(name, None, f"no {mode} runs")
            continue
        seeds = {r["seed"] for r in pending}
        sequential = [r for r in sel.records(problem, ours, min_trials=40) if r["seed"] in seeds]
        if len(sequential) < len(pending):
            add(name, None, "missing sequential runs of the same seeds")
            continue
        dups = sum(duplicates(r) for r in pending)
        a = harness.stat([quality(problem, r, 40) for r in pending])
        b = harness.stat([quality(problem, r, 40) for r in sequential])
        assert a is not None and b is not None
        se = math.sqrt(_sq(a.se) + _sq(b.se))
        gap = (a.mean - b.mean) if lower_is_better(problem) else (b.mean - a.mean)
        add(
            name,
            dups == 0 and gap <= se,
            f"duplicates {dups}; {mode} {a.mean:.3f}, sequential {b.mean:.3f}; worse by "
            f"{gap:.3f} vs SE sqrt(se_pending^2 + se_sequential^2) = {se:.3f} "
            f"({len(pending)} seeds)",
        )

    print(f"\nAcceptance checks (paretune sampler: {sel.label(ours)}):")
    for status, criterion, detail in results:
        print(f"{status:4}  {criterion}: {detail}")
    print(
        "SE in (b) and (e): the two means' standard errors combined, sqrt(se_a^2 + se_b^2); "
        "'better' compares means."
    )
    return all(status != "FAIL" for status, _, _ in results)


def _sq(x: float) -> float:
    return 0.0 if math.isnan(x) else x * x


# --------------------------------------------------------------------------------------------
# Command line


def parse_list(text: str, choices: Sequence[str], what: str) -> list[str]:
    by_lower = {c.lower().replace("_", "").replace("-", ""): c for c in choices}
    out = []
    for item in text.split(","):
        key = item.strip().lower().replace("_", "").replace("-", "")
        if key not in by_lower:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {item!r}; choose from {', '.join(choices)}"
            )
        out.append(by_lower[key])
    return out


def parse_kwargs(items: Sequence[str], fast: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--sampler-kwargs expects NAME=JSON, got {item!r}")
        [sampler] = parse_list(name, SAMPLERS, "sampler")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--sampler-kwargs {item!r}: not JSON ({err})") from None
        if not isinstance(value, dict):
            raise SystemExit(f"--sampler-kwargs {item!r}: expected a JSON object")
        out.setdefault(sampler, {}).update(value)
    if fast:
        out.setdefault("paretune", {})["fast"] = True
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--problems",
        type=lambda s: parse_list(s, PROBLEMS + MIXED_PROBLEMS, "problem"),
        default=list(PROBLEMS),
        help="comma-separated problems",
    )
    parser.add_argument(
        "--samplers",
        type=lambda s: parse_list(s, SAMPLERS, "sampler"),
        default=None,
        help=f"comma-separated samplers (default: all; with --pending: paretune) of "
        f"{', '.join(SAMPLERS)}",
    )
    parser.add_argument("--seeds", type=harness.parse_ints, default=list(range(5)), help="e.g. 0-4")
    parser.add_argument(
        "--budgets", type=harness.parse_ints, default=[40, 100], help="comma-separated trial counts"
    )
    parser.add_argument(
        "--pending",
        type=int,
        default=None,
        metavar="N",
        help="asynchronous mode: keep N trials RUNNING (also runs the sequential counterparts)",
    )
    parser.add_argument(
        "--timing-growth",
        action="store_true",
        help=f"run only paretune on {', '.join(GROWTH_PROBLEMS)}, the first seed, to "
        f"{GROWTH_TRIALS} trials, and report its seconds per suggestion",
    )
    parser.add_argument(
        "--sampler-kwargs",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="extra keyword arguments of a sampler, e.g. paretune='{\"num_restarts\": 4}' "
        "(part of the cache key and shown in the table)",
    )
    parser.add_argument(
        "--paretune-fast",
        action="store_true",
        help="same as --sampler-kwargs paretune='{\"fast\": true}'",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: max(1, CPUs // jobs)); use 1 on a shared machine",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="JSONL results file")
    parser.add_argument("--table-only", action="store_true", help="print the table from the cache")
    parser.add_argument("--check", action="store_true", help="evaluate the acceptance criteria")
    return parser


def plan(args: argparse.Namespace, kwargs: dict[str, dict[str, Any]]) -> list[Task]:
    tasks = []
    if args.timing_growth:
        seed = min(args.seeds)
        for problem in GROWTH_PROBLEMS:
            if problem in args.problems:
                tasks.append(
                    Task(
                        problem,
                        "paretune",
                        seed,
                        GROWTH_TRIALS,
                        kwargs=kwargs.get("paretune", {}),
                        checkpoints=tuple(hi for _, hi in TIMING_WINDOWS),
                        cache=args.cache,
                    )
                )
        return tasks
    n_trials = max(args.budgets)
    modes = [SEQUENTIAL] + ([f"pending{args.pending}"] if args.pending else [])
    for mode in modes:
        for problem in args.problems:
            for sampler in args.samplers:
                for seed in args.seeds:
                    tasks.append(
                        Task(
                            problem,
                            sampler,
                            seed,
                            n_trials,
                            mode,
                            kwargs.get(sampler, {}),
                            checkpoints=tuple(args.budgets),
                            cache=args.cache,
                        )
                    )
    return tasks


def execute(tasks: list[Task], args: argparse.Namespace) -> list[str]:
    """Run the tasks the cache does not answer; return the labels of the failed ones."""
    cached = longest_runs(harness.read_records(args.cache))
    todo = [t for t in tasks if cached.get(t.key(), {}).get("n_trials", 0) < t.n_trials]
    # Expensive samplers first, so that parallel workers finish together.
    cost = {"optuna-integration": 0, "paretune": 1, "gp": 2}
    todo.sort(key=lambda t: (cost.get(t.sampler, 3), -t.n_trials))
    threads = harness.threads_per_job(args.jobs, args.threads)
    print(
        f"{len(tasks)} runs planned, {len(tasks) - len(todo)} in the cache ({args.cache}), "
        f"{len(todo)} to run with {args.jobs} job(s) of {threads} torch thread(s)",
        flush=True,
    )
    if not todo:
        return []
    failed: list[str] = []
    start = time.perf_counter()

    def finished(index: int, task: Task, record: dict[str, Any] | None, err: str | None) -> None:
        prefix = f"[{index}/{len(todo)}] {task.label()}"
        if record is None:
            failed.append(task.label())
            print(f"{prefix}: FAILED {err}", flush=True)
            return
        harness.append_record(args.cache, record)
        budgets = [b for b in args.budgets if b <= task.n_trials] or [task.n_trials]
        qualities = ", ".join(f"@{b} {quality(task.problem, record, b):.3f}" for b in budgets)
        n_warn = sum(record["warnings"].values())
        print(
            f"{prefix}: {record['wall_s']:.1f} s; {metric_name(task.problem)} {qualities}; "
            f"duplicates {duplicates(record)}" + (f"; warnings {n_warn}" if n_warn else ""),
            flush=True,
        )

    if args.jobs == 1:
        for i, task in enumerate(todo, 1):
            try:
                finished(i, task, run_task(task, threads), None)
            except Exception as err:
                finished(i, task, None, f"{type(err).__name__}: {err}")
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(_run_in_worker, t, threads): t for t in todo}
            try:
                for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
                    task = futures[future]
                    try:
                        finished(i, task, future.result(), None)
                    except Exception as err:
                        finished(i, task, None, f"{type(err).__name__}: {err}")
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    if args.pending is not None and args.pending < 2:
        raise SystemExit("--pending must be at least 2 (1 is the sequential mode)")
    if args.samplers is None:
        args.samplers = ["paretune"] if (args.pending or args.timing_growth) else list(SAMPLERS)
    kwargs = parse_kwargs(args.sampler_kwargs, args.paretune_fast)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")

    notes: dict[str, str] = {}
    if "optuna-integration" in args.samplers and not optuna_integration_available():
        notes["optuna-integration"] = (
            f"skipped, optuna-integration is not installed (`{INSTALL_OPTUNA_INTEGRATION}`)"
        )
        if not args.table_only:
            print(
                "optuna-integration is not installed; skipping that sampler. To include it, "
                f"run: {INSTALL_OPTUNA_INTEGRATION}",
                flush=True,
            )

    failed: list[str] = []
    if not args.table_only:
        tasks = plan(args, kwargs)
        tasks = [t for t in tasks if t.sampler not in notes]
        try:
            failed = execute(tasks, args)
        except KeyboardInterrupt:
            print("\ninterrupted; finished runs are in the cache", file=sys.stderr)
            return 130

    table_samplers = args.samplers
    if args.timing_growth or args.pending:
        # The comparison needs the anchors too, where the cache has them.
        table_samplers = list(SAMPLERS)
    sel = Selection(
        problems=args.problems,
        samplers=table_samplers,
        seeds=args.seeds,
        budgets=args.budgets,
        kwargs=kwargs,
        runs=longest_runs(harness.read_records(args.cache)),
    )
    if table_samplers != args.samplers:
        # Hide columns the cache has nothing for.
        sel.samplers = [
            s
            for s in table_samplers
            if s in args.samplers or any(sel.records(p, s) for p in sel.problems)
        ]
    print()
    print(render_table(sel, notes))
    ok = True
    if args.check:
        ok = run_checks(sel)
    if failed:
        print(f"\n{len(failed)} run(s) failed: " + "; ".join(failed), file=sys.stderr)
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

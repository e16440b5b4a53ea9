"""How long ``paretune report`` takes on large studies, against plain ``optuna.visualization``
drawing the same figures in the same run.

    python benchmarks/report.py                     # 500 and 10,000 trials, 3 repeats each
    python benchmarks/report.py --sizes 500 --repeats 1
    python benchmarks/report.py --record            # and append to results/report.jsonl

Each study is a real SQLite study (made once per size and kept in ``results/cache/report/``:
writing 10,000 trials through Optuna's RDB storage takes minutes): two
objectives (ZDT1-like, minimised) over six parameters (four floats, one log-scaled, one
categorical), every trial reporting an intermediate value at 20 steps, 5 % of trials pruned,
2 % failed. Timed from a cold read of the storage to the written HTML file:

- paretune: ``StudyData.from_store`` + ``write_report`` (every figure family that applies:
  Pareto front, hypervolume, parallel coordinates, importances, learning curves, ... and
  the Pareto table; plotly.js inlined once);
- optuna: ``optuna.load_study`` + ``plot_pareto_front``, ``plot_hypervolume_history``,
  ``plot_parallel_coordinate`` (each objective), ``plot_param_importances`` (each objective),
  ``plot_intermediate_values``, written into one HTML file the same way. Importances use the
  same evaluator as paretune for that size (fANOVA up to 200 trials, else the random forest's
  mean decrease in impurity): Optuna's default, fANOVA, takes minutes at 10,000 trials.

Targets (issue 21): under 10 s at 500 trials and under 60 s at 10,000, on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    append_record,
    machine,
    machine_text,
    markdown_table,
    stamp,
    versions,
    versions_text,
)

RESULTS = Path(__file__).resolve().parent / "results" / "report.jsonl"
CACHE = Path(__file__).resolve().parent / "results" / "cache" / "report"
TARGETS = {500: 10.0, 10_000: 60.0}


def make_study(path: Path, n: int, seed: int = 0) -> str:
    """A SQLite study of ``n`` trials; returns its storage URL."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    url = f"sqlite:///{path}"
    if path.exists():
        return url
    partial = path.with_suffix(".partial.db")
    partial.unlink(missing_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    dists = {
        "x0": FloatDistribution(0.0, 1.0),
        "x1": FloatDistribution(0.0, 1.0),
        "x2": FloatDistribution(0.0, 1.0),
        "x3": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "kind": CategoricalDistribution(["serial", "parallel", "lora"]),
    }
    trials = []
    for i in range(n):
        p: dict[str, Any] = {k: float(rng.random()) for k in ("x0", "x1", "x2", "x3")}
        p["lr"] = float(10 ** rng.uniform(-5, -1))
        p["kind"] = ["serial", "parallel", "lora"][i % 3]
        g = 1 + 9 * (p["x1"] + p["x2"] + p["x3"]) / 3
        f0, f1 = p["x0"], g * (1 - np.sqrt(p["x0"] / g))
        curve = {s: f1 * (1 + 2.0 / (s + 1)) for s in range(20)}
        u = rng.random()
        state = TrialState.FAIL if u < 0.02 else TrialState.PRUNED if u < 0.07 else None
        if state is TrialState.PRUNED:
            curve = {s: v for s, v in curve.items() if s < 8}
        trials.append(
            create_trial(
                state=state or TrialState.COMPLETE,
                params=p,
                distributions=dists,
                values=None if state else [f0, float(f1)],
                intermediate_values={} if state is TrialState.FAIL else curve,
            )
        )
    storage = optuna.storages.RDBStorage(f"sqlite:///{partial}")
    # Made once, then only read: no fsync per trial while writing it (minutes -> seconds).
    from sqlalchemy import event

    def no_sync(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA journal_mode=MEMORY")

    event.listen(storage.engine, "connect", no_sync)
    storage.engine.dispose()
    study = optuna.create_study(
        study_name="bench", storage=storage, directions=["minimize", "minimize"]
    )
    study.set_metric_names(["f0", "f1"])
    study.add_trials(trials)
    storage.engine.dispose()
    partial.rename(path)  # a killed run leaves no half-made study behind
    return url


def time_paretune(url: str, out: Path) -> tuple[float, dict[str, float]]:
    from paretune.dashboards import StudyData, write_report
    from paretune.trials_store import StudyConfig, TrialsStore

    started = time.perf_counter()
    store = TrialsStore(StudyConfig(name="bench", storage_url=url), create=False, mlflow=False)
    data = StudyData.from_store(store, reevaluations=False)
    read = time.perf_counter() - started
    report = write_report(data, out)
    total = time.perf_counter() - started
    assert not report.failed, report.failed
    return total, {"read": read, **{s.name: s.seconds for s in report.sections}}


def time_optuna(url: str, out: Path, n_complete: int) -> float:
    import warnings

    import optuna
    import plotly.io as pio
    from optuna import visualization as vis
    from plotly.offline import get_plotlyjs

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.perf_counter()
    study = optuna.load_study(study_name="bench", storage=url)
    evaluator: Any = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if n_complete <= 200
        else optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    )
    figs = [
        vis.plot_pareto_front(study),
        vis.plot_hypervolume_history(study, reference_point=[1.1, 11.0]),
    ]
    for i in range(2):
        target = _value(i)
        figs.append(vis.plot_parallel_coordinate(study, target=target, target_name=f"f{i}"))
        figs.append(
            vis.plot_param_importances(
                study, evaluator=evaluator, target=target, target_name=f"f{i}"
            )
        )
    figs.append(vis.plot_intermediate_values(study))
    body = "".join(pio.to_html(f, include_plotlyjs=False, full_html=False) for f in figs)
    out.write_text(
        f"<html><head><script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )
    return time.perf_counter() - started


def _value(i: int) -> Any:
    return lambda t: t.values[i]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the studies are kept")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    m, v = machine(), versions("optuna", "plotly", "numpy", git=True)
    print(f"machine: {machine_text(m)}\nversions: {versions_text(v)}")
    rows, summary = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            args.cache.mkdir(parents=True, exist_ok=True)
            url = make_study(args.cache / f"study-{n}.db", n)
            print(f"study of {n} trials made in {time.perf_counter() - t0:.1f} s", flush=True)
            n_complete = round(n * 0.93)
            ours: list[float] = []
            theirs: list[float] = []
            parts: dict[str, float] = {}
            for r in range(args.repeats):  # alternated, so drift hits both alike
                total, parts = time_paretune(url, Path(tmp) / "paretune.html")
                ours.append(total)
                theirs.append(time_optuna(url, Path(tmp) / "optuna.html", n_complete))
                print(f"  repeat {r}: paretune {ours[-1]:.2f} s, optuna {theirs[-1]:.2f} s")
            size_mb = (Path(tmp) / "paretune.html").stat().st_size / 1e6
            target = TARGETS.get(n)
            ok = "" if target is None else ("yes" if max(ours) < target else "NO")
            rows.append(
                [
                    str(n),
                    f"{statistics.median(ours):.2f} (max {max(ours):.2f})",
                    f"{statistics.median(theirs):.2f} (max {max(theirs):.2f})",
                    f"{size_mb:.1f}",
                    "-" if target is None else f"< {target:g}: {ok}",
                    ", ".join(f"{k} {s:.2f}" for k, s in parts.items()),
                ]
            )
            summary[str(n)] = {"paretune_s": ours, "optuna_s": theirs, "parts_s": parts}
    print()
    print(
        "\n".join(
            markdown_table(
                [
                    "trials",
                    "paretune report, s",
                    "optuna.visualization, s",
                    "report MB",
                    "target",
                    "paretune by part (last repeat), s",
                ],
                rows,
            )
        )
    )
    if args.record:
        append_record(RESULTS, {**stamp(), "machine": m, "versions": v, "sizes": summary})
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

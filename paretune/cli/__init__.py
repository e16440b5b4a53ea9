"""The ``paretune`` command.

``paretune run SPEC`` runs (or continues) a search; ``resume SPEC`` continues one that exists;
``status SPEC`` and ``export SPEC`` read the study; ``reevaluate SPEC --pareto --seeds 3
--full-fidelity`` trains the Pareto front (and the baselines) again with several seeds and
reports mean and spread; ``report SPEC`` writes the study's HTML report (figures and the Pareto
table, logged to its MLflow parent run); ``coord-check SPEC`` checks that the spec's ``lm``
decoder keeps every activation's size across widths (muP); ``mutransfer SPEC`` runs the
muTransfer workflow (coordinate check, proxy search, transfer check, target runs); ``dac SPEC``
trains a policy for an objective's dynamic parameter across episodes (trials) and evaluates it
on held-out instances against the parameter held (``run SPEC --policy FILE`` reuses it);
``ui SPEC`` serves the MLflow UI on the study's tracking store (``--dashboard``:
optuna-dashboard on its storage) until Ctrl-C; ``schema`` prints the spec's JSON schema.

Exit codes: 0 done, 1 a runtime problem (storage, tracking) or a failed coordinate check, 2
invalid input (spec, arguments),
130 stopped by Ctrl-C or SIGTERM (running trials were queued again; ``resume`` continues).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, ParetuneError
from paretune._secrets import redact
from paretune.cli._exit import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from paretune.cli._parser import build_parser

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.spec import SearchSpec
    from paretune.trials_store import TrialsStore


def _load(args: argparse.Namespace) -> SearchSpec:
    from paretune.spec import load_spec

    return load_spec(args.spec, overrides=args.set or ())


def _cmd_run(args: argparse.Namespace, *, resume: bool) -> int:
    from paretune.dashboards import ProgressBar, pareto_section, run_summary

    spec = _load(args)
    if args.trials is not None:
        spec = spec.model_copy(
            update={"budget": spec.budget.model_copy(update={"trials": args.trials})}
        )
    bar: ProgressBar | None = None

    def on_start(store: TrialsStore, recovered: list[int]) -> None:
        nonlocal bar
        done = store.n_finished()
        print(f"paretune: {'resuming' if done else 'starting'} study {spec.study!r}", flush=True)
        print(_where(spec.study, store), flush=True)
        if recovered:
            print(
                f"recovered {len(recovered)} trial(s) left running by a stopped process "
                f"({', '.join(map(str, recovered))}); they are queued again",
                flush=True,
            )
        bar = ProgressBar(
            total=spec.budget.trials,
            initial=done,
            metrics=spec.metrics,
            front=store.pareto_trials(),
            enabled=not args.no_progress,
        )

    class _Forward:
        def update(self, store: TrialsStore, trial: FrozenTrial) -> None:
            if bar is not None:
                bar.update(store.pareto_trials())

    try:
        result = spec.run(resume=resume, progress=_Forward(), on_start=on_start, policy=args.policy)
    finally:
        if bar is not None:
            bar.close()
    print("\n" + run_summary(result.counts, result.seconds, interrupted=result.interrupted))
    print("\n" + pareto_section(result.pareto, spec.metrics))
    print()
    print(_where(spec.study, result.store))
    if spec.report_path.exists():
        print(f"report: {spec.report_path} (figures and the Pareto table; opens offline)")
    if result.interrupted:
        print(
            f"\ninterrupted: running trials were queued again; continue with "
            f"`paretune resume {args.spec}`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _where(study: str, store: TrialsStore) -> str:
    from paretune.dashboards import where_lines

    tracked = store.tracking_uri if store.mlflow is not None else None
    return where_lines(study=study, storage_url=store.storage_url, tracking_uri=tracked)


def _read_only(args: argparse.Namespace) -> tuple[SearchSpec, TrialsStore]:
    """The spec, read but not resolved (its objective is not built: no data needed), and its
    study opened to read."""
    from paretune.spec import load_spec
    from paretune.trials_store import TrialsStore

    spec = load_spec(args.spec, overrides=args.set or (), resolve=False)
    return spec, TrialsStore(spec.study_config(read_only=True), create=False, mlflow=False)


def _cmd_status(args: argparse.Namespace) -> int:
    from paretune.dashboards import pareto_section, status_summary, where_lines

    spec, store = _read_only(args)
    finished = store.n_finished()
    total = spec.budget.trials
    print(status_summary(spec.study, finished=finished, total=total, counts=store.counts()))
    print("\n" + pareto_section(store.pareto_trials(), store.config.metrics))
    print()
    print(
        where_lines(
            study=spec.study,
            storage_url=store.storage_url,
            tracking_uri=store.tracking_uri,
            hints=False,
        )
    )
    unlogged = store.unlogged_trials() if store.tracking_uri is not None else []
    if unlogged:
        shown = ", ".join(f"t{n:03d}" for n in unlogged[:20])
        more = f" and {len(unlogged) - 20} more" if len(unlogged) > 20 else ""
        print(
            f"\nnot in MLflow yet: {len(unlogged)} finished trials ({shown}{more}); the "
            f"tracking store did not answer. `paretune resume {args.spec}` logs them once it "
            "answers."
        )
    return EXIT_OK


def _cmd_ui(args: argparse.Namespace) -> int:
    from paretune.dashboards import serve_study_ui

    spec, store = _read_only(args)  # the study must exist
    config = store.config
    print(f"paretune: starting the {'optuna-dashboard' if args.dashboard else 'MLflow UI'} "
          f"of study {spec.study!r}", flush=True)  # fmt: skip
    serve_study_ui(
        study=spec.study,
        storage_url=config.storage_url,
        tracking_uri=config.tracking_uri,
        artifact_location=config.artifact_location,
        host=args.host,
        port=args.port,
        dashboard=args.dashboard,
        say=lambda line: print(line, flush=True),
    )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from paretune.trials_store import export_trials

    _, store = _read_only(args)
    text = export_trials(store, args.format, args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        n = len(store.study.get_trials(deepcopy=False))  # not .trials: a deep copy of each
        print(f"wrote {n} trials to {args.output}", file=sys.stderr)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from paretune.spec import load_spec, write_study_report

    spec, store = _read_only(args)
    reference = spec.objective.reference_point
    if reference is None:  # the problem's own, where its objective can be built here
        try:
            reference = load_spec(args.spec, overrides=args.set or ()).reference_point
        except ParetuneError:
            reference = None
    path = Path(args.output) if args.output else spec.report_path
    figures = args.figures.split(",") if args.figures else spec.report.figures
    started = time.perf_counter()
    report = write_study_report(
        store,
        path,
        reference_point=reference,
        figures=figures,
        log_to_mlflow=not args.no_mlflow,
    )
    for section in report.sections:
        shown = (
            f"failed: {section.error}" if section.error else f"{len(section.figure_ids)} figure(s)"
        )
        print(f"  {section.name:<12} {shown} ({section.seconds:.1f} s)")
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB) in {time.perf_counter() - started:.1f} s")
    return EXIT_ERROR if report.failed else EXIT_OK


def _cmd_reevaluate(args: argparse.Namespace) -> int:
    from paretune.dashboards import (
        dominance_lines,
        reevaluation_line,
        reevaluation_table,
        write_reevaluation_csv,
    )

    spec = _load(args)
    numbers = args.trials or []
    if args.pareto_tolerance and not args.pareto:
        print("paretune: error: --pareto-tolerance needs --pareto", file=sys.stderr)
        return EXIT_USAGE
    counts = Counter(metric for metric, _ in args.pareto_tolerance)
    repeated = sorted(metric for metric, n in counts.items() if n > 1)
    if repeated:
        print(
            f"paretune: error: --pareto-tolerance gives {', '.join(repeated)} more than once",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fidelity = "full fidelity" if args.full_fidelity else "the search's fidelity"
    print(
        f"paretune: re-evaluating study {spec.study!r} with {args.seeds} seed(s) at {fidelity}",
        flush=True,
    )

    def progress(done: int, total: int, result: Any, seed: int, outcome: Any, secs: float) -> None:
        line = reevaluation_line(done, total, result, seed, outcome, secs, metrics=spec.metrics)
        print(line, flush=True)

    results = spec.reevaluate(
        numbers=numbers,
        pareto=args.pareto,
        baselines=(args.pareto and not args.no_baselines) or args.baselines,
        pareto_tolerance=dict(args.pareto_tolerance),
        seeds=args.seeds,
        full_fidelity=args.full_fidelity,
        n_jobs=args.jobs,
        threads=args.threads,
        progress=progress,
    )
    print()
    print(reevaluation_table(results, spec.metrics))
    verdicts = dominance_lines(results, spec.metrics)
    if verdicts:
        print()
        print("\n".join(verdicts))
    if args.output:
        write_reevaluation_csv(results, spec.metrics, args.output)
        print(f"\nwrote {args.output}")
    return EXIT_OK


def _cmd_coord_check(args: argparse.Namespace) -> int:
    from paretune.dashboards import coord_check_table, coord_check_verdict
    from paretune.objectives.lm import LMSettings, coordinate_check
    from paretune.spec import read_spec

    # Only the objective matters here, so a search spec and a muTransfer spec both serve.
    objective = read_spec(args.spec, overrides=args.set or ()).get("objective")
    kind = objective.get("type") if isinstance(objective, dict) else None
    if kind != "lm" or not isinstance(objective, dict):
        raise ConfigError(
            f"the coordinate check trains the `lm` objective's decoder, but the spec's "
            f"objective is {kind!r}.",
            path=("objective", "type"),
        )
    from pydantic import ValidationError

    from paretune._validation import config_error

    try:
        settings = LMSettings.model_validate(objective.get("settings") or {})
    except ValidationError as err:
        raise config_error(err).prefixed("objective", "settings") from None
    if args.parametrization is not None:
        settings = settings.model_copy(update={"parametrization": args.parametrization})
    widths = args.widths
    print(
        f"paretune: coordinate check of {settings.architecture} ({settings.parametrization}, "
        f"base width {settings.base_width}, depth {settings.depth}) at widths "
        f"{', '.join(map(str, widths))}: {args.steps} Adam steps at lr {args.learning_rate:g}, "
        f"{args.seeds} seed(s)",
        flush=True,
    )

    def progress(done: int, total: int) -> None:
        print(f"  run {done}/{total}", flush=True)

    check = coordinate_check(
        settings,
        widths=widths,
        steps=args.steps,
        seeds=args.seeds,
        learning_rate=args.learning_rate,
        tolerance=args.tolerance,
        device=settings.device or "cpu",
        progress=progress,
    )
    print()
    print(coord_check_table(check))
    print()
    print(coord_check_verdict(check))
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(check.to_json(), handle, indent=2)
        print(f"wrote {args.json}")
    return EXIT_OK if check.ok else EXIT_ERROR


def _cmd_mutransfer(args: argparse.Namespace) -> int:
    from paretune.spec import CoordCheckFailed, run_mutransfer

    try:
        result = run_mutransfer(args.spec, overrides=args.set or ())
    except CoordCheckFailed as err:
        print(f"paretune: {err}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def _cmd_dac(args: argparse.Namespace) -> int:
    from paretune.dashboards import ProgressBar, paired_summary
    from paretune.spec import load_spec, run_dac_spec, write_study_report

    bar: ProgressBar | None = None

    def on_start(store: TrialsStore, recovered: list[int]) -> None:
        nonlocal bar
        done = store.n_finished()
        name = store.config.name
        print(f"paretune: {'resuming' if done else 'starting'} DAC run {name!r}", flush=True)
        print(_where(name, store), flush=True)
        bar = ProgressBar(
            total=None,
            initial=done,
            metrics=store.config.metrics,
            front=[],
            enabled=not args.no_progress,
        )

    class _Forward:
        def update(self, store: TrialsStore, trial: FrozenTrial) -> None:
            if bar is not None:
                bar.update([])

    try:
        result = run_dac_spec(
            args.spec, overrides=args.set or (), progress=_Forward(), on_start=on_start
        )
    finally:
        if bar is not None:
            bar.close()
    for stats in result.updates[-3:]:
        print(
            f"update {int(stats.get('update', 0)):3d}: mean reward {stats.get('reward', 0):.4f}"
            f" over {int(stats.get('episodes', 0))} episodes, entropy "
            f"{stats.get('entropy', 0):.3f}"
        )
    print(f"policy: {result.policy!r}")
    if any("policy" in e for e in result.evaluation):
        print("\n" + paired_summary(result.evaluation, result.store.config.metrics[0]))
    spec = load_spec(args.spec, overrides=args.set or (), resolve=False)
    print(
        f"\npolicy saved: {result.policy_path} (and as the MLflow parent run's policy/policy.json)"
    )
    try:
        from paretune.trials_store import TrialsStore

        store = TrialsStore(spec.study_config(read_only=True), create=False, mlflow=False)
        write_study_report(store, spec.report_path, reference_point=None)
        print(f"report: {spec.report_path} (the actions each episode took)")
    except ParetuneError as err:
        print(f"paretune: the report was not written: {redact(str(err))}", file=sys.stderr)
    print(f"done in {result.seconds:.0f} s")
    if result.interrupted:
        print(
            f"\ninterrupted: running episodes were queued again; continue with "
            f"`paretune dac {args.spec}`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from paretune.spec import SearchSpec, dac_json_schema, mutransfer_json_schema

    if args.mutransfer:
        schema = mutransfer_json_schema()
    elif args.dac:
        schema = dac_json_schema()
    else:
        schema = SearchSpec.model_json_schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    # The CLI prints its own summary; Optuna's per-trial INFO lines would bury it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.command in ("run", "resume") and args.trials is not None and args.trials < 1:
        print(f"paretune: error: --trials must be >= 1, but got {args.trials}", file=sys.stderr)
        return EXIT_USAGE
    from paretune.search import SearchInterrupted, stop_signals

    # Ctrl-C and SIGTERM (a scheduler, `kill`) stop a search cleanly: running trials are
    # failed and queued again, the MLflow runs closed. One that arrives while the study and
    # MLflow are opened is kept until the trial loop begins.
    with stop_signals():
        try:
            return _dispatch(args)
        except ConfigError as err:
            where = f" {args.spec}" if getattr(args, "spec", None) else ""
            print(f"paretune: invalid spec{where}: {redact(str(err))}", file=sys.stderr)
            return EXIT_USAGE
        except SearchInterrupted as err:  # a ParetuneError, but a stop, not a failure
            print(f"paretune: {err}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except ParetuneError as err:
            print(f"paretune: error: {redact(str(err))}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("paretune: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _cmd_run(args, resume=False)
    if args.command == "resume":
        return _cmd_run(args, resume=True)
    if args.command == "status":
        return _cmd_status(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "ui":
        return _cmd_ui(args)
    if args.command == "reevaluate":
        return _cmd_reevaluate(args)
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "coord-check":
        return _cmd_coord_check(args)
    if args.command == "mutransfer":
        return _cmd_mutransfer(args)
    if args.command == "dac":
        return _cmd_dac(args)
    return _cmd_schema(args)

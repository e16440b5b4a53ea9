"""The ``paretune`` command's arguments: the parser and the types of its values."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from paretune.cli._exit import EXIT_USAGE


def _trial_numbers(text: str) -> list[int]:
    try:
        numbers = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        numbers = []
    if not numbers or numbers[0] < 0:
        raise argparse.ArgumentTypeError(f"expected trial numbers like 3,7,12, but got {text!r}")
    return numbers


def _tolerance(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        margin = float(value)
    except ValueError:
        margin = math.nan
    if not sep or not name.strip() or not (math.isfinite(margin) and margin >= 0):
        raise argparse.ArgumentTypeError(
            f"expected METRIC=MARGIN with a margin >= 0, like accuracy=0.01, but got {text!r}"
        )
    return name.strip(), margin


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, but got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, but got {text!r}")
    return value


def _widths(text: str) -> list[int]:
    try:
        widths = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        widths = []
    if len(widths) < 2 or widths[0] < 1:
        raise argparse.ArgumentTypeError(
            f"expected two or more widths like 64,128,256, but got {text!r}"
        )
    return widths


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, but got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 too; keep our message style
        self.print_usage(sys.stderr)
        print(f"paretune: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change the spec before it is validated, e.g. "
        "`--set objective.settings.data=bbc_news.csv.gz --set study=bbc` (repeatable; the "
        "value is read as YAML)",
    )


def build_parser() -> argparse.ArgumentParser:
    from paretune import __version__

    parser = _Parser(prog="paretune", description="The ``paretune`` command.")
    parser.add_argument("--version", action="version", version=f"paretune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, help_text in (
        ("run", "run a search (continues the study if it exists)"),
        ("resume", "continue an existing search to its budget"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("spec", help="the search spec (YAML)")
        p.add_argument("--trials", type=int, default=None, help="override budget.trials")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument(
            "--policy",
            default=None,
            metavar="PATH",
            help="a DAC policy saved by `paretune dac` (a file or an MLflow artifact URI): "
            "every trial's dynamic parameter follows it (greedy)",
        )
        _add_set(p)

    p = sub.add_parser("status", help="trial counts and the Pareto front of a study")
    p.add_argument("spec")
    _add_set(p)
    p = sub.add_parser(
        "ui",
        help="serve the MLflow UI on the study's tracking store (--dashboard: optuna-dashboard "
        "on its storage) on this machine, until Ctrl-C or SIGTERM",
    )
    p.add_argument("spec")
    p.add_argument(
        "--port",
        type=_port,
        default=None,
        help="the port (default 5000, optuna-dashboard 8080; 0: any free port)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the interface to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--dashboard", action="store_true", help="optuna-dashboard instead of MLflow")
    _add_set(p)
    p = sub.add_parser("export", help="write every trial as CSV or JSON")
    p.add_argument("spec")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("-o", "--output", default=None, help="file to write (default: stdout)")
    _add_set(p)
    p = sub.add_parser(
        "report",
        help="write the study's HTML report (figures and Pareto table; opens offline) and log "
        "it to the study's MLflow parent run",
    )
    p.add_argument("spec")
    p.add_argument(
        "-o", "--output", default=None, help="file to write (default: report.html in the run dir)"
    )
    p.add_argument(
        "--figures", default=None, help="comma-separated figure families (default: all that apply)"
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log it to MLflow")
    _add_set(p)
    p = sub.add_parser(
        "reevaluate",
        help="train chosen trials again with several seeds (e.g. the Pareto front at full "
        "fidelity) and report mean and spread",
    )
    p.add_argument("spec", help="the search's spec (its study must exist)")
    p.add_argument(
        "--pareto",
        action="store_true",
        help="the Pareto-optimal trials, and the baselines to compare them with",
    )
    p.add_argument("--baselines", action="store_true", help="the enqueued baseline trials")
    p.add_argument("--no-baselines", action="store_true", help="with --pareto: not the baselines")
    p.add_argument(
        "--pareto-tolerance",
        type=_tolerance,
        action="append",
        default=[],
        metavar="METRIC=MARGIN",
        help="with --pareto: also the near-front trials that no trial beats by at least MARGIN "
        "in METRIC (and by the other metrics' margins, 0 unless given) at the same time, e.g. "
        "accuracy=0.01 for an accuracy measured with a standard error of about 0.01; repeatable",
    )
    p.add_argument(
        "--trials", type=_trial_numbers, default=None, help="comma-separated trial numbers"
    )
    p.add_argument(
        "--seeds", type=_positive_int, default=3, help="seeds 0..N-1 per trial (default 3)"
    )
    p.add_argument(
        "--full-fidelity",
        action="store_true",
        help="at the objective's full fidelity (its `full_fidelity` settings)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="evaluations at once, in worker processes (default: the spec's local runner "
        "n_jobs, else 1)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads per worker process (default: the spec's local runner threads, else "
        "the CPUs shared evenly)",
    )
    p.add_argument("-o", "--output", default=None, help="also write every run as CSV")
    _add_set(p)
    from paretune.objectives import lm

    p = sub.add_parser(
        "coord-check",
        help="train the spec's lm decoder a few steps at several widths and check that every "
        "module's activation size does not depend on width (exit 1 naming the worst module)",
    )
    p.add_argument("spec", help="a spec whose objective is `lm`")
    p.add_argument(
        "--widths",
        type=_widths,
        default=list(lm.COORD_CHECK_WIDTHS),
        help="comma-separated widths, multiples of head_dim (default "
        f"{','.join(map(str, lm.COORD_CHECK_WIDTHS))})",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=lm.COORD_CHECK_STEPS,
        help=f"Adam steps before measuring (default {lm.COORD_CHECK_STEPS})",
    )
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=lm.COORD_CHECK_SEEDS,
        help=f"seeds per width (default {lm.COORD_CHECK_SEEDS})",
    )
    p.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=lm.COORD_CHECK_LEARNING_RATE,
        help=f"the constant learning rate (default {lm.COORD_CHECK_LEARNING_RATE:g})",
    )
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        default=lm.COORD_CHECK_TOLERANCE,
        help=f"the largest |slope| that passes (default {lm.COORD_CHECK_TOLERANCE:g})",
    )
    p.add_argument(
        "--parametrization", choices=("sp", "mup"), default=None, help="override the spec's"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    _add_set(p)
    p = sub.add_parser(
        "mutransfer",
        help="coordinate check, proxy search, transfer check and target runs of a spec's "
        "`mutransfer` section, in one study (rerun to continue after a stop or a crash)",
    )
    p.add_argument("spec", help="a spec with objective `lm` and a `mutransfer` section")
    _add_set(p)
    p = sub.add_parser(
        "dac",
        help="train a policy for the objective's dynamic parameter over the episodes of a "
        "spec's `dac` section, then evaluate it on the held-out instances (rerun to continue)",
    )
    p.add_argument("spec", help="a spec with a `dac` section")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_set(p)
    p = sub.add_parser("schema", help="print the JSON schema of the spec")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--mutransfer", action="store_true", help="of a muTransfer spec (`paretune mutransfer`)"
    )
    kind.add_argument("--dac", action="store_true", help="of a DAC spec (`paretune dac`)")
    return parser

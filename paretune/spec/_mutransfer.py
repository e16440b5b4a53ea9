"""``paretune mutransfer``: coordinate check, proxy search, transfer check and target runs, in
one study and one MLflow parent run (:class:`~paretune.spec.MuTransferSpec` describes it)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, ParetuneError, StudyNotFound
from paretune.spec._load import load_spec, read_spec
from paretune.spec._mutransfer_choice import best_point, mean_loss, regret_choice, stderr
from paretune.spec._mutransfer_section import MuTransferSpec, check_search_keys, section_of
from paretune.spec._mutransfer_study import (
    Progress,
    Say,
    StudyView,
    TransferCell,
    log_to_parent,
    point,
)

if TYPE_CHECKING:
    from paretune.objectives.lm import LM, CoordCheck, LMSettings
    from paretune.spec._search import SearchSpec

__all__ = [
    "CoordCheckFailed",
    "MuTransferFailed",
    "MuTransferResult",
    "TransferCell",
    "run_mutransfer",
]


# The default budget rules of the workflow's stages: a learning-rate sweep diverges at its top
# end on purpose, so failures in a row are no reason to stop.
_BUDGET = {"max_failures_in_a_row": None}


class MuTransferFailed(ParetuneError, RuntimeError):
    """Runs of a stage failed (not by diverging): the workflow cannot decide without them.
    A rerun retries them."""


class CoordCheckFailed(ParetuneError, RuntimeError):
    """The coordinate check found a module whose activations drift with width: muTransfer
    would not hold, so no proxy was trained."""


@dataclass
class MuTransferResult:
    """What the workflow measured and decided.

    Attributes:
        coord_check: The coordinate check, or ``None`` where it was disabled.
        proxy_best: Per proxy width, its best hyperparameters and their mean loss.
        chosen: The hyperparameters carried to the targets.
        warnings: The transfer check's warnings (an optimum that drifts).
        rows: The decision table: one row per (stage, width, hyperparameters) with the mean
            validation loss over seeds.
        curves: Per width, ``(log2 LR, mean loss)`` of every learning rate it ran.
        step_law: Step Law's learning rate per width (``lr_prior`` or not), for comparison.
        figure: The HTML figure written.
        interrupted: A stop (Ctrl-C, SIGTERM) ended the workflow early; rerun to continue.
    """

    coord_check: CoordCheck | None = None
    proxy_best: dict[int, dict[str, Any]] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    step_law: dict[int, float] = field(default_factory=dict)
    figure: Path | None = None
    interrupted: bool = False


def run_mutransfer(
    source: str | Path | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    say: Say = print,
) -> MuTransferResult:
    """Run (or continue) the muTransfer workflow of a spec with a ``mutransfer`` section.

    Every run is a trial of the spec's study, labelled with its stage, width, learning rate
    and seed; a rerun after a crash (even ``kill -9``) recovers the running trials, skips the
    finished ones and goes on. The coordinate check's result is kept in the run directory
    (``coord_check.json``) and reused while its settings do not change.

    Args:
        source: The spec (a YAML path or a mapping).
        overrides: ``--set`` changes.
        say: Where progress lines and tables go.

    Raises:
        ConfigError: The spec is invalid (the path names the field).
        CoordCheckFailed: The coordinate check failed; no proxy was trained.
    """
    data = read_spec(source, overrides=overrides)
    section = section_of(data)
    base = {k: v for k, v in data.items() if k != "mutransfer"}
    objective = base.get("objective")
    if not (isinstance(objective, Mapping) and objective.get("type") == "lm"):
        raise ConfigError(
            "the muTransfer workflow trains the `lm` objective; set objective.type: lm.",
            path=("objective", "type"),
        )
    check_search_keys(base)
    from paretune.objectives.lm import LM

    try:
        lm = LM(**dict(objective.get("settings") or {}))
    except ConfigError as err:
        raise err.prefixed("objective", "settings") from None
    if lm.validated.width_fidelity:
        raise ConfigError(
            "the muTransfer workflow sets each run's width itself; remove width_fidelity.",
            path=("objective", "settings", "width_fidelity"),
        )
    if section.lr_prior == "steplaw" and lm.validated.schedule.type == "power":
        raise ConfigError(
            "with a power schedule `learning_rate` multiplies the schedule's own rate, so Step "
            "Law's rate cannot centre its grid; use lr_grid.low and lr_grid.high.",
            path=("mutransfer", "lr_prior"),
        )
    return _Workflow(base, section, lm, say).run()


class _Workflow:
    def __init__(self, base: dict[str, Any], section: MuTransferSpec, lm: LM, say: Say) -> None:
        self.base = base
        self.section = section
        self.lm = lm
        self.settings: LMSettings = lm.validated
        self.say = say
        self.result = MuTransferResult()
        for width in section.widths:
            if width % self.settings.head_dim:
                raise ConfigError(
                    f"every width grows by heads of head_dim={self.settings.head_dim}, but "
                    f"{width} is not a multiple of it.",
                    path=("mutransfer", "target_widths" if width in section.target_widths
                          else "proxy_widths"),
                )  # fmt: skip
        self.grid = self._grid()
        self.space = self._space()
        self.run_dir = Path(base.get("run_dir") or Path("runs") / str(base.get("study")))

    # -- set-up -----------------------------------------------------------------------------

    def _grid(self) -> list[float]:
        from paretune.search.steplaw import step_law_lr

        tokens = self.lm.tokens
        for width in self.section.widths:
            n = self.lm.non_embedding_params(width)
            self.result.step_law[width] = float(step_law_lr(n, tokens))
        if self.section.lr_prior == "steplaw":
            # Step Law's rate is a standard-parametrization rate. Under muP the searched rate
            # is the one of the base width (where muP is SP); under SP it is the widest
            # proxy's own.
            if self.settings.parametrization == "mup":
                n = self.lm.non_embedding_params(self.settings.base_width)
                centre = math.log2(float(step_law_lr(n, tokens)))
            else:
                centre = math.log2(self.result.step_law[max(self.section.proxy_widths)])
            return self.section.lr_grid.points(centre)
        return self.section.lr_grid.points()

    def _space(self) -> dict[str, dict[str, Any]]:
        factors = [*self.section.verify, 1.0]
        low = 2.0 ** min(self.grid) * min(factors)
        high = 2.0 ** max(self.grid) * max(factors)
        space: dict[str, dict[str, Any]] = {
            "learning_rate": {"type": "float", "low": low, "high": high, "log": True},
            "width": {"type": "categorical", "choices": self.section.widths},
            "seed": {"type": "categorical", "choices": self.section.seeds},
        }
        for name, values in self.section.multipliers.items():
            default = float(getattr(self.settings, name))
            space[name] = {
                "type": "float",
                "low": min([*values, default]),
                "high": max([*values, default]),
                "log": True,
            }
        return space

    def _defaults(self) -> dict[str, float]:
        """The searched multipliers at their settings' values."""
        return {name: float(getattr(self.settings, name)) for name in self.section.multipliers}

    # -- stages -----------------------------------------------------------------------------

    def run(self) -> MuTransferResult:
        s = self.section
        self.say(
            f"paretune: muTransfer of {self.settings.architecture} ({self.settings.parametrization}"
            f", base width {self.settings.base_width}): proxies {s.proxy_widths}, targets "
            f"{s.target_widths}, seeds {s.seeds}, {self.settings.total_steps} steps per run"
        )
        if s.coord_check.enabled:
            self._coord_check()
        proxies = self._proxy_cells()
        if not self._stage("proxy search", proxies):
            return self.result
        chosen = self._choose(proxies)
        if s.search == "independent":
            cells = self._multiplier_cells(chosen)
            if not self._stage("multiplier sweeps", cells):
                return self.result
            chosen |= self._choose_multipliers(cells, proxies, chosen["learning_rate"])
        self.result.chosen = chosen
        self._transfer_check(proxies)
        targets = self._target_cells(chosen)
        if not self._stage("target runs", targets):
            return self.result
        self._decide([*proxies, *targets])
        return self.result

    def _coord_check(self) -> None:
        from paretune.dashboards import coord_check_table, coord_check_verdict
        from paretune.objectives.lm import CoordCheck, coordinate_check

        spec = self.section.coord_check
        widths = spec.widths or self.section.widths
        key = {
            "settings": self.settings.model_dump(mode="json"),
            "widths": widths,
            **spec.model_dump(exclude={"widths", "enabled"}),
        }
        cache = self.run_dir / "coord_check.json"
        check: CoordCheck | None = None
        if cache.is_file():
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                check = CoordCheck(**saved["check"])
                self.say("coordinate check: the result of an earlier run (same settings)")
        if check is None:
            self.say(f"coordinate check at widths {widths}")
            check = coordinate_check(
                self.settings,
                widths=widths,
                steps=spec.steps,
                seeds=spec.seeds,
                learning_rate=spec.learning_rate,
                tolerance=spec.tolerance,
                device=self.settings.device or "cpu",
            )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fields = {k: v for k, v in vars(check).items()}
            cache.write_text(json.dumps({"key": key, "check": fields}), encoding="utf-8")
        self.result.coord_check = check
        self.say(coord_check_table(check))
        self.say(coord_check_verdict(check))
        if not check.ok:
            raise CoordCheckFailed(
                f"{coord_check_verdict(check)} The proxies' hyperparameters would not "
                "transfer; fix the parametrization (or disable mutransfer.coord_check) first."
            )

    def _cell(self, stage: str, width: int, seed: int, **params: Any) -> TransferCell:
        parts = [stage, f"w{width}"]
        if "learning_rate" in params:
            parts.append(f"lr2^{math.log2(params['learning_rate']):.10g}")
        parts += [f"{k}={v:.10g}" for k, v in params.items() if k != "learning_rate"]
        parts.append(f"s{seed}")
        return TransferCell(stage, " ".join(parts), {**params, "width": width, "seed": seed})

    def _proxy_cells(self) -> list[TransferCell]:
        s = self.section
        if s.search == "controller":
            return [
                TransferCell("proxy", f"proxy w{w} #{i}", {"width": w, "seed": s.seeds[0]})
                for w in s.proxy_widths
                for i in range(s.controller_trials or 0)
            ]
        return [
            self._cell("proxy", w, seed, learning_rate=2.0**x, **self._defaults())
            for w in s.proxy_widths
            for x in self.grid
            for seed in s.seeds
        ]

    def _multiplier_cells(self, chosen: Mapping[str, float]) -> list[TransferCell]:
        s = self.section
        cells = []
        for name, values in s.multipliers.items():
            for value in values:
                params = {**self._defaults(), name: float(value)}
                for w in s.proxy_widths:
                    for seed in s.seeds:
                        cells.append(
                            self._cell(
                                f"multiplier:{name}", w, seed,
                                learning_rate=chosen["learning_rate"], **params,
                            )
                        )  # fmt: skip
        return cells

    def _target_cells(self, chosen: Mapping[str, float]) -> list[TransferCell]:
        cells = []
        hyper = {k: v for k, v in chosen.items() if k != "learning_rate"}
        space = self.space["learning_rate"]
        rates: dict[float, str] = {}
        for factor in sorted(set(self.section.verify) | {1.0}):
            # A controller may choose a rate near the range's edge; a verification run past
            # it runs at the edge instead (the study's learning-rate range holds every run).
            rate = min(max(chosen["learning_rate"] * factor, space["low"]), space["high"])
            if factor == 1.0 or rate not in rates:
                rates[rate] = "target" if factor == 1.0 else "verify"
        for w in self.section.target_widths:
            for rate, stage in sorted(rates.items()):
                for seed in self.section.seeds:
                    cells.append(self._cell(stage, w, seed, learning_rate=rate, **hyper))
        return cells

    def _stage(self, title: str, cells: list[TransferCell]) -> bool:
        """Run the cells that are not done; ``False`` when a stop interrupted them.

        A cell is done when its trial completed or diverged. One that failed otherwise (out
        of memory, a timeout, a bug) is queued again by the next run of the workflow. Trials
        already queued (by an earlier, interrupted run) run first and count in the budget, so
        the stage ends only when each of its cells has a finished trial.

        Raises:
            MuTransferFailed: Cells of this stage failed; their errors are quoted.
        """
        from paretune.trials_store import LABEL_ATTR

        view = self._view()
        todo = [c for c in cells if c.label not in view.done]
        self.say(f"\n{title}: {len(cells)} run(s), {len(cells) - len(todo)} finished earlier")
        if todo:
            queued = sum(1 for c in todo if c.label not in view.queued)
            spec = self._spec(trials=view.finished + view.running + view.waiting + queued)

            def enqueue(store: Any, recovered: list[int]) -> None:
                now = StudyView.of(store)
                for cell in todo:
                    if cell.label not in now.done and cell.label not in now.queued:
                        store.study.enqueue_trial(cell.params, user_attrs={LABEL_ATTR: cell.label})
                if recovered:
                    self.say(f"  recovered {len(recovered)} trial(s) a stopped run left running")

            result = spec.run(progress=Progress(self.say, todo), on_start=enqueue)
            if result.interrupted:
                self.result.interrupted = True
                self.say("interrupted: rerun the same command to continue where it stopped")
                return False
        missing = [c for c in cells if c.label not in self._view().done]
        if missing:
            errors = self._view().errors
            first = missing[0].label
            why = errors.get(first, "it did not run").strip().splitlines()
            raise MuTransferFailed(
                f"{len(missing)} run(s) of the {title} did not finish, e.g. {first!r}: "
                f"{why[-1] if why else 'no error recorded'}; rerun the same command to retry "
                "them (finished runs are kept)."
            )
        return True

    def _spec(self, *, trials: int) -> SearchSpec:
        budget = {**_BUDGET, **dict(self.base.get("budget") or {}), "trials": max(trials, 1)}
        return load_spec({**self.base, "space": self.space, "budget": budget})

    def _view(self) -> StudyView:
        """The study as it is now (empty before the first stage created it)."""
        from paretune.trials_store import TrialsStore

        config = self._spec(trials=1).study_config(read_only=True)
        try:
            store = TrialsStore(config, create=False, mlflow=False)
        except StudyNotFound:
            return StudyView()
        try:
            return StudyView.of(store)
        finally:
            store.close()

    # -- analysis ---------------------------------------------------------------------------

    def _table(
        self, cells: Sequence[TransferCell]
    ) -> dict[int, dict[tuple[tuple[str, float], ...], list[float]]]:
        """Per width, per hyperparameter point (seed left out), the losses of its seeds
        (``inf``: diverged)."""
        losses = self._view().losses
        table: dict[int, dict[tuple[tuple[str, float], ...], list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for cell in cells:
            if cell.label not in losses:
                continue
            params, loss = losses[cell.label]
            table[int(params["width"])][point(params)].append(loss)
        return table

    def _choose(self, cells: Sequence[TransferCell]) -> dict[str, float]:
        """The proxies' choice: the point of least summed regret over the proxy widths (each
        width's loss over its own best), among the points every proxy ran; in ``controller``
        mode, the best point of the widest proxy.

        Raises:
            MuTransferFailed: Every proxy run diverged.
        """
        table = self._table(cells)
        for w in self.section.proxy_widths:
            best = best_point(table.get(w, {}))
            if best is None:
                self.say(f"warning: every run at proxy width {w} diverged; it is left out")
                continue
            self.result.proxy_best[w] = {**dict(best), "val_loss": mean_loss(table[w][best])}
        if not self.result.proxy_best:
            raise MuTransferFailed(
                "every proxy run diverged: nothing to transfer; lower the learning-rate grid."
            )
        if self.section.search == "controller":
            widest = max(self.result.proxy_best)
            return {k: v for k, v in self.result.proxy_best[widest].items() if k != "val_loss"}
        chosen = regret_choice(table, self.section.proxy_widths)
        if chosen is None:
            raise MuTransferFailed(
                "no learning rate of the grid trained without diverging at every proxy width."
            )
        return dict(chosen)

    def _choose_multipliers(
        self,
        cells: Sequence[TransferCell],
        proxies: Sequence[TransferCell],
        learning_rate: float,
    ) -> dict[str, float]:
        """Each multiplier's value, by the same regret rule, from its own sweep and the proxy
        grid's run at the chosen rate (where it sits at its setting)."""
        at_rate = [c for c in proxies if c.params.get("learning_rate") == learning_rate]
        chosen: dict[str, float] = {}
        for name in self.section.multipliers:
            sweep = [c for c in cells if c.stage == f"multiplier:{name}"]
            table = self._table([*sweep, *at_rate])
            by_value: dict[int, dict[float, list[float]]] = {
                w: {dict(p)[name]: losses for p, losses in points.items()}
                for w, points in table.items()
            }
            value = regret_choice(by_value, self.section.proxy_widths)
            if value is None:
                self.say(
                    f"warning: every {name} diverged at some proxy width; it keeps its setting"
                )
                continue
            chosen[name] = value
            self.say(
                f"{name}: {value:g} at log2 LR {math.log2(learning_rate):g} (least summed regret "
                "over the proxies)"
            )
        return chosen

    def _transfer_check(self, cells: Sequence[TransferCell]) -> None:
        from paretune.dashboards import proxy_best_table

        best = self.result.proxy_best
        self.say("\ntransfer check: the best hyperparameters of each proxy width")
        self.say(proxy_best_table(best, self.result.step_law))
        logs = [math.log2(b["learning_rate"]) for b in best.values()]
        step = self.section.lr_grid.step
        if self.section.search == "controller":
            pass  # proposals lie on no grid: the table above is the transfer check
        elif len(logs) > 1 and max(logs) - min(logs) > step + 1e-9:
            warning = (
                f"warning: the best log2 learning rate moves by {max(logs) - min(logs):g} "
                f"octave(s) across the proxy widths, more than one grid step ({step:g}): the "
                "transfer may not hold (check the coordinate check, the seeds, the steps)."
            )
            self.result.warnings.append(warning)
            self.say(warning)
        self._own_law()
        chosen = self.result.chosen
        self.say(
            f"chosen: log2 LR {math.log2(chosen['learning_rate']):g}"
            + "".join(f", {k}={v:g}" for k, v in chosen.items() if k != "learning_rate")
        )

    def _own_law(self) -> None:
        """Step Law's form fitted to the proxies' best learning rates, and its prediction at
        the targets."""
        from paretune.dashboards import fitted_law_line

        best = self.result.proxy_best
        if len(best) < 2:
            return
        widths = sorted(best)
        self.say(
            fitted_law_line(
                [self.lm.non_embedding_params(w) for w in widths],
                [best[w]["learning_rate"] for w in widths],
                tokens=self.lm.tokens,
                targets={w: self.lm.non_embedding_params(w) for w in self.section.target_widths},
                mup=self.settings.parametrization == "mup",
            )
        )

    def _decide(self, cells: Sequence[TransferCell]) -> None:
        from paretune.dashboards import (
            lr_transfer_figure,
            transfer_table,
            transfer_verdicts,
            write_transfer_csv,
        )

        table = self._table(cells)
        stage_of = {
            (int(cell.params["width"]), point(cell.params)): cell.stage.split(":")[0]
            for cell in cells
        }
        rows: list[dict[str, Any]] = []
        curves: dict[int, list[tuple[float, float]]] = {}
        for width in sorted(table):
            for at, losses in sorted(table[width].items(), key=lambda kv: kv[0]):
                params = dict(at)
                stage = stage_of.get((width, at), "?")
                mean = mean_loss(losses)
                spread = stderr(losses)
                rows.append(
                    {"stage": stage, "width": width, **params, "val_loss": mean,
                     "stderr": spread, "seeds": len(losses)}
                )  # fmt: skip
                if "learning_rate" in params and stage in ("proxy", "target", "verify"):
                    curves.setdefault(width, []).append((math.log2(params["learning_rate"]), mean))
        self.result.rows = rows
        self.result.curves = {w: sorted(c) for w, c in curves.items()}
        chosen = self.result.chosen
        self.say("\ndecision: the chosen hyperparameters at every width, and the verification")
        self.say(
            transfer_table(
                rows,
                multipliers=list(self.section.multipliers),
                chosen=chosen["learning_rate"],
                proxies=list(self.result.proxy_best),
            )
        )
        for line in transfer_verdicts(
            rows,
            targets=self.section.target_widths,
            chosen=chosen["learning_rate"],
            step_law=self.result.step_law,
        ):
            self.say(line)
        self.result.figure = self.run_dir / "mutransfer.html"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.result.figure.write_text(
            lr_transfer_figure(
                self.result.curves,
                title=f"{self.base.get('study')}: validation loss against learning rate",
                chosen=math.log2(chosen["learning_rate"]),
            ),
            encoding="utf-8",
        )
        table_csv = self.run_dir / "mutransfer.csv"
        write_transfer_csv(rows, table_csv)
        self.say(f"\nwrote {self.result.figure} and {table_csv}")
        log_to_parent(
            self._spec(trials=1), [self.result.figure, table_csv, self.run_dir / "coord_check.json"]
        )

"""``paretune mutransfer``: coordinate check, proxy search, transfer check and target runs, in
one study and one MLflow parent run (:class:`~paretune.spec.MuTransferSpec` describes it)."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from paretune._errors import ConfigError, ParetuneError, StudyNotFound
from paretune._validation import config_error
from paretune.spec._load import load_spec, read_spec
from paretune.spec._mutransfer_choice import best_point, mean_loss, regret_choice, stderr
from paretune.spec._mutransfer_section import MuTransferSpec

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

Say = Callable[[str], None]

# The default budget rules of the workflow's stages: a learning-rate sweep diverges at its top
# end on purpose, so failures in a row are no reason to stop.
_BUDGET = {"max_failures_in_a_row": None}


# How the lm objective's divergence reads in a failed trial's traceback.
_DIVERGED = re.compile(r"\bDiverged: ")


class MuTransferFailed(ParetuneError, RuntimeError):
    """Runs of a stage failed (not by diverging): the workflow cannot decide without them.
    A rerun retries them."""


class CoordCheckFailed(ParetuneError, RuntimeError):
    """The coordinate check found a module whose activations drift with width: muTransfer
    would not hold, so no proxy was trained."""


@dataclass(frozen=True)
class TransferCell:
    """One run of the workflow.

    Attributes:
        stage: ``proxy``, ``multiplier``, ``target`` or ``verify``.
        label: Unique in the study; the trial's ``paretune.label``.
        params: The trial's parameters (in ``controller`` mode, width and seed only).
    """

    stage: str
    label: str
    params: dict[str, Any]


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
    section = _section(data)
    base = {k: v for k, v in data.items() if k != "mutransfer"}
    objective = base.get("objective")
    if not (isinstance(objective, Mapping) and objective.get("type") == "lm"):
        raise ConfigError(
            "the muTransfer workflow trains the `lm` objective; set objective.type: lm.",
            path=("objective", "type"),
        )
    budget = base.get("budget")
    if isinstance(budget, Mapping):
        for key in ("trials", "wall_time"):
            if key in budget:
                raise ConfigError(
                    "the muTransfer workflow runs every cell of its grids once, so it sets the "
                    f"budget's trials itself; remove budget.{key} (trial_timeout and "
                    "max_retries are kept).",
                    path=("budget", key),
                )
    pruner = base.get("pruner")
    if isinstance(pruner, Mapping) and pruner.get("name", "none") != "none":
        raise ConfigError(
            "a pruned cell would count as a loss it never reached; the muTransfer workflow "
            "runs without a pruner.",
            path=("pruner", "name"),
        )
    for key in ("space", "enqueue"):
        if key in base:
            raise ConfigError(
                f"the muTransfer workflow builds the {key} from the `mutransfer` section; "
                f"remove `{key}` from the spec.",
                path=(key,),
            )
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


def _section(data: Mapping[str, Any]) -> MuTransferSpec:
    raw = data.get("mutransfer")
    if raw is None:
        raise ConfigError(
            "the spec has no `mutransfer` section (proxy_widths, target_widths, lr_grid, ...).",
            path=("mutransfer",),
        )
    try:
        return MuTransferSpec.model_validate(raw)
    except ValidationError as err:
        raise config_error(err).prefixed("mutransfer") from None


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
                now = _StudyView.of(store)
                for cell in todo:
                    if cell.label not in now.done and cell.label not in now.queued:
                        store.study.enqueue_trial(cell.params, user_attrs={LABEL_ATTR: cell.label})
                if recovered:
                    self.say(f"  recovered {len(recovered)} trial(s) a stopped run left running")

            result = spec.run(progress=_Progress(self.say, todo), on_start=enqueue)
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

    def _view(self) -> _StudyView:
        """The study as it is now (empty before the first stage created it)."""
        from paretune.trials_store import TrialsStore

        config = self._spec(trials=1).study_config(read_only=True)
        try:
            store = TrialsStore(config, create=False, mlflow=False)
        except StudyNotFound:
            return _StudyView()
        try:
            return _StudyView.of(store)
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
            table[int(params["width"])][_point(params)].append(loss)
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
            point = best_point(table.get(w, {}))
            if point is None:
                self.say(f"warning: every run at proxy width {w} diverged; it is left out")
                continue
            self.result.proxy_best[w] = {**dict(point), "val_loss": mean_loss(table[w][point])}
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
        from paretune.dashboards import format_table

        best = self.result.proxy_best
        rows = [
            [
                str(w),
                f"{math.log2(b['learning_rate']):g}",
                ", ".join(f"{k}={v:g}" for k, v in b.items()
                          if k not in ("learning_rate", "val_loss")) or "-",
                f"{b['val_loss']:.4f}",
                f"{math.log2(self.result.step_law[w]):.2f}",
            ]
            for w, b in sorted(best.items())
        ]  # fmt: skip
        self.say("\ntransfer check: the best hyperparameters of each proxy width")
        self.say(
            format_table(
                ["width", "best log2 LR", "multipliers", "val_loss", "Step Law (SP) log2 LR"], rows
            )
        )
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
        """Step Law's form fitted to the proxies' best learning rates (one token count, so
        only ``lr = c N^alpha`` is identifiable), and what it predicts at the targets."""
        from paretune.search.steplaw import fit_step_law

        best = self.result.proxy_best
        if len(best) < 2:
            return
        widths = sorted(best)
        n = [self.lm.non_embedding_params(w) for w in widths]
        try:
            fit = fit_step_law(
                n, [self.lm.tokens] * len(n), [best[w]["learning_rate"] for w in widths]
            )
        except ConfigError as err:
            self.say(f"Step Law's form does not fit these proxies: {err.message}")
            return
        error = fit.stderr[1]
        spread = (
            f" +- {error:.2f}" if math.isfinite(error) else " (exact: as many runs as unknowns)"
        )
        tokens = self.lm.tokens
        predictions = ", ".join(
            f"width {w}: log2 LR "
            f"{math.log2(float(fit.predict(self.lm.non_embedding_params(w), tokens))):.2f}"
            for w in self.section.target_widths
        )
        expected = (
            "muP predicts the proxies' rate"
            if self.settings.parametrization == "mup"
            else "under SP the rate should fall with N"
        )
        self.say(
            f"Step Law's form fitted to the proxies' best rates: lr = {fit.c:.3g} N^{fit.alpha:.3f}"
            f"{spread} (Step Law: N^-0.713 at this token count); it predicts {predictions} "
            f"({expected})"
        )

    def _decide(self, cells: Sequence[TransferCell]) -> None:
        from paretune.dashboards import format_table, lr_transfer_figure

        table = self._table(cells)
        stage_of = {}
        for cell in cells:
            point = tuple(
                sorted((k, float(v)) for k, v in cell.params.items() if k not in ("width", "seed"))
            )
            stage_of[(int(cell.params["width"]), point)] = cell.stage.split(":")[0]
        rows: list[dict[str, Any]] = []
        curves: dict[int, list[tuple[float, float]]] = {}
        for width in sorted(table):
            for point, losses in sorted(table[width].items(), key=lambda kv: kv[0]):
                params = dict(point)
                stage = stage_of.get((width, point), "?")
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
        header = ["stage", "width", "log2 LR", "multipliers", "val_loss", "+-", "seeds"]
        printed = [
            [
                r["stage"],
                str(r["width"]),
                f"{math.log2(r['learning_rate']):g}" if "learning_rate" in r else "-",
                ", ".join(f"{k}={r[k]:g}" for k in self.section.multipliers if k in r) or "-",
                "diverged" if not math.isfinite(r["val_loss"]) else f"{r['val_loss']:.4f}",
                "" if not math.isfinite(r["stderr"]) else f"{r['stderr']:.4f}",
                str(r["seeds"]),
            ]
            for r in rows
            if r["stage"] in ("target", "verify")
            or (
                r["width"] in self.result.proxy_best
                and math.isclose(r.get("learning_rate", 0.0), chosen["learning_rate"])
            )
        ]
        self.say("\ndecision: the chosen hyperparameters at every width, and the verification")
        self.say(format_table(header, printed))
        for width in self.section.target_widths:
            at: dict[float, float] = {
                float(r["learning_rate"]): float(r["val_loss"])
                for r in rows
                if r["width"] == width
                and r["stage"] in ("target", "verify")
                and "learning_rate" in r
            }
            own = at.get(chosen["learning_rate"])
            best_lr = min(at, key=lambda k: at[k]) if at else None
            if own is not None and best_lr is not None:
                verdict = (
                    "the transferred LR is the best of the verification"
                    if math.isclose(best_lr, chosen["learning_rate"])
                    else f"log2 LR {math.log2(best_lr):g} did better by "
                    f"{100 * (own / at[best_lr] - 1):.2f} %"
                )
                self.say(
                    f"width {width}: val_loss {own:.4f} at the transferred LR; {verdict}; Step "
                    f"Law's log2 LR for this width would be "
                    f"{math.log2(self.result.step_law[width]):.2f}"
                )
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
        columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "stage", k))
        table_csv.write_text(
            ",".join(columns)
            + "\n"
            + "".join(",".join(str(r.get(k, "")) for k in columns) + "\n" for r in rows),
            encoding="utf-8",
        )
        self.say(f"\nwrote {self.result.figure} and {table_csv}")
        self._log_to_parent([self.result.figure, table_csv, self.run_dir / "coord_check.json"])

    def _log_to_parent(self, paths: Sequence[Path]) -> None:
        """The figure, the decision table and the coordinate check, as artifacts of the
        study's MLflow parent run (``mutransfer/``)."""
        from paretune.trials_store import PARENT_RUN_ATTR, MlflowLink, TrialsStore

        config = self._spec(trials=1).study_config(read_only=True)
        if config.tracking_uri is None:
            return
        store = TrialsStore(config, create=False, mlflow=False)
        try:
            parent = store.study.user_attrs.get(PARENT_RUN_ATTR)
        finally:
            store.close()
        if parent is None:
            return
        link = MlflowLink(tracking_uri=config.tracking_uri, experiment=config.name)
        for path in paths:
            if path.is_file():
                link.log_artifact(str(parent), str(path), "mutransfer")


def _point(params: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """A trial's hyperparameters without its width and seed, as sorted pairs."""
    return tuple(sorted((k, float(v)) for k, v in params.items() if k not in ("width", "seed")))


@dataclass
class _StudyView:
    """What the workflow reads of its study, by cell label.

    Attributes:
        done: Labels with a completed or diverged trial.
        queued: Labels with a trial waiting or running.
        losses: Label to the trial's params and validation loss (``inf``: diverged).
        errors: Label to the error of its last failed trial that did not diverge.
        finished: Trials the budget counts as finished.
        running: Trials running now (another driver's, or left by a dead one).
        waiting: Trials queued and not started.
    """

    done: set[str] = field(default_factory=set)
    queued: set[str] = field(default_factory=set)
    losses: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    finished: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, store: Any) -> _StudyView:
        from optuna.trial import TrialState

        from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

        view = cls(finished=store.n_finished())
        for t in store.study.get_trials(deepcopy=False):
            label = t.user_attrs.get(LABEL_ATTR)
            if t.state == TrialState.RUNNING:
                view.running += 1
            elif t.state == TrialState.WAITING:
                view.waiting += 1
            if label is None:
                continue
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                view.queued.add(label)
            elif t.state == TrialState.COMPLETE and t.values:
                view.done.add(label)
                view.losses[label] = (dict(t.params), float(t.values[0]))
            elif t.state == TrialState.FAIL:
                error = str(t.user_attrs.get(ERROR_ATTR) or "")
                if _DIVERGED.search(error) and label not in view.losses:
                    view.done.add(label)
                    view.losses[label] = (dict(t.params), math.inf)
                else:
                    view.errors[label] = error
        return view


class _Progress:
    """A line per finished run of a stage."""

    def __init__(self, say: Say, cells: Sequence[TransferCell]) -> None:
        self.say = say
        self.labels = {c.label for c in cells}
        self.total = len(cells)
        self.count = 0

    def update(self, store: Any, trial: Any) -> None:
        from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

        label = trial.user_attrs.get(LABEL_ATTR)
        if label not in self.labels:
            return
        self.count += 1
        if trial.state.name == "COMPLETE":
            shown = f"{trial.values[0]:.4f}"
        elif _DIVERGED.search(str(trial.user_attrs.get(ERROR_ATTR) or "")):
            shown = "diverged"
        else:
            shown = trial.state.name.lower()
        self.say(f"  [{self.count}/{self.total}] {label}: {shown}")

"""``paretune mutransfer``: coordinate check, proxy search, transfer check and target runs, in
one study and one MLflow parent run (:class:`~paretune.spec.MuTransferSpec` describes it)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from paretune._errors import ConfigError, ParetuneError
from paretune._validation import config_error
from paretune.spec._load import load_spec, read_spec
from paretune.spec._mutransfer_section import MuTransferSpec

if TYPE_CHECKING:
    from paretune.objectives.lm import LM, CoordCheck, LMSettings
    from paretune.spec._search import SearchSpec

__all__ = ["CoordCheckFailed", "MuTransferResult", "TransferCell", "run_mutransfer"]

Say = Callable[[str], None]

# The default budget rules of the workflow's stages: a learning-rate sweep diverges at its top
# end on purpose, so failures in a row are no reason to stop.
_BUDGET = {"max_failures_in_a_row": None}


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
            widest = max(self.section.proxy_widths)
            centre = math.log2(self.result.step_law[widest])
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
            chosen |= self._choose_multipliers(cells, chosen["learning_rate"])
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
            parts.append(f"lr2^{math.log2(params['learning_rate']):g}")
        parts += [f"{k}={v:g}" for k, v in params.items() if k != "learning_rate"]
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
        """Run the cells that have not finished; ``False`` when a stop interrupted them."""
        from paretune.trials_store import LABEL_ATTR

        spec = self._spec(trials=1)
        done, finished = self._finished(spec)
        todo = [c for c in cells if c.label not in done]
        self.say(f"\n{title}: {len(cells)} run(s), {len(cells) - len(todo)} finished earlier")
        if not todo:
            return True
        spec = self._spec(trials=finished + len(todo))
        labels = {c.label for c in cells}

        def enqueue(store: Any, recovered: list[int]) -> None:
            present = {t.user_attrs.get(LABEL_ATTR) for t in store.study.get_trials(deepcopy=False)}
            for cell in todo:
                if cell.label not in present:
                    store.study.enqueue_trial(
                        cell.params, user_attrs={LABEL_ATTR: cell.label}, skip_if_exists=False
                    )
            if recovered:
                self.say(f"  recovered {len(recovered)} trial(s) a stopped run left running")

        class _Progress:
            def __init__(self, say: Say) -> None:
                self.say = say
                self.count = 0

            def update(self, store: Any, trial: Any) -> None:
                label = trial.user_attrs.get(LABEL_ATTR)
                if label not in labels:
                    return
                self.count += 1
                loss = (trial.values or [math.nan])[0]
                state = trial.state.name.lower()
                shown = f"{loss:.4f}" if state == "complete" else state
                self.say(f"  [{self.count}/{len(todo)}] {label}: {shown}")

        result = spec.run(progress=_Progress(self.say), on_start=enqueue)
        if result.interrupted:
            self.result.interrupted = True
            self.say("interrupted: rerun the same command to continue where it stopped")
            return False
        return True

    def _spec(self, *, trials: int) -> SearchSpec:
        budget = {**_BUDGET, **dict(self.base.get("budget") or {}), "trials": trials}
        budget.pop("wall_time", None)
        data = {**self.base, "space": self.space, "budget": budget}
        return load_spec(data)

    def _finished(self, spec: SearchSpec) -> tuple[set[str], int]:
        """The labels of the study's finished trials, and how many trials count as finished."""
        from paretune.trials_store import LABEL_ATTR, TrialsStore

        try:
            store = TrialsStore(spec.study_config(read_only=True), create=False, mlflow=False)
        except ParetuneError:
            return set(), 0  # no study yet
        try:
            labels = {
                str(t.user_attrs.get(LABEL_ATTR))
                for t in store.study.get_trials(deepcopy=False)
                if (t.state.is_finished() and t.state.name != "FAIL")
                or (t.state.name == "FAIL" and "paretune.error" in t.user_attrs)
            }
            return labels, store.n_finished()
        finally:
            store.close()

    # -- analysis ---------------------------------------------------------------------------

    def _losses(self, cells: Sequence[TransferCell]) -> dict[str, tuple[dict[str, Any], float]]:
        """Per label, the trial's parameters and its validation loss (inf: it failed)."""
        from paretune.trials_store import LABEL_ATTR, TrialsStore

        store = TrialsStore(self._spec(trials=1).study_config(read_only=True), create=False,
                            mlflow=False)  # fmt: skip
        try:
            wanted = {c.label for c in cells}
            out: dict[str, tuple[dict[str, Any], float]] = {}
            for t in store.study.get_trials(deepcopy=False):
                label = t.user_attrs.get(LABEL_ATTR)
                if label not in wanted or not t.state.is_finished():
                    continue
                if t.state.name == "COMPLETE" and t.values:
                    out[label] = (dict(t.params), float(t.values[0]))
                elif label not in out:
                    out[label] = (dict(t.params), math.inf)
            return out
        finally:
            store.close()

    def _table(
        self, cells: Sequence[TransferCell]
    ) -> dict[int, dict[tuple[tuple[str, float], ...], list[float]]]:
        """Per width, per hyperparameter point (seed left out), the losses of its seeds."""
        table: dict[int, dict[tuple[tuple[str, float], ...], list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for params, loss in self._losses(cells).values():
            point = tuple(
                sorted((k, float(v)) for k, v in params.items() if k not in ("width", "seed"))
            )
            table[int(params["width"])][point].append(loss)
        return table

    def _choose(self, cells: Sequence[TransferCell]) -> dict[str, float]:
        """The proxies' choice: the point of least summed regret over the proxy widths (each
        width's loss over its own best), among the points every proxy ran."""
        table = self._table(cells)
        widths = [w for w in self.section.proxy_widths if table.get(w)]
        if not widths:
            raise ParetuneError(
                "no proxy run finished: nothing to transfer (see the trials' errors)"
            )
        best_loss = {w: min(_mean(v) for v in table[w].values()) for w in widths}
        for w in widths:
            point = min(table[w], key=lambda p: (_mean(table[w][p]), p))
            self.result.proxy_best[w] = {**dict(point), "val_loss": _mean(table[w][point])}
        if self.section.search == "controller":
            widest = max(widths)
            return {k: v for k, v in self.result.proxy_best[widest].items() if k != "val_loss"}
        common = set.intersection(*(set(table[w]) for w in widths))
        regret = {p: sum(_mean(table[w][p]) - best_loss[w] for w in widths) for p in common}
        point = min(common, key=lambda p: (regret[p], p))
        return dict(point)

    def _choose_multipliers(
        self, cells: Sequence[TransferCell], learning_rate: float
    ) -> dict[str, float]:
        table = self._table(cells)
        chosen: dict[str, float] = {}
        for name in self.section.multipliers:
            stage_points = {
                p for w in self.section.proxy_widths for p in table.get(w, {})
                if any(k == name for k, _ in p)
            }  # fmt: skip
            by_value: dict[float, float] = defaultdict(float)
            for p in stage_points:
                value = dict(p)[name]
                for w in self.section.proxy_widths:
                    if p in table.get(w, {}):
                        by_value[value] += _mean(table[w][p])
            if by_value:
                chosen[name] = min(by_value, key=lambda v: (by_value[v], v))
                self.say(
                    f"{name}: {chosen[name]:g} at log2 LR {math.log2(learning_rate):g} "
                    "(summed loss over the proxies)"
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
                ["width", "best log2 LR", "multipliers", "val_loss", "Step Law log2 LR"], rows
            )
        )
        logs = [math.log2(b["learning_rate"]) for b in best.values()]
        step = self.section.lr_grid.step
        if len(logs) > 1 and max(logs) - min(logs) > step + 1e-9:
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
        self.say(
            f"Step Law's form fitted to the proxies' best rates: lr = {fit.c:.3g} N^{fit.alpha:.3f}"
            f"{spread} (Step Law: N^-0.713 at this token count); it predicts {predictions} (muP "
            "predicts the proxies' rate)"
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
                mean = _mean(losses)
                spread = _stderr(losses)
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
        self.say(f"\nwrote {self.result.figure}")


def _mean(values: Sequence[float]) -> float:
    return math.inf if any(not math.isfinite(v) for v in values) else sum(values) / len(values)


def _stderr(values: Sequence[float]) -> float:
    if len(values) < 2 or any(not math.isfinite(v) for v in values):
        return math.nan
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var / len(values))

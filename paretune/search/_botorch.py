"""Multi-objective Bayesian optimisation on BoTorch, as an Optuna sampler."""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import random
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._base import _process_constraints_after_trial
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import ConfigError, describe
from paretune.spaces import DimKind, SearchSpace, UnitCube

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction
    from botorch.models.model import Model

__all__ = ["BoTorchSampler"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _AcqOptions:
    num_restarts: int
    raw_samples: int
    mc_samples: int
    maxiter: int
    fit_maxiter: int


# fit_maxiter: L-BFGS steps per GP fit. At 200 the fit took half of a DTLZ2 proposal at 35
# trials, one output's lengthscale drifting along a flat likelihood ridge; 100 cut the median
# proposal at trials 31-40 from 2.5 s to 1.4 s, with no loss over 5 seeds (benchmarks/README.md).
_DEFAULT = _AcqOptions(num_restarts=6, raw_samples=256, mc_samples=64, maxiter=100, fit_maxiter=100)
_FAST = _AcqOptions(num_restarts=2, raw_samples=64, mc_samples=32, maxiter=20, fit_maxiter=50)


class BoTorchSampler(optuna.samplers.BaseSampler):
    """Gaussian-process Bayesian optimisation with BoTorch's log-improvement acquisitions.

    Lifecycle (Optuna's): at the start of each trial :meth:`infer_relative_search_space` gives
    the parameters this sampler models and :meth:`sample_relative` proposes values for all of
    them at once; parameters outside that space are drawn by :meth:`sample_independent`
    (uniformly at random); :meth:`after_trial` records the trial's constraint values.

    Each proposal is made from the study alone, so a sampler built anew on a stored study
    (resume, another worker, Ray Tune's ``OptunaSearch``) continues where the last one stopped:

    1. **Start-up.** Until ``n_startup_trials`` trials have completed or are running (and at
       least two have completed), candidates come from a scrambled Sobol sequence over the
       space (point number ``trial.number``, so concurrent workers get different points).
    2. **Model.** Completed trials are encoded (:class:`~paretune.spaces.UnitCube`: unit-cube
       columns, linear or in log space for ``log`` parameters, integer grids as discrete
       values). Objectives, sign-flipped so that larger is better, and constraint values are
       the outputs of one GP each (a batched ``SingleTaskGP``; when a categorical parameter has
       three or more choices, its kernel is BoTorch's default kernel on the ordered columns
       times a ``CategoricalKernel`` on the categorical ones), outcomes standardised.
    3. **Acquisition.** ``qLogNoisyExpectedHypervolumeImprovement`` for several objectives,
       ``qLogNoisyExpectedImprovement`` for one; constraints enter as probabilities of
       feasibility; trials still RUNNING (other workers) are ``X_pending``, so the proposal
       goes elsewhere. Optimised with ``optimize_acqf`` on continuous spaces and
       ``optimize_acqf_mixed_alternating`` when integer or categorical columns are present.
       With ``local_share``, that share of the model proposals (drawn per trial) optimises
       the acquisition only near one of the observed Pareto-optimal trials (inside the
       reference point, feasible): ``local_radius`` of its columns, chosen at random, are
       free and the rest keep the trial's values. A global GP fitted to few points in many
       dimensions is least reliable far from the data, where the acquisition tends to send
       it (the corners of the box); these proposals refine the front where it is known, as
       the trust regions of TuRBO and MORBO do. A local proposal that would repeat a trial
       (three draws of columns) becomes a global one.
    4. **No duplicates, nothing the space refuses.** A candidate whose decoded params equal
       those of an existing trial (any state), or that the space's rule refuses
       (:meth:`~paretune.spaces.SearchSpace.admits`, e.g. a PEFT candidate without a module),
       is replaced by the best admitted new point of a Sobol batch, scored at the valid points
       the batch decodes to. Start-up and fallback points obey the rule too.

    Reference point (several objectives): ``reference_point`` when given; otherwise BoTorch's
    ``infer_reference_point`` on the feasible observed Pareto front: the front's worst value
    in each objective minus 10 % of its range (of the value itself for a one-point front).

    Conditional parameters: with ``search_space`` (paretune's runners pass the spec's space),
    the sampler knows the conditions: an inactive parameter is encoded as zeros, the low end
    of its range, so the GP tells active from inactive through the parent's columns, and only
    the parameters that the proposed parent values activate are returned. Without it
    (define-by-run Optuna), the space is the union of the parameters of completed trials;
    parameters a trial did not use are encoded the same way, and Optuna uses only the
    proposed values the objective asks for.

    Failed trials are not modelled (their params are still not proposed again). Pruned trials
    are not modelled either: they carry no final values. Neither are trials with non-finite
    values or constraints, or params outside the current space. Constraints come from
    ``constraints_func`` or from Optuna's ``Trial.set_constraint``. If fitting or optimising
    fails numerically, the trial falls back to a random candidate and a warning is logged.

    Parameters outside the modelled space (define-by-run, before a trial completes) are drawn
    uniformly, seeded by seed, trial number and name. Proposals are serialised by a lock: the
    sampler may be shared by Optuna's ``n_jobs`` threads.

    Args:
        search_space: The space to search, as a paretune :class:`~paretune.spaces.SearchSpace`
            or a mapping of Optuna distributions. Default: inferred from completed trials.
        seed: Seed for the Sobol start-up, the MC samples and the optimiser's restarts: the
            same seed and the same trials in the study give the same proposal, whether the
            sampler is new (resume, another worker) or has made the earlier proposals.
        n_startup_trials: Completed trials before the model takes over. Default:
            ``max(5, min(2 * (d + 1), 10))`` for ``d`` encoded columns.
        reference_point: One value per objective, in the objectives' own units and
            directions (a value worse than any point you care about).
        constraints_func: Optuna's constraints function: a trial to a sequence of floats,
            feasible when all are ``<= 0``.
        num_restarts: Optimiser restarts per proposal. Default 6 (2 in fast mode).
        raw_samples: Random candidates the restarts are chosen from. Default 256 (64).
        mc_samples: Quasi-MC samples of the acquisition. Default 64 (32).
        maxiter: L-BFGS iterations per restart (continuous spaces); mixed spaces use
            ``maxiter // 8`` (at least 4) alternating steps. Default 100 (20).
        fast: Fast mode: the smaller defaults above and at most 50 (instead of 100) L-BFGS
            steps per GP fit; several times cheaper per proposal and less sample-efficient;
            for tests, smoke runs and cheap objectives. Explicit options win over it.
        known_objectives: Objectives computable from the params alone, by position: ``{i:
            f}`` with ``f(params) -> float`` giving objective ``i`` in its own units (the
            value the trial will report), e.g. the trainable-parameter count of a PEFT
            candidate. Such an objective is not modelled: the GP learns the others, and the
            acquisition computes it exactly at every candidate it scores (points the space's
            rule refuses count as worse than the reference point there), so the search does
            not spend trials learning what is known. At least one objective must be left to
            model. A warning is logged when ``f`` disagrees with a completed trial's value.
            Known values carry no gradient: a function of discrete parameters (sizes, layer
            switches) is explored by the mixed optimiser's enumeration; one of continuous
            parameters is exact at every scored point but not followed by the gradient steps.
        local_share: The share of model proposals made near the observed Pareto front (step
            3), in ``[0, 1]``. Default 0 (all global): on PeftLike (5 seeds) 0.5 was no
            better at 20-40 trials, and in the AutoPEFT example its three local proposals did
            not improve the front (benchmarks/README.md).
        local_radius: How many columns a local proposal may change. Default 3.
        torch_threads: Torch's intra-op threads during a proposal, restored afterwards.
            Default 1: the model and acquisition work on small matrices, where more threads
            cost more than they bring (DTLZ2 at 40 trials on 2 cores: 1.8 s per proposal on
            one thread, 3.6 s on two). ``None`` leaves torch's setting as it is.

    Example:
        >>> sampler = BoTorchSampler(seed=0)
        >>> study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        >>> study.optimize(objective, n_trials=40)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        search_space: SearchSpace | Mapping[str, BaseDistribution] | None = None,
        seed: int | None = None,
        n_startup_trials: int | None = None,
        reference_point: Sequence[float] | None = None,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
        num_restarts: int | None = None,
        raw_samples: int | None = None,
        mc_samples: int | None = None,
        maxiter: int | None = None,
        fast: bool = False,
        known_objectives: Mapping[int, Callable[[dict[str, Any]], float]] | None = None,
        local_share: float = 0.0,
        local_radius: int = 3,
        torch_threads: int | None = 1,
    ) -> None:
        if search_space is not None and not isinstance(search_space, SearchSpace):
            if not isinstance(search_space, Mapping):
                raise ConfigError(
                    "`search_space` must be a SearchSpace or a mapping of Optuna "
                    f"distributions, but got {describe(search_space)}."
                )
            try:
                search_space = SearchSpace.from_distributions(search_space)
            except ConfigError as err:
                raise err.prefixed("search_space") from None
        self._space = search_space
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"`seed` must be an int or None, but got {describe(seed)}.")
        self._seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self._random = optuna.samplers.RandomSampler(seed=seed)
        if n_startup_trials is not None:
            _check_int("n_startup_trials", n_startup_trials, low=1)
        self._n_startup = n_startup_trials
        self._reference = None
        if reference_point is not None:
            if isinstance(reference_point, (str, bytes)) or not isinstance(
                reference_point, Sequence
            ):
                raise ConfigError(
                    "`reference_point` must be a sequence of numbers, one per objective, but "
                    f"got {describe(reference_point)}."
                )
            if not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                for v in reference_point
            ):
                raise ConfigError(
                    "`reference_point` must hold finite numbers, but got "
                    f"{list(reference_point)!r}."
                )
            self._reference = [float(v) for v in reference_point]
        if constraints_func is not None and not callable(constraints_func):
            raise ConfigError(
                f"`constraints_func` must be callable, but got {describe(constraints_func)}."
            )
        self._constraints_func = constraints_func
        self._known: dict[int, Callable[[dict[str, Any]], float]] = {}
        if known_objectives is not None:
            if not isinstance(known_objectives, Mapping) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0
                and callable(f)
                for i, f in known_objectives.items()
            ):  # fmt: skip
                raise ConfigError(
                    "`known_objectives` must map objective positions (ints >= 0) to functions "
                    f"of the params, but got {describe(known_objectives)}."
                )
            self._known = {int(i): f for i, f in known_objectives.items()}
        # Signed known values (None: refused by the space's rule) by params key, across
        # proposals: completed trials are scored at every acquisition call.
        self._known_cache: dict[tuple[Any, ...], tuple[float, ...] | None] = {}
        self._known_mismatch_logged = False
        # Trials already compared with the functions: (id, start), ids repeat across storages.
        self._known_checked: set[tuple[int, Any]] = set()
        if (
            isinstance(local_share, bool)
            or not isinstance(local_share, (int, float))
            or not 0.0 <= local_share <= 1.0
        ):
            raise ConfigError(
                f"`local_share` must be a number in [0, 1], but got {describe(local_share)}."
            )
        self._local_share = float(local_share)
        _check_int("local_radius", local_radius, low=1)
        self._local_radius = int(local_radius)
        if torch_threads is not None:
            _check_int("torch_threads", torch_threads, low=1)
        self._torch_threads = torch_threads
        if not isinstance(fast, bool):
            raise ConfigError(f"`fast` must be True or False, but got {describe(fast)}.")
        base = _FAST if fast else _DEFAULT
        for name, value in (
            ("num_restarts", num_restarts),
            ("raw_samples", raw_samples),
            ("mc_samples", mc_samples),
            ("maxiter", maxiter),
        ):
            if value is not None:
                _check_int(name, value, low=1)
        self._acq = _AcqOptions(
            num_restarts=num_restarts or base.num_restarts,
            raw_samples=raw_samples or base.raw_samples,
            mc_samples=mc_samples or base.mc_samples,
            maxiter=maxiter or base.maxiter,
            fit_maxiter=base.fit_maxiter,
        )
        self._encodings: dict[tuple[Any, ...], _Problem] = {}
        # torch's global generator, Python's `random` and the warnings filters are
        # process-wide: one proposal at a time (Optuna's n_jobs runs samplers in threads).
        self._lock = threading.Lock()

    # -- Optuna's sampler interface --------------------------------------------------------

    def reseed_rng(self) -> None:
        # Optuna reseeds samplers for every trial it runs in a thread (n_jobs > 1); the seed
        # that keys the Sobol points and the model's randomness must survive that.
        self._random.reseed_rng()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._space is not None:
            return self._space.distributions()
        space: dict[str, BaseDistribution] = {}
        for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True):
            # The latest trial's distribution wins, so a space that changed between sessions
            # is modelled as it is now.
            space.update(t.distributions)
        return dict(sorted(space.items()))

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if self._reference is not None and len(self._reference) != len(study.directions):
            raise ConfigError(
                f"`reference_point` has {len(self._reference)} values but the study has "
                f"{len(study.directions)} objectives; give one value per objective."
            )
        n_obj = len(study.directions)
        if self._known and (max(self._known) >= n_obj or len(self._known) == n_obj):
            raise ConfigError(
                f"`known_objectives` names positions {sorted(self._known)} but the study has "
                f"{n_obj} objectives; give positions below {n_obj} and leave at least one "
                "objective to model."
            )
        problem = self._problem(search_space)
        with self._lock:
            trials = study._get_trials(deepcopy=False, use_cache=False)
            complete, constraints = self._observations(problem, trials)
            others = [
                seen
                for seen in (_Seen.of(t) for t in trials if t.number != trial.number)
                if seen.params
            ]
            avoid = problem.avoid_set(others)
            seed = _mix(self._seed, trial.number)
            n_startup = self._n_startup or max(5, min(2 * (problem.dim + 1), 10))
            # Trials running elsewhere count towards the start-up: with 4 workers the model
            # takes over at the same trial number as with one, its last 3 points pending.
            running = sum(seen.state == TrialState.RUNNING for seen in others)
            if len(complete) + running < n_startup or len(complete) < 2:
                params = problem.sobol(trial.number, seed=self._seed, avoid=avoid)
            else:
                try:
                    with _torch_threads(self._torch_threads):
                        params = self._propose(
                            study, problem, complete, constraints, others, avoid, seed
                        )
                except Exception as err:  # numerical trouble must not stop a search
                    _log.warning(
                        "BoTorchSampler: proposal for trial %d failed (%s: %s); sampling at "
                        "random.",
                        trial.number,
                        type(err).__name__,
                        err,
                    )
                    _log.debug("BoTorchSampler: the failed proposal", exc_info=True)
                    params = problem.random(seed, avoid=avoid)
            # Published at once: a define-by-run trial sets its params only as the objective
            # suggests them, and the next worker's proposal must already avoid these.
            study._storage.set_trial_system_attr(
                trial._trial_id, _PROPOSAL_KEY, {k: _jsonable(v) for k, v in params.items()}
            )
            return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Parameters outside the relative space (define-by-run, before any trial completed):
        # uniform, seeded by (seed, trial number, name) so that workers and resumed studies
        # do not replay each other's draws.
        try:
            param = SearchSpace.from_distributions({param_name: param_distribution})[param_name]
        except ConfigError:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        rng = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())])
        return param.sample(rng)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._random.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self._constraints_func is not None:
            _process_constraints_after_trial(self._constraints_func, study, trial, state)
        self._random.after_trial(study, trial, state, values)

    # -- internals -------------------------------------------------------------------------

    def _observations(
        self, problem: _Problem, trials: Sequence[FrozenTrial]
    ) -> tuple[list[FrozenTrial], list[list[float]] | None]:
        """The trials the model learns from, and their constraint values (``<= 0`` feasible).

        A complete trial is left out when a value is not finite, when its params are not
        valid in the current space (a range changed between sessions: its point would be
        mislabelled), or, in a constrained study, when its constraints are missing, not
        finite or not the same set as the latest trial's. Constraints come from
        ``constraints_func`` or from ``Trial.set_constraint``.
        """
        complete = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.values is not None
            and all(math.isfinite(v) for v in t.values)
            and problem.covers(t.params)
        ]
        keys = next((sorted(t.constraints) for t in reversed(complete) if t.constraints), None)
        if keys is None:
            if self._constraints_func is not None:
                # Not computed yet (trials from before this sampler): nothing to learn from.
                return [], None
            return complete, None
        kept, values = [], []
        for t in complete:
            c = t.constraints
            if sorted(c) == keys and all(math.isfinite(c[k]) for k in keys):
                kept.append(t)
                values.append([float(c[k]) for k in keys])
        return kept, values

    def _problem(self, search_space: Mapping[str, BaseDistribution]) -> _Problem:
        key = tuple((name, repr(d)) for name, d in search_space.items())
        if key not in self._encodings:
            space = self._space or SearchSpace.from_distributions(search_space)
            self._encodings[key] = _Problem(space, exact=self._space is not None)
        return self._encodings[key]

    def _propose(
        self,
        study: optuna.Study,
        problem: _Problem,
        complete: list[FrozenTrial],
        constraints: list[list[float]] | None,
        others: list[_Seen],
        avoid: _Avoid,
        seed: int,
    ) -> dict[str, Any]:
        import torch

        signs = torch.tensor(
            [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions],
            dtype=torch.float64,
        )
        n_obj = len(signs)
        modelled = [i for i in range(n_obj) if i not in self._known]
        X = problem.cube.encode([t.params for t in complete], partial=True)
        Y_obj = torch.tensor([t.values for t in complete], dtype=torch.float64) * signs
        if self._known:
            self._check_known(complete)
        # The model's outputs: the objectives that are not known, then the constraints.
        Y = Y_obj[:, modelled]
        C = None
        if constraints is not None:
            C = torch.tensor(constraints, dtype=torch.float64)
            Y = torch.cat([Y, C], dim=-1)
        running = [t for t in others if t.state == TrialState.RUNNING]
        X_pending = None
        if running:
            X_pending = problem.cube.encode([t.params for t in running], partial=True)
        py_state = random.getstate()
        with torch.random.fork_rng(), warnings.catch_warnings():
            torch.manual_seed(seed)
            # optimize_acqf_mixed_alternating subsamples large categoricals with `random`.
            random.seed(seed)
            try:
                _quiet_botorch_warnings()
                model = problem.fit(X, Y, fit_maxiter=self._acq.fit_maxiter)
                acq = self._acquisition(model, problem, X, Y_obj, C, signs, X_pending, seed)
                rng = np.random.default_rng(_mix(seed, 1))
                X_next = None
                if self._local_share and rng.random() < self._local_share:
                    X_next = self._local(problem, acq, complete, X, Y_obj, C, signs, rng, avoid)
                if X_next is None:
                    X_next = problem.optimize(acq, self._acq)
                params = problem.decode(X_next)
                if avoid.has(params) or not problem.space.admits(params):
                    params = problem.best_distinct(acq, seed, avoid=avoid)
            finally:
                random.setstate(py_state)
        return params

    def _local(
        self,
        problem: _Problem,
        acq: AcquisitionFunction,
        complete: Sequence[FrozenTrial],
        X: torch.Tensor,
        Y_obj: torch.Tensor,
        C: torch.Tensor | None,
        signs: torch.Tensor,
        rng: np.random.Generator,
        avoid: _Avoid,
    ) -> torch.Tensor | None:
        """The acquisition's best point within ``local_radius`` columns of a Pareto-optimal
        trial; None when there is no such trial or three draws of columns found nothing new."""
        centres = self._front_rows(Y_obj, C, signs)
        if not centres or problem.dim == 0:
            return None
        k = min(self._local_radius, problem.dim)
        for _ in range(3):
            row = centres[int(rng.integers(len(centres)))]
            free = {int(j) for j in rng.choice(problem.dim, size=k, replace=False)}
            fixed = {j: float(X[row, j]) for j in range(problem.dim) if j not in free}
            X_next = problem.optimize(acq, self._acq, fixed=fixed)
            params = problem.decode(X_next)
            if not avoid.has(params) and problem.space.admits(params):
                _log.debug(
                    "BoTorchSampler: local proposal near trial %d (columns %s)",
                    complete[row].number,
                    sorted(free),
                )
                return X_next
        return None

    def _front_rows(
        self, Y_obj: torch.Tensor, C: torch.Tensor | None, signs: torch.Tensor
    ) -> list[int]:
        """Rows of the feasible observed Pareto front that beat the reference point."""
        from botorch.utils.multi_objective.pareto import is_non_dominated

        keep = _feasible(Y_obj, C)
        if Y_obj.shape[-1] > 1:
            keep &= (Y_obj > self._reference_point(Y_obj, C, signs)).all(dim=-1)
        rows = keep.nonzero().squeeze(-1)
        if len(rows) == 0:
            return []
        front = is_non_dominated(Y_obj[rows])
        return [int(r) for r in rows[front]]

    def _check_known(self, complete: Sequence[FrozenTrial]) -> None:
        """Log once when a known objective's function disagrees with a trial's value (each
        trial is compared once, not at every proposal)."""
        if self._known_mismatch_logged:
            return
        for t in complete:
            key = (t._trial_id, t.datetime_start)
            if key in self._known_checked:
                continue
            self._known_checked.add(key)
            assert t.values is not None
            for i, f in self._known.items():
                value = float(f(dict(t.params)))
                if not math.isclose(value, t.values[i], rel_tol=1e-6, abs_tol=1e-9):
                    _log.warning(
                        "BoTorchSampler: known objective %d gives %r for the params of trial "
                        "%d, which reported %r; the proposals use the function's values.",
                        i,
                        value,
                        t.number,
                        t.values[i],
                    )
                    self._known_mismatch_logged = True
                    return

    def _acquisition(
        self,
        model: Model,
        problem: _Problem,
        X: torch.Tensor,
        Y_obj: torch.Tensor,
        C: torch.Tensor | None,
        signs: torch.Tensor,
        X_pending: torch.Tensor | None,
        seed: int,
    ) -> AcquisitionFunction:
        import torch
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.acquisition.multi_objective.logei import (
            qLogNoisyExpectedHypervolumeImprovement,
        )
        from botorch.acquisition.multi_objective.objective import (
            IdentityMCMultiOutputObjective,
            MCMultiOutputObjective,
        )
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.sampling.normal import SobolQMCNormalSampler

        n_obj = Y_obj.shape[-1]
        n_con = 0 if C is None else C.shape[-1]
        n_modelled = n_obj - len(self._known)
        sampler = SobolQMCNormalSampler(torch.Size([self._acq.mc_samples]), seed=seed)
        constraints: list[Callable[[torch.Tensor], torch.Tensor]] | None = [
            _Column(n_modelled + i) for i in range(n_con)
        ] or None
        if n_obj == 1:
            return qLogNoisyExpectedImprovement(
                model=model,
                X_baseline=X,
                sampler=sampler,
                objective=GenericMCObjective(_Column(0)) if n_con else None,
                constraints=constraints,
                X_pending=X_pending,
                prune_baseline=True,
            )
        ref = self._reference_point(Y_obj, C, signs)
        objective: MCMultiOutputObjective | None = None
        if self._known:
            objective = _known_objective(self, problem, signs, ref)
        elif n_con:
            objective = IdentityMCMultiOutputObjective(outcomes=list(range(n_obj)))
        _load_fused_kernel()
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref.tolist(),
            X_baseline=X,
            sampler=sampler,
            objective=objective,
            constraints=constraints,
            X_pending=X_pending,
            prune_baseline=True,
        )

    def _reference_point(
        self, Y_obj: torch.Tensor, C: torch.Tensor | None, signs: torch.Tensor
    ) -> torch.Tensor:
        import torch
        from botorch.utils.multi_objective.hypervolume import infer_reference_point
        from botorch.utils.multi_objective.pareto import is_non_dominated

        if self._reference is not None:
            return torch.tensor(self._reference, dtype=torch.float64) * signs
        feasible = _feasible(Y_obj, C)
        pool = Y_obj[feasible] if feasible.any() else Y_obj
        return infer_reference_point(pool[is_non_dominated(pool)])


class _Column:
    """``Z[..., i]``: one output of the model's samples (picklable, unlike a lambda)."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __call__(self, Z: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        return Z[..., self.i]


def _known_objective(
    sampler: BoTorchSampler, problem: _Problem, signs: torch.Tensor, ref: torch.Tensor
) -> Any:
    """The acquisition's objectives: the model's samples and the known objectives, as a
    BoTorch ``MCMultiOutputObjective`` (``objectives x`` maximised).

    ``forward(samples, X)``: the modelled objectives come from ``samples`` (``... x q x m``;
    the constraint outputs after them are BoTorch's business), the known ones are computed
    at the params each row of ``X`` snaps to (as a proposal would) and broadcast over the MC
    samples. Rows the space's rule refuses get a value far below the reference point, so they
    add no hypervolume. Known values carry no gradient: they depend on the discrete columns,
    which the mixed optimiser moves by enumeration.
    """
    import torch
    from botorch.acquisition.multi_objective.objective import MCMultiOutputObjective

    n_obj = len(signs)
    known = sorted(sampler._known)
    modelled = [i for i in range(n_obj) if i not in sampler._known]
    # Far below the reference point (objectives are maximised here): no hypervolume.
    refused = tuple(float(ref[i] - 1e3 * (1.0 + abs(ref[i]))) for i in known)
    cache = sampler._known_cache

    def values_at(X: torch.Tensor) -> torch.Tensor:
        flat = X.detach().reshape(-1, X.shape[-1])
        rows, inverse = torch.unique(flat, dim=0, return_inverse=True)
        out = []
        for params in problem.cube.decode(rows):
            key = problem.key(params)
            if key not in cache:
                if len(cache) >= _KNOWN_CACHE_SIZE:
                    cache.clear()
                cache[key] = (
                    tuple(float(signs[i]) * float(sampler._known[i](params)) for i in known)
                    if problem.space.admits(params)
                    else None
                )
            value = cache[key]
            out.append(refused if value is None else value)
        table = torch.tensor(out, dtype=X.dtype, device=X.device)
        return table[inverse].reshape(*X.shape[:-1], len(known))

    # Objective i's column in cat([modelled samples, known values]).
    order = torch.tensor([(modelled + known).index(i) for i in range(n_obj)])

    class WithKnown(MCMultiOutputObjective):
        def forward(self, samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            if X is None:
                raise ValueError("known objectives need the candidates X")
            fixed = values_at(X).expand(*samples.shape[:-1], len(known))
            both = torch.cat([samples[..., : len(modelled)], fixed], dim=-1)
            return both[..., order]

    return WithKnown()


# Known-objective values kept across proposals (then dropped and recomputed).
_KNOWN_CACHE_SIZE = 100_000


# Grids with more levels are optimised as continuous columns and rounded when decoded: BoTorch
# relaxes grids of over 20 levels anyway, and rounds them with a batch x levels tensor.
_MAX_GRID_LEVELS = 256


# Raw samples scored per acquisition call when choosing the restarts' starting points.
_INIT_BATCH_LIMIT = 1024


# Trial system attribute holding the proposal of a trial still running (see _Seen).
_PROPOSAL_KEY = "paretune:botorch_proposal"


@dataclass(frozen=True)
class _Seen:
    """A trial's state and params, with the sampler's proposal for a trial still running."""

    state: TrialState
    params: dict[str, Any]

    @classmethod
    def of(cls, trial: FrozenTrial) -> _Seen:
        params = trial.params
        if not trial.state.is_finished():
            proposed = trial.system_attrs.get(_PROPOSAL_KEY)
            if isinstance(proposed, dict):
                params = {**proposed, **params}
        return cls(trial.state, params)


class _Avoid:
    """The params of existing trials, for "is this proposal new?" in O(1) per check.

    With a known space (``exact``), proposals and trials hold exactly the active params:
    equal canonical dicts are duplicates. In a union space (define-by-run) a proposal holds
    every parameter ever seen, and duplicates a COMPLETE or PRUNED trial when it agrees on
    all of that trial's params; RUNNING and FAIL trials may hold only some of their params
    (still suggesting, or crashed part-way) and must match exactly.
    """

    def __init__(self, problem: _Problem, trials: Sequence[_Seen]) -> None:
        self._problem = problem
        self._keys: set[tuple[Any, ...]] = set()
        self._subsets: list[tuple[Any, ...]] = []
        for t in trials:
            key = problem.key(t.params)
            self._keys.add(key)
            if not problem.exact and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                self._subsets.append(key)

    def has(self, params: Mapping[str, Any]) -> bool:
        key = self._problem.key(params)
        if key in self._keys:
            return True
        if self._subsets:
            items = set(key)
            return any(items.issuperset(sub) for sub in self._subsets)
        return False

    def add(self, params: Mapping[str, Any]) -> None:
        self._keys.add(self._problem.key(params))


class _Problem:
    """The space as BoTorch sees it: unit-cube columns, their kinds, model and optimiser.

    The columns are the space's :class:`~paretune.spaces.UnitCube` (single values dropped,
    categorical indices scaled to ``[0, 1]``). Two-choice categoricals are treated as binary discrete columns (a
    categorical kernel on two values is a stationary kernel on ``{0, 1}``); those with three or
    more choices get the categorical kernel and the optimiser's categorical moves. Grids of
    more than 256 levels are continuous columns for the optimiser, rounded on decoding.
    """

    def __init__(self, space: SearchSpace, *, exact: bool) -> None:
        self.space = space
        self.exact = exact
        self.cube = cube = UnitCube(space)
        self.dim = cube.dim
        self.discrete: dict[int, list[float]] = {}
        self.categorical: dict[int, list[float]] = {}
        columns = [(p.name, cube.column(p.name)) for p in space]
        for name, col in columns:
            if col is None or cube.kinds[col] is not DimKind.INTEGER:
                continue
            if (cube.encoding.n_values(name) or 0) <= _MAX_GRID_LEVELS:
                self.discrete[col] = cube.values(name) or []
        for name, col in columns:
            if col is None or cube.kinds[col] is not DimKind.CATEGORICAL:
                continue
            values = cube.values(name) or []
            if len(values) == 2:
                self.discrete[col] = values
            else:
                self.categorical[col] = values

    def key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """A hashable form of ``params``: canonical values, booleans apart from numbers."""
        out = []
        for name, value in params.items():
            if name in self.space and self.space[name].contains(value):
                value = self.space[name].canonical(value)
            out.append((name, isinstance(value, (bool, np.bool_)), _hashable(value)))
        return tuple(sorted(out, key=repr))

    def covers(self, params: Mapping[str, Any]) -> bool:
        """Whether a trial's params are valid here (all of them, when the space is known)."""
        if self.exact:
            try:
                self.space.validate(params)
            except ConfigError:
                return False
            return True
        return all(
            name not in self.space or self.space[name].contains(value)
            for name, value in params.items()
        )

    def avoid_set(self, trials: Sequence[_Seen]) -> _Avoid:
        return _Avoid(self, trials)

    def decode(self, X_unit: torch.Tensor) -> dict[str, Any]:
        return self.cube.decode(X_unit)[0]

    def fit(self, X: torch.Tensor, Y: torch.Tensor, *, fit_maxiter: int) -> Model:
        import torch
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.kernels.categorical import CategoricalKernel
        from botorch.models.transforms.outcome import Standardize
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.constraints import Interval
        from gpytorch.mlls import ExactMarginalLogLikelihood

        covar = None
        if self.categorical:
            # BoTorch's default kernel on the ordered columns times a categorical kernel on
            # the rest. (MixedSingleTaskGP's sum-plus-product kernel has four times the
            # hyperparameters and took minutes to fit at 20 points, 10 columns.)
            batch = torch.Size([Y.shape[-1]]) if Y.shape[-1] > 1 else torch.Size()
            cat = sorted(self.categorical)
            ordered = [i for i in range(self.dim) if i not in self.categorical]
            covar = CategoricalKernel(
                batch_shape=batch,
                ard_num_dims=len(cat),
                active_dims=tuple(cat),
                # Bounded above: with a free lengthscale the fit chases "categories do not
                # matter" towards infinity for thousands of L-BFGS steps.
                lengthscale_constraint=Interval(1e-3, 100.0),
            )
            if ordered:
                covar = (
                    get_covar_module_with_dim_scaled_prior(
                        ard_num_dims=len(ordered), batch_shape=batch, active_dims=ordered
                    )
                    * covar
                )
        model = SingleTaskGP(X, Y, covar_module=covar, outcome_transform=Standardize(m=Y.shape[-1]))
        # Every fit starts from the priors' defaults, not from the last fit: warm starts were
        # faster but got stuck in long-lengthscale optima (BraninCurrin, seed 0: log10 HV gap
        # 0.42 instead of 0.24 at 40 trials), and a cold fit depends on the study alone.
        fit_gpytorch_mll(
            ExactMarginalLogLikelihood(model.likelihood, model),
            optimizer_kwargs={"options": {"maxiter": fit_maxiter}},
        )
        return model

    def optimize(
        self,
        acq: AcquisitionFunction,
        opts: _AcqOptions,
        *,
        fixed: dict[int, float] | None = None,
    ) -> torch.Tensor:
        """The acquisition's best point (``1 x dim``), columns in ``fixed`` held there."""
        from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating

        if self.discrete or self.categorical:
            X, _ = optimize_acqf_mixed_alternating(
                acq,
                bounds=self.cube.bounds,
                discrete_dims=self.discrete or None,
                cat_dims=self.categorical or None,
                q=1,
                num_restarts=opts.num_restarts,
                raw_samples=opts.raw_samples,
                fixed_features=fixed or None,
                options={"maxiter_alternating": max(4, opts.maxiter // 8)},
            )
            return X
        X, _ = optimize_acqf(
            acq,
            bounds=self.cube.bounds,
            q=1,
            num_restarts=opts.num_restarts,
            raw_samples=opts.raw_samples,
            fixed_features=fixed or None,
            options={
                "maxiter": opts.maxiter,
                "batch_limit": opts.num_restarts,
                # The raw samples in one batch: scored 6 at a time (batch_limit) they took
                # two thirds of a proposal in ~90 small posterior calls (DTLZ2, 35 trials).
                "init_batch_limit": _INIT_BATCH_LIMIT,
                "sample_around_best": True,
            },
        )
        return X

    def sobol_unit(self, n: int, *, skip: int, seed: int) -> torch.Tensor:
        import torch
        from torch.quasirandom import SobolEngine

        engine = SobolEngine(self.dim, scramble=True, seed=seed % (2**31))
        if skip:
            engine.fast_forward(skip)
        return engine.draw(n, dtype=torch.float64)

    def sobol(self, number: int, *, seed: int, avoid: _Avoid) -> dict[str, Any]:
        """Point ``number`` of the seeded Sobol sequence, or a random new point if it exists."""
        params = self.decode(self.sobol_unit(1, skip=number, seed=seed))
        if self.dim == 0 or (not avoid.has(params) and self.space.admits(params)):
            return params
        return self.random(_mix(seed, number), avoid=avoid)

    def random(self, seed: int, *, avoid: _Avoid) -> dict[str, Any]:
        """A uniform random point that no trial has and the space's rule admits (the last
        draw if 100 draws all fail that)."""
        rng = np.random.default_rng(seed)
        params = self.space.sample(rng)
        for _ in range(100):
            if not avoid.has(params) and self.space.admits(params):
                break
            params = self.space.sample(rng)
        return params

    def best_distinct(
        self, acq: AcquisitionFunction, seed: int, *, avoid: _Avoid
    ) -> dict[str, Any]:
        """The best new point the space's rule admits among 256 Sobol points, scored where
        they decode to.

        Raw Sobol points sit between grid values and categories; the acquisition is evaluated
        at the valid points they snap to, so the choice is among what would be proposed.
        """
        import torch

        candidates: list[dict[str, Any]] = []
        seen = _Avoid(self, ())
        for row in self.sobol_unit(256, skip=0, seed=seed):
            params = self.decode(row.unsqueeze(0))
            if not avoid.has(params) and not seen.has(params) and self.space.admits(params):
                seen.add(params)
                candidates.append(params)
        if not candidates:
            return self.random(seed, avoid=avoid)
        X = self.cube.encode(candidates, partial=True)
        with torch.no_grad():
            values = torch.cat([acq(x.unsqueeze(1)) for x in X.split(64)])
        return candidates[int(torch.argmax(values))]


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (as it is for ``None``)."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _jsonable(value: Any) -> Any:
    """A storable form of a param value (numpy scalars to Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _mix(*keys: int) -> int:
    """A 32-bit seed from several integers (independent streams per trial)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _feasible(Y_obj: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """Rows that meet every outcome constraint (all rows without constraints)."""
    import torch

    if C is None:
        return torch.ones(len(Y_obj), dtype=torch.bool)
    return (C <= 0).all(dim=-1)


# BoTorch compiles a C++ kernel for its multi-objective log-improvement acquisitions the first
# time one is built in an environment (torch.utils.cpp_extension: 40-75 s on 2 cores), holding a
# lock file meanwhile. A process killed during the compile leaves the lock behind, and every
# later build then waits on it forever without a word. A lock this old is a dead one.
_STALE_KERNEL_LOCK_S = 300.0


def _load_fused_kernel() -> None:
    """Load (compiling it the first time) BoTorch's fused kernel, as its acquisitions would, but
    first remove the lock of a compile that died instead of waiting on it for ever, and say so
    while a live compile in another process is waited for. A no-op once this process has tried
    to load it, or where BoTorch has no such kernel. ``.ci/run`` calls it beside mypy."""
    try:
        from botorch.acquisition.multi_objective import logei
        from torch.utils import cpp_extension

        load = logei._try_load_fused_kernel
        if getattr(logei, "_load_attempted", True):
            return
        lock = Path(cpp_extension._get_build_directory("logei_fused_ext", verbose=False)) / "lock"
    except Exception:  # another BoTorch or torch: its own loading, nothing to clear
        return
    said = False
    while lock.exists():
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            break  # released meanwhile
        if age > _STALE_KERNEL_LOCK_S:
            _log.warning(
                "removing %s: left %.0f s ago by a compile of BoTorch's fused kernel that did "
                "not finish (a killed process)",
                lock,
                age,
            )
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            break
        if not said:
            _log.warning(
                "waiting for another process to finish compiling BoTorch's fused kernel "
                "(lock %s, %.0f s old; removed at %.0f s)",
                lock,
                age,
                _STALE_KERNEL_LOCK_S,
            )
            said = True
        time.sleep(0.5)
    load()


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"`{name}` must be an int >= {low}, but got {describe(value)}.")


def _quiet_botorch_warnings() -> None:
    from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning

    warnings.simplefilter("ignore", InputDataWarning)
    warnings.simplefilter("ignore", OptimizationWarning)
    warnings.simplefilter("ignore", RuntimeWarning)

"""Multi-objective Bayesian optimisation on BoTorch, as an Optuna sampler."""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._base import _process_constraints_after_trial
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import ConfigError, describe
from paretune.spaces import Categorical, Encoding, SearchSpace

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction
    from botorch.models.model import Model

__all__ = ["BoTorchSampler"]

_log = logging.getLogger(__name__)

# Optuna's system attribute for the values of ``constraints_func`` (``<= 0`` is feasible).
_CONSTRAINTS_KEY = "constraints"


@dataclass(frozen=True)
class _AcqOptions:
    num_restarts: int
    raw_samples: int
    mc_samples: int
    maxiter: int
    fit_maxiter: int


_DEFAULT = _AcqOptions(num_restarts=6, raw_samples=256, mc_samples=64, maxiter=100, fit_maxiter=200)
_FAST = _AcqOptions(num_restarts=2, raw_samples=64, mc_samples=32, maxiter=20, fit_maxiter=50)


class BoTorchSampler(optuna.samplers.BaseSampler):
    """Gaussian-process Bayesian optimisation with BoTorch's log-improvement acquisitions.

    Lifecycle (Optuna's): at the start of each trial :meth:`infer_relative_search_space` gives
    the parameters this sampler models and :meth:`sample_relative` proposes values for all of
    them at once; parameters outside that space are drawn by :meth:`sample_independent`
    (uniformly at random); :meth:`after_trial` records the trial's constraint values.

    Each proposal is made from the study alone, so a sampler built anew on a stored study
    (resume, another worker, Ray Tune's ``OptunaSearch``) continues where the last one stopped:

    1. **Start-up.** Until ``n_startup_trials`` trials have completed, candidates come from a
       scrambled Sobol sequence over the space (point number ``trial.number``, so concurrent
       workers get different points).
    2. **Model.** Completed trials are encoded (:class:`~paretune.spaces.Encoding`: unit-cube
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
    4. **No duplicates.** A candidate whose decoded params equal those of an existing trial
       (any state) is replaced by the best of a Sobol batch of fresh, distinct candidates under
       the same acquisition.

    Reference point (several objectives): ``reference_point`` when given; otherwise BoTorch's
    ``infer_reference_point`` on the feasible observed Pareto front: the front's worst value
    in each objective minus 10 % of its range (with a floor when the range is zero).

    Conditional parameters: with ``search_space`` (paretune's runners pass the spec's space),
    the sampler knows the conditions: an inactive parameter is encoded as zeros, the low end
    of its range, so the GP tells active from inactive through the parent's columns, and only
    the parameters that the proposed parent values activate are returned. Without it
    (define-by-run Optuna), the space is the union of the parameters of completed trials;
    parameters a trial did not use are encoded the same way, and Optuna uses only the
    proposed values the objective asks for.

    Failed trials are not modelled (their params are still not proposed again). Pruned trials
    are not modelled either: they carry no final values. If fitting or optimising fails
    numerically, the trial falls back to a random candidate and a warning is logged.

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
        maxiter: L-BFGS iterations per restart (continuous spaces). Default 100 (20).
        fast: Fast mode: the smaller defaults above and at most 50 (instead of 200) L-BFGS
            steps per GP fit; several times cheaper per proposal and less sample-efficient;
            for tests, smoke runs and cheap objectives. Explicit options win over it.

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

    # -- Optuna's sampler interface --------------------------------------------------------

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self._seed = int(np.random.SeedSequence().generate_state(1)[0])

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
        problem = self._problem(search_space)
        trials = study._get_trials(deepcopy=False, use_cache=True)
        complete = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.values is not None
            and all(math.isfinite(v) for v in t.values)
            and (self._constraints_func is None or t.system_attrs.get(_CONSTRAINTS_KEY) is not None)
        ]
        others = [t for t in trials if t.number != trial.number and t.params]
        seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
        n_startup = self._n_startup or max(5, min(2 * (problem.dim + 1), 10))
        if len(complete) < n_startup:
            return problem.sobol(trial.number, seed=self._seed, avoid=others)
        try:
            return self._propose(study, problem, complete, trial, others, seed)
        except Exception as err:  # numerical trouble must not stop a search
            _log.warning(
                "BoTorchSampler: proposal for trial %d failed (%s: %s); sampling at random.",
                trial.number,
                type(err).__name__,
                err,
            )
            return problem.random(seed, avoid=others)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

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

    def _problem(self, search_space: Mapping[str, BaseDistribution]) -> _Problem:
        key = tuple((name, repr(d)) for name, d in search_space.items())
        if key not in self._encodings:
            space = self._space or SearchSpace.from_distributions(search_space)
            self._encodings[key] = _Problem(space)
        return self._encodings[key]

    def _propose(
        self,
        study: optuna.Study,
        problem: _Problem,
        complete: list[FrozenTrial],
        trial: FrozenTrial,
        others: list[FrozenTrial],
        seed: int,
    ) -> dict[str, Any]:
        import torch

        signs = torch.tensor(
            [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions],
            dtype=torch.float64,
        )
        n_obj = len(signs)
        X = problem.to_unit(problem.encoding.encode([t.params for t in complete], partial=True))
        Y = torch.tensor([t.values for t in complete], dtype=torch.float64) * signs
        n_con = 0
        if self._constraints_func is not None:
            C = torch.tensor(
                [t.system_attrs[_CONSTRAINTS_KEY] for t in complete], dtype=torch.float64
            )
            n_con = C.shape[-1]
            Y = torch.cat([Y, C], dim=-1)
        running = [t for t in others if t.state == TrialState.RUNNING]
        X_pending = None
        if running:
            X_pending = problem.to_unit(
                problem.encoding.encode([t.params for t in running], partial=True)
            )
        with torch.random.fork_rng(), warnings.catch_warnings():
            torch.manual_seed(seed)
            _quiet_botorch_warnings()
            model = problem.fit(X, Y, fit_maxiter=self._acq.fit_maxiter)
            acq = self._acquisition(model, X, Y, n_obj, n_con, signs, X_pending, seed)
            candidate = problem.optimize(acq, self._acq)
            params = problem.decode(candidate)
            if _is_duplicate(params, others):
                params = problem.best_distinct(acq, seed, avoid=others)
        return params

    def _acquisition(
        self,
        model: Model,
        X: torch.Tensor,
        Y: torch.Tensor,
        n_obj: int,
        n_con: int,
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
        )
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.sampling.normal import SobolQMCNormalSampler

        sampler = SobolQMCNormalSampler(torch.Size([self._acq.mc_samples]), seed=seed)
        constraints: list[Callable[[torch.Tensor], torch.Tensor]] | None = [
            _Column(n_obj + i) for i in range(n_con)
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
        ref = self._reference_point(Y, n_obj, n_con, signs)
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref.tolist(),
            X_baseline=X,
            sampler=sampler,
            objective=IdentityMCMultiOutputObjective(outcomes=list(range(n_obj)))
            if n_con
            else None,
            constraints=constraints,
            X_pending=X_pending,
            prune_baseline=True,
        )

    def _reference_point(
        self, Y: torch.Tensor, n_obj: int, n_con: int, signs: torch.Tensor
    ) -> torch.Tensor:
        import torch
        from botorch.utils.multi_objective.hypervolume import infer_reference_point
        from botorch.utils.multi_objective.pareto import is_non_dominated

        if self._reference is not None:
            return torch.tensor(self._reference, dtype=torch.float64) * signs
        obj = Y[:, :n_obj]
        feasible = (
            (Y[:, n_obj:] <= 0).all(dim=-1) if n_con else torch.ones(len(Y), dtype=torch.bool)
        )
        pool = obj[feasible] if feasible.any() else obj
        return infer_reference_point(pool[is_non_dominated(pool)])


class _Column:
    """``Z[..., i]``: one output of the model's samples (picklable, unlike a lambda)."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __call__(self, Z: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        return Z[..., self.i]


class _Problem:
    """The space as BoTorch sees it: unit-cube columns, their kinds, model and optimiser.

    Single-value columns (bounds ``[0, 0]``) are dropped; categorical index columns are scaled
    to ``[0, 1]``. Two-choice categoricals are treated as binary discrete columns (a
    categorical kernel on two values is a stationary kernel on ``{0, 1}``); those with three or
    more choices get the categorical kernel and the optimiser's categorical moves.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.encoding = enc = Encoding(space, categorical="index")
        bounds = enc.bounds.numpy()
        self.lower = bounds[0]
        self.span = bounds[1] - bounds[0]
        self.free = np.flatnonzero(self.span > 0)
        self.dim = len(self.free)
        position = {int(c): i for i, c in enumerate(self.free)}
        self.discrete: dict[int, list[float]] = {}
        self.categorical: dict[int, list[float]] = {}
        for col, values in enc.discrete_values.items():
            if col in position:
                self.discrete[position[col]] = [v / self.span[col] for v in values]
        for param in space:
            if not isinstance(param, Categorical):
                continue
            col = enc.columns(param.name).start
            if col not in position:
                continue
            k = len(param.choices)
            values = [i / (k - 1) for i in range(k)]
            if k == 2:
                self.discrete[position[col]] = values
            else:
                self.categorical[position[col]] = values

    def to_unit(self, X_enc: torch.Tensor) -> torch.Tensor:
        import torch

        lower = torch.from_numpy(self.lower[self.free])
        span = torch.from_numpy(self.span[self.free])
        return (X_enc[:, self.free] - lower) / span

    def decode(self, X_unit: torch.Tensor) -> dict[str, Any]:
        X = np.tile(self.lower, (X_unit.shape[0], 1))
        X[:, self.free] = (
            X_unit.detach().cpu().numpy() * self.span[self.free] + self.lower[self.free]
        )
        return self.encoding.decode(X)[0]

    def bounds(self) -> torch.Tensor:
        import torch

        return torch.stack(
            [torch.zeros(self.dim, dtype=torch.float64), torch.ones(self.dim, dtype=torch.float64)]
        )

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

    def optimize(self, acq: AcquisitionFunction, opts: _AcqOptions) -> torch.Tensor:
        from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating

        if self.discrete or self.categorical:
            X, _ = optimize_acqf_mixed_alternating(
                acq,
                bounds=self.bounds(),
                discrete_dims=self.discrete or None,
                cat_dims=self.categorical or None,
                q=1,
                num_restarts=opts.num_restarts,
                raw_samples=opts.raw_samples,
                options={"maxiter_alternating": max(4, opts.maxiter // 8)},
            )
            return X
        X, _ = optimize_acqf(
            acq,
            bounds=self.bounds(),
            q=1,
            num_restarts=opts.num_restarts,
            raw_samples=opts.raw_samples,
            options={"maxiter": opts.maxiter, "batch_limit": opts.num_restarts},
        )
        return X

    def sobol_unit(self, n: int, *, skip: int, seed: int) -> torch.Tensor:
        import torch
        from torch.quasirandom import SobolEngine

        engine = SobolEngine(self.dim, scramble=True, seed=seed % (2**31))
        if skip:
            engine.fast_forward(skip)
        return engine.draw(n, dtype=torch.float64)

    def sobol(self, number: int, *, seed: int, avoid: Sequence[FrozenTrial]) -> dict[str, Any]:
        """The ``number``-th point of the seeded Sobol sequence, or a later distinct one."""
        if self.dim == 0:
            return self.decode(self.sobol_unit(1, skip=0, seed=seed)[:, :0])
        for offset in range(64):
            # Fallbacks come from far along the sequence, clear of later trials' points.
            params = self.decode(self.sobol_unit(1, skip=number + offset * 4096, seed=seed))
            if not _is_duplicate(params, avoid):
                return params
        return params

    def random(self, seed: int, *, avoid: Sequence[FrozenTrial]) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        params = self.space.sample(rng)
        for _ in range(100):
            if not _is_duplicate(params, avoid):
                break
            params = self.space.sample(rng)
        return params

    def best_distinct(
        self, acq: AcquisitionFunction, seed: int, *, avoid: Sequence[FrozenTrial]
    ) -> dict[str, Any]:
        """The best of 256 Sobol candidates whose params no trial has; random if none is new."""
        import torch

        X = self.sobol_unit(256, skip=0, seed=seed)
        with torch.no_grad():
            values = torch.cat([acq(x.unsqueeze(1)) for x in X.split(64)])
        for i in torch.argsort(values, descending=True).tolist():
            params = self.decode(X[i : i + 1])
            if not _is_duplicate(params, avoid):
                return params
        return self.random(seed, avoid=avoid)


def _is_duplicate(params: Mapping[str, Any], trials: Sequence[FrozenTrial]) -> bool:
    """Whether a trial's params all appear in ``params`` with the same values.

    ``params`` may hold more names than the trial: the union space of define-by-run studies
    proposes parameters a trial never asked for.
    """
    return any(
        t.params and all(k in params and params[k] == v for k, v in t.params.items())
        for t in trials
    )


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"`{name}` must be an int >= {low}, but got {describe(value)}.")


def _quiet_botorch_warnings() -> None:
    from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning

    warnings.simplefilter("ignore", InputDataWarning)
    warnings.simplefilter("ignore", OptimizationWarning)
    warnings.simplefilter("ignore", RuntimeWarning)

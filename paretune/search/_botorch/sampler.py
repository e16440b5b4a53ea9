"""The Optuna adapter: :class:`BoTorchSampler`, Optuna's lifecycle around the proposal."""

from __future__ import annotations

import logging
import math
import numbers
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._base import _process_constraints_after_trial
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import ConfigError, describe
from paretune.search._botorch.candidates import mix, random_new, sobol
from paretune.search._botorch.duplicates import PROPOSAL_KEY, Avoid, Seen, jsonable
from paretune.search._botorch.known import KnownObjectives
from paretune.search._botorch.observations import observations
from paretune.search._botorch.optimize import DEFAULT, FAST, AcqOptions
from paretune.search._botorch.problem import Problem
from paretune.search._botorch.proposal import ProposalSettings, propose, torch_threads
from paretune.search._capabilities import Capabilities
from paretune.spaces import SearchSpace

__all__ = ["BoTorchSampler"]

# The most completed trials a proposal's model is fitted to (see `max_fit_points`).
DEFAULT_MAX_FIT_POINTS = 150
# The most observed points in the acquisition's baseline (see `max_baseline_points`).
DEFAULT_MAX_BASELINE_POINTS = 64

# The package's logger, whichever of its modules logs.
_log = logging.getLogger(__package__)


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
    2. **Model.** Completed trials (at most ``max_fit_points`` of them, chosen around the
       Pareto front) are encoded (:class:`~paretune.spaces.UnitCube`: unit-cube
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
        max_fit_points: The most completed trials the GP is fitted to. Past it, the model
            sees a subset: the feasible observed Pareto front (whole, unless it alone exceeds
            the cap) and the Pareto layers behind it up to half the cap, the latest trials up
            to a fifth, and a farthest-point (space-filling) sample of the rest. An exact GP
            costs ``O(n^3)`` per fit step; with the cap a proposal costs about the same at 500
            trials as at the cap. Default 150; ``None``: every trial (benchmarks/README.md,
            "Growth with the number of trials").
        max_baseline_points: The most observed points in the acquisition's baseline (the
            points whose uncertain values the improvement is measured from): the model's
            points nearest the front, in Pareto layers, the last layer that does not fit whole
            spread in objective space. BoTorch's ``prune_baseline`` keeps almost every point
            when all have some probability of being on the front (149 of 150 on DTLZ2), and
            the acquisition's cost grows with the baseline. Default 64; ``None``: all.
        torch_threads: Torch's intra-op threads during a proposal, restored afterwards.
            Default 1: the model and acquisition work on small matrices, where more threads
            cost more than they bring (DTLZ2 at 40 trials on 2 cores: 1.8 s per proposal on
            one thread, 3.6 s on two). ``None`` leaves torch's setting as it is.

    Example:
        >>> sampler = BoTorchSampler(seed=0)
        >>> study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        >>> study.optimize(objective, n_trials=40)  # doctest: +SKIP
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        constraints=True, pending=True, no_duplicates=True, keyed_by_trial=True
    )
    """What the registry's ``botorch`` controller promises (:func:`register_controller`)."""

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
        max_fit_points: int | None = DEFAULT_MAX_FIT_POINTS,
        max_baseline_points: int | None = DEFAULT_MAX_BASELINE_POINTS,
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
        reference: tuple[float, ...] | None = None
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
            reference = tuple(float(v) for v in reference_point)
        if constraints_func is not None and not callable(constraints_func):
            raise ConfigError(
                f"`constraints_func` must be callable, but got {describe(constraints_func)}."
            )
        self._constraints_func = constraints_func
        self._known = KnownObjectives(known_objectives)
        if (
            isinstance(local_share, bool)
            or not isinstance(local_share, (int, float))
            or not 0.0 <= local_share <= 1.0
        ):
            raise ConfigError(
                f"`local_share` must be a number in [0, 1], but got {describe(local_share)}."
            )
        _check_int("local_radius", local_radius, low=1)
        if torch_threads is not None:
            _check_int("torch_threads", torch_threads, low=1)
        if max_fit_points is not None:
            _check_int("max_fit_points", max_fit_points, low=2)
        if max_baseline_points is not None:
            _check_int("max_baseline_points", max_baseline_points, low=1)
        self._torch_threads = torch_threads
        if not isinstance(fast, bool):
            raise ConfigError(f"`fast` must be True or False, but got {describe(fast)}.")
        base = FAST if fast else DEFAULT
        for name, value in (
            ("num_restarts", num_restarts),
            ("raw_samples", raw_samples),
            ("mc_samples", mc_samples),
            ("maxiter", maxiter),
        ):
            if value is not None:
                _check_int(name, value, low=1)
        self._settings = ProposalSettings(
            options=AcqOptions(
                num_restarts=num_restarts or base.num_restarts,
                raw_samples=raw_samples or base.raw_samples,
                mc_samples=mc_samples or base.mc_samples,
                maxiter=maxiter or base.maxiter,
                fit_maxiter=base.fit_maxiter,
            ),
            reference=reference,
            local_share=float(local_share),
            local_radius=int(local_radius),
            max_fit_points=max_fit_points,
            max_baseline_points=max_baseline_points,
        )
        self._encodings: dict[tuple[Any, ...], Problem] = {}
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
        reference = self._settings.reference
        if reference is not None and len(reference) != len(study.directions):
            raise ConfigError(
                f"`reference_point` has {len(reference)} values but the study has "
                f"{len(study.directions)} objectives; give one value per objective."
            )
        self._known.check_study(len(study.directions))
        problem = self._problem(search_space)
        with self._lock:
            trials = study._get_trials(deepcopy=False, use_cache=False)
            complete, constraints = observations(
                problem, trials, has_constraints_func=self._constraints_func is not None
            )
            others = [
                seen
                for seen in (Seen.of(t) for t in trials if t.number != trial.number)
                if seen.params
            ]
            avoid = Avoid(problem.space, others, exact=problem.exact)
            seed = mix(self._seed, trial.number)
            n_startup = self._n_startup or max(5, min(2 * (problem.dim + 1), 10))
            # Trials running elsewhere count towards the start-up: with 4 workers the model
            # takes over at the same trial number as with one, its last 3 points pending.
            running = sum(seen.state == TrialState.RUNNING for seen in others)
            if len(complete) + running < n_startup or len(complete) < 2:
                params = sobol(problem, trial.number, seed=self._seed, avoid=avoid)
            else:
                try:
                    with torch_threads(self._torch_threads):
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
                    params = random_new(problem, seed, avoid=avoid)
            # Published at once: a define-by-run trial sets its params only as the objective
            # suggests them, and the next worker's proposal must already avoid these.
            study._storage.set_trial_system_attr(
                trial._trial_id, PROPOSAL_KEY, {k: jsonable(v) for k, v in params.items()}
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

    def _problem(self, search_space: Mapping[str, BaseDistribution]) -> Problem:
        key = tuple((name, repr(d)) for name, d in search_space.items())
        if key not in self._encodings:
            space = self._space or SearchSpace.from_distributions(search_space)
            self._encodings[key] = Problem(space, exact=self._space is not None)
        return self._encodings[key]

    def _propose(
        self,
        study: optuna.Study,
        problem: Problem,
        complete: list[FrozenTrial],
        constraints: list[list[float]] | None,
        others: list[Seen],
        avoid: Avoid,
        seed: int,
    ) -> dict[str, Any]:
        return propose(
            problem, self._settings, self._known, study.directions, complete, constraints,
            others, avoid, seed,
        )  # fmt: skip


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"`{name}` must be an int >= {low}, but got {describe(value)}.")

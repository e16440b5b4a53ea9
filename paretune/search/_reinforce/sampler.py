"""The Optuna adapter: :class:`ReinforceSampler`, Optuna's lifecycle around the learner."""

from __future__ import annotations

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
from paretune.search._capabilities import Capabilities
from paretune.search._reinforce.learner import Learner, Settings
from paretune.search._reinforce.levels import Levels
from paretune.search._reinforce.policy import Policy
from paretune.search._reinforce.rewards import REWARDS, make_reward
from paretune.spaces import Parameter, SearchSpace

__all__ = ["ReinforceSampler"]

_MNAS_OPTIONS = ("score", "cost", "target", "w")


class ReinforceSampler(optuna.samplers.BaseSampler):
    """A policy over the search space trained with REINFORCE, as in ENAS (Pham et al., 2018)
    and MnasNet (Tan et al., 2019), without their RNN controller.

    **Policy.** One categorical distribution per parameter, independent of each other
    (factorised, not autoregressive: ``pi(params) = prod_j pi_j(a_j)``): categorical parameters
    over their choices, int parameters over their values (at most ``bins`` of them, spread
    evenly or log-evenly, rounded and deduplicated), float parameters over ``bins`` grid
    points (on the ``step`` grid, log-spaced for ``log``). A factorised policy has one small
    logit vector per parameter, learns from tens of trials and cannot represent interactions
    between parameters; an autoregressive one (ENAS's LSTM) can, at the price of many more
    trials. Conditional parameters are drawn only when their condition holds under the
    earlier draws, and their factor counts in a trial's log-probability only then.

    **Learning.** Each completed trial is one REINFORCE sample with reward ``r``: the value
    (negated when minimised) for one objective; for several, ``reward='volume'`` (default: the
    hypervolume the trial dominates on its own), ``reward='hypervolume'`` (the hypervolume
    improvement of the trial over the front of the feasible trials numbered before it), both on
    objectives normalised by the reference point or by the observed ranges, or ``reward='mnas'``
    (``s * (c / target)^w`` of a score ``s`` and a cost ``c``; see ``score``). The improvement
    is 0 for every dominated trial, a sparse signal once the front fills; the own volume grades
    every trial. On PeftLike at 100 trials (benchmarks/README.md) the own volume was ahead of
    random search on the tuning seeds, the improvement was not, and on held-out seeds both were
    level with it. An infeasible trial (a constraint value ``> 0``, or a value that is not
    finite) gets the worst feasible reward so far. Rewards are standardised by their running
    standard deviation; the advantage is ``(r - b) / std`` with a baseline ``b`` that is the
    mean reward of the first ``n_startup_trials`` trials, then an exponential moving average of
    the rewards. Past the start-up, each trial makes one Adam step on ``A * log pi(params) +
    entropy * H(pi)`` (``H`` the summed entropy of the factors the trial held). Until then, the
    policy is uniform (its initial state).

    **State from the study.** The policy is a function of the seed, the options and the
    completed trials in trial-number order, nothing else: each proposal replays the trials
    completed since the last one, and rebuilds the policy from scratch when the completed
    trials are not an extension of those already replayed (a trial with a lower number
    completed later, or a new sampler on a resumed study). A resumed search, a second worker
    or a Ray worker holding its own sampler reach the same policy. The draws of trial ``n``
    come from ``numpy.random.default_rng([seed, n])``, so the same seed and the same study
    give the same proposal (:class:`Capabilities`' ``keyed_by_trial``). Running trials are
    not seen: concurrent workers draw independently from the same policy.

    Lifecycle (Optuna's): :meth:`infer_relative_search_space` gives the space (paretune's
    ``search_space`` when given, else the union of the distributions of completed trials,
    the latest trial's winning: the plain-Optuna use), :meth:`sample_relative` draws all its
    parameters at once, :meth:`sample_independent` draws a parameter outside it uniformly
    (seeded by seed, trial number and name), and :meth:`after_trial` records the trial's
    constraint values from ``constraints_func``; ``Trial.set_constraint`` works too.

    Args:
        search_space: The space, as a paretune :class:`~paretune.spaces.SearchSpace` (its
            conditions are then known) or a mapping of Optuna distributions. Default: inferred
            from the completed trials.
        seed: Seed of the draws. ``None``: a random one.
        reward: ``'value'`` (one objective; the default there), ``'volume'`` (the default
            for several objectives), ``'hypervolume'`` or ``'mnas'`` (several).
        score: ``reward='mnas'``: the index of the score objective, default 0. MnasNet's
            score is an accuracy, maximised and positive; a minimised score is negated (so
            the reward rises as it falls), and a negative score ``s`` gets the reward
            ``s / (c / target)^w``, which rises with ``s`` and falls with the cost for
            ``w < 0``.
        cost: ``reward='mnas'``: the index of the cost objective, default 1; its values must
            be positive (a trial with a cost ``<= 0`` counts as infeasible).
        target: ``reward='mnas'``, required: the cost the reward is centred on, in the cost's
            units (MnasNet's target latency).
        w: ``reward='mnas'``: the exponent, default -0.07 (MnasNet's soft constraint).
        reference_point: ``reward='volume'`` or ``'hypervolume'``: one value per objective,
            in the objectives' own units and directions; the objectives are normalised to
            ``(y - best) / (ref - best)``. Without it, by the observed ranges.
        constraints_func: Optuna's constraints function: a trial to a sequence of floats,
            feasible when all are ``<= 0``.
        bins: The most levels of a numeric parameter, at least 2. Default 8.
        lr: Adam's learning rate on the logits. Default 0.1.
        entropy: The weight of the entropy bonus, at least 0. Default 0.01.
        baseline_decay: The decay of the baseline's moving average, in ``[0, 1)``. Default
            0.9.
        n_startup_trials: Completed trials before the first update, at least 0. Default 10.

    Raises:
        ConfigError: An option of the wrong type or out of its range, an option of the
            ``mnas`` reward with another reward, or ``mnas`` without ``target``; when the
            first proposal is made, a reward that does not fit the study's objectives.

    Example:
        >>> sampler = ReinforceSampler(seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(objective, n_trials=100)  # doctest: +SKIP
    """

    capabilities: ClassVar[Capabilities] = Capabilities(constraints=True, keyed_by_trial=True)
    """What the registry's ``reinforce`` controller promises (:func:`register_controller`)."""

    def __init__(
        self,
        *,
        search_space: SearchSpace | Mapping[str, BaseDistribution] | None = None,
        seed: int | None = None,
        reward: str | None = None,
        score: int | None = None,
        cost: int | None = None,
        target: float | None = None,
        w: float | None = None,
        reference_point: Sequence[float] | None = None,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
        bins: int = 8,
        lr: float = 0.1,
        entropy: float = 0.01,
        baseline_decay: float = 0.9,
        n_startup_trials: int = 10,
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
        if reward is not None and reward not in REWARDS:
            raise ConfigError(
                f"`reward` must be one of {', '.join(map(repr, REWARDS))} or None (by the "
                f"number of objectives), but got {describe(reward)}."
            )
        self._reward = reward
        mnas = dict(zip(_MNAS_OPTIONS, (score, cost, target, w), strict=True))
        given = [name for name, value in mnas.items() if value is not None]
        if reward != "mnas" and given:
            raise ConfigError(
                f"{', '.join(f'`{n}`' for n in given)} only apply to `reward='mnas'`, but "
                f"the reward is {describe(reward)}; set `reward: mnas` or drop them."
            )
        if reward == "mnas":
            if score is not None:
                _check_int("score", score, low=0)
            if cost is not None:
                _check_int("cost", cost, low=0)
            score = 0 if score is None else score
            cost = 1 if cost is None else cost
            if score == cost:
                raise ConfigError(
                    f"`score` and `cost` must be different objectives, but both are {score}."
                )
            if target is None:
                raise ConfigError(
                    "`reward='mnas'` needs `target`, the cost the reward is centred on "
                    "(MnasNet's target latency), in the cost objective's units."
                )
            _check_number("target", target, positive=True)
            if w is not None:
                _check_number("w", w)
        self._mnas = (
            0 if score is None else score,
            1 if cost is None else cost,
            target,
            -0.07 if w is None else w,
        )
        self._reference = _reference_point(reference_point)
        if constraints_func is not None and not callable(constraints_func):
            raise ConfigError(
                f"`constraints_func` must be callable, but got {describe(constraints_func)}."
            )
        self._constraints_func = constraints_func
        _check_int("bins", bins, low=2)
        self._bins = int(bins)
        _check_number("lr", lr, positive=True)
        _check_number("entropy", entropy)
        if entropy < 0:
            raise ConfigError(f"`entropy` must be >= 0, but got {describe(entropy)}.")
        _check_number("baseline_decay", baseline_decay)
        if not 0.0 <= baseline_decay < 1.0:
            raise ConfigError(
                f"`baseline_decay` must be in [0, 1), but got {describe(baseline_decay)}."
            )
        _check_int("n_startup_trials", n_startup_trials, low=0)
        self._settings = Settings(
            lr=float(lr),
            entropy=float(entropy),
            baseline_decay=float(baseline_decay),
            n_startup_trials=int(n_startup_trials),
        )
        self._learner: Learner | None = None
        self._learner_key: tuple[Any, ...] | None = None
        # The learner is shared by Optuna's n_jobs threads: one replay and draw at a time.
        self._lock = threading.Lock()

    # -- Optuna's sampler interface --------------------------------------------------------

    def reseed_rng(self) -> None:
        # Optuna reseeds samplers for every trial it runs in a thread (n_jobs > 1); the seed
        # that keys the draws must survive that.
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
        return self._distributions(study)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            learner = self._replay(study, search_space)
            params = learner.policy.sample(np.random.default_rng([self._seed, trial.number]))
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Parameters outside the relative space (define-by-run, before a trial completed):
        # uniform, seeded by (seed, trial number, name) so that workers and resumed studies
        # do not replay each other's draws. No warning: this is the expected path there.
        try:
            param = _parameter(param_name, param_distribution)
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

    # -- the policy ------------------------------------------------------------------------

    def policy(self, study: optuna.Study) -> Policy:
        """The policy the next proposal in ``study`` draws from (after replaying its completed
        trials); for inspection, e.g. ``policy.probabilities(name)``."""
        search_space = self._distributions(study)
        with self._lock:
            return self._replay(study, search_space).policy

    def _distributions(self, study: optuna.Study) -> dict[str, BaseDistribution]:
        if self._space is not None:
            return self._space.distributions()
        space: dict[str, BaseDistribution] = {}
        # Not Optuna's per-thread cache: the space and the replay must see the same trials.
        for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False):
            # The latest trial's distribution wins, as in BoTorchSampler.
            space.update(t.distributions)
        return dict(sorted(space.items()))

    def _replay(self, study: optuna.Study, search_space: Mapping[str, BaseDistribution]) -> Learner:
        trials = sorted(
            study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False),
            key=lambda t: t.number,
        )
        key = (
            study._study_id,
            tuple(study.directions),
            tuple((name, repr(d)) for name, d in search_space.items()),
        )
        learner = self._learner
        numbers = [t.number for t in trials]
        if (
            learner is None
            or self._learner_key != key
            or numbers[: len(learner.consumed)] != learner.consumed
        ):
            learner = self._new_learner(study, search_space)
            self._learner, self._learner_key = learner, key
        for t in trials[len(learner.consumed) :]:
            values = np.asarray(t.values, dtype=np.float64)
            feasible = all(c <= 0.0 for c in t.constraints.values())
            learner.consume(t.number, t.params, values, feasible=feasible)
        return learner

    def _new_learner(
        self, study: optuna.Study, search_space: Mapping[str, BaseDistribution]
    ) -> Learner:
        if self._space is not None:
            space = self._space
        else:
            params = []
            for name, distribution in search_space.items():
                try:
                    params.append(_parameter(name, distribution))
                except ConfigError:
                    continue  # left to sample_independent
            space = SearchSpace(params)
        levels = {p.name: Levels.of(p, bins=self._bins) for p in space}
        directions = study.directions
        kind = self._reward or ("value" if len(directions) == 1 else "volume")
        score, cost, target, w = self._mnas
        reward = make_reward(
            kind, directions, score=score, cost=cost, target=target, w=w,
            reference_point=self._reference,
        )  # fmt: skip
        return Learner(Policy(space, levels), reward, self._settings)


def _parameter(name: str, distribution: BaseDistribution) -> Parameter:
    return SearchSpace.from_distributions({name: distribution})[name]


def _reference_point(reference_point: Any) -> tuple[float, ...] | None:
    if reference_point is None:
        return None
    if isinstance(reference_point, (str, bytes)) or not isinstance(reference_point, Sequence):
        raise ConfigError(
            "`reference_point` must be a sequence of numbers, one per objective, but got "
            f"{describe(reference_point)}."
        )
    if not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        for v in reference_point
    ):
        raise ConfigError(
            f"`reference_point` must hold finite numbers, but got {list(reference_point)!r}."
        )
    return tuple(float(v) for v in reference_point)


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"`{name}` must be an int >= {low}, but got {describe(value)}.")


def _check_number(name: str, value: Any, *, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        kind = "a positive finite number" if positive else "a finite number"
        raise ConfigError(f"`{name}` must be {kind}, but got {describe(value)}.")

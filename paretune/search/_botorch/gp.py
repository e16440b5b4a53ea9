"""The Gaussian process: one output per modelled objective and constraint, fitted cold."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from botorch.models.model import Model

    from paretune.search._botorch.problem import Problem


def fit_gp(problem: Problem, X: torch.Tensor, Y: torch.Tensor, *, fit_maxiter: int) -> Model:
    """A batched ``SingleTaskGP`` on ``X`` (``n x dim`` cube points) and ``Y`` (``n x m``,
    larger is better), outcomes standardised, fitted with at most ``fit_maxiter`` L-BFGS steps.

    With categorical columns (three or more choices) the kernel is BoTorch's default kernel
    on the ordered columns times a ``CategoricalKernel`` on the categorical ones.
    """
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.kernels.categorical import CategoricalKernel
    from botorch.models.transforms.outcome import Standardize
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.constraints import Interval
    from gpytorch.mlls import ExactMarginalLogLikelihood

    covar = None
    if problem.categorical:
        # BoTorch's default kernel on the ordered columns times a categorical kernel on
        # the rest. (MixedSingleTaskGP's sum-plus-product kernel has four times the
        # hyperparameters and took minutes to fit at 20 points, 10 columns.)
        batch = torch.Size([Y.shape[-1]]) if Y.shape[-1] > 1 else torch.Size()
        cat = sorted(problem.categorical)
        ordered = [i for i in range(problem.dim) if i not in problem.categorical]
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

"""Double control variates (Titsias & Shi, AISTATS 2022) for Bernoulli latents.

RLOO's leave-one-out baseline is the first control variate. The second is the first-order Taylor expansion of f
around the latents' mean μ = σ(α), h(x) = f(μ̄) + ∇f(μ̄)ᵀ(x − μ̄), with μ̄ held fixed: RLOO applied to f − h, plus
the exact E[∂_θ of the h part], ∂_θ E_q[h] = ∇f(μ̄)ᵀ ∂_θ σ(α), which is the pathwise gradient of f(σ(α)) at μ̄:

    ĝ = (1/N) Σ_n (r_n − mean_{j≠n} r_j) ∂_θ log q(x_n) + ∂_θ f(σ(α)),   r = f(x) − ∇f(μ̄)ᵀ x.

The constant part of h cancels in the leave-one-out differences, so only its slope enters. Unbiased for any
expansion point; exact (zero variance) when f is affine in x; equal to RLOO where ∇f(μ̄) = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.distributions import draw_detached, weighted_score_sum
from ..core.estimator import Estimator
from ..core.problem import Problem
from .basic import leave_one_out_baseline
from .discrete import _needs_bernoulli, _needs_differentiable_discrete


def _slope_at(problem: Problem, point: Tensor, theta: Tensor) -> Tensor:
    """∇_x f at ``point`` (the problem's sample layout); each batch element's cost depends on its own x only."""
    leaf = point.detach().requires_grad_(True)
    (slope,) = torch.autograd.grad(problem.cost(leaf, theta.detach()).sum(), leaf)
    return slope


def double_cv(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = RLOO on r = f(x) − ∇f(μ̄)ᵀx, plus ∂_θ f(σ(α)) (the Taylor control variate's known mean)   (Titsias & Shi)."""
    dist = problem.distribution(theta)
    x = draw_detached(dist, n_samples)
    mean = dist.mean  # σ(α) in the sample layout, with its graph to θ
    slope = _slope_at(problem, mean, theta)
    linear = slope * x
    if dist.event_shape:  # independent coordinates: the inner product over them
        linear = linear.sum(dim=-1)
    residual = problem.cost(x, theta.detach()) - linear
    # The leave-one-out baseline uses only the other samples, so E[b_n ∂log q(x_n)] = 0 as in RLOO.
    score_part = weighted_score_sum(dist, x, residual - leave_one_out_baseline(residual))
    pathwise_part = problem.cost(mean, theta.detach())  # its θ-gradient is ∇f(μ̄)ᵀ ∂_θ σ(α), the CV's mean
    return score_part + n_samples * pathwise_part


def _applies(problem: Problem, n_samples: int) -> str | None:
    if n_samples < 2:
        return "the leave-one-out baseline needs N >= 2 samples per estimate"
    reason = _needs_bernoulli(problem, n_samples)
    if reason is not None and reason.startswith("ARM/DisARM"):
        return "the Taylor control variate's mean is derived here for Bernoulli latents only"
    return reason or _needs_differentiable_discrete(problem, n_samples)


DOUBLE_CV = Estimator(
    "double_cv", double_cv,
    "RLOO on f − ∇f(μ)ᵀx plus the pathwise ∂f(σ(α)) (double control variates, Titsias & Shi 2022); Bernoulli, unbiased, N ≥ 2",
    skip_reason=_applies, samples_independent=False,
    coupled_samples_reason="its leave-one-out baseline would contain samples coupled to x_n, which biases it",
    parallel_safe=True,
)  # fmt: skip

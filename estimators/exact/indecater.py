"""Exact moments of IndeCateR and double_cv on the discrete problems, by enumeration of outcomes.

IndeCateR's per-sample term is a deterministic function of the sample b, g(b) = Σ_d (f(b, b_d = 1) − f(b, b_d = 0))
∂_θ σ(α_d) (Bernoulli) or the constant Σ_k f(e_k) ∂_θ π_k (one categorical choice): a finite sum over outcomes,
variance / N. double_cv is RLOO on r(b) = f(b) − ∇f(μ)ᵀb plus the constant ∇f(μ)ᵀ ∂_θ μ: RLOO's U-statistic.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.estimator import Method
from ..core.problem import Problem
from .discrete import BERNOULLI_FAMILIES, DISCRETE_FAMILIES, Latent, _sigmoid, cost_of, latent, outcomes
from .gaussian import scheme_reason
from .quadrature import leave_one_out_zetas, mean_and_variance, u_statistic_variance
from .registry import Exact, register_exact


def indecater_terms(problem: Problem, theta: float, where: Latent) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, g(b)) over the outcomes b."""
    b, prob, _ = outcomes(where)
    if not where.bernoulli:
        p = prob  # one categorical choice: the one-hot outcomes are its K vertices
        d_p = p * (where.d_logits - p @ where.d_logits)
        return prob, np.full(len(prob), cost_of(problem, theta, where, b) @ d_p)
    p = _sigmoid(where.logits)
    d_mean = p * (1.0 - p) * where.d_logits
    g = np.zeros(len(b))
    for d in range(b.shape[1]):
        one, zero = b.copy(), b.copy()
        one[:, d], zero[:, d] = 1.0, 0.0
        g += (cost_of(problem, theta, where, one) - cost_of(problem, theta, where, zero)) * d_mean[d]
    return prob, g


def mean_slope(problem: Problem, theta: float, where: Latent) -> np.ndarray:
    """∇_x f at x = μ = σ(α), [D]."""
    mu = torch.as_tensor(_sigmoid(where.logits), dtype=torch.float64).requires_grad_(True)
    x = mu[:1] if where.scalar else mu[None, :]
    (slope,) = torch.autograd.grad(problem.cost(x, torch.full((1,), float(theta), dtype=torch.float64)).sum(), mu)
    return slope.numpy()


@register_exact("indecater", *DISCRETE_FAMILIES)
def indecater_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    mean, var = mean_and_variance(*indecater_terms(problem, float(theta), latent(problem, float(theta))))
    return Exact(mean, var / n_samples)


@register_exact("double_cv", *BERNOULLI_FAMILIES)
def double_cv_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    where = latent(problem, float(theta))
    b, prob, score = outcomes(where)
    slope = mean_slope(problem, float(theta), where)
    residual = cost_of(problem, float(theta), where, b) - b @ slope
    p = _sigmoid(where.logits)
    control_mean = float(slope @ (p * (1.0 - p) * where.d_logits))
    mean, zeta1, zeta2 = leave_one_out_zetas(prob, residual, score, np.zeros_like(residual))
    return Exact(mean + control_mean, u_statistic_variance(zeta1, zeta2, n_samples))

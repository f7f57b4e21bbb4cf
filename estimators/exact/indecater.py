"""Exact moments of IndeCateR and double_cv on the discrete problems, by enumeration of outcomes.

IndeCateR's per-sample term is a deterministic function of the sample b, g(b) = Σ_d (f(b, b_d = 1) − f(b, b_d = 0))
∂_θ σ(α_d) (Bernoulli) or the constant Σ_k f(e_k) ∂_θ π_k (one categorical choice): a finite sum over outcomes,
variance / N. double_cv's leave-one-out slopes make it a U-statistic of degree 3 (2 at N = 2), whose kernel is
enumerated over triples of outcomes (Hoeffding's variance formula, quadrature.u_statistic_moments).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..core.estimator import Method
from ..core.problem import Problem
from ..methods.double_cv import fitted_alpha
from .discrete import BERNOULLI_FAMILIES, DISCRETE_FAMILIES, Latent, _sigmoid, cost_of, latent, outcomes
from .gaussian import scheme_reason
from .quadrature import mean_and_variance, u_statistic_moments
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


def outcome_slopes(problem: Problem, theta: float, where: Latent, b: np.ndarray) -> np.ndarray:
    """∇_x f at each outcome b (rows of [n, D]), as autograd sees the cost at the discrete samples."""
    x = torch.as_tensor(b, dtype=torch.float64).requires_grad_(True)
    inputs = x[:, :1] if where.scalar else x[:, None, :]
    (slope,) = torch.autograd.grad(problem.cost(inputs, torch.full((1,), float(theta), dtype=torch.float64)).sum(), x)
    return slope.numpy()


def double_cv_kernel(problem: Problem, theta: float, where: Latent, alpha: float, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(outcome probabilities, the symmetric kernel of degree min(N, 3)) of double_cv as a U-statistic.

    Over ordered distinct indices, ĝ = mean_a φ1(a) + mean_{a≠b} φ2(a, b) + mean_{a,b,c distinct} φ3(a, b, c) with
    s the score, c = x − μ, g = ∇f(x), v = ∂_θ μ: φ1(a) = f_a s_a − α g_aᵀv, φ2(a, b) = α g_bᵀc_a s_a − f_b s_a −
    α/(N − 1) g_aᵀc_b s_a (the other sample b in a's slope, in a's baseline, and a's slope in b's baseline term), and
    φ3(a, b, c) = −α (N − 2)/(N − 1) g_cᵀc_b s_a (a third sample's slope in b's baseline term)."""
    b, prob, score = outcomes(where)
    n = n_samples
    f = cost_of(problem, theta, where, b)
    g = outcome_slopes(problem, theta, where, b)
    mu = _sigmoid(where.logits)
    centred = b - mu
    d_mean = mu * (1.0 - mu) * where.d_logits
    phi1 = f * score - alpha * (g @ d_mean)
    slope_at = g @ centred.T  # [slope's outcome, centred's outcome]: g_iᵀ c_j
    phi2 = (alpha * slope_at.T - f[None, :] - alpha / (n - 1) * slope_at) * score[:, None]  # [a, b]
    pair = 0.5 * (phi2 + phi2.T)
    if n == 2:
        return prob, 0.5 * (phi1[:, None] + phi1[None, :]) + pair
    phi3 = -alpha * (n - 2) / (n - 1) * score[:, None, None] * slope_at.T[None, :, :]  # [a, b, c]: g_cᵀc_b s_a
    triple = sum(np.transpose(phi3, order) for order in itertools.permutations(range(3))) / 6.0
    pairs = (pair[:, :, None] + pair[:, None, :] + pair[None, :, :]) / 3.0
    singles = (phi1[:, None, None] + phi1[None, :, None] + phi1[None, None, :]) / 3.0
    return prob, singles + pairs + triple


@register_exact("indecater", *DISCRETE_FAMILIES)
def indecater_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    mean, var = mean_and_variance(*indecater_terms(problem, float(theta), latent(problem, float(theta))))
    return Exact(mean, var / n_samples)


def double_cv_moments(problem: Problem, theta: float, alpha: float, n_samples: int) -> tuple[float, float]:
    """Exact (mean, variance) of double_cv's estimate at a fixed weight α."""
    prob, kernel = double_cv_kernel(problem, float(theta), latent(problem, float(theta)), alpha, n_samples)
    return u_statistic_moments(prob, kernel, n_samples)


def optimal_alpha(problem: Problem, theta: float, n_samples: int) -> float:
    """The α minimising the estimate's variance (so its second moment, the mean being the gradient for every α): ĝ is
    affine in α, its variance the quadratic through α = −1, 0, 1. The limit of the estimator's pilot fit as the pilot
    grows; the registered exact moments are at the fitted α̂ itself (``double_cv_exact``)."""
    below, at_zero, above = (double_cv_moments(problem, theta, a, n_samples)[1] for a in (-1.0, 0.0, 1.0))
    curvature, slope = 0.5 * (above + below) - at_zero, 0.5 * (above - below)
    return -slope / (2.0 * curvature) if curvature > 0 else 0.0


@register_exact("double_cv", *BERNOULLI_FAMILIES)
def double_cv_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """At the weight α̂ the estimator itself runs at: its pilot fit (``fitted_alpha``, seeded per cell and the same
    in every dtype), not the variance-optimal α*: α̂ − α* is the pilot's noise (0.11% of variance at bernoulli_toy
    t = 0.45, θ = 0, N = 4, pilot 1000), and these are the moments the cell measures. α = 0 (RLOO) at pilot = 0."""
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    pilot = int(dict(method.params).get("pilot", 1000))
    alpha = fitted_alpha(problem, torch.tensor(float(theta), dtype=torch.float64), n_samples, pilot)
    return Exact(*double_cv_moments(problem, float(theta), alpha, n_samples))

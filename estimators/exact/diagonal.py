"""Exact moments on the diagonal Gaussians (diag_gaussian_sum, diag_gaussian_quartic): x_d = m_d + σε_d in D
dimensions, θ = m_1, f = Σ_d g(x_d). Every estimator but the score function's sees coordinate 1 alone; the
score function carries R = Σ_{d>1} g(x_d), independent of ε_1, whose mean and variance enter in closed form
through (D − 1) and the 1-D moments of g, so the cost of a cell does not grow with D. Formulas: docs/math.md.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..core.estimator import Method
from ..core.problem import Problem
from .gaussian import Location, measure_valued_moments, scheme_reason
from .quadrature import leave_one_out_zetas, mean_and_variance, standard_normal_rule, u_statistic_variance
from .registry import Exact, Keyed, keyed, register_exact

DIAGONAL_FAMILIES = ("diag_gaussian_sum", "diag_gaussian_quartic")


def coordinate_cost(problem: Problem):
    """g and g′ per node: the problem's cost, which sums over the last dimension, on one coordinate."""

    def terms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)
        g = problem.cost(xs[None, :, None], torch.zeros(1, dtype=torch.float64))
        (slope,) = torch.autograd.grad(g.sum(), xs)
        return g.detach().numpy().reshape(-1), slope.numpy(), np.zeros_like(x, dtype=np.float64)

    return terms


@lru_cache(maxsize=4096)
def _moments(problem: Keyed, estimator: str, theta: float) -> tuple[float, ...]:
    """(mean, per-sample variance), or RLOO's (mean, ζ1, ζ2)."""
    params = problem.problem.params
    others, mu, sigma = int(params["dim"]) - 1, float(params["mu"]), float(params["sigma"])
    terms = coordinate_cost(problem.problem)
    eps, weights = standard_normal_rule()
    g1, slope1, _ = terms(theta + sigma * eps)
    g_rest, _, _ = terms(mu + sigma * eps)
    mean_g, var_g = mean_and_variance(weights, g_rest)
    score = eps / sigma
    if estimator == "pathwise":
        return mean_and_variance(weights, slope1)
    if estimator == "measure_valued":
        return measure_valued_moments(problem.problem, Location(theta, sigma, 1.0, 0.0), terms)
    if estimator == "score_function":
        # ĝ = (g(x_1) + R) ε_1/σ with R independent of ε_1: E[ĝ²] = (E[g₁²ε²] + 2 E[g₁ε²] E R + E R²)/σ².
        mean = float(np.sum(weights * g1 * score))
        rest_mean, rest_square = others * mean_g, others * var_g + (others * mean_g) ** 2
        second = float(np.sum(weights * (g1**2 + 2 * g1 * rest_mean) * eps**2)) + rest_square
        return mean, second / sigma**2 - mean**2
    if estimator == "score_function_loo":
        # R's centred part adds (D − 1) Var g · E[s²] / 4 to ζ1 and ¼ E[ΔR²] E[Δs²] = (D − 1) Var g / σ² to ζ2.
        mean, zeta1, zeta2 = leave_one_out_zetas(weights, g1, score, np.zeros_like(g1))
        return mean, zeta1 + 0.25 * others * var_g / sigma**2, zeta2 + others * var_g / sigma**2
    raise ValueError(estimator)


@register_exact("naive", *DIAGONAL_FAMILIES)
@register_exact("score_function", *DIAGONAL_FAMILIES)
@register_exact("score_function_loo", *DIAGONAL_FAMILIES)
@register_exact("pathwise", *DIAGONAL_FAMILIES)
@register_exact("measure_valued", *DIAGONAL_FAMILIES)
@register_exact("finite_difference", *DIAGONAL_FAMILIES)
def diagonal_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    key, theta = keyed(problem), float(theta)
    if method.estimator == "naive":
        return Exact(0.0, 0.0)  # f does not depend on θ and .sample() passes no gradient
    if method.estimator == "finite_difference":
        # The common ε cancels every coordinate but the first exactly, so the 1-D difference of g is the term.
        sigma = float(problem.params["sigma"])
        eps, weights = standard_normal_rule()
        step = float(dict(method.params)["step"])
        g = coordinate_cost(problem)
        values = (g(theta + step + sigma * eps)[0] - g(theta - step + sigma * eps)[0]) / (2 * step)
        mean, var = mean_and_variance(weights, values)
        return Exact(mean, var / n_samples)
    if method.estimator == "score_function_loo":
        mean, zeta1, zeta2 = _moments(key, method.estimator, theta)
        return Exact(mean, u_statistic_variance(zeta1, zeta2, n_samples))
    mean, var = _moments(key, method.estimator, theta)
    return Exact(mean, var / n_samples)

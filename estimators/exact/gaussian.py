"""Exact moments on scalar Gaussian problems x = μ(θ) + σ(θ) ε (the seed problems and Mohamed et al.'s test costs):
every estimator's per-sample term is a function of its own noise, integrated by Gauss–Hermite (ε), a
Rayleigh rule (the measure-valued mean pair's Weibull draw) or Maxwell × uniform (its scale pair).

The cost and its derivatives are the problem's own, through torch autograd in float64 on the quadrature nodes,
so the moments describe what the estimators compute. Formulas: docs/math.md, "Exact variances".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from ..core.estimator import Method
from ..core.problem import Problem
from .quadrature import (
    double_sided_maxwell_rule,
    leave_one_out_zetas,
    mean_and_variance,
    rayleigh_rule,
    standard_normal_rule,
    u_statistic_variance,
    uniform_rule,
)
from .registry import Exact, Keyed, keyed, register_exact

SCALAR_GAUSSIAN_FAMILIES = ("seed_fixed", "seed_dependent", "gaussian_quadratic", "gaussian_exp", "gaussian_cos")
GAUSSIAN_ESTIMATORS = ("naive", "score_function", "score_function_loo", "pathwise", "measure_valued", "finite_difference")
# Schemes whose effect on the N-sample variance has a closed form here.
EXACT_SCHEMES = ("none", "antithetic", "delta_cv")
SCHEME_REASONS = {
    "qmc": "randomised QMC couples the N samples through one scrambled Sobol set: its variance has no closed form",
    "optimal_baseline": "the optimal baseline is a ratio of sums over the other N − 1 samples: its variance has no "
                        "closed form",
}  # fmt: skip


@dataclass(frozen=True)
class Location:
    """μ, σ of the problem's Gaussian at θ and their derivatives in θ."""

    mu: float
    sigma: float
    d_mu: float
    d_sigma: float


def _as_theta(theta: float, count: int = 1) -> torch.Tensor:
    return torch.full((count,), float(theta), dtype=torch.float64)


def location(problem: Problem, theta: float) -> Location:
    t = _as_theta(theta).requires_grad_(True)
    dist = problem.distribution(t)
    values, derivatives = [], []
    for parameter in (dist.loc, dist.scale):
        parameter = parameter.expand(t.shape)
        values.append(float(parameter.detach()[0]))
        if parameter.requires_grad:
            (d,) = torch.autograd.grad(parameter.sum(), t, allow_unused=True)
            derivatives.append(0.0 if d is None else float(d[0]))
        else:
            derivatives.append(0.0)
    return Location(values[0], values[1], derivatives[0], derivatives[1])


# A cost on nodes: x [n] (numpy) -> (f, ∂f/∂x, ∂f/∂θ) at one θ, each [n].
CostTerms = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def cost_terms(problem: Problem, theta: float) -> CostTerms:
    """f, ∂_x f and ∂_θ f of the problem's cost at θ, per node: one replicate per node (θ copied per node, so one
    backward pass gives each node's own derivatives)."""

    def terms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs = torch.as_tensor(x, dtype=torch.float64)[None, :].clone().requires_grad_(True)
        t = _as_theta(theta, xs.shape[1]).requires_grad_(True)
        f = problem.cost(xs, t)
        d_x, d_theta = (torch.autograd.grad(f.sum(), (xs, t), allow_unused=True) if f.requires_grad else (None, None))
        zero = np.zeros_like(x, dtype=np.float64)
        return (f.detach()[0].numpy(), zero if d_x is None else d_x[0].numpy(), zero if d_theta is None else d_theta.numpy())

    return terms


def taylor_control(problem: Problem, theta: float, centre: float) -> tuple[float, float, float]:
    """(f(c), f'(c), f''(c)) of the cost in x at θ: the delta method's coefficients."""
    c = torch.tensor([centre], dtype=torch.float64, requires_grad=True)
    f = problem.cost(c[None, :], _as_theta(theta))
    (first,) = torch.autograd.grad(f.sum(), c, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), c, allow_unused=True) if first.requires_grad else (None,)
    return float(f.detach()), float(first.detach()), 0.0 if second is None else float(second)


def _residual(terms: CostTerms, control: tuple[float, float, float], centre: float) -> CostTerms:
    """The cost f − h, h(x) = f(c) + f'(c)(x − c) + ½f''(c)(x − c)² with coefficients constant in θ."""
    value, first, second = control

    def residual(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f, d_x, d_theta = terms(x)
        y = x - centre
        return f - (value + first * y + 0.5 * second * y**2), d_x - (first + second * y), d_theta

    return residual


def _costs(problem: Problem, theta: float, scheme: str) -> tuple[Location, CostTerms, float]:
    """(μ, σ and derivatives; the cost the estimator runs on; what the scheme adds to every estimate)."""
    where, terms = location(problem, theta), cost_terms(problem, theta)
    if scheme != "delta_cv":
        return where, terms, 0.0
    control = taylor_control(problem, theta, where.mu)
    # ∂_θ E[h] with h's coefficients held: E[h] = f(c) + f'(c)(μ − c) + ½f''(c)(σ² + (μ − c)²), at c = μ.
    shift = control[1] * where.d_mu + control[2] * where.sigma * where.d_sigma
    return where, _residual(terms, control, where.mu), shift


def per_sample_terms(estimator: str, where: Location, terms: CostTerms, eps: np.ndarray) -> np.ndarray:
    """The per-sample term of naive, score_function or pathwise at the standard normal noise ε."""
    f, d_x, d_theta = terms(where.mu + where.sigma * eps)
    if estimator == "naive":
        return d_theta
    if estimator == "score_function":
        return f * score(where, eps) + d_theta
    if estimator == "pathwise":
        return d_x * (where.d_mu + where.d_sigma * eps) + d_theta
    raise ValueError(f"no per-sample term for {estimator}")


def score(where: Location, eps: np.ndarray) -> np.ndarray:
    """∂_θ log N(x; μ, σ²) at x = μ + σε: ε/σ ∂μ + (ε² − 1)/σ ∂σ."""
    return eps / where.sigma * where.d_mu + (eps**2 - 1.0) / where.sigma * where.d_sigma


def finite_difference_terms(problem: Problem, theta: float, step: float, eps: np.ndarray) -> np.ndarray:
    """(f_{θ+h}(m_{θ+h} + s_{θ+h} ε) − f_{θ−h}(m_{θ−h} + s_{θ−h} ε)) / 2h, one ε for both sides."""
    sides = []
    for end in (theta + step, theta - step):
        where = location(problem, end)
        sides.append(cost_terms(problem, end)(where.mu + where.sigma * eps)[0])
    return (sides[0] - sides[1]) / (2.0 * step)


def measure_valued_moments(problem: Problem, where: Location, terms: CostTerms) -> tuple[float, float]:
    """Mean and per-sample variance of the coupled measure-valued estimator: its parts use independent noise
    (the Weibull pair, the Maxwell/uniform pair, the ∂f draw), so their means and variances add."""
    mean, var = 0.0, 0.0
    mu, sigma = where.mu, where.sigma
    if where.d_mu != 0.0:
        w, weights = rayleigh_rule()
        pair = terms(mu + sigma * w)[0] - terms(mu - sigma * w)[0]
        m, v = mean_and_variance(weights, pair * where.d_mu / (sigma * math.sqrt(2.0 * math.pi)))
        mean, var = mean + m, var + v
    if where.d_sigma != 0.0:
        m_nodes, m_weights = double_sided_maxwell_rule()
        u_nodes, u_weights = uniform_rule()
        plus = terms(mu + sigma * m_nodes)[0][:, None]
        minus = terms((mu + sigma * np.outer(m_nodes, u_nodes)).ravel())[0].reshape(len(m_nodes), len(u_nodes))
        m, v = mean_and_variance(np.outer(m_weights, u_weights), (plus - minus) * where.d_sigma / sigma)
        mean, var = mean + m, var + v
    if problem.cost_depends_on_theta:
        eps, weights = standard_normal_rule()
        m, v = mean_and_variance(weights, terms(mu + sigma * eps)[2])
        mean, var = mean + m, var + v
    return mean, var


@lru_cache(maxsize=4096)
def _per_sample(problem: Keyed, method: Method, theta: float) -> tuple[float, float]:
    """Mean and variance of one sample's term (independent samples: the N-sample variance is this over N)."""
    where, terms, shift = _costs(problem.problem, theta, method.scheme)
    if method.estimator == "measure_valued":
        mean, var = measure_valued_moments(problem.problem, where, terms)
        return mean + shift, var
    eps, weights = standard_normal_rule()
    if method.estimator == "finite_difference":
        values = finite_difference_terms(problem.problem, theta, dict(method.params)["step"], eps)
    else:
        values = per_sample_terms(method.estimator, where, terms, eps)
    mean, var = mean_and_variance(weights, values)
    return mean + shift, var


@lru_cache(maxsize=4096)
def _antithetic_pair(problem: Keyed, method: Method, theta: float) -> tuple[float, float]:
    """Mean and variance of one antithetic pair's average ½(g(ε) + g(−ε)); the estimate averages N/2 such pairs."""
    where, terms, _ = _costs(problem.problem, theta, "none")
    eps, weights = standard_normal_rule()
    values = per_sample_terms(method.estimator, where, terms, eps)
    return mean_and_variance(weights, 0.5 * (values + values[::-1]))  # the nodes are symmetric: reversed is −ε


@lru_cache(maxsize=4096)
def _leave_one_out(problem: Keyed, scheme: str, theta: float) -> tuple[float, float, float]:
    where, terms, shift = _costs(problem.problem, theta, scheme)
    eps, weights = standard_normal_rule()
    f, _, d_theta = terms(where.mu + where.sigma * eps)
    mean, zeta1, zeta2 = leave_one_out_zetas(weights, f, score(where, eps), d_theta)
    return mean + shift, zeta1, zeta2


def scheme_reason(scheme: str, allowed: tuple[str, ...] = EXACT_SCHEMES) -> str | None:
    if scheme in allowed:
        return None
    return SCHEME_REASONS.get(scheme, f"no exact variance is derived for the {scheme} scheme")


@register_exact("naive", *SCALAR_GAUSSIAN_FAMILIES)
@register_exact("score_function", *SCALAR_GAUSSIAN_FAMILIES)
@register_exact("pathwise", *SCALAR_GAUSSIAN_FAMILIES)
@register_exact("measure_valued", *SCALAR_GAUSSIAN_FAMILIES)
@register_exact("finite_difference", *SCALAR_GAUSSIAN_FAMILIES)
@register_exact("score_function_loo", *SCALAR_GAUSSIAN_FAMILIES)
def scalar_gaussian_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """Exact moments of the basic estimators and the finite difference on a scalar Gaussian problem."""
    reason = scheme_reason(method.scheme)
    if reason:
        return reason
    key, theta = keyed(problem), float(theta)
    if method.estimator == "score_function_loo":
        mean, zeta1, zeta2 = _leave_one_out(key, method.scheme, theta)
        return Exact(mean, u_statistic_variance(zeta1, zeta2, n_samples))
    if method.scheme == "antithetic":
        mean, var = _antithetic_pair(key, method, theta)
        return Exact(mean, var / (n_samples // 2))
    mean, var = _per_sample(key, method, theta)
    return Exact(mean, var / n_samples)

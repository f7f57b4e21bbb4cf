"""Quadrature rules and the moment formulas every family shares: weighted mean and variance on a rule's nodes,
the variance of an N-sample mean of independent terms, of antithetic pairs, and of RLOO's degree-2 U-statistic."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Gauss–Hermite nodes for x ~ N(0, 1): exact for polynomials of degree < 2·HERMITE_NODES, and the smooth costs
# here (exp, cos of moderate frequency) converge to float64 well before that.
HERMITE_NODES = 200
RAYLEIGH_NODES = 400
LEGENDRE_NODES = 64


@lru_cache(maxsize=None)
def legendre_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre on [−1, 1], computed once per n (numpy solves an eigenproblem each time)."""
    return np.polynomial.legendre.leggauss(n)


@lru_cache(maxsize=None)
def standard_normal_rule(n: int = HERMITE_NODES) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, weights) with Σ w g(ε) ≈ E[g(ε)], ε ~ N(0, 1); nodes symmetric: reversed nodes are −nodes."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=None)
def rayleigh_rule(n: int = RAYLEIGH_NODES, upper: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """E[g(W)], W ~ Weibull(√2, 2): Gauss–Legendre on [0, upper] against the density w e^{−w²/2}, which is smooth
    on the half-line (no √ at the origin), so any smooth g converges geometrically; the mass beyond 40 is e^{−800}."""
    nodes, weights = legendre_rule(n)
    w = 0.5 * upper * (nodes + 1.0)
    return w, 0.5 * upper * weights * w * np.exp(-0.5 * w**2)


@lru_cache(maxsize=None)
def double_sided_maxwell_rule(n: int = HERMITE_NODES) -> tuple[np.ndarray, np.ndarray]:
    """E[g(M)], M double-sided Maxwell (density m² e^{−m²/2}/√(2π)): the normal rule with weights times m²."""
    nodes, weights = standard_normal_rule(n)
    return nodes, weights * nodes**2


@lru_cache(maxsize=None)
def uniform_rule(n: int = LEGENDRE_NODES, low: float = 0.0, high: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """E[g(U)], U ~ Uniform(low, high), Gauss–Legendre: weights sum to 1."""
    nodes, weights = legendre_rule(n)
    return low + 0.5 * (high - low) * (nodes + 1.0), 0.5 * weights


def mean_and_variance(weights: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """E[g] and Var[g] = E[(g − E g)²] on a rule (centred, so a large mean does not cancel the variance away)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf/nan, which exact_moments refuses
        total = float(np.sum(weights))
        mean = float(np.sum(weights * values)) / total
        return mean, float(np.sum(weights * (values - mean) ** 2)) / total


def leave_one_out_zetas(weights: np.ndarray, f: np.ndarray, score: np.ndarray, d_cost: np.ndarray) -> tuple[float, float, float]:
    """(mean, ζ1, ζ2) of RLOO as a U-statistic of degree 2 over one sample's nodes (quadrature or enumeration).

    RLOO's estimate (1/N) Σ_n [(f_n − b_n) s_n + d_n], b_n the mean of the other f, equals the average over pairs
    a ≠ b of h(a, b) = ½(f_a − f_b)(s_a − s_b) + ½(d_a + d_b). ζ1 = Var(E[h | a]) = ¼ Var((f − L) s + d) (E s = 0)
    and ζ2 = Var(h), the latter on the product rule of two independent samples.
    """
    total = float(np.sum(weights))
    w = weights / total
    level = float(np.sum(w * f))
    mean, one = mean_and_variance(w, (f - level) * score + d_cost)
    pair = 0.5 * (f[:, None] - f[None, :]) * (score[:, None] - score[None, :]) + 0.5 * (d_cost[:, None] + d_cost[None, :])
    _, two = mean_and_variance(np.outer(w, w), pair)
    return mean, 0.25 * one, two


def u_statistic_variance(zeta1: float, zeta2: float, n_samples: int) -> float:
    """Var of a degree-2 U-statistic of N samples: [2(N − 2) ζ1 + ζ2] / C(N, 2)."""
    n = n_samples
    return 4.0 * (n - 2) / (n * (n - 1)) * zeta1 + 2.0 / (n * (n - 1)) * zeta2


def u_statistic_moments(weights: np.ndarray, kernel: np.ndarray, n_samples: int) -> tuple[float, float]:
    """Mean and variance of a U-statistic of degree m = kernel.ndim over N >= m independent samples, from its
    symmetric kernel on the nodes of one sample (weights summing to 1): Var = Σ_c C(m, c) C(N − m, m − c) / C(N, m) ζ_c,
    ζ_c = Var E[h | X_1..X_c] (Hoeffding 1948)."""
    m, n = kernel.ndim, n_samples
    mean = float(np.sum(kernel * _product_weights(weights, m)))
    var = 0.0
    for c in range(1, m + 1):
        conditional = kernel
        for _ in range(m - c):  # average out the trailing m − c samples
            conditional = conditional @ weights
        zeta = float(np.sum(_product_weights(weights, c) * (conditional - mean) ** 2))
        var += math.comb(m, c) * math.comb(n - m, m - c) / math.comb(n, m) * zeta
    return mean, var


def _product_weights(weights: np.ndarray, m: int) -> np.ndarray:
    product = np.ones(())
    for _ in range(m):
        product = np.multiply.outer(product, weights)
    return product

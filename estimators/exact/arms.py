"""Exact moments of ARMS on the Bernoulli problems, for costs affine in b (every cost on one Bernoulli is; so is
bernoulli_multi's, since b² = b).

With f = c + Σ_e a_e b_e, coordinate d's score sum is Σ_i (f_i − f̄)(b_{i,d} − p_d) = a_d T_d + Σ_{e≠d} a_e U_{ed},
T_d = K_d(N − K_d)/N (K_d the ones in column d of the N × D sample matrix) and U_{ed} = Σ_i b_{i,e} b_{i,d} − K_e K_d/N,
symmetric in (e, d). The columns are independent copula draws, each exchangeable, so given column d,
U_{ed} = Σ_i (b_{i,e} − p_e)(b_{i,d} − b̄_d) has mean 0 and second moment (π_e − C_e) T_d: every cross covariance
vanishes and, with w_d the ARMS coefficient and s_d = ∂α_d/∂θ,

    Var ĝ = Σ_d (s_d w_d a_d)² Var T_d + Σ_{e<d} (s_d w_d a_e + s_e w_e a_d)² (N − 1)(π_e − C_e)(π_d − C_d).

T_d is symmetric in K ↔ N − K, so it is a function of R, the count of rare outcomes: R counts the spacings d_i
of a flat Dirichlet above 1 − π^{1/(N−1)}, whose factorial moments are E[R_(m)] = N_(m) (1 − m(1 − π^{1/(N−1)}))_+^{N−1}
(m spacings together exceed x with probability (1 − m x)_+^{N−1}). Derivation: docs/math.md.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.estimator import Method
from ..core.problem import Problem
from .discrete import BERNOULLI_FAMILIES, _sigmoid, cost_of, latent, outcomes
from .gaussian import scheme_reason
from .registry import Exact, register_exact


def rare_count_moments(pi: float, n_samples: int) -> np.ndarray:
    """E[R^k], k = 0..4, for R = #{i: u_i < π} under the N-dimensional Dirichlet copula (π <= ½)."""
    n = n_samples
    spacing = -math.expm1(math.log(pi) / (n - 1))  # 1 − π^{1/(N−1)}
    falling = [math.perm(n, m) * max(0.0, 1.0 - m * spacing) ** (n - 1) for m in range(5)]  # E[R_(m)]
    # Raw moments from factorial ones (Stirling numbers of the second kind): all terms positive, no cancellation.
    f0, f1, f2, f3, f4 = falling
    return np.array([f0, f1, f2 + f1, f3 + 3 * f2 + f1, f4 + 6 * f3 + 7 * f2 + f1])


def score_sum_moments(pi: float, n_samples: int) -> tuple[float, float]:
    """(E T, Var T) for T = R(N − R)/N, the within-column score sum per unit slope."""
    n = n_samples
    m = rare_count_moments(pi, n)
    mean = (n * m[1] - m[2]) / n
    second = (n * n * m[2] - 2 * n * m[3] + m[4]) / (n * n)
    return mean, second - mean**2


def affine_slopes(problem: Problem, theta: float, where) -> np.ndarray | None:
    """a with f(b) = c + aᵀb on every outcome b ∈ {0, 1}^D, or None when f is not affine in b."""
    b, _, _ = outcomes(where)
    f = cost_of(problem, theta, where, b)
    design = np.column_stack((np.ones(len(b)), b))
    coefficients, *_ = np.linalg.lstsq(design, f, rcond=None)
    scale = max(1.0, float(np.max(np.abs(f))))
    if np.max(np.abs(design @ coefficients - f)) > 1e-12 * scale:
        return None
    return coefficients[1:]


@register_exact("arms", *BERNOULLI_FAMILIES)
def arms_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    where = latent(problem, float(theta))
    slopes = affine_slopes(problem, float(theta), where)
    if slopes is None:
        return "ARMS's exact variance is derived for costs affine in b; this cost is not"
    n = n_samples
    pi = _sigmoid(-np.abs(where.logits))
    diagonal = np.maximum(2 * pi ** (1.0 / (n - 1)) - 1, 0.0) ** (n - 1)  # C(π, π)
    gap = pi - diagonal
    weight = pi * (1 - pi) / ((n - 1) * gap)
    moments = np.array([score_sum_moments(float(q), n) for q in pi])  # [D, (E T, Var T)]
    own = where.d_logits * weight * slopes
    mean = float(np.sum(own * moments[:, 0]))
    var = float(np.sum(own**2 * moments[:, 1]))
    dims = len(pi)
    for e in range(dims):
        for d in range(e + 1, dims):
            cross = where.d_logits[d] * weight[d] * slopes[e] + where.d_logits[e] * weight[e] * slopes[d]
            var += cross**2 * (n - 1) * gap[e] * gap[d]
    return Exact(mean, float(var))

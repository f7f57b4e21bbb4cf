"""Exact moments of Gumbel-Rao on the discrete problems: enumeration of the hard sample D plus quadrature over the
noise given D.

Given D = b the estimate is a(b)·(1/K) Σ_k h(z_k) with z_k iid from p(z | b): a(b) the cost's slope at b and h the
relaxation's θ-derivative. So with m_b = E[h | b] and q_b = E[h² | b] (one quadrature per outcome),
E[ĝ | b] = a(b) m_b and E[ĝ² | b] = a(b)² (m_b² + (q_b − m_b²)/K), and the moments follow by summing over b.
- Bernoulli coordinates with a separable cost (the Bernoulli families: ∂_d f depends on D_d alone): ĝ is a sum of
  independent per-coordinate terms, each with two outcomes and Legendre in u on the piece of (0, 1) where D_d = b
  (the nodes of the straight-through rule in discrete.py, split at σ(−α)).
- One K-way categorical: the Gumbel differences from G_b on the box argmax = b (discrete.difference_rule), the
  slope ∇f(e_b) held at the vertex b, so nothing jumps inside a box.
Per-sample moments, then / N (the samples are independent). The mean is straight-through's for every K.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..core.estimator import Method
from ..core.problem import Problem
from .discrete import (DIFFERENCE_NODES, DISCRETE_FAMILIES, _nodes, _pieces, _sigmoid, coordinate_slopes,
                       difference_rule, latent, simplex_slopes, softmax_columns, with_reference)  # fmt: skip
from .gaussian import scheme_reason
from .registry import Exact, Keyed, keyed, register_exact


def conditional_moments(weights: np.ndarray, slope: np.ndarray, h: np.ndarray, samples: int) -> tuple[float, float]:
    """(E[ĝ 1{D = b}], E[ĝ² 1{D = b}]) for one outcome b: rule weights summing to P(D = b), the constant slope a(b)."""
    mass = float(np.sum(weights))
    if mass == 0.0:
        return 0.0, 0.0
    m, q = float(np.sum(weights * h)) / mass, float(np.sum(weights * h**2)) / mass
    return mass * slope * m, mass * slope**2 * (m**2 + (q - m**2) / samples)


@lru_cache(maxsize=4096)
def _bernoulli(problem: Keyed, temperature: float, samples: int, theta: float) -> tuple[float, float]:
    where = latent(problem.problem, theta)
    mean = var = 0.0
    for d, alpha in enumerate(where.logits):
        split = float(_sigmoid(-alpha))
        u, weights = _pieces(split)
        soft = _sigmoid((alpha + np.log(u) - np.log1p(-u)) / temperature)
        h = soft * (1.0 - soft) / temperature * where.d_logits[d]
        hard = (u > split).astype(float)  # D_d = 1 on (σ(−α), 1)
        slopes = coordinate_slopes(problem.problem, theta, where, hard)[:, d]
        first = second = 0.0
        for b in (0.0, 1.0):
            on = hard == b
            if on.any():  # the slope is constant on the piece: its first node's
                m1, m2 = conditional_moments(weights[on], float(slopes[on][0]), h[on], samples)
                first, second = first + m1, second + m2
        mean, var = mean + first, var + second - first**2
    return mean, var


@lru_cache(maxsize=4096)
def _categorical(problem: Keyed, temperature: float, samples: int, theta: float,
                 nodes: int = DIFFERENCE_NODES) -> tuple[float, float]:  # fmt: skip
    where = latent(problem.problem, theta)
    k = len(where.logits)
    log_p = where.logits - np.logaddexp.reduce(where.logits)
    a = where.d_logits[:, None]
    first = second = 0.0
    for b in range(k):
        uppers = tuple(log_p[b] - log_p[j] for j in range(k) if j != b)
        d, weights = difference_rule(uppers, _nodes(temperature, nodes))
        soft = softmax_columns((log_p[:, None] + with_reference(d, b)) / temperature)
        slope = simplex_slopes(problem.problem, theta, np.eye(k)[b : b + 1]).T  # [K, 1]: ∇f at the vertex b
        h = np.sum(slope * soft * (a - np.sum(soft * a, axis=0)), axis=0) / temperature
        m1, m2 = conditional_moments(weights, 1.0, h, samples)
        first, second = first + m1, second + m2
    return first, second - first**2


@register_exact("gumbel_rao", *DISCRETE_FAMILIES)
def gumbel_rao_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    options = dict(method.params)
    temperature, samples = float(options.get("temperature", 0.5)), int(options.get("samples", 10))
    if problem.name == "categorical_toy":
        mean, var = _categorical(keyed(problem), temperature, samples, float(theta))
    else:
        mean, var = _bernoulli(keyed(problem), temperature, samples, float(theta))
    return Exact(mean, var / n_samples)

"""Exact moments of ReinMax on the discrete problems (bernoulli_toy, bernoulli_multi, categorical_toy), by
enumeration: given the hard sample D the estimate is deterministic, ĝ(D) = ∇f(D)ᵀ (2 J(π_m) − ½ J(π)) ∂α/∂θ with
π_m = ½(D + softmax(α/τ)) and J(p) = diag(p) − p pᵀ, so E ĝ = Σ_D p(D) ĝ(D) and likewise the variance. Per-sample
moments, then / N (the samples of an estimate are independent). Formulas: docs/math.md.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..core.estimator import Method
from ..core.problem import Problem
from ..methods.reinmax import DEFAULT_TEMPERATURE
from .discrete import DISCRETE_FAMILIES, Latent, _sigmoid, latent, outcomes
from .gaussian import scheme_reason
from .quadrature import mean_and_variance
from .registry import Exact, Keyed, keyed, register_exact


def outcome_slopes(problem: Problem, theta: float, where: Latent, x: np.ndarray) -> np.ndarray:
    """∂f/∂x at each outcome (rows of [n, D] or [n, K]), laid out as the estimators call the cost."""
    grid = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    inputs = grid[:, :1] if where.scalar else grid[:, None, :]
    f = problem.cost(inputs, torch.full((1,), float(theta), dtype=torch.float64))
    (slope,) = torch.autograd.grad(f.sum(), grid)
    return slope.numpy()


def softmax_jacobian_times(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """J(p) a = p ⊙ a − p (p · a), row by row of p [n, K]."""
    return p * a - p * np.sum(p * a, axis=-1, keepdims=True)


def reinmax_terms(problem: Problem, theta: float, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, ĝ) over every outcome of the hard sample."""
    where = latent(problem, theta)
    x, prob, _ = outcomes(where)
    slopes = outcome_slopes(problem, theta, where, x)
    if where.bernoulli:
        # A coordinate is the 2-way categorical (α, 0): the Jacobian's (x = 1, x = 1) entry is q(1 − q) at q.
        p, tempered = _sigmoid(where.logits), _sigmoid(where.logits / temperature)
        midpoint = 0.5 * (x + tempered)
        weight = 2.0 * midpoint * (1.0 - midpoint) - 0.5 * p * (1.0 - p)
        return prob, (slopes * weight) @ where.d_logits
    scaled = where.logits / temperature
    tempered = np.exp(scaled - np.logaddexp.reduce(scaled))
    midpoint = 0.5 * (x + tempered)
    d_relaxed = 2.0 * softmax_jacobian_times(midpoint, where.d_logits) - 0.5 * softmax_jacobian_times(prob[None, :], where.d_logits)
    return prob, np.sum(slopes * d_relaxed, axis=-1)


@lru_cache(maxsize=4096)
def _reinmax(problem: Keyed, temperature: float, theta: float) -> tuple[float, float]:
    return mean_and_variance(*reinmax_terms(problem.problem, theta, temperature))


@register_exact("reinmax", *DISCRETE_FAMILIES)
def reinmax_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """Exact moments of ReinMax on the discrete problems (independent samples: variance / N)."""
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    temperature = float(dict(method.params).get("temperature", DEFAULT_TEMPERATURE))
    mean, var = _reinmax(keyed(problem), temperature, float(theta))
    return Exact(mean, var / n_samples)

"""Exact moments on the discrete problems (bernoulli_toy, bernoulli_multi, categorical_toy): enumeration of the
outcomes for the score function, RLOO and naive; enumeration of the cells of the uniform noise u where ARM's and
DisARM's pairs are constant; Gauss–Legendre over u (and REBAR's conditional v) for the relaxations at fixed
temperature. Per-sample moments, then / N (the samples of an estimate are independent). Formulas: docs/math.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from ..core.estimator import Method
from ..core.problem import Problem
from .gaussian import scheme_reason
from .quadrature import legendre_rule, leave_one_out_zetas, mean_and_variance, u_statistic_variance
from .registry import Exact, Keyed, keyed, register_exact

DISCRETE_FAMILIES = ("bernoulli_toy", "bernoulli_multi", "categorical_toy")
BERNOULLI_FAMILIES = ("bernoulli_toy", "bernoulli_multi")
# Legendre nodes per piece of (0, 1) for the relaxations: the pieces split where the hard sample flips, so the
# integrands are smooth on each.
RELAXED_NODES = 256
REBAR_NODES = 128  # per piece and dimension of REBAR's (u, v) product rule


@dataclass(frozen=True)
class Latent:
    """The problem's latent at θ: Bernoulli logits α_d [D] (or categorical log-probabilities [K]) and ∂α/∂θ."""

    bernoulli: bool
    scalar: bool  # a plain Bernoulli: the problem's sample drops the coordinate dimension
    logits: np.ndarray
    d_logits: np.ndarray


def latent(problem: Problem, theta: float) -> Latent:
    t = torch.tensor([float(theta)], dtype=torch.float64, requires_grad=True)
    dist = problem.distribution(t)
    if isinstance(dist, Bernoulli):
        logits, bernoulli, scalar = dist.logits[..., None], True, True
    elif isinstance(dist, Independent) and isinstance(dist.base_dist, Bernoulli):
        logits, bernoulli, scalar = dist.base_dist.logits, True, False
    elif isinstance(dist, OneHotCategorical):
        logits, bernoulli, scalar = dist.logits, False, False
    else:
        raise ValueError(f"{problem.name}: not a Bernoulli or categorical latent")
    logits = logits.reshape(-1)
    rows = [torch.autograd.grad(value, t, retain_graph=True, allow_unused=True)[0] for value in logits]
    d_logits = np.array([0.0 if row is None else float(row[0]) for row in rows])
    return Latent(bernoulli, scalar, logits.detach().numpy(), d_logits)


def cost_of(problem: Problem, theta: float, where: Latent, outcomes: np.ndarray) -> np.ndarray:
    """f at each outcome (rows of [n, D] or [n, K]), as the estimators call the cost."""
    x = torch.as_tensor(outcomes, dtype=torch.float64)
    x = x[:, :1] if where.scalar else x[:, None, :]
    return problem.cost(x, torch.full((1,), float(theta), dtype=torch.float64)).detach().numpy().reshape(-1)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def outcomes(where: Latent) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outcomes [n, D or K], probabilities [n], scores ∂_θ log p [n])."""
    if where.bernoulli:
        b = np.array(list(itertools.product((0.0, 1.0), repeat=len(where.logits))))
        p = _sigmoid(where.logits)
        prob = np.prod(np.where(b == 1.0, p, 1.0 - p), axis=1)
        return b, prob, (b - p) @ where.d_logits
    p = np.exp(where.logits - np.logaddexp.reduce(where.logits))
    one_hot = np.eye(len(p))
    # ∂ log softmax(α)_k / ∂θ = ∂α_k/∂θ − Σ_j p_j ∂α_j/∂θ
    return one_hot, p, where.d_logits - p @ where.d_logits


@lru_cache(maxsize=4096)
def _enumerated(problem: Keyed, estimator: str, theta: float) -> tuple[float, ...]:
    """Score function: (mean, per-sample variance); RLOO: (mean, ζ1, ζ2); naive: (0, 0) (f does not depend on θ)."""
    where = latent(problem.problem, theta)
    b, prob, score = outcomes(where)
    f = cost_of(problem.problem, theta, where, b)
    if estimator == "score_function":
        return mean_and_variance(prob, f * score)
    return leave_one_out_zetas(prob, f, score, np.zeros_like(f))


def _interval_moments(low: float, high: float) -> tuple[float, float, float]:
    """(length, ∫(u − ½) du, ∫(u − ½)² du) over [low, high]."""
    a, b = low - 0.5, high - 0.5
    return high - low, (b**2 - a**2) / 2.0, (b**3 - a**3) / 3.0


def _cells(breaks: tuple[float, float]) -> list[tuple[float, float]]:
    edges = sorted((0.0, *breaks, 1.0))
    return [(lo, hi) for lo, hi in zip(edges, edges[1:]) if hi > lo]


@lru_cache(maxsize=4096)
def _arm_family(problem: Keyed, estimator: str, theta: float) -> tuple[float, float]:
    """ARM and DisARM: on each box of u-cells (per coordinate, between σ(±α)) both hard samples are constant, so
    ARM's term is W Σ_d c_d (u_d − ½) and DisARM's is constant; their moments over a box are products of 1-D
    interval moments."""
    where = latent(problem.problem, theta)
    p = _sigmoid(where.logits)
    cells = [_cells((1.0 - pd, pd)) for pd in p]
    boxes = list(itertools.product(*cells))
    centre = np.array([[0.5 * (lo + hi) for lo, hi in box] for box in boxes])  # [boxes, D]
    first = second = 0.0
    if estimator == "arm":
        plus, minus = (centre > 1.0 - p).astype(float), (centre < p).astype(float)
        weight = cost_of(problem.problem, theta, where, plus) - cost_of(problem.problem, theta, where, minus)
        for box, w in zip(boxes, weight):
            length, m1, m2 = map(np.array, zip(*(_interval_moments(lo, hi) for lo, hi in box)))
            volume, linear = np.prod(length), where.d_logits * m1 / length
            first += w * volume * linear.sum()
            second += w**2 * volume * (np.sum(where.d_logits**2 * m2 / length) + linear.sum() ** 2 - np.sum(linear**2))
        return float(first), float(second - first**2)
    b, b_anti = (centre < p).astype(float), (centre > 1.0 - p).astype(float)
    weight = 0.5 * (cost_of(problem.problem, theta, where, b) - cost_of(problem.problem, theta, where, b_anti))
    coefficient = ((1 - 2 * b_anti) * (b != b_anti) * _sigmoid(np.abs(where.logits))) @ where.d_logits
    volume = np.array([np.prod([hi - lo for lo, hi in box]) for box in boxes])
    return mean_and_variance(volume, weight * coefficient)


def _pieces(split: float, n: int = RELAXED_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Legendre nodes on (0, split) and (split, 1), weights summing to 1 (the uniform's measure)."""
    x, w = legendre_rule(n)
    nodes, weights = [], []
    for lo, hi in ((0.0, split), (split, 1.0)):
        nodes.append(lo + 0.5 * (hi - lo) * (x + 1.0))
        weights.append(0.5 * (hi - lo) * w)
    return np.concatenate(nodes), np.concatenate(weights)


def coordinate_slopes(problem: Problem, theta: float, where: Latent, x: np.ndarray) -> np.ndarray:
    """∂f/∂x_d at x_d = x (every coordinate set to the same node value), [len(x), D]: for the separable costs
    f = mean_d (x_d − t_d)² of the Bernoulli families each coordinate's slope depends on x_d alone."""
    grid = torch.as_tensor(np.repeat(x[:, None], len(where.logits), axis=1), dtype=torch.float64).requires_grad_(True)
    inputs = grid[:, :1] if where.scalar else grid[:, None, :]
    f = problem.cost(inputs, torch.zeros(1, dtype=torch.float64))
    (slope,) = torch.autograd.grad(f.sum(), grid)
    return slope.numpy()


@lru_cache(maxsize=4096)
def _relaxed(problem: Keyed, estimator: str, temperature: float, theta: float) -> tuple[float, float]:
    """Gumbel-softmax and straight-through on Bernoulli coordinates: ĝ = Σ_d ∂_d f(x_d) s_d(1 − s_d)/τ ∂α_d/∂θ,
    s_d = σ((α_d + logit u_d)/τ), x_d = s_d or 1[s_d > ½]: a sum of independent per-coordinate terms."""
    where = latent(problem.problem, theta)
    mean = var = 0.0
    for d, alpha in enumerate(where.logits):
        u, weights = _pieces(float(_sigmoid(-alpha)))
        soft = _sigmoid((alpha + np.log(u) - np.log1p(-u)) / temperature)
        x = soft if estimator == "gumbel_softmax" else (soft > 0.5).astype(float)
        slope = coordinate_slopes(problem.problem, theta, where, x)[:, d]
        m, v = mean_and_variance(weights, slope * soft * (1.0 - soft) / temperature * where.d_logits[d])
        mean, var = mean + m, var + v
    return mean, var


@lru_cache(maxsize=4096)
def _rebar_single(problem: Keyed, temperature: float, eta: float, theta: float) -> tuple[float, float]:
    """REBAR on one Bernoulli coordinate: ĝ = [f(b) − η f(σ_λ(z̃))](b − p) α′ + η ∂_θ f(σ_λ(z)) − η ∂_θ f(σ_λ(z̃)),
    z = α + logit u, b = 1[u > 1 − p], z̃ = α + logit v_b with v_b = 1 − p + v p (b = 1) or v (1 − p) (b = 0),
    ∂z̃/∂α = 1 + ∂v_b/∂α / (v_b(1 − v_b)). A 2-D Legendre rule in (u, v), u split at 1 − p."""
    where = latent(problem.problem, theta)
    alpha, c = float(where.logits[0]), float(where.d_logits[0])
    p = float(_sigmoid(alpha))
    u, wu = _pieces(1.0 - p, REBAR_NODES)
    v, wv = _pieces(0.5, REBAR_NODES)
    b = (u > 1.0 - p).astype(float)

    def relaxed_term(z: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = _sigmoid(z / temperature)
        slope = coordinate_slopes(problem.problem, theta, where, s.ravel())[:, 0].reshape(s.shape)
        f_relaxed = cost_of(problem.problem, theta, where, s.reshape(-1, 1)).reshape(s.shape)
        return eta * f_relaxed, eta * slope * s * (1.0 - s) / temperature * dz * c

    _, direct = relaxed_term(alpha + np.log(u) - np.log1p(-u), np.ones_like(u))  # [nu]
    bb = b[:, None]
    v_b = bb * ((1 - p) + v[None, :] * p) + (1 - bb) * (v[None, :] * (1 - p))
    dv_b = (bb * (v[None, :] - 1.0) - (1 - bb) * v[None, :]) * p * (1 - p)
    control, conditional = relaxed_term(alpha + np.log(v_b) - np.log1p(-v_b), 1.0 + dv_b / (v_b * (1 - v_b)))
    f_b = cost_of(problem.problem, theta, where, b[:, None])[:, None]
    values = (f_b - control) * (bb - p) * c + direct[:, None] - conditional
    return mean_and_variance(np.outer(wu, wv), values)


@register_exact("naive", *DISCRETE_FAMILIES)
@register_exact("score_function", *DISCRETE_FAMILIES)
@register_exact("score_function_loo", *DISCRETE_FAMILIES)
@register_exact("arm", *BERNOULLI_FAMILIES)
@register_exact("disarm", *BERNOULLI_FAMILIES)
@register_exact("gumbel_softmax", *DISCRETE_FAMILIES)
@register_exact("straight_through", *DISCRETE_FAMILIES)
@register_exact("rebar", *DISCRETE_FAMILIES)
@register_exact("relax", *DISCRETE_FAMILIES)
def discrete_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """Exact moments of the estimators on the discrete problems (independent samples: variance / N)."""
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    key, theta, name, options = keyed(problem), float(theta), method.estimator, dict(method.params)
    if name == "relax":
        return "RELAX trains its control variate by Adam on sampled estimates: its moments depend on that training"
    if name == "naive":
        return Exact(0.0, 0.0)  # the discrete costs do not depend on θ and .sample() passes no gradient
    if name == "score_function_loo":
        mean, zeta1, zeta2 = _enumerated(key, name, theta)
        return Exact(mean, u_statistic_variance(zeta1, zeta2, n_samples))
    if name == "score_function":
        mean, var = _enumerated(key, name, theta)
    elif name in ("arm", "disarm"):
        mean, var = _arm_family(key, name, theta)
    elif problem.name == "categorical_toy":
        return f"{name} on a categorical needs a (K − 1)-dimensional integral over Gumbel noise, not derived here"
    elif name in ("gumbel_softmax", "straight_through"):
        mean, var = _relaxed(key, name, float(options["temperature"]), theta)
    elif len(latent(problem, theta).logits) == 1:
        mean, var = _rebar_single(key, float(options["temperature"]), float(options["eta"]), theta)
    else:
        return "REBAR's score term couples the coordinates of a multivariate latent: derived for one Bernoulli only"
    return Exact(mean, var / n_samples)

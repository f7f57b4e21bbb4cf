"""Exact moments on the discrete problems (bernoulli_toy, bernoulli_multi, categorical_toy): enumeration of the
outcomes for the score function, RLOO and naive; enumeration of the cells of the uniform noise u where ARM's and
DisARM's pairs are constant; Gauss–Legendre over u (and REBAR's conditional v) for the relaxations at fixed
temperature on Bernoulli coordinates, and over the K − 1 Gumbel differences on a categorical. Per-sample
moments, then / N (the samples of an estimate are independent). Formulas: docs/math.md.
"""

from __future__ import annotations

import itertools
import math
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
# Categorical relaxations: composite Legendre in each Gumbel difference d_k = G_k − G_0, graded pieces (fine
# where the softmax turns, wide in the exponential tails; the mass beyond ±30 is < 1e-13).
DIFFERENCE_EDGES = (-30.0, -16.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 16.0, 30.0)
DIFFERENCE_NODES = 8  # per piece at τ ≥ ½; the softmax turns over a width τ, so smaller τ scales this by ½/τ


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


@lru_cache(maxsize=16)
def difference_rule(uppers: tuple[float, ...], nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Product rule over Gumbel differences d_k = G_k − G_b < uppers[k] (K − 1 of them; +inf for no bound), weights
    times their joint density (K − 1)! e^{−Σd} / (1 + Σ e^{−d})^K (G_b integrated out), so Σ w g(d) ≈
    E[g(d) 1[d < uppers]]. The same law is that of −log(E_k / E_b) for independent exponentials E. Nodes are
    columns of d [K − 1, n]: numpy reduces over a short leading axis far faster than over a short last one."""
    x, w = legendre_rule(nodes)
    lines, line_weights = [], []
    for upper in uppers:
        bound = float(np.clip(upper, DIFFERENCE_EDGES[0], DIFFERENCE_EDGES[-1]))
        edges = np.array([e for e in DIFFERENCE_EDGES if e < bound] + [bound])
        lo, hi = edges[:-1, None], edges[1:, None]
        lines.append((lo + 0.5 * (hi - lo) * (x + 1.0)).ravel())
        line_weights.append((0.5 * (hi - lo) * w).ravel())
    d = np.stack(np.meshgrid(*lines, indexing="ij")).reshape(len(uppers), -1)
    weight = np.ones(1)
    for line_weight in line_weights:
        weight = np.multiply.outer(weight, line_weight)
    tail = np.exp(-d)
    dims = len(uppers)
    density = np.exp(math.lgamma(dims + 1) - np.log1p(tail.sum(axis=0)) * (dims + 1) - d.sum(axis=0))
    return d, weight.ravel() * density


def simplex_slopes(problem: Problem, theta: float, x: np.ndarray) -> np.ndarray:
    """∂f/∂x_k at the points x of the simplex (rows of [n, K]), as autograd sees the cost."""
    grid = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    f = problem.cost(grid[:, None, :], torch.full((1,), float(theta), dtype=torch.float64))
    (slope,) = torch.autograd.grad(f.sum(), grid)
    return slope.numpy()


def softmax_columns(scores: np.ndarray) -> np.ndarray:
    soft = np.exp(scores - scores.max(axis=0))
    return soft / soft.sum(axis=0)


def with_reference(d: np.ndarray, b: int) -> np.ndarray:
    """Columns of K entries: 0 at the reference b, the differences d elsewhere."""
    return np.insert(d, b, 0.0, axis=0)


def _nodes(temperature: float, nodes: int) -> int:
    return int(math.ceil(nodes * max(1.0, 0.5 / temperature)))


def _gumbel_softmax_terms(problem: Problem, theta: float, where: Latent, temperature: float, hard: bool, nodes: int,
                          b: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(weights, ĝ) of Gumbel-softmax (hard: straight-through) ĝ = Σ_k ∂_k f(x) s_k (a_k − s·a)/τ,
    s = softmax((log p + G)/τ), a = ∂ log p/∂θ, on differences from G_0, or from G_b over {argmax = b}."""
    k = len(where.logits)
    log_p = where.logits - np.logaddexp.reduce(where.logits)
    reference = 0 if b is None else b
    uppers = tuple(np.inf if b is None else log_p[b] - log_p[j] for j in range(k) if j != reference)
    d, weights = difference_rule(uppers, _nodes(temperature, nodes))
    soft = softmax_columns((log_p[:, None] + with_reference(d, reference)) / temperature)
    slope = (simplex_slopes(problem, theta, np.eye(k)[:1]) if hard else simplex_slopes(problem, theta, soft.T)).T
    a = where.d_logits[:, None]
    return weights, np.sum(slope * soft * (a - np.sum(soft * a, axis=0)), axis=0) / temperature


def _slopes_vary(problem: Problem, theta: float, k: int) -> bool:
    vertices = simplex_slopes(problem, theta, np.eye(k))
    return not np.allclose(vertices, vertices[0], rtol=1e-12, atol=1e-14)


@lru_cache(maxsize=4096)
def _relaxed_categorical(problem: Keyed, estimator: str, temperature: float, theta: float,
                         nodes: int = DIFFERENCE_NODES) -> tuple[float, float] | str:  # fmt: skip
    """Gumbel-softmax and straight-through on a K-way categorical. s depends on G only through the differences
    G_{1:} − G_0, so the K-dimensional integral is a (K − 1)-dimensional one."""
    where = latent(problem.problem, theta)
    hard = estimator == "straight_through"
    if hard and _slopes_vary(problem.problem, theta, len(where.logits)):
        # ∂f at the hard sample then jumps where the argmax changes, on hyperplanes the product rule does not follow.
        return "straight-through on a categorical with a cost whose gradient differs between outcomes: not derived"
    return mean_and_variance(*_gumbel_softmax_terms(problem.problem, theta, where, temperature, hard, nodes))


def _rebar_conditional(problem: Problem, theta: float, where: Latent, b: int, temperature: float, eta: float,
                       nodes: int) -> tuple[float, float]:  # fmt: skip
    """E and E[·²] over z̃ | b of F = [f(b) − η f(s̃)] a_b − η ∂_θ f(s̃), s̃ = softmax(z̃/λ): with E = −log v,
    z̃_k − z̃_b = −log(1 + r_k/p_k), r_k = E_k/E_b, whose θ-derivative is (r_k a_k/p_k)/(1 + r_k/p_k)."""
    k = len(where.logits)
    log_p = where.logits - np.logaddexp.reduce(where.logits)
    d, weights = difference_rule((np.inf,) * (k - 1), _nodes(temperature, nodes))
    ratio = with_reference(np.exp(-d), b) / np.exp(log_p)[:, None]  # r_k / p_k (0 at b)
    d_scores = ratio * where.d_logits[:, None] / (1.0 + ratio)
    soft = softmax_columns(-np.log1p(ratio) / temperature)
    slope = simplex_slopes(problem, theta, soft.T).T
    d_soft = soft * (d_scores - np.sum(soft * d_scores, axis=0)) / temperature
    f_soft = cost_of(problem, theta, where, soft.T)
    f_b = cost_of(problem, theta, where, np.eye(k)[b : b + 1])[0]
    values = (f_b - eta * f_soft) * where.d_logits[b] - eta * np.sum(slope * d_soft, axis=0)
    return float(np.sum(weights * values) / np.sum(weights)), float(np.sum(weights * values**2) / np.sum(weights))


@lru_cache(maxsize=4096)
def _rebar_categorical(problem: Keyed, temperature: float, eta: float, theta: float,
                       nodes: int = DIFFERENCE_NODES) -> tuple[float, float]:  # fmt: skip
    """REBAR on a K-way categorical: ĝ = F(b, v) + η ĝ_GS(u), b = argmax, and given b the conditional noise v is
    independent of u, so E ĝ² = Σ_b p_b E[F² | b] + 2η Σ_b E[F | b] E[ĝ_GS 1{argmax = b}] + η² E ĝ_GS²; the
    indicator is a box in the differences from G_b."""
    where = latent(problem.problem, theta)
    k = len(where.logits)
    p = np.exp(where.logits - np.logaddexp.reduce(where.logits))
    first = second = 0.0
    for b in range(k):
        f_mean, f_square = _rebar_conditional(problem.problem, theta, where, b, temperature, eta, nodes)
        weights, relaxed = _gumbel_softmax_terms(problem.problem, theta, where, temperature, False, nodes, b)
        gs_first, gs_second = float(np.sum(weights * relaxed)), float(np.sum(weights * relaxed**2))
        first += p[b] * f_mean + eta * gs_first
        second += p[b] * f_square + 2.0 * eta * f_mean * gs_first + eta**2 * gs_second
    return float(first), float(second - first**2)


def coordinate_costs(problem: Problem, theta: float, where: Latent, x: np.ndarray, d: int) -> np.ndarray:
    """f_d(x) for a separable cost f = Σ_d f_d(x_d), with f_d(x) = f(x e_d) − f(0)(D − 1)/D (the parts sum to f)."""
    grid = np.zeros((len(x), len(where.logits)))
    grid[:, d] = x
    origin = cost_of(problem, theta, where, np.zeros((1, len(where.logits))))[0]
    return cost_of(problem, theta, where, grid) - origin * (len(where.logits) - 1) / len(where.logits)


def _rebar_coordinate(problem: Problem, theta: float, where: Latent, d: int, temperature: float, eta: float,
                      nodes: int) -> np.ndarray:  # fmt: skip
    """Coordinate d's raw moments E[A^i S^j R^k] (i, j, k ≤ 2) of its parts of REBAR's ĝ = (Σ A)(Σ S) + Σ R:
    A = f_d(b) − η f_d(σ_λ(z̃)), S = (b − p) α′, R = η ∂_d f (σ_λ(z)) ∂_θ σ_λ(z) − the same at z̃, on the
    coordinate's (u, v) product rule: z = α + logit u, b = 1[u > 1 − p], z̃ = α + logit v_b with
    v_b = 1 − p + v p (b = 1) or v (1 − p) (b = 0), ∂z̃/∂α = 1 + ∂v_b/∂α / (v_b(1 − v_b)); u split at 1 − p."""
    alpha, c = float(where.logits[d]), float(where.d_logits[d])
    p = float(_sigmoid(alpha))
    u, wu = _pieces(1.0 - p, nodes)
    v, wv = _pieces(0.5, nodes)
    b = (u > 1.0 - p).astype(float)

    def relaxed_term(z: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = _sigmoid(z / temperature)
        slope = coordinate_slopes(problem, theta, where, s.ravel())[:, d].reshape(s.shape)
        f_relaxed = coordinate_costs(problem, theta, where, s.ravel(), d).reshape(s.shape)
        return eta * f_relaxed, eta * slope * s * (1.0 - s) / temperature * dz * c

    _, direct = relaxed_term(alpha + np.log(u) - np.log1p(-u), np.ones_like(u))  # [nu]
    bb = np.array([[0.0], [1.0]])  # z̃ depends on u only through b: evaluate it for b = 0, 1 and pick rows
    v_b = bb * ((1 - p) + v[None, :] * p) + (1 - bb) * (v[None, :] * (1 - p))
    dv_b = (bb * (v[None, :] - 1.0) - (1 - bb) * v[None, :]) * p * (1 - p)
    control, conditional = relaxed_term(alpha + np.log(v_b) - np.log1p(-v_b), 1.0 + dv_b / (v_b * (1 - v_b)))
    rows, bb = b.astype(int), b[:, None]
    control, conditional = control[rows], conditional[rows]
    a = coordinate_costs(problem, theta, where, b, d)[:, None] - control
    score = np.broadcast_to((bb - p) * c, a.shape)
    r = direct[:, None] - conditional
    weights = np.outer(wu, wv).ravel()

    def powers(x: np.ndarray) -> np.ndarray:
        return np.stack([np.ones(x.size), x.ravel(), x.ravel() ** 2])

    return np.einsum("n,in,jn,kn->ijk", weights, powers(a), powers(score), powers(r), optimize=True)


def add_independent(moments: np.ndarray, part: np.ndarray) -> np.ndarray:
    """E[(X + a)^i (Y + s)^j (W + r)^k] from the raw moments of (X, Y, W) and of an independent (a, s, r)."""
    binomial = np.array([[1, 0, 0], [1, 1, 0], [1, 2, 1]], dtype=float)
    total = np.zeros_like(moments)
    for i, j, k in itertools.product(range(3), repeat=3):
        for i2, j2, k2 in itertools.product(range(i + 1), range(j + 1), range(k + 1)):
            total[i, j, k] += (binomial[i, i2] * binomial[j, j2] * binomial[k, k2] * moments[i2, j2, k2]
                               * part[i - i2, j - j2, k - k2])  # fmt: skip
    return total


@lru_cache(maxsize=4096)
def _rebar(problem: Keyed, temperature: float, eta: float, theta: float,
           nodes: int = REBAR_NODES) -> tuple[float, float]:  # fmt: skip
    """REBAR on independent Bernoulli coordinates with a separable cost: ĝ = X Y + W with X = Σ A_d, Y = Σ S_d,
    W = Σ R_d, the coordinates independent, so E ĝ and E ĝ² follow from each coordinate's raw moments."""
    where = latent(problem.problem, theta)
    moments = np.zeros((3, 3, 3))
    moments[0, 0, 0] = 1.0
    for d in range(len(where.logits)):
        part = _rebar_coordinate(problem.problem, theta, where, d, temperature, eta, nodes)
        moments = add_independent(moments, part)
    mean = moments[1, 1, 0] + moments[0, 0, 1]
    return float(mean), float(moments[2, 2, 0] + 2.0 * moments[1, 1, 1] + moments[0, 0, 2] - mean**2)


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
    elif problem.name == "categorical_toy" and name != "rebar":
        result = _relaxed_categorical(key, name, float(options["temperature"]), theta)
        if isinstance(result, str):
            return result
        mean, var = result
    elif problem.name == "categorical_toy":
        mean, var = _rebar_categorical(key, float(options["temperature"]), float(options["eta"]), theta)
    elif name in ("gumbel_softmax", "straight_through"):
        mean, var = _relaxed(key, name, float(options["temperature"]), theta)
    else:
        mean, var = _rebar(key, float(options["temperature"]), float(options["eta"]), theta)
    return Exact(mean, var / n_samples)

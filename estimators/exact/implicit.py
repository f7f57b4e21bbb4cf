"""Exact moments on the implicit-reparameterisation problems (gamma, beta, dirichlet's x1 ~ Beta(α1, (K−1)·rest)),
f = x^p or log x, by composite Gauss–Legendre quadrature in t-space (gamma t = log x, beta t = logit x), where the
density q(t) is smooth, has exponential tails and is computed in log space, so nothing underflows even when a
concentration of 0.001 puts mass at x = e^-40000. The variance is centred, ∫(term − mean)² q, not E[g²] − mean².

Score function: f(x) ∂_θ log p(x). Pathwise: f′(x) dx/dθ = (df/dt)·(−∂_θF / q(t)), F the CDF: ∂_θF by a 4-point
difference of the regularised incomplete gamma or beta function (its complement where that is the accurate side),
and by the small-argument asymptotics F ≈ y^α/Γ(α+1) or x^a/(a B(a, b)) where x or 1 − x is below 1e-15.
Every moment is computed at two node counts; when they disagree the function returns a reason, not a number.
The pathwise moments are those of the true implicit derivative; torch computes it by its own approximation,
whose error the Monte Carlo tests bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.special import betainc, betaln, digamma, expit, gammainc, gammaincc, gammaln

from ..core.estimator import Method
from ..core.problem import Problem
from .gaussian import scheme_reason
from .registry import Exact, Keyed, keyed, register_exact

IMPLICIT_FAMILIES = ("gamma", "beta", "dirichlet")
RELATIVE_STEP = 1e-4  # of the 4-point difference in θ (times min(θ, 1)): O(h⁴) truncation, roundoff ~1e-12/h
ASYMPTOTIC_BELOW = 1e-15  # x (or 1 − x, or βx) below which F's leading power term is exact to double precision
TAIL_E_FOLDS = 80.0  # the t-range ends where the (variance-weighted) density has decayed by e^-80
NODES = (32, 48)  # two Gauss–Legendre orders per segment: their agreement is the accuracy check
AGREEMENT = 1e-8  # relative, of the two orders' means (on the scale of the standard deviation) and variances
UNDERFLOW = -700.0  # log q below which a node carries no mass in double precision

Array = np.ndarray


@dataclass(frozen=True)
class Setup:
    """One (distribution, θ, f) in t-space: log q(t), the two estimators' terms, and the segment breakpoints."""

    log_density: Callable[[Array], Array]
    score_term: Callable[[Array], Array]
    pathwise_term: Callable[[Array], Array]
    points: Array


def _parameters(problem: Problem, theta: float) -> tuple[str, float, float, str]:
    """(kind, first, second, which parameter θ is): Gamma(shape, rate) or Beta(a, b)."""
    params = problem.params
    if problem.name == "gamma":
        return ("gamma", theta, params["rate"], "first") if problem.wrt == "shape" else ("gamma", params["shape"], theta, "second")
    if problem.name == "beta":
        return ("beta", theta, params["b"], "first") if problem.wrt == "a" else ("beta", params["a"], theta, "second")
    return "beta", theta, (params["components"] - 1) * params["rest"], "first"


def _breakpoints(mode: float, scale: float, left: float, right: float, right_cap: float = math.inf) -> Array:
    """Segment ends around the mode: width 0.2·scale there, each next one 25% farther out, so a segment never
    spans more than a few e-folds of an exponential tail (right_cap bounds widths on a double-exponential one)."""
    def side(span: float, cap: float) -> list[float]:
        out, d = [], 0.2 * scale
        while d < span:
            out.append(d)
            d += min(0.25 * d, cap)
        return out + [span]

    return np.array(sorted({mode} | {mode - d for d in side(left, math.inf)} | {mode + d for d in side(right, right_cap)}))


def _difference(g: Callable[[float], Array], theta: float) -> Array:
    """∂g/∂θ by the 4-point stencil: relative step keeps it accurate on the 1/θ scale small concentrations set."""
    h = RELATIVE_STEP * min(theta, 1.0)
    return (8 * (g(theta + h) - g(theta - h)) - (g(theta + 2 * h) - g(theta - 2 * h))) / (12 * h)


def _cost(power: float, log_x: Array) -> Array:
    return log_x if power == 0 else np.exp(power * log_x)


def _cost_slope(power: float, log_x: Array, dlog_x_dt: Array) -> Array:
    """df/dt = f′(x)·x·(d log x/dt)."""
    return dlog_x_dt if power == 0 else power * np.exp(power * log_x) * dlog_x_dt


def _gamma(shape: float, rate: float, which: str, power: float) -> Setup:
    log_norm = shape * math.log(rate) - float(gammaln(shape))
    log_density = lambda t: shape * t + log_norm - rate * np.exp(t)  # noqa: E731
    psi, psi_next = float(digamma(shape)), float(digamma(shape + 1))

    def score_term(t: Array) -> Array:
        score = math.log(rate) + t - psi if which == "first" else shape / rate - np.exp(t)
        return _cost(power, t) * score

    def shape_velocity(t: Array) -> Array:
        """−∂_αF / q(t) with F = P(α, y), y = βx: Q where P > ½, and y^α/Γ(α+1) below ASYMPTOTIC_BELOW."""
        log_y = math.log(rate) + t
        tiny = log_y < math.log(ASYMPTOTIC_BELOW)
        out = -(log_y - psi_next) / shape
        y = np.exp(log_y[~tiny])
        upper = gammainc(shape, y) > 0.5
        d_cdf = np.where(upper, -_difference(lambda a: gammaincc(a, y), shape), _difference(lambda a: gammainc(a, y), shape))
        out[~tiny] = -d_cdf / np.exp(log_density(t[~tiny]))
        return out

    def pathwise_term(t: Array) -> Array:
        velocity = shape_velocity(t) if which == "first" else np.full_like(t, -1.0 / rate)  # x/β is rate-free
        return _cost_slope(power, t, np.ones_like(t)) * velocity

    mode = math.log(shape / rate)
    scale = min(1.0, 1.0 / math.sqrt(shape))
    left = TAIL_E_FOLDS / (shape + 2 * min(power, 0.0)) + 40 * scale + 5  # x^(2p) weights the variance's left tail
    right = math.log((shape + 40 * math.sqrt(shape) + 4 * abs(power) + 100) / shape)
    return Setup(log_density, score_term, pathwise_term, _breakpoints(mode, scale, left, right, right_cap=0.5))


def _beta(a: float, b: float, which: str, power: float) -> Setup:
    log_norm = -float(betaln(a, b))
    log_x = lambda t: -np.logaddexp(0.0, -t)  # noqa: E731
    log_1mx = lambda t: -np.logaddexp(0.0, t)  # noqa: E731
    log_density = lambda t: a * log_x(t) + b * log_1mx(t) + log_norm  # noqa: E731
    psi_sum = float(digamma(a + b))
    psi_a, psi_b = float(digamma(a)), float(digamma(b))

    def score_term(t: Array) -> Array:
        score = log_x(t) + psi_sum - psi_a if which == "first" else log_1mx(t) + psi_sum - psi_b
        return _cost(power, log_x(t)) * score

    def velocity(t: Array) -> Array:
        """−∂_θF / q(t) with F = I_x(a, b): the complement I_{1−x}(b, a) for t > 0 (where 1 − x is the accurate
        argument), and the leading terms x^a/(a B) or (1−x)^b/(b B) where x or 1 − x is below ASYMPTOTIC_BELOW."""
        lx, l1x = log_x(t), log_1mx(t)
        near0, near1 = lx < math.log(ASYMPTOTIC_BELOW / max(1.0, b)), l1x < math.log(ASYMPTOTIC_BELOW / max(1.0, a))
        out = np.empty_like(t)
        if which == "first":
            out[near0] = -(lx[near0] - 1 / a - psi_a + psi_sum) / a
            out[near1] = (psi_sum - psi_a) / b
        else:
            out[near0] = -(psi_sum - psi_b) / a
            out[near1] = (l1x[near1] - 1 / b - psi_b + psi_sum) / b
        middle = ~(near0 | near1)
        tm = t[middle]
        low, x, y = tm <= 0, expit(tm), expit(-tm)
        if which == "first":
            lower = _difference(lambda s: betainc(s, b, x), a)
            upper = -_difference(lambda s: betainc(b, s, y), a)
        else:
            lower = _difference(lambda s: betainc(a, s, x), b)
            upper = -_difference(lambda s: betainc(s, a, y), b)
        out[middle] = -np.where(low, lower, upper) / np.exp(log_density(tm))
        return out

    def pathwise_term(t: Array) -> Array:
        return _cost_slope(power, log_x(t), expit(-t)) * velocity(t)  # d log x/dt = 1 − x

    mode = math.log(a / b)
    scale = min(1.0, math.sqrt(1 / a + 1 / b))
    left = TAIL_E_FOLDS / (a + 2 * min(power, 0.0)) + 40 * scale + 5
    right = TAIL_E_FOLDS / b + 40 * scale + 5
    return Setup(log_density, score_term, pathwise_term, _breakpoints(mode, scale, left, right))


def _nodes(points: Array, order: int) -> tuple[Array, Array]:
    """Composite Gauss–Legendre nodes and weights over the segments between consecutive points."""
    x, w = leggauss(order)
    half, centre = np.diff(points) / 2, (points[1:] + points[:-1]) / 2
    return (centre[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


def _moments(setup: Setup, term: Callable[[Array], Array], order: int) -> tuple[float, float]:
    t, w = _nodes(setup.points, order)
    log_q = setup.log_density(t)
    keep = log_q > UNDERFLOW  # beyond the density's underflow there is no mass, and 0/0 in the pathwise term
    t, mass = t[keep], w[keep] * np.exp(log_q[keep])
    values = term(t)
    mean = float(np.sum(mass * values))
    return mean, float(np.sum(mass * (values - mean) ** 2))


@lru_cache(maxsize=4096)
def _per_sample(problem: Keyed, estimator: str, theta: float) -> tuple[float, float] | str:
    kind, first, second, which = _parameters(problem.problem, theta)
    power = float(problem.problem.params["power"])
    setup = (_gamma if kind == "gamma" else _beta)(first, second, which, power)
    term = setup.score_term if estimator == "score_function" else setup.pathwise_term
    with np.errstate(over="ignore", under="ignore"):  # exp of far-tail log densities: 0 is the right value
        (mean, var), (mean_fine, var_fine) = (_moments(setup, term, order) for order in NODES)
    spread = math.sqrt(max(var_fine, 0.0))
    roundoff = (1e-12 * mean_fine) ** 2  # a constant term (gamma rate's pathwise log x) has variance 0 ± roundoff
    if not (abs(mean - mean_fine) <= AGREEMENT * max(spread, abs(mean_fine))
            and abs(var - var_fine) <= AGREEMENT * var_fine + roundoff):
        return (f"the quadrature of {estimator} on {kind} at θ = {theta:g} does not converge "
                f"(mean {mean_fine:.10g} vs {mean:.10g}, variance {var_fine:.10g} vs {var:.10g})")  # fmt: skip
    return mean_fine, var_fine


@register_exact("naive", *IMPLICIT_FAMILIES)
@register_exact("score_function", *IMPLICIT_FAMILIES)
@register_exact("pathwise", *IMPLICIT_FAMILIES)
def implicit_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    if method.estimator == "naive":
        return Exact(0.0, 0.0)  # f does not depend on θ and .sample() passes no gradient
    moments = _per_sample(keyed(problem), method.estimator, float(theta))
    if isinstance(moments, str):
        return moments
    mean, var = moments
    return Exact(mean, var / n_samples)

"""Exact moments on the implicit-reparameterisation problems (gamma, beta, dirichlet's x1 ~ Beta(α1, (K−1)·rest)),
f = x^p or log x: adaptive quadrature over the density of the score function's term f ∂_θ log p and of the
pathwise term f′(x) dx/dθ with dx/dθ = −(∂F/∂θ)(x)/p(x) (F the CDF, ∂F/∂θ by a central difference of the
regularised incomplete gamma or beta function). The pathwise moments are those of the true implicit
derivative; torch computes it by its own approximation, whose error the Monte Carlo tests bound.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

from scipy import integrate, stats
from scipy.special import betainc, digamma, gammainc

from ..core.estimator import Method
from ..core.problem import Problem
from .gaussian import scheme_reason
from .registry import Exact, Keyed, keyed, register_exact

IMPLICIT_FAMILIES = ("gamma", "beta", "dirichlet")
RELATIVE_STEP = 1e-5  # of the CDF's central difference in θ: O(h²) error ~1e-10 relative


def _parameters(problem: Problem, theta: float) -> tuple[str, float, float, str]:
    """(kind, first, second, which parameter θ is): Gamma(shape, rate) or Beta(a, b)."""
    params = problem.params
    if problem.name == "gamma":
        return ("gamma", theta, params["rate"], "first") if problem.wrt == "shape" else ("gamma", params["shape"], theta, "second")
    if problem.name == "beta":
        return ("beta", theta, params["b"], "first") if problem.wrt == "a" else ("beta", params["a"], theta, "second")
    return "beta", theta, (params["components"] - 1) * params["rest"], "first"


def _density_cdf(kind: str, first: float, second: float):
    if kind == "gamma":
        return stats.gamma(first, scale=1.0 / second).pdf, lambda x, a, b: gammainc(a, b * x), (0.0, math.inf)
    return stats.beta(first, second).pdf, lambda x, a, b: betainc(a, b, x), (0.0, 1.0)


def _score(kind: str, first: float, second: float, which: str, x: float) -> float:
    if kind == "gamma":
        return math.log(second) + math.log(x) - float(digamma(first)) if which == "first" else first / second - x
    if which == "first":
        return math.log(x) + float(digamma(first + second) - digamma(first))
    return math.log1p(-x) + float(digamma(first + second) - digamma(second))


@lru_cache(maxsize=4096)
def _per_sample(problem: Keyed, estimator: str, theta: float) -> tuple[float, float]:
    kind, first, second, which = _parameters(problem.problem, theta)
    power = float(problem.problem.params["power"])
    density, cdf, (low, high) = _density_cdf(kind, first, second)
    f = math.log if power == 0 else (lambda x: x**power)
    slope = (lambda x: 1.0 / x) if power == 0 else (lambda x: power * x ** (power - 1))
    h = RELATIVE_STEP * theta

    def term(x: float) -> float:
        if estimator == "score_function":
            return f(x) * _score(kind, first, second, which, x)
        shifted = [(first + s, second) if which == "first" else (first, second + s) for s in (h, -h)]
        d_cdf = (cdf(x, *shifted[0]) - cdf(x, *shifted[1])) / (2 * h)
        return slope(x) * (-d_cdf / density(x))

    def weighted(x: float, k: int) -> float:
        mass = density(x)
        return 0.0 if mass == 0.0 else term(x) ** k * mass  # beyond the density's underflow there is no mass

    def moment(k: int) -> float:
        # The CDF's central difference limits the integrand to ~1e-8 relative, so quad's roundoff warning at a
        # tighter tolerance says nothing a Monte Carlo interval could see.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            return integrate.quad(weighted, low, high, args=(k,), epsabs=0, epsrel=1e-9, limit=400)[0]

    mean = moment(1)
    return mean, moment(2) - mean**2


@register_exact("naive", *IMPLICIT_FAMILIES)
@register_exact("score_function", *IMPLICIT_FAMILIES)
@register_exact("pathwise", *IMPLICIT_FAMILIES)
def implicit_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    if method.estimator == "naive":
        return Exact(0.0, 0.0)  # f does not depend on θ and .sample() passes no gradient
    mean, var = _per_sample(keyed(problem), method.estimator, float(theta))
    return Exact(mean, var / n_samples)

"""Test helpers: independent Gauss–Hermite expectations, the problem instances under test, and a blank-figure check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.image import imread
import pytest
from scipy import integrate, stats

from estimators import make_problem

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(160)  # weight exp(-x²/2)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)


def gauss_expectation(g, mu: float, sigma: float) -> float:
    """E[g(x)] for x ~ N(μ, σ²): adaptive quadrature of g·φ (accurate also for narrow peaks of g, where
    Gauss–Hermite with a fixed node count is not), cross-checked against 160-point Gauss–Hermite, which is
    exact for polynomials of degree < 320."""
    density = stats.norm(mu, sigma).pdf
    # ±30σ: the Gaussian mass beyond is < 1e-190, and finite limits avoid inf·0 for growing g.
    value, _ = integrate.quad(lambda x: float(g(np.asarray(x))) * density(x), mu - 30 * sigma, mu + 30 * sigma,
                              points=[mu], epsabs=1e-14, epsrel=1e-13, limit=500)  # fmt: skip
    # A coarse guard against quad missing mass: Gauss–Hermite itself is off by ~1e-4 on peaks much
    # narrower than σ, so this only catches gross disagreement.
    hermite = float(np.sum(_WEIGHTS * g(mu + sigma * _NODES)))
    assert abs(value - hermite) <= 1e-3 * max(1.0, abs(value)), (value, hermite)
    return value


def gaussian_params(problem, theta: float) -> tuple[float, float]:
    """(μ, σ) of the problem's distribution at θ, read from the problem's own declaration of what θ is."""
    if problem.name == "seed_fixed":
        return 0.0, 1.0
    if problem.name == "seed_dependent":
        return theta, 1.0
    if problem.wrt == "mu":
        return theta, problem.params["sigma"]
    return problem.params["mu"], theta


# Problem instances (name, wrt, params, θ values) covering every family, both wrt choices and several k,
# including negative k and σ ≠ 1.
CASES = [
    ("seed_fixed", None, {}, (-1.0, 0.5, 3.0)),
    ("seed_dependent", None, {}, (-2.0, 0.0, 1.0, 3.0)),
    ("gaussian_quadratic", "mu", {"k": -3.0, "sigma": 1.0}, (-1.0, 1.0, 2.0)),
    ("gaussian_quadratic", "sigma", {"k": 1.0, "mu": 1.0}, (0.5, 1.0, 2.0)),
    ("gaussian_exp", "mu", {"k": 1.0, "sigma": 1.0}, (-1.0, 0.5, 2.0)),
    # k < 0 with 1 + 8kσ² > 0, so the estimators' fourth moments are finite and sample variances converge.
    ("gaussian_exp", "mu", {"k": -0.05, "sigma": 1.0}, (0.0, 1.0)),
    ("gaussian_exp", "sigma", {"k": 2.0, "mu": 1.0}, (0.3, 1.0, 2.0)),
    ("gaussian_exp", "sigma", {"k": -0.05, "mu": 0.5}, (0.5, 1.0)),
    ("gaussian_cos", "mu", {"k": 3.0, "sigma": 0.5}, (-1.0, 0.3, 1.0)),
    ("gaussian_cos", "sigma", {"k": 1.0, "mu": 1.0}, (0.5, 1.0, 2.0)),
]


def problem_cases(declared: list | None = None) -> list:
    """pytest params (problem, θ) for (name, wrt, params, θs) rows: ``declared``, or this module's CASES."""
    cases = []
    for name, wrt, params, thetas in CASES if declared is None else declared:
        for theta in thetas:
            label = f"{name}-{wrt}-{'-'.join(f'{k}{v:g}' for k, v in params.items())}-theta{theta:g}"
            cases.append(pytest.param(make_problem(name, wrt, params), theta, id=label))
    return cases


def bonferroni_z(n_tests: int, family_alpha: float = 0.01) -> float:
    """Two-sided critical z so that n_tests seeded checks together raise a false alarm with prob <= family_alpha."""
    return float(stats.norm.isf(family_alpha / (2 * n_tests)))



def is_blank(path: Path) -> bool:
    """True when a PNG has a single colour (nothing was drawn)."""
    image = imread(path)
    return bool(np.ptp(image[..., :3]) == 0)

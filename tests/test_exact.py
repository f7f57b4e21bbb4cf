"""Every problem's closed-form objective and gradient against independent numerics: Gauss–Hermite quadrature
of L, a central finite difference of that quadrature, and quadrature of the score identity
∇L = E[f ∂log p + ∂f] written out by hand here (not with the library's log-densities)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from estimators import ProblemError, make_problem
from tests.helpers import gauss_expectation, gaussian_params, problem_cases


def _cost(problem, theta: float):
    def f(x: np.ndarray) -> np.ndarray:
        return problem.cost(torch.as_tensor(x, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64)).numpy()

    return f


def quadrature_objective(problem, theta: float) -> float:
    mu, sigma = gaussian_params(problem, theta)
    return gauss_expectation(_cost(problem, theta), mu, sigma)


@pytest.mark.parametrize("problem, theta", problem_cases())
def test_objective_matches_quadrature(problem, theta):
    assert problem.objective(theta) == pytest.approx(quadrature_objective(problem, theta), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("problem, theta", problem_cases())
def test_gradient_matches_finite_difference_of_quadrature(problem, theta):
    h = 1e-5 * max(1.0, abs(theta))
    low = theta - h if problem.theta_range[0] < theta - h else theta
    fd = (quadrature_objective(problem, theta + h) - quadrature_objective(problem, low)) / (theta + h - low)
    # Central differences are accurate to O(h²); one-sided (at a range edge) to O(h).
    assert problem.gradient(theta) == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("problem, theta", problem_cases())
def test_gradient_matches_quadrature_of_score_identity(problem, theta):
    mu, sigma = gaussian_params(problem, theta)
    f = _cost(problem, theta)
    h = 1e-6 * max(1.0, abs(theta))
    d_cost = lambda x: (_cost(problem, theta + h)(x) - _cost(problem, theta - h)(x)) / (2 * h)  # noqa: E731
    if problem.name == "seed_fixed":
        score = lambda x: 0.0 * x  # noqa: E731  p does not depend on θ
    elif problem.name == "seed_dependent" or problem.wrt == "mu":
        score = lambda x: (x - mu) / sigma**2  # noqa: E731  ∂μ log N(x; μ, σ²)
    else:
        score = lambda x: (x - mu) ** 2 / sigma**3 - 1.0 / sigma  # noqa: E731  ∂σ log N(x; μ, σ²)
    identity = gauss_expectation(lambda x: f(x) * score(x) + d_cost(x), mu, sigma)
    assert problem.gradient(theta) == pytest.approx(identity, rel=1e-7, abs=1e-9)


def test_seed_dependent_values_from_the_design_card():
    problem = make_problem("seed_dependent")
    # 84, where the widely shared notebook's −6θ² + 30 gives −24.
    assert problem.gradient(3.0) == 84.0
    # The product-rule term E[f ∂log p] is +6θ² (not −6θ²), and E[∂f] = 3(θ² + 1) is what naive autograd sees.
    for theta in (0.5, 1.0, 3.0):
        product_rule = gauss_expectation(lambda x: 3 * theta * x**2 * (x - theta), theta, 1.0)
        assert product_rule == pytest.approx(6 * theta**2, rel=1e-10)
        assert gauss_expectation(lambda x: 3 * x**2, theta, 1.0) == pytest.approx(3 * (theta**2 + 1), rel=1e-10)


@pytest.mark.parametrize(
    "name, wrt, params, message",
    [
        ("gaussian_cos", "mu", {"sigma": -1.0}, "sigma must be > 0"),
        ("gaussian_cos", "mu", {"sigma": 0.0}, "sigma must be > 0"),
        ("gaussian_exp", "mu", {"k": -1.0, "sigma": 1.0}, "1 + 2kσ² > 0"),
        ("gaussian_cos", "mu", {"mu": 1.0}, "has no parameter mu"),
        ("gaussian_cos", "tau", {}, "no parameter wrt='tau'"),
        ("nope", None, {}, "unknown problem 'nope'"),
        ("gaussian_cos", "mu", {"k": math.nan}, "must be finite"),
    ],
)
def test_invalid_problem_parameters_are_rejected_with_the_reason(name, wrt, params, message):
    with pytest.raises(ProblemError) as error:
        make_problem(name, wrt, params)
    assert message in str(error.value)


@pytest.mark.parametrize("theta", [0.0, -1.0, math.nan, math.inf])
def test_invalid_theta_for_a_scale_is_rejected(theta):
    problem = make_problem("gaussian_quadratic", "sigma")
    with pytest.raises(ProblemError) as error:
        problem.check_theta(theta)
    assert "theta" in str(error.value)

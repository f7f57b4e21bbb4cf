"""Diagonal Gaussians in D dimensions and finite differences with common random numbers.

θ = μ1 moves the first coordinate only; f sums over all D. Exact per-sample variances are computed here from
each estimator's formula with 1-D Gaussian quadrature: for the score function ĝ = (g(x1) + S) s(x1), with
S = Σ_{d≥2} g(x_d) independent of x1 and s = (x1 − θ)/σ²,
    E[ĝ²] = E[g² s²] + 2 E[S] E[g s²] + E[S²] E[s²],   E[S] = (D−1) m1,  E[S²] = (D−1) m2 + (D−1)(D−2) m1²
with m_k = E[g(y)^k], y ~ N(μ, σ²): it grows with D. Pathwise (g′(x1)), the coupled measure-valued pair
(c (g(θ+σW) − g(θ−σW)), W Rayleigh) and the CRN finite difference ((g(θ+h+σε) − g(θ−h+σε)) / 2h) do not see the
other coordinates at all. Tolerances: z-tests with a Bonferroni-corrected critical value over the file.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from bench.statistics import kurtosis, variance_interval, variance_relative_se
from estimators import ESTIMATORS, ProblemError, estimate, make_problem
from estimators.core.distributions import coordinates_moved_by_theta
from tests.helpers import bonferroni_z, gauss_expectation

COSTS = {"diag_gaussian_sum": lambda x: x, "diag_gaussian_quartic": lambda x: x**4}
DERIVATIVES = {"diag_gaussian_sum": lambda x: np.ones_like(x), "diag_gaussian_quartic": lambda x: 4 * x**3}
MU, SIGMA = 0.3, 0.7  # the other coordinates' mean ≠ 0 and σ ≠ 1, so no term vanishes by accident
N_BIAS = 4  # samples per estimate in the bias tests
# The estimators whose per-sample variances are written out below (exact_per_sample_variance).
INDEPENDENT_SAMPLE = ["score_function", "pathwise", "measure_valued", "finite_difference"]
VARIANCE_CASES = [(name, dim) for name in COSTS for dim in (1, 16)]
FD_STEP = 0.2


def problem_for(name: str, dim: int):
    return make_problem(name, None, {"dim": dim, "mu": MU, "sigma": SIGMA})


# Every registered estimator declared unbiased on a case that applies there: the registry decides, so a new
# estimator is tested here without editing this file.
UNBIASED_CASES = [
    (estimator, name, dim, theta)
    for name in COSTS
    for dim in (1, 5)
    for theta in (-0.5, 1.0)
    for estimator in ESTIMATORS.names(exclude=("user", "plugin"))
    if ESTIMATORS[estimator].unbiased_for(problem_for(name, dim))
    and ESTIMATORS[estimator].skip_reason(problem_for(name, dim), N_BIAS) is None
]
Z_CRIT = bonferroni_z(len(UNBIASED_CASES) + len(INDEPENDENT_SAMPLE) * len(VARIANCE_CASES) + 10)


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


def draw(estimator: str, problem, theta: float, n: int, m: int, seed: int, **options) -> np.ndarray:
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[estimator], problem, theta, n, m, dtype=torch.float64, options=options).numpy()


def _variance(g, mu: float, sigma: float) -> float:
    mean = gauss_expectation(g, mu, sigma)
    return gauss_expectation(lambda x: (g(x) - mean) ** 2, mu, sigma)


def exact_per_sample_variance(estimator: str, name: str, dim: int, theta: float) -> float:
    g, dg = COSTS[name], DERIVATIVES[name]
    if estimator == "score_function":
        s = lambda x: (x - theta) / SIGMA**2  # noqa: E731
        m1, m2 = gauss_expectation(g, MU, SIGMA), gauss_expectation(lambda y: g(y) ** 2, MU, SIGMA)
        e_s, e_s2 = (dim - 1) * m1, (dim - 1) * m2 + (dim - 1) * (dim - 2) * m1**2
        second = (gauss_expectation(lambda x: g(x) ** 2 * s(x) ** 2, theta, SIGMA)
                  + 2 * e_s * gauss_expectation(lambda x: g(x) * s(x) ** 2, theta, SIGMA)
                  + e_s2 * gauss_expectation(lambda x: s(x) ** 2, theta, SIGMA))  # fmt: skip
        mean = gauss_expectation(lambda x: g(x) * s(x), theta, SIGMA)
        return second - mean**2
    if estimator == "pathwise":
        return _variance(dg, theta, SIGMA)
    if estimator == "finite_difference":
        return _variance(lambda x: (g(x + FD_STEP) - g(x - FD_STEP)) / (2 * FD_STEP), theta, SIGMA)
    assert estimator == "measure_valued"
    c = 1 / (SIGMA * math.sqrt(2 * math.pi))
    pair = lambda w: c * (g(theta + SIGMA * w) - g(theta - SIGMA * w))  # noqa: E731
    rayleigh = lambda w: w * math.exp(-(w**2) / 2)  # noqa: E731
    m1 = integrate.quad(lambda w: pair(w) * rayleigh(w), 0, 40, limit=400)[0]
    m2 = integrate.quad(lambda w: pair(w) ** 2 * rayleigh(w), 0, 40, limit=400)[0]
    return m2 - m1**2


# --------------------------------------------------------------------------------------------------------
# Exact values.


@pytest.mark.parametrize("name", COSTS)
@pytest.mark.parametrize("dim", [1, 3, 10])
@pytest.mark.parametrize("theta", [-0.5, 1.2])
def test_gradient_matches_finite_difference_of_quadrature(name, dim, theta):
    problem, g = problem_for(name, dim), COSTS[name]

    def objective(t: float) -> float:  # Σ_d E[g(x_d)] with x1 ~ N(t, σ²), the others N(μ, σ²)
        return gauss_expectation(g, t, SIGMA) + (dim - 1) * gauss_expectation(g, MU, SIGMA)

    assert problem.objective(theta) == pytest.approx(objective(theta), rel=1e-10)
    h = 1e-5
    assert problem.gradient(theta) == pytest.approx((objective(theta + h) - objective(theta - h)) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("dim", [1, 4, 64])
def test_score_function_variance_on_the_sum_has_the_closed_form(dim):
    # (θ + (D−1)μ)²/σ² + D + 1: the module docstring's formula, from the quadrature above.
    closed = (1.0 + (dim - 1) * MU) ** 2 / SIGMA**2 + dim + 1
    assert exact_per_sample_variance("score_function", "diag_gaussian_sum", dim, 1.0) == pytest.approx(closed, rel=1e-9)
    assert exact_per_sample_variance("measure_valued", "diag_gaussian_sum", dim, 1.0) == pytest.approx(
        (4 - math.pi) / math.pi, rel=1e-9
    )


def test_invalid_dimension_is_refused():
    with pytest.raises(ProblemError, match=r"dim \(D\) must be an integer in \[1, 4096\], got dim=2.5"):
        make_problem("diag_gaussian_sum", None, {"dim": 2.5})
    with pytest.raises(ProblemError, match="sigma must be > 0"):
        make_problem("diag_gaussian_quartic", None, {"sigma": 0.0})


def test_measure_valued_spends_one_pair_on_the_one_coordinate_theta_moves():
    problem = problem_for("diag_gaussian_quartic", 7)
    assert coordinates_moved_by_theta(problem, torch.ones(3)) == ([0], [])
    assert ESTIMATORS["measure_valued"].cost_evaluations(problem) == 2
    assert ESTIMATORS["measure_valued"].skip_reason(problem, 1) is None
    assert ESTIMATORS["finite_difference"].cost_evaluations(problem) == 2


# --------------------------------------------------------------------------------------------------------
# Estimators.


@pytest.mark.slow
@pytest.mark.parametrize("estimator, name, dim, theta", UNBIASED_CASES)
def test_unbiased_estimators_are_unbiased_in_d_dimensions(estimator, name, dim, theta):
    problem = problem_for(name, dim)
    x = draw(estimator, problem, theta, N_BIAS, 10_000, seed_for("unbiased", estimator, name, dim, theta))
    if np.ptp(x) < 1e-12:  # pathwise on the sum: ∂f/∂μ1 = 1 exactly, every time
        assert x[0] == pytest.approx(problem.gradient(theta), abs=1e-12)
        return
    z = (x.mean() - problem.gradient(theta)) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"{estimator} mean {x.mean():.6g} vs exact {problem.gradient(theta):.6g} (z = {z:.2f})"


@pytest.mark.slow
@pytest.mark.parametrize("estimator", INDEPENDENT_SAMPLE)
@pytest.mark.parametrize("name, dim", VARIANCE_CASES)
def test_per_sample_variance_matches_exact(estimator, name, dim):
    theta = 1.0
    exact = exact_per_sample_variance(estimator, name, dim, theta)
    x = draw(estimator, problem_for(name, dim), theta, 1, 20_000, seed_for("var", estimator, name, dim), **(
        {"step": FD_STEP} if estimator == "finite_difference" else {}))  # fmt: skip
    if exact < 1e-12:
        assert np.var(x) < 1e-20
        return
    empirical = float(np.var(x, ddof=1))
    z = math.log(empirical / exact) / variance_relative_se(kurtosis(x), x.size)
    assert abs(z) < Z_CRIT, f"{estimator}: per-sample variance {empirical:.5g} vs exact {exact:.5g} (z = {z:.2f})"


@pytest.mark.parametrize("name", COSTS)
def test_score_function_variance_grows_with_dimension_and_the_coupled_pair_does_not(name):
    dims = [1, 8, 64]
    score = [exact_per_sample_variance("score_function", name, d, 1.0) for d in dims]
    coupled = [exact_per_sample_variance("measure_valued", name, d, 1.0) for d in dims]
    # E[S²] E[s²] grows like D² (D at μ = 0 for the sum); at D = 1 the quartic's own x1⁴ term dominates.
    assert all(b > a for a, b in zip(score, score[1:])) and score[-1] > 5 * score[0]
    assert coupled == pytest.approx([coupled[0]] * len(dims), rel=1e-12)
    # Measured: the score function's 95% intervals at D = 1 and D = 64 are disjoint; the pair's overlap.
    low_d, high_d = (draw(e, problem_for(name, d), 1.0, 1, 2000, seed_for("growth", e, name, d))
                     for e, d in [("score_function", 1), ("score_function", 64)])  # fmt: skip
    assert variance_interval(low_d)[1] < variance_interval(high_d)[0]
    pair_1, pair_64 = (draw("measure_valued", problem_for(name, d), 1.0, 1, 2000, seed_for("growth", name, d)) for d in (1, 64))
    (a_low, a_high), (b_low, b_high) = variance_interval(pair_1), variance_interval(pair_64)
    assert a_low < b_high and b_low < a_high


# --------------------------------------------------------------------------------------------------------
# Finite differences: the O(h²) bias is exact and closed-form where L is a polynomial in θ.


@pytest.mark.parametrize("step", [0.5, 1.0])  # bias 1 and 4, ~18 and ~70 standard errors
def test_finite_difference_bias_is_the_central_difference_error_of_the_quartic(step):
    # L(θ) = θ⁴ + 6θ²σ² + const: (L(θ+h) − L(θ−h)) / 2h = 4θ³ + 12θσ² + 4θh², so the bias is 4θh².
    problem, theta = problem_for("diag_gaussian_quartic", 3), 1.0
    x = draw("finite_difference", problem, theta, 4, 20_000, seed_for("fd", step), step=step)
    se = x.std(ddof=1) / math.sqrt(x.size)
    expected_bias = 4 * theta * step**2
    assert abs(x.mean() - problem.gradient(theta) - expected_bias) / se < Z_CRIT
    assert abs(x.mean() - problem.gradient(theta)) / se > Z_CRIT  # and the bias is measurable, not zero


def test_finite_difference_on_seed_dependent_includes_the_cost_and_is_biased_by_three_h_squared():
    # L = 3θ³ + 3θ, L‴ = 18: bias L‴h²/6 = 3h². f depends on θ too, and the difference sees it.
    problem, theta, step = make_problem("seed_dependent"), 2.0, 0.5
    x = draw("finite_difference", problem, theta, 4, 20_000, seed_for("fd-seed"), step=step)
    z = (x.mean() - (problem.gradient(theta) + 3 * step**2)) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT


def test_finite_difference_with_common_random_numbers_is_exact_on_a_linear_cost():
    # f = Σ x_d: the shared ε cancels, leaving (2h)/(2h) = 1 in every estimate; independent draws would not.
    x = draw("finite_difference", problem_for("diag_gaussian_sum", 8), 0.3, 3, 100, 5, step=0.1)
    assert np.allclose(x, 1.0, rtol=0, atol=1e-12)
    assert not ESTIMATORS["finite_difference"].unbiased_for(problem_for("diag_gaussian_sum", 8))

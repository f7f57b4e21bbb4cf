"""IndeCateR and double control variates against exact values: unbiasedness by seeded Monte Carlo (float64) within
one Bonferroni-corrected z bound for the file, IndeCateR's zero variance where each coordinate is summed out
exactly, its D·K cost, double_cv's exact moments against brute force over every tuple of outcomes, its
unbiasedness at any fixed α, its registered exact moments at the fitted α̂ it runs at (in float32 and float64), RLOO
at pilot = 0, and its fitted α against the variance-optimal one."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from estimators import ESTIMATORS, custom_estimator, estimate, make_problem
from estimators.core.estimator import Method
from estimators.exact import Exact, exact_moments
from estimators.exact.discrete import _sigmoid, cost_of, latent, outcomes
from estimators.exact.indecater import double_cv_moments, optimal_alpha, outcome_slopes
from estimators.exact.quadrature import u_statistic_moments
from estimators.methods.double_cv import double_cv_parts, fitted_alpha
from tests.helpers import bonferroni_z

MULTI = {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}
CASES = [("bernoulli_toy", {}, -1.5), ("bernoulli_toy", {"t": 0.499}, 1.0), ("bernoulli_multi", {}, 0.5),
         ("bernoulli_multi", MULTI, -1.0), ("categorical_toy", {}, 0.3),
         ("categorical_toy", {"logit1": -1.0, "logit2": 0.5, "logit3": 2.0}, -0.5)]  # fmt: skip
N, M = 4, 20000
UNBIASED = [(name, problem, params, theta) for name in ("indecater", "double_cv") for problem, params, theta in CASES
            if ESTIMATORS[name].skip_reason(make_problem(problem, params=params), N) is None]  # fmt: skip
FIXED_ALPHA = [(family, params, theta, alpha) for family, params, theta in CASES[:4] for alpha in (-1.0, 0.5)]
DTYPES = (torch.float32, torch.float64)
# Each case tests the mean against the truth and the variance against exact (the pilot cases once per dtype).
Z = bonferroni_z(2 * (len(UNBIASED) + len(FIXED_ALPHA) + len(DTYPES)))


def _estimates(name: str, problem, theta: float, seed: int = 0, m: int = M, dtype=torch.float64, options=None):
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[name], problem, theta, N, m, dtype=dtype, options=options)


def _variance_bound(g: torch.Tensor) -> tuple[float, float]:
    """(sample variance, Z times its standard error from the sample's own fourth moment: kurtosis-aware)."""
    centred = (g.double() - g.double().mean()) ** 2
    return float(centred.mean()), Z * float(centred.std()) / math.sqrt(len(g))


def _check_moments(g: torch.Tensor, gradient: float, exact_var: float) -> None:
    assert abs(float(g.double().mean()) - gradient) <= Z * math.sqrt(exact_var / len(g))
    variance, bound = _variance_bound(g)
    assert abs(variance - exact_var) <= bound


@pytest.mark.parametrize("name, family, params, theta", UNBIASED)
def test_unbiased_and_exact_moments(name, family, params, theta):
    problem = make_problem(family, params=params)
    g = _estimates(name, problem, theta)
    exact = exact_moments(problem, Method(name), theta, N)
    assert isinstance(exact, Exact), exact
    assert exact.mean == pytest.approx(problem.gradient(theta), abs=1e-12)
    if exact.var < 1e-25:  # an exact sum per sample: every estimate is the gradient up to rounding
        assert torch.allclose(g, torch.full_like(g, problem.gradient(theta)), atol=1e-12)
        return
    _check_moments(g, problem.gradient(theta), exact.var)


@pytest.mark.parametrize("family, params, theta, alpha", FIXED_ALPHA)
def test_double_cv_is_unbiased_at_any_fixed_alpha(family, params, theta, alpha):
    # α = −1 is the plain first-order Taylor term; the estimator is unbiased for every α, fitted or not.
    def surrogate(problem, th, n):
        rloo, taylor = double_cv_parts(problem, th, n)
        return rloo + alpha * taylor

    problem = make_problem(family, params=params)
    torch.manual_seed(1)
    g = estimate(custom_estimator("double_cv_fixed", surrogate), problem, theta, N, M, dtype=torch.float64)
    _check_moments(g, problem.gradient(theta), double_cv_moments(problem, theta, alpha, N)[1])


def _brute_force_double_cv(problem, theta: float, alpha: float, n: int) -> tuple[float, float]:
    """Mean and variance of double_cv over every N-tuple of outcomes, from its definition sample by sample."""
    where = latent(problem, theta)
    b, prob, score = outcomes(where)
    f, g = cost_of(problem, theta, where, b), outcome_slopes(problem, theta, where, b)
    mu = _sigmoid(where.logits)
    d_mean = mu * (1 - mu) * where.d_logits
    values, weights = [], []
    for tup in itertools.product(range(len(b)), repeat=n):
        idx = list(tup)
        others = (g[idx].sum(axis=0) - g[idx]) / (n - 1)
        r = f[idx] + alpha * np.sum(others * (b[idx] - mu), axis=1)
        baseline = (r.sum() - r) / (n - 1)
        values.append(np.mean((r - baseline) * score[idx]) - alpha * g[idx].mean(axis=0) @ d_mean)
        weights.append(np.prod(prob[idx]))
    values, weights = np.array(values), np.array(weights)
    mean = weights @ values
    return float(mean), float(weights @ (values - mean) ** 2)


@pytest.mark.parametrize("family, params, theta, n", [("bernoulli_toy", {}, -1.5, 2), ("bernoulli_toy", {}, 0.7, 4),
                                                      ("bernoulli_multi", MULTI, -1.0, 3)])  # fmt: skip
def test_double_cv_exact_moments_match_brute_force_enumeration(family, params, theta, n):
    problem = make_problem(family, params=params)
    for alpha in (-1.0, 0.3):
        mean, var = double_cv_moments(problem, theta, alpha, n)
        brute_mean, brute_var = _brute_force_double_cv(problem, theta, alpha, n)
        assert mean == pytest.approx(brute_mean, rel=1e-10, abs=1e-15)
        assert var == pytest.approx(brute_var, rel=1e-10)


def test_u_statistic_moments_match_brute_force_enumeration():
    rng = np.random.default_rng(0)
    weights = rng.random(3)
    weights /= weights.sum()
    kernel = rng.normal(size=(3, 3, 3))
    kernel = sum(np.transpose(kernel, order) for order in itertools.permutations(range(3))) / 6
    n = 5
    values, probabilities = [], []
    for tup in itertools.product(range(3), repeat=n):
        values.append(np.mean([kernel[tup[a], tup[b], tup[c]] for a, b, c in itertools.combinations(range(n), 3)]))
        probabilities.append(np.prod(weights[list(tup)]))
    values, probabilities = np.array(values), np.array(probabilities)
    mean = probabilities @ values
    assert u_statistic_moments(weights, kernel, n) == pytest.approx((mean, probabilities @ (values - mean) ** 2),
                                                                   rel=1e-12)  # fmt: skip


@pytest.mark.parametrize("family, params, theta", CASES)
def test_indecater_is_exact_on_separable_costs(family, params, theta):
    # f is a sum over coordinates here (or one categorical choice), so f(x_d = 1) − f(x_d = 0) ignores x_−d.
    problem = make_problem(family, params=params)
    g = _estimates("indecater", problem, theta)
    assert float(g.var()) < 1e-25
    assert float(g[0]) == pytest.approx(problem.gradient(theta), abs=1e-12)


@pytest.mark.parametrize("family, params, evaluations", [("bernoulli_toy", {}, 2), ("bernoulli_multi", {}, 8),
                                                         ("categorical_toy", {}, 4)])  # fmt: skip
def test_indecater_costs_d_times_k_evaluations(family, params, evaluations):
    assert ESTIMATORS["indecater"].cost_evaluations(make_problem(family, params=params)) == evaluations


def test_double_cv_without_a_pilot_is_rloo_and_its_fitted_alpha_beats_it():
    problem = make_problem("bernoulli_toy", params={"t": 0.45})
    theta = -1.5
    torch.manual_seed(0)
    without = estimate(ESTIMATORS["double_cv"], problem, theta, N, 2000, dtype=torch.float64, options={"pilot": 0})
    assert torch.allclose(without, _estimates("score_function_loo", problem, theta, m=2000), atol=1e-14)
    assert exact_moments(problem, Method("double_cv", (("pilot", 0.0),)), theta, N).var == pytest.approx(
        exact_moments(problem, Method("score_function_loo"), theta, N).var, rel=1e-10)
    # The variance is a quadratic in α with its minimum at α*: the pilot's α̂ lies near it and beats RLOO (α = 0) here.
    best = optimal_alpha(problem, theta, N)
    fitted = fitted_alpha(problem, torch.tensor(theta, dtype=torch.float64), N, 1000)
    at = {a: double_cv_moments(problem, theta, a, N)[1] for a in (best, fitted, 0.0, best - 0.01, best + 0.01)}
    assert at[best] <= min(at[best - 0.01], at[best + 0.01]) and at[fitted] < at[0.0]


AUDIT = ("bernoulli_toy", {"t": 0.45}, 0.0)  # the cell where the exact variance at α* was found 0.35% low


def test_double_cv_exact_moments_are_at_the_fitted_alpha_shared_by_every_dtype():
    family, params, theta = AUDIT
    problem = make_problem(family, params=params)
    alphas = {fitted_alpha(problem, torch.tensor(theta, dtype=dtype), N, 1000) for dtype in DTYPES}
    assert len(alphas) == 1  # a float32 and a float64 cell run at one α̂: one exact value serves both
    (fitted,) = alphas
    exact = exact_moments(problem, Method("double_cv"), theta, N)
    assert isinstance(exact, Exact) and exact.mean == pytest.approx(problem.gradient(theta), abs=1e-12)
    assert exact.var == pytest.approx(double_cv_moments(problem, theta, fitted, N)[1], rel=1e-12)
    # α̂ is not α*, and the variance at α̂ is above the optimum by more than rounding: the value at α* is not it.
    best = optimal_alpha(problem, theta, N)
    assert abs(fitted - best) > 1e-3 and exact.var > double_cv_moments(problem, theta, best, N)[1] * (1 + 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_double_cv_measured_variance_is_its_exact_variance_at_the_fitted_alpha(dtype):
    # A 20-latent pilot fits α̂ far from α* here (the variance there is ~1.5 times the optimum's): the seeded Monte
    # Carlo of the estimator as the pipeline runs it covers the registered exact variance and excludes α*'s.
    family, params, theta = AUDIT
    problem, method = make_problem(family, params=params), Method("double_cv", (("pilot", 20.0),))
    exact = exact_moments(problem, method, theta, N)
    assert isinstance(exact, Exact), exact
    g = _estimates("double_cv", problem, theta, seed=2, dtype=dtype, options={"pilot": 20})
    _check_moments(g, problem.gradient(theta), exact.var)
    variance, bound = _variance_bound(g)
    assert abs(variance - double_cv_moments(problem, theta, optimal_alpha(problem, theta, N), N)[1]) > bound


def test_double_cv_skips_categorical_latents():
    assert "Bernoulli" in ESTIMATORS["double_cv"].skip_reason(make_problem("categorical_toy"), N)

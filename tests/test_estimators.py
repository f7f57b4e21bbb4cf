"""Seeded statistical tests of the estimators against exact values.

Tolerances come from confidence bounds: a z-test for the mean and a kurtosis-based standard error for the
variance, with a Bonferroni-corrected critical value so the whole file raises a false alarm with
probability <= 1% (the seeds are fixed, so a given commit passes or fails deterministically).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from bench.statistics import kurtosis, summarize, variance_interval, variance_relative_se
from estimators import ESTIMATORS, EstimatorError, estimate, make_problem
from estimators.engine import WORKING_VALUES_PER_SAMPLE
from tests.helpers import bonferroni_z, gauss_expectation, gaussian_params, problem_cases

CASES = problem_cases()
N_BIAS = 4  # samples per estimate in the bias tests: >= 2 so the leave-one-out baseline applies
# Every registered estimator (a user's aside) that declares itself unbiased on a case and applies there: the
# registry decides, so a new estimator is tested here without editing this file.
UNBIASED_CASES = [
    pytest.param(name, *case.values, id=f"{case.id}-{name}")
    for case in CASES
    for name in ESTIMATORS.names(exclude=("user", "plugin"))
    if ESTIMATORS[name].unbiased_for(case.values[0]) and ESTIMATORS[name].skip_reason(case.values[0], N_BIAS) is None
]
# The estimators whose per-sample variances are written out below (exact_per_sample_variance).
INDEPENDENT_SAMPLE = ["naive", "score_function", "pathwise", "measure_valued"]
# Mean tests + variance tests in this file, corrected together.
Z_CRIT = bonferroni_z(len(UNBIASED_CASES) + len(CASES) * len(INDEPENDENT_SAMPLE) + 20)


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


def draw(name, problem, theta, n, m, seed):
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[name], problem, theta, n, m, dtype=torch.float64).numpy()


# --------------------------------------------------------------------------------------------------------
# Exact per-sample variances by quadrature, written from the estimators' formulas (not their code).


def _f(problem, theta):
    return lambda x: problem.cost(torch.as_tensor(x, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64)).numpy()


def _d_theta_cost(problem, theta, h=1e-6):
    f_plus, f_minus = _f(problem, theta + h), _f(problem, theta - h)
    return lambda x: (f_plus(x) - f_minus(x)) / (2 * h)


def _variance(g, mu, sigma):
    mean = gauss_expectation(g, mu, sigma)
    return gauss_expectation(lambda x: (g(x) - mean) ** 2, mu, sigma)


def exact_per_sample_variance(name: str, problem, theta: float) -> float:
    mu, sigma = gaussian_params(problem, theta)
    f, d_cost = _f(problem, theta), _d_theta_cost(problem, theta)
    moves_with = {"seed_fixed": None, "seed_dependent": "mu"}.get(problem.name, problem.wrt)
    if name == "naive" or moves_with is None:  # naive is ∂f; where p does not depend on θ, every estimator is
        return _variance(d_cost, mu, sigma)
    if name == "score_function":
        score = (lambda x: (x - mu) / sigma**2) if moves_with == "mu" else (lambda x: (x - mu) ** 2 / sigma**3 - 1 / sigma)
        return _variance(lambda x: f(x) * score(x) + d_cost(x), mu, sigma)
    if name == "pathwise":
        h = 1e-6 * max(1.0, sigma)
        dfdx = lambda x: (f(x + h) - f(x - h)) / (2 * h)  # noqa: E731
        dxdtheta = (lambda x: 1.0) if moves_with == "mu" else (lambda x: (x - mu) / sigma)
        return _variance(lambda x: dfdx(x) * dxdtheta(x) + d_cost(x), mu, sigma)
    if name == "measure_valued":
        extra = _variance(d_cost, mu, sigma) if problem.cost_depends_on_theta else 0.0  # an independent sample
        if moves_with == "mu":
            c = 1 / (sigma * math.sqrt(2 * math.pi))
            g = lambda w: c * (f(mu + sigma * w) - f(mu - sigma * w))  # noqa: E731
            rayleigh = lambda w: w * math.exp(-(w**2) / 2)  # noqa: E731
            m1 = integrate.quad(lambda w: float(g(np.asarray(w))) * rayleigh(w), 0, 40, limit=400)[0]
            m2 = integrate.quad(lambda w: float(g(np.asarray(w))) ** 2 * rayleigh(w), 0, 40, limit=400)[0]
            return m2 - m1**2 + extra
        u, wu = np.polynomial.legendre.leggauss(64)
        u, wu = (u + 1) / 2, wu / 2  # Gauss–Legendre on [0, 1]

        def moments(m: float) -> tuple[float, float]:
            g = (f(mu + sigma * m) - f(mu + sigma * m * u)) / sigma
            return float(np.sum(wu * g)), float(np.sum(wu * g**2))

        maxwell = lambda m: m**2 * math.exp(-(m**2) / 2) / math.sqrt(2 * math.pi)  # noqa: E731  on ℝ
        m1 = integrate.quad(lambda m: moments(m)[0] * maxwell(m), -40, 40, points=[0.0], limit=400)[0]
        m2 = integrate.quad(lambda m: moments(m)[1] * maxwell(m), -40, 40, points=[0.0], limit=400)[0]
        return m2 - m1**2 + extra
    raise AssertionError(name)


def test_exact_variances_of_the_seed_problem_match_the_design_card():
    problem = make_problem("seed_dependent")
    assert exact_per_sample_variance("pathwise", problem, 3.0) == pytest.approx(1314, rel=1e-6)
    assert exact_per_sample_variance("score_function", problem, 3.0) == pytest.approx(22860, rel=1e-6)
    assert exact_per_sample_variance("naive", problem, 3.0) == pytest.approx(342, rel=1e-6)
    assert exact_per_sample_variance("pathwise", make_problem("seed_fixed"), 3.0) == pytest.approx(18, rel=1e-6)


# --------------------------------------------------------------------------------------------------------
# Bias.


@pytest.mark.slow
@pytest.mark.parametrize("name, problem, theta", UNBIASED_CASES)
def test_unbiased_estimators_are_unbiased(name, problem, theta):
    x = draw(name, problem, theta, N_BIAS, 20_000, seed_for(name, problem.label, theta))
    if np.ptp(x) == 0:  # e.g. the coupled MVD pair on a cost symmetric about μ: exact with zero variance
        assert x[0] == pytest.approx(problem.gradient(theta), abs=1e-12)
        return
    z = (x.mean() - problem.gradient(theta)) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"{name} mean {x.mean():.6g} vs exact {problem.gradient(theta):.6g} (z = {z:.2f})"


@pytest.mark.parametrize("theta", [1.0, 2.0, 3.0, -1.5])
def test_naive_is_detected_as_biased_on_seed_dependent_by_minus_six_theta_squared(theta):
    problem = make_problem("seed_dependent")
    x = draw("naive", problem, theta, 10, 4000, seed_for("naive-bias", theta))
    summary = summarize(x, problem.gradient(theta))
    assert summary.biased, f"naive not flagged biased at θ={theta} (z = {summary.bias_z:.2f})"
    # The measured bias is the dropped product-rule term: −6θ² (the notebook's sign error would give +6θ²).
    z = (summary.bias - (-6 * theta**2)) / summary.bias_se
    assert abs(z) < Z_CRIT, f"bias {summary.bias:.4g} vs −6θ² = {-6 * theta**2:.4g} (z = {z:.2f})"


def test_naive_is_unbiased_when_p_does_not_depend_on_theta():
    problem = make_problem("seed_fixed")
    x = draw("naive", problem, 3.0, 10, 4000, seed_for("naive-fixed"))
    assert not summarize(x, problem.gradient(3.0)).biased


def test_naive_returns_zero_when_theta_only_enters_the_distribution():
    problem = make_problem("gaussian_cos", "mu")
    x = draw("naive", problem, 1.0, 10, 100, seed_for("naive-zero"))
    assert np.all(x == 0.0)
    summary = summarize(x, problem.gradient(1.0))
    assert summary.biased and summary.bias_z == math.inf


# --------------------------------------------------------------------------------------------------------
# Variance.


@pytest.mark.slow
@pytest.mark.parametrize("name", INDEPENDENT_SAMPLE)
@pytest.mark.parametrize("problem, theta", CASES)
def test_per_sample_variance_matches_exact_quadrature(name, problem, theta):
    exact = exact_per_sample_variance(name, problem, theta)
    x = draw(name, problem, theta, 1, 20_000, seed_for("var", name, problem.label, theta))
    if exact < 1e-12:
        assert np.var(x) < 1e-12
        return
    empirical = float(np.var(x, ddof=1))
    se = variance_relative_se(kurtosis(x), x.size)
    z = math.log(empirical / exact) / se
    assert abs(z) < Z_CRIT, f"{name}: per-sample variance {empirical:.5g} vs exact {exact:.5g} (z = {z:.2f})"


@pytest.mark.parametrize("name", ["score_function", "pathwise", "measure_valued", "naive"])
def test_variance_scales_as_one_over_n(name):
    problem, theta = make_problem("seed_dependent"), 2.0
    exact = exact_per_sample_variance(name, problem, theta)
    ns = np.array([1, 10, 100, 1000])
    log_var, var_of_log = [], []
    for n in ns:
        x = draw(name, problem, theta, int(n), 4000, seed_for("1/N", name, int(n)))
        s2 = float(np.var(x, ddof=1))
        se = variance_relative_se(kurtosis(x), x.size)
        # N · Var(N-sample estimate) is the exact per-sample variance at every N.
        assert abs(math.log(s2 * n / exact)) < Z_CRIT * se, f"N={n}: N·var {s2 * n:.5g} vs {exact:.5g}"
        log_var.append(math.log(s2))
        var_of_log.append(se**2)
    # Slope of log variance on log N, with its standard error from the independent per-N errors.
    lx = np.log(ns)
    centred = lx - lx.mean()
    slope = float(np.sum(centred * np.array(log_var)) / np.sum(centred**2))
    slope_se = math.sqrt(float(np.sum(centred**2 * np.array(var_of_log))) / float(np.sum(centred**2)) ** 2)
    assert abs(slope + 1) < Z_CRIT * slope_se, f"slope {slope:.4f} ± {slope_se:.4f}, expected −1"


def test_leave_one_out_baseline_reduces_score_function_variance():
    problem = make_problem("seed_dependent")
    plain = draw("score_function", problem, 3.0, 10, 4000, seed_for("loo", "plain"))
    loo = draw("score_function_loo", problem, 3.0, 10, 4000, seed_for("loo", "loo"))
    assert variance_interval(loo)[1] < variance_interval(plain)[0]


@pytest.mark.parametrize(
    "name, problem_name, wrt, theta, n, m",
    [
        ("pathwise", "gaussian_quadratic", "mu", 1.0, 1, 800),  # Gaussian estimates
        ("score_function", "seed_dependent", None, 3.0, 10, 800),  # moderately heavy tails (κ ≈ 4)
        ("score_function", "seed_dependent", None, 3.0, 1, 4000),  # heavy tails (κ ≈ 14), M as auto would pick
    ],
)
def test_variance_interval_covers_the_exact_variance_about_95_percent_of_the_time(name, problem_name, wrt, theta, n, m):
    problem = make_problem(problem_name, wrt)
    exact = exact_per_sample_variance(name, problem, theta) / n
    repeats = 300
    x = draw(name, problem, theta, n, m * repeats, seed_for("coverage", name, problem_name, n)).reshape(repeats, m)
    covered = sum(low <= exact <= high for low, high in map(variance_interval, x))
    # Accept what a correct 95% interval produces with probability >= 99.9% (two-sided binomial bounds).
    low_ok, high_ok = stats.binom.ppf([0.0005, 0.9995], repeats, 0.95)
    assert low_ok <= covered <= high_ok, f"coverage {covered}/{repeats}, acceptable [{low_ok:.0f}, {high_ok:.0f}]"


# --------------------------------------------------------------------------------------------------------
# Mechanics.


def test_estimates_are_reproducible():
    problem = make_problem("seed_dependent")
    a = draw("pathwise", problem, 3.0, 100, 500, 7)
    b = draw("pathwise", problem, 3.0, 100, 500, 7)
    assert np.array_equal(a, b)


# bytes per float64 sample in the memory plan: budgets below are counted in samples.
SAMPLE_BYTES = WORKING_VALUES_PER_SAMPLE * 8


@pytest.mark.slow
@pytest.mark.parametrize("n, budget_samples, name", [
    (100, 1000, "pathwise"),  # replicates split: 10 per call
    (1000, 300, "pathwise"),  # one estimate's samples split: partial sums of 300, 300, 300, 100
    (1000, 300, "score_function"),
])  # fmt: skip
def test_chunking_bounds_memory_without_changing_the_distribution(n, budget_samples, name):
    problem = make_problem("seed_dependent")
    torch.manual_seed(8 + n + budget_samples)
    chunked = estimate(ESTIMATORS[name], problem, 3.0, n, 2000, dtype=torch.float64,
                       memory_budget=budget_samples * SAMPLE_BYTES).numpy()  # fmt: skip
    assert chunked.shape == (2000,)
    z = (chunked.mean() - 84.0) / (chunked.std() / math.sqrt(chunked.size))
    assert abs(z) < Z_CRIT
    exact = exact_per_sample_variance(name, problem, 3.0)
    assert abs(math.log(np.var(chunked) * n / exact)) < Z_CRIT * variance_relative_se(kurtosis(chunked), chunked.size)


def test_chunk_plan_fits_the_budget_and_never_splits_dependent_samples():
    from estimators.engine import plan_chunks

    assert plan_chunks(100, 50, 8, 8 * 1000, True) == (10, 100)
    assert plan_chunks(100, 5, 8, 8 * 10**6, True) == (5, 100)  # everything in one call
    assert plan_chunks(10**9, 3, 8, 8 * 10**6, True) == (1, 10**6)  # 10^9 samples in 1000 calls of 10^6
    assert plan_chunks(10**9, 3, 8, 8 * 10**6, False) == (1, 10**9)  # leave-one-out: cannot split


@pytest.mark.parametrize("n, m", [(0, 10), (-3, 10), (10, 0)])
def test_estimate_rejects_non_positive_sizes(n, m):
    with pytest.raises(EstimatorError, match="must be >= 1"):
        estimate(ESTIMATORS["pathwise"], make_problem("seed_dependent"), 1.0, n, m)


def test_estimate_rejects_inapplicable_estimator_and_invalid_theta():
    with pytest.raises(EstimatorError, match="leave-one-out baseline needs N >= 2"):
        estimate(ESTIMATORS["score_function_loo"], make_problem("seed_dependent"), 1.0, 1, 10)
    with pytest.raises(ValueError, match="theta must be a finite number"):
        estimate(ESTIMATORS["pathwise"], make_problem("seed_dependent"), math.nan, 10, 10)


def test_measure_valued_counts_two_cost_evaluations_per_gaussian_parameter():
    mvd = ESTIMATORS["measure_valued"]
    assert mvd.cost_evaluations(make_problem("gaussian_cos", "mu")) == 2
    assert mvd.cost_evaluations(make_problem("gaussian_cos", "sigma")) == 2
    assert mvd.cost_evaluations(make_problem("seed_dependent")) == 3  # + ∂f, since f depends on θ
    assert ESTIMATORS["pathwise"].cost_evaluations(make_problem("gaussian_cos", "mu")) == 1


@pytest.mark.parametrize("moves", ["loc", "scale", "both", "diagonal"])
def test_closed_form_gaussian_score_has_the_gradient_of_log_prob(moves):
    # score_function's Gaussian shortcut must differentiate to exactly what autograd through log_prob gives.
    from torch.distributions import Independent, Normal

    from estimators.core.distributions import weighted_score_sum

    theta = torch.tensor([0.3, 1.7, -2.0], dtype=torch.float64, requires_grad=True)
    loc = {"loc": theta, "scale": torch.zeros_like(theta), "both": theta, "diagonal": theta}[moves]
    scale = {"loc": torch.ones_like(theta), "scale": theta.abs() + 0.5, "both": theta.abs() + 0.5,
             "diagonal": torch.ones_like(theta)}[moves]  # fmt: skip
    dist = Normal(loc, scale)
    if moves == "diagonal":  # θ moves the first of two coordinates; the second stays N(1, 2²)
        dist = Independent(Normal(torch.stack([loc, torch.ones_like(theta)], -1), torch.stack([scale, 2 * scale], -1)), 1)
    x = dist.sample((50,))
    weights = torch.randn(x.shape[: x.dim() - len(dist.event_shape)], dtype=torch.float64)
    (expected,) = torch.autograd.grad((weights * dist.log_prob(x)).sum(), theta, retain_graph=True)
    (actual,) = torch.autograd.grad(weighted_score_sum(dist, x, weights).sum(), theta)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)

"""estimators.exact against independent derivations: closed forms (polynomial costs, the seed problems), brute-force
enumeration of N draws (discrete RLOO), and Monte Carlo through the shipped estimators (``estimate``), whose
mean must lie within a z bound of the exact mean and whose sample variance within a kurtosis-aware interval of
the exact variance, z Bonferroni-corrected over every Monte Carlo check of this file (family-wise α = 0.001)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from estimators import Method, estimate, get_estimator, make_problem
from estimators.exact import Exact, exact_moments, register_exact
from estimators.exact.seed import seed_dependent_per_sample, seed_fixed_per_sample

FAMILY_WISE_ALPHA = 1e-3
REPLICATES = 20000
STEP = (("step", 0.1),)
RELAXED = (("temperature", 0.5),)

# (family, wrt, params, θ, estimator, options, scheme, N): each cell is two checks (mean, variance).
MONTE_CARLO_CASES = [
    ("seed_dependent", None, {}, 1.5, "naive", (), "none", 3),
    ("seed_dependent", None, {}, 1.5, "score_function_loo", (), "none", 4),
    ("seed_dependent", None, {}, 1.5, "measure_valued", (), "none", 3),
    ("seed_dependent", None, {}, 1.5, "pathwise", (), "antithetic", 4),
    ("seed_dependent", None, {}, 1.5, "score_function", (), "delta_cv", 3),
    ("seed_fixed", None, {}, 0.7, "finite_difference", STEP, "none", 2),
    ("gaussian_quadratic", "sigma", {}, 0.8, "score_function", (), "none", 4),
    ("gaussian_quadratic", "sigma", {}, 0.8, "measure_valued", (), "none", 4),
    ("gaussian_exp", "mu", {}, 0.6, "pathwise", (), "none", 4),
    ("gaussian_exp", "mu", {}, 0.6, "measure_valued", (), "none", 4),
    ("gaussian_exp", "mu", {}, 0.6, "finite_difference", STEP, "none", 4),
    ("gaussian_exp", "sigma", {}, 1.2, "score_function_loo", (), "none", 5),
    ("gaussian_exp", "sigma", {}, 1.2, "score_function", (), "antithetic", 4),
    ("gaussian_cos", "sigma", {"k": 2.0}, 0.9, "measure_valued", (), "none", 4),
    ("gaussian_cos", "sigma", {"k": 2.0}, 0.9, "score_function_loo", (), "delta_cv", 4),
    ("gaussian_cos", "mu", {"k": 2.0}, 0.4, "pathwise", (), "delta_cv", 4),
    ("gaussian_cos", "mu", {"k": 2.0}, 0.4, "measure_valued", (), "delta_cv", 4),
]
DISCRETE_MONTE_CARLO_CASES = [
    ("bernoulli_toy", None, {}, 0.3, "score_function", (), "none", 4),
    ("bernoulli_toy", None, {}, 0.3, "arm", (), "none", 4),
    ("bernoulli_toy", None, {}, 0.3, "gumbel_softmax", RELAXED, "none", 4),
    ("bernoulli_toy", None, {}, 0.3, "rebar", (("eta", 1.0), ("temperature", 0.5)), "none", 2),
    ("bernoulli_multi", None, {}, -0.5, "arm", (), "none", 3),
    ("bernoulli_multi", None, {}, -0.5, "disarm", (), "none", 3),
    ("bernoulli_multi", None, {}, -0.5, "straight_through", RELAXED, "none", 3),
    ("bernoulli_multi", None, {}, -0.5, "score_function_loo", (), "none", 3),
    ("categorical_toy", None, {"logit2": 0.5}, 0.2, "score_function_loo", (), "none", 3),
    ("categorical_toy", None, {"logit2": 0.5}, 0.2, "gumbel_softmax", RELAXED, "none", 3),
    ("categorical_toy", None, {"logit1": -0.4}, -0.6, "straight_through", (("temperature", 0.7),), "none", 2),
    ("categorical_toy", None, {"logit2": 0.5}, 0.2, "rebar", (("eta", 0.6), ("temperature", 0.5)), "none", 3),
    ("bernoulli_multi", None, {}, -0.5, "rebar", (("eta", 1.0), ("temperature", 0.5)), "none", 3),
]
DIAGONAL_MONTE_CARLO_CASES = [
    ("diag_gaussian_quartic", None, {"dim": 6.0, "mu": 0.4}, 0.5, "score_function", (), "none", 4),
    ("diag_gaussian_quartic", None, {"dim": 6.0, "mu": 0.4}, 0.5, "score_function_loo", (), "none", 4),
    ("diag_gaussian_quartic", None, {"dim": 6.0, "mu": 0.4}, 0.5, "measure_valued", (), "none", 4),
    ("diag_gaussian_sum", None, {"dim": 8.0, "mu": 0.2}, -0.3, "finite_difference", STEP, "none", 4),
]
IMPLICIT_MONTE_CARLO_CASES = [
    ("gamma", "shape", {"power": 1.0}, 1.5, "pathwise", (), "none", 4),
    ("beta", "b", {"power": 0.0}, 2.0, "score_function", (), "none", 4),
    ("dirichlet", "alpha1", {"power": 0.0}, 1.3, "pathwise", (), "none", 4),
    ("gamma", "shape", {"power": 0.0}, 0.1, "pathwise", (), "none", 4),  # small α: x down to e^-1000
    ("gamma", "shape", {"power": 2.0}, 0.1, "score_function", (), "none", 4),
]
MONTE_CARLO_CASES += DISCRETE_MONTE_CARLO_CASES + DIAGONAL_MONTE_CARLO_CASES + IMPLICIT_MONTE_CARLO_CASES
# The deliberately wrong inputs below are checks too (they must fail), so they count in the correction.
WRONG_INPUT_CASES = 2

Z = NormalDist().inv_cdf(1 - FAMILY_WISE_ALPHA / (2 * 2 * (len(MONTE_CARLO_CASES) + WRONG_INPUT_CASES)))


def _problem(family: str, wrt: str | None, params: dict):
    return make_problem(family, wrt, params)


def monte_carlo(problem, theta: float, estimator: str, options, scheme: str, n_samples: int, seed: int = 0):
    torch.manual_seed(seed)
    return estimate(get_estimator(estimator), problem, theta, n_samples, REPLICATES, dtype=torch.float64,
                    options=dict(options), variance_reduction=scheme)  # fmt: skip


def disagreements(estimates: torch.Tensor, exact: Exact) -> list[str]:
    """What of (mean, variance) the Monte Carlo rejects: the mean outside exact ± z·sqrt(Var/M), the sample
    variance outside exact ± z·se(s²), se(s²) = sqrt((m4 − s⁴)/M) from the sample (valid for any kurtosis)."""
    m = estimates.numel()
    mean = float(estimates.mean())
    centred = estimates - estimates.mean()
    s2 = float((centred**2).sum()) / (m - 1)
    m4 = float((centred**4).mean())
    found = []
    if abs(mean - exact.mean) > Z * math.sqrt(max(exact.var, s2) / m) + 1e-12 * max(1.0, abs(exact.mean)):
        found.append(f"mean {mean:.6g} vs exact {exact.mean:.6g} (se {math.sqrt(s2 / m):.3g})")
    se_var = math.sqrt(max(m4 - s2**2, 0.0) / m)
    if abs(s2 - exact.var) > Z * se_var + 1e-12 * max(1.0, exact.var):
        found.append(f"variance {s2:.6g} vs exact {exact.var:.6g} (se {se_var:.3g})")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("family, wrt, params, theta, estimator, options, scheme, n_samples", MONTE_CARLO_CASES)
def test_exact_moments_agree_with_monte_carlo(family, wrt, params, theta, estimator, options, scheme, n_samples):
    problem = _problem(family, wrt, params)
    exact = exact_moments(problem, Method(estimator, options, scheme), theta, n_samples)
    assert isinstance(exact, Exact), exact
    estimates = monte_carlo(problem, theta, estimator, options, scheme, n_samples)
    assert not disagreements(estimates, exact)


@pytest.mark.slow
def test_the_monte_carlo_check_rejects_wrong_exact_values():
    # Exact moments at the wrong θ, and at the wrong N, must be told apart from the estimator's real ones.
    problem = make_problem("gaussian_exp", "mu")
    estimates = monte_carlo(problem, 0.6, "pathwise", (), "none", 4, seed=1)
    wrong_theta = exact_moments(problem, Method("pathwise"), 0.7, 4)
    wrong_n = exact_moments(problem, Method("pathwise"), 0.6, 3)
    assert any("mean" in reason for reason in disagreements(estimates, wrong_theta))
    assert any("variance" in reason for reason in disagreements(estimates, wrong_n))


# ---------------------------------------------------------------------------------------------------------
# Second derivations: closed forms and the known values.


@pytest.mark.parametrize("estimator", ["naive", "pathwise", "score_function", "finite_difference", "measure_valued"])
@pytest.mark.parametrize("family", ["seed_fixed", "seed_dependent"])
def test_seed_quadrature_matches_closed_forms(family, estimator):
    closed = seed_dependent_per_sample if family == "seed_dependent" else seed_fixed_per_sample
    theta, n = 1.7, 5
    options = STEP if estimator == "finite_difference" else ()
    exact = exact_moments(make_problem(family), Method(estimator, options), theta, n)
    mean, var = closed(estimator, theta, 0.1)
    assert exact.mean == pytest.approx(mean, rel=1e-10)
    assert exact.var == pytest.approx(var / n, rel=1e-10)


def test_seed_dependent_known_per_sample_variances_at_theta_3():
    problem = make_problem("seed_dependent")
    for estimator, variance in (("pathwise", 1314), ("score_function", 22860), ("naive", 342)):
        assert exact_moments(problem, Method(estimator), 3.0, 1).var == pytest.approx(variance, rel=1e-12)


@pytest.mark.parametrize("mu, sigma, k", [(0.8, 1.0, 1.0), (-0.3, 0.5, 2.0)])
def test_gaussian_quadratic_matches_polynomial_closed_forms(mu, sigma, k):
    # x = μ + σε, a = μ − k: pathwise (μ) 2(x − k), variance 4σ²; score function (μ) (x − k)² ε/σ, variance
    # a⁴/σ² + 14a² + 15σ²; pathwise (σ) 2(x − k)ε, variance 4a² + 8σ².
    a, n = mu - k, 3
    by_mu = make_problem("gaussian_quadratic", "mu", {"k": k, "sigma": sigma})
    by_sigma = make_problem("gaussian_quadratic", "sigma", {"k": k, "mu": mu})
    assert exact_moments(by_mu, Method("pathwise"), mu, n).var == pytest.approx(4 * sigma**2 / n, rel=1e-10)
    score = exact_moments(by_mu, Method("score_function"), mu, n)
    assert score.mean == pytest.approx(2 * a, rel=1e-10)
    assert score.var == pytest.approx((a**4 / sigma**2 + 14 * a**2 + 15 * sigma**2) / n, rel=1e-10)
    assert exact_moments(by_sigma, Method("pathwise"), sigma, n).var == pytest.approx((4 * a**2 + 8 * sigma**2) / n, rel=1e-10)


def test_reasons_for_what_has_no_exact_form():
    problem = make_problem("gaussian_exp", "mu")
    assert "QMC" in exact_moments(problem, Method("pathwise", (), "qmc"), 0.5, 8)
    assert isinstance(exact_moments(problem, Method("score_function", (), "optimal_baseline"), 0.5, 8), str)
    assert isinstance(exact_moments(problem, Method("score_function_loo"), 0.5, 1), str)  # needs N >= 2
    assert isinstance(exact_moments(make_problem("bayes_logreg"), Method("pathwise"), 0, 8), str)


def test_a_user_registers_exact_moments_through_the_same_door():
    """A user's estimator (registered as module:attribute would be) gets exact moments from a registered function."""
    from estimators import ESTIMATORS, custom_estimator
    from estimators.exact.registry import EXACT_MOMENTS

    pathwise = get_estimator("pathwise")
    mine = custom_estimator("my_pathwise", pathwise.surrogate, applies=pathwise.skip_reason)

    @register_exact("my_module:my_pathwise", "seed_fixed")
    def exact(problem, method, theta, n_samples):
        return Exact(3.0, 36.0 * theta**2 / n_samples)  # any numbers: what is tested is the door, not the math

    try:
        ESTIMATORS.register("my_module:my_pathwise", mine, "user")
        moments = exact_moments(make_problem("seed_fixed"), Method("my_module:my_pathwise"), 2.0, 4)
        assert moments == Exact(3.0, 36.0)
        assert isinstance(exact_moments(make_problem("seed_dependent"), Method("my_module:my_pathwise"), 2.0, 4), str)
    finally:
        ESTIMATORS.unregister("my_module:my_pathwise")
        EXACT_MOMENTS.unregister("my_module:my_pathwise on seed_fixed")


# ---------------------------------------------------------------------------------------------------------
# Discrete: enumeration of all N-draw outcomes, the problems' own exact relaxation means, unbiasedness.


def _rloo_by_enumerating_every_draw(problem, theta: float, n_samples: int) -> tuple[float, float]:
    """RLOO's mean and variance over all K^N tuples of N draws of a categorical (one-hot outcomes)."""
    import itertools

    from estimators.exact.discrete import cost_of, latent, outcomes

    where = latent(problem, theta)
    values, prob, score = outcomes(where)
    f = cost_of(problem, theta, where, values)
    first = second = 0.0
    for draw in itertools.product(range(len(prob)), repeat=n_samples):
        weight = math.prod(prob[i] for i in draw)
        fs = [f[i] for i in draw]
        estimate = sum((fs[n] - (sum(fs) - fs[n]) / (n_samples - 1)) * score[draw[n]] for n in range(n_samples)) / n_samples
        first += weight * estimate
        second += weight * estimate**2
    return first, second - first**2


@pytest.mark.parametrize("family, n_samples", [("categorical_toy", 3), ("categorical_toy", 4), ("bernoulli_multi", 2),
                                               ("bernoulli_toy", 5)])  # fmt: skip
def test_rloo_u_statistic_matches_enumeration_of_every_draw(family, n_samples):
    problem = make_problem(family, None, {"logit1": 0.4, "logit3": -0.7} if family == "categorical_toy" else {})
    exact = exact_moments(problem, Method("score_function_loo"), 0.3, n_samples)
    mean, var = _rloo_by_enumerating_every_draw(problem, 0.3, n_samples)
    assert exact.mean == pytest.approx(mean, rel=1e-10, abs=1e-15)
    assert exact.var == pytest.approx(var, rel=1e-8)


@pytest.mark.parametrize("estimator", ["gumbel_softmax", "straight_through"])
@pytest.mark.parametrize("family", ["bernoulli_toy", "bernoulli_multi"])
def test_relaxed_means_match_the_problems_exact_bias(family, estimator):
    problem = make_problem(family)
    for theta, temperature in ((0.3, 0.5), (-1.2, 1.0)):
        exact = exact_moments(problem, Method(estimator, (("temperature", temperature),)), theta, 4)
        assert exact.mean == pytest.approx(problem.exact_mean(theta, estimator, {"temperature": temperature}), rel=1e-8)


@pytest.mark.parametrize("estimator, options", [("score_function", ()), ("arm", ()), ("disarm", ()),
                                                ("rebar", (("eta", 0.7), ("temperature", 0.5)))])  # fmt: skip
def test_unbiased_discrete_estimators_mean_is_the_gradient(estimator, options):
    problem = make_problem("bernoulli_toy")
    for theta in (0.3, -2.0):
        assert exact_moments(problem, Method(estimator, options), theta, 3).mean == pytest.approx(problem.gradient(theta), rel=1e-8)


CATEGORICAL = {"logit1": -0.3, "logit2": 0.5}


def _relaxed_objective(problem, theta: float, temperature: float) -> float:
    """E f(softmax((log p + G)/τ)) on the module's Gumbel-difference rule: Gumbel-softmax's mean is its θ-derivative."""
    import numpy as np

    from estimators.exact.discrete import cost_of, difference_rule, latent

    where = latent(problem, theta)
    log_p = where.logits - np.logaddexp.reduce(where.logits)
    d, weights = difference_rule((np.inf,) * (len(log_p) - 1), 16)
    scores = (log_p[:, None] + np.vstack([np.zeros((1, d.shape[1])), d])) / temperature
    soft = np.exp(scores - scores.max(axis=0))
    soft /= soft.sum(axis=0)
    return float(np.sum(weights * cost_of(problem, theta, where, soft.T)) / np.sum(weights))


@pytest.mark.parametrize("theta, temperature", [(0.2, 0.5), (-1.5, 1.0)])
def test_categorical_relaxed_mean_is_the_derivative_of_the_relaxed_objective(theta, temperature):
    # The pathwise derivative of a smooth relaxation averages to the derivative of its mean; straight-through
    # equals Gumbel-softmax here because the cost is linear (∂f/∂x = c wherever it is taken).
    problem, h = make_problem("categorical_toy", None, CATEGORICAL), 1e-4
    relaxed = (("temperature", temperature),)
    exact = exact_moments(problem, Method("gumbel_softmax", relaxed), theta, 3)
    above, below = (_relaxed_objective(problem, theta + step, temperature) for step in (h, -h))
    slope = (above - below) / (2 * h)
    assert exact.mean == pytest.approx(slope, rel=1e-6)
    straight = exact_moments(problem, Method("straight_through", relaxed), theta, 3)
    assert (straight.mean, straight.var) == pytest.approx((exact.mean, exact.var), rel=1e-12)


@pytest.mark.parametrize("family, params", [("categorical_toy", CATEGORICAL), ("bernoulli_multi", {"t1": 0.3})])
def test_rebar_mean_is_the_gradient_on_the_multivariate_latents(family, params):
    problem = make_problem(family, None, params)
    for theta, eta in ((0.3, 1.0), (-2.0, 0.4)):
        exact = exact_moments(problem, Method("rebar", (("eta", eta), ("temperature", 0.5))), theta, 3)
        assert exact.mean == pytest.approx(problem.gradient(theta), rel=1e-6)


def test_relaxation_quadratures_converge_when_the_nodes_double():
    from estimators.exact import discrete
    from estimators.exact.registry import keyed

    categorical = keyed(make_problem("categorical_toy", None, CATEGORICAL))
    multi = keyed(make_problem("bernoulli_multi"))
    pairs = [
        (discrete._relaxed_categorical(categorical, "gumbel_softmax", 0.5, 0.2),
         discrete._relaxed_categorical(categorical, "gumbel_softmax", 0.5, 0.2, 2 * discrete.DIFFERENCE_NODES)),
        (discrete._rebar_categorical(categorical, 0.5, 1.0, -1.0),
         discrete._rebar_categorical(categorical, 0.5, 1.0, -1.0, 2 * discrete.DIFFERENCE_NODES)),
        (discrete._rebar(multi, 0.5, 1.0, -0.5), discrete._rebar(multi, 0.5, 1.0, -0.5, 2 * discrete.REBAR_NODES)),
    ]
    for (_, var), (_, doubled) in pairs:
        assert abs(var - doubled) < 1e-6 * doubled

@pytest.mark.parametrize("dim", [1, 4, 64])
def test_diagonal_sum_matches_its_closed_forms_in_d(dim):
    # Score function (θ + (D−1)μ)²/σ² + D + 1, pathwise 0, the coupled pair (4 − π)/π, all per sample.
    mu, sigma, theta = 0.3, 1.5, 0.5
    problem = make_problem("diag_gaussian_sum", None, {"dim": float(dim), "mu": mu, "sigma": sigma})
    score = exact_moments(problem, Method("score_function"), theta, 1)
    assert score.var == pytest.approx((theta + (dim - 1) * mu) ** 2 / sigma**2 + dim + 1, rel=1e-10)
    assert exact_moments(problem, Method("pathwise"), theta, 1).var == pytest.approx(0.0, abs=1e-20)
    pair = exact_moments(problem, Method("measure_valued"), theta, 1)
    assert pair.var == pytest.approx((4 - math.pi) / math.pi, rel=1e-10)


SMALL_TO_LARGE = (0.01, 0.1, 0.5, 1.0, 3.0)  # concentrations; 0.01 and 0.1 once gave negative variances


@pytest.mark.parametrize("family, wrt, params", [("gamma", "shape", {"power": 0.0}), ("gamma", "shape", {"power": 2.0}),
                                                 ("gamma", "rate", {"power": 1.0}), ("beta", "a", {"power": 0.0}),
                                                 ("beta", "b", {"power": 2.0}), ("dirichlet", "alpha1", {"power": 0.0})])  # fmt: skip
@pytest.mark.parametrize("estimator", ["score_function", "pathwise"])
def test_implicit_means_are_the_gradient(family, wrt, params, estimator):
    problem = make_problem(family, wrt, params)
    for theta in SMALL_TO_LARGE:
        assert exact_moments(problem, Method(estimator), theta, 2).mean == pytest.approx(problem.gradient(theta), rel=1e-7)


def _psi(order: int, x: float) -> float:
    from scipy.special import polygamma

    return float(polygamma(order, x))


def _log_score_variance(cumulants: tuple[float, float, float], m: float) -> float:
    # g = (c + m)·c with c = log x − E log x, E c² = κ2, E c³ = κ3, E c⁴ = κ4 + 3κ2²: Var g = κ4 + 2κ2² + 2mκ3 + m²κ2.
    k2, k3, k4 = cumulants
    return k4 + 2 * k2**2 + 2 * m * k3 + m**2 * k2


def _gamma_power_moment(shape: float, rate: float, k: float, log_power: int) -> float:
    """E[x^k (log x)^j], j ∈ {0, 2}, x ~ Gamma(shape, rate): tilting by x^k gives Gamma(shape + k, rate)."""
    from scipy.special import gammaln

    scale = math.exp(gammaln(shape + k) - gammaln(shape)) * rate**-k
    if log_power == 0:
        return scale
    return scale * (_psi(1, shape + k) + (_psi(0, shape + k) - math.log(rate)) ** 2)


@pytest.mark.parametrize("alpha", SMALL_TO_LARGE)
def test_implicit_score_function_matches_closed_forms(alpha):
    rate, n = 1.5, 3
    score = Method("score_function")
    # Gamma shape, f = log x: the score is c, the term (c + m)·c, log x's cumulants ψ^(k−1)(α).
    m = _psi(0, alpha) - math.log(rate)
    got = exact_moments(make_problem("gamma", "shape", {"power": 0.0, "rate": rate}), score, alpha, n)
    assert got.mean == pytest.approx(_psi(1, alpha), rel=1e-9)
    assert got.var == pytest.approx(_log_score_variance((_psi(1, alpha), _psi(2, alpha), _psi(3, alpha)), m) / n, rel=1e-7)
    # Gamma shape, f = x^p: E[x^{2p}(log βx − ψ(α))²] under the x^{2p} tilt, Gamma(α + 2p, β).
    for p in (1.0, 2.0):
        problem = make_problem("gamma", "shape", {"power": p, "rate": rate})
        second = _gamma_power_moment(alpha, rate, 2 * p, 0) * (_psi(1, alpha + 2 * p) + (_psi(0, alpha + 2 * p) - _psi(0, alpha)) ** 2)
        mean = problem.gradient(alpha)
        assert exact_moments(problem, score, alpha, n).var == pytest.approx((second - mean**2) / n, rel=1e-7)
    # Gamma rate (θ = β, shape α), f = log x: term log x·(α/β − x), expanded in E[x^k log² x].
    problem = make_problem("gamma", "rate", {"power": 0.0, "shape": alpha})
    a_b = alpha / rate
    second = sum(c * _gamma_power_moment(alpha, rate, k, 2) for k, c in ((0, a_b**2), (1, -2 * a_b), (2, 1.0)))
    assert exact_moments(problem, score, rate, n).var == pytest.approx((second - 1 / rate**2) / n, rel=1e-7)
    # Beta(a, b) wrt a, f = log x: as gamma with cumulants ψ^(k−1)(a) − ψ^(k−1)(a + b); and dirichlet's marginal.
    for family, wrt, b, params in (("beta", "a", 0.7, {"b": 0.7}), ("dirichlet", "alpha1", 0.4, {"rest": 0.2})):
        problem = make_problem(family, wrt, {"power": 0.0, **params})
        kappa = tuple(_psi(k, alpha) - _psi(k, alpha + b) for k in (1, 2, 3))
        got = exact_moments(problem, score, alpha, n)
        assert got.mean == pytest.approx(kappa[0], rel=1e-9)
        assert got.var == pytest.approx(_log_score_variance(kappa, _psi(0, alpha) - _psi(0, alpha + b)) / n, rel=1e-7)


def test_implicit_small_concentration_asymptotics_match_the_cdf_difference():
    # Where x (or βx) is tiny the pathwise velocity switches from a difference of the CDF to F's leading power
    # term; just above the switch, where the difference is still accurate, both must agree.
    from estimators.exact import implicit

    cases = ((implicit._gamma(0.1, 1.0, "first", 0.0), -40.0), (implicit._beta(0.1, 0.7, "first", 0.0), -40.0),
             (implicit._beta(0.7, 0.1, "second", 0.0), 40.0), (implicit._beta(0.1, 0.7, "second", 0.0), -40.0),
             (implicit._beta(0.7, 0.1, "first", 0.0), 40.0))
    for setup, t in cases:
        asymptotic = setup.pathwise_term(np.array([t]))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(implicit, "ASYMPTOTIC_BELOW", 1e-300)
            difference = setup.pathwise_term(np.array([t]))
        assert asymptotic == pytest.approx(difference, rel=1e-6)

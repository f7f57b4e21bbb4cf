"""Gamma, Beta and Dirichlet problems (implicit reparameterisation): closed forms against independent numerics,
seeded unbiasedness of the unbiased estimators, and what small concentrations and overflow do to a cell.

Tolerances: quadrature agreement to ~1e-7 relative; estimator means by a z-test with a Bonferroni-corrected
critical value over every statistical check in this file (family false-alarm probability <= 1%).
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from bench.grid import Cell
from bench.measure import measure_cell
from estimators import ESTIMATORS, EstimatorError, ProblemError, estimate, make_problem
from tests.helpers import bonferroni_z, problem_cases

# (family, wrt, params, θ values): every family and wrt, log x (power 0), x, x² and a negative power, and
# concentrations below and above 1 (a density singular or vanishing at 0).
CASES = [
    ("gamma", "shape", {"power": 0.0, "rate": 2.0}, (0.3, 2.5)),
    ("gamma", "shape", {"power": 1.0, "rate": 1.0}, (0.5,)),
    ("gamma", "shape", {"power": 2.0, "rate": 0.5}, (1.5,)),
    ("gamma", "shape", {"power": -0.5, "rate": 1.0}, (3.0,)),
    ("gamma", "rate", {"power": 0.0, "shape": 0.7}, (1.3,)),
    ("gamma", "rate", {"power": 2.0, "shape": 2.0}, (0.8,)),
    ("beta", "a", {"power": 0.0, "b": 0.6}, (0.4, 3.0)),
    ("beta", "a", {"power": 2.0, "b": 2.0}, (1.5,)),
    ("beta", "b", {"power": 1.0, "a": 2.0}, (0.5,)),
    ("beta", "b", {"power": 0.0, "a": 1.2}, (2.0,)),
    ("dirichlet", "alpha1", {"power": 0.0, "rest": 1.5, "components": 3}, (0.6, 2.0)),
    ("dirichlet", "alpha1", {"power": 1.0, "rest": 0.5, "components": 5}, (1.2,)),
]
PROBLEM_CASES = problem_cases(CASES)
N_BIAS = 4  # samples per estimate in the bias tests
# Every registered estimator declared unbiased on a case that applies there: the registry decides, so a new
# estimator is tested here without editing this file.
UNBIASED_CASES = [
    pytest.param(name, *case.values, id=f"{case.id}-{name}")
    for case in PROBLEM_CASES
    for name in ESTIMATORS.names(exclude=("user", "plugin"))
    if ESTIMATORS[name].unbiased_for(case.values[0]) and ESTIMATORS[name].skip_reason(case.values[0], N_BIAS) is None
]
Z_CRIT = bonferroni_z(len(UNBIASED_CASES) + 4)


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


# --------------------------------------------------------------------------------------------------------
# Independent numerics: scipy densities and quadrature, and score functions written out by hand here.


def _f(power: float):
    return np.log if power == 0 else (lambda x: x**power)


def _quad_01(g, a: float, b: float) -> float:
    """∫_0^1 g(x) x^(a−1) (1−x)^(b−1) dx. Substituting x = u^(1/a) on [0, ½] and 1 − x = v^(1/b) on [½, 1]
    absorbs the algebraic end-point singularities (x^(a−1) dx = du / a), leaving at most log singularities,
    which adaptive Gauss–Kronrod quadrature handles without evaluating the end points."""
    options = {"epsabs": 1e-13, "epsrel": 1e-11, "limit": 500}
    low = integrate.quad(lambda u: g(u ** (1 / a)) * (1 - u ** (1 / a)) ** (b - 1) / a, 0, 0.5**a, **options)[0]
    high = integrate.quad(lambda v: g(1 - v ** (1 / b)) * (1 - v ** (1 / b)) ** (a - 1) / b, 0, 0.5**b, **options)[0]
    return low + high


def numerical_expectation(problem, theta: float, g) -> float:
    """E[g(x)] under the problem's distribution at θ, by quadrature over scipy's density parameters."""
    p = problem.params
    if problem.name == "gamma":
        shape, rate = (theta, p["rate"]) if problem.wrt == "shape" else (p["shape"], theta)
        norm = math.exp(shape * math.log(rate) - special.gammaln(shape))
        # [0, 1] with the x^(shape−1) singularity as a quadrature weight, then the tail against scipy's pdf.
        head = _quad_01(lambda x: g(x) * math.exp(-rate * x), shape, 1.0) * norm
        tail = integrate.quad(lambda x: g(x) * stats.gamma.pdf(x, shape, scale=1 / rate), 1, np.inf,
                              epsabs=1e-13, epsrel=1e-11, limit=500)[0]  # fmt: skip
        return head + tail
    if problem.name == "beta":
        a, b = (theta, p["b"]) if problem.wrt == "a" else (p["a"], theta)
        return _quad_01(g, a, b) / special.beta(a, b)
    # Dirichlet: a double integral over the simplex {x1 + x2 <= 1} (x3 = 1 − x1 − x2 for K = 3), against
    # scipy's Dirichlet density, so the Beta-marginal identity the code relies on is itself checked.
    assert problem.name == "dirichlet" and p["components"] == 3
    alpha = np.array([theta, p["rest"], p["rest"]])
    # scipy's density at one interior point fixes the normalising constant of the hand-written one below.
    probe = np.array([0.2, 0.3, 0.5])
    log_norm = math.log(stats.dirichlet.pdf(probe, alpha)) - float(np.sum((alpha - 1) * np.log(probe)))

    def inner(x1: float) -> float:
        def density(x2: float) -> float:
            x3 = 1.0 - x1 - x2
            if x2 <= 0 or x3 <= 0:
                return 0.0
            return math.exp(log_norm + (alpha[0] - 1) * math.log(x1) + (alpha[1] - 1) * math.log(x2) + (alpha[2] - 1) * math.log(x3))

        return integrate.quad(density, 0, 1 - x1, epsabs=1e-12, epsrel=1e-10, limit=200)[0]

    return integrate.quad(lambda x1: g(x1) * inner(x1), 0, 1, epsabs=1e-11, epsrel=1e-9, limit=200)[0]


def hand_score(problem, theta: float):
    """∂_θ log p_θ(x) written out from the densities (not from torch's log_prob)."""
    p, psi = problem.params, special.digamma
    if problem.name == "gamma" and problem.wrt == "shape":
        return lambda x: math.log(p["rate"]) + np.log(x) - psi(theta)
    if problem.name == "gamma":
        return lambda x: p["shape"] / theta - x
    if problem.name == "beta" and problem.wrt == "a":
        return lambda x: np.log(x) - psi(theta) + psi(theta + p["b"])
    if problem.name == "beta":
        return lambda x: np.log1p(-x) - psi(theta) + psi(theta + p["a"])
    # Dirichlet in x1 alone: its marginal is Beta(α1, (K−1)·rest) (checked by the double integral above).
    others = (p["components"] - 1) * p["rest"]
    return lambda x: np.log(x) - psi(theta) + psi(theta + others)


def _marginal(problem, theta: float):
    """The same problem seen through x1's Beta marginal, for 1-D quadrature of the score identity."""
    if problem.name != "dirichlet":
        return problem
    others = (problem.params["components"] - 1) * problem.params["rest"]
    return make_problem("beta", "a", {"power": problem.params["power"], "b": others})


def _dirichlet_exact_cases():
    return [c for c in PROBLEM_CASES if c.values[0].name != "dirichlet" or c.values[0].params["components"] == 3]


@pytest.mark.parametrize("problem, theta", _dirichlet_exact_cases())
def test_objective_matches_quadrature_over_the_density(problem, theta):
    expected = numerical_expectation(problem, theta, _f(problem.params["power"]))
    assert problem.objective(theta) == pytest.approx(expected, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("problem, theta", PROBLEM_CASES)
def test_gradient_matches_finite_difference_of_the_quadrature_objective(problem, theta):
    f = _f(problem.params["power"])
    marginal = _marginal(problem, theta)
    h = 1e-4 * theta
    fd = (numerical_expectation(marginal, theta + h, f) - numerical_expectation(marginal, theta - h, f)) / (2 * h)
    # Central difference: O(h²) truncation plus quadrature error / h; both below 1e-6 relative here.
    assert problem.gradient(theta) == pytest.approx(fd, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("problem, theta", PROBLEM_CASES)
def test_gradient_matches_quadrature_of_the_score_identity(problem, theta):
    f, marginal = _f(problem.params["power"]), _marginal(problem, theta)
    score = hand_score(problem, theta)
    identity = numerical_expectation(marginal, theta, lambda x: f(x) * score(x))
    assert problem.gradient(theta) == pytest.approx(identity, rel=1e-7, abs=1e-9)


def test_closed_forms_at_known_values():
    # E[log x] for Gamma(1, 1) is −γ; d/dα ψ(α) at 1 is π²/6. E[x] for Beta(a, 1) is a/(a+1).
    gamma_log = make_problem("gamma", "shape", {"power": 0.0, "rate": 1.0})
    assert gamma_log.objective(1.0) == pytest.approx(-np.euler_gamma, rel=1e-12)
    assert gamma_log.gradient(1.0) == pytest.approx(math.pi**2 / 6, rel=1e-12)
    beta_mean = make_problem("beta", "a", {"power": 1.0, "b": 1.0})
    assert beta_mean.objective(3.0) == pytest.approx(0.75, rel=1e-12)
    assert beta_mean.gradient(3.0) == pytest.approx(1 / 16, rel=1e-10)


# --------------------------------------------------------------------------------------------------------
# Estimators.


@pytest.mark.slow
@pytest.mark.parametrize("name, problem, theta", UNBIASED_CASES)
def test_unbiased_estimators_are_unbiased_through_implicit_reparameterisation(name, problem, theta):
    torch.manual_seed(seed_for(name, problem.label, theta))
    x = estimate(ESTIMATORS[name], problem, theta, N_BIAS, 10_000, dtype=torch.float64).numpy()
    z = (x.mean() - problem.gradient(theta)) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"{name} mean {x.mean():.6g} vs exact {problem.gradient(theta):.6g} (z = {z:.2f})"


@pytest.mark.parametrize("name", ["gamma", "beta", "dirichlet"])
def test_gaussian_only_estimators_skip_and_naive_is_expected_biased(name):
    problem = make_problem(name)
    assert "Gaussians only" in ESTIMATORS["measure_valued"].skip_reason(problem, 10)
    assert "location–scale sampler" in ESTIMATORS["finite_difference"].skip_reason(problem, 10)
    assert ESTIMATORS["pathwise"].skip_reason(problem, 10) is None
    assert not ESTIMATORS["naive"].unbiased_for(problem)
    assert ESTIMATORS["measure_valued"].cost_evaluations(problem) == 0  # does not apply; no AttributeError


@pytest.mark.parametrize(
    "name, wrt, params, message",
    [
        ("gamma", "rate", {"power": -1.0, "shape": 0.5}, "E[x^-1] exists only for shape > 1"),
        ("gamma", "shape", {"rate": 0.0}, "rate must be > 0"),
        ("beta", "a", {"b": -1.0}, "b must be > 0"),
        ("dirichlet", None, {"components": 2.5}, "components (K, the Dirichlet's dimension) must be an integer >= 2"),
        ("dirichlet", None, {"rest": 0.0}, "rest must be > 0"),
    ],
)
def test_invalid_parameters_are_refused_with_what_is_allowed(name, wrt, params, message):
    with pytest.raises(ProblemError, match=re.escape(message)):
        make_problem(name, wrt, params)


def test_theta_below_the_moment_condition_is_refused():
    problem = make_problem("gamma", "shape", {"power": -0.5})
    with pytest.raises(ProblemError, match=r"outside the valid range \(0.5, inf\).*shape \+ power > 0"):
        problem.check_theta(0.4)


# --------------------------------------------------------------------------------------------------------
# Numerical health: a cell always yields a row, with non-finite estimates counted.


def _cell(problem: str, wrt: str, params: dict, theta: float, estimator: str, n: int, m: int, dtype: str) -> Cell:
    return Cell(problem, tuple(sorted(make_problem(problem, wrt, params).params.items())), wrt, theta, estimator, n,
                "cpu", dtype, m)  # fmt: skip


@pytest.mark.parametrize("estimator", ["score_function", "pathwise"])
def test_small_shape_in_float32_is_a_measured_bias_with_a_note_not_a_crash(estimator):
    # Gamma(0.01): 42% of draws lie below float32's smallest normal number, where torch clamps them, so
    # E[log x] and its gradient are biased in float32; no estimate is NaN or inf.
    row = measure_cell(_cell("gamma", "shape", {"power": 0.0}, 0.01, estimator, 100, 400, "float32"), 0)
    assert row["status"] == "ok" and row["n_nonfinite"] == 0
    assert row["biased"] and row["expected_unbiased"]
    assert "0.42 of the draws" in row["note"] and "torch clamps samples" in row["note"]


def test_small_shape_in_float64_where_the_clamp_is_negligible_is_unbiased():
    # Gamma(0.1) in float64: P(x < 2.2e-308) ≈ 1.8e-31, so nothing is clamped in practice.
    row = measure_cell(_cell("gamma", "shape", {"power": 0.0}, 0.1, "pathwise", 100, 2000, "float64"), 0)
    assert row["status"] == "ok" and row["n_nonfinite"] == 0
    assert "1.8e-31 in float64" in row["note"]  # the note warns about float32 only
    assert abs(row["bias_z"]) < Z_CRIT


def test_overflow_to_inf_is_counted_and_the_cell_still_gives_a_row():
    # x = G/β, G ~ Gamma(3), β = 1e-12: the pathwise estimate ∂_β (G/β)² = −2G²/β³ exceeds float32's 3.4e38
    # once G > 13, probability e^−13 (1 + 13 + 13²/2) ≈ 2.2e-4 per sample: a few of 4000 estimates of N = 10.
    row = measure_cell(_cell("gamma", "rate", {"power": 2.0, "shape": 3.0}, 1e-12, "pathwise", 10, 4000, "float32"), 0)
    assert row["status"] == "ok" and row["n_nonfinite"] > 0
    assert f"{row['n_nonfinite']} non-finite estimates excluded" in row["note"]


def test_cells_whose_estimates_are_all_non_finite_are_recorded_with_their_count():
    # β = 1e-15: every pathwise estimate −2G²/β³ is ~1e46, beyond float32, hence inf.
    row = measure_cell(_cell("gamma", "rate", {"power": 2.0, "shape": 3.0}, 1e-15, "pathwise", 10, 200, "float32"), 0)
    assert row["status"] == "skipped" and row["n_nonfinite"] == 200 and row["n_replicates"] == 200
    assert "numerically unusable in float32: 200 of 200 estimates are NaN or ±inf" in row["note"]


def test_finite_difference_refuses_an_invalid_step():
    problem = make_problem("gaussian_cos", "sigma")
    with pytest.raises(EstimatorError, match=r"θ ± step inside the valid range \(0, inf\)"):
        estimate(ESTIMATORS["finite_difference"], problem, 0.05, 10, 10, options={"step": 0.1})
    with pytest.raises(EstimatorError, match="step of estimator finite_difference .* must be a number > 0, got -1"):
        estimate(ESTIMATORS["finite_difference"], problem, 1.0, 10, 10, options={"step": -1.0})

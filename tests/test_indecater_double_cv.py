"""IndeCateR and double control variates against exact values: unbiasedness by seeded Monte Carlo (float64) within
one Bonferroni-corrected z bound for the file, IndeCateR's zero variance where each coordinate is summed out
exactly, its D·K cost, double_cv's equality with RLOO where the Taylor slope vanishes, and the exact moments."""

from __future__ import annotations

import math

import pytest
import torch

from estimators import ESTIMATORS, estimate, make_problem
from estimators.core.estimator import Method
from estimators.exact import Exact, exact_moments
from tests.helpers import bonferroni_z

MULTI = {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}
CASES = [("bernoulli_toy", {}, -1.5), ("bernoulli_toy", {"t": 0.499}, 1.0), ("bernoulli_multi", {}, 0.5),
         ("bernoulli_multi", MULTI, -1.0), ("categorical_toy", {}, 0.3),
         ("categorical_toy", {"logit1": -1.0, "logit2": 0.5, "logit3": 2.0}, -0.5)]  # fmt: skip
N, M = 4, 20000
UNBIASED = [(name, problem, params, theta) for name in ("indecater", "double_cv") for problem, params, theta in CASES
            if ESTIMATORS[name].skip_reason(make_problem(problem, params=params), N) is None]  # fmt: skip
Z = bonferroni_z(2 * len(UNBIASED))  # each case tests the mean against the truth and the variance against exact


def _estimates(name: str, problem, theta: float, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[name], problem, theta, N, M, dtype=torch.float64)


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
    assert abs(float(g.mean()) - problem.gradient(theta)) <= Z * math.sqrt(exact.var / M)
    # The sample variance's standard error from the sample's own fourth moment.
    centred = (g - g.mean()) ** 2
    assert abs(float(centred.mean()) - exact.var) <= Z * float(centred.std()) / math.sqrt(M)


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


def test_double_cv_equals_rloo_where_the_taylor_slope_vanishes():
    # f = (x − t)² has ∇f(μ) = 2(μ − t) = 0 at σ(θ) = t: the control variate is constant and its mean term is 0.
    t = 0.45
    problem = make_problem("bernoulli_toy", params={"t": t})
    theta = math.log(t / (1 - t))
    assert torch.allclose(_estimates("double_cv", problem, theta), _estimates("score_function_loo", problem, theta),
                          atol=1e-14)  # fmt: skip
    assert exact_moments(problem, Method("double_cv"), theta, N).var == pytest.approx(
        exact_moments(problem, Method("score_function_loo"), theta, N).var, rel=1e-10)


def test_double_cv_skips_categorical_latents():
    assert "Bernoulli" in ESTIMATORS["double_cv"].skip_reason(make_problem("categorical_toy"), N)

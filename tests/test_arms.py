"""ARMS against exact values: its equality with DisARM at N = 2 sample by sample, unbiasedness and the exact variance
by seeded Monte Carlo (float64) within one Bonferroni-corrected z bound for the file, the copula's moments by two
derivations, and where it does not apply."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from estimators import ESTIMATORS, estimate, make_problem
from estimators.core.estimator import Method
from estimators.exact import Exact, exact_moments
from estimators.exact.arms import score_sum_moments
from estimators.methods.arms import arms_coefficient, copula_diagonal, flat_dirichlet
from tests.helpers import bonferroni_z

MULTI = {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}
CASES = [("bernoulli_toy", {}, -1.5), ("bernoulli_toy", {"t": 0.499}, 1.0), ("bernoulli_multi", {}, 0.5),
         ("bernoulli_multi", MULTI, -1.0), ("bernoulli_multi", MULTI, 2.5)]  # fmt: skip
GROUP_SIZES = (3, 8)
M = 20000
MOMENT_CASES = [(*case, n) for case in CASES for n in GROUP_SIZES]
Z = bonferroni_z(2 * len(MOMENT_CASES))  # each case tests the mean against the truth and the variance against exact


def _estimates(name: str, problem, theta: float, n: int, seed: int = 0, m: int = M) -> torch.Tensor:
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[name], problem, theta, n, m, dtype=torch.float64)


@pytest.mark.parametrize("family, params, theta", [*CASES, ("bernoulli_toy", {}, 0.0), ("bernoulli_multi", MULTI, 0.0)])
def test_arms_at_two_samples_is_disarm_sample_by_sample(family, params, theta):
    # The Dirichlet copula at N = 2 is (v, 1 − v) from the one uniform DisARM draws for its pair.
    problem = make_problem(family, params=params)
    arms, disarm = _estimates("arms", problem, theta, 2, m=2000), _estimates("disarm", problem, theta, 1, m=2000)
    assert torch.allclose(arms, disarm, rtol=1e-12, atol=1e-15)
    assert exact_moments(problem, Method("arms"), theta, 2).var == pytest.approx(
        exact_moments(problem, Method("disarm"), theta, 1).var, rel=1e-10, abs=1e-30)


@pytest.mark.parametrize("family, params, theta, n", MOMENT_CASES)
def test_unbiased_and_exact_moments(family, params, theta, n):
    problem = make_problem(family, params=params)
    g = _estimates("arms", problem, theta, n, seed=n)
    exact = exact_moments(problem, Method("arms"), theta, n)
    assert isinstance(exact, Exact), exact
    assert exact.mean == pytest.approx(problem.gradient(theta), rel=1e-10, abs=1e-15)
    assert abs(float(g.mean()) - problem.gradient(theta)) <= Z * math.sqrt(exact.var / M)
    # The sample variance's standard error from the sample's own fourth moment.
    centred = (g - g.mean()) ** 2
    assert abs(float(centred.mean()) - exact.var) <= Z * float(centred.std()) / math.sqrt(M)


def test_more_antithetic_samples_lower_the_exact_variance_below_rloo():
    # At equal N the copula's negative dependence must beat independent samples (RLOO) on one Bernoulli.
    problem = make_problem("bernoulli_toy")
    for theta in (-2.0, 0.5, 2.0):
        for n in (2, 4, 16):
            arms = exact_moments(problem, Method("arms"), theta, n).var
            rloo = exact_moments(problem, Method("score_function_loo"), theta, n).var
            assert arms < rloo, (theta, n, arms, rloo)


@pytest.mark.parametrize("n", [2, 3, 5, 16, 100])
def test_the_copulas_moments_agree_between_their_two_derivations(n):
    # E[T] from the rare count's factorial moments must be (N − 1)(π − C(π, π)) from the pairwise covariance.
    for pi in (1e-6, 0.01, 0.2, 0.4999, 0.5):
        mean, var = score_sum_moments(pi, n)
        diagonal = float(copula_diagonal(torch.tensor(math.log(pi), dtype=torch.float64), n))
        assert mean == pytest.approx((n - 1) * (pi - diagonal), rel=1e-9)
        assert var >= -1e-12 * mean**2


def test_flat_dirichlet_has_uniform_copula_marginals():
    # u = (1 − d)^{N−1} is uniform for d ~ Beta(1, N − 1): its mean ½ and variance 1/12 within their bounds.
    torch.manual_seed(4)
    d = flat_dirichlet(6, torch.zeros(50000, dtype=torch.float64))
    assert torch.allclose(d.sum(dim=0), torch.ones(50000, dtype=torch.float64))
    u = ((1 - d) ** 5).numpy().ravel()[:50000]  # one coordinate per draw, so the values are independent
    z = bonferroni_z(2)
    assert abs(u.mean() - 0.5) <= z * math.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) <= z * float(np.std((u - 0.5) ** 2)) / math.sqrt(u.size)


def test_arms_declares_where_it_does_not_apply():
    arms = ESTIMATORS["arms"]
    assert "binary" in arms.skip_reason(make_problem("categorical_toy"), 4)
    assert "N >= 2" in arms.skip_reason(make_problem("bernoulli_toy"), 1)
    assert arms.skip_reason(make_problem("bernoulli_multi"), 2) is None
    assert not arms.samples_independent and arms.coupled_samples_reason


@pytest.mark.parametrize("n", [2, 3, 16, 200])
def test_the_coefficient_is_finite_and_float32_matches_float64_at_saturated_logits(n):
    # π = σ(−|α|) underflows in float32 beyond |α| ≈ 104; a 0/0 there would make every such estimate NaN.
    alpha = torch.tensor([-200.0, -90.0, -20.0, -1.0, 0.0, 1.0, 20.0, 90.0, 200.0], dtype=torch.float64)
    single, double = arms_coefficient(alpha.float(), n), arms_coefficient(alpha, n)
    assert torch.isfinite(single).all()
    assert torch.allclose(single.double(), double, rtol=1e-6)

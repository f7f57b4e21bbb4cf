"""Gumbel-Rao against straight-through's exact moments and its own (estimators/exact/gumbel_rao.py), and its
conditional noise against the unconditional noise.

Rao-Blackwellisation keeps straight-through's mean for every K and cannot raise its variance; at K = 1 the pair
(D, G | D) is distributed as (argmax, G), so the estimator is straight-through in distribution. Seeded tests with
one Bonferroni-corrected level for the file.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.statistics import variance_interval
from estimators import ESTIMATORS, EstimatorError, estimate, make_problem
from estimators.core.estimator import Method
from estimators.exact import exact_moments
from estimators.methods.gumbel_rao import conditional_gumbel, conditional_logistic
from tests.helpers import bonferroni_z

TEMPERATURE = 0.5
M = 100_000  # single-sample estimates per cell: the variance's relative standard error is then about 1%
# (problem, params, θ): both Bernoulli forms and the categorical, with non-zero straight-through bias.
CASES = [
    ("bernoulli_toy", {"t": 0.45}, 0.5),
    ("bernoulli_multi", {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}, -0.5),
    ("categorical_toy", {"logit1": -1.0, "logit2": 0.5, "logit3": 2.0}, 0.7),
]
SAMPLES = (1, 2, 10)
# Mean and variance per (case, K), the variance against Gumbel-Rao's own exact value, plus the sampler's KS tests.
N_TESTS = 3 * len(CASES) * len(SAMPLES) + 8
FAMILY_ALPHA = 0.01
Z_CRIT = bonferroni_z(N_TESTS, FAMILY_ALPHA)
CONFIDENCE = 1 - FAMILY_ALPHA / N_TESTS  # two-sided variance intervals at the same corrected level
CASE_IDS = [f"{name}-theta{theta:g}" for name, _, theta in CASES]


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


def draw(name: str, params: dict, theta: float, samples: int) -> np.ndarray:
    return _draw(name, tuple(sorted(params.items())), theta, samples)


@functools.lru_cache(maxsize=None)  # the mean and variance tests share each cell's estimates
def _draw(name: str, params: tuple, theta: float, samples: int) -> np.ndarray:
    problem = make_problem(name, params=dict(params))
    torch.manual_seed(seed_for(name, params, theta, samples))
    options = {"temperature": TEMPERATURE, "samples": samples}
    return estimate(ESTIMATORS["gumbel_rao"], problem, theta, 1, M, dtype=torch.float64, options=options).numpy()


def straight_through_exact(name: str, params: dict, theta: float):
    problem = make_problem(name, params=params)
    exact = exact_moments(problem, Method("straight_through", (("temperature", TEMPERATURE),)), theta, 1)
    assert not isinstance(exact, str), exact
    return exact


@pytest.mark.parametrize("samples", SAMPLES)
@pytest.mark.parametrize("name, params, theta", CASES, ids=CASE_IDS)
def test_mean_is_straight_through_exact_mean(name, params, theta, samples):
    x = draw(name, params, theta, samples)
    exact = straight_through_exact(name, params, theta)
    z = (x.mean() - exact.mean) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"K={samples}: mean {x.mean():.6g}, straight-through's exact {exact.mean:.6g} (z={z:.2f})"


@pytest.mark.parametrize("name, params, theta", CASES, ids=CASE_IDS)
def test_one_sample_is_straight_through_in_variance(name, params, theta):
    low, high = variance_interval(draw(name, params, theta, 1), CONFIDENCE)
    exact = straight_through_exact(name, params, theta)
    ratio = (low / exact.var, high / exact.var)
    assert ratio[0] <= 1.0 <= ratio[1], f"variance ratio to straight-through's: [{ratio[0]:.4f}, {ratio[1]:.4f}]"


@pytest.mark.parametrize("name, params, theta", CASES, ids=CASE_IDS)
def test_variance_is_below_straight_through_and_falls_with_samples(name, params, theta):
    exact = straight_through_exact(name, params, theta)
    two, ten = (variance_interval(draw(name, params, theta, k), CONFIDENCE) for k in (2, 10))
    assert two[1] < exact.var, f"K=2 variance interval {two} not below straight-through's {exact.var:.6g}"
    assert ten[1] < two[0], f"K=10 variance interval {ten} not below K=2's {two}"


@pytest.mark.parametrize("samples", SAMPLES)
@pytest.mark.parametrize("name, params, theta", CASES, ids=CASE_IDS)
def test_variance_matches_its_exact_value(name, params, theta, samples):
    problem = make_problem(name, params=params)
    method = Method("gumbel_rao", (("samples", float(samples)), ("temperature", TEMPERATURE)))
    exact, straight = exact_moments(problem, method, theta, 1), straight_through_exact(name, params, theta)
    # The tower rule, on two different rules: the categorical's (K − 1)-dimensional products agree to ~1e-6.
    assert exact.mean == pytest.approx(straight.mean, rel=1e-5)
    assert exact.var <= straight.var * (1 + 1e-5)
    if samples == 1:
        assert exact.var == pytest.approx(straight.var, rel=1e-5)
    low, high = variance_interval(draw(name, params, theta, samples), CONFIDENCE)
    assert low <= exact.var <= high, f"K={samples}: exact {exact.var:.6g} outside the interval [{low:.6g}, {high:.6g}]"


# ---------------------------------------------------------------------------------------------------------
# The conditional noise: drawing D first and then the noise given D must give the unconditional joint law.

LOGITS = (0.7, 0.0, -1.0, 0.5)
N_NOISE = 200_000


def test_conditional_gumbel_has_the_given_argmax_and_the_unconditional_law():
    torch.manual_seed(seed_for("conditional_gumbel"))
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    scores = logits - torch.log(-torch.log(torch.rand(N_NOISE, len(LOGITS), dtype=torch.float64)))
    hard = torch.nn.functional.one_hot(scores.argmax(dim=-1), len(LOGITS)).to(torch.float64)
    conditional = logits + conditional_gumbel(logits, hard, 1)[0]
    assert torch.equal(conditional.argmax(dim=-1), scores.argmax(dim=-1))
    # The maximum of Gumbel(logits_k) is Gumbel(logsumexp logits), whichever coordinate holds it.
    top = stats.gumbel_r(loc=float(torch.logsumexp(logits, dim=0)))
    assert stats.kstest(conditional.max(dim=-1).values.numpy(), top.cdf).pvalue > FAMILY_ALPHA / N_TESTS
    # Each coordinate's marginal, mixed over D ~ p, is its unconditional Gumbel(logits_k).
    for k, logit in enumerate(LOGITS):
        pvalue = stats.kstest(conditional[:, k].numpy(), stats.gumbel_r(loc=logit).cdf).pvalue
        assert pvalue > FAMILY_ALPHA / N_TESTS, f"coordinate {k}: KS p = {pvalue:.3g}"


def test_conditional_logistic_has_the_given_sign_and_the_unconditional_law():
    torch.manual_seed(seed_for("conditional_logistic"))
    logit = torch.tensor([0.7], dtype=torch.float64)
    hard = (torch.rand(N_NOISE, 1, dtype=torch.float64) < torch.sigmoid(logit)).to(torch.float64)
    conditional = logit + conditional_logistic(logit, hard, 1)[0]
    assert torch.equal((conditional > 0).to(torch.float64), hard)
    pvalue = stats.kstest(conditional[:, 0].numpy(), stats.logistic(loc=0.7).cdf).pvalue
    assert pvalue > FAMILY_ALPHA / N_TESTS, f"KS p = {pvalue:.3g}"


@pytest.mark.parametrize("samples", [0, 1.5, -1])
def test_samples_must_be_a_positive_integer(samples):
    with pytest.raises(EstimatorError, match="samples of estimator gumbel_rao"):
        ESTIMATORS["gumbel_rao"].resolve_options({"samples": samples})


def test_applies_where_straight_through_does():
    for name in ("bernoulli_toy", "bernoulli_multi", "categorical_toy", "categorical_policy", "gaussian_quadratic"):
        problem = make_problem(name)
        reasons = [ESTIMATORS[estimator].skip_reason(problem, 10) for estimator in ("gumbel_rao", "straight_through")]
        assert reasons[0] == reasons[1], name


@pytest.mark.parametrize("name, params, theta", CASES[:2], ids=CASE_IDS[:2])
def test_bernoulli_problems_report_straight_through_exact_mean_for_gumbel_rao(name, params, theta):
    problem = make_problem(name, params=params)
    options = {"temperature": TEMPERATURE, "samples": 3}
    expected = problem.exact_mean(theta, "straight_through", {"temperature": TEMPERATURE})
    assert problem.exact_mean(theta, "gumbel_rao", options) == expected
    assert expected == pytest.approx(straight_through_exact(name, params, theta).mean, rel=1e-7)

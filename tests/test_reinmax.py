"""ReinMax against exact values written here from the paper's formula, independently of the library.

Given the hard sample D, ReinMax's estimate is deterministic: ĝ(D) = ∇f(D)ᵀ (2 J(m_D) − ½ J(π)) ∂α/∂θ with
m_D = ½(D + softmax(α/τ)), J(p) = diag(p) − p pᵀ. So its mean and variance are finite sums over the outcomes. At
τ = 1, E_D[J(m_D)] = ¾ J(π) (E[D Dᵀ] = diag π), so for a cost linear in the one-hot (every cost on {0, 1} is) the
mean is J(π)∇f ∂α/∂θ, the true gradient: a check with no enumeration code shared with the library. Monte Carlo
checks are seeded z-tests against the exact values, Bonferroni-corrected over the file.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from estimators import ESTIMATORS, estimate, make_problem
from estimators.core.estimator import Method
from estimators.exact import exact_moments
from estimators.methods.reinmax import reinmax_relaxed
from tests.helpers import bonferroni_z

N_SAMPLES = 200_000  # single-sample estimates per Monte Carlo check
CASES = [
    ("bernoulli_toy", {"t": 0.45}, 0.5, 1.0),
    ("bernoulli_toy", {"t": 0.499}, -1.5, 0.5),
    ("bernoulli_multi", {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}, 1.0, 2.0),
    ("categorical_toy", {}, 0.5, 1.0),
    ("categorical_toy", {"logit1": -1.0, "logit2": 0.5, "logit3": 2.0}, 0.7, 0.3),
]
Z_CRIT = bonferroni_z(2 * len(CASES) + 2)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def jacobian(p: np.ndarray) -> np.ndarray:
    return np.diag(p) - np.outer(p, p)


def bernoulli_terms(theta: float, targets: list[float], temperature: float) -> tuple[list[float], list[float]]:
    """(probability, ĝ) per outcome of D tied Bernoullis with logit θ, f = mean_d (b_d − t_d)²."""
    p, q = sigmoid(theta), sigmoid(theta / temperature)
    probs, values = [], []
    for bits in np.ndindex(*(2,) * len(targets)):
        b = np.array(bits, dtype=float)
        m = 0.5 * (b + q)  # the midpoint's x = 1 entry; the 2-way Jacobian's entry there is m(1 − m)
        slope = 2.0 * (b - np.array(targets)) / len(targets)
        probs.append(float(np.prod(np.where(b == 1, p, 1 - p))))
        values.append(float(np.sum(slope * (2 * m * (1 - m) - 0.5 * p * (1 - p)))))
    return probs, values


def categorical_terms(theta: float, params: dict, temperature: float) -> tuple[list[float], list[float]]:
    """(probability, ĝ) per outcome of categorical_toy: logits (θ, l1, l2, l3), f = c·x, c = (0, ⅓, ⅔, 1)."""
    logits = np.array([theta] + [params.get(f"logit{k}", 0.0) for k in (1, 2, 3)])
    pi, tempered, c, a = softmax(logits), softmax(logits / temperature), np.arange(4) / 3, np.eye(4)[0]
    values = [float(c @ (2 * jacobian(0.5 * (np.eye(4)[k] + tempered)) - 0.5 * jacobian(pi)) @ a) for k in range(4)]
    return list(pi), values


def exact_terms(name: str, params: dict, theta: float, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    if name == "bernoulli_toy":
        probs, values = bernoulli_terms(theta, [params["t"]], temperature)
    elif name == "bernoulli_multi":
        probs, values = bernoulli_terms(theta, [params[f"t{d}"] for d in (1, 2, 3, 4)], temperature)
    else:
        probs, values = categorical_terms(theta, params, temperature)
    return np.array(probs), np.array(values)


def central_moments(probs: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    mean = float(probs @ values)
    return mean, float(probs @ (values - mean) ** 2), float(probs @ (values - mean) ** 4)


def draw(name: str, params: dict, theta: float, temperature: float, estimator: str = "reinmax") -> np.ndarray:
    # sha256, not hash(): str hashes change between processes, and each case must draw the same numbers every run.
    torch.manual_seed(int.from_bytes(hashlib.sha256(repr((name, theta, temperature, estimator)).encode()).digest()[:7], "big"))
    problem = make_problem(name, params=params)
    return estimate(ESTIMATORS[estimator], problem, theta, 1, N_SAMPLES, dtype=torch.float64,
                    options={"temperature": temperature}).numpy()  # fmt: skip


def reinmax_method(temperature: float) -> Method:
    return Method("reinmax", (("temperature", temperature),))


def test_relaxed_sample_is_the_hard_sample_forward_with_heuns_jacobian_backward():
    torch.manual_seed(0)
    logits = torch.randn(5, dtype=torch.float64, requires_grad=True)
    hard, temperature, upstream = torch.eye(5, dtype=torch.float64)[2], 0.7, torch.randn(5, dtype=torch.float64)
    x = reinmax_relaxed(logits, hard, temperature)
    (grad,) = torch.autograd.grad(x @ upstream, logits)
    pi, tempered = softmax(logits.detach().numpy()), softmax(logits.detach().numpy() / temperature)
    expected = (2 * jacobian(0.5 * (hard.numpy() + tempered)) - 0.5 * jacobian(pi)) @ upstream.numpy()
    assert torch.equal(x.detach(), hard)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, params, theta, temperature", CASES)
def test_registered_exact_moments_match_the_enumeration_here(name, params, theta, temperature):
    probs, values = exact_terms(name, params, theta, temperature)
    mean, var, _ = central_moments(probs, values)
    exact = exact_moments(make_problem(name, params=params), reinmax_method(temperature), theta, 4)
    assert exact.mean == pytest.approx(mean, rel=1e-12, abs=1e-15)
    assert exact.var == pytest.approx(var / 4, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name, params, theta, temperature", CASES)
def test_monte_carlo_mean_and_variance_match_the_exact_values(name, params, theta, temperature):
    mean, var, fourth = central_moments(*exact_terms(name, params, theta, temperature))
    samples = draw(name, params, theta, temperature)
    z_mean = (samples.mean() - mean) / math.sqrt(var / N_SAMPLES)
    # The sample variance's standard error is √((μ₄ − σ⁴)/n), from the exact fourth central moment.
    z_var = (samples.var(ddof=1) - var) / math.sqrt((fourth - var**2) / N_SAMPLES)
    assert abs(z_mean) < Z_CRIT, (samples.mean(), mean, z_mean)
    assert abs(z_var) < Z_CRIT, (samples.var(ddof=1), var, z_var)


@pytest.mark.parametrize("name, params, theta, temperature", [case for case in CASES if case[3] == 1.0])
def test_at_unit_temperature_the_mean_is_the_true_gradient(name, params, theta, temperature):
    mean, _, _ = central_moments(*exact_terms(name, params, theta, temperature))
    assert mean == pytest.approx(make_problem(name, params=params).gradient(theta), rel=1e-12, abs=1e-15)


def test_away_from_unit_temperature_it_is_biased():
    name, params, theta = "bernoulli_toy", {"t": 0.45}, 0.5
    mean, _, _ = central_moments(*exact_terms(name, params, theta, 0.5))
    assert abs(mean - make_problem(name, params=params).gradient(theta)) > 0.05


def test_its_mean_differs_from_straight_throughs():
    # Same temperature, same problem: the ST-Gumbel mean (registered exact, quadrature) is another number, and the
    # two Monte Carlo means are apart by far more than their standard errors.
    name, params, theta, temperature = "categorical_toy", {}, 0.5, 1.0
    problem = make_problem(name, params=params)
    straight = exact_moments(problem, Method("straight_through", (("temperature", temperature),)), theta, 1)
    mean, _, _ = central_moments(*exact_terms(name, params, theta, temperature))
    assert abs(mean - straight.mean) > 0.04
    ours, theirs = draw(name, params, theta, temperature), draw(name, params, theta, temperature, "straight_through")
    se = math.sqrt(ours.var() / ours.size + theirs.var() / theirs.size)
    assert abs(ours.mean() - theirs.mean()) / se > Z_CRIT


def test_at_small_temperature_its_bias_exceeds_straight_throughs():
    # τ → 0 pushes softmax(α/τ) to a vertex, so the midpoint's Jacobian no longer averages to ¾ J(π): ReinMax's
    # bias grows to the gradient's own size, while ST-Gumbel's stays small (the paper recommends τ ≥ 1).
    name, params, theta, temperature = "bernoulli_toy", {"t": 0.45}, 0.5, 0.1
    problem = make_problem(name, params=params)
    truth = problem.gradient(theta)
    ours, _, _ = central_moments(*exact_terms(name, params, theta, temperature))
    straight = exact_moments(problem, Method("straight_through", (("temperature", temperature),)), theta, 1).mean
    assert abs(ours - truth) > 5 * abs(straight - truth)
    assert abs(ours - truth) > abs(truth)

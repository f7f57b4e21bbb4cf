"""categorical_policy and the group baselines (grpo, dr_grpo) against exact values.

Ground truth is written here independently of the library: the objective and its gradient by summing over the
actions, the estimators' moments by brute force over all (2K)^G ordered groups of outcomes at tiny G. Statistical
checks are seeded; one Bonferroni-corrected critical value covers every mean and variance test of the file.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.report.policy import policy_section
from estimators import estimate, get_estimator, make_problem
from estimators.core.estimator import Method
from estimators.exact import exact_moments
from estimators.exact.policy import enumerated_moments, policy_outcomes
from estimators.methods.group_baselines import normalised_advantages
from tests.helpers import bonferroni_z

K = 4
DEFAULT_SUCCESS = (0.9, 0.2, 0.5, 0.05)
OTHER = {"success0": 0.3, "success1": 0.7, "success2": 0.1, "success3": 0.95, "logit1": -1.0, "logit2": 0.5, "logit3": 2.0}
GROUP_ESTIMATORS = ("score_function", "score_function_loo", "grpo", "dr_grpo")
EPSILON = 1e-4

# Monte Carlo cells: (params, θ, G); every one tests the mean and the variance of the four estimators.
MC_CELLS = [({}, 0.0, 2), ({}, 1.0, 4), (OTHER, -0.5, 8)]
SLOW_MC_CELLS = [({}, 0.0, 16), (OTHER, 1.0, 16)]
MC_REPLICATES = 40_000
CRITICAL_Z = bonferroni_z(2 * len(GROUP_ESTIMATORS) * (len(MC_CELLS) + len(SLOW_MC_CELLS)), family_alpha=0.001)


def _success_and_logits(params: dict, theta: float) -> tuple[np.ndarray, np.ndarray]:
    success = np.array([params.get(f"success{a}", DEFAULT_SUCCESS[a]) for a in range(K)])
    logits = np.array([theta] + [params.get(f"logit{a}", 0.0) for a in range(1, K)])
    return success, logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _objective(params: dict, theta: float) -> float:
    success, logits = _success_and_logits(params, theta)
    return float(_softmax(logits) @ success)


def _brute_force_estimate(estimator: str, rewards: np.ndarray, scores: np.ndarray) -> float:
    """One group's estimate, from the definitions (Shao et al. 2024; Liu et al. 2025; RLOO)."""
    g = len(rewards)
    if estimator == "score_function":
        advantage = rewards
    elif estimator == "score_function_loo":
        advantage = np.array([rewards[i] - np.delete(rewards, i).mean() for i in range(g)])
    elif estimator == "dr_grpo":
        advantage = rewards - rewards.mean()
    elif np.all(rewards == rewards[0]):
        advantage = np.zeros(g)
    else:
        advantage = (rewards - rewards.mean()) / (rewards.std(ddof=1) + EPSILON)
    return float(np.mean(advantage * scores))


def _brute_force_moments(params: dict, theta: float, estimator: str, g: int) -> tuple[float, float]:
    """E and Var over every ordered sequence of G (action, reward) draws."""
    success, logits = _success_and_logits(params, theta)
    p = _softmax(logits)
    draws = [(a, r, p[a] * (success[a] if r else 1 - success[a])) for a in range(K) for r in (0, 1)]
    first = second = 0.0
    for group in itertools.product(draws, repeat=g):
        weight = math.prod(q for _, _, q in group)
        rewards = np.array([float(r) for _, r, _ in group])
        scores = np.array([(a == 0) - p[0] for a, _, _ in group])  # ∂ log softmax_a / ∂ logit0
        value = _brute_force_estimate(estimator, rewards, scores)
        first += weight * value
        second += weight * value**2
    return first, second - first**2


@pytest.mark.parametrize("params", [{}, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("theta", [-2.0, 0.0, 1.5])
def test_gradient_is_the_derivative_of_the_expected_reward(params, theta):
    problem = make_problem("categorical_policy", params=params)
    assert problem.objective(theta) == pytest.approx(_objective(params, theta), abs=1e-14)
    h = 1e-5
    finite_difference = (_objective(params, theta + h) - _objective(params, theta - h)) / (2 * h)
    assert problem.gradient(theta) == pytest.approx(finite_difference, abs=1e-9)  # O(h²) ≈ 1e-10


@pytest.mark.parametrize("estimator", GROUP_ESTIMATORS)
@pytest.mark.parametrize("g", [2, 3])
@pytest.mark.parametrize("params,theta", [({}, 0.0), (OTHER, 0.7)], ids=["default", "other"])
def test_enumeration_of_compositions_matches_brute_force_over_sequences(estimator, g, params, theta):
    problem = make_problem("categorical_policy", params=params)
    mean, var = enumerated_moments(policy_outcomes(problem, theta), estimator, g)
    expected_mean, expected_var = _brute_force_moments(params, theta, estimator, g)
    assert mean == pytest.approx(expected_mean, abs=1e-13)
    assert var == pytest.approx(expected_var, abs=1e-13)


@pytest.mark.parametrize("g", [2, 4, 8, 16])
@pytest.mark.parametrize("params,theta", [({}, 0.0), (OTHER, -1.0)], ids=["default", "other"])
def test_dr_grpo_mean_is_exactly_a_fraction_of_the_gradient(g, params, theta):
    problem = make_problem("categorical_policy", params=params)
    exact = exact_moments(problem, Method("dr_grpo"), theta, g)
    # r̄ contains r_i with weight 1/G and E[r_i ∂log p(a_i)] = dL/dθ; the other samples' part has mean 0.
    assert exact.mean == pytest.approx((g - 1) / g * problem.gradient(theta), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("g", [2, 5, 16])
def test_enumeration_agrees_with_the_independent_sample_closed_forms(g):
    problem = make_problem("categorical_policy", params=OTHER)
    o = policy_outcomes(problem, 0.3)
    per_sample = o.rewards * o.scores
    mean, var = enumerated_moments(o, "score_function", g)
    assert mean == pytest.approx(problem.gradient(0.3), rel=1e-12)
    expected_var = float(o.probabilities @ per_sample**2 - (o.probabilities @ per_sample) ** 2) / g
    assert var == pytest.approx(expected_var, rel=1e-10)
    loo_mean, _ = enumerated_moments(o, "score_function_loo", g)
    assert loo_mean == pytest.approx(problem.gradient(0.3), rel=1e-12)


def test_grpo_gives_zero_advantage_to_a_group_of_equal_rewards():
    rewards = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)  # [G, groups]
    advantages = normalised_advantages(rewards)
    assert torch.equal(advantages[:, :2], torch.zeros(3, 2, dtype=torch.float64))
    spread = float(torch.tensor([1.0, 0.0, 1.0]).std())
    assert advantages[:, 2].tolist() == pytest.approx([(1 - 2 / 3) / (spread + EPSILON), (-2 / 3) / (spread + EPSILON),
                                                       (1 - 2 / 3) / (spread + EPSILON)])  # fmt: skip


@pytest.mark.parametrize("success", [1.0, 0.0])
def test_grpo_is_zero_when_every_reward_is_the_same(success):
    params = {f"success{a}": success for a in range(K)}
    problem = make_problem("categorical_policy", params=params)
    torch.manual_seed(3)
    estimates = estimate(get_estimator("grpo"), problem, 0.5, 8, 500, dtype=torch.float64)
    assert torch.equal(estimates, torch.zeros_like(estimates))
    exact = exact_moments(problem, Method("grpo"), 0.5, 8)
    assert (exact.mean, exact.var) == (0.0, 0.0)


def _check_against_exact(params: dict, theta: float, g: int, seed: int) -> None:
    problem = make_problem("categorical_policy", params=params)
    for number, name in enumerate(GROUP_ESTIMATORS):
        exact = exact_moments(problem, Method(name), theta, g)
        torch.manual_seed(seed + number)
        draws = estimate(get_estimator(name), problem, theta, g, MC_REPLICATES, dtype=torch.float64).numpy()
        m = len(draws)
        mean, s2 = float(draws.mean()), float(draws.var(ddof=1))
        z_mean = (mean - exact.mean) / math.sqrt(s2 / m)
        assert abs(z_mean) < CRITICAL_Z, (name, g, mean, exact.mean, z_mean)
        # se(s²) ≈ sqrt((m4 − s⁴)/M), m4 the sample fourth central moment.
        m4 = float(np.mean((draws - mean) ** 4))
        z_var = (s2 - exact.var) / math.sqrt((m4 - s2**2) / m)
        assert abs(z_var) < CRITICAL_Z, (name, g, s2, exact.var, z_var)


@pytest.mark.parametrize("params,theta,g", MC_CELLS, ids=[f"cell{i}" for i in range(len(MC_CELLS))])
def test_monte_carlo_matches_exact_mean_and_variance(params, theta, g):
    _check_against_exact(params, theta, g, seed=100 * g)


@pytest.mark.slow
@pytest.mark.parametrize("params,theta,g", SLOW_MC_CELLS, ids=[f"cell{i}" for i in range(len(SLOW_MC_CELLS))])
def test_monte_carlo_matches_exact_at_g16(params, theta, g):
    _check_against_exact(params, theta, g, seed=7000 + g)


def test_report_section_states_dr_grpo_bias_in_words():
    problem = make_problem("categorical_policy")
    rows = []
    for name in ("grpo", "dr_grpo", "score_function_loo"):
        for g in (2, 8):
            exact = exact_moments(problem, Method(name), 0.0, g)
            rows.append({"problem": "categorical_policy", "problem_params": json_params(problem), "wrt": "logit0",
                         "device": "cpu", "dtype": "float64", "variance_reduction": "none", "estimator": name,
                         "base": name, "theta": 0.0, "n_samples": g, "true_grad": problem.gradient(0.0),
                         "objective": problem.objective(0.0), "exact_mean": exact.mean, "exact_var": exact.var,
                         "bias": exact.mean - problem.gradient(0.0), "bias_se": 0.001, "per_sample_var": exact.var * g,
                         "grad_var_ci_low": exact.var * 0.9, "grad_var_ci_high": exact.var * 1.1})  # fmt: skip
    text = "\n".join(policy_section(pd.DataFrame(rows)))
    assert "12.5% too small at G = 8" in text
    assert "score_function_loo" in text and "| 0 | 8 | grpo |" in text


def _exact_rows(problem, names, thetas, groups) -> list[dict]:
    rows = []
    for name in names:
        for theta in thetas:
            for g in groups:
                exact = exact_moments(problem, Method(name), theta, g)
                rows.append({"problem": "categorical_policy", "problem_params": json_params(problem), "wrt": "logit0",
                             "device": "cpu", "dtype": "float64", "variance_reduction": "none", "estimator": name,
                             "base": name, "theta": theta, "n_samples": g, "true_grad": problem.gradient(theta),
                             "objective": problem.objective(theta), "exact_mean": exact.mean, "exact_var": exact.var,
                             "bias": exact.mean - problem.gradient(theta), "bias_se": 0.001,
                             "per_sample_var": exact.var * g, "grad_var_ci_low": exact.var * 0.9,
                             "grad_var_ci_high": exact.var * 1.1})  # fmt: skip
    return rows


def test_report_tabulates_the_bias_against_the_best_actions_success_rate():
    names = ("grpo", "dr_grpo", "score_function_loo")
    rows = [row for s0 in (0.5, 0.9, 0.999)
            for row in _exact_rows(make_problem("categorical_policy", None, {"success0": s0}), names, (0.0,), (4,))]
    lines = policy_section(pd.DataFrame(rows))
    table = [line for line in lines if line.startswith("| 0 | 4 |")]
    assert any(line.startswith("### Against the best action's success rate") for line in lines)
    # One row per s₀ in that table (the default 0.9 also has its own G table); Dr. GRPO is (G − 1)/G = −25% at each.
    rate_rows = [line for line in table if line.split("|")[3].strip().replace(".", "", 1).isdigit()]
    assert [line.split("|")[3].strip() for line in rate_rows] == ["0.5", "0.9", "0.999"]
    assert all("(-25.0%)" in line.split("|")[7] for line in rate_rows)


def json_params(problem) -> str:
    return json.dumps(dict(problem.params), sort_keys=True)

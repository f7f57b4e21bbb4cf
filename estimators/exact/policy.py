"""Exact moments on categorical_policy: the group of G = N samples as a multinomial composition of G draws over
the problem's 2K (action, reward) outcomes. Every estimator here is a function of the composition c (how many of
the G samples fell on each outcome), so E[ĝ] and Var[ĝ] are sums over the C(G + 2K − 1, 2K − 1) compositions
with multinomial weights G!/Π c_o! Π q_o^c_o: 245 157 of them at G = 16, K = 4. Beyond ``MAX_COMPOSITIONS``
the score function and RLOO fall back to their closed forms (per-sample variance / N, the U-statistic);
the group baselines have none here. Derivation: docs/math.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.special import gammaln

from ..core.estimator import Method
from ..core.problem import Problem
from .gaussian import scheme_reason
from .quadrature import leave_one_out_zetas, mean_and_variance, u_statistic_variance
from .registry import Exact, Keyed, keyed, register_exact

POLICY_FAMILY = "categorical_policy"
GRPO_EPSILON = 1e-4  # the estimator's ε (estimators/methods/group_baselines.py), restated: exact/ imports no method
MAX_COMPOSITIONS = 3_000_000  # ~200 MB of counts: G = 25 at K = 4


@dataclass(frozen=True)
class Outcomes:
    """The sample's outcomes at θ: probabilities q_o, rewards r_o and scores ∂_θ log q_o, each [2K]."""

    probabilities: np.ndarray
    rewards: np.ndarray
    scores: np.ndarray


def policy_outcomes(problem: Problem, theta: float) -> Outcomes:
    """Through the problem's own distribution and cost, so the enumeration sees what the estimators see."""
    t = torch.tensor([float(theta)], dtype=torch.float64, requires_grad=True)
    dist = problem.distribution(t)
    log_q = dist.logits.reshape(-1)  # OneHotCategorical keeps normalised logits: log q_o
    rows = [torch.autograd.grad(value, t, retain_graph=True)[0] for value in log_q]
    one_hot = torch.eye(len(log_q), dtype=torch.float64)[:, None, :]
    rewards = problem.cost(one_hot, t.detach()).detach().numpy().reshape(-1)
    return Outcomes(log_q.detach().exp().numpy(), rewards, np.array([float(row[0]) for row in rows]))


def composition_count(g: int, outcomes: int) -> int:
    return math.comb(g + outcomes - 1, outcomes - 1)


@lru_cache(maxsize=8)
def compositions(g: int, outcomes: int) -> np.ndarray:
    """Every c ∈ ℕ^outcomes with Σ c = g, [C(g + outcomes − 1, outcomes − 1), outcomes] (stars and bars)."""
    bars = np.array(list(itertools.combinations(range(g + outcomes - 1), outcomes - 1)), dtype=np.int64)
    bars = bars.reshape(-1, outcomes - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), g + outcomes - 1)], axis=1)
    counts = np.diff(edges, axis=1) - 1
    counts.flags.writeable = False
    return counts


def multinomial_weights(counts: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """P(c) = G!/Π c_o! Π q_o^c_o; an outcome of probability 0 contributes only to compositions that avoid it."""
    g = int(counts[0].sum())
    possible = probabilities > 0
    log_q = np.log(np.where(possible, probabilities, 1.0))
    weights = np.exp(gammaln(g + 1) - gammaln(counts + 1).sum(axis=1) + counts @ log_q)
    return np.where(counts[:, ~possible].any(axis=1), 0.0, weights)


def score_function_estimate(counts: np.ndarray, o: Outcomes) -> np.ndarray:
    """(1/G) Σ_i r_i s_i."""
    return counts @ (o.rewards * o.scores) / counts[0].sum()


def leave_one_out_estimate(counts: np.ndarray, o: Outcomes) -> np.ndarray:
    """(1/G) Σ_i (r_i − (Σ_j r_j − r_i)/(G − 1)) s_i."""
    g = counts[0].sum()
    total = counts @ o.rewards
    advantage = o.rewards[None, :] - (total[:, None] - o.rewards[None, :]) / (g - 1)
    return (counts * advantage * o.scores).sum(axis=1) / g


def dr_grpo_estimate(counts: np.ndarray, o: Outcomes) -> np.ndarray:
    """(1/G) Σ_i (r_i − r̄) s_i, r̄ the group's mean reward."""
    g = counts[0].sum()
    mean_reward = counts @ o.rewards / g
    return (counts @ (o.rewards * o.scores) - mean_reward * (counts @ o.scores)) / g


def group_reward_spread(counts: np.ndarray, o: Outcomes) -> np.ndarray:
    """The group's reward standard deviation, ddof = 1."""
    g = counts[0].sum()
    mean_reward = counts @ o.rewards / g
    squares = counts @ (o.rewards**2) - g * mean_reward**2
    return np.sqrt(np.maximum(squares, 0.0) / (g - 1))


def rewards_all_equal(counts: np.ndarray, o: Outcomes) -> np.ndarray:
    present = counts > 0
    highest = np.where(present, o.rewards, -np.inf).max(axis=1)
    lowest = np.where(present, o.rewards, np.inf).min(axis=1)
    return highest == lowest


def grpo_estimate(counts: np.ndarray, o: Outcomes, epsilon: float = GRPO_EPSILON) -> np.ndarray:
    """Dr. GRPO's estimate divided by (std r + ε), and 0 where the group's rewards are all equal."""
    scaled = dr_grpo_estimate(counts, o) / (group_reward_spread(counts, o) + epsilon)
    return np.where(rewards_all_equal(counts, o), 0.0, scaled)


GROUP_ESTIMATES = {
    "score_function": score_function_estimate,
    "score_function_loo": leave_one_out_estimate,
    "dr_grpo": dr_grpo_estimate,
    "grpo": grpo_estimate,
}


def enumerated_moments(o: Outcomes, estimator: str, g: int) -> tuple[float, float]:
    """(E[ĝ], Var[ĝ]) of one G-sample estimate, summed over every composition of the group."""
    counts = compositions(g, len(o.probabilities))
    return mean_and_variance(multinomial_weights(counts, o.probabilities), GROUP_ESTIMATES[estimator](counts, o))


@lru_cache(maxsize=4096)
def _moments(problem: Keyed, estimator: str, theta: float, g: int) -> tuple[float, float]:
    o = policy_outcomes(problem.problem, theta)
    if composition_count(g, len(o.probabilities)) <= MAX_COMPOSITIONS:
        return enumerated_moments(o, estimator, g)
    if estimator == "score_function":
        mean, var = mean_and_variance(o.probabilities, o.rewards * o.scores)
        return mean, var / g
    mean, zeta1, zeta2 = leave_one_out_zetas(o.probabilities, o.rewards, o.scores, np.zeros_like(o.rewards))
    return mean, u_statistic_variance(zeta1, zeta2, g)


@register_exact("naive", POLICY_FAMILY)
@register_exact("score_function", POLICY_FAMILY)
@register_exact("score_function_loo", POLICY_FAMILY)
@register_exact("grpo", POLICY_FAMILY)
@register_exact("dr_grpo", POLICY_FAMILY)
def policy_exact(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """Exact moments of one N-sample estimate on categorical_policy, the N samples being the group."""
    reason = scheme_reason(method.scheme, ("none",))
    if reason:
        return reason
    if method.estimator == "naive":
        return Exact(0.0, 0.0)  # the reward does not depend on θ and .sample() passes no gradient
    count = composition_count(n_samples, problem.distribution(torch.zeros(1)).logits.shape[-1])
    if method.estimator in ("grpo", "dr_grpo") and count > MAX_COMPOSITIONS:
        return (f"{method.estimator} is exact by enumeration of the group's {count:,} compositions, more than the "
                f"{MAX_COMPOSITIONS:,} enumerated")  # fmt: skip
    mean, var = _moments(keyed(problem), method.estimator, float(theta), int(n_samples))
    return Exact(mean, var)

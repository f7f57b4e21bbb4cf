"""Group baselines from RL of language models: the N samples of one estimate are the group (G = N) and each
sample's score is weighted by an advantage computed from the whole group's rewards. Both are biased: the
advantage of sample i depends on r_i through the group's mean (and GRPO's standard deviation). Formulas:
docs/math.md; exact moments on categorical_policy: estimators/exact/policy.py.

- ``grpo`` (Shao et al. 2024): A_i = (r_i − mean r)/(std r + ε), std with ddof = 1, ε = 1e-4; A_i = 0 when all
  rewards of the group are equal.
- ``dr_grpo`` (Liu et al. 2025): A_i = r_i − mean r, no division; its mean is exactly (G − 1)/G · dL/dθ.

The estimate is (1/G) Σ_i A_i ∂_θ log p_θ(x_i), the reward f_θ(x_i) standing for r_i, plus (1/G) Σ_i ∂_θ f_θ(x_i)
where the reward depends on θ (as RLOO adds it). On an episodic problem the group is the N episodes, r_i the
return of episode i and ∂_θ log p_θ(x_i) the sum of its actions' scores.
"""

from __future__ import annotations

from torch import Tensor

from ..core.distributions import draw_detached, weighted_score_sum
from ..core.episodes import episode_surrogate
from ..core.estimator import Estimator
from ..core.problem import Problem

GRPO_EPSILON = 1e-4  # added to the group's standard deviation, as in Shao et al.'s implementation


def centred_rewards(r: Tensor) -> Tensor:
    """r_i − mean r over the group (dimension 0), the sample itself included: Dr. GRPO's advantage."""
    return r - r.mean(dim=0, keepdim=True)


def normalised_advantages(r: Tensor, epsilon: float = GRPO_EPSILON) -> Tensor:
    """(r_i − mean r)/(std r + ε), std with ddof = 1, and 0 for a group whose rewards are all equal: GRPO's."""
    centred = centred_rewards(r)
    spread = r.std(dim=0, unbiased=True, keepdim=True)
    # A group of equal rewards carries no learning signal in GRPO: it is skipped, not divided by ε.
    constant = r.amax(dim=0, keepdim=True) == r.amin(dim=0, keepdim=True)
    return (centred / (spread + epsilon)).masked_fill(constant, 0.0)


def _group_surrogate(problem: Problem, theta: Tensor, n_samples: int, advantage) -> Tensor:
    if problem.episodes is not None:  # the group is the N episodes, each one's reward its return
        episodes = problem.episodes.rollout(theta, n_samples)
        return episode_surrogate(episodes, theta, advantage(episodes.returns()))
    dist = problem.distribution(theta)
    x = draw_detached(dist, n_samples)
    f = problem.cost(x, theta)
    surrogate = weighted_score_sum(dist, x, advantage(f.detach()))
    # A reward that depends on θ adds its pathwise term ∂_θ f, as in RLOO; a verifier's reward has none.
    return surrogate + f.sum(dim=0) if f.requires_grad else surrogate


def grpo(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (1/G) Σ_i (r_i − mean r)/(std r + ε) ∂_θ log p_θ(x_i) (+ ∂_θ f), A_i = 0 for equal rewards (GRPO)."""
    return _group_surrogate(problem, theta, n_samples, normalised_advantages)


def dr_grpo(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (1/G) Σ_i (r_i − mean r) ∂_θ log p_θ(x_i) (+ ∂_θ f), the mean over the whole group (Dr. GRPO)."""
    return _group_surrogate(problem, theta, n_samples, centred_rewards)


def group_skip_reason(problem: Problem, n_samples: int) -> str | None:
    if n_samples < 2:
        return "a group baseline needs a group of N >= 2 samples per estimate"
    return None


def _biased(problem: Problem) -> bool:
    return False


_COUPLED = "its group baseline would contain samples coupled to x_i"

GROUP_BASELINES: tuple[Estimator, ...] = (
    Estimator("grpo", grpo, "(r − group mean)/(group std + 1e-4) ∂log p, 0 for equal rewards (GRPO, Shao et al. 2024); biased, N >= 2",
              skip_reason=group_skip_reason, unbiased_for=_biased, samples_independent=False,
              coupled_samples_reason=_COUPLED, parallel_safe=True, episodic=True),
    Estimator("dr_grpo", dr_grpo, "(r − group mean) ∂log p (Dr. GRPO, Liu et al. 2025); mean (G − 1)/G of the gradient, N >= 2",
              skip_reason=group_skip_reason, unbiased_for=_biased, samples_independent=False,
              coupled_samples_reason=_COUPLED, parallel_safe=True, episodic=True),
)  # fmt: skip

"""A policy-gradient problem with a binary (verifiable) reward, where the group baselines of RL for language models
(GRPO, RLOO, Dr. GRPO) can be measured against exact values.

- ``categorical_policy``: an action a ~ Categorical(softmax(θ, logit1, …, logit{K−1})), K = 4, and a binary reward
  r ~ Bernoulli(s_a) given the action, success rates s_0..s_{K−1} (default 0.9, 0.2, 0.5, 0.05). θ is the first
  logit. L(θ) = E[r] = Σ_a p_a s_a and dL/dθ = p_0 (s_0 − L), as for ``categorical_toy`` with costs s_a.

The sample is the pair (a, r), one-hot over the 2K outcomes o = 2a + r with probabilities p_a s_a^r (1 − s_a)^(1−r),
a ``OneHotCategorical``: the reward's noise is then part of the sample, so the cell's seed fixes it, the cost
r = x · (0, 1, 0, 1, …) is deterministic, and ∂_θ log p(a, r) = ∂_θ log p_a (the success rates do not move
with θ). The reward is declared not differentiable in the sample: a verifier's verdict has no gradient, so the
pathwise estimator and the relaxations, which need ∂f/∂x, do not apply.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import OneHotCategorical

from ..core.problem import Problem, ProblemError, ProblemFamily

POLICY_K = 4
POLICY_SUCCESS = tuple(f"success{a}" for a in range(POLICY_K))
POLICY_DEFAULT_SUCCESS = (0.9, 0.2, 0.5, 0.05)
POLICY_FIXED_LOGITS = tuple(f"logit{a}" for a in range(1, POLICY_K))
GROUP_BASELINES = ("grpo", "dr_grpo")


def outcome_rewards(k: int) -> Tensor:
    """r of each outcome o = 2a + r: (0, 1, 0, 1, …), float64."""
    return torch.tensor([float(o % 2) for o in range(2 * k)], dtype=torch.float64)


def outcome_log_likelihoods(success: Tensor) -> Tensor:
    """log P(r | a) of each outcome o = 2a + r: (log(1 − s_0), log s_0, log(1 − s_1), …); −inf where s is 0 or 1."""
    return torch.stack([torch.log1p(-success), torch.log(success)], dim=-1).reshape(-1)


def policy_probabilities(theta: float, fixed_logits: Tensor) -> Tensor:
    """p = softmax(θ, logit1, …), float64."""
    logits = torch.cat([torch.tensor([float(theta)], dtype=torch.float64), fixed_logits])
    return torch.softmax(logits, dim=-1)


def expected_reward(p: Tensor, success: Tensor) -> float:
    """L = Σ_a p_a s_a."""
    return float(p @ success)


def expected_reward_gradient(p: Tensor, success: Tensor) -> float:
    """dL/dθ = p_0 (s_0 − L) for θ the first logit (∂p_a/∂θ = p_a (1[a = 0] − p_0))."""
    return float(p[0] * (success[0] - p @ success))


def _check_success_rates(success: Tensor) -> None:
    outside = [f"success{a}={float(s):g}" for a, s in enumerate(success) if not 0.0 <= float(s) <= 1.0]
    if outside:
        raise ProblemError(f"categorical_policy: success rates are probabilities in [0, 1], got {', '.join(outside)}")


def _build_categorical_policy(wrt: str, params: dict[str, float]) -> Problem:
    success = torch.tensor([params[k] for k in POLICY_SUCCESS], dtype=torch.float64)
    _check_success_rates(success)
    fixed = torch.tensor([params[k] for k in POLICY_FIXED_LOGITS], dtype=torch.float64)
    likelihoods = outcome_log_likelihoods(success)
    rewards = outcome_rewards(POLICY_K)

    def outcome_logits(theta: Tensor) -> Tensor:
        rest = fixed.to(theta.dtype).to(theta.device).expand(*theta.shape, len(fixed))
        action_logits = torch.cat([theta.unsqueeze(-1), rest], dim=-1)
        # Each action's logit repeated for its two rewards, plus log P(r | a): the normaliser stays Σ_a e^logit_a.
        return action_logits.repeat_interleave(2, dim=-1) + likelihoods.to(theta.dtype).to(theta.device)

    def cost(x: Tensor, theta: Tensor) -> Tensor:
        return x @ rewards.to(x.dtype).to(x.device)

    def objective(th: float) -> float:
        return expected_reward(policy_probabilities(th, fixed), success)

    def gradient(th: float) -> float:
        return expected_reward_gradient(policy_probabilities(th, fixed), success)

    rates = ", ".join(f"{float(s):g}" for s in success)
    return Problem(
        name="categorical_policy",
        wrt=wrt,
        params=params,
        summary=f"a ~ Categorical(softmax(θ, logit1..3)), binary reward r ~ Bernoulli(s_a), s = ({rates}): "
                "policy gradient with a verifiable reward",
        distribution=lambda theta: OneHotCategorical(logits=outcome_logits(theta)),
        cost=cost,
        objective=objective,
        gradient=gradient,
        gradient_formula="dL/dθ = p_0 (s_0 − L), p = softmax(θ, logit1, logit2, logit3)   (L = E[r] = Σ_a p_a s_a)",
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
        cost_is_differentiable=False,
        estimator_notes={
            "naive": "The reward does not depend on θ and .sample() passes no gradient, so naive returns 0: it "
                     "misses the whole gradient E[r ∂log p].",
            "grpo": "GRPO divides each group's advantages by the group's reward standard deviation (+ 1e-4) and "
                    "gives 0 to a group whose rewards are all equal: a data-dependent scale that biases it.",
            "dr_grpo": "Dr. GRPO's baseline, the group mean, contains the sample itself: its mean is exactly "
                       "(G − 1)/G · dL/dθ.",
        },
    )  # fmt: skip


POLICY_FAMILIES: dict[str, ProblemFamily] = {
    "categorical_policy": ProblemFamily(
        name="categorical_policy",
        summary="4-action softmax policy (logits θ, logit1..3), binary reward r ~ Bernoulli(success_a); θ is the "
                "first logit; exact by enumeration of the (action, reward) outcomes",
        wrt_choices=("logit0",),
        defaults={**dict(zip(POLICY_SUCCESS, POLICY_DEFAULT_SUCCESS)), **{k: 0.0 for k in POLICY_FIXED_LOGITS}},
        build=_build_categorical_policy,
        default_thetas=(0.0, 1.0),
        default_estimators=("score_function", "score_function_loo", *GROUP_BASELINES, "naive"),
    ),
}


__all__ = ["POLICY_FAMILIES", "POLICY_K", "POLICY_SUCCESS", "outcome_rewards"]

"""Policy-gradient estimators for episodic problems (``problem.episodes``; estimators.core.episodes): the N samples
of an estimate are N episodes of an environment under π_θ, and ∇J(θ) = E[Σ_t γ^t Ψ_t ∂_θ log π_θ(a_t | s_t)] for
any Ψ_t that does not depend on a_t and later events beyond its expectation (Sutton et al. 2000; Schulman et al.
2016). Formulas: docs/math.md.

- ``reinforce_return``: Ψ_t = R, the episode's whole return (Williams 1992).
- ``reward_to_go``: Ψ_t = G_t = Σ_{t' >= t} γ^{t'−t} r_t': rewards before t are independent of a_t (causality).
- ``constant_baseline``: Ψ_t = R − b, b the mean return of N other episodes rolled out in the same estimate.
- ``value_baseline``: Ψ_t = G_t − V(s_t, t), V linear in (1, s, s², t/H), least squares on N other episodes.
- ``gae``: Ψ_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γV(s_{t+1}) − V(s_t), with that V (Schulman et al. 2016): biased for
  λ < 1 unless V is the policy's exact value function; λ = 1 is ``value_baseline``.

The baselines are fitted on episodes independent of the ones they multiply, so every estimator but GAE(λ < 1) is
unbiased; those episodes are rolled out inside the estimate, and counted in its cost (2 episodes per sample).
``score_function_loo``, ``grpo`` and ``dr_grpo`` (basic.py, group_baselines.py) also apply, the return standing for
the reward.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..core.episodes import episode_surrogate, fit_value, generalised_advantages, values
from ..core.estimator import Estimator, ParameterRange
from ..core.problem import Problem


def reinforce_return(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = R Σ_t ∂log π(a_t | s_t) per episode (REINFORCE with the total return)."""
    episodes = problem.episodes.rollout(theta, n_samples)
    return episode_surrogate(episodes, theta, episodes.returns())


def reward_to_go(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = Σ_t γ^t G_t ∂log π(a_t | s_t) per episode."""
    episodes = problem.episodes.rollout(theta, n_samples)
    return episode_surrogate(episodes, theta, episodes.discounts() * episodes.rewards_to_go())


def constant_baseline(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (R − b) Σ_t ∂log π(a_t | s_t), b the mean return of N separate episodes (per replicate)."""
    baseline = problem.episodes.rollout(theta.detach(), n_samples).returns().mean(dim=0)  # [M]
    episodes = problem.episodes.rollout(theta, n_samples)
    return episode_surrogate(episodes, theta, episodes.returns() - baseline)


def value_baseline(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = Σ_t γ^t (G_t − V(s_t, t)) ∂log π(a_t | s_t), V fitted on N separate episodes (per replicate)."""
    fitted = fit_value(problem.episodes.rollout(theta.detach(), n_samples))
    episodes = problem.episodes.rollout(theta, n_samples)
    advantages = episodes.rewards_to_go() - values(episodes, fitted)
    return episode_surrogate(episodes, theta, episodes.discounts() * advantages)


def gae(problem: Problem, theta: Tensor, n_samples: int, **options: float) -> Tensor:
    """ĝ = Σ_t γ^t A_t^{GAE(λ)} ∂log π(a_t | s_t), with V fitted on N separate episodes (per replicate)."""
    fitted = fit_value(problem.episodes.rollout(theta.detach(), n_samples))
    episodes = problem.episodes.rollout(theta, n_samples)
    advantages = generalised_advantages(episodes, fitted, options["lambda"])
    return episode_surrogate(episodes, theta, episodes.discounts() * advantages)


def needs_episodes(problem: Problem, n_samples: int) -> str | None:
    if problem.episodes is None:
        return (f"a policy-gradient estimator needs an episodic problem (samples that are episodes of an environment); "
                f"{problem.name}'s samples are draws x ~ p_θ with a cost f(x)")  # fmt: skip
    return None


def _one_episode(problem: Problem) -> int:
    return 1


def _two_episodes(problem: Problem) -> int:
    return 2  # the estimate's N episodes and the N separate ones its baseline is fitted on


def _lambda_at_most_one(problem: Problem, theta: float, options: Mapping[str, float]) -> str | None:
    if options.get("lambda", 0.0) > 1:
        return f"parameter lambda of estimator gae (GAE's λ) must be in [0, 1], got {options['lambda']:g}"
    return None


def _biased(problem: Problem) -> bool:
    return False


_NOT_COUPLED = "it rolls out episodes of an environment, not draws through problem.distribution(θ)"
_COMMON = dict(skip_reason=needs_episodes, episodic=True, coupled_samples_reason=_NOT_COUPLED)

EPISODIC: tuple[Estimator, ...] = (
    Estimator("reinforce_return", reinforce_return, "R Σ_t ∂log π(a_t|s_t), R the episode's return (REINFORCE, "
              "Williams 1992); unbiased, episodic problems", cost_evaluations=_one_episode, **_COMMON),
    Estimator("reward_to_go", reward_to_go, "Σ_t G_t ∂log π(a_t|s_t), G_t the return from t on (causality); unbiased, "
              "episodic problems", cost_evaluations=_one_episode, **_COMMON),
    Estimator("constant_baseline", constant_baseline, "(R − b) Σ_t ∂log π, b the mean return of N separate episodes; "
              "unbiased, 2 episodes per sample", cost_evaluations=_two_episodes, **_COMMON),
    Estimator("value_baseline", value_baseline, "Σ_t (G_t − V(s_t)) ∂log π, V linear in (1, s, s², t), fitted on N "
              "separate episodes; unbiased, 2 episodes per sample", cost_evaluations=_two_episodes, **_COMMON),
    Estimator("gae", gae, "Σ_t A_t ∂log π, A_t = Σ_l λ^l δ_{t+l} with that V (GAE, Schulman et al. 2016); biased for "
              "λ < 1 unless V is exact, 2 episodes per sample", cost_evaluations=_two_episodes, unbiased_for=_biased,
              parameters={"lambda": 0.95},
              parameter_ranges={"lambda": ParameterRange("GAE's λ, in [0, 1]", low=0.0, low_inclusive=True)},
              point_error=_lambda_at_most_one, **_COMMON),
)  # fmt: skip

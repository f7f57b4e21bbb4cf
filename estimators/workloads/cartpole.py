"""``cartpole_policy``: a linear-softmax policy on gymnasium's CartPole-v1, the gradient of its expected return.

The environment is gymnasium's own vectorised CartPole (``CartPoleVectorEnv``, numpy inside; classic control ships
with gymnasium, nothing is downloaded), one sub-environment per episode, so one call steps every episode of an
estimate at once. The policy is π_θ(a | s) = softmax(sᵀW + b)_a over the 4-dimensional observation and the two
actions: θ = (W [4 × 2], b [2]), P = 10 (the two columns are redundant, so the gradient's coordinates come in
opposite pairs). The objective is the undiscounted return capped at H = 200 steps, J(θ) = E[Σ_{t<T} r_t] =
E[episode length]: γ = 1 because that is CartPole-v1's own score, and because under γ < 1 the estimators as
practitioners write them (no γ^t factor) would carry a bias of their own besides GAE's.

Ground truth has no closed form: a reference estimate from REFERENCE_EPISODES episodes in float64, in
mirror-antithetic pairs (reset state −s0 and action uniforms 1 − u for the mirror of s0 and u: unbiased at any θ,
exactly mirror-symmetric at θ = 0; ``reference``), with the rewards-to-go minus a linear state-value baseline fitted
on FIT_EPISODES other episodes (unbiased), its standard error per coordinate (from the pair averages, the
independent units) in true_grad_se. tests/test_cartpole.py checks it against a
central finite difference of J with common random numbers (same reset states, same action uniforms).

Checkpoints: Adam (learning rate 0.05) from θ = 0 (the uniform policy) on RLOO estimates of TRAIN_EPISODES
episodes per step, each step's rollout seeded by the step: deterministic, so every process rebuilds the same θ.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.distributions import Categorical

from ..core.episodes import EpisodicEnvironment, episode_surrogate, fit_value, values
from ..core.problem import Problem, ProblemError, Workload
from ..core.random_streams import one_intra_op_thread
from .base import TrainingRun, checkpoint_problem, workload_family

HORIZON = 200
DISCOUNT = 1.0
OBSERVATIONS = 4
ACTIONS = 2
N_PARAMS = OBSERVATIONS * ACTIONS + ACTIONS
TRAIN_STEPS = 100
LEARNING_RATE = 0.05
TRAIN_EPISODES = 32
CHECKPOINTS = (0, 10, 30)  # mean return ≈ 22 (the uniform policy), 45, 110 of at most 200
FULL_CHECKPOINTS = (0, 5, 10, 20, 30, 40, 60, 100)
TRAINING_SEED = 18_000  # step k's rollout is seeded by TRAINING_SEED + k
REFERENCE_EPISODES = 1 << 14
FIT_EPISODES = 1 << 11
REFERENCE_CHUNK = 1 << 13  # episodes per rollout of the reference: [200, 8192, 4] float64 observations = 52 MB
REFERENCE_SEED = 20_260_18


def _make_env(num_envs: int):
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv  # imported on first rollout only

    return CartPoleVectorEnv(num_envs=num_envs, max_episode_steps=HORIZON)


def policy_logits(theta: Tensor, observations: Tensor) -> Tensor:
    """sᵀW_m + b_m [..., M, 2] for θ [M, P] and observations [..., M, 4]."""
    weights = theta[..., : OBSERVATIONS * ACTIONS].reshape(*theta.shape[:-1], OBSERVATIONS, ACTIONS)
    bias = theta[..., OBSERVATIONS * ACTIONS :]
    return torch.einsum("...md,mda->...ma", observations.to(theta.dtype), weights) + bias


ENVIRONMENT = EpisodicEnvironment("CartPole-v1", _make_env, policy_logits, HORIZON, DISCOUNT, OBSERVATIONS)


def _training_loss(state: dict[str, Tensor], step: int) -> Tensor:
    """−(RLOO estimate's surrogate) of TRAIN_EPISODES episodes seeded by the step."""
    theta = state["theta"][None]
    episodes = ENVIRONMENT.rollout_seeded(theta.detach(), TRAIN_EPISODES, TRAINING_SEED + step)
    returns = episodes.returns()
    baseline = (returns.sum(dim=0, keepdim=True) - returns) / (TRAIN_EPISODES - 1)
    return -((returns - baseline) * episodes.log_prob(theta).sum(dim=0)).mean()


TRAINING = TrainingRun(lambda: {"theta": torch.zeros(N_PARAMS, dtype=torch.float64)}, _training_loss, LEARNING_RATE,
                       TRAIN_STEPS)  # fmt: skip


def parameters(step: int) -> Tensor:
    return TRAINING[step]["theta"]



@functools.lru_cache(maxsize=None)
def reference(step: int) -> tuple[Tensor, Tensor, float]:
    """(mean gradient [P], its covariance [P, P], the mean return) from REFERENCE_EPISODES episodes in
    REFERENCE_EPISODES / 2 mirror-antithetic pairs: rewards-to-go minus V(s_t, t), V fitted on FIT_EPISODES other
    episodes (mirrored pairs too), float64. The covariance is that of the mean of the pair averages, the independent
    units: the two episodes of a pair are dependent by construction. Computed once per process and checkpoint
    (a few seconds).

    Why the pairs are unbiased at any θ: an episode is a deterministic function F_θ(s0, u) of its reset state s0
    and its action uniforms u (a_t = 1[u_t ≥ π_θ(0 | s_t)], inverse CDF). Its mirror is F_θ(−s0, 1 − u), the same
    function of (−s0, 1 − u), and (−s0, 1 − u) has the law of (s0, u): s0 is uniform on [−0.05, 0.05]^4, symmetric
    about 0, and the u_t are i.i.d. uniform on [0, 1) (to the 2^-53 grid of the draws: 1 − u lies on (0, 1]; the
    reset's grid likewise). So both episodes of a pair are draws from π_θ's episode law, each one's gradient term
    has mean ∇J, and so has their average, whatever θ: no symmetry of the policy is assumed, only of the reset
    law; the baseline V is fitted on other episodes, so it stays independent of both. What the mirror symmetry
    of CartPole adds is the variance drop: the force is sign(a − ½)·F, the dynamics are odd in the state and the
    termination even, so at θ = 0 (π = ½, where 1 − u gives 1 − a except at u = ½, probability 2^-53 a step) the
    mirrored episode is the exact mirror image, states −s_t and actions 1 − a_t, same rewards; its b-score
    e_a − ½ is negated and its W-score s(e_a − ½)ᵀ unchanged, so with a V even in s (fitted on mirrored pairs, its
    odd weights vanish to rounding) the pair cancels the b-coordinates, whose exact value there is 0, and
    keeps the W-coordinates' terms. Away from θ = 0 a near-odd policy keeps the pairs negatively correlated."""
    theta = parameters(step).to(torch.float64)
    with one_intra_op_thread():
        fitted = fit_value(ENVIRONMENT.rollout_seeded(theta[None], FIT_EPISODES, REFERENCE_SEED, mirrored=True))
    pairs, returns = [], 0.0
    for chunk in range(REFERENCE_EPISODES // REFERENCE_CHUNK):
        with one_intra_op_thread():
            per_pair, chunk_returns = _reference_chunk(theta, fitted, REFERENCE_SEED + 1 + chunk)
        pairs.append(per_pair)
        returns += chunk_returns
    per_pair = torch.cat(pairs)  # [REFERENCE_EPISODES / 2, P]
    # Centred before the products (not the raw second moment less the squared mean): at θ = 0 the b-coordinates'
    # pair averages are rounding-sized and a difference of raw moments could come out negative.
    centred = per_pair - per_pair.mean(dim=0)
    covariance = centred.T @ centred / (len(per_pair) - 1)
    return per_pair.mean(dim=0), covariance / len(per_pair), returns / REFERENCE_EPISODES


def _reference_chunk(theta: Tensor, fitted: Tensor, seed: int) -> tuple[Tensor, float]:
    """Per-pair mean gradients [REFERENCE_CHUNK / 2, P] (episode i and its mirror i + REFERENCE_CHUNK / 2) and the
    sum of the episodes' returns."""
    # Each episode its own replicate (N = 1, M = chunk), so one backward pass gives every episode's gradient.
    leaf = theta.expand(REFERENCE_CHUNK, N_PARAMS).clone().requires_grad_(True)
    episodes = ENVIRONMENT.rollout_seeded(leaf.detach(), 1, seed, mirrored=True)
    advantages = episodes.rewards_to_go() - values(episodes, fitted.expand(REFERENCE_CHUNK, -1))
    (per_episode,) = torch.autograd.grad(episode_surrogate(episodes, leaf, episodes.discounts() * advantages).sum(), leaf)
    half = REFERENCE_CHUNK // 2
    return (per_episode[:half] + per_episode[half:]) / 2, float(episodes.returns().sum())


def exact_gradient(step: int) -> tuple[Tensor, Tensor]:
    """(the reference gradient, its standard error per coordinate): no closed form exists."""
    mean, covariance, _ = reference(step)
    return mean, covariance.diagonal().sqrt()


def objective(step: int) -> float:
    """J(θ) at the checkpoint: the reference episodes' mean return."""
    return reference(step)[2]


def _no_cost(x: Tensor, theta: Tensor) -> Tensor:
    raise ProblemError("cartpole_policy's samples are episodes of an environment: there is no cost f(x) to call; "
                       "its estimators roll them out through problem.episodes")  # fmt: skip


def _reset_centre_policy(theta: Tensor) -> Categorical:
    # What inspects a problem's distribution (batch shape, its type) sees the policy at the reset states' centre.
    return ENVIRONMENT.policy(theta, torch.zeros(*theta.shape[:-1], OBSERVATIONS, dtype=theta.dtype, device=theta.device))


SUMMARY = ("linear-softmax policy (4 × 2 weights + 2 biases) on gymnasium's vectorised CartPole-v1, horizon 200, "
           "γ = 1; gradient of the expected return w.r.t. the 10 policy parameters")
GROUND_TRUTH = (f"no closed form: a reference of {REFERENCE_EPISODES} episodes in float64 as "
                f"{REFERENCE_EPISODES // 2} mirror-antithetic pairs (reset −s0, action uniforms 1 − u; unbiased at "
                "any θ, the b-coordinates exactly 0 at θ = 0), rewards-to-go minus a linear state-value baseline "
                f"fitted on {FIT_EPISODES} other episodes, its standard error per coordinate in true_grad_se, from the "
                "pair averages; a central finite difference of J with common random numbers agrees within its "
                "interval (tests)")  # fmt: skip


@functools.lru_cache(maxsize=None)
def at_checkpoint(step: int) -> Problem:
    """Episodes of CartPole under π_θ at the checkpoint (θ = the policy's parameters themselves)."""
    return checkpoint_problem("cartpole_policy", "episodes of CartPole-v1 under softmax(sᵀW + b), reward: the return",
                              "policy", _reset_centre_policy, _no_cost, cost_is_differentiable=False,
                              workload=CARTPOLE, step=step, gradient_formula=GROUND_TRUTH,
                              episodes=ENVIRONMENT)  # fmt: skip


CARTPOLE = Workload(
    n_params=N_PARAMS,
    train_steps=TRAIN_STEPS,
    checkpoints=CHECKPOINTS,
    full_checkpoints=FULL_CHECKPOINTS,
    at=at_checkpoint,
    parameters=parameters,
    to_theta=lambda phi: phi,
    exact_gradient=exact_gradient,
    objective=objective,
    ground_truth=GROUND_TRUTH,
    # One episode holds up to 200 steps of observations, actions, log-probabilities and their gradients.
    bytes_per_sample=HORIZON * 16 * 8,
)

FAMILY = workload_family("cartpole_policy", SUMMARY, "policy", CARTPOLE,
                         default_estimators=("reinforce_return", "reward_to_go", "constant_baseline", "value_baseline",
                                             "gae", "score_function_loo", "grpo", "dr_grpo"))  # fmt: skip

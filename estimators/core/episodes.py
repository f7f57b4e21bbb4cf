"""Episodic problems: the samples are episodes of an environment under a stochastic policy π_θ, and the objective is
the expected (discounted) return J(θ) = E[Σ_t γ^t r_t], not E_{x ~ p_θ}[f(x)].

A ``Problem`` whose ``episodes`` field holds an ``EpisodicEnvironment`` is such a problem. Its estimators (those
declaring ``Estimator.episodic``) call ``problem.episodes.rollout(θ, N)`` for N episodes per replicate and get an
``Episodes`` batch: the trajectories (drawn without a gradient) and ``log_prob(θ)``, the differentiable
log π_θ(a_t | s_t) of the actions taken, from which every policy-gradient surrogate is a weighted sum. The
helpers here are the math all of them share: returns, rewards-to-go, a value baseline fitted by least squares,
generalised advantages. Formulas: docs/math.md.

Randomness: one rollout draws one integer from torch's global generator (so the cell's seed fixes it) and seeds a
local generator and the environment's reset with it; actions are drawn by inverse-CDF sampling from uniforms of
that generator, one per environment per step. ``rollout_seeded`` takes the seed explicitly: two rollouts with one
seed at nearby θ share reset states and action uniforms (common random numbers, for a finite difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical

from .random_streams import one_intra_op_thread


@dataclass(frozen=True)
class Episodes:
    """N episodes for each of M replicates, time-major: tensors [T, N, M, ...], T the longest episode's length.
    Steps after an episode's end are padding (``alive`` False, reward 0)."""

    observations: Tensor  # [T, N, M, obs_dim], θ's dtype
    actions: Tensor  # [T, N, M], int64
    rewards: Tensor  # [T, N, M], 0 after the episode's end
    alive: Tensor  # [T, N, M], bool: step t was taken in the episode
    policy_logits: Callable[[Tensor, Tensor], Tensor]
    discount: float
    horizon: int
    environment_steps: int  # environment transitions computed, padding included (what the rollout cost)

    def log_prob(self, theta: Tensor) -> Tensor:
        """log π_θ(a_t | s_t) [T, N, M], 0 on padding; differentiable in θ [M, P]."""
        log_policy = torch.log_softmax(self.policy_logits(theta, self.observations), dim=-1)
        return log_policy.gather(-1, self.actions.unsqueeze(-1)).squeeze(-1) * self.alive

    def discounts(self) -> Tensor:
        """γ^t [T, 1, 1]."""
        steps = torch.arange(self.rewards.shape[0], dtype=self.rewards.dtype, device=self.rewards.device)
        return (self.discount**steps)[:, None, None]

    def returns(self) -> Tensor:
        """Σ_t γ^t r_t per episode [N, M]."""
        return (self.discounts() * self.rewards).sum(dim=0)

    def rewards_to_go(self) -> Tensor:
        """G_t = Σ_{t' >= t} γ^{t' − t} r_t' [T, N, M] (0 on padding)."""
        return discounted_cumsum(self.rewards, self.discount)

    def time_features(self) -> Tensor:
        """ψ(s_t, t) [T, N, M, 2·obs_dim + 2] (``features``)."""
        return features(self.observations, self.horizon)


def features(observations: Tensor, horizon: int, time_dim: int = 0) -> Tensor:
    """ψ(s_t, t) = (1, s, s², t/H) for observations [..., obs_dim] whose dimension ``time_dim`` is t: what a linear
    state-value function sees (the remaining time matters under a horizon cap)."""
    s = observations
    shape = [1] * (s.dim() - 1)
    shape[time_dim] = s.shape[time_dim]
    t = torch.arange(s.shape[time_dim], dtype=s.dtype, device=s.device).reshape(*shape, 1).expand(*s.shape[:-1], 1)
    return torch.cat([torch.ones_like(t), s, s * s, t / horizon], dim=-1)


def discounted_cumsum(rewards: Tensor, discount: float) -> Tensor:
    """Σ_{t' >= t} γ^{t' − t} x_t' along dimension 0."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + discount * running
        out[t] = running
    return out


# Ridge on the normal equations of the value fit, on every weight but the intercept's (which gets a token one, so a
# fit on one short episode stays well posed): a fit on a few episodes otherwise chases their noise, and its
# baseline adds variance instead of removing it (docs/problems.md, cartpole_policy).
VALUE_RIDGE = 100.0
INTERCEPT_RIDGE = 1e-3


def fit_value(episodes: Episodes) -> Tensor:
    """Per replicate, least-squares weights w [M, F] of V(s, t) = ψ(s, t)ᵀw fitted to the rewards-to-go of
    ``episodes`` (all their steps, detached). Fitted on other episodes than the ones it baselines, V is
    independent of them, so a baseline V(s_t) keeps the gradient estimate unbiased."""
    # Replicate-major [M, T·N, F] from the start, so the normal equations are one batched matrix product.
    replicates = episodes.observations.shape[2]
    design = features(episodes.observations.detach().permute(2, 0, 1, 3), episodes.horizon, time_dim=1)
    size = design.shape[-1]
    design = design.reshape(replicates, -1, size)
    mask = episodes.alive.permute(2, 0, 1).reshape(replicates, -1, 1).to(design.dtype)
    targets = episodes.rewards_to_go().detach().permute(2, 0, 1).reshape(replicates, -1, 1)
    masked = design * mask
    gram = masked.transpose(1, 2) @ design
    moment = (masked.transpose(1, 2) @ targets).squeeze(-1)
    penalty = torch.full((size,), VALUE_RIDGE, dtype=design.dtype, device=design.device)
    penalty[0] = INTERCEPT_RIDGE  # the mean return-to-go is what even a few episodes estimate well
    return torch.linalg.solve(gram + torch.diag(penalty), moment)


def values(episodes: Episodes, weights: Tensor) -> Tensor:
    """V(s_t, t) [T, N, M] under value weights [M, F], 0 on padding."""
    return torch.einsum("tnmf,mf->tnm", episodes.time_features(), weights) * episodes.alive


def generalised_advantages(episodes: Episodes, weights: Tensor, lam: float) -> Tensor:
    """GAE(λ) [T, N, M]: A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V(s_{t+1}) − V(s_t), V = 0 after the episode's end
    (termination, or the horizon cap, where the objective ends). λ = 1 gives G_t − V(s_t)."""
    v = values(episodes, weights)
    following = torch.cat([v[1:], torch.zeros_like(v[:1])]) * episodes.alive  # V(s_{t+1}); 0 past the end
    deltas = (episodes.rewards + episodes.discount * following - v) * episodes.alive
    return discounted_cumsum(deltas, episodes.discount * lam)


@dataclass(frozen=True)
class EpisodicEnvironment:
    """A vectorised environment, a policy over its observations and the objective's horizon and discount.

    ``make_env(num_envs)`` returns a gymnasium vector environment (``reset(seed=)``, ``step(actions)``);
    ``policy_logits(θ [M, P], observations [..., M, obs_dim])`` the logits [..., M, actions] of the policy's
    categorical action distribution (softmax; ``policy`` wraps them in torch's Categorical)."""

    name: str
    make_env: Callable[[int], Any]
    policy_logits: Callable[[Tensor, Tensor], Tensor]
    horizon: int
    discount: float
    observation_size: int

    def policy(self, theta: Tensor, observations: Tensor) -> Categorical:
        """π_θ(· | s) for θ [M, P] and observations [..., M, obs_dim], batch [..., M]."""
        return Categorical(logits=self.policy_logits(theta, observations))

    def rollout(self, theta: Tensor, n_episodes: int) -> Episodes:
        """N episodes per replicate of θ [M, P], seeded from torch's global generator."""
        return self.rollout_seeded(theta, n_episodes, int(torch.randint(0, 2**62, (), dtype=torch.int64)))

    def rollout_seeded(self, theta: Tensor, n_episodes: int, seed: int, mirrored: bool = False) -> Episodes:
        """N episodes per replicate of θ [M, P], every env's reset state and action uniforms fixed by ``seed``.

        ``mirrored``: the second half of the N·M episodes (flat index i + N·M/2, the replicate-minor order of
        [N, M]) mirrors the first: reset state −s0 and action uniforms 1 − u where episode i has s0 and u. For a
        vector environment whose ``state`` [obs_dim, num_envs] is its observation (gymnasium's classic control
        ones), with a reset distribution symmetric about 0; each half alone is an ordinary seeded rollout."""
        replicates = theta.shape[0]
        count = n_episodes * replicates
        if mirrored and count % 2:
            raise ValueError(f"a mirrored rollout pairs its episodes: N·M must be even, got {count}")
        env = self.make_env(count)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        observation, _ = env.reset(seed=seed % 2**32)
        half = count // 2
        if mirrored:
            # The state the environment steps from, float64; its observation is that state as float32.
            env.state[:, half:] = -env.state[:, :half]
            observation = env.state.T.astype(np.float32)
        policy_theta = theta.detach()
        dtype, device = theta.dtype, theta.device
        alive = torch.ones(count, dtype=torch.bool)
        # Filled step by step and sliced at the end: stacking a list of per-step tensors copied them all again.
        observations = torch.empty(self.horizon, count, self.observation_size, dtype=dtype)
        actions = torch.empty(self.horizon, count, dtype=torch.int64)
        rewards = torch.empty(self.horizon, count, dtype=dtype)
        alives = torch.empty(self.horizon, count, dtype=torch.bool)
        steps = taken = 0
        # Small per-step tensors: a second intra-op thread only contends (softmax of [N, M, 2] took 40× longer).
        with torch.no_grad(), one_intra_op_thread():
            for t in range(self.horizon):
                observations[t] = torch.from_numpy(np.asarray(observation))
                state = observations[t].reshape(n_episodes, replicates, -1).to(device)
                logits = self.policy_logits(policy_theta, state).reshape(count, -1)
                if mirrored:
                    drawn = torch.rand(half, generator=generator, dtype=torch.float64)
                    uniforms = torch.cat([drawn, 1.0 - drawn])  # exact: the draws are multiples of 2^-53
                else:
                    uniforms = torch.rand(count, generator=generator, dtype=torch.float64)
                # Inverse CDF: the action is the number of cumulative probabilities below the uniform.
                cumulative = logits.double().softmax(dim=-1).cumsum(dim=-1)[:, :-1].cpu()
                actions[t] = (uniforms[:, None] >= cumulative).sum(dim=-1)
                observation, reward, terminated, truncated, _ = env.step(actions[t].numpy())
                steps += count
                taken = t + 1
                rewards[t] = torch.from_numpy(np.asarray(reward)) * alive
                alives[t] = alive
                alive = alive & ~torch.from_numpy(np.logical_or(terminated, truncated))
                if not alive.any():
                    break
        shape = (taken, n_episodes, replicates)
        return Episodes(
            observations=observations[:taken].reshape(*shape, -1).to(device),
            actions=actions[:taken].reshape(shape).to(device),
            rewards=rewards[:taken].reshape(shape).to(device),
            alive=alives[:taken].reshape(shape).to(device),
            policy_logits=self.policy_logits,
            discount=self.discount,
            horizon=self.horizon,
            environment_steps=steps,
        )


def episode_surrogate(episodes: Episodes, theta: Tensor, weights: Tensor) -> Tensor:
    """[N, M] whose gradient w.r.t. θ is, per episode, Σ_t w_t ∂_θ log π_θ(a_t | s_t): ``weights`` [N, M] (one per
    episode, every step's) or [T, N, M] (one per step); detached, so only the score carries θ."""
    log_prob = episodes.log_prob(theta)
    if weights.dim() == 2:
        return weights.detach() * log_prob.sum(dim=0)
    return (weights.detach() * log_prob).sum(dim=0)

"""IndeCateR (De Smet, Sansone & Zuidberg Dos Martires, NeurIPS 2023): the CatLog-derivative trick.

For D independent discrete latents, ∂_θ E[f(X)] = Σ_d E_{X_−d}[ Σ_k f(X_−d, x_d = k) ∂_θ π_{d,k} ]: each sample
keeps its other coordinates and sums coordinate d out exactly, so the estimator is unbiased and costs D·K cost
evaluations per sample. A Bernoulli coordinate has K = 2 and Σ_k f_k ∂π_k = (f(x_d = 1) − f(x_d = 0)) ∂σ(α_d);
a single categorical choice (D = 1) has no other coordinates, so its estimate is the exact gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Bernoulli

from ..core.estimator import Estimator
from ..core.problem import Problem
from .discrete import BERNOULLI, _cost, _latent, _Latent, _needs_discrete, discrete_kind


def _with_each_coordinate_set(b: Tensor, value: float) -> Tensor:
    """[D, *b.shape]: copy d of the samples b [..., D] with coordinate d set to ``value``."""
    dims = b.shape[-1]
    copies = b.expand(dims, *b.shape).clone()
    copies[torch.arange(dims), ..., torch.arange(dims)] = value
    return copies


def _bernoulli_surrogate(problem: Problem, latent: _Latent, theta: Tensor, n_samples: int) -> Tensor:
    p = torch.sigmoid(latent.logits)
    b = Bernoulli(probs=p.detach()).sample((n_samples,))  # [N, *batch, D]
    f_one = _cost(problem, latent, _with_each_coordinate_set(b, 1.0), theta)  # [D, N, *batch]
    f_zero = _cost(problem, latent, _with_each_coordinate_set(b, 0.0), theta)
    # Coordinate d's exact sum over its two values, weighted by ∂π_{d,1} = −∂π_{d,0} = ∂σ(α_d).
    difference = (f_one - f_zero).detach().movedim(0, -1)  # [N, *batch, D]
    return (difference * p).sum(dim=-1)


def _categorical_surrogate(problem: Problem, latent: _Latent, theta: Tensor, n_samples: int) -> Tensor:
    k = latent.logits.shape[-1]
    vertices = torch.eye(k, dtype=latent.logits.dtype, device=latent.logits.device)
    outcomes = vertices.reshape(k, *([1] * (latent.logits.dim() - 1)), k).expand(k, *latent.logits.shape)
    f = _cost(problem, latent, outcomes, theta).detach().movedim(0, -1)  # [*batch, K]
    exact = (f * latent.logits.exp()).sum(dim=-1)  # Σ_k f(e_k) π_k: no other coordinate is left to sample
    return exact.expand(n_samples, *exact.shape)


def indecater(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = Σ_d Σ_k f(x_−d, x_d = k) ∂_θ π_{d,k} at each sample x   (IndeCateR, the CatLog-derivative trick)."""
    latent = _latent(problem, theta)
    if latent.kind == BERNOULLI:
        return _bernoulli_surrogate(problem, latent, theta, n_samples)
    return _categorical_surrogate(problem, latent, theta, n_samples)


def indecater_evaluations(problem: Problem) -> int:
    """D·K per sample: 2 per Bernoulli coordinate, K for the one categorical choice; 0 where it does not apply."""
    kind = discrete_kind(problem)
    if kind is None:
        return 0
    dist = problem.example_distribution()
    width = dist.event_shape[-1] if dist.event_shape else 1  # a plain Bernoulli is one coordinate
    return 2 * width if kind == BERNOULLI else width


INDECATER = Estimator(
    "indecater", indecater,
    "Σ_d Σ_k f(x_−d, x_d = k) ∂π_{d,k}: each coordinate summed out exactly at the sample (IndeCateR, De Smet et al. 2023); unbiased, D·K cost evals",
    skip_reason=_needs_discrete, cost_evaluations=indecater_evaluations, parallel_safe=True,
)  # fmt: skip

"""ReinMax (Liu et al., NeurIPS 2023, "Bridging Discrete and Backpropagation: Straight-Through and Beyond").

Straight-through read as a forward-Euler step; ReinMax takes Heun's step instead, a second-order approximation of
the gradient that needs no second derivatives. For a categorical with π = softmax(α), a hard one-hot D ~ π and
temperature τ (Algorithm 2 of the paper and its reference code):

    π_m = ½ (D + softmax(α/τ)),   π₁ = softmax(sg(ln π_m − α) + α),   π₂ = 2 π₁ − ½ π,   x = π₂ − sg(π₂) + D,

so x = D forward, and backward ∂x/∂α = 2 J(π_m) − ½ J(π), J(p) = diag(p) − p pᵀ the softmax Jacobian at p.
The −½ term uses the untempered π, not softmax(α/τ); the two agree at the paper's default τ = 1. Given D the
estimate is deterministic, so it is biased (for any τ) and its moments are a finite sum over the outcomes.
A Bernoulli coordinate with logit α is the 2-way categorical with logits (α, 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.estimator import POSITIVE_TEMPERATURE, Estimator
from ..core.problem import Problem
from .discrete import BERNOULLI, _biased, _check_positive, _cost, _latent, _Latent, _needs_differentiable_discrete, _uniform

DEFAULT_TEMPERATURE = 1.0  # the paper's default; its reference code refuses τ < 1, the estimator is defined for τ > 0


def reinmax_relaxed(logits: Tensor, hard: Tensor, temperature: float) -> Tensor:
    """π₂ − sg(π₂) + D over the last (category) dimension: D forward, 2 J(π_m) − ½ J(π) backward."""
    probs = torch.softmax(logits, dim=-1)
    midpoint = 0.5 * (hard + torch.softmax(logits / temperature, dim=-1))
    # softmax(c + α) with c = sg(ln π_m − α) equals π_m in value and has the softmax Jacobian at π_m.
    anchored = torch.softmax((torch.log(midpoint) - logits).detach() + logits, dim=-1)
    heun = 2.0 * anchored - 0.5 * probs
    return heun - heun.detach() + hard


def as_categorical(latent: _Latent) -> Tensor:
    """Categorical logits [..., K]: a Bernoulli coordinate α becomes the 2-way (α, 0), category 0 meaning x = 1."""
    if latent.kind == BERNOULLI:
        return torch.stack((latent.logits, torch.zeros_like(latent.logits)), dim=-1)
    return latent.logits


def sample_one_hot(logits: Tensor, n_samples: int) -> Tensor:
    """One-hot D ~ softmax(logits) [N, ..., K], by the Gumbel-max trick on uniforms from torch's global generator."""
    u = _uniform(torch.Size((n_samples, *logits.shape)), logits)
    scores = logits.detach() - torch.log(-torch.log(u))
    return nn.functional.one_hot(scores.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)


def reinmax(problem: Problem, theta: Tensor, n_samples: int, *, temperature: float) -> Tensor:
    """ĝ = ∂f/∂x at the hard sample D, times (2 J(½(D + softmax(α/τ))) − ½ J(softmax α)) ∂α/∂θ   (ReinMax)."""
    _check_positive("temperature", temperature)
    latent = _latent(problem, theta)
    logits = as_categorical(latent)
    x = reinmax_relaxed(logits, sample_one_hot(logits, n_samples), temperature)
    return _cost(problem, latent, x[..., 0] if latent.kind == BERNOULLI else x, theta)


REINMAX: tuple[Estimator, ...] = (
    Estimator("reinmax", reinmax,
              "f at the hard sample D forward, 2J(½(D + softmax(α/τ))) − ½J(softmax α) backward (ReinMax, Liu et al. 2023; Heun); biased",
              skip_reason=_needs_differentiable_discrete, unbiased_for=_biased,
              parameters={"temperature": DEFAULT_TEMPERATURE}, parameter_ranges={"temperature": POSITIVE_TEMPERATURE}),
)  # fmt: skip

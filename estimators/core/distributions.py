"""What the estimators need to know about a torch distribution: draws without a gradient, the score
∂_θ log p_θ(x) in the forms float32 and speed want, and whether it is a (diagonal) Gaussian."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from .problem import Problem


def draw_detached(dist, n_samples: int) -> Tensor:
    """N samples carrying no gradient. Reparameterisable distributions draw by ``rsample`` under ``no_grad``
    (μ + σ·ε): the same distribution as ``.sample()``, whose ``torch.normal`` on expanded parameters is slower on
    CPU (docs/performance.md)."""
    if dist.has_rsample:
        with torch.no_grad():
            return dist.rsample((n_samples,))
    return dist.sample((n_samples,))


def score_surrogate(dist: Distribution, x: Tensor) -> Tensor:
    """A per-sample tensor whose gradient w.r.t. θ is ∂_θ log p_θ(x) at the fixed samples x: ``log_prob``
    itself, or for Bernoullis a closed form that float32 does not cancel. Gaussians have a faster closed form
    summed over the samples, ``weighted_score_sum``, which is what the estimators call."""
    bernoulli = _bernoulli_logits(dist)
    if bernoulli is not None:
        # ∂log p(b)/∂η = b − σ(η), written b σ(−η) − (1 − b) σ(η): in float32 b − σ(η) is exactly 0 once σ(η)
        # rounds to 1 (|η| > 17), which dropped f·e^(−|η|) from every sample of a saturated latent and biased
        # REINFORCE on the trained discrete VAE (z = −6.3). Same gradient, without the cancellation.
        eta = bernoulli.detach()
        factor = x * torch.sigmoid(-eta) - (1 - x) * torch.sigmoid(eta)
        score = factor * bernoulli
        return score.sum(dim=-1) if isinstance(dist, Independent) else score
    return dist.log_prob(x)


def _bernoulli_logits(dist: Distribution) -> Tensor | None:
    """The logits of a Bernoulli or of independent Bernoullis Independent(Bernoulli, 1); None otherwise."""
    if isinstance(dist, Bernoulli):
        return dist.logits
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Bernoulli) and dist.reinterpreted_batch_ndims == 1:
        return dist.base_dist.logits
    return None


def weighted_score_sum(dist: Distribution, x: Tensor, weights: Tensor) -> Tensor:
    """A tensor whose gradient w.r.t. θ is Σ_n w_n ∂_θ log p_θ(x_n), summed over the samples (dimension 0).

    For a (diagonal) Gaussian, the closed-form score (x − μ)/σ² ∂μ + ((x − μ)²/σ² − 1)/σ ∂σ with its sums over
    samples taken before θ enters: Σ w (x − μ) and Σ w (x − μ)², times [M]-sized functions of μ(θ), σ(θ).
    Autograd then never differentiates log_prob's steps over all N·M samples, nor any sample-sized tensor
    (the speed-up: docs/performance.md). Anything else: Σ_n w_n score_surrogate.
    """
    gaussian = diagonal_gaussian(dist)
    if gaussian is None:
        return (weights * score_surrogate(dist, x)).sum(dim=0)
    loc, scale = gaussian
    mu, sigma = loc.detach(), scale.detach()
    if isinstance(dist, Independent):
        weights = weights.unsqueeze(-1)
    centred = x - mu
    weighted = weights * centred
    score = x.new_zeros(())
    if loc.requires_grad:
        score = score + weighted.sum(dim=0) * (loc / sigma**2)
    if scale.requires_grad:
        score = score + (weighted * centred).sum(dim=0) * (scale / sigma**3) - weights.sum(dim=0) * (scale / sigma)
    if score.dim() == 0:  # θ moves neither parameter
        return score
    return score.sum(dim=-1) if isinstance(dist, Independent) else score


def diagonal_gaussian(dist: Distribution) -> tuple[Tensor, Tensor] | None:
    """(loc, scale) of a Normal or of a diagonal Gaussian Independent(Normal, 1); None for anything else."""
    if isinstance(dist, Normal):
        return dist.loc, dist.scale
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal) and dist.reinterpreted_batch_ndims == 1:
        return dist.base_dist.loc, dist.base_dist.scale
    return None


def coordinates_moved_by_theta(problem: Problem, theta: Tensor) -> tuple[list[int], list[int]]:
    """Event coordinates d of a diagonal Gaussian with ∂loc_d/∂θ ≠ 0, and those with ∂scale_d/∂θ ≠ 0.

    Computed through the problem's own distribution (a problem need not declare which coordinates θ moves),
    so a coupled pair is spent only on those. The per-coordinate derivative is a Jacobian–vector product,
    taken as the derivative of a vector–Jacobian product w.r.t. its vector (torch.func.jvp would load
    TorchScript decompositions on first use, which is slow and deprecated).
    """
    t = theta.detach().requires_grad_(True)
    moved = []
    for parameter in diagonal_gaussian(problem.distribution(t)):
        if not parameter.requires_grad:
            moved.append([])
            continue
        direction = torch.ones_like(parameter, requires_grad=True)
        (vjp,) = torch.autograd.grad(parameter, t, direction, create_graph=True, allow_unused=True)
        jvp = None
        if vjp is not None and vjp.requires_grad:
            (jvp,) = torch.autograd.grad(vjp, direction, torch.ones_like(vjp), allow_unused=True)
        if jvp is None:  # θ does not reach this parameter
            moved.append([])
            continue
        moved.append(jvp.reshape(-1, jvp.shape[-1]).ne(0).any(dim=0).nonzero().flatten().tolist())
    return moved[0], moved[1]



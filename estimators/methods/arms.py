"""ARMS (Dimitriev & Zhou, ICML 2021): antithetic REINFORCE with N mutually antithetic Bernoulli samples.

Per coordinate with logit α and p = σ(α), the N samples of one estimate come from N uniforms coupled by the
Dirichlet copula: d ~ Dirichlet(1, …, 1) (the spacings of N − 1 sorted uniforms), u_i = (1 − d_i)^{N−1}, each
uniform on (0, 1) because d_i ~ Beta(1, N − 1). The copula is antithetic in its lower tail (few d_i can be large
together), so the rarer outcome is the one thresholded there: b_i = 1[u_i < p] when p < ½ and b_i = 1[1 − u_i < p]
otherwise. With π = min(p, 1 − p) = σ(−|α|), two samples are both rare with probability C(π, π), the copula's
diagonal (2π^{1/(N−1)} − 1)_+^{N−1}, so the leave-one-out score sum has mean (N − 1)(π − C(π, π)) ∂_α f; ARMS
rescales it to the gradient:

    ĝ_α = σ(α)σ(−α) / ((N − 1)(π − C(π, π))) · Σ_i (f(b_i) − f̄)(b_{i,α} − σ(α)),   f̄ = mean_i f(b_i).

Independent uniforms (C = π²) give RLOO; at N = 2 the copula is the antithetic pair (u, 1 − u), C = 0 and ĝ is
DisARM's estimate. Each coordinate has its own copula draw, independent of the others'.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from ..core.estimator import Estimator
from ..core.problem import Problem
from .discrete import _cost, _latent, _needs_bernoulli, _uniform


def flat_dirichlet(n_samples: int, like: Tensor) -> Tensor:
    """[N, *like.shape] ~ Dirichlet(1, …, 1) along dim 0: the spacings of N − 1 sorted uniforms on (0, 1), so that
    N = 2 consumes the one uniform DisARM draws, (d_1, d_2) = (v, 1 − v)."""
    cuts = _uniform(torch.Size((n_samples - 1, *like.shape)), like).sort(dim=0).values
    zero, one = torch.zeros_like(cuts[:1]), torch.ones_like(cuts[:1])
    return torch.diff(torch.cat((zero, cuts, one)), dim=0)


def copula_diagonal(log_pi: Tensor, n_samples: int) -> Tensor:
    """C(π, π) = P(u_i < π, u_j < π) = (2π^{1/(N−1)} − 1)_+^{N−1} of the N-dimensional Dirichlet copula."""
    # 2π^{1/(N−1)} − 1 = 1 + 2 expm1(log π/(N−1)), raised to N − 1 through log1p: no rounding amplified N − 1 times.
    shortfall = (2 * torch.expm1(log_pi / (n_samples - 1))).clamp(min=-1)  # −1: the base is <= 0, so C = 0
    return torch.exp((n_samples - 1) * torch.log1p(shortfall))


def arms_coefficient(alpha: Tensor, n_samples: int) -> Tensor:
    """σ(α)σ(−α) / ((N − 1)(π − C(π, π))), π = σ(−|α|): the factor that makes the copula's LOO sum unbiased."""
    log_pi = logsigmoid(-alpha.abs())
    pi = log_pi.exp()
    diagonal = copula_diagonal(log_pi, n_samples)
    # Written as (1 − π)/((N − 1)(1 − C/π)) so that a π that underflows (C = 0 there) gives no 0/0.
    ratio = torch.where(diagonal > 0, diagonal / pi, torch.zeros_like(pi))
    return (1 - pi) / ((n_samples - 1) * (1 - ratio))


def arms(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ_α = σ(α)σ(−α)/((N − 1)(π − C(π, π))) Σ_i (f(b_i) − f̄)(b_i − σ(α)), b from the Dirichlet copula   (ARMS)."""
    if n_samples < 2:
        raise ValueError(f"arms needs N >= 2 samples per estimate, got {n_samples}")
    latent = _latent(problem, theta)
    alpha = latent.logits
    a = alpha.detach()
    d = flat_dirichlet(n_samples, a)
    # u_i = (1 − d_i)^{N−1} < π  ⟺  d_i > 1 − π^{1/(N−1)}: the rare outcome, thresholded on d directly.
    rare = d > -torch.expm1(logsigmoid(-a.abs()) / (n_samples - 1))
    b = torch.where(a < 0, rare, ~rare).to(alpha.dtype)  # ones are rare when p < ½, zeros otherwise
    f = _cost(problem, latent, b, theta)  # [N, *batch]
    centred = (f - f.mean(dim=0)).unsqueeze(-1)
    # Per sample N·coefficient·(f_i − f̄)(b_i − p): their mean over the N samples is ĝ, as the surrogate requires.
    # b − σ(α) as b σ(−α) − (1 − b) σ(α): float32 does not cancel it to 0 where σ(α) rounds to 1.
    score = b * torch.sigmoid(-a) - (1 - b) * torch.sigmoid(a)
    terms = n_samples * arms_coefficient(a, n_samples) * centred * score
    return (terms.detach() * alpha).sum(dim=-1)


def _applies(problem: Problem, n_samples: int) -> str | None:
    if n_samples < 2:
        return "ARMS couples N >= 2 samples per estimate through its copula (N = 1 has no partner)"
    return _needs_bernoulli(problem, n_samples, "ARMS is defined for Bernoulli (binary) latents; a K-way categorical "
                                                "is not binary")  # fmt: skip


ARMS = Estimator(
    "arms", arms,
    "σ(α)σ(−α)/((N−1)(π − C(π,π))) Σ_i (f(b_i) − f̄)(b_i − σ(α)), b_i from N Dirichlet-copula uniforms, π = σ(−|α|) (ARMS, Dimitriev & Zhou 2021); Bernoulli, unbiased, N ≥ 2, DisARM at N = 2",
    skip_reason=_applies, samples_independent=False,
    coupled_samples_reason="it couples its own N samples through the Dirichlet copula; other noise would break the coupling its rescaling assumes",
    parallel_safe=True,
)  # fmt: skip

"""Gumbel-Rao (Paulus, Maddison & Krause 2021): straight-through Gumbel-softmax, Rao-Blackwellised over the noise.

Straight-through's backward is ∂f/∂x at the hard sample D times ∂_θ σ_τ(z), z the perturbed logits whose argmax
(or sign) is D. Gumbel-Rao replaces ∂_θ σ_τ(z) by its conditional mean given D, estimated from K = ``samples``
draws z^(k) ~ p(z | D), the noise held fixed in θ as straight-through holds it:

    ĝ = ∂f/∂x(D) · (1/K) Σ_k ∂_θ σ_τ(α + G^(k)),   G^(k) ~ p(G | D), D ~ p_θ.

By the tower rule its mean is straight-through's for every K; its variance is no larger, and at K = 1 it is
straight-through in distribution. One cost evaluation per sample (at D); the extra work is K relaxations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions.utils import clamp_probs

from ..core.estimator import POSITIVE_TEMPERATURE, Estimator, ParameterRange
from ..core.problem import Problem
from .discrete import (BERNOULLI, _biased, _check_positive, _cost, _latent, _Latent, _needs_differentiable_discrete,
                       _uniform)


def hard_sample(latent: _Latent, n_samples: int) -> Tensor:
    """D ~ p_θ in the latent layout [N, *batch, D or K]: 0/1 per Bernoulli coordinate, or one-hot."""
    logits = latent.logits.detach()
    u = _uniform(torch.Size((n_samples, *logits.shape)), logits)
    if latent.kind == BERNOULLI:
        return (u < torch.sigmoid(logits)).to(logits.dtype)
    index = (logits - torch.log(-torch.log(u))).argmax(dim=-1)  # the Gumbel-max trick
    return nn.functional.one_hot(index, logits.shape[-1]).to(logits.dtype)


def conditional_logistic(logits: Tensor, hard: Tensor, samples: int) -> Tensor:
    """[samples, *hard.shape] draws of the logistic noise L given sign(α + L) = hard (1 ↔ positive).

    L = logit(v), v uniform on (1 − σ(α), 1) when hard = 1 and on (0, 1 − σ(α)) when hard = 0."""
    v = _uniform(torch.Size((samples, *hard.shape)), logits)
    p = torch.sigmoid(logits)
    v_given_hard = hard * ((1 - p) + v * p) + (1 - hard) * (v * (1 - p))
    return torch.logit(clamp_probs(v_given_hard))


def conditional_gumbel(logits: Tensor, hard: Tensor, samples: int) -> Tensor:
    """[samples, *hard.shape] draws of Gumbel noise G given argmax(logits + G) = the one-hot ``hard``, top-down.

    The maximum of logits + G is Gumbel(logsumexp logits), independent of where it falls; given it, each other
    coordinate is Gumbel(logits_k) truncated below the maximum: −log(e^{−max} + e^{−logits_k} E_k),
    E_k ~ Exp(1)."""
    exponential = -torch.log(_uniform(torch.Size((samples, *hard.shape)), logits))
    exponential_at_hard = (exponential * hard).sum(dim=-1, keepdim=True)
    top = torch.logsumexp(logits, dim=-1, keepdim=True) - torch.log(exponential_at_hard)
    others = -torch.log(torch.exp(-top) + torch.exp(-logits) * exponential)
    return hard * top + (1 - hard) * others - logits


def conditional_noise(latent: _Latent, hard: Tensor, samples: int) -> Tensor:
    """Noise given the hard sample, cut from θ (straight-through differentiates with the noise fixed)."""
    logits = latent.logits.detach()
    if latent.kind == BERNOULLI:
        return conditional_logistic(logits, hard, samples)
    return conditional_gumbel(logits, hard, samples)


def relaxed_mean(latent: _Latent, noise: Tensor, temperature: float) -> Tensor:
    """(1/K) Σ_k σ_τ(α + noise_k): the relaxation averaged over the K conditional draws, differentiable in θ."""
    scores = (latent.logits + noise) / temperature
    relaxed = torch.sigmoid(scores) if latent.kind == BERNOULLI else torch.softmax(scores, dim=-1)
    return relaxed.mean(dim=0)


def _check_samples(samples: float) -> int:
    if not (samples >= 1 and int(samples) == samples):
        raise ValueError(f"samples must be an integer >= 1, got {samples:g}")
    return int(samples)


def gumbel_rao(problem: Problem, theta: Tensor, n_samples: int, *, temperature: float, samples: float) -> Tensor:
    """ĝ = ∂f/∂x(D) · (1/K) Σ_k ∂_θ σ_τ(α + G^(k)), G^(k) ~ p(G | D): straight-through Rao-Blackwellised."""
    _check_positive("temperature", temperature)
    latent = _latent(problem, theta)
    hard = hard_sample(latent, n_samples)
    soft = relaxed_mean(latent, conditional_noise(latent, hard, _check_samples(samples)), temperature)
    return _cost(problem, latent, hard + soft - soft.detach(), theta)


_SAMPLES = ParameterRange("conditional Gumbel draws K averaged in the backward pass", low=1.0, low_inclusive=True,
                          integer=True)  # fmt: skip

GUMBEL_RAO: tuple[Estimator, ...] = (
    Estimator("gumbel_rao", gumbel_rao,
              "straight-through with the relaxed gradient averaged over K Gumbels given the hard sample "
              "(Gumbel-Rao, Paulus et al. 2021); biased, straight-through's mean, 1 cost eval + K relaxations",
              skip_reason=_needs_differentiable_discrete, unbiased_for=_biased,
              parameters={"temperature": 0.5, "samples": 10},
              parameter_ranges={"temperature": POSITIVE_TEMPERATURE, "samples": _SAMPLES}),
)  # fmt: skip

"""Discrete-latent problems with exact gradients by enumeration of their (at most 2^D or K) outcomes.

θ stays a scalar logit:

- ``bernoulli_toy``: b ~ Bernoulli(σ(θ)), f = (b − t)². The REBAR/RELAX toy (t = 0.45, 0.499): the exact
  gradient σ(θ)(1 − σ(θ))(1 − 2t) is tiny next to the estimators' noise, which is the point.
- ``bernoulli_multi``: D = 4 independent Bernoullis sharing one (tied) logit θ, f = mean_d (b_d − t_d)², targets
  t1..t4 (default .49, .499, .501, .51). Since b² = b, f = mean_d t_d² + mean_d b_d (1 − 2t_d) is linear in b, so
  dL/dθ = σ(θ)(1 − σ(θ))(1 − 2 t̄): with the default targets t̄ = 0.5 and the gradient is exactly 0 at every θ,
  the sum of per-coordinate signals ±0.02, ±0.002 that cancel. An estimator must find that zero through the
  noise of four coordinates.
- ``categorical_toy``: one K = 4-way categorical with logits (θ, logit1, logit2, logit3) (defaults 0) and fixed
  costs c_k = k / (K − 1) = (0, 1/3, 2/3, 1); θ is the first logit. dL/dθ = p_0 (c_0 − L), L = Σ_k p_k c_k.

Objectives and gradients are the closed forms above (exact sums over the outcomes, no Monte Carlo);
tests/test_discrete.py checks them against a brute-force enumeration of every outcome written independently
and a finite difference of L. Every cost is a polynomial in the outcome, so it is defined (and differentiable) on the [0, 1]
or simplex relaxations that Gumbel-softmax, straight-through, REBAR and RELAX evaluate it at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from scipy import integrate
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, OneHotCategorical

from ..core.problem import Problem, ProblemFamily

MULTI_TARGETS = ("t1", "t2", "t3", "t4")
CATEGORICAL_K = 4
CATEGORICAL_COSTS = tuple(k / (CATEGORICAL_K - 1) for k in range(CATEGORICAL_K))
CATEGORICAL_FIXED_LOGITS = tuple(f"logit{k}" for k in range(1, CATEGORICAL_K))


def _relaxed_mean_bernoulli(alpha: float, targets: list[float], temperature: float, hard_forward: bool) -> float:
    """E[ĝ] of Gumbel-softmax (or straight-through) for f = mean_d (x_d − t_d)² with every logit = θ = α.

    Per coordinate ∂_θ x_d = s(1 − s)/τ with s = σ((α + logit u)/τ), u ~ U(0, 1), and ∂f/∂x_d = 2(x_d − t_d)/D at
    x_d = s (Gumbel-softmax) or x_d = 1[s > ½] (straight-through). The cost is separable, so the mean is a sum of
    one-dimensional integrals over u, split where s crosses ½ (u = σ(−α)).
    """
    split = 1.0 / (1.0 + math.exp(alpha))

    def soft(u: float) -> float:
        x = (alpha + math.log(u) - math.log1p(-u)) / temperature
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))

    total = 0.0
    for t in targets:
        def integrand(u: float) -> float:
            s = soft(u)
            x = (1.0 if u > split else 0.0) if hard_forward else s
            return 2.0 * (x - t) / len(targets) * s * (1.0 - s) / temperature

        for low, high in ((0.0, split), (split, 1.0)):
            total += integrate.quad(integrand, low, high, epsabs=1e-13, epsrel=1e-11, limit=400)[0]
    return total


def _relaxation_mean(targets: list[float]):
    """Problem.exact_mean of the Bernoulli problems: the relaxations' exact E[ĝ] (their bias plus the gradient)."""

    def exact_mean(theta: float, estimator: str, options: Mapping[str, float]) -> float | None:
        if estimator not in ("gumbel_softmax", "straight_through", "gumbel_rao"):
            return None
        # Gumbel-Rao is straight-through Rao-Blackwellised, so its mean is straight-through's for every K.
        return _relaxed_mean_bernoulli(theta, targets, options["temperature"], estimator != "gumbel_softmax")

    return exact_mean


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ---------------------------------------------------------------------------------------------------------
# bernoulli_toy: b ~ Bernoulli(σ(θ)), f = (b − t)².  L = t² + σ(θ)(1 − 2t), dL/dθ = σ(θ)(1 − σ(θ))(1 − 2t).


def _build_bernoulli_toy(wrt: str, params: dict[str, float]) -> Problem:
    t = params["t"]
    return Problem(
        name="bernoulli_toy",
        wrt=wrt,
        params=params,
        summary="b ~ Bernoulli(σ(θ)), f = (b − t)²: the REBAR/RELAX toy, a tiny gradient in much noise",
        distribution=lambda theta: Bernoulli(logits=theta),
        cost=lambda b, theta: (b - t) ** 2,
        objective=lambda th: t**2 + _sigmoid(th) * (1 - 2 * t),
        gradient=lambda th: _sigmoid(th) * (1 - _sigmoid(th)) * (1 - 2 * t),
        gradient_formula="dL/dθ = σ(θ)(1 − σ(θ))(1 − 2t)   (L = t² + σ(θ)(1 − 2t))",
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
        exact_mean=_relaxation_mean([t]),
    )


# ---------------------------------------------------------------------------------------------------------
# bernoulli_multi: b_d ~ Bernoulli(σ(θ)) iid, d = 1..4, f = mean_d (b_d − t_d)².
#   L = mean_d t_d² + σ(θ)(1 − 2 t̄), dL/dθ = σ(θ)(1 − σ(θ))(1 − 2 t̄).


def _build_bernoulli_multi(wrt: str, params: dict[str, float]) -> Problem:
    targets = torch.tensor([params[k] for k in MULTI_TARGETS], dtype=torch.float64)
    mean_t = float(targets.mean())
    mean_t2 = float((targets**2).mean())
    dims = len(MULTI_TARGETS)

    def distribution(theta: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=theta.unsqueeze(-1).expand(*theta.shape, dims)), 1)

    def cost(b: Tensor, theta: Tensor) -> Tensor:
        return ((b - targets.to(b.dtype).to(b.device)) ** 2).mean(dim=-1)

    return Problem(
        name="bernoulli_multi",
        wrt=wrt,
        params=params,
        summary="4 Bernoullis with one tied logit θ, f = mean_d (b_d − t_d)²",
        distribution=distribution,
        cost=cost,
        objective=lambda th: mean_t2 + _sigmoid(th) * (1 - 2 * mean_t),
        gradient=lambda th: _sigmoid(th) * (1 - _sigmoid(th)) * (1 - 2 * mean_t),
        gradient_formula=(
            f"dL/dθ = σ(θ)(1 − σ(θ))(1 − 2t̄), t̄ = mean(t) = {mean_t:g}   (L = mean(t²) + σ(θ)(1 − 2t̄))"
            + ("; 0 at every θ: the per-coordinate gradients cancel" if mean_t == 0.5 else "")
        ),
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
        exact_mean=_relaxation_mean([params[k] for k in MULTI_TARGETS]),
    )


# ---------------------------------------------------------------------------------------------------------
# categorical_toy: x ~ Cat(softmax(θ, logit1, logit2, logit3)), f = c_x, c = (0, 1/3, 2/3, 1).
#   L = Σ_k p_k c_k, dL/dθ = p_0 (c_0 − L).


def _build_categorical_toy(wrt: str, params: dict[str, float]) -> Problem:
    fixed = torch.tensor([params[k] for k in CATEGORICAL_FIXED_LOGITS], dtype=torch.float64)
    costs = torch.tensor(CATEGORICAL_COSTS, dtype=torch.float64)

    def logits(theta: Tensor) -> Tensor:
        rest = fixed.to(theta.dtype).to(theta.device).expand(*theta.shape, len(fixed))
        return torch.cat([theta.unsqueeze(-1), rest], dim=-1)

    def probabilities(th: float) -> Tensor:
        return torch.softmax(logits(torch.tensor(th, dtype=torch.float64)), dim=-1)

    def objective(th: float) -> float:
        return float(probabilities(th) @ costs)

    def gradient(th: float) -> float:
        p = probabilities(th)
        return float(p[0] * (costs[0] - p @ costs))

    def cost(x: Tensor, theta: Tensor) -> Tensor:
        # A one-hot outcome or a point of the simplex (the relaxations): f is linear, f(x) = x · c.
        return x @ costs.to(x.dtype).to(x.device)

    return Problem(
        name="categorical_toy",
        wrt=wrt,
        params=params,
        summary="x ~ Categorical(softmax(θ, logit1, logit2, logit3)), f = c_x, c = (0, 1/3, 2/3, 1)",
        distribution=lambda theta: OneHotCategorical(logits=logits(theta)),
        cost=cost,
        objective=objective,
        gradient=gradient,
        gradient_formula="dL/dθ = p_0 (c_0 − L), p = softmax(θ, logit1, logit2, logit3), c_k = k/3   (L = Σ_k p_k c_k)",
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
    )


DISCRETE_FAMILIES: dict[str, ProblemFamily] = {
    "bernoulli_toy": ProblemFamily(
        name="bernoulli_toy",
        summary="b ~ Bernoulli(σ(θ)), f = (b − t)²; θ is the logit; exact gradient σ(θ)(1−σ(θ))(1−2t), tiny near t = 0.5",
        wrt_choices=("logit",),
        defaults={"t": 0.45},
        build=_build_bernoulli_toy,
    ),
    "bernoulli_multi": ProblemFamily(
        name="bernoulli_multi",
        summary="4 iid Bernoulli(σ(θ)) (tied logit θ), f = mean_d (b_d − t_d)²; exact by enumeration of 16 outcomes",
        wrt_choices=("logit",),
        defaults=dict(zip(MULTI_TARGETS, (0.49, 0.499, 0.501, 0.51))),
        build=_build_bernoulli_multi,
    ),
    "categorical_toy": ProblemFamily(
        name="categorical_toy",
        summary="4-way categorical, logits (θ, logit1..3), cost c_k = k/3; θ is the first logit",
        wrt_choices=("logit0",),
        defaults={k: 0.0 for k in CATEGORICAL_FIXED_LOGITS},
        build=_build_categorical_toy,
    ),
}


__all__ = ["DISCRETE_FAMILIES", "CATEGORICAL_COSTS", "MULTI_TARGETS"]

"""The seed problems and the Gaussian test costs of Mohamed et al. (2020), §3: x ~ N(μ, σ²), f smooth, θ = μ or σ.

Derivations: docs/math.md. tests/test_exact.py checks every closed form against Gauss–Hermite quadrature and a
finite difference of L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from ..core.problem import Problem, ProblemError, ProblemFamily


# ---------------------------------------------------------------------------------------------------------
# The two seed problems (docs/math.md): f = 3θz², z ~ N(0, 1) or N(θ, 1).


def _seed_cost(x: Tensor, theta: Tensor) -> Tensor:
    return 3.0 * theta * x**2


def _build_seed_fixed(wrt: str, params: dict[str, float]) -> Problem:
    return Problem(
        name="seed_fixed",
        wrt=wrt,
        params=params,
        summary="z ~ N(0, 1), f = 3θz²: p does not depend on θ, so every estimator is unbiased",
        distribution=lambda theta: Normal(torch.zeros_like(theta), torch.ones_like(theta)),
        cost=_seed_cost,
        objective=lambda t: 3.0 * t,
        gradient=lambda t: 3.0,
        gradient_formula="dL/dθ = 3   (L = 3θ)",
        distribution_depends_on_theta=False,
        cost_depends_on_theta=True,
    )


def _build_seed_dependent(wrt: str, params: dict[str, float]) -> Problem:
    return Problem(
        name="seed_dependent",
        wrt=wrt,
        params=params,
        summary="z ~ N(θ, 1), f = 3θz²: naive autograd drops E[f ∂log p] = 6θ² and is biased",
        distribution=lambda theta: Normal(theta, torch.ones_like(theta)),
        cost=_seed_cost,
        objective=lambda t: 3.0 * t**3 + 3.0 * t,
        gradient=lambda t: 9.0 * t**2 + 3.0,
        gradient_formula="dL/dθ = 9θ² + 3   (L = 3θ³ + 3θ; naive autograd's mean is 3θ² + 3)",
        distribution_depends_on_theta=True,
        cost_depends_on_theta=True,
        estimator_notes={"naive": "It drops the product-rule term E[f ∂log p] = +6θ² that autograd through "
                                  "`torch.normal(mean=θ)` or `.sample()` cannot see: naive autograd averages 3θ² + 3 "
                                  "instead of 9θ² + 3."},  # fmt: skip
    )


# ---------------------------------------------------------------------------------------------------------
# Gaussian test costs of Mohamed et al. (2020), §3: x ~ N(μ, σ²), gradient w.r.t. μ or σ.
#
#   quadratic  f = (x − k)²     L = (μ − k)² + σ²                      ∂μ = 2(μ − k)          ∂σ = 2σ
#   exp        f = exp(−k x²)   L = s^{-1/2} exp(−kμ²/s), s = 1 + 2kσ²  ∂μ = −2kμ L / s
#                                                                      ∂σ = L (4k²μ²σ/s² − 2kσ/s)
#   cos        f = cos(k x)     L = cos(kμ) exp(−k²σ²/2)               ∂μ = −k sin(kμ) e^{−k²σ²/2}
#                                                                      ∂σ = −k²σ cos(kμ) e^{−k²σ²/2}


@dataclass(frozen=True)
class _GaussianCost:
    summary: str
    cost: Callable[[Tensor, float], Tensor]
    objective: Callable[[float, float, float], float]  # (μ, σ, k)
    d_mu: Callable[[float, float, float], float]
    d_sigma: Callable[[float, float, float], float]
    formula_mu: str
    formula_sigma: str


def _exp_objective(mu: float, sigma: float, k: float) -> float:
    s = 1.0 + 2.0 * k * sigma**2
    return s**-0.5 * math.exp(-k * mu**2 / s)


_GAUSSIAN_COSTS: dict[str, _GaussianCost] = {
    "gaussian_quadratic": _GaussianCost(
        summary="x ~ N(μ, σ²), f = (x − k)²",
        cost=lambda x, k: (x - k) ** 2,
        objective=lambda mu, sigma, k: (mu - k) ** 2 + sigma**2,
        d_mu=lambda mu, sigma, k: 2.0 * (mu - k),
        d_sigma=lambda mu, sigma, k: 2.0 * sigma,
        formula_mu="dL/dμ = 2(μ − k)   (L = (μ − k)² + σ²)",
        formula_sigma="dL/dσ = 2σ   (L = (μ − k)² + σ²)",
    ),
    "gaussian_exp": _GaussianCost(
        summary="x ~ N(μ, σ²), f = exp(−k x²)",
        cost=lambda x, k: torch.exp(-k * x**2),
        objective=_exp_objective,
        d_mu=lambda mu, sigma, k: -2.0 * k * mu / (1 + 2 * k * sigma**2) * _exp_objective(mu, sigma, k),
        d_sigma=lambda mu, sigma, k: _exp_objective(mu, sigma, k)
        * (
            4.0 * k**2 * mu**2 * sigma / (1 + 2 * k * sigma**2) ** 2
            - 2.0 * k * sigma / (1 + 2 * k * sigma**2)
        ),
        formula_mu="dL/dμ = −2kμ L / s   (L = s^(−1/2) exp(−kμ²/s), s = 1 + 2kσ²)",
        formula_sigma="dL/dσ = L (4k²μ²σ/s² − 2kσ/s)   (L = s^(−1/2) exp(−kμ²/s), s = 1 + 2kσ²)",
    ),
    "gaussian_cos": _GaussianCost(
        summary="x ~ N(μ, σ²), f = cos(k x)",
        cost=lambda x, k: torch.cos(k * x),
        objective=lambda mu, sigma, k: math.cos(k * mu) * math.exp(-(k**2) * sigma**2 / 2),
        d_mu=lambda mu, sigma, k: -k * math.sin(k * mu) * math.exp(-(k**2) * sigma**2 / 2),
        d_sigma=lambda mu, sigma, k: -(k**2) * sigma * math.cos(k * mu) * math.exp(-(k**2) * sigma**2 / 2),
        formula_mu="dL/dμ = −k sin(kμ) exp(−k²σ²/2)   (L = cos(kμ) exp(−k²σ²/2))",
        formula_sigma="dL/dσ = −k²σ cos(kμ) exp(−k²σ²/2)   (L = cos(kμ) exp(−k²σ²/2))",
    ),
}


def _gaussian_builder(name: str) -> Callable[[str, dict[str, float]], Problem]:
    spec = _GAUSSIAN_COSTS[name]

    def build(wrt: str, params: dict[str, float]) -> Problem:
        k = params["k"]
        if wrt == "mu":
            sigma = params["sigma"]
            if not sigma > 0:
                raise ProblemError(f"sigma must be > 0 (a Gaussian scale), got sigma={sigma:g}")
            if name == "gaussian_exp" and 1 + 2 * k * sigma**2 <= 0:
                raise ProblemError(
                    f"gaussian_exp needs 1 + 2kσ² > 0 for E[f] to exist, got k={k:g}, sigma={sigma:g}"
                )
            theta_range, reason = (-math.inf, math.inf), ""

            def distribution(theta: Tensor) -> Distribution:
                return Normal(theta, torch.full_like(theta, sigma))

            def objective(t: float) -> float:
                return spec.objective(t, sigma, k)

            def gradient(t: float) -> float:
                return spec.d_mu(t, sigma, k)

            formula = spec.formula_mu
        else:
            mu = params["mu"]
            high, reason = math.inf, "sigma is a Gaussian scale and must be > 0"
            if name == "gaussian_exp" and k < 0:
                high = math.sqrt(-1.0 / (2.0 * k))
                reason += "; gaussian_exp with k < 0 also needs 1 + 2kσ² > 0 for E[f] to exist"
            theta_range = (0.0, high)

            def distribution(theta: Tensor) -> Distribution:
                return Normal(torch.full_like(theta, mu), theta)

            def objective(t: float) -> float:
                return spec.objective(mu, t, k)

            def gradient(t: float) -> float:
                return spec.d_sigma(mu, t, k)

            formula = spec.formula_sigma
        def heavy_tail_warning(theta: float) -> str | None:
            sigma = theta if wrt == "sigma" else params["sigma"]
            if name == "gaussian_exp" and 1 + 4 * k * sigma**2 > 0 and 1 + 8 * k * sigma**2 <= 0:
                return (
                    "f = exp(−kx²) with k < 0 and 1 + 8kσ² <= 0: the estimates' fourth moment is infinite, so the "
                    "sample variance converges slowly and its interval is unreliable"
                )
            return None

        def infinite_variance(theta: float) -> str | None:
            # f² = exp(−2kx²) enters every estimator's second moment (f·score, ∂f = −2kx·f, f(x⁺) − f(x⁻)), and
            # E_N(μ,σ²)[exp(−2kx²)·poly(x)] is finite only while 1 + 4kσ² > 0.
            sigma = theta if wrt == "sigma" else params["sigma"]
            if name == "gaussian_exp" and 1 + 4 * k * sigma**2 <= 0:
                return (f"f = exp(−kx²) with k = {k:g} < 0 and 1 + 4kσ² = {1 + 4 * k * sigma**2:.3g} <= 0 (σ = {sigma:g}): "
                        "the gradient exists (1 + 2kσ² > 0) but every estimator's variance is infinite")  # fmt: skip
            return None

        return Problem(
            name=name,
            wrt=wrt,
            params=params,
            summary=spec.summary,
            heavy_tail_warning=heavy_tail_warning,
            infinite_variance=infinite_variance,
            distribution=distribution,
            cost=lambda x, theta: spec.cost(x, k),
            objective=objective,
            gradient=gradient,
            gradient_formula=formula,
            distribution_depends_on_theta=True,
            cost_depends_on_theta=False,
            theta_range=theta_range,
            theta_range_reason=reason,
        )

    return build


FAMILIES: dict[str, ProblemFamily] = {
    "seed_fixed": ProblemFamily(
        name="seed_fixed",
        summary="z ~ N(0, 1), f = 3θz²; exact gradient 3 (p independent of θ: naive autograd is unbiased)",
        wrt_choices=("theta",),
        build=_build_seed_fixed,
    ),
    "seed_dependent": ProblemFamily(
        name="seed_dependent",
        summary="z ~ N(θ, 1), f = 3θz²; exact gradient 9θ² + 3 (naive autograd averages 3θ² + 3)",
        wrt_choices=("theta",),
        build=_build_seed_dependent,
    ),
    **{
        name: ProblemFamily(
            name=name,
            summary=f"{spec.summary} (Mohamed et al. 2020 §3); θ is μ or σ (--wrt), the other fixed",
            wrt_choices=("mu", "sigma"),
            defaults={"k": 1.0, "mu": 1.0, "sigma": 1.0},
            build=_gaussian_builder(name),
        )
        for name, spec in _GAUSSIAN_COSTS.items()
    },
}

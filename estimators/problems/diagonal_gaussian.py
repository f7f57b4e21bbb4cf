"""Diagonal Gaussians in D dimensions: how an estimator's variance grows with the dimension.

x ~ N(m, σ²I) in D dimensions with m = (θ, μ, …, μ): θ = μ1, the mean of the *first* coordinate only, and the
cost sums over all coordinates, f = Σ_d x_d or f = Σ_d x_d⁴. The other D − 1 coordinates do not move with θ but
their noise is in f, so the score function f ∂log p = f (x1 − θ)/σ² carries it and its variance grows with D,
while pathwise (∂f/∂x1) and the coupled measure-valued pair (which perturbs x1 alone and shares the draw of
the others) cancel it and do not. With m4(m) = E[y⁴] = m⁴ + 6m²σ² + 3σ⁴ for y ~ N(m, σ²):

    sum      L = θ + (D−1) μ            dL/dθ = 1
    quartic  L = m4(θ) + (D−1) m4(μ)    dL/dθ = 4θ³ + 12θσ²

Per-sample score-function variance for the sum (derived in tests/test_dimension.py):
(θ + (D−1)μ)²/σ² + D + 1, linear in D at μ = 0; pathwise's is 0; the coupled pair's is (4 − π)/π.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from ..core.problem import Problem, ProblemError, ProblemFamily

MAX_DIMENSION = 4096  # a cell holds N·M·D values; beyond this a sweep cell would not fit in memory


def gaussian_fourth_moment(mean: float, sigma: float) -> float:
    """E[y⁴] for y ~ N(mean, σ²) = mean⁴ + 6 mean² σ² + 3σ⁴."""
    return mean**4 + 6 * mean**2 * sigma**2 + 3 * sigma**4


_COSTS: dict[str, tuple[str, Callable[[Tensor], Tensor], Callable, Callable, str]] = {
    # name: (cost label, f(x) summed over the last dimension, L(θ, μ, σ, D), dL/dθ(θ, μ, σ, D), formula)
    "diag_gaussian_sum": (
        "Σ_d x_d",
        lambda x: x.sum(dim=-1),
        lambda t, mu, sigma, d: t + (d - 1) * mu,
        lambda t, mu, sigma, d: 1.0,
        "dL/dμ1 = 1   (L = μ1 + (D−1)μ)",
    ),
    "diag_gaussian_quartic": (
        "Σ_d x_d⁴",
        lambda x: (x**4).sum(dim=-1),
        lambda t, mu, sigma, d: gaussian_fourth_moment(t, sigma) + (d - 1) * gaussian_fourth_moment(mu, sigma),
        lambda t, mu, sigma, d: 4 * t**3 + 12 * t * sigma**2,
        "dL/dμ1 = 4μ1³ + 12μ1σ²   (L = m4(μ1) + (D−1) m4(μ), m4(m) = m⁴ + 6m²σ² + 3σ⁴)",
    ),
}


def _builder(name: str) -> Callable[[str, dict[str, float]], Problem]:
    label, cost, objective, gradient, formula = _COSTS[name]

    def build(wrt: str, params: dict[str, float]) -> Problem:
        dim, mu, sigma = params["dim"], params["mu"], params["sigma"]
        if dim != int(dim) or not 1 <= dim <= MAX_DIMENSION:
            raise ProblemError(f"dim (D) must be an integer in [1, {MAX_DIMENSION}], got dim={dim:g}")
        if not sigma > 0:
            raise ProblemError(f"sigma must be > 0 (a Gaussian scale), got sigma={sigma:g}")
        d = int(dim)

        def distribution(theta: Tensor) -> Distribution:
            others = torch.full((*theta.shape, d - 1), mu, dtype=theta.dtype, device=theta.device)
            loc = torch.cat([theta.unsqueeze(-1), others], dim=-1)
            return Independent(Normal(loc, torch.full_like(loc, sigma)), 1)

        return Problem(
            name=name,
            wrt=wrt,
            params=params,
            summary=f"x ~ N((μ1, μ, …, μ), σ²I) in D dimensions, f = {label}; θ = μ1",
            distribution=distribution,
            cost=lambda x, theta: cost(x),
            objective=lambda t: objective(t, mu, sigma, d),
            gradient=lambda t: gradient(t, mu, sigma, d),
            gradient_formula=formula,
            distribution_depends_on_theta=True,
            cost_depends_on_theta=False,
        )

    return build


DIAGONAL_GAUSSIAN_FAMILIES: dict[str, ProblemFamily] = {
    name: ProblemFamily(
        name=name,
        summary=f"x ~ N((μ1, μ, …, μ), σ²I) in D = dim dimensions, f = {spec[0]}; θ = μ1 (first coordinate's mean)",
        wrt_choices=("mu1",),
        defaults={"dim": 4.0, "mu": 0.0, "sigma": 1.0},
        build=_builder(name),
    )
    for name, spec in _COSTS.items()
}

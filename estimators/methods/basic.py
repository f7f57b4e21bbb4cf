"""The basic estimators: naive autograd, the score function (with a leave-one-out baseline), pathwise and the
coupled measure-valued derivative. Formulas: docs/math.md."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Chi2, Exponential, Independent, Uniform

from ..core.distributions import coordinates_moved_by_theta, diagonal_gaussian, draw_detached, weighted_score_sum
from ..core.episodes import episode_surrogate
from ..core.estimator import Estimator
from ..core.problem import Problem


def naive(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = ∂_θ f_θ(x) with x from ``.sample()``: what ``torch.normal(mean=θ)`` + ``.backward()`` gives."""
    x = problem.distribution(theta).sample((n_samples,))
    return problem.cost(x, theta)


def score_function(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = f_θ(x) ∂_θ log p_θ(x) + ∂_θ f_θ(x)   (REINFORCE / likelihood ratio)."""
    dist = problem.distribution(theta)
    x = draw_detached(dist, n_samples)
    f = problem.cost(x, theta)
    surrogate = weighted_score_sum(dist, x, f.detach())
    return surrogate + f.sum(dim=0) if f.requires_grad else surrogate  # ∂f term only where f depends on θ


def leave_one_out_baseline(f: Tensor) -> Tensor:
    """b_n = mean of f over the other N − 1 samples of the same estimate (dimension 0)."""
    n = f.shape[0]
    return (f.sum(dim=0, keepdim=True) - f) / (n - 1)


def score_function_loo(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (f_θ(x_n) − b_n) ∂_θ log p_θ(x_n) + ∂_θ f_θ(x_n), b_n the leave-one-out mean (RLOO); on an episodic
    problem, x_n is an episode, f its return and log p its actions' log π."""
    if problem.episodes is not None:
        episodes = problem.episodes.rollout(theta, n_samples)
        returns = episodes.returns()
        return episode_surrogate(episodes, theta, returns - leave_one_out_baseline(returns))
    dist = problem.distribution(theta)
    x = draw_detached(dist, n_samples)
    f = problem.cost(x, theta)
    # b_n uses only the other samples, so E[b_n ∂ log p(x_n)] = 0 and the estimator stays unbiased.
    baseline = leave_one_out_baseline(f.detach())
    surrogate = weighted_score_sum(dist, x, f.detach() - baseline)
    return surrogate + f.sum(dim=0) if f.requires_grad else surrogate


def pathwise(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = ∂_θ f_θ(g_θ(ε)), x = g_θ(ε) from ``.rsample()`` (reparameterisation)."""
    x = problem.distribution(theta).rsample((n_samples,))
    return problem.cost(x, theta)


def _weibull_sqrt2_2(shape: torch.Size, like: Tensor) -> Tensor:
    """Weibull(scale √2, concentration 2) draws, as √(2E) with E ~ Exponential(1): what torch's Weibull computes
    from the same exponential draw, without its TransformedDistribution, whose shape check imports sympy on
    first use (half a second of every sweep that runs this estimator)."""
    return Exponential(like.new_tensor(1.0)).sample(shape).mul_(2.0).sqrt_()


def _double_sided_maxwell(shape: torch.Size, like: Tensor) -> Tensor:
    # |M| is chi-distributed with 3 degrees of freedom; the sign is a fair coin.
    magnitude = Chi2(torch.tensor(3.0, dtype=like.dtype, device=like.device)).sample(shape).sqrt()
    sign = torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1
    return sign * magnitude


def measure_valued(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = c (f(x⁺) − f(x⁻)) per Gaussian parameter θ enters, + ∂_θ f_θ(x): coupled weak derivatives.

    Mohamed et al. (2020) §6. For the mean, x± = μ ± σW with one Weibull(√2, 2) draw W shared by both sides
    and c = 1/(σ√(2π)). For the scale, x⁺ = μ + σM with M double-sided Maxwell and x⁻ = μ + σMU with
    U ~ Uniform(0, 1) (MU is standard normal, which couples the pair), c = 1/σ. Each parameter costs two
    cost evaluations per sample. A diagonal Gaussian (Independent Normal) gets one such pair per coordinate
    whose mean or scale moves with θ (see ``_measure_valued_diagonal``).
    """
    dist = problem.distribution(theta)
    if isinstance(dist, Independent):
        return _measure_valued_diagonal(problem, theta, n_samples, dist)
    shape = torch.Size((n_samples,)) + dist.batch_shape
    loc, scale = dist.loc, dist.scale
    mu, sigma, theta_const = loc.detach(), scale.detach(), theta.detach()
    surrogate = torch.zeros(shape, dtype=theta.dtype, device=theta.device)
    if loc.requires_grad:
        weibull = _weibull_sqrt2_2(shape, theta)
        weight = problem.cost(mu + sigma * weibull, theta_const) - problem.cost(mu - sigma * weibull, theta_const)
        surrogate = surrogate + weight / (sigma * math.sqrt(2.0 * math.pi)) * loc
    if scale.requires_grad:
        maxwell = _double_sided_maxwell(shape, theta)
        uniform = Uniform(theta.new_tensor(0.0), theta.new_tensor(1.0)).sample(shape)
        weight = problem.cost(mu + sigma * maxwell, theta_const) - problem.cost(
            mu + sigma * maxwell * uniform, theta_const
        )
        surrogate = surrogate + weight / sigma * scale
    if problem.cost_depends_on_theta:
        surrogate = surrogate + problem.cost(dist.sample((n_samples,)), theta)
    return surrogate


def _measure_valued_diagonal(problem: Problem, theta: Tensor, n_samples: int, dist: Independent) -> Tensor:
    """ĝ = Σ_d c_d (f(x with x_d = x_d⁺) − f(x with x_d = x_d⁻)) over the coordinates θ moves, + ∂_θ f.

    The weak derivative of a product measure is a sum over its factors: coordinate d's pair is the scalar
    pair above, and every other coordinate keeps one shared draw x ~ p_θ, so their noise cancels in the
    difference (that is why this estimator's variance does not grow with the dimension).
    """
    base = dist.base_dist
    loc, scale = base.loc, base.scale
    mu, sigma, theta_const = loc.detach(), scale.detach(), theta.detach()
    mean_coordinates, scale_coordinates = coordinates_moved_by_theta(problem, theta)
    shared = base.sample((n_samples,))  # [N, *batch, D]
    pair_shape = shared.shape[:-1]
    surrogate = torch.zeros(pair_shape, dtype=theta.dtype, device=theta.device)

    def with_coordinate(d: int, value: Tensor) -> Tensor:
        x = shared.clone()
        x[..., d] = value
        return x

    for d in mean_coordinates:
        weibull = _weibull_sqrt2_2(pair_shape, theta)
        step = sigma[..., d] * weibull
        weight = problem.cost(with_coordinate(d, mu[..., d] + step), theta_const) - problem.cost(
            with_coordinate(d, mu[..., d] - step), theta_const
        )
        surrogate = surrogate + weight / (sigma[..., d] * math.sqrt(2.0 * math.pi)) * loc[..., d]
    for d in scale_coordinates:
        maxwell = _double_sided_maxwell(pair_shape, theta)
        uniform = Uniform(theta.new_tensor(0.0), theta.new_tensor(1.0)).sample(pair_shape)
        weight = problem.cost(with_coordinate(d, mu[..., d] + sigma[..., d] * maxwell), theta_const) - problem.cost(
            with_coordinate(d, mu[..., d] + sigma[..., d] * maxwell * uniform), theta_const
        )
        surrogate = surrogate + weight / sigma[..., d] * scale[..., d]
    if problem.cost_depends_on_theta:
        surrogate = surrogate + problem.cost(dist.sample((n_samples,)), theta)
    return surrogate


# ---------------------------------------------------------------------------------------------------------
# Applicability and cost accounting.


def _needs_two_samples(problem: Problem, n_samples: int) -> str | None:
    if n_samples < 2:
        return "the leave-one-out baseline needs N >= 2 samples per estimate"
    return None


def needs_rsample(problem: Problem, n_samples: int) -> str | None:
    if not problem.cost_is_differentiable:
        return "the cost is not differentiable in x"
    probe = problem.example_distribution()
    if not probe.has_rsample:
        return f"{type(probe).__name__} has no reparameterised sampler (rsample)"
    return None


def _needs_gaussian(problem: Problem, n_samples: int) -> str | None:
    probe = problem.example_distribution()
    if diagonal_gaussian(probe) is None:
        return f"the measure-valued estimator is implemented for Gaussians only, not {type(probe).__name__}"
    return None


def _measure_valued_evaluations(problem: Problem) -> int:
    dist = problem.example_distribution(requires_grad=True)
    if diagonal_gaussian(dist) is None:
        return 0  # not a Gaussian: the estimator does not apply (its skip reason says so)
    if isinstance(dist, Independent):
        theta = problem.example_theta() if problem.example_theta is not None else torch.full((1,), problem.valid_theta())
        return 2 * sum(map(len, coordinates_moved_by_theta(problem, theta))) + int(problem.cost_depends_on_theta)
    pairs = int(dist.loc.requires_grad) + int(dist.scale.requires_grad)
    return 2 * pairs + int(problem.cost_depends_on_theta)


def _unbiased_when_p_is_fixed(problem: Problem) -> bool:
    return not problem.distribution_depends_on_theta


BASIC: tuple[Estimator, ...] = (
    Estimator(
        "naive",
        naive,
        "∂f with x from .sample(): drops E[f ∂log p]; biased when p depends on θ",
        unbiased_for=_unbiased_when_p_is_fixed,
        coupled_samples_reason=None,
        parallel_safe=True,
    ),
    Estimator("score_function", score_function, "f ∂log p + ∂f (REINFORCE); unbiased, often noisy",
              coupled_samples_reason=None, parallel_safe=True),
    Estimator(
        "score_function_loo",
        score_function_loo,
        "(f − leave-one-out mean) ∂log p + ∂f (RLOO); unbiased, needs N >= 2",
        skip_reason=_needs_two_samples,
        samples_independent=False,
        coupled_samples_reason="its leave-one-out baseline would contain samples coupled to x_n, which biases it",
        parallel_safe=True,
        episodic=True,  # the N episodes of an estimate, their returns as f
    ),
    Estimator(
        "pathwise",
        pathwise,
        "∂f(g_θ(ε)) via rsample (reparameterisation); unbiased, needs f differentiable in x",
        skip_reason=needs_rsample,
        coupled_samples_reason=None,
        parallel_safe=True,
    ),
    Estimator(
        "measure_valued",
        measure_valued,
        "coupled weak derivatives (Weibull pair for μ, Maxwell/Gaussian for σ); 2 cost evals per parameter "
        "(per moving coordinate of a diagonal Gaussian)",
        skip_reason=_needs_gaussian,
        cost_evaluations=_measure_valued_evaluations,
        coupled_samples_reason="it draws its own Weibull/Maxwell noise, not through the problem's distribution",
        parallel_safe=True,
    ),
)

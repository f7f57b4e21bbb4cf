"""Variance reduction as a separate axis that composes with any estimator that admits it.

A scheme turns (estimator, problem, N) into the surrogate to run, or into the reason it does not apply. Schemes
that change how samples are drawn (antithetic pairs, randomised quasi-Monte Carlo) wrap the problem's
distribution and leave the estimator untouched; schemes that change the estimator's formula (a control variate,
a baseline) wrap the estimator's own surrogate, running it on a modified cost. ``none`` is the estimator as it is.

Schemes:

- ``antithetic``: ε_n for n < N/2 and ε_{n+N/2} = −ε_n, x = μ + σε (Gaussians; N even).
- ``qmc``: ε_n = Φ⁻¹(u_n), u_1..u_N the first N points of a scrambled Sobol sequence (Gaussians).
- ``optimal_baseline``: the score function on f − b_n, b_n = Σ_{j≠n} ĝ₀_j s_j / Σ_{j≠n} s_j², s = ∂log p,
  ĝ₀ = f s + ∂f: the variance-optimal scalar baseline E[ĝ₀ s]/E[s²], fitted on the other N − 1 samples.
- ``delta_cv``: any unbiased estimator run on f − h, plus ∂E[h] in closed form, with h(x) = f(μ) + f'(μ)(x − μ)
  + ½f''(μ)(x − μ)² (Mohamed et al. 2020 §7.2, delta method; coefficient β = 1) or the problem's own h.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor
from torch.distributions import Normal
from torch.func import grad, vmap
from torch.quasirandom import SobolEngine

from ..core.estimator import Estimator, Surrogate
from ..core.problem import Problem

# SobolEngine's direction numbers cover this many dimensions.
SOBOL_MAX_DIMENSION = SobolEngine.MAXDIM
# Sobol points are multiples of 2^-30 in [0, 1 − 2^-30], so this clamp only moves an exact 0 (probability
# 2^-30 per point), keeping Φ⁻¹ finite: Φ⁻¹(2^-32) ≈ −6.2.
_UNIFORM_EPS = 2.0**-32

@dataclass(frozen=True)
class VarianceReduction:
    name: str
    summary: str
    # (estimator, problem, N) -> the surrogate to run, or a string saying why the scheme does not apply.
    compose: Callable[[Estimator, Problem, int], Union[Surrogate, str]]
    # "sampling" (draws the samples another way), "formula" (changes the estimator's formula) or "none".
    kind: str = "formula"


def _plain(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    reason = estimator.skip_reason(problem, n_samples)
    return estimator.surrogate if reason is None else reason


# ---------------------------------------------------------------------------------------------------------
# Sampling schemes: the problem's Gaussian draws its standard noise ε another way; x = μ + σε as before, so
# rsample keeps the pathwise gradient and log_prob is untouched. Every estimator that samples through the
# problem's distribution composes with them unchanged.

# (n_samples, batch_shape, like) -> ε of shape [n_samples, *batch_shape], each entry marginally N(0, 1).
StandardNoise = Callable[[int, torch.Size, Tensor], Tensor]


class _SchemeNormal(Normal):
    """Normal(loc, scale) whose sample/rsample take ε from a scheme's ``standard_noise``: x = loc + scale·ε."""

    def __init__(self, loc: Tensor, scale: Tensor, standard_noise: StandardNoise):
        super().__init__(loc, scale)
        self._standard_noise = standard_noise

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        # The schemes couple the samples of one estimate, which sit in the one sample dimension.
        if len(sample_shape) != 1:
            raise ValueError(f"variance-reduced sampling needs a sample shape (N,), got {tuple(sample_shape)}")
        loc, scale = torch.broadcast_tensors(self.loc, self.scale)
        noise = self._standard_noise(sample_shape[0], loc.shape, loc)
        return loc + scale * noise

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)


def antithetic_standard_normal(n_samples: int, batch_shape: torch.Size, like: Tensor) -> Tensor:
    """ε_n ~ N(0, 1) for n < N/2 and ε_{n+N/2} = −ε_n: each pair's odd part in ε cancels exactly."""
    half = torch.randn((n_samples // 2, *batch_shape), dtype=like.dtype, device=like.device)
    return torch.cat([half, -half])


def scrambled_sobol_standard_normal(n_samples: int, batch_shape: torch.Size, like: Tensor) -> Tensor:
    """ε_{n,m} = Φ⁻¹(u_{n,m}), u_{·,m} = coordinate m of the first N points of a scrambled Sobol sequence."""
    width = batch_shape.numel()
    columns = []
    for start in range(0, width, SOBOL_MAX_DIMENSION):
        # One coordinate per replicate (not a loop over replicates). Replicates are independent: each
        # coordinate is scrambled by its own random matrix and digital shift (drawn independently per
        # dimension), and the unscrambled coordinates are deterministic, so coordinate m is a function of its
        # own randomisation only. Every 1-D projection of Sobol is a (0, 1)-sequence in base 2, so each
        # replicate gets the same stratification at N = 2^k; at other N the point sets differ a little
        # between coordinates and grad_var is their average. The seed comes from torch's global generator,
        # so the cell's seed fixes the scrambles.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        engine = SobolEngine(min(SOBOL_MAX_DIMENSION, width - start), scramble=True, seed=seed)
        columns.append(engine.draw(n_samples, dtype=torch.float64))
    uniform = torch.cat(columns, dim=1).clamp(_UNIFORM_EPS, 1.0 - _UNIFORM_EPS)
    noise = Normal(uniform.new_zeros(()), uniform.new_ones(())).icdf(uniform)
    return noise.reshape(n_samples, *batch_shape).to(dtype=like.dtype, device=like.device)


def with_standard_noise(problem: Problem, standard_noise: StandardNoise) -> Problem:
    """The same problem, with its Gaussian's standard noise drawn by ``standard_noise``."""
    original = problem.distribution

    def distribution(theta: Tensor) -> Normal:
        base = original(theta)
        return _SchemeNormal(base.loc, base.scale, standard_noise)

    return dataclasses.replace(problem, distribution=distribution)


def _gaussian_only(scheme: str, problem: Problem) -> str | None:
    probe = problem.example_distribution()
    if not isinstance(probe, Normal):
        return f"{scheme} is implemented for Gaussian problems only, not {type(probe).__name__}"
    return None


def _sampling_scheme(scheme: str, standard_noise: StandardNoise, needs_even_n: bool):
    def compose_scheme(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
        reason = _gaussian_only(scheme, problem)
        if reason:
            return reason
        if estimator.coupled_samples_reason is not None:
            return f"{scheme} couples the N samples of an estimate, and {estimator.name} does not admit that: {estimator.coupled_samples_reason}"
        if needs_even_n and n_samples % 2:
            return f"{scheme} sampling draws pairs (ε, −ε), so N must be even, got N={n_samples}"

        def surrogate(problem: Problem, theta: Tensor, n_samples: int, **options) -> Tensor:
            return estimator.surrogate(with_standard_noise(problem, standard_noise), theta, n_samples, **options)

        return surrogate

    return compose_scheme


# ---------------------------------------------------------------------------------------------------------
# Control variates and baselines: they change the estimator's formula by wrapping its own surrogate, with the
# protocol of optax.monte_carlo's control variates (compute h, its expectation; the state update is empty for
# these fixed ones): the wrapped estimator runs on the cost f − h, and ∂E[h] is added in closed form.


def with_cost(problem: Problem, cost: Callable[[Tensor, Tensor], Tensor]) -> Problem:
    """The same problem with another cost (x, θ) -> [N, *batch]."""
    return dataclasses.replace(problem, cost=cost)


def _linear_in_cost(scheme: str, estimator: Estimator, problem: Problem) -> str | None:
    if not estimator.unbiased_for(problem):
        return f"{scheme} keeps an unbiased estimator unbiased; {estimator.name} is biased here"
    if not problem.distribution_depends_on_theta:
        return f"p does not depend on θ, so there is no score or sampling term for {scheme} to reduce"
    return None


def _scalar_sample_only(scheme: str, problem: Problem) -> str | None:
    # The per-sample derivatives and the Taylor coefficients below treat f as a function of one scalar x per
    # replicate; a D-dimensional sample would need a vector baseline or a Hessian.
    probe = problem.example_distribution()
    if tuple(probe.batch_shape) != (1,) or tuple(probe.event_shape) != ():
        return f"{scheme} is implemented for one scalar sample per replicate, not batch {tuple(probe.batch_shape)[1:]} event {tuple(probe.event_shape)}"
    return None


def per_sample_score_and_cost_gradient(problem: Problem, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(∂_θ log p_θ(x_n), ∂_θ f_θ(x_n)) for every sample n and replicate m, each shaped like x [N, M]."""
    # One copy of θ per sample: each log-density and cost depends only on its own copy, so one backward
    # pass yields every per-sample derivative (the sum's gradient w.r.t. a copy is that sample's term).
    copies = theta.detach().expand_as(x).clone().requires_grad_(True)
    x = x.detach()
    with torch.enable_grad():
        derivatives = []
        for value in (problem.distribution(copies).log_prob(x), problem.cost(x, copies)):
            if value.requires_grad:
                (d,) = torch.autograd.grad(value.sum(), copies, allow_unused=True)
            else:
                d = None
            derivatives.append(torch.zeros_like(x) if d is None else d)
    return derivatives[0], derivatives[1]


def optimal_baseline(problem: Problem, theta: Tensor, x: Tensor) -> Tensor:
    """b_n = Σ_{j≠n} (f_j s_j + ∂f_j) s_j / Σ_{j≠n} s_j² for the samples x [N, M], s = ∂_θ log p: the
    variance-optimal scalar baseline E[ĝ₀ s]/E[s²] of the score function, fitted on the other N − 1 samples, so
    independent of x_n and E[b_n s_n] = 0 (still unbiased). Detached: it moves no gradient of its own."""
    f = problem.cost(x, theta).detach()
    score, d_cost = per_sample_score_and_cost_gradient(problem, theta, x)
    numerator = (f * score + d_cost) * score
    denominator = score**2
    return ((numerator.sum(dim=0, keepdim=True) - numerator) / (denominator.sum(dim=0, keepdim=True) - denominator)).detach()


def _compose_optimal_baseline(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    if estimator.name != "score_function":
        reason = f"optimal_baseline is the score function's baseline, not {estimator.name}'s"
        if estimator.name == "score_function_loo":
            reason += " (score_function_loo already subtracts a leave-one-out baseline)"
        return reason
    reason = _linear_in_cost("optimal_baseline", estimator, problem) or _scalar_sample_only("optimal_baseline", problem)
    if reason:
        return reason
    if n_samples < 2:
        return "the optimal baseline is fitted on the other N − 1 samples, so it needs N >= 2"

    def surrogate(problem: Problem, theta: Tensor, n_samples: int, **options) -> Tensor:
        # The score function on f − b(x): b is fitted on the very samples the estimator draws, from x alone.
        shifted = with_cost(problem, lambda x, t: problem.cost(x, t) - optimal_baseline(problem, theta, x))
        return estimator.surrogate(shifted, theta, n_samples, **options)

    return surrogate


def taylor_control_variate(problem: Problem) -> Callable[[Tensor, Normal], tuple[Callable[[Tensor], Tensor], Tensor]]:
    """The delta method's control for a cost of one scalar Gaussian sample: h(x) = f(c) + f'(c)(x − c) + ½ f''(c)
    (x − c)² at c = μ, coefficients held constant in θ (``torch.func``), and E_θ[h] differentiable in θ."""

    def control(theta: Tensor, dist: Normal) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        centre = dist.loc.detach().expand(dist.batch_shape).reshape(-1)
        theta_const = theta.detach().expand(dist.batch_shape).reshape(-1)
        shape = dist.batch_shape
        value = problem.cost(centre, theta_const).reshape(shape)
        first = vmap(grad(problem.cost))(centre, theta_const).reshape(shape)
        second = vmap(grad(grad(problem.cost)))(centre, theta_const).reshape(shape)
        centre = centre.reshape(shape)

        def h(x: Tensor) -> Tensor:
            return value + first * (x - centre) + 0.5 * second * (x - centre) ** 2

        # E[(x − c)] = μ − c and E[(x − c)²] = σ² + (μ − c)² for x ~ N(μ, σ²): differentiable in θ through μ, σ.
        offset = dist.loc - centre
        return h, value + first * offset + 0.5 * second * (dist.scale**2 + offset**2)

    return control


def _compose_delta_cv(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    reason = _linear_in_cost("delta_cv", estimator, problem)
    if reason:
        return reason
    control = problem.control_variate
    if control is None:
        reason = _gaussian_only("delta_cv", problem) or _scalar_sample_only("delta_cv", problem)
        if reason:
            return reason
        if not problem.cost_is_differentiable:
            return "the delta method needs f'(μ) and f''(μ), and the cost is not differentiable in x"
        control = taylor_control_variate(problem)

    def surrogate(problem: Problem, theta: Tensor, n_samples: int, **options) -> Tensor:
        # h's coefficients do not depend on θ, so any estimator unbiased for ∂E[f − h] plus ∂E[h] is unbiased
        # for ∂E[f]; E[h] is added once per sample to match the surrogate's per-sample convention.
        h, expected_h = control(theta, problem.distribution(theta))
        residual = with_cost(problem, lambda x, t: problem.cost(x, t) - h(x))
        inner = estimator.surrogate(residual, theta, n_samples, **options)
        summed = inner.sum(dim=0) if inner.dim() > expected_h.dim() else inner
        return summed + n_samples * expected_h

    return surrogate


SCHEMES: tuple[VarianceReduction, ...] = (
    VarianceReduction("none", "plain Monte Carlo: the estimator as it is", _plain, kind="none"),
    VarianceReduction(
        "antithetic",
        "pairs (ε, −ε) of Gaussian noise, x = μ + σε; estimators that admit coupled samples; Gaussians; N even",
        _sampling_scheme("antithetic", antithetic_standard_normal, needs_even_n=True),
        kind="sampling",
    ),
    VarianceReduction(
        "qmc",
        "randomised QMC: ε = Φ⁻¹(u), u scrambled Sobol (one coordinate per replicate); estimators that admit coupled "
        "samples; Gaussians; best at N = 2^k; samples of one estimate are dependent",
        _sampling_scheme("qmc", scrambled_sobol_standard_normal, needs_even_n=False),
        kind="sampling",
    ),
    VarianceReduction(
        "optimal_baseline",
        "the score function on f − b, b = E[ĝ s]/E[s²] (the variance-optimal scalar baseline) fitted on the other "
        "N − 1 samples: unbiased, no extra cost evaluations; scalar samples, any distribution; N >= 2",
        _compose_optimal_baseline,
    ),
    VarianceReduction(
        "delta_cv",
        "delta-method control variate (Mohamed et al. §7.2): any unbiased estimator run on f − h plus ∂E[h] in "
        "closed form, h the problem's own control (bayes_logreg) or f's 2nd-order Taylor expansion at μ "
        "(scalar Gaussians), β = 1",
        _compose_delta_cv,
    ),
)

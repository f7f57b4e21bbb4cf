"""Variance reduction as a separate axis that composes with any estimator that admits it.

A scheme turns (estimator, problem, N) into the surrogate to run, or into the reason it does not apply. Schemes
that change how samples are drawn (antithetic pairs, randomised quasi-Monte Carlo) wrap the problem's
distribution and leave the estimator untouched; schemes that change the estimator's formula (a control
variate) supply their own surrogate for the estimators they know. ``none`` is the estimator as it is.

Schemes:

- ``antithetic``: ε_n for n < N/2 and ε_{n+N/2} = −ε_n, x = μ + σε (Gaussians; N even).
- ``qmc``: ε_n = Φ⁻¹(u_n), u_1..u_N the first N points of a scrambled Sobol sequence (Gaussians).
- ``optimal_baseline``: ĝ = (f − b_n) ∂log p + ∂f, b_n = Σ_{j≠n} ĝ₀_j s_j / Σ_{j≠n} s_j², s = ∂log p,
  ĝ₀ = f s + ∂f: the variance-optimal scalar baseline E[ĝ₀ s]/E[s²], fitted on the other N − 1 samples.
- ``delta_cv``: subtract h(x) = f(μ) + f'(μ)(x − μ) + ½f''(μ)(x − μ)² and add ∂E[h] in closed form
  (Mohamed et al. 2020 §7.2, delta method; coefficient β = 1).
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
# Control variates: formula-changing schemes with a surrogate per estimator they know.


def _control_variate_applies(scheme: str, estimator: Estimator, problem: Problem, known: tuple[str, ...]) -> str | None:
    if estimator.name not in known:
        return f"{scheme} is a control variate for {' and '.join(known)} only, not {estimator.name}"
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


def optimal_baseline_score_function(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (f − b_n) ∂log p + ∂f,  b_n = Σ_{j≠n} (f_j s_j + ∂f_j) s_j / Σ_{j≠n} s_j²,  s = ∂_θ log p."""
    dist = problem.distribution(theta)
    x = dist.sample((n_samples,))
    f = problem.cost(x, theta)
    score, d_cost = per_sample_score_and_cost_gradient(problem, theta, x)
    # b* = Cov(ĝ₀, s)/Var(s) = E[ĝ₀ s]/E[s²] (E[s] = 0) minimises Var(ĝ₀ − b s). b_n is fitted on the other
    # N − 1 samples only, so it is independent of x_n and E[b_n s_n] = E[b_n] E[s_n] = 0: still unbiased.
    numerator = (f.detach() * score + d_cost) * score
    denominator = score**2
    baseline = (numerator.sum(dim=0, keepdim=True) - numerator) / (denominator.sum(dim=0, keepdim=True) - denominator)
    return (f.detach() - baseline) * dist.log_prob(x) + f


def _compose_optimal_baseline(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    reason = _control_variate_applies("optimal_baseline", estimator, problem, ("score_function",))
    if reason:
        if estimator.name == "score_function_loo":
            reason += " (score_function_loo already subtracts a leave-one-out baseline)"
        return reason
    reason = _scalar_sample_only("optimal_baseline", problem)
    if reason:
        return reason
    if n_samples < 2:
        return "the optimal baseline is fitted on the other N − 1 samples, so it needs N >= 2"
    return lambda problem, theta, n_samples: optimal_baseline_score_function(problem, theta, n_samples)


def _second_order_taylor(problem: Problem, dist: Normal, theta: Tensor):
    """h(x) = f(c) + f'(c)(x − c) + ½ f''(c)(x − c)² at c = μ, coefficients held constant in θ, and E_θ[h]."""
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
    expected_h = value + first * offset + 0.5 * second * (dist.scale**2 + offset**2)
    return h, expected_h


def delta_cv_score_function(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = (f − h) ∂log p + ∂f + ∂E[h],  h = second-order Taylor expansion of f around μ."""
    dist = problem.distribution(theta)
    x = dist.sample((n_samples,))
    f = problem.cost(x, theta)
    h, expected_h = _second_order_taylor(problem, dist, theta)
    # h does not depend on θ, so E[h ∂log p] = ∂E[h]: subtracting one and adding the other keeps it unbiased.
    return (f.detach() - h(x)) * dist.log_prob(x) + f + expected_h


def delta_cv_pathwise(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = ∂_θ f(g_θ(ε)) − ∂_θ h(g_θ(ε)) + ∂E[h],  h = second-order Taylor expansion of f around μ."""
    dist = problem.distribution(theta)
    x = dist.rsample((n_samples,))
    h, expected_h = _second_order_taylor(problem, dist, theta)
    # E[∂_θ h(g_θ(ε))] = ∂E[h] by the same reparameterisation, so the pair cancels in expectation.
    return problem.cost(x, theta) - h(x) + expected_h


_DELTA_CV = {"score_function": delta_cv_score_function, "pathwise": delta_cv_pathwise}


def _compose_delta_cv(estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    reason = _control_variate_applies("delta_cv", estimator, problem, tuple(_DELTA_CV))
    if reason:
        return reason
    reason = _gaussian_only("delta_cv", problem) or _scalar_sample_only("delta_cv", problem)
    if reason:
        return reason
    if not problem.cost_is_differentiable:
        return "the delta method needs f'(μ) and f''(μ), and the cost is not differentiable in x"
    surrogate = _DELTA_CV[estimator.name]
    return lambda problem, theta, n_samples: surrogate(problem, theta, n_samples)


SCHEMES: tuple[VarianceReduction, ...] = (
    VarianceReduction("none", "plain Monte Carlo: the estimator as it is", _plain),
    VarianceReduction(
        "antithetic",
        "pairs (ε, −ε) of Gaussian noise, x = μ + σε; estimators that admit coupled samples; Gaussians; N even",
        _sampling_scheme("antithetic", antithetic_standard_normal, needs_even_n=True),
    ),
    VarianceReduction(
        "qmc",
        "randomised QMC: ε = Φ⁻¹(u), u scrambled Sobol (one coordinate per replicate); estimators that admit coupled "
        "samples; Gaussians; best at N = 2^k; samples of one estimate are dependent",
        _sampling_scheme("qmc", scrambled_sobol_standard_normal, needs_even_n=False),
    ),
    VarianceReduction(
        "optimal_baseline",
        "score function with the variance-optimal scalar baseline E[ĝ s]/E[s²] fitted on the other N − 1 "
        "samples (unbiased, no extra cost evaluations); scalar samples, any distribution; N >= 2",
        _compose_optimal_baseline,
    ),
    VarianceReduction(
        "delta_cv",
        "delta-method control variate (Mohamed et al. §7.2): f minus its 2nd-order Taylor expansion at μ, "
        "plus ∂E[expansion] in closed form, β = 1; score function and pathwise on Gaussians",
        _compose_delta_cv,
    ),
)

"""Monte Carlo gradient estimators as surrogate functions with one shared signature.

Every estimator is ``surrogate(problem, theta, n_samples, **options) -> Tensor``: a per-sample surrogate
[n_samples, *theta.shape] (or one already summed over the samples, [*theta.shape]) whose sum's gradient
w.r.t. ``theta``, divided by n_samples, *is* the estimate.
``options`` are the estimator's own parameters (e.g. a relaxation temperature), declared with defaults in
``Estimator.parameters``. ``theta``
holds one independent copy of θ per replicate, so one backward pass yields all M replicate estimates at once
(see ``estimate``). Estimators know nothing about files, sweeps or timing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Chi2, Distribution, Exponential, Independent, Normal, Uniform

from . import random_streams
from .problems import Problem, resolve_parameters

# surrogate(problem, theta, n_samples, **options) -> Tensor[n_samples, *theta.shape] or summed, [*theta.shape]
Surrogate = Callable[..., Tensor]


class EstimatorError(ValueError):
    """An unknown estimator or an invalid estimation request; the message says what is allowed."""


def naive(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ = ∂_θ f_θ(x) with x from ``.sample()``: what ``torch.normal(mean=θ)`` + ``.backward()`` gives."""
    x = problem.distribution(theta).sample((n_samples,))
    return problem.cost(x, theta)


def draw_detached(dist, n_samples: int) -> Tensor:
    """N samples carrying no gradient. Reparameterisable distributions draw by ``rsample`` under ``no_grad``
    (μ + σ·ε): the same distribution as ``.sample()``, whose ``torch.normal`` on expanded parameters measured
    10-15% slower on CPU, which the score function's throughput cannot spare."""
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
    (the score function's share of the RNG floor went from 0.24-0.35 to 0.41-0.51 on 2 CPU cores with the
    closed form; summing first measured 0.91× the per-sample closed form's cost). Anything else:
    Σ_n w_n score_surrogate.
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
    """ĝ = (f_θ(x_n) − b_n) ∂_θ log p_θ(x_n) + ∂_θ f_θ(x_n), b_n the leave-one-out mean (RLOO)."""
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


def _needs_rsample(problem: Problem, n_samples: int) -> str | None:
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


def _always(problem: Problem, n_samples: int) -> str | None:
    return None


def _one_evaluation(problem: Problem) -> int:
    return 1


def _measure_valued_evaluations(problem: Problem) -> int:
    dist = problem.example_distribution(requires_grad=True)
    if diagonal_gaussian(dist) is None:
        return 0  # not a Gaussian: the estimator does not apply (its skip reason says so)
    if isinstance(dist, Independent):
        theta = torch.full((1,), problem.valid_theta())
        return 2 * sum(map(len, coordinates_moved_by_theta(problem, theta))) + int(problem.cost_depends_on_theta)
    pairs = int(dist.loc.requires_grad) + int(dist.scale.requires_grad)
    return 2 * pairs + int(problem.cost_depends_on_theta)


def _unbiased(problem: Problem) -> bool:
    return True


def _unbiased_when_p_is_fixed(problem: Problem) -> bool:
    return not problem.distribution_depends_on_theta


@dataclass(frozen=True)
class ParameterRange:
    """The values an estimator parameter may take (beyond being finite): above ``low`` (or at it, when
    ``low_inclusive``), integers only when ``integer``; ``meaning`` says what the parameter is, for errors."""

    meaning: str
    low: float = -math.inf
    low_inclusive: bool = False
    integer: bool = False

    def admits(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        return above and (not self.integer or value == int(value))

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low == -math.inf:
            return f"{kind} (any finite value)"
        return f"{kind} {'>=' if self.low_inclusive else '>'} {self.low:g}"


POSITIVE_TEMPERATURE = ParameterRange("the relaxation's temperature", low=0.0)


@dataclass(frozen=True)
class Estimator:
    name: str
    surrogate: Surrogate
    summary: str
    # Returns why the estimator does not apply to (problem, N), or None when it does.
    skip_reason: Callable[[Problem, int], str | None] = _always
    # Cost evaluations per sample: what throughput numbers should be read against.
    cost_evaluations: Callable[[Problem], int] = _one_evaluation
    # Whether theory says the estimator is unbiased on a problem (the suite measures it anyway).
    unbiased_for: Callable[[Problem], bool] = _unbiased
    # The estimator's own parameters and their defaults, passed to the surrogate as keyword options.
    parameters: Mapping[str, float] = field(default_factory=dict)
    # The values each parameter allows (every parameter has an entry), checked when options are resolved, so a
    # sweep refuses a bad value before anything runs.
    parameter_ranges: Mapping[str, ParameterRange] = field(default_factory=dict)
    # Why the estimator cannot run at (problem, θ, options), or None; for constraints that tie a parameter to θ.
    point_error: Callable[[Problem, float, Mapping[str, float]], str | None] | None = None
    # Whether the N samples of one estimate are independent draws (so a huge N may be split across calls).
    samples_independent: bool = True
    # Why sampling schemes that couple the N samples of an estimate (antithetic, qmc) do not apply, or None when
    # they do: they need every sample drawn through problem.distribution(θ) and each sample's term to depend on
    # that sample alone (a coupling keeps each sample's marginal, so only then does the mean stay unbiased).
    coupled_samples_reason: str | None = "it does not declare that its samples may be coupled"
    # Whether the surrogate is a pure function of its arguments and torch's random ops (no caches, no global
    # state), so ``estimate`` may run its calls concurrently on CPU, each from its own stream (random_streams).
    parallel_safe: bool = False
    # Whether one call's time changes with θ (a control variate trained per θ): then each θ's cost is measured
    # on its own instead of once for all θ of a comparison block.
    work_depends_on_theta: bool = False

    def resolve_options(self, options: Mapping[str, float] | None = None) -> dict[str, float]:
        """Defaults overridden by ``options``; raises EstimatorError on an unknown name, a non-finite value or one
        outside the parameter's range."""
        resolved = resolve_parameters(f"estimator {self.name}", dict(options or {}), self.parameters, EstimatorError)
        for key, value in resolved.items():
            allowed = self.parameter_ranges.get(key)
            if allowed is not None and not allowed.admits(value):
                raise EstimatorError(f"parameter {key} of estimator {self.name} ({allowed.meaning}) must be "
                                     f"{allowed.describe()}, got {value:g}")  # fmt: skip
        return resolved


ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
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
        ),
        Estimator(
            "pathwise",
            pathwise,
            "∂f(g_θ(ε)) via rsample (reparameterisation); unbiased, needs f differentiable in x",
            skip_reason=_needs_rsample,
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
}


def get_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise EstimatorError(f"unknown estimator {name!r}; allowed: {', '.join(ESTIMATORS)}") from None


# Working memory of one vectorised call per sample, in values of the dtype: the sample, the cost, log-probabilities,
# autograd's saved tensors and gradients. `make perf` measures ~6 float32 values per sample for pathwise on the
# seed problem (229 MiB peak for an unchunked 10^7-sample cell); estimators with more intermediates (score
# function, measure-valued pairs, relaxations) need several times that, so 64 bounds them all with room to spare.
WORKING_VALUES_PER_SAMPLE = 64
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes per vectorised call
# Samples per call when an estimate's calls run on the CPU's threads, each from its own random stream: small
# enough that one call's tensors stay in cache and that an estimate has calls to overlap, large enough that
# per-call overhead stays small. Median fraction of the RNG floor on 2 cores (pathwise and score function on
# the three perf problems): 0.29 at 2^16, 0.43 at 2^17, 0.65 at 2^18, 0.69 at 2^19, 0.53 at 2^20.
PARALLEL_CALL_SAMPLES = 1 << 19
# (estimator, problem) pairs seen drawing from torch's global generator inside a parallel call: run serially.
_GLOBAL_GENERATOR_USERS: set[tuple[str, str]] = set()


def plan_chunks(
    n_samples: int, n_replicates: int, bytes_per_sample: int, memory_budget: int, split_samples: bool
) -> tuple[int, int]:
    """(replicates per call, samples per call) so one call's working memory fits ``memory_budget``.

    Replicates are split first; when a single estimate's N samples do not fit, its samples are split too (its
    gradient is then a sum of partial sums), if the estimator's samples are independent.
    """
    samples_that_fit = max(1, memory_budget // bytes_per_sample)
    if n_samples <= samples_that_fit or not split_samples:
        return max(1, min(n_replicates, samples_that_fit // n_samples)), n_samples
    return 1, samples_that_fit


def estimate(
    estimator: Estimator,
    problem: Problem,
    theta: float,
    n_samples: int,
    n_replicates: int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    options: Mapping[str, float] | None = None,
    variance_reduction: str = "none",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    parallel: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Return ``n_replicates`` independent estimates of dL/dθ, each from ``n_samples`` samples.

    ``options`` override the estimator's parameters; ``variance_reduction`` names a scheme from
    ``VARIANCE_REDUCTIONS`` that is composed with the estimator. Replicates are independent copies of θ in a
    batch dimension, so one backward pass per call gives all of them. Calls are sized by ``plan_chunks`` so
    each stays within ``memory_budget`` bytes of working memory, whatever M·N is.
    Seed torch's global generator for reproducible numbers. On CPU, a ``parallel_safe`` estimator's calls
    (at most PARALLEL_CALL_SAMPLES samples each) run on torch's threads, each drawing from its own stream
    seeded from one draw of the global generator; the numbers are the same whatever the thread count.
    Everything else, and everything when ``parallel`` is False (calls sized by the budget alone, on this
    thread), draws from the global generator on ``device`` directly. ``progress``, if given, is called with the
    number of samples each call just finished (from the thread that ran it), e.g. to show progress in a long cell.
    """
    if n_samples < 1:
        raise EstimatorError(f"n_samples must be >= 1, got {n_samples}")
    if n_replicates < 1:
        raise EstimatorError(f"n_replicates must be >= 1, got {n_replicates}")
    if memory_budget < 1:
        raise EstimatorError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    resolved = estimator.resolve_options(options)
    surrogate_or_reason = compose(variance_reduction, estimator, problem, n_samples)
    if isinstance(surrogate_or_reason, str):
        raise EstimatorError(
            f"{describe(estimator.name, resolved, variance_reduction)} does not apply to {problem.label} "
            f"at N={n_samples}: {surrogate_or_reason}"
        )
    surrogate_fn = surrogate_or_reason
    problem.check_theta(theta)
    # Samples interact under a leave-one-out baseline or a variance-reduction scheme (antithetic pairs, QMC
    # points), so only plain independent-sample estimators may have one estimate's samples split.
    split = estimator.samples_independent and variance_reduction == "none"
    bytes_per_sample = WORKING_VALUES_PER_SAMPLE * torch.empty((), dtype=dtype).element_size()

    def block(replicates: int, samples_per_call: int) -> Callable[[], Tensor]:
        """The estimates of ``replicates`` replicates, their samples drawn ``samples_per_call`` per call."""

        def run() -> Tensor:
            theta_batch = torch.full((replicates,), float(theta), dtype=dtype, device=device, requires_grad=True)
            total = torch.zeros_like(theta_batch)
            for first in range(0, n_samples, samples_per_call):
                samples = min(samples_per_call, n_samples - first)
                surrogate = surrogate_fn(problem, theta_batch, samples, **resolved)
                # No path from θ to the surrogate (naive autograd on a cost without θ): autograd's gradient is 0.
                if surrogate.requires_grad:
                    (grad,) = torch.autograd.grad(surrogate.sum(), theta_batch, allow_unused=True)
                    if grad is not None:
                        total = total + grad.detach()
                if progress is not None:
                    progress(replicates * samples)
            return total / n_samples

        return run

    def blocks(budget: int) -> list[Callable[[], Tensor]]:
        replicates_per_call, samples_per_call = plan_chunks(n_samples, n_replicates, bytes_per_sample, budget, split)
        return [block(min(replicates_per_call, n_replicates - start), samples_per_call)
                for start in range(0, n_replicates, replicates_per_call)]  # fmt: skip

    key = (estimator.name, problem.label)
    if parallel and torch.device(device).type == "cpu" and estimator.parallel_safe and variance_reduction == "none" \
            and key not in _GLOBAL_GENERATOR_USERS:  # fmt: skip
        # Cache-sized calls, each from its own stream (random_streams), run on the CPU's threads: one call's
        # noise is drawn while another's arithmetic runs. The split depends only on N, M, dtype and the budget,
        # never on the thread count, so the numbers are the same on every machine. An estimate that is one
        # call anyway draws from the global generator directly: routing its draws costs ~0.25 ms per call
        # (~40 ops through a TorchFunctionMode), which would tilt small cells' timings against these estimators.
        call_bytes = min(memory_budget, PARALLEL_CALL_SAMPLES * bytes_per_sample)
        tasks = blocks(call_bytes)
        if len(tasks) > 1:
            workers = min(torch.get_num_threads(), max(1, memory_budget // call_bytes))
            try:
                return torch.cat(random_streams.run_chunks(tasks, workers)).detach()
            except random_streams.GlobalGeneratorUsed as error:
                _GLOBAL_GENERATOR_USERS.add(key)
                warnings.warn(f"{estimator.name} on {problem.label}: {error}; its estimates are drawn serially from "
                              "the global generator instead", RuntimeWarning, stacklevel=2)  # fmt: skip
    return torch.cat([run() for run in blocks(memory_budget)]).detach()


def describe(estimator: str, options: Mapping[str, float] | None = None, variance_reduction: str = "none") -> str:
    """Display name of an estimator variant, e.g. ``gumbel_softmax[temperature=0.5]+antithetic``."""
    label = estimator
    if options:
        label += "[" + ", ".join(f"{k}={v:g}" for k, v in sorted(options.items())) + "]"
    if variance_reduction != "none":
        label += f"+{variance_reduction}"
    return label


# Imported last: variance reductions compose with the estimators defined above.
from .variance_reduction import compose  # noqa: E402

# Discrete-latent estimators (ARM, DisARM, Gumbel-softmax, straight-through, REBAR, RELAX) live in their own
# module and register here, after Estimator and ESTIMATORS exist.
from .discrete_estimators import register as _register_discrete_estimators  # noqa: E402

_register_discrete_estimators(ESTIMATORS)

# Imported last: the reference estimators are built from the helpers above.
from .reference_estimators import REFERENCE_ESTIMATORS  # noqa: E402

ESTIMATORS.update(REFERENCE_ESTIMATORS)

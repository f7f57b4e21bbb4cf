"""Double control variates (Titsias & Shi, AISTATS 2022) for Bernoulli latents, in the form of the authors' code.

RLOO's leave-one-out baseline is the first control variate. The second is built from first-order Taylor expansions
of f around the *other* samples of the estimate: f(x) ≈ f(x_j) + ∇f(x_j)ᵀ(x − x_j), with ∇f taken at the discrete
samples themselves (no extra cost evaluation). For sample n its slope is the leave-one-out mean
ḡ_−n = mean_{j≠n} ∇f(x_j), and the control variate α ḡ_−nᵀ(x_n − μ), μ = σ(α_logit), enters both f_n and, through
the other samples' own terms, RLOO's baseline:

    r_n = f(x_n) + α ḡ_−nᵀ(x_n − μ),   ĝ = (1/N) Σ_n (r_n − mean_{j≠n} r_j) ∂_θ log q(x_n) − α ḡᵀ ∂_θ μ,

where the last, *global* term uses the slope mean over all N samples, ḡ = mean_n ∇f(x_n): an unbiased estimate of
E[α ḡ_−nᵀ(x_n − μ) ∂_θ log q(x_n)] = α E[∇f]ᵀ ∂_θ μ. The baseline's extra terms have mean zero against x_n's score
(each is a slope times (x_j − μ) of another, independent sample), so ĝ is unbiased for every α.

α = −1 subtracts the Taylor term itself (exact for f affine in x), but slopes at {0, 1} can be far from f's secant
(f = (b − t)²: ±2(b − t) against 1 − 2t), and then α = −1 is worse than RLOO (α = 0). The paper learns α by
stochastic gradient on the estimate's second moment, from α = 0. ĝ is affine in α, ĝ = ĝ_RLOO + α Z, and its mean
does not depend on α, so that objective is the variance plus a constant, minimised at α* = −Cov(ĝ_RLOO, Z)/Var Z: we
take the sample version over ``pilot`` latents' estimates at the cell's θ (what the paper's training converges to),
drawn once on a forked, seeded stream and cached, so a cell's timing excludes the fit and its random stream is
untouched; pilot = 0 keeps α = 0 (RLOO). The fit is deterministic per (problem, θ, N, pilot), in float64 whatever
the cell's dtype, and the registered exact moments (estimators/exact/indecater.py) are at this α̂, not at α*.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from ..core.distributions import draw_detached, weighted_score_sum
from ..core.estimator import Estimator, ParameterRange
from ..core.problem import Problem
from .basic import leave_one_out_baseline
from .discrete import _needs_bernoulli, _needs_differentiable_discrete, shared_theta


def cost_and_slope(problem: Problem, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(f(x), ∇_x f(x)) at the samples, from one evaluation; each batch element's cost depends on its own x only."""
    leaf = x.detach().requires_grad_(True)
    f = problem.cost(leaf, theta.detach())
    (slope,) = torch.autograd.grad(f.sum(), leaf)
    return f.detach(), slope


def _inner(dist, values: Tensor) -> Tensor:
    # The inner product over independent coordinates (an Independent's event dimension); a plain Bernoulli has none.
    return values.sum(dim=-1) if dist.event_shape else values


def double_cv_parts(problem: Problem, theta: Tensor, n_samples: int) -> tuple[Tensor, Tensor]:
    """Surrogates (RLOO's, the Taylor part Z's) from one draw: the estimator at α is their sum with Z times α."""
    dist = problem.distribution(theta)
    x = draw_detached(dist, n_samples)
    f, slope = cost_and_slope(problem, x, theta)
    mean = dist.mean  # σ(α) in the sample layout, with its graph to θ
    # ḡ_−n uses only the other samples' slopes, so the Taylor term of r_n has a known mean against x_n's score.
    taylor = _inner(dist, leave_one_out_baseline(slope) * (x - mean.detach()))
    rloo = weighted_score_sum(dist, x, f - leave_one_out_baseline(f))
    global_correction = _inner(dist, slope.mean(dim=0) * mean)  # its θ-gradient: ḡᵀ ∂_θ μ
    return rloo, weighted_score_sum(dist, x, taylor - leave_one_out_baseline(taylor)) - n_samples * global_correction


_ALPHA_CACHE: dict[tuple, float] = {}
_ALPHA_CACHE_SIZE = 256


def fitted_alpha(problem: Problem, point: Tensor, n_samples: int, pilot: int) -> float:
    """α̂ = −Cov(ĝ_RLOO, Z) / Var Z over estimates of N samples at θ = ``point`` (every coordinate of a workload's θ
    summed, as the paper's mean squared gradient does), seeded from the cell's identity and cached. ``pilot`` counts
    latents: that many estimates of a scalar θ, or enough copies of a workload's θ for its data points to hold as
    many (the discrete VAE's estimate has 100), as RELAX's training batch does.

    On a problem with a scalar θ (every one with exact moments) the fit does not depend on the cell's dtype or
    device: it runs on the CPU in float64 at θ rounded to float32 (the pilot's noise dwarfs that rounding), so a
    float32 and a float64 cell at one θ share α̂ bit for bit, and ``estimators.exact`` calls this same function to
    give the exact moments of the estimator as it runs. A workload's fit runs where, and in the dtype, its θ lives."""
    if pilot == 0:
        return 0.0
    point = point.detach()
    where: tuple = (point.dtype, str(point.device))
    if problem.workload is None:
        point, where = point.to("cpu", torch.float32).to(torch.float64), ()
    digest = hashlib.sha256(point.cpu().numpy().tobytes()).hexdigest()
    key = (problem.label, digest, n_samples, pilot, *where)
    if key not in _ALPHA_CACHE:
        if len(_ALPHA_CACHE) >= _ALPHA_CACHE_SIZE:
            _ALPHA_CACHE.pop(next(iter(_ALPHA_CACHE)))
        seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big") >> 1
        fork = [point.device.index or 0] if point.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)
            units = math.prod(problem.distribution(point[None]).batch_shape[1:])  # data points per estimate
            copies = max(1, math.ceil(pilot / units))
            thetas = point.expand(copies, *point.shape).clone().requires_grad_(True)
            rloo, taylor = double_cv_parts(problem, thetas, n_samples)
            (g_rloo,) = torch.autograd.grad(rloo.sum(), thetas, retain_graph=True)
            (g_taylor,) = torch.autograd.grad(taylor.sum(), thetas)
        # Centred over the pilot: the mean (the gradient, whatever α) would only add noise to the fitted slope.
        g_rloo, g_taylor = g_rloo - g_rloo.mean(dim=0), g_taylor - g_taylor.mean(dim=0)
        denominator = float((g_taylor**2).sum())
        _ALPHA_CACHE[key] = 0.0 if denominator == 0 else -float((g_rloo * g_taylor).sum()) / denominator
    return _ALPHA_CACHE[key]


def double_cv(problem: Problem, theta: Tensor, n_samples: int, *, pilot: float) -> Tensor:
    """ĝ = RLOO on r_n = f(x_n) + α ḡ_−nᵀ(x_n − μ), minus the global α ḡᵀ ∂_θ μ, α fitted on a pilot   (Titsias & Shi)."""
    if pilot < 0 or int(pilot) != pilot:
        raise ValueError(f"pilot must be an integer >= 0, got {pilot:g}")
    first = shared_theta(theta, "double_cv fits α at one θ")
    alpha = fitted_alpha(problem, first, n_samples, int(pilot))
    rloo, taylor = double_cv_parts(problem, theta, n_samples)
    return rloo + alpha * taylor


def _applies(problem: Problem, n_samples: int) -> str | None:
    if n_samples < 2:
        return "the leave-one-out baseline needs N >= 2 samples per estimate"
    reason = _needs_bernoulli(problem, n_samples, "the Taylor control variate's mean is derived here for Bernoulli "
                                                  "latents only")  # fmt: skip
    return reason or _needs_differentiable_discrete(problem, n_samples)


_PILOT = ParameterRange("pilot latents at θ fitting the Taylor control variate's weight α (0: α = 0, RLOO)", low=0.0,
                        low_inclusive=True, integer=True)  # fmt: skip

DOUBLE_CV = Estimator(
    "double_cv", double_cv,
    "RLOO on f(x_n) + α ḡ_−nᵀ(x_n − μ), ḡ_−n the other samples' ∇f, minus the global α ḡᵀ∂μ, α fitted on pilot estimates (double control variates, Titsias & Shi 2022); Bernoulli, unbiased, N ≥ 2",
    skip_reason=_applies, samples_independent=False, parameters={"pilot": 1000}, parameter_ranges={"pilot": _PILOT},
    coupled_samples_reason="its leave-one-out terms would contain samples coupled to x_n, which biases it",
    work_depends_on_theta=True,
)  # fmt: skip

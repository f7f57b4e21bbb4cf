"""Gradient estimators for discrete latents (Bernoulli, categorical), with the shared surrogate signature.

Each is ``surrogate(problem, theta[M], n_samples, **options) -> Tensor[n_samples, M]`` whose gradient w.r.t.
θ, averaged over the samples, is the estimate (see estimators/core/estimator.py). The problem's distribution gives
the logits; θ may move several of them (a tied logit), and autograd sums the per-coordinate terms. Noise is
drawn from torch's global generator, vectorised over samples, replicates and coordinates.

- ``arm`` (Yin & Zhou 2019) and ``disarm`` (Dong, Mnih & Tucker 2020): Bernoulli only, two cost evaluations.
- ``gumbel_softmax`` (Jang et al. 2017; Maddison et al. 2017, Concrete): the cost at the relaxed sample,
  pathwise; biased for any temperature > 0.
- ``straight_through``: the straight-through Gumbel-softmax variant (Jang et al. 2017): the hard sample
  H(z) forward, the relaxed sample's gradient backward; biased.
- ``rebar`` (Tucker et al. 2017): score function with the relaxed cost at a conditional sample as control
  variate, plus the reparameterised correction; unbiased for any temperature λ and scale η.
- ``relax`` (Grathwohl et al. 2018): REBAR's structure with a learned control variate c_φ, trained for a fixed
  number of Adam steps at the cell's θ before measurement (see ``relax``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Independent,
    OneHotCategorical,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
)
from torch.distributions.utils import clamp_probs

from ..core.estimator import POSITIVE_TEMPERATURE, Estimator, ParameterRange
from ..core.problem import Problem

BERNOULLI, CATEGORICAL = "bernoulli", "categorical"


@dataclass(frozen=True)
class _Latent:
    """The discrete latent behind a problem's distribution, in one layout for every estimator."""

    kind: str  # BERNOULLI (independent coordinates) or CATEGORICAL (one K-way choice)
    # [*batch, D] Bernoulli logits per coordinate, or [*batch, K] categorical log-probabilities; depends on θ.
    logits: Tensor
    # A tensor in the latent layout [..., *batch, D or K] -> the problem's sample shape (drops D = 1).
    to_sample: Callable[[Tensor], Tensor]


def _latent_kind(dist) -> str | None:
    if isinstance(dist, Bernoulli):
        return BERNOULLI
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Bernoulli) and dist.reinterpreted_batch_ndims == 1:
        return BERNOULLI
    if isinstance(dist, OneHotCategorical):
        return CATEGORICAL
    return None


def _latent(problem: Problem, theta: Tensor) -> _Latent:
    dist = problem.distribution(theta)
    kind = _latent_kind(dist)
    if isinstance(dist, Bernoulli):
        return _Latent(kind, dist.logits.unsqueeze(-1), lambda x: x.squeeze(-1))
    if kind == BERNOULLI:
        return _Latent(kind, dist.base_dist.logits, lambda x: x)
    return _Latent(kind, dist.logits, lambda x: x)  # OneHotCategorical stores normalised logits (log-probs)


def _cost(problem: Problem, latent: _Latent, x: Tensor, theta: Tensor) -> Tensor:
    # The discrete estimators apply only where f does not depend on θ (skip_reason), so θ is passed detached.
    return problem.cost(latent.to_sample(x), theta.detach())


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")


def _uniform(shape: torch.Size, like: Tensor) -> Tensor:
    # Clamped away from 0 and 1 so that logit(u) and log(−log u) stay finite.
    return clamp_probs(torch.rand(shape, dtype=like.dtype, device=like.device))


# ---------------------------------------------------------------------------------------------------------
# ARM and DisARM (Bernoulli).


def arm(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ_α = (f(1[u > σ(−α)]) − f(1[u < σ(α)])) (u − ½) per logit α, u ~ U(0, 1)^D   (Yin & Zhou 2019)."""
    latent = _latent(problem, theta)
    alpha = latent.logits
    u = _uniform(torch.Size((n_samples, *alpha.shape)), alpha)
    a = alpha.detach()
    b_plus = (u > torch.sigmoid(-a)).to(alpha.dtype)
    b_minus = (u < torch.sigmoid(a)).to(alpha.dtype)
    weight = _cost(problem, latent, b_plus, theta) - _cost(problem, latent, b_minus, theta)
    return (weight.unsqueeze(-1) * (u - 0.5) * alpha).sum(dim=-1)


def disarm(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
    """ĝ_α = ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|), b = 1[u < σ(α)], b̃ = 1[1 − u < σ(α)]   (Dong et al. 2020)."""
    latent = _latent(problem, theta)
    alpha = latent.logits
    u = _uniform(torch.Size((n_samples, *alpha.shape)), alpha)
    a = alpha.detach()
    p = torch.sigmoid(a)
    b = (u < p).to(alpha.dtype)
    b_anti = (1 - u < p).to(alpha.dtype)  # the antithetic partner: same marginal, maximally coupled
    weight = 0.5 * (_cost(problem, latent, b, theta) - _cost(problem, latent, b_anti, theta))
    coefficient = (1 - 2 * b_anti) * (b != b_anti).to(alpha.dtype) * torch.sigmoid(a.abs())
    return (weight.unsqueeze(-1) * coefficient * alpha).sum(dim=-1)


# ---------------------------------------------------------------------------------------------------------
# Relaxations: Gumbel-softmax (Concrete) and straight-through.


def _relaxed_sample(latent: _Latent, temperature: float, n_samples: int) -> Tensor:
    """σ((α + logistic)/τ) per Bernoulli coordinate, or softmax((log p + Gumbel)/τ), reparameterised in θ."""
    tau = latent.logits.new_tensor(temperature)
    if latent.kind == BERNOULLI:
        return RelaxedBernoulli(tau, logits=latent.logits).rsample((n_samples,))
    return RelaxedOneHotCategorical(tau, logits=latent.logits).rsample((n_samples,))


def gumbel_softmax(problem: Problem, theta: Tensor, n_samples: int, *, temperature: float) -> Tensor:
    """ĝ = ∂_θ f(σ_τ(α + logistic)) (Bernoulli) or ∂_θ f(softmax((log p + Gumbel)/τ)): the relaxed cost, pathwise."""
    _check_positive("temperature", temperature)
    latent = _latent(problem, theta)
    return _cost(problem, latent, _relaxed_sample(latent, temperature, n_samples), theta)


def _hard(latent: _Latent, soft: Tensor) -> Tensor:
    # The sign of (α + logistic) (σ(·/τ) > ½) or the argmax of the Gumbel scores: an exact draw from p_θ.
    if latent.kind == BERNOULLI:
        return (soft > 0.5).to(soft.dtype)
    return nn.functional.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)


def straight_through(problem: Problem, theta: Tensor, n_samples: int, *, temperature: float) -> Tensor:
    """ĝ = ∂f/∂x at the hard sample x = H(z), times ∂_θ of the relaxed sample σ_τ(z) (straight-through Gumbel)."""
    _check_positive("temperature", temperature)
    latent = _latent(problem, theta)
    soft = _relaxed_sample(latent, temperature, n_samples)
    hard = _hard(latent, soft.detach())
    return _cost(problem, latent, hard + soft - soft.detach(), theta)


# ---------------------------------------------------------------------------------------------------------
# REBAR and RELAX: f(b) ∂log p(b) with a control variate c evaluated at z (relaxed noise, b = H(z)) and at
# z̃ ~ p(z | b), both reparameterised in θ (z̃ with b held fixed), so that
#   ĝ = [f(b) − c(z̃)] ∂_θ log p(b) + ∂_θ c(z) − ∂_θ c(z̃)
# is unbiased for any differentiable c (Tucker et al. 2017, eq. 5; Grathwohl et al. 2018, eq. 7).


def _relaxed_noise(latent: _Latent, n_samples: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(z, b, z̃, log p(b)): the noise, its hard sample, a conditional draw given b, and the log-probability."""
    logits = latent.logits
    shape = torch.Size((n_samples, *logits.shape))
    u, v = _uniform(shape, logits), _uniform(shape, logits)
    if latent.kind == BERNOULLI:
        z = logits + torch.logit(u)  # logistic(α): b = 1[z > 0] ~ Bernoulli(σ(α))
        b = (z > 0).to(logits.dtype).detach()
        p = torch.sigmoid(logits)
        # u given b is uniform on (1 − p, 1) when b = 1 and on (0, 1 − p) when b = 0; v maps onto that interval.
        v_given_b = b * ((1 - p) + v * p) + (1 - b) * (v * (1 - p))
        z_tilde = logits + torch.logit(clamp_probs(v_given_b))
        log_prob = Bernoulli(logits=logits.expand_as(b)).log_prob(b).sum(dim=-1)
        return z, b, z_tilde, log_prob
    log_p = logits.log_softmax(dim=-1)
    z = log_p - torch.log(-torch.log(u))  # Gumbel-perturbed log-probabilities: argmax ~ Categorical(p)
    b = nn.functional.one_hot(z.argmax(dim=-1), z.shape[-1]).to(logits.dtype).detach()
    # Given the argmax b: z̃_b ~ Gumbel(0) (the max of Gumbel(log p_k) is Gumbel(log Σp) = Gumbel(0)), and
    # each other z̃_k ~ Gumbel(log p_k) truncated below z̃_b: z̃_k = −log(−log v_k / p_k − log v_b).
    log_v_b = (torch.log(v) * b).sum(dim=-1, keepdim=True)
    top = -torch.log(-log_v_b)
    others = -torch.log(-torch.log(v) / log_p.exp() - log_v_b)
    z_tilde = b * top + (1 - b) * others
    log_prob = (b * log_p).sum(dim=-1)
    return z, b, z_tilde, log_prob


def _relax_point(latent: _Latent, z: Tensor, temperature: Tensor | float) -> Tensor:
    return torch.sigmoid(z / temperature) if latent.kind == BERNOULLI else torch.softmax(z / temperature, dim=-1)


def _control_variate_surrogate(problem: Problem, theta: Tensor, n_samples: int, control, *,
                               differentiable_in_control: bool = False) -> Tensor:
    """Surrogate of [f(b) − c(z̃)] ∂log p(b) + ∂c(z) − ∂c(z̃) for a control ``control(latent, z) -> [N, M]``.

    With ``differentiable_in_control`` the score term's weight keeps its graph to the control's parameters
    (c is evaluated once more, at z̃ cut from θ), so that ∂ĝ/∂φ is exact for training; otherwise the weight is
    detached, which gives the same ĝ with one evaluation fewer.
    """
    latent = _latent(problem, theta)
    z, b, z_tilde, log_prob = _relaxed_noise(latent, n_samples)
    f_b = _cost(problem, latent, b, theta)
    c_z, c_z_tilde = control(latent, z), control(latent, z_tilde)
    weight = f_b.detach() - control(latent, z_tilde.detach()) if differentiable_in_control else (f_b - c_z_tilde).detach()
    return weight * log_prob + c_z - c_z_tilde


def rebar(problem: Problem, theta: Tensor, n_samples: int, *, temperature: float, eta: float) -> Tensor:
    """ĝ = [f(b) − η f(σ_λ(z̃))] ∂log p(b) + η ∂f(σ_λ(z)) − η ∂f(σ_λ(z̃)), b = H(z), z̃ ~ p(z | b)   (REBAR)."""
    _check_positive("temperature", temperature)

    def control(latent: _Latent, z: Tensor) -> Tensor:
        return eta * _cost(problem, latent, _relax_point(latent, z, temperature), theta)

    return _control_variate_surrogate(problem, theta, n_samples, control)


RELAX_HIDDEN = 16
RELAX_BATCH = 256  # samples per Adam step of the control variate's training
RELAX_LEARNING_RATE = 0.01


class RelaxControl(nn.Module):
    """c_φ(z) = η f(σ_λ(z)) + MLP(σ_λ(z)): REBAR's relaxed cost with learned η and λ, plus a learned residual.

    Starts at REBAR (η = 1, λ = ½, the residual's last layer zero), so training starts from REBAR's variance.
    The MLP has one hidden layer of ``RELAX_HIDDEN`` tanh units on the relaxed sample (D or K inputs).
    """

    def __init__(self, problem: Problem, inputs: int):
        super().__init__()
        self.problem = problem
        self.eta = nn.Parameter(torch.tensor(1.0))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.5)))
        self.residual = nn.Sequential(nn.Linear(inputs, RELAX_HIDDEN), nn.Tanh(), nn.Linear(RELAX_HIDDEN, 1))
        nn.init.zeros_(self.residual[2].weight)
        nn.init.zeros_(self.residual[2].bias)

    def forward(self, latent: _Latent, z: Tensor) -> Tensor:
        relaxed = _relax_point(latent, z, self.log_temperature.exp())
        # The discrete estimators apply only to costs that do not depend on θ, so any θ serves here.
        cost = self.problem.cost(latent.to_sample(relaxed), torch.zeros((), dtype=z.dtype, device=z.device))
        return self.eta * cost + self.residual(relaxed).squeeze(-1)


_RELAX_CACHE: dict[tuple, RelaxControl] = {}
_RELAX_CACHE_SIZE = 64


def fit_relax_control(problem: Problem, make_thetas: Callable[[], Tensor], inputs: int, steps: int, key: str,
                      dtype: torch.dtype, device: torch.device) -> RelaxControl:
    """Adam on φ for ``steps`` steps minimising the mean of ĝ² over the single-sample estimates w.r.t. the
    leaf tensor ``make_thetas()`` returns (one θ per estimate, so autograd keeps them apart). E[ĝ] does not
    depend on φ, so this minimises the estimator's variance (Grathwohl et al. 2018 §3.3). Seeded from ``key``
    on a forked RNG, so the result is reproducible and the measurement's random stream is untouched."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1
    fork = [device.index or 0] if device.type == "cuda" else []
    threads = torch.get_num_threads()
    # The training tensors are tiny: intra-op threads only add synchronisation, which a loaded machine turns into
    # waiting. One thread, restored afterwards.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)
            control = RelaxControl(problem, inputs).to(dtype=dtype, device=device)
            optimiser = torch.optim.Adam(control.parameters(), lr=RELAX_LEARNING_RATE)
            for _ in range(steps):
                thetas = make_thetas()
                surrogate = _control_variate_surrogate(problem, thetas, 1, control, differentiable_in_control=True)
                (estimates,) = torch.autograd.grad(surrogate.sum(), thetas, create_graph=True)
                optimiser.zero_grad()
                (estimates**2).mean().backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    control.requires_grad_(False)
    return control


def relax_control(problem: Problem, theta: Tensor, steps: int) -> RelaxControl:
    """The trained control variate for (problem, one replicate's θ, steps, dtype, device): trained once and
    cached, so the timing of a cell (measured after its estimates) excludes training. Each Adam step averages
    about ``RELAX_BATCH`` single-sample estimates: that many copies of a scalar θ, or enough copies of a
    workload's θ (its data points' latents) to hold as many."""
    point = theta.detach()
    key = (problem.label, hashlib.sha256(point.cpu().numpy().tobytes()).hexdigest(), int(steps), point.dtype,
           str(point.device))  # fmt: skip
    if key not in _RELAX_CACHE:
        if len(_RELAX_CACHE) >= _RELAX_CACHE_SIZE:
            _RELAX_CACHE.pop(next(iter(_RELAX_CACHE)))
        inputs = _latent(problem, point[None]).logits.shape[-1]
        # Single-sample estimates per copy of θ: one for a scalar θ, one per data point for a workload's latents.
        units = point.numel() // inputs if point.dim() and point.shape[-1] == inputs else point.numel()
        copies = max(1, math.ceil(RELAX_BATCH / max(units, 1)))

        def make_thetas() -> Tensor:
            return point.expand(copies, *point.shape).clone().requires_grad_(True)

        where = repr(float(point)) if point.dim() == 0 else key[1]
        seed_key = f"{problem.label}|{where}|{steps}|{point.dtype}"
        _RELAX_CACHE[key] = fit_relax_control(problem, make_thetas, inputs, int(steps), seed_key, point.dtype,
                                              point.device)  # fmt: skip
    return _RELAX_CACHE[key]


def relax(problem: Problem, theta: Tensor, n_samples: int, *, train_steps: float) -> Tensor:
    """ĝ = [f(b) − c_φ(z̃)] ∂log p(b) + ∂c_φ(z) − ∂c_φ(z̃), c_φ trained for ``train_steps`` Adam steps at θ   (RELAX)."""
    if train_steps < 0 or int(train_steps) != train_steps:
        raise ValueError(f"train_steps must be an integer >= 0, got {train_steps:g}")
    first = shared_theta(theta, "relax trains its control variate at one θ")
    control = relax_control(problem, first, int(train_steps))
    return _control_variate_surrogate(problem, theta, n_samples, control)


# ---------------------------------------------------------------------------------------------------------
# Applicability, cost accounting and the exact means of the biased relaxations.


def discrete_kind(problem: Problem) -> str | None:
    """BERNOULLI, CATEGORICAL, or None when the problem's latent is not discrete in a way these estimators know."""
    return _latent_kind(problem.example_distribution())


def _needs_discrete(problem: Problem, n_samples: int) -> str | None:
    if discrete_kind(problem) is None:
        name = type(problem.example_distribution()).__name__
        return f"needs Bernoulli or categorical latents, not {name}"
    if problem.cost_depends_on_theta:
        return "implemented for costs that do not depend on θ"
    return None


def _needs_differentiable_discrete(problem: Problem, n_samples: int) -> str | None:
    # The relaxations, REBAR and RELAX evaluate ∂f/∂x at relaxed samples: a verifier's 0/1 reward has none.
    if not problem.cost_is_differentiable:
        return "the cost is not differentiable in x (a relaxation needs ∂f/∂x)"
    return _needs_discrete(problem, n_samples)


def _needs_bernoulli(problem: Problem, n_samples: int,
                     not_binary: str = "ARM/DisARM are defined for Bernoulli latents (the categorical extension, "
                                       "ARSM, is not implemented)") -> str | None:  # fmt: skip
    """Why an estimator for Bernoulli latents does not apply: the discrete problem's reason, or ``not_binary``."""
    reason = _needs_discrete(problem, n_samples)
    if reason is None and discrete_kind(problem) != BERNOULLI:
        return not_binary
    return reason


def shared_theta(theta: Tensor, why: str) -> Tensor:
    """The one θ every replicate of ``theta`` shares, for an estimator that fits something once per θ (``why``
    says what, in the error when the replicates differ)."""
    first = theta.detach()[0]
    if not bool((theta.detach() == first).all()):
        raise ValueError(f"{why}: every replicate must share it")
    return first


def _evaluations(count: int) -> Callable[[Problem], int]:
    return lambda problem: count


def _biased(problem: Problem) -> bool:
    return False


_ETA = ParameterRange("the weight η of REBAR's control variate; any value keeps the estimator unbiased")
_TRAIN_STEPS = ParameterRange("Adam steps training RELAX's control variate", low=0.0, low_inclusive=True, integer=True)

DISCRETE: tuple[Estimator, ...] = (
    Estimator("arm", arm, "(f(b⁺) − f(b⁻))(u − ½), b± from one uniform (ARM); Bernoulli, unbiased, 2 cost evals",
              skip_reason=_needs_bernoulli, cost_evaluations=_evaluations(2)),
    Estimator("disarm", disarm,
              "½(f(b) − f(b̃))(−1)^b̃ 1[b≠b̃] σ(|α|), antithetic b̃ (DisARM); Bernoulli, unbiased, 2 cost evals",
              skip_reason=_needs_bernoulli, cost_evaluations=_evaluations(2)),
    Estimator("gumbel_softmax", gumbel_softmax,
              "∂f at the relaxed sample σ((α + logistic)/τ) or softmax((log p + Gumbel)/τ); biased for τ > 0",
              skip_reason=_needs_differentiable_discrete, unbiased_for=_biased, parameters={"temperature": 0.5},
              parameter_ranges={"temperature": POSITIVE_TEMPERATURE}),
    Estimator("straight_through", straight_through,
              "f at the hard sample forward, the relaxed sample's gradient backward (ST Gumbel); biased",
              skip_reason=_needs_differentiable_discrete, unbiased_for=_biased, parameters={"temperature": 0.5},
              parameter_ranges={"temperature": POSITIVE_TEMPERATURE}),
    Estimator("rebar", rebar,
              "score function with control variate η f(σ_λ(z̃)) + its reparameterised correction (REBAR); unbiased, 3 cost evals",
              skip_reason=_needs_differentiable_discrete, cost_evaluations=_evaluations(3),
              parameters={"temperature": 0.5, "eta": 1.0},
              parameter_ranges={"temperature": POSITIVE_TEMPERATURE, "eta": _ETA}),
    Estimator("relax", relax,
              f"REBAR with a learned control c_φ (η, λ, {RELAX_HIDDEN}-unit MLP) trained train_steps Adam steps at θ; unbiased, 3 cost evals",
              skip_reason=_needs_differentiable_discrete, cost_evaluations=_evaluations(3), parameters={"train_steps": 200},
              parameter_ranges={"train_steps": _TRAIN_STEPS}, work_depends_on_theta=True),
)  # fmt: skip

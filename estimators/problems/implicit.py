"""Problems on Gamma, Beta and Dirichlet distributions, which torch samples with *implicit* reparameterisation.

torch's ``rsample`` for these distributions differentiates the sample through the CDF, x' = −(∂F/∂θ)/p(x)
(Figurnov et al., 2018), so ``pathwise`` applies; the score function applies as everywhere. Each family takes
a cost f = x^p (p = ``power`` ≠ 0) or f = log x (``power`` = 0, the limit of (x^p − 1)/p), whose expectations are
closed-form through the gamma function, so the exact gradients need only digamma ψ and trigamma ψ′:

    Gamma(α, β) (β = rate)  E[x^p] = Γ(α+p) / (Γ(α) β^p)              E[log x] = ψ(α) − log β
    Beta(a, b)               E[x^p] = Γ(a+p) Γ(a+b) / (Γ(a) Γ(a+b+p))   E[log x] = ψ(a) − ψ(a+b)
    Dirichlet(α1, r, …, r)   x1 ~ Beta(α1, (K−1) r), so the Beta formulas with a = α1, b = (K−1) r

E[x^p] exists iff (shape or a) + p > 0, which bounds θ when θ is that parameter. tests/test_implicit.py checks
every closed form against scipy quadrature over the density and a finite difference of the objective.

Numerical health: torch clamps Gamma/Beta/Dirichlet samples to [tiny, 1 − eps] of the dtype, so small
concentrations give no NaN or inf but a *biased* sample: a Gamma(α) draw falls below tiny with probability
≈ tiny^α / Γ(α+1), which is 42% in float32 at α = 0.01 (0.08% in float64). The benchmark measures it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from scipy.special import betainc, digamma, gammainc, gammaln, polygamma
from torch import Tensor
from torch.distributions import Beta, Dirichlet, Distribution, Gamma

from ..core.problem import Problem, ProblemError, ProblemFamily


def _trigamma(x: float) -> float:
    return float(polygamma(1, x))


def _power_cost(power: float) -> Callable[[Tensor], Tensor]:
    """f(x) = x^p, or log x when p = 0 (the limit of the Box–Cox transform (x^p − 1)/p)."""
    if power == 0:
        return torch.log
    return lambda x: x**power


def _cost_label(power: float) -> str:
    return "log x" if power == 0 else f"x^{power:g}"


def _moment_exists(shape_name: str, power: float) -> tuple[float, str]:
    """Lower bound on the shape-like parameter for E[x^p] to exist, and why."""
    if power >= 0:
        return 0.0, f"{shape_name} is a concentration and must be > 0"
    return -power, f"E[x^{power:g}] exists only for {shape_name} > {-power:g} ({shape_name} + power > 0)"


def _heavy_tail(shape: float, power: float) -> str | None:
    # Near x = 0 the density is ∝ x^(shape−1) and both the score-function and pathwise estimates behave like
    # x^p log x, so their fourth moment is finite iff shape + 4p > 0 (and their second iff shape + 2p > 0).
    if power < 0 and shape + 4 * power <= 0 < shape + 2 * power:
        return (
            f"f = x^{power:g} with shape-like parameter {shape:g}: shape + 4·power <= 0, so the estimates' fourth "
            "moment is infinite and their sample variance is unreliable"
        )
    return None


def _infinite_variance(shape: float, power: float) -> str | None:
    # The estimates behave like x^p log x near 0 (see _heavy_tail): their second moment needs shape + 2p > 0.
    if power < 0 and shape + 2 * power <= 0:
        return (f"f = x^{power:g} with shape-like parameter {shape:g}: shape + 2·power <= 0, so the gradient exists "
                "(shape + power > 0) but every estimator's variance is infinite")  # fmt: skip
    return None


# torch clamps implicit samples to [tiny, 1 − eps] of the dtype (tiny = smallest normal number).
_FLOAT32, _FLOAT64 = torch.finfo(torch.float32), torch.finfo(torch.float64)
CLAMP_WARNING_FRACTION = 1e-4  # above this clamped fraction the bias can show in a benchmark cell


def _clamp_warning(clamped: Callable[[torch.finfo], float]) -> str | None:
    """A note when a noticeable fraction of draws lies where torch clamps samples (float32, float64)."""
    single, double = clamped(_FLOAT32), clamped(_FLOAT64)
    if single < CLAMP_WARNING_FRACTION:
        return None
    return (
        f"{single:.2g} of the draws (float32; {double:.2g} in float64) fall beyond the dtype's smallest normal number "
        "or 1 − eps, where torch clamps samples: a cost sensitive there (log x near 0) gets biased estimates in "
        "that dtype, however unbiased the estimator"
    )


def _warnings(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _gamma_clamped(shape: float, rate: float) -> Callable[[torch.finfo], float]:
    return lambda info: float(gammainc(shape, rate * info.tiny))  # P(x < tiny), x ~ Gamma(shape, rate)


def _beta_clamped(a: float, b: float) -> Callable[[torch.finfo], float]:
    # P(x < tiny) + P(x > 1 − eps) for x ~ Beta(a, b).
    return lambda info: float(betainc(a, b, info.tiny) + betainc(b, a, info.eps))


# ---------------------------------------------------------------------------------------------------------
# Gamma(α = shape, β = rate).
#   p ≠ 0:  L = Γ(α+p)/(Γ(α) β^p)   ∂α L = L (ψ(α+p) − ψ(α))   ∂β L = −p L / β
#   p = 0:  L = ψ(α) − log β        ∂α L = ψ′(α)               ∂β L = −1/β


def gamma_objective(shape: float, rate: float, power: float) -> float:
    if power == 0:
        return float(digamma(shape)) - math.log(rate)
    return math.exp(float(gammaln(shape + power) - gammaln(shape))) * rate**-power


def gamma_d_shape(shape: float, rate: float, power: float) -> float:
    if power == 0:
        return _trigamma(shape)
    return gamma_objective(shape, rate, power) * float(digamma(shape + power) - digamma(shape))


def gamma_d_rate(shape: float, rate: float, power: float) -> float:
    if power == 0:
        return -1.0 / rate
    return -power * gamma_objective(shape, rate, power) / rate


def _implicit_problem(name: str, wrt: str, params: dict[str, float], summary: str, **fields) -> Problem:
    """A Problem of this module: θ moves only the distribution, the cost is x^power or log x, θ > its lower bound."""
    low, reason = fields.pop("theta_low"), fields.pop("theta_range_reason")
    # Gamma, Beta and Dirichlet draws are rejection samplers whose work depends on the concentration.
    return Problem(name=name, wrt=wrt, params=params, summary=summary, distribution_depends_on_theta=True,
                   cost_depends_on_theta=False, theta_range=(low, math.inf), theta_range_reason=reason,
                   work_depends_on_theta=True, **fields)  # fmt: skip


def _build_gamma(wrt: str, params: dict[str, float]) -> Problem:
    power = params["power"]
    cost = _power_cost(power)
    if wrt == "shape":
        rate = params["rate"]
        if not rate > 0:
            raise ProblemError(f"rate must be > 0 (a Gamma rate), got rate={rate:g}")
        low, reason = _moment_exists("shape", power)

        def distribution(theta: Tensor) -> Distribution:
            return Gamma(theta, torch.full_like(theta, rate))

        objective = lambda t: gamma_objective(t, rate, power)  # noqa: E731
        gradient = lambda t: gamma_d_shape(t, rate, power)  # noqa: E731
        heavy = lambda t: _warnings(_heavy_tail(t, power), _clamp_warning(_gamma_clamped(t, rate)))  # noqa: E731
        infinite = lambda t: _infinite_variance(t, power)  # noqa: E731
        formula = (
            "dL/dα = ψ′(α)   (L = E[log x] = ψ(α) − log β)"
            if power == 0
            else "dL/dα = L (ψ(α+p) − ψ(α))   (L = E[x^p] = Γ(α+p) / (Γ(α) β^p))"
        )
    else:
        shape = params["shape"]
        shape_low, why = _moment_exists("shape", power)
        if not shape > shape_low:
            raise ProblemError(f"{why}, got shape={shape:g}, power={power:g}")
        low, reason = 0.0, "rate is a Gamma rate and must be > 0"

        def distribution(theta: Tensor) -> Distribution:
            return Gamma(torch.full_like(theta, shape), theta)

        objective = lambda t: gamma_objective(shape, t, power)  # noqa: E731
        gradient = lambda t: gamma_d_rate(shape, t, power)  # noqa: E731
        heavy = lambda t: _warnings(_heavy_tail(shape, power), _clamp_warning(_gamma_clamped(shape, t)))  # noqa: E731
        infinite = lambda t: _infinite_variance(shape, power)  # noqa: E731
        formula = (
            "dL/dβ = −1/β   (L = E[log x] = ψ(α) − log β)"
            if power == 0
            else "dL/dβ = −p L / β   (L = E[x^p] = Γ(α+p) / (Γ(α) β^p))"
        )
    return _implicit_problem(
        name="gamma",
        wrt=wrt,
        params=params,
        summary=f"x ~ Gamma(shape, rate), f = {_cost_label(power)}",
        distribution=distribution,
        cost=lambda x, theta: cost(x),
        objective=objective,
        gradient=gradient,
        gradient_formula=formula,
        theta_low=low,
        theta_range_reason=reason,
        heavy_tail_warning=heavy,
        infinite_variance=infinite,
    )


# ---------------------------------------------------------------------------------------------------------
# Beta(a, b), and the first coordinate of a Dirichlet, whose marginal is Beta(α1, α0 − α1).
#   p ≠ 0:  L = Γ(a+p) Γ(a+b) / (Γ(a) Γ(a+b+p))   ∂a L = L (ψ(a+p) − ψ(a) + ψ(a+b) − ψ(a+b+p))
#                                                   ∂b L = L (ψ(a+b) − ψ(a+b+p))
#   p = 0:  L = ψ(a) − ψ(a+b)                      ∂a L = ψ′(a) − ψ′(a+b)     ∂b L = −ψ′(a+b)


def beta_objective(a: float, b: float, power: float) -> float:
    if power == 0:
        return float(digamma(a) - digamma(a + b))
    return math.exp(float(gammaln(a + power) + gammaln(a + b) - gammaln(a) - gammaln(a + b + power)))


def beta_d_a(a: float, b: float, power: float) -> float:
    if power == 0:
        return _trigamma(a) - _trigamma(a + b)
    psi = digamma(a + power) - digamma(a) + digamma(a + b) - digamma(a + b + power)
    return beta_objective(a, b, power) * float(psi)


def beta_d_b(a: float, b: float, power: float) -> float:
    if power == 0:
        return -_trigamma(a + b)
    return beta_objective(a, b, power) * float(digamma(a + b) - digamma(a + b + power))


_BETA_FORMULA_A = {
    True: "dL/da = ψ′(a) − ψ′(a+b)   (L = E[log x] = ψ(a) − ψ(a+b))",
    False: "dL/da = L (ψ(a+p) − ψ(a) + ψ(a+b) − ψ(a+b+p))   (L = E[x^p] = Γ(a+p) Γ(a+b) / (Γ(a) Γ(a+b+p)))",
}


def _check_concentration(name: str, value: float) -> None:
    if not value > 0:
        raise ProblemError(f"{name} must be > 0 (a concentration), got {name}={value:g}")


def _build_beta(wrt: str, params: dict[str, float]) -> Problem:
    power = params["power"]
    cost = _power_cost(power)
    if wrt == "a":
        b = params["b"]
        _check_concentration("b", b)
        low, reason = _moment_exists("a", power)

        def distribution(theta: Tensor) -> Distribution:
            return Beta(theta, torch.full_like(theta, b))

        objective = lambda t: beta_objective(t, b, power)  # noqa: E731
        gradient = lambda t: beta_d_a(t, b, power)  # noqa: E731
        heavy = lambda t: _warnings(_heavy_tail(t, power), _clamp_warning(_beta_clamped(t, b)))  # noqa: E731
        infinite = lambda t: _infinite_variance(t, power)  # noqa: E731
        formula = _BETA_FORMULA_A[power == 0]
    else:
        a = params["a"]
        a_low, why = _moment_exists("a", power)
        if not a > a_low:
            raise ProblemError(f"{why}, got a={a:g}, power={power:g}")
        low, reason = 0.0, "b is a concentration and must be > 0"

        def distribution(theta: Tensor) -> Distribution:
            return Beta(torch.full_like(theta, a), theta)

        objective = lambda t: beta_objective(a, t, power)  # noqa: E731
        gradient = lambda t: beta_d_b(a, t, power)  # noqa: E731
        heavy = lambda t: _warnings(_heavy_tail(a, power), _clamp_warning(_beta_clamped(a, t)))  # noqa: E731
        infinite = lambda t: _infinite_variance(a, power)  # noqa: E731
        formula = (
            "dL/db = −ψ′(a+b)   (L = E[log x] = ψ(a) − ψ(a+b))"
            if power == 0
            else "dL/db = L (ψ(a+b) − ψ(a+b+p))   (L = E[x^p] = Γ(a+p) Γ(a+b) / (Γ(a) Γ(a+b+p)))"
        )
    return _implicit_problem(
        name="beta",
        wrt=wrt,
        params=params,
        summary=f"x ~ Beta(a, b), f = {_cost_label(power)}",
        distribution=distribution,
        cost=lambda x, theta: cost(x),
        objective=objective,
        gradient=gradient,
        gradient_formula=formula,
        theta_low=low,
        theta_range_reason=reason,
        heavy_tail_warning=heavy,
        infinite_variance=infinite,
    )


def _build_dirichlet(wrt: str, params: dict[str, float]) -> Problem:
    power, rest, components = params["power"], params["rest"], params["components"]
    if components != int(components) or components < 2:
        raise ProblemError(f"components (K, the Dirichlet's dimension) must be an integer >= 2, got {components:g}")
    _check_concentration("rest", rest)
    k = int(components)
    others = (k - 1) * rest  # α0 − α1: the Beta marginal's second parameter
    cost = _power_cost(power)
    low, reason = _moment_exists("alpha1", power)

    def distribution(theta: Tensor) -> Distribution:
        fixed = torch.full((*theta.shape, k - 1), rest, dtype=theta.dtype, device=theta.device)
        return Dirichlet(torch.cat([theta.unsqueeze(-1), fixed], dim=-1))

    return _implicit_problem(
        name="dirichlet",
        wrt=wrt,
        params=params,
        summary=f"x ~ Dirichlet(α1, rest, …, rest) with K components, f = {_cost_label(power).replace('x', 'x1')}",
        distribution=distribution,
        cost=lambda x, theta: cost(x[..., 0]),
        objective=lambda t: beta_objective(t, others, power),
        gradient=lambda t: beta_d_a(t, others, power),
        gradient_formula=(
            "dL/dα1 = ψ′(α1) − ψ′(α0)   (L = E[log x1] = ψ(α1) − ψ(α0)"
            if power == 0
            else "dL/dα1 = L (ψ(α1+p) − ψ(α1) + ψ(α0) − ψ(α0+p))   (L = E[x1^p] = Γ(α1+p) Γ(α0) / (Γ(α1) Γ(α0+p))"
        )
        + f", α0 = α1 + (K−1)·rest = α1 + {others:g})",
        theta_low=low,
        theta_range_reason=reason,
        # The marginal x1 ~ Beta(α1, (K−1)·rest) approximates where the Dirichlet sampler clamps.
        heavy_tail_warning=lambda t: _warnings(_heavy_tail(t, power), _clamp_warning(_beta_clamped(t, others))),
        infinite_variance=lambda t: _infinite_variance(t, power),
    )


_POWER_NOTE = "f = x^power, or log x when power = 0"

IMPLICIT_FAMILIES: dict[str, ProblemFamily] = {
    "gamma": ProblemFamily(
        name="gamma",
        summary=f"x ~ Gamma(shape, rate), {_POWER_NOTE}; θ is shape or rate (implicit reparameterisation)",
        wrt_choices=("shape", "rate"),
        defaults={"power": 1.0, "shape": 1.0, "rate": 1.0},
        build=_build_gamma,
    ),
    "beta": ProblemFamily(
        name="beta",
        summary=f"x ~ Beta(a, b), {_POWER_NOTE}; θ is a or b (implicit reparameterisation)",
        wrt_choices=("a", "b"),
        defaults={"power": 1.0, "a": 1.0, "b": 1.0},
        build=_build_beta,
    ),
    "dirichlet": ProblemFamily(
        name="dirichlet",
        summary=f"x ~ Dirichlet(α1, rest, …) with K = components, {_POWER_NOTE.replace('x', 'x1')}; θ = α1",
        wrt_choices=("alpha1",),
        defaults={"power": 1.0, "rest": 1.0, "components": 3.0},
        build=_build_dirichlet,
    ),
}

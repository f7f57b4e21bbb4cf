"""Benchmark problems: L(θ) = E_{x ~ p_θ}[f_θ(x)] with θ a scalar, each with its exact gradient.

A problem is declared once — a torch.distributions builder, a cost, the exact objective and gradient, the
valid range of θ — and every estimator that applies to it can use it. Problems are built by name through
``make_problem`` which validates every parameter, so a bad value fails before any sampling happens.

The derivations of every closed form are in docs/math.md (seed problems) and in the docstrings below
(Gaussian test costs of Mohamed et al., 2020, §3); tests/test_exact.py checks each against Gauss–Hermite
quadrature and a finite difference of L.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal


class ProblemError(ValueError):
    """A problem name, parameter or θ that is not allowed; the message says what is."""


@dataclass(frozen=True, eq=False)
class Problem:
    """One concrete problem instance: a family, the parameter θ is taken w.r.t., and fixed parameters."""

    name: str
    wrt: str
    params: Mapping[str, float]
    summary: str
    # θ (any shape) -> distribution whose batch shape is θ's shape.
    distribution: Callable[[Tensor], Distribution]
    # (x, θ) -> f_θ(x); x has the sample dimensions in front of θ's shape and broadcasts against θ.
    cost: Callable[[Tensor, Tensor], Tensor]
    # L(θ) and dL/dθ in closed form; None for a user's problem without them (a reference estimate stands in).
    objective: Callable[[float], float] | None
    gradient: Callable[[float], float] | None
    gradient_formula: str
    distribution_depends_on_theta: bool
    cost_depends_on_theta: bool
    cost_is_differentiable: bool = True
    # Open interval of valid θ.
    theta_range: tuple[float, float] = (-math.inf, math.inf)
    theta_range_reason: str = ""
    # θ -> why estimates may have an infinite fourth moment there (variance intervals then mislead), or None.
    heavy_tail_warning: Callable[[float], str | None] = lambda theta: None
    # θ -> why every estimate that is not constant has an infinite variance there (its second moment diverges,
    # though the gradient exists), or None. Such cells get no bias verdict and no rank: a z-test needs a variance.
    infinite_variance: Callable[[float], str | None] = lambda theta: None
    # Whether the time to draw and evaluate samples changes with θ (rejection samplers such as Gamma's): then
    # each θ's cost is measured on its own instead of once for all θ of a comparison block.
    work_depends_on_theta: bool = False

    @property
    def label(self) -> str:
        """Human-readable identity, e.g. ``gaussian_exp(k=1, sigma=1) wrt mu``."""
        inner = ", ".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner}) wrt {self.wrt}"

    def example_distribution(self, requires_grad: bool = False) -> Distribution:
        """The distribution at one valid θ (batch shape [1]), to inspect its type and which parameters θ moves."""
        return self.distribution(torch.full((1,), self.valid_theta(), requires_grad=requires_grad))

    def valid_theta(self) -> float:
        """Some θ inside the valid range."""
        low, high = self.theta_range
        if low < 1.0 < high:
            return 1.0
        if math.isfinite(low) and math.isfinite(high):
            return (low + high) / 2
        return low + 1.0 if math.isfinite(low) else high - 1.0

    def check_theta(self, theta: float) -> None:
        """Raise ProblemError unless θ is a finite value inside the problem's valid range."""
        if not isinstance(theta, (int, float)) or not math.isfinite(theta):
            raise ProblemError(f"theta must be a finite number, got {theta!r}")
        low, high = self.theta_range
        if not (low < theta < high):
            raise ProblemError(
                f"theta={theta:g} is outside the valid range ({low:g}, {high:g}) of {self.label}"
                + (f": {self.theta_range_reason}" if self.theta_range_reason else "")
            )


@dataclass(frozen=True)
class ProblemFamily:
    """A named family of problems; ``build(wrt, params)`` returns the concrete Problem."""

    name: str
    summary: str
    wrt_choices: tuple[str, ...]
    defaults: Mapping[str, float] = field(default_factory=dict)
    build: Callable[[str, dict[str, float]], Problem] | None = None

    def allowed_params(self, wrt: str) -> tuple[str, ...]:
        # The parameter θ stands for is not also a fixed parameter.
        return tuple(k for k in self.defaults if k != wrt)


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


PROBLEM_FAMILIES: dict[str, ProblemFamily] = {
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

# Families in their own modules; they import Problem from this one, so they are imported after it is defined.
from .diagonal_gaussian_problems import DIAGONAL_GAUSSIAN_FAMILIES  # noqa: E402
from .implicit_problems import IMPLICIT_FAMILIES  # noqa: E402

PROBLEM_FAMILIES.update(IMPLICIT_FAMILIES)
PROBLEM_FAMILIES.update(DIAGONAL_GAUSSIAN_FAMILIES)


def resolve_parameters(
    owner: str, given: Mapping[str, object], defaults: Mapping[str, float], error: type[ValueError]
) -> dict[str, float]:
    """``defaults`` overridden by ``given``, as finite floats; ``error`` names the value and what is allowed."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise error(f"{owner} has no parameter {', '.join(unknown)}; allowed: {', '.join(defaults) or 'none'}")
    resolved: dict[str, float] = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise error(f"parameter {key} of {owner} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise error(f"parameter {key} of {owner} must be finite, got {value!r}")
        resolved[key] = value
    return resolved


def make_problem(name: str, wrt: str | None = None, params: Mapping[str, float] | None = None) -> Problem:
    """Build the problem ``name`` w.r.t. ``wrt`` (default: the family's first) with ``params`` over defaults.

    A name ``module:attribute`` loads a user's own ``Problem`` (see ``custom_problem``) from an importable module."""
    if ":" in name:
        return _user_problem(name, wrt, params)
    family = PROBLEM_FAMILIES.get(name)
    if family is None:
        raise ProblemError(f"unknown problem {name!r}; allowed: {', '.join(PROBLEM_FAMILIES)}")
    wrt = wrt or family.wrt_choices[0]
    if wrt not in family.wrt_choices:
        raise ProblemError(
            f"problem {name} has no parameter wrt={wrt!r}; allowed: {', '.join(family.wrt_choices)}"
        )
    allowed = family.allowed_params(wrt)
    resolved = resolve_parameters(
        f"problem {name} (wrt {wrt})", dict(params or {}), {k: family.defaults[k] for k in allowed}, ProblemError
    )
    assert family.build is not None
    return family.build(wrt, resolved)


# Discrete-latent families (Bernoulli, categorical) live in their own module; registered here so that
# make_problem and `varbench list` know them.
from .discrete_problems import DISCRETE_FAMILIES  # noqa: E402

PROBLEM_FAMILIES.update(DISCRETE_FAMILIES)



# ---------------------------------------------------------------------------------------------------------
# The user's own problem: `varbench run --problem my_module:my_problem`.


def custom_problem(
    name: str,
    distribution: Callable[[Tensor], Distribution],
    cost: Callable[[Tensor, Tensor], Tensor],
    *,
    gradient: Callable[[float], float] | None = None,
    objective: Callable[[float], float] | None = None,
    wrt: str = "theta",
    theta_range: tuple[float, float] = (-math.inf, math.inf),
    cost_is_differentiable: bool = True,
    summary: str = "",
    work_depends_on_theta: bool = True,
) -> Problem:
    """A ``Problem`` from the three things a user knows: ``distribution(θ)`` (a torch.distributions object whose
    batch shape is θ's), ``cost(x, θ)`` (x has the sample dimensions in front of θ's shape) and, optionally, the
    exact ``gradient(θ)`` (and ``objective(θ)``) as functions of a float. Whether p and f depend on θ is found
    by autograd at a valid θ. ``work_depends_on_theta=False`` declares that drawing and evaluating samples
    costs the same at every θ, so one cost measurement serves all θ of a sweep. Without an exact gradient, each cell's ``true_grad`` is a reference estimate of
    ``REFERENCE_SAMPLES`` samples, with its standard error in ``true_grad_se`` (see bench/measure.py)."""
    if not name or not isinstance(name, str):
        raise ProblemError(f"a problem needs a name, got {name!r}")
    probe = Problem(name=name, wrt=wrt, params={}, summary=summary, distribution=distribution, cost=cost,
                    objective=objective, gradient=gradient, gradient_formula="", distribution_depends_on_theta=True,
                    cost_depends_on_theta=True, cost_is_differentiable=cost_is_differentiable, theta_range=theta_range,
                    work_depends_on_theta=work_depends_on_theta)  # fmt: skip
    p_moves, f_moves = check_user_problem(probe)
    formula = "no closed form given: true_grad is a reference estimate (± true_grad_se)" if gradient is None else (
        "exact gradient supplied by the user")  # fmt: skip
    return dataclasses.replace(
        probe,
        summary=summary or f"user problem {name}",
        gradient_formula=formula,
        distribution_depends_on_theta=p_moves,
        cost_depends_on_theta=f_moves,
    )


# The probe of a user's problem: θ replicated as estimate() replicates it, and N samples (N != M, so that a cost
# that mixes up the two dimensions is caught).
PROBE_REPLICATES = 3
PROBE_SAMPLES = 4


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_user_problem(problem: Problem) -> tuple[bool, bool]:
    """Run a user's problem once at a valid θ, as the estimators will: ``distribution`` on θ of shape [M] must have
    batch shape [M]; ``cost`` on N samples must return one finite floating-point value per sample, shape
    [N, M] (the estimators sum it over both, so a broadcast shape would silently rescale the gradient); an
    exact ``gradient`` or ``objective`` must return a finite number. ProblemError names what is wrong.
    Returns (whether p depends on θ, whether f does), found by autograd. Draws from its own seeded stream."""
    where = f"problem {problem.name}"
    value = problem.valid_theta()
    theta = torch.full((PROBE_REPLICATES,), value, requires_grad=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            dist = problem.distribution(theta)
        except Exception as error:
            raise ProblemError(f"{where}: distribution(θ) failed on θ of shape {_shape(theta.shape)} at θ={value:g} "
                               f"({type(error).__name__}: {error})") from None  # fmt: skip
        if not isinstance(dist, Distribution):
            raise ProblemError(f"{where}: distribution(θ) must return a torch.distributions object, got "
                               f"{type(dist).__name__}")  # fmt: skip
        if dist.batch_shape != theta.shape:
            raise ProblemError(f"{where}: distribution(θ) must have θ's shape as its batch shape, got batch shape "
                               f"{_shape(dist.batch_shape)} for θ of shape {_shape(theta.shape)} (build it "
                               "elementwise from θ, e.g. Normal(θ, torch.ones_like(θ)))")  # fmt: skip
        try:
            x = dist.sample((PROBE_SAMPLES,))
            f = problem.cost(x, theta)
            p_moves = dist.log_prob(x).requires_grad
        except Exception as error:
            raise ProblemError(f"{where}: cost(x, θ) failed on samples x of shape {_shape(x.shape)} and θ of shape "
                               f"{_shape(theta.shape)} ({type(error).__name__}: {error})") from None  # fmt: skip
    wanted = (PROBE_SAMPLES, *theta.shape)
    if not isinstance(f, Tensor):
        raise ProblemError(f"{where}: cost(x, θ) must return a tensor of shape {_shape(wanted)} (one value per "
                           f"sample), got {type(f).__name__}")  # fmt: skip
    if tuple(f.shape) != wanted:
        raise ProblemError(f"{where}: cost(x, θ) must return one value per sample, shape [N, *θ.shape] = "
                           f"{_shape(wanted)} for samples x of shape {_shape(x.shape)}; got shape {_shape(f.shape)}")  # fmt: skip
    if not f.is_floating_point():
        raise ProblemError(f"{where}: cost(x, θ) must return floating-point values, got dtype {f.dtype}")
    if not bool(torch.isfinite(f).all()):
        raise ProblemError(f"{where}: cost(x, θ) returned non-finite values (NaN or ±inf) at θ={value:g}")
    for what, function in (("gradient", problem.gradient), ("objective", problem.objective)):
        if function is None:
            continue
        try:
            result = float(function(value))
        except Exception as error:
            raise ProblemError(f"{where}: {what}(θ) must return a number for a float θ; at θ={value:g} it raised "
                               f"{type(error).__name__}: {error}") from None  # fmt: skip
        if not math.isfinite(result):
            raise ProblemError(f"{where}: {what}(θ) must be finite, got {result!r} at θ={value:g}")
    return p_moves, f.requires_grad


def import_user_module(module_name: str):
    """The module of a user problem, imported as `varbench run` from the folder holding it finds it."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)


def _user_problem(spec: str, wrt: str | None, params: Mapping[str, float] | None) -> Problem:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ProblemError(f"--problem {spec!r}: a user problem is written module:attribute, e.g. my_module:my_problem")
    try:
        module = import_user_module(module_name)
    except ProblemError as error:  # custom_problem refused the module's problem while it was imported
        raise ProblemError(f"--problem {spec}: {error}") from None
    except Exception as error:
        raise ProblemError(f"--problem {spec}: cannot import module {module_name!r} ({type(error).__name__}: {error})") from None
    problem = getattr(module, attribute, None)
    if callable(problem) and not isinstance(problem, Problem):
        problem = problem()
    if not isinstance(problem, Problem):
        raise ProblemError(
            f"--problem {spec}: {module_name}.{attribute} must be a Problem (build it with estimators.custom_problem), "
            f"got {type(problem).__name__}"
        )
    if params:
        raise ProblemError(f"--problem {spec}: a user problem takes no --set parameters, got {', '.join(sorted(params))}")
    if wrt not in (None, problem.wrt):
        raise ProblemError(f"--problem {spec}: the problem is differentiated w.r.t. {problem.wrt}, got --wrt {wrt}")
    check_user_problem(problem)  # also a Problem built without custom_problem
    # Cells are rebuilt from their problem name, so the spec (which imports it) is the name.
    return dataclasses.replace(problem, name=spec)

"""What a problem is: L(θ) = E_{x ~ p_θ}[f_θ(x)], declared once — a torch.distributions builder, a cost, the exact
objective and gradient, the valid range of θ — so that every estimator that applies can use it; a family builds
its problems from parameters; ``custom_problem`` builds a user's, checked as the estimators will call it.

The shipped families live in ``estimators.problems``, which registers them (``PROBLEMS``) and builds them by name
(``make_problem``), validating every parameter before any sampling happens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution

from .registry import call_if_factory

if TYPE_CHECKING:
    from .episodes import EpisodicEnvironment


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
    # A problem whose θ is a parameter vector (a real model's, at a checkpoint of its training): the cell's θ is
    # the training step, and ``workload`` says what the estimators see there. None: θ is a scalar.
    workload: "Workload | None" = None
    # () -> θ of one replicate for inspecting the distribution (its type, which parameters move); None: the
    # scalar valid_theta(). A workload's problem at a checkpoint sets it to its parameters there.
    example_theta: Callable[[], Tensor] | None = None
    # Estimator name -> what the report should say about that estimator on this problem (why it is biased here).
    estimator_notes: Mapping[str, str] = field(default_factory=dict)
    # (θ, estimator name, its options) -> the exact E[ĝ] of that estimator, where this problem can compute it (a
    # biased estimator's mean, so its exact bias); None, or a function returning None: not known.
    exact_mean: Callable[[float, str, Mapping[str, float]], float | None] | None = None
    # The control variate of the delta method for this problem, (θ, dist) -> (h(x), E_θ[h]); None: the generic
    # second-order Taylor expansion of f, where f is a function of one scalar Gaussian sample.
    control_variate: Callable[[Tensor, Distribution], tuple[Callable[[Tensor], Tensor], Tensor]] | None = None
    # An episodic problem (estimators.core.episodes): its samples are episodes of an environment under the policy
    # π_θ, rolled out by ``episodes.rollout(θ, N)``, and the reward is their return; ``cost`` is not defined and
    # ``distribution`` is only the policy at one state. Only estimators declaring ``episodic`` apply. None: x ~ p_θ.
    episodes: "EpisodicEnvironment | None" = None

    @property
    def label(self) -> str:
        """Human-readable identity, e.g. ``gaussian_exp(k=1, sigma=1) wrt mu``."""
        inner = ", ".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner}) wrt {self.wrt}"

    @property
    def n_params(self) -> int:
        """Coordinates of the gradient: 1 for a scalar θ, the parameter vector's size for a workload."""
        return 1 if self.workload is None else self.workload.n_params

    def at(self, theta: float) -> Problem:
        """The problem the estimators see at θ: itself for a scalar θ, a workload's problem at the checkpoint."""
        return self if self.workload is None else self.workload.at(self.workload.check_step(theta))

    def example_distribution(self, requires_grad: bool = False) -> Distribution:
        """The distribution at one valid θ of one replicate, to inspect its type and which parameters θ moves."""
        if self.example_theta is not None:
            return self.distribution(self.example_theta().detach().requires_grad_(requires_grad))
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
        """Raise ProblemError unless θ is a finite value inside the problem's valid range (a workload: one of
        its training steps)."""
        if self.workload is not None:
            self.workload.check_step(theta)
            return
        if not isinstance(theta, (int, float)) or not math.isfinite(theta):
            raise ProblemError(f"theta must be a finite number, got {theta!r}")
        low, high = self.theta_range
        if not (low < theta < high):
            raise ProblemError(
                f"theta={theta:g} is outside the valid range ({low:g}, {high:g}) of {self.label}"
                + (f": {self.theta_range_reason}" if self.theta_range_reason else "")
            )


@dataclass(frozen=True, eq=False)
class Workload:
    """What makes a problem's θ a parameter vector φ [P]: a model's parameters at checkpoints (training steps) of
    a deterministic training run, and the ground truth there. The estimators see, at each step, a problem whose
    ``distribution(θ)`` and ``cost(x, θ)`` take θ = to_theta(φ) (``at``), so every estimator's surrogate runs
    unchanged and autograd carries ∂/∂θ back to φ."""

    n_params: int
    train_steps: int  # valid checkpoints: the integers 0 … train_steps
    checkpoints: tuple[int, ...]  # the default sweep's: initialisation, mid-way, near convergence
    full_checkpoints: tuple[int, ...]  # the full preset's
    at: Callable[[int], Problem]  # step -> the problem the estimators see at that checkpoint
    parameters: Callable[[int], Tensor]  # step -> φ [P], float64 on the CPU
    to_theta: Callable[[Tensor], Tensor]  # φ [..., P] -> the distribution's parameters θ
    # step -> (exact gradient of the objective w.r.t. φ [P], its absolute error bound [P]), float64.
    exact_gradient: Callable[[int], tuple[Tensor, Tensor]]
    objective: Callable[[int], float]  # the objective (ELBO) at the checkpoint
    ground_truth: str  # how the exact gradient is obtained and how large its error is, for the report
    # φ [P] -> gradient of a term of the objective computed exactly (an analytic KL or entropy), added to every
    # estimate: it moves the mean, never the variance. None: no such term.
    exact_term_gradient: Callable[[Tensor], Tensor] | None = None
    # The surrogates sum over data points (a VAE's images); the objective averages them.
    surrogate_scale: float = 1.0
    bytes_per_sample: int = 64 * 1024  # working memory of one sample (a whole data set's activations)
    # (step, draws per data point) -> per coordinate, the exact gradient mass carried by events the cell's draws
    # expect to see fewer than a handful of times (saturated discrete latents); None when there are none.
    unresolved_by_sampling: Callable[[int, int], Tensor] | None = None
    unresolved_reason: str = ""  # what those events are, for the row's note

    def check_step(self, step: float) -> int:
        if not isinstance(step, (int, float)) or not math.isfinite(step) or step != int(step):
            raise ProblemError(f"θ of a workload is a training step, an integer; got {step!r}")
        if not 0 <= step <= self.train_steps:
            raise ProblemError(f"θ of a workload is a training step in [0, {self.train_steps}], got {step:g}")
        return int(step)


@dataclass(frozen=True)
class ProblemFamily:
    """A named family of problems; ``build(wrt, params)`` returns the concrete Problem. ``default_thetas`` and
    ``default_estimators`` are what `varbench run --problem NAME` measures when not told (None: every
    estimator but the peers')."""

    name: str
    summary: str
    wrt_choices: tuple[str, ...]
    defaults: Mapping[str, float] = field(default_factory=dict)
    build: Callable[[str, dict[str, float]], Problem] | None = None
    default_thetas: tuple[float, ...] = (1.0,)
    default_estimators: tuple[str, ...] | None = None

    def allowed_params(self, wrt: str) -> tuple[str, ...]:
        # The parameter θ stands for is not also a fixed parameter.
        return tuple(k for k in self.defaults if k != wrt)



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


def adopt_problem(obj: object, name: str) -> ProblemFamily:
    """A user's problem (a ``Problem``, or a function of no arguments returning one) as a family of one problem named ``name``
    (its ``module:attribute`` spec or entry-point name, so that a cell naming it is rebuilt anywhere)."""
    problem = call_if_factory(obj, name, "problem", ProblemError)
    if isinstance(problem, ProblemFamily):
        return dataclasses.replace(problem, name=name)
    if not isinstance(problem, Problem):
        raise ProblemError(f"problem {name}: must be a Problem (build it with estimators.custom_problem), got "
                           f"{type(problem).__name__}")  # fmt: skip
    check_user_problem(problem)  # also a Problem built without custom_problem
    named = dataclasses.replace(problem, name=name)
    return ProblemFamily(name=name, summary=problem.summary or f"user problem {name}", wrt_choices=(problem.wrt,),
                         build=lambda wrt, params: named)  # fmt: skip

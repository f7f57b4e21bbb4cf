"""What an estimator is: a surrogate with one signature, and what it declares about itself.

Every estimator is ``surrogate(problem, theta, n_samples, **options) -> Tensor``: a per-sample surrogate
[n_samples, *theta.shape] (or one already summed over the samples, [*theta.shape]) whose sum's gradient
w.r.t. ``theta``, divided by n_samples, *is* the estimate. ``theta`` holds one independent copy of θ per
replicate, so one backward pass yields all M replicate estimates at once (``estimators.engine.estimate``).
``options`` are the estimator's own parameters (e.g. a relaxation temperature), declared with defaults in
``Estimator.parameters``. What an estimator can do is declared (``skip_reason``, ``unbiased_for``,
``cost_evaluations``, …), not discovered by trial; ``custom_estimator`` builds a user's with the same fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import Tensor

from .problem import Problem, resolve_parameters
from .registry import call_if_factory

# surrogate(problem, theta, n_samples, **options) -> Tensor[n_samples, *theta.shape] or summed, [*theta.shape]
Surrogate = Callable[..., Tensor]


class EstimatorError(ValueError):
    """An unknown estimator or an invalid estimation request; the message says what is allowed."""


def _always(problem: Problem, n_samples: int) -> str | None:
    return None


def _one_evaluation(problem: Problem) -> int:
    return 1


def _unbiased(problem: Problem) -> bool:
    return True


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
    # Whether the surrogate handles a θ of any shape (a workload's parameters); False for one that needs θ to be
    # a scalar (a finite difference in θ, a peer library's model of one site).
    vector_theta: bool = True
    # Whether the surrogate handles an episodic problem (``problem.episodes``: the samples are episodes of an
    # environment, the reward their return; estimators.core.episodes); a sample-and-cost estimator does not.
    episodic: bool = False

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


def custom_estimator(
    name: str,
    surrogate: Surrogate,
    *,
    unbiased: bool | Callable[[Problem], bool] = True,
    cost_evaluations: int | Callable[[Problem], int] = 1,
    parameters: Mapping[str, float] | None = None,
    parameter_ranges: Mapping[str, ParameterRange] | None = None,
    applies: Callable[[Problem, int], str | None] | None = None,
    coupled_samples: bool = False,
    samples_independent: bool = True,
    work_depends_on_theta: bool = False,
    vector_theta: bool = True,
    parallel_safe: bool = False,
    episodic: bool = False,
    summary: str = "",
) -> Estimator:
    """An ``Estimator`` from a user's surrogate (the shipped estimators' signature, see this module's docstring).

    ``unbiased`` and ``cost_evaluations`` are values or functions of the problem; ``parameters`` the estimator's
    own options with their defaults, ``parameter_ranges`` the values each may take (``ParameterRange``);
    ``applies(problem, n_samples)`` returns why it does not apply there, or None. The flags are the ``Estimator``
    fields of the same meaning: ``coupled_samples`` admits antithetic and QMC sampling (every sample drawn through
    ``problem.distribution(θ)``, each term depending on its own sample only); ``samples_independent`` lets a huge
    N be split across calls; ``work_depends_on_theta`` times each θ on its own; ``vector_theta`` runs it on
    workloads; ``parallel_safe`` lets calls run concurrently; ``episodic`` runs it on episodic problems
    (``problem.episodes``, e.g. cartpole_policy: docs/extending.md). Put it in a module and name it
    ``--estimator module:attribute``; ``varbench check module:attribute`` checks it against the shipped problems."""
    if not name or not isinstance(name, str):
        raise EstimatorError(f"an estimator needs a name, got {name!r}")
    if not callable(surrogate):
        raise EstimatorError(f"estimator {name}: surrogate must be callable, got {type(surrogate).__name__}")
    parameters = dict(parameters or {})
    parameter_ranges = dict(parameter_ranges or {})
    unknown = sorted(set(parameter_ranges) - set(parameters))
    if unknown:
        raise EstimatorError(f"estimator {name}: parameter_ranges names {', '.join(unknown)}, which parameters does "
                             f"not declare (declared: {', '.join(parameters) or 'none'})")  # fmt: skip
    for key, allowed in parameter_ranges.items():
        if not isinstance(allowed, ParameterRange):
            raise EstimatorError(f"estimator {name}: parameter_ranges[{key!r}] must be a ParameterRange, got "
                                 f"{type(allowed).__name__}")  # fmt: skip
        if not allowed.admits(parameters[key]):
            raise EstimatorError(f"estimator {name}: the default {key}={parameters[key]:g} is outside its range, "
                                 f"{allowed.describe()}")  # fmt: skip
    return Estimator(
        name=name,
        surrogate=surrogate,
        summary=summary or f"user estimator {name}",
        skip_reason=applies or _always,
        cost_evaluations=cost_evaluations if callable(cost_evaluations) else (lambda problem: int(cost_evaluations)),
        unbiased_for=unbiased if callable(unbiased) else (lambda problem: bool(unbiased)),
        parameters=parameters,
        parameter_ranges=parameter_ranges,
        samples_independent=bool(samples_independent),
        coupled_samples_reason=None if coupled_samples else Estimator.coupled_samples_reason,
        parallel_safe=bool(parallel_safe),
        work_depends_on_theta=bool(work_depends_on_theta),
        vector_theta=bool(vector_theta),
        episodic=bool(episodic),
    )


def adopt_estimator(obj: object, name: str) -> Estimator:
    """A user's estimator (an ``Estimator``, or a function of no arguments returning one), named ``name``: its
    ``module:attribute`` spec or entry-point name, so that a cell naming it is rebuilt in any process."""
    import dataclasses  # noqa: PLC0415 - only for this rename

    estimator = call_if_factory(obj, name, "estimator", EstimatorError)
    if not isinstance(estimator, Estimator):
        hint = (" (a surrogate function? wrap it: estimators.custom_estimator(name, surrogate))"
                if callable(estimator) else "")  # fmt: skip
        raise EstimatorError(f"estimator {name}: must be an Estimator (build it with estimators.custom_estimator), "
                             f"got {type(estimator).__name__}{hint}")  # fmt: skip
    return dataclasses.replace(estimator, name=name)


@dataclass(frozen=True)
class Method:
    """The identity of an estimator variant in a sweep: the estimator, its resolved parameters (sorted by name)
    and the variance-reduction scheme composed with it."""

    estimator: str
    params: tuple[tuple[str, float], ...] = ()
    scheme: str = "none"

    @property
    def label(self) -> str:
        """Display name, e.g. ``gumbel_softmax[temperature=0.5]+antithetic``."""
        label = self.estimator
        if self.params:
            label += "[" + ", ".join(f"{k}={v:g}" for k, v in sorted(self.params)) + "]"
        if self.scheme != "none":
            label += f"+{self.scheme}"
        return label


def describe(estimator: str, options: Mapping[str, float] | None = None, variance_reduction: str = "none") -> str:
    """Display name of an estimator variant, e.g. ``gumbel_softmax[temperature=0.5]+antithetic``."""
    return Method(estimator, tuple(sorted((options or {}).items())), variance_reduction).label

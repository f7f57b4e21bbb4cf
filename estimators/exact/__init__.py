"""Exact mean and variance of one N-sample estimate, for a cell (problem, estimator variant, θ, N), or a one-line
reason why not: by quadrature over the estimator's own noise, enumeration of discrete outcomes, or closed
forms (Mohamed et al. 2020 computed estimator variances exactly by numerical integration).

Exact functions are registered per (estimator name, problem family name) with ``register_exact``, the door a
user's estimator goes through too. Independent-sample moments are cached per (problem, method, θ); N enters
only at the end (Var_N = per-sample variance / N, or RLOO's U-statistic formula). Derivations: docs/math.md.
"""

from __future__ import annotations

import math

from ..core.estimator import Method
from ..core.problem import Problem, ProblemError
from ..methods import ESTIMATORS
from ..variance_reduction import compose
from . import arms, diagonal, discrete, gaussian, gumbel_rao, implicit, indecater, policy, reinmax, seed  # noqa: F401 - they register their exact functions
from .registry import Exact, exact_function, register_exact, registered_pairs


def applicability_reason(problem: Problem, method: Method, theta: float, n_samples: int) -> str | None:
    """Why (problem, method, θ, N) is not a cell the estimator runs at all, or None."""
    try:
        problem.check_theta(theta)
        estimator = ESTIMATORS.get(method.estimator)
        options = estimator.resolve_options(dict(method.params))
    except (ProblemError, ValueError) as error:
        return str(error)
    composed = compose(method.scheme, estimator, problem, n_samples)
    if isinstance(composed, str):
        return composed
    if estimator.point_error is not None:
        return estimator.point_error(problem, theta, options)
    return None


def exact_moments(problem: Problem, method: Method, theta: float, n_samples: int) -> Exact | str:
    """Exact mean and variance, or a one-line reason it is not available (e.g. 'RELAX trains its control variate')."""
    if problem.workload is not None:
        return "θ is a training step of a workload: its estimators' variance has no exact form here"
    function = exact_function(method.estimator, problem.name)
    if function is None:
        return f"no exact moments are registered for {method.estimator} on {problem.name}"
    reason = applicability_reason(problem, method, theta, n_samples)
    if reason is not None:
        return reason
    infinite = problem.infinite_variance(theta)
    if infinite:
        return infinite
    result = function(problem, method, theta, n_samples)
    if isinstance(result, Exact) and not (math.isfinite(result.mean) and math.isfinite(result.var)):
        return f"the exact moments are not finite here (mean {result.mean:g}, variance {result.var:g})"
    if isinstance(result, Exact) and result.var < 0:  # a numerical failure must not pass for a value
        return f"the exact computation failed here (variance {result.var:.3g} < 0)"
    return result


__all__ = ["Exact", "exact_moments", "register_exact", "registered_pairs"]

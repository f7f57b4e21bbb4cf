"""varbench's math: problems with exact gradients and the Monte Carlo gradient estimators, no I/O, no sweeps,
no timing (those live in ``bench``).

- ``estimators.core``: the base types (``Problem``, ``Estimator``, ``Registry``) and what every estimator shares.
- ``estimators.problems``, ``estimators.methods``, ``estimators.variance_reduction``, ``estimators.workloads``:
  the shipped implementations, each package registering its own in one ``Registry``.
- ``estimators.engine.estimate``: M replicate estimates in vectorised calls.

A user's problem or estimator goes through the same registries: ``custom_problem`` / ``custom_estimator`` in a
module named ``module:attribute``, or an installed plug-in's entry point.
"""

from .core.estimator import Estimator, EstimatorError, Method, ParameterRange, custom_estimator, describe
from .core.problem import Problem, ProblemError, ProblemFamily, custom_problem
from .core.registry import Registry
from .engine import estimate
from .methods import ESTIMATORS, PEER_STATUS, get_estimator
from .problems import PROBLEMS, make_problem
from .variance_reduction import VARIANCE_REDUCTIONS, VarianceReduction, VarianceReductionError, get_variance_reduction

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "EstimatorError",
    "Method",
    "PEER_STATUS",
    "ParameterRange",
    "PROBLEMS",
    "Problem",
    "ProblemError",
    "ProblemFamily",
    "Registry",
    "VARIANCE_REDUCTIONS",
    "VarianceReduction",
    "VarianceReductionError",
    "custom_estimator",
    "custom_problem",
    "describe",
    "estimate",
    "get_estimator",
    "get_variance_reduction",
    "make_problem",
]

"""varbench's math: benchmark problems with exact gradients, and Monte Carlo gradient estimators.

No I/O, no sweeps, no timing: those live in ``bench``.
"""

from .gradient_estimators import ESTIMATORS, Estimator, EstimatorError, estimate, get_estimator
from .problems import PROBLEM_FAMILIES, Problem, ProblemError, ProblemFamily, make_problem

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "EstimatorError",
    "PROBLEM_FAMILIES",
    "Problem",
    "ProblemError",
    "ProblemFamily",
    "estimate",
    "get_estimator",
    "make_problem",
]

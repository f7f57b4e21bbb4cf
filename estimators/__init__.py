"""varbench's math: benchmark problems with exact gradients, and Monte Carlo gradient estimators.

No I/O, no sweeps, no timing: those live in ``bench``.
"""

from .gradient_estimators import ESTIMATORS, Estimator, EstimatorError, describe, estimate, get_estimator
from .peers import PEER_ESTIMATORS, PEER_STATUS
from .problems import PROBLEM_FAMILIES, Problem, ProblemError, ProblemFamily, custom_problem, make_problem
from .variance_reduction import (
    VARIANCE_REDUCTIONS,
    VarianceReduction,
    VarianceReductionError,
    get_variance_reduction,
)

# Peer libraries' estimators (pip install -e '.[peers]') join the registry when they import; PEER_STATUS says why not.
ESTIMATORS.update(PEER_ESTIMATORS)

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "EstimatorError",
    "PEER_ESTIMATORS",
    "PEER_STATUS",
    "PROBLEM_FAMILIES",
    "Problem",
    "ProblemError",
    "ProblemFamily",
    "VARIANCE_REDUCTIONS",
    "VarianceReduction",
    "VarianceReductionError",
    "custom_problem",
    "describe",
    "estimate",
    "get_estimator",
    "get_variance_reduction",
    "make_problem",
]

"""Variance reduction as a separate axis that composes with any estimator that admits it: the shipped schemes in
``VARIANCE_REDUCTIONS`` (``schemes.py`` defines them) and ``compose``, which turns (scheme, estimator, problem,
N) into the surrogate to run or the reason the combination does not apply."""

from __future__ import annotations

from typing import Union

from ..core.estimator import Estimator, Surrogate
from ..core.problem import Problem
from ..core.registry import Registry
from .schemes import SCHEMES, VarianceReduction


class VarianceReductionError(ValueError):
    """An unknown variance-reduction scheme; the message says which are allowed."""


VARIANCE_REDUCTIONS: Registry[VarianceReduction] = Registry("variance reduction", VarianceReductionError)
for _scheme in SCHEMES:
    VARIANCE_REDUCTIONS.register(_scheme.name, _scheme, _scheme.kind)


def get_variance_reduction(name: str) -> VarianceReduction:
    return VARIANCE_REDUCTIONS.get(name)


def compose(name: str, estimator: Estimator, problem: Problem, n_samples: int) -> Union[Surrogate, str]:
    """The surrogate of ``estimator`` under scheme ``name`` on (problem, N), or why that combination does not apply."""
    scheme = get_variance_reduction(name)
    if problem.episodes is not None and not estimator.episodic:
        return (f"the samples of {problem.name} are episodes of an environment, not draws x ~ p_θ with a cost f(x), "
                f"and {estimator.name} does not declare that it applies to episodic problems")  # fmt: skip
    if problem.episodes is not None and name != "none":
        return (f"{name} acts on draws x ~ p_θ and a cost f(x), and the samples of {problem.name} are episodes of an "
                "environment")  # fmt: skip
    if problem.workload is not None and not estimator.vector_theta:
        return f"θ is a parameter vector here, and {estimator.name} needs a scalar θ"
    if name != "none":
        reason = estimator.skip_reason(problem, n_samples)
        if reason is not None:
            return reason
    return scheme.compose(estimator, problem, n_samples)


__all__ = ["VARIANCE_REDUCTIONS", "VarianceReduction", "VarianceReductionError", "compose", "get_variance_reduction"]

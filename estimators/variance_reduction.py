"""Variance reduction as a separate axis that composes with any estimator that admits it.

A scheme turns (estimator, problem, N) into the surrogate to run, or into the reason it does not apply. Schemes
that change how samples are drawn (antithetic pairs, randomised quasi-Monte Carlo) wrap the problem's
distribution and leave the estimator untouched; schemes that change the estimator's formula (a control
variate) supply their own surrogate for the estimators they know. ``none`` is the estimator as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from .problems import Problem

if TYPE_CHECKING:  # the estimators module imports this one
    from .gradient_estimators import Estimator, Surrogate


@dataclass(frozen=True)
class VarianceReduction:
    name: str
    summary: str
    # (estimator, problem, N) -> the surrogate to run, or a string saying why the scheme does not apply.
    compose: Callable[["Estimator", Problem, int], Union["Surrogate", str]]


def _plain(estimator: "Estimator", problem: Problem, n_samples: int) -> Union["Surrogate", str]:
    reason = estimator.skip_reason(problem, n_samples)
    return estimator.surrogate if reason is None else reason


VARIANCE_REDUCTIONS: dict[str, VarianceReduction] = {
    scheme.name: scheme
    for scheme in (VarianceReduction("none", "plain Monte Carlo: the estimator as it is", _plain),)
}


class VarianceReductionError(ValueError):
    """An unknown variance-reduction scheme; the message says which are allowed."""


def get_variance_reduction(name: str) -> VarianceReduction:
    try:
        return VARIANCE_REDUCTIONS[name]
    except KeyError:
        raise VarianceReductionError(
            f"unknown variance reduction {name!r}; allowed: {', '.join(VARIANCE_REDUCTIONS)}"
        ) from None


def compose(name: str, estimator: "Estimator", problem: Problem, n_samples: int) -> Union["Surrogate", str]:
    """The surrogate of ``estimator`` under scheme ``name`` on (problem, N), or why that combination does not apply."""
    scheme = get_variance_reduction(name)
    if name != "none":
        reason = estimator.skip_reason(problem, n_samples)
        if reason is not None:
            return reason
    return scheme.compose(estimator, problem, n_samples)

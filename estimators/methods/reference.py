"""Reference estimators: simple, biased baselines that the unbiased estimators should beat.

``finite_difference`` is the central difference of the cost under common random numbers (CRN): the same
ε drives the sample at θ + h and at θ − h, so the difference keeps little more noise than a pathwise
derivative. Its expectation is the central difference of L, (L(θ+h) − L(θ−h)) / 2h = L′(θ) + L‴(θ) h²/6 + O(h⁴):
biased by O(h²), exact only when L is at most quadratic in θ.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..core.distributions import diagonal_gaussian
from ..core.estimator import Estimator, EstimatorError, ParameterRange
from ..core.problem import Problem

DEFAULT_STEP = 0.1


def _outside_range(problem: Problem, theta: float, options: Mapping[str, float]) -> str | None:
    """Why θ ± step leaves the problem's valid range, or None."""
    step = options["step"]
    low, high = problem.theta_range
    if low < theta - step and theta + step < high:
        return None
    return (f"finite_difference needs θ ± step inside the valid range ({low:g}, {high:g}) of {problem.label}, "
            f"got θ={theta:g} with step={step:g}; choose a smaller step (--estimator-param step=…) or another θ")


def finite_difference(problem: Problem, theta: Tensor, n_samples: int, step: float = DEFAULT_STEP) -> Tensor:
    """ĝ = (f_{θ+h}(m_{θ+h} + s_{θ+h} ε) − f_{θ−h}(m_{θ−h} + s_{θ−h} ε)) / 2h, one ε ~ N(0, I) for both sides."""
    if not step > 0:
        raise EstimatorError(f"step (h) of finite_difference must be > 0, got {step:g}")
    centre = theta.detach()
    for end in {float(centre.min()), float(centre.max())}:
        reason = _outside_range(problem, end, {"step": step})
        if reason:
            raise EstimatorError(reason)
    plus, minus = centre + step, centre - step
    loc_plus, scale_plus = diagonal_gaussian(problem.distribution(plus))
    loc_minus, scale_minus = diagonal_gaussian(problem.distribution(minus))
    # Common random numbers: the same standard normal ε on both sides of the difference.
    epsilon = torch.randn((n_samples, *loc_plus.shape), dtype=theta.dtype, device=theta.device)
    difference = problem.cost(loc_plus + scale_plus * epsilon, plus) - problem.cost(loc_minus + scale_minus * epsilon, minus)
    # The estimate is a number, not a derivative of a graph: make it the gradient of a surrogate linear in θ.
    return difference / (2 * step) * theta


def _needs_location_scale(problem: Problem, n_samples: int) -> str | None:
    probe = problem.example_distribution()
    if diagonal_gaussian(probe) is None:
        return (
            "common random numbers need a location–scale sampler x = m_θ + s_θ ε (a Gaussian), so that the draws at "
            f"θ ± h share ε; {type(probe).__name__} has none"
        )
    return None


def _two_evaluations(problem: Problem) -> int:
    return 2


def _biased_reference(problem: Problem) -> bool:
    # O(h²) bias in general; exactly unbiased only when L is at most quadratic in θ, which the measurement shows.
    return False


REFERENCE_ESTIMATORS: dict[str, Estimator] = {
    "finite_difference": Estimator(
        "finite_difference",
        finite_difference,
        "central difference (f(x_θ+h) − f(x_θ−h)) / 2h with common random numbers; biased O(h²), Gaussians only",
        skip_reason=_needs_location_scale,
        cost_evaluations=_two_evaluations,
        unbiased_for=_biased_reference,
        parameters={"step": DEFAULT_STEP},
        vector_theta=False,
        parameter_ranges={"step": ParameterRange("the finite difference's step h", low=0.0)},
        point_error=_outside_range,
    ),
}

"""``varbench exact``: exact variance curves over a fine grid of θ or of a problem parameter, with no sampling.

The default is the layout of Mohamed et al. (2020), Figure 2: the per-sample variance of the score function,
pathwise and measure-valued estimators of ∂/∂μ and ∂/∂σ of E_{N(μ, σ²)}[f(x; k)] at μ = σ = 1, against k, for
the three Gaussian test costs f = (x − k)², exp(−k x²) and cos(k x). Any (problem, estimator) with an exact value
(``estimators.exact``) can be drawn: ``--problem``, ``--wrt``, ``--over NAME=LOW:HIGH:STEPS``, ``--estimator``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import torch

from estimators import PROBLEMS, Method, ProblemError, get_estimator, make_problem
from estimators.exact import Exact, exact_moments

from . import environment

FIGURE2_PROBLEMS = ("gaussian_quadratic", "gaussian_exp", "gaussian_cos")
FIGURE2_ESTIMATORS = ("score_function", "pathwise", "measure_valued")
EXACT_FILES = ("exact.csv", "exact.png")
MAX_STEPS = 100_000


class ExactCurveError(ValueError):
    """An invalid `varbench exact` request; the message names the value and what is allowed."""


@dataclass(frozen=True)
class Axis:
    """The swept quantity: ``theta`` or a problem parameter, from ``low`` to ``high`` in ``steps`` points."""

    name: str
    low: float
    high: float
    steps: int

    def values(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.steps)


def parse_axis(text: str) -> Axis:
    """``NAME=LOW:HIGH:STEPS``, e.g. ``k=-5:5:200`` or ``theta=0.5:3:100``."""
    name, sep, spec = text.partition("=")
    parts = spec.split(":")
    if not sep or not name or len(parts) != 3:
        raise ExactCurveError(f"--over {text!r}: expected NAME=LOW:HIGH:STEPS, e.g. k=-5:5:200")
    try:
        low, high, steps = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ExactCurveError(f"--over {text!r}: LOW and HIGH must be numbers and STEPS a whole number") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ExactCurveError(f"--over {text!r}: need finite LOW < HIGH, got {low:g} and {high:g}")
    if not 2 <= steps <= MAX_STEPS:
        raise ExactCurveError(f"--over {text!r}: STEPS must be in [2, {MAX_STEPS}], got {steps}")
    return Axis(name, low, high, steps)


@dataclass(frozen=True)
class CurveRequest:
    problems: tuple[str, ...] = FIGURE2_PROBLEMS
    wrts: tuple[str, ...] | None = ("mu", "sigma")  # None: each problem's first
    axis: Axis = Axis("k", -5.0, 5.0, 200)
    estimators: tuple[str, ...] = FIGURE2_ESTIMATORS
    params: tuple[tuple[str, float], ...] = ()
    theta: float | None = None  # None: the family's default value of the parameter θ stands for
    n_samples: int = 1


def validate(request: CurveRequest) -> None:
    """Every name and value checked before anything is computed or written; ExactCurveError otherwise."""
    if request.n_samples < 1:
        raise ExactCurveError(f"--n must be >= 1, got {request.n_samples}")
    for name in request.estimators:
        get_estimator(name)
    for problem in request.problems:
        family = PROBLEMS.get(problem)
        for wrt in request.wrts or (family.wrt_choices[0],):
            if wrt not in family.wrt_choices:
                raise ExactCurveError(f"problem {problem} has no wrt={wrt!r}; allowed: {', '.join(family.wrt_choices)}")
            allowed = family.allowed_params(wrt)
            if request.axis.name != "theta" and request.axis.name not in allowed:
                raise ExactCurveError(f"--over {request.axis.name}: problem {problem} (wrt {wrt}) has no parameter "
                                      f"{request.axis.name}; allowed: theta, {', '.join(allowed)}")  # fmt: skip
            make_problem(problem, wrt, dict(request.params))  # the fixed parameters, checked by the family


def curves(request: CurveRequest) -> pd.DataFrame:
    """One row per (problem, wrt, estimator, x): the exact mean and variance of an N-sample estimate, or why not."""
    validate(request)
    rows = []
    for problem_name in request.problems:
        family = PROBLEMS.get(problem_name)
        for wrt in request.wrts or (family.wrt_choices[0],):
            for x in request.axis.values():
                params = dict(request.params)
                theta = request.theta if request.theta is not None else family.defaults.get(wrt, 1.0)
                if request.axis.name == "theta":
                    theta = float(x)
                else:
                    params[request.axis.name] = float(x)
                try:
                    problem = make_problem(problem_name, wrt, params)
                except ProblemError as error:
                    results = {name: str(error) for name in request.estimators}
                else:
                    results = {name: exact_moments(problem, _method(name), theta, request.n_samples)
                               for name in request.estimators}  # fmt: skip
                for name, result in results.items():
                    exact = isinstance(result, Exact)
                    rows.append(dict(problem=problem_name, wrt=wrt, problem_params=json.dumps(params, sort_keys=True),
                                     over=request.axis.name, x=float(x), theta=theta, estimator=name,
                                     n_samples=request.n_samples, exact_mean=result.mean if exact else math.nan,
                                     exact_var=result.var if exact else math.nan,
                                     per_sample_var=result.var * request.n_samples if exact else math.nan,
                                     note="" if exact else result))  # fmt: skip
    frame = pd.DataFrame(rows)
    # No sampling, so no seed or device: the code and the libraries that computed the numbers reproduce them.
    frame["git_sha"], frame["code_hash"] = environment.git_sha(), environment.code_fingerprint()
    frame["torch_version"], frame["numpy_version"], frame["scipy_version"] = torch.__version__, np.__version__, scipy.__version__
    return frame


def _method(name: str) -> Method:
    estimator = get_estimator(name)
    return Method(name, tuple(sorted(estimator.resolve_options({}).items())))

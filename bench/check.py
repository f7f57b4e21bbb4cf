"""``varbench check ESTIMATOR``: the conformance check a user runs on an estimator before publishing numbers from it
(as ``benchopt test`` checks a solver, or scikit-learn's ``check_estimator`` a model).

On one example point of every shipped problem family (``example_points``), for every point the estimator applies
to, it checks:

- **shape**: the surrogate returns [N, *θ.shape] or [*θ.shape], floating-point (``engine.check_surrogate``);
- **deterministic**: the same seed gives the same estimates, bit for bit;
- **finite**: every estimate is finite (a NaN or an overflow is a bug, or a problem the estimator should skip);
- **unbiased**, where the estimator declares itself unbiased on the problem: |mean − exact| within the z bound
  of its standard error (plus the dtype's rounding resolution), Bonferroni-corrected over the points checked at
  family-wise α = 0.001, so a correct estimator fails with probability below 0.1%. Points whose estimates have
  an infinite variance there are not tested for bias (a z-test needs a variance).

The estimates are float64, so rounding does not hide or fake a bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from estimators import PROBLEMS, Estimator, EstimatorError, Problem, estimate, get_estimator, make_problem
from estimators.variance_reduction import compose

from .statistics import BIAS_ALPHA, rounding_resolution, summarize_vector

CHECK_SAMPLES = 10
CHECK_REPLICATES = 4000
WORKLOAD_REPLICATES = 400  # a workload's estimate is a whole gradient vector over a data set


@dataclass(frozen=True)
class CheckPoint:
    problem: Problem
    theta: float

    @property
    def label(self) -> str:
        return f"{self.problem.label} θ={self.theta:g}"


def example_points() -> list[CheckPoint]:
    """One point per shipped problem family and parameter it can be taken w.r.t.: the family's default parameters
    at a valid θ (a workload: at its middle default checkpoint, the problem the estimators see there)."""
    points = []
    for name in PROBLEMS.names(exclude=("user", "plugin")):  # every shipped family, whatever its tag
        family = PROBLEMS.get(name)
        for wrt in family.wrt_choices:
            problem = make_problem(name, wrt)
            if problem.workload is None:
                points.append(CheckPoint(problem, problem.valid_theta()))
            else:
                step = problem.workload.checkpoints[len(problem.workload.checkpoints) // 2]
                points.append(CheckPoint(problem.at(step), float(step)))
    return points


@dataclass(frozen=True)
class CheckRow:
    point: str
    applies: str  # "yes", or why not
    shape: str = ""
    deterministic: str = ""
    finite: str = ""
    unbiased: str = ""

    @property
    def failed(self) -> bool:
        return any(value.startswith("FAIL") for value in (self.shape, self.deterministic, self.finite, self.unbiased))


def check_estimator(name: str, *, seed: int = 0, n_samples: int = CHECK_SAMPLES,
                    replicates: int = CHECK_REPLICATES) -> list[CheckRow]:  # fmt: skip
    """The check's table for estimator ``name`` (shipped, a plug-in, or ``module:attribute``)."""
    estimator = get_estimator(name)
    points = example_points()
    applicable = [p for p in points if skip_reason(estimator, p.problem, n_samples) is None]
    tested_for_bias = [p for p in applicable if tests_bias(estimator, p)]
    critical = float(stats.norm.isf(BIAS_ALPHA / 2 / max(len(tested_for_bias), 1)))
    rows = []
    for point in points:
        reason = skip_reason(estimator, point.problem, n_samples)
        if reason is not None:
            rows.append(CheckRow(point.label, f"no: {reason}"))
            continue
        rows.append(check_point(estimator, point, seed, n_samples, replicates, critical, point in tested_for_bias))
    return rows


def skip_reason(estimator: Estimator, problem: Problem, n_samples: int) -> str | None:
    """Why the estimator does not run on ``problem`` at N, as a sweep decides it (``compose`` with no scheme: the
    estimator's own reason, or a scalar-θ estimator on a workload), or None where it runs."""
    reason = compose("none", estimator, problem, n_samples)
    return reason if isinstance(reason, str) else None


def tests_bias(estimator: Estimator, point: CheckPoint) -> bool:
    has_truth = point.problem.gradient is not None or point.problem.workload is not None
    return (bool(estimator.unbiased_for(point.problem)) and has_truth
            and not point.problem.infinite_variance(point.theta))  # fmt: skip


def check_point(estimator: Estimator, point: CheckPoint, seed: int, n: int, m: int, critical: float,
                 test_bias: bool) -> CheckRow:  # fmt: skip
    def draw(replicates: int) -> np.ndarray:
        torch.manual_seed(seed)
        return estimate(estimator, point.problem, point.theta, n, replicates, dtype=torch.float64).numpy()

    try:
        small = draw(5)
    except EstimatorError as error:
        return CheckRow(point.label, "yes", shape=f"FAIL: {error}")
    except Exception as error:  # noqa: BLE001 - a user's surrogate may raise anything; the check reports it
        return CheckRow(point.label, "yes", shape=f"FAIL: raised {type(error).__name__}: {error}")
    shape = "ok"
    same = draw(5)
    deterministic = "ok" if np.array_equal(small, same, equal_nan=True) else (
        f"FAIL: two runs with seed {seed} differ (max |Δ| = {np.nanmax(np.abs(small - same)):.3g})")  # fmt: skip
    workload = point.problem.workload
    if workload is not None:
        m = WORKLOAD_REPLICATES
    estimates = draw(m)
    finite_count = int(np.isfinite(estimates).all(axis=tuple(range(1, estimates.ndim))).sum())
    finite = "ok" if finite_count == m else f"FAIL: {m - finite_count} of {m} estimates are NaN or ±inf"
    if not test_bias:
        why = ("not declared unbiased here" if not estimator.unbiased_for(point.problem) else
               "no exact gradient" if point.problem.gradient is None else "infinite variance here: no z-test")  # fmt: skip
        return CheckRow(point.label, "yes", shape, deterministic, finite, f"— ({why})")
    if finite_count < m:
        return CheckRow(point.label, "yes", shape, deterministic, finite, "— (non-finite estimates)")
    if workload is not None:
        return CheckRow(point.label, "yes", shape, deterministic, finite, _vector_bias(point, estimates, n, critical))
    exact = float(point.problem.gradient(point.theta))
    mean, sd = float(estimates.mean()), float(estimates.std(ddof=1))
    objective = point.problem.objective(point.theta) if point.problem.objective is not None else None
    scale = math.hypot(sd / math.sqrt(m), rounding_resolution(exact, mean, sd, float(np.finfo(np.float64).eps), objective))
    z = (mean - exact) / scale if scale > 0 else (0.0 if mean == exact else math.inf)
    verdict = "ok" if abs(z) <= critical else "FAIL"
    return CheckRow(point.label, "yes", shape, deterministic, finite,
                    f"{verdict}: mean {mean:.5g} vs exact {exact:.5g}, z = {z:.2f} (|z| ≤ {critical:.2f})")  # fmt: skip


def _vector_bias(point: CheckPoint, estimates: np.ndarray, n: int, critical: float) -> str:
    """The verdict on a workload's gradient vector: its worst coordinate's z, Bonferroni over the coordinates and
    over the points checked (``summarize_vector``, with the ground truth's error and the rare-event bound)."""
    workload = point.problem.workload
    step = int(point.theta)
    truth, error = workload.exact_gradient(step)
    unresolved = None
    if workload.unresolved_by_sampling is not None:
        unresolved = workload.unresolved_by_sampling(step, n * len(estimates)).numpy()
    summary = summarize_vector(estimates, truth.numpy(), error.numpy(), eps=float(np.finfo(np.float64).eps),
                               unresolved=unresolved).summary  # fmt: skip
    # critical is Bonferroni over the points; the vector's own p-value already is over its coordinates.
    ok = summary.bias_p_value >= 2 * stats.norm.sf(critical)
    return (f"{'ok' if ok else 'FAIL'}: worst coordinate z = {summary.bias_z:.2f} over {len(truth)} coordinates, "
            f"Bonferroni p = {summary.bias_p_value:.2g}")  # fmt: skip


def render(name: str, rows: list[CheckRow]) -> str:
    """The check as a Markdown table with a closing verdict line."""
    lines = [f"varbench check {name}: {CHECK_REPLICATES} estimates of N = {CHECK_SAMPLES} samples per point, float64",
             "", "| problem and θ | applies | shape | deterministic | finite | unbiased |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r.point} | {r.applies} | {r.shape} | {r.deterministic} | {r.finite} | {r.unbiased} |" for r in rows]
    applied = [r for r in rows if r.applies == "yes"]
    failed = [r for r in applied if r.failed]
    if not applied:
        verdict = f"FAILED: {name} applies to none of the {len(rows)} shipped example points"
    elif failed:
        verdict = f"FAILED at {len(failed)} of {len(applied)} points: " + "; ".join(r.point for r in failed)
    else:
        verdict = f"passed at all {len(applied)} points it applies to"
    return "\n".join([*lines, "", verdict])


def passed(rows: list[CheckRow]) -> bool:
    applied = [r for r in rows if r.applies == "yes"]
    return bool(applied) and not any(r.failed for r in applied)

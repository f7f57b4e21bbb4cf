"""Measure cells: replicate estimates -> bias and variance statistics per cell, and the cost of every
variant of a comparison block measured together (bench/cost.py).

A comparison block is the cells that differ only in estimator variant and θ: the same (problem, parameters,
wrt, N, device, dtype). Their statistics are measured one cell at a time; their cost once for the block, every
variant timed beside the others and beside the device's RNG floor, and shared across θ where neither the problem
nor the estimator declares that its work depends on θ.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from estimators import estimate, get_estimator
from estimators.exact import Exact, exact_moments
from estimators.variance_reduction import compose
from estimators.core.random_streams import one_intra_op_thread

from . import cell_progress, cost, environment
from .grid import DTYPES, Cell
from .statistics import (
    ROUNDING_ULPS,
    TARGET_VARIANCE_REL_SE,
    Z95,
    EstimateSummary,
    kurtosis,
    replicates_for_relative_se,
    summarize,
    summarize_vector,
    variance_interval_caveat,
)
from .table import COLUMNS

AUTO_MIN_REPLICATES = 800  # Gaussian estimates: 5% relative s.e. of the variance needs M ≈ 800
# A quarter of the smallest M the rule chooses, so the pilot never costs more than a quarter of the measurement.
PILOT_REPLICATES = AUTO_MIN_REPLICATES // 4
AUTO_MAX_REPLICATES = 20_000
MAX_SAMPLES_PER_CELL = 1 << 24  # caps M·N for auto replicates; the achieved precision is in grad_var_rel_se
# A workload's sample holds a whole data set's activations (569 patients, 100 images): 10³-10⁵ times a toy
# problem's, so --replicates auto starts from 200 estimates.
WORKLOAD_REPLICATES = 200
WORKLOAD_MAX_REPLICATES = 2000


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_row(cell: Cell, base_seed: int, started_at: str) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        cell_id=cell.cell_id,
        note="",
        problem=cell.problem,
        problem_params=cell.params_json,
        wrt=cell.wrt,
        theta=float(cell.theta),
        estimator=cell.estimator,
        estimator_params=cell.estimator_params_json,
        variance_reduction=cell.variance_reduction,
        method=cell.method,
        device=cell.device,
        device_name=environment.device_name(cell.device),
        dtype=cell.dtype,
        n_samples=cell.n_samples,
        replicates_rule="auto" if cell.replicates is None else "fixed",
        n_replicates=cell.replicates,  # the requested M; auto cells fill in the M their pilot chose
        seed=cell.seed(base_seed),
        base_seed=base_seed,
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
        git_sha=environment.git_sha(),
        hostname=socket.gethostname(),
        started_at=started_at,
        code_hash=environment.code_fingerprint(),
        user_code_hash=environment.user_code_fingerprint(cell.problem, cell.estimator),
    )
    return row


def pilot_replicates(n_samples: int) -> int:
    """Estimates in an auto-sized cell's pilot: PILOT_REPLICATES, or none where the M·N cap alone fixes M
    (N > 2^24 / 800: M = max(2^24 // N, 100) whatever the kurtosis)."""
    return PILOT_REPLICATES if MAX_SAMPLES_PER_CELL // n_samples > AUTO_MIN_REPLICATES else 0


def choose_replicates(pilot: np.ndarray, n_samples: int) -> int:
    """M for a 5% relative s.e. of the variance given the pilot's kurtosis, within [800, 20000] and M·N <= 2^24.

    The kurtosis is read pessimistically, at the upper end of its 68% percentile-bootstrap interval (one standard
    deviation up): the sample kurtosis of a 200-estimate pilot underestimates heavy tails, and taken at face value
    it left heavy-tailed score-function cells at 7-9% relative s.e. (docs/performance.md)."""
    wanted = replicates_for_relative_se(pessimistic_kurtosis(pilot[np.isfinite(pilot)]))
    wanted = min(max(wanted, AUTO_MIN_REPLICATES), AUTO_MAX_REPLICATES)
    return max(min(wanted, MAX_SAMPLES_PER_CELL // n_samples), 100)


def pessimistic_kurtosis(x: np.ndarray) -> float:
    """The larger of the sample kurtosis and the upper end of its 68% percentile-bootstrap interval."""
    point = kurtosis(x)
    if not math.isfinite(point):
        return point
    result = stats.bootstrap((x,), lambda v, axis: stats.kurtosis(v, axis=axis, fisher=False, bias=True),
                             confidence_level=0.68, n_resamples=199, method="percentile", vectorized=True,
                             random_state=np.random.default_rng(0))  # fmt: skip
    high = float(result.confidence_interval.high)
    return max(point, high) if math.isfinite(high) else point


def summary_columns(summary: EstimateSummary, n_samples: int) -> dict:
    """The table columns an EstimateSummary fills (scalar and workload rows alike), with status ok."""
    return dict(
        status="ok",
        grad_mean=summary.mean,
        bias=summary.bias,
        bias_se=summary.bias_se,
        bias_z=summary.bias_z,
        bias_p_value=summary.bias_p_value,
        biased=summary.biased,
        variance_infinite=False,
        grad_var=summary.var,
        grad_var_ci_low=summary.var_ci_low,
        grad_var_ci_high=summary.var_ci_high,
        grad_var_rel_se=summary.var_rel_se,
        kurtosis=summary.kurtosis,
        per_sample_var=summary.var * n_samples,
        mse=summary.mse,
    )


def without_variance(row: dict, reason: str) -> None:
    """Mark a row whose estimates have an infinite variance: its sample variance is a number, but no interval,
    z-test or rank can rest on it."""
    row.update(variance_infinite=True, biased=None, bias_z=None, bias_p_value=None, grad_var_ci_low=None,
               grad_var_ci_high=None, grad_var_rel_se=None, mse=None)  # fmt: skip
    row["note"] = "; ".join(n for n in (f"infinite variance: {reason}", row["note"]) if n)


@dataclass
class Measured:
    """One cell's statistics, and what its cost measurement needs: ``draw(R)`` returns R estimates the way
    the statistics drew them (None when the cell has no ok row to time)."""

    cell: Cell
    row: dict
    draw: Callable[[int], Tensor] | None = None
    values_per_sample: int = 1
    work_depends_on_theta: bool = False
    seconds: float = 0.0

    @property
    def cost_key(self) -> Hashable:
        """Cells of one block with the same key share one cost measurement."""
        variant = (self.cell.estimator, self.cell.estimator_params, self.cell.variance_reduction)
        return (*variant, self.cell.theta if self.work_depends_on_theta else None)


def error_row(cell: Cell, base_seed: int, error: BaseException) -> dict:
    row = base_row(cell, base_seed, utc_now())
    row.update(status="error", note=f"{type(error).__name__}: {error}".replace("\n", " "))
    return row


def measure_block(cells: list[Cell], base_seed: int, *, timed: bool = True) -> list[dict]:
    """Rows for cells of one comparison block (``Cell.block_key``): each cell's statistics, then, when
    ``timed``, one cost measurement for the block. A cell that raises becomes an error row; the others go on."""
    measured = []
    for cell in cells:
        started = time.perf_counter()
        try:
            result = measure_statistics(cell, base_seed)
        except Exception as error:  # one bad cell must not cost the others; it is recorded and retried later
            result = Measured(cell, error_row(cell, base_seed, error))
        result.seconds = time.perf_counter() - started
        measured.append(result)
    if timed:
        add_costs([m for m in measured if m.draw is not None], base_seed)
    for m in measured:
        m.row["elapsed_s"] = m.seconds + (m.row.get("cost_time_s") or 0.0)
    return [m.row for m in measured]


def measure_cell(cell: Cell, base_seed: int, *, timed: bool = True) -> dict:
    """One cell's row (a block of one): its statistics and, when ``timed``, its cost beside the RNG floor."""
    return measure_block([cell], base_seed, timed=timed)[0]


def measure_statistics(cell: Cell, base_seed: int) -> Measured:
    """The cell's statistics (status ok or skipped), for a scalar θ or a workload's parameter vector alike;
    raises on errors."""
    row = base_row(cell, base_seed, utc_now())
    problem = cell.build_problem()
    point = problem.at(cell.theta)  # a workload's problem at the checkpoint θ
    estimator = get_estimator(cell.estimator)
    row["n_params"] = point.n_params
    row["cost_evals_per_sample"] = estimator.cost_evaluations(point)
    row["expected_unbiased"] = estimator.unbiased_for(point)
    reason = compose(cell.variance_reduction, estimator, point, cell.n_samples)
    if isinstance(reason, str):
        row.update(status="skipped", note=reason)
        return Measured(cell, row)
    dtype = DTYPES[cell.dtype]
    options = dict(cell.estimator_params)

    def draw(replicates: int, label: str | None = None) -> torch.Tensor:
        shown = None if label is None else cell_progress.tracker(f"{cell.method} {label}", replicates * cell.n_samples)
        return estimate(estimator, problem, cell.theta, cell.n_samples, replicates, device=cell.device, dtype=dtype,
                        options=options, variance_reduction=cell.variance_reduction, progress=shown)  # fmt: skip

    statistics = _vector_statistics if point.workload is not None else _scalar_statistics
    if not statistics(cell, row, point, draw):
        return Measured(cell, row)
    infinite = point.infinite_variance(cell.theta) if point.workload is None else None
    if infinite and row["grad_var"] > 0:  # constant estimates (naive when θ only moves p) have no variance to lose
        without_variance(row, infinite)
    work_depends = problem.work_depends_on_theta or point.work_depends_on_theta or estimator.work_depends_on_theta
    # An episode draws one action uniform per environment step, up to the horizon.
    values = point.episodes.horizon if point.episodes is not None else _values_per_sample(point.example_distribution())
    return Measured(cell, row, draw, values_per_sample=values, work_depends_on_theta=work_depends)


def _scalar_statistics(cell: Cell, row: dict, problem, draw) -> bool:
    """Fill a scalar cell's statistics: M from a pilot's kurtosis (auto) or fixed. False when unusable."""
    row["true_grad_se"] = 0.0
    if problem.gradient is not None:
        row["true_grad"] = problem.gradient(cell.theta)
    else:
        row["true_grad"], row["true_grad_se"], reference = reference_gradient(problem, cell.theta)
        row["note"] = (f"no exact gradient: true_grad is a {REFERENCE_SAMPLES}-sample {reference} reference "
                       f"(± {row['true_grad_se']:.3g})")  # fmt: skip
    seed = row["seed"]
    if cell.replicates is None:
        torch.manual_seed(seed ^ 0x5EED)  # the pilot uses its own stream, so M does not select the data
        pilot = pilot_replicates(cell.n_samples)
        replicates = choose_replicates(draw(pilot, "pilot").double().cpu().numpy() if pilot else np.array([]),
                                       cell.n_samples)  # fmt: skip
    else:
        replicates = cell.replicates
    torch.manual_seed(seed)
    estimates = draw(replicates, "estimates").double().cpu().numpy()
    finite = estimates[np.isfinite(estimates)]
    row["n_replicates"] = replicates
    row["n_nonfinite"] = int(estimates.size - finite.size)
    if finite.size < 5:
        # A numerical outcome of this cell (e.g. overflow in float32), the same on every re-run: recorded with
        # its count rather than raised, so it is neither retried nor mistaken for a failure of the harness.
        row.update(status="skipped", note=f"numerically unusable in {cell.dtype}: {row['n_nonfinite']} of "
                   f"{estimates.size} estimates are NaN or ±inf, too few finite ones for statistics")  # fmt: skip
        return False
    if finite.size < estimates.size:
        row["note"] = f"{row['n_nonfinite']} non-finite estimates excluded from the statistics"
    eps = torch.finfo(DTYPES[cell.dtype]).eps
    objective = _objective(problem, cell.theta)
    summary = summarize(finite, row["true_grad"], eps=eps, true_grad_se=row["true_grad_se"], objective=objective)
    row.update(
        summary_columns(summary, cell.n_samples),
        grad_var_max=summary.var,
        grad_norm_var=float(np.var(np.abs(finite), ddof=1)),
        objective=objective,
    )
    row.update(exact_columns(cell, problem, row))
    notes = [row["note"], problem.heavy_tail_warning(cell.theta), variance_interval_caveat(summary.kurtosis)]
    if not math.isfinite(row["bias_z"]):
        notes.append("estimates are constant")
    row["note"] = "; ".join(n for n in notes if n)
    return True


def exact_columns(cell: Cell, problem, row: dict) -> dict:
    """The cell's exact mean and variance (``estimators.exact``) and whether the measured interval covers the
    exact variance; or the reason there are none. A failure of the exact computation is recorded, not raised:
    it must not cost the measured statistics."""
    try:
        exact = exact_moments(problem, cell.method_id, cell.theta, cell.n_samples)
    except Exception as error:  # noqa: BLE001 - a user's registered exact function may raise anything
        exact = f"the exact computation failed ({type(error).__name__}: {error})"
    if not isinstance(exact, Exact):
        return dict(exact_var_note=exact)
    columns = dict(exact_mean=exact.mean, exact_var=exact.var)
    # Where the exact variance is 0 (a coupled pair that cancels) the measured one is the dtype's rounding: an
    # interval around rounding noise says nothing about the implementation, so such a cell is not judged.
    rounding = ROUNDING_ULPS * torch.finfo(DTYPES[cell.dtype]).eps * max(abs(exact.mean), abs(row["grad_mean"]), 1.0)
    if exact.var == 0 and row["grad_var"] == 0:
        return columns | dict(exact_var_note="the exact and the measured variance are both 0 (constant estimates)")
    if exact.var <= rounding**2 and row["grad_var"] <= rounding**2:
        return columns | dict(exact_var_note=f"the exact variance is {exact.var:.3g}, and the measured one "
                              f"{row['grad_var']:.3g} is {cell.dtype} rounding: not compared")  # fmt: skip
    low, high = row.get("grad_var_ci_low"), row.get("grad_var_ci_high")
    covered = bool(low <= exact.var <= high) if low is not None and np.isfinite([low, high]).all() else None
    return columns | dict(exact_var_covered=covered)


def _vector_statistics(cell: Cell, row: dict, problem, draw) -> bool:
    """Fill a workload cell's statistics: M estimates of the whole gradient vector at the checkpoint, summarised
    over coordinates (``statistics.summarize_vector``) against the workload's ground truth. False when unusable."""
    workload = problem.workload
    step = workload.check_step(cell.theta)
    truth, truth_error = workload.exact_gradient(step)
    row.update(true_grad=float(truth.norm()), true_grad_se=float(truth_error.norm()), objective=workload.objective(step))
    torch.manual_seed(row["seed"])
    eps = torch.finfo(DTYPES[cell.dtype]).eps
    if cell.replicates is None:
        # auto: WORKLOAD_REPLICATES first; more (same stream, appended) until the mean variance's relative s.e.
        # is about 5%. Heavy-tailed coordinates (measure-valued at N = 1, kurtosis ~45) gave a false bias alarm at
        # z = 4.8 with M = 200; at the M this rule picks their means are close enough to normal for the z-test.
        first = draw(WORKLOAD_REPLICATES, "estimates").double().cpu()
        pilot = summarize_vector(first.numpy(), truth.numpy(), truth_error.numpy(), eps=eps).summary
        wanted = math.ceil(WORKLOAD_REPLICATES * (pilot.var_rel_se / TARGET_VARIANCE_REL_SE) ** 2)
        replicates = min(max(wanted, WORKLOAD_REPLICATES), WORKLOAD_MAX_REPLICATES)
        more = [draw(replicates - WORKLOAD_REPLICATES).double().cpu()] if replicates > WORKLOAD_REPLICATES else []
        estimates = torch.cat([first, *more]).numpy()
    else:
        replicates = cell.replicates
        estimates = draw(replicates, "estimates").double().cpu().numpy()
    finite_rows = np.isfinite(estimates).all(axis=1)
    row["n_replicates"] = replicates
    row["n_nonfinite"] = int((~finite_rows).sum())
    if finite_rows.sum() < 5:
        row.update(status="skipped", note=f"numerically unusable in {cell.dtype}: {row['n_nonfinite']} of "
                   f"{replicates} estimates have NaN or ±inf coordinates")  # fmt: skip
        return False
    unresolved = None
    if workload.unresolved_by_sampling is not None:
        unresolved = workload.unresolved_by_sampling(step, replicates * cell.n_samples).numpy()
    vector = summarize_vector(estimates[finite_rows], truth.numpy(), truth_error.numpy(), eps=eps,
                              unresolved=unresolved)  # fmt: skip
    summary = vector.summary
    row.update(summary_columns(summary, cell.n_samples), grad_var_max=vector.var_max, grad_norm_var=vector.norm_var)
    notes = [f"{row['n_nonfinite']} estimates with non-finite coordinates excluded"] if row["n_nonfinite"] else []
    if unresolved is not None and unresolved.any():
        notes.append(
            f"{int((unresolved > 0).sum())} of {vector.n_params} coordinates get part of their gradient from "
            f"{workload.unresolved_reason} ({replicates * cell.n_samples}); a bound on that part (norm "
            f"{np.linalg.norm(unresolved):.3g}) is added to the bias test's uncertainty, and their variance is "
            "underestimated"
        )
    if summary.biased:
        notes.append(f"largest bias at coordinate {vector.worst_coordinate} of {vector.n_params}")
    row["note"] = "; ".join(notes)
    row.update(exact_columns(cell, problem, row))
    return True


def _values_per_sample(distribution) -> int:
    """Random values one sample of one replicate holds (1 for a scalar θ, D for a D-dimensional Gaussian, a
    workload's whole latent configuration); ``distribution`` is built for one replicate."""
    return max(1, distribution.sample().numel())


REFERENCE_SAMPLES = 1 << 22


_REFERENCES: dict[tuple[str, float], tuple[float, float, str]] = {}


def reference_gradient(problem, theta: float) -> tuple[float, float, str]:
    """(mean, standard error, estimator) of a reference estimate for a problem without an exact gradient:
    REFERENCE_SAMPLES single-sample pathwise estimates in float64 where pathwise applies, else score-function
    ones. Seeded from (problem, θ) alone on a forked stream: every cell at that θ compares with the same
    reference, computed once per process, and the cell's own estimates stay independent of it."""
    key = (problem.label, float(theta))
    if key not in _REFERENCES:
        for name in ("pathwise", "score_function"):
            estimator = get_estimator(name)
            if estimator.skip_reason(problem, 1) is None:
                break
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big") >> 1)
            values = estimate(estimator, problem, theta, 1, REFERENCE_SAMPLES, dtype=torch.float64).numpy()
        _REFERENCES[key] = (float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)), name)
    return _REFERENCES[key]


def _objective(problem, theta: float) -> float | None:
    # A user's problem may not know L(θ); the column is then empty.
    return None if problem.objective is None else float(problem.objective(theta))


# ---------------------------------------------------------------------------------------------------------
# Cost: every variant of a block timed together (bench/cost.py)


def _floor(values: int, device: str, dtype: torch.dtype) -> Callable[[], Tensor]:
    return lambda: torch.randn(values, device=device, dtype=dtype)


def add_costs(measured: list[Measured], base_seed: int) -> None:
    """Time the cells of one block together and fill their cost columns (one measurement per cost key).

    Calls hold about cost.TIMING_SAMPLES random values, the same number of replicates for every variant, fewer
    when the block's slowest round would not fit cost.MIN_ROUNDS rounds into cost.BLOCK_BUDGET_S."""
    if not measured:
        return
    started = time.perf_counter()
    first = measured[0].cell
    device, dtype, n = first.device, DTYPES[first.dtype], first.n_samples
    units: dict[Hashable, Measured] = {}
    for m in measured:
        units.setdefault(m.cost_key, m)
    values_per_sample = max(m.values_per_sample for m in units.values())
    replicates = max(1, cost.TIMING_SAMPLES // (n * values_per_sample))
    failed: dict[Hashable, BaseException] = {}
    with one_intra_op_thread() if torch.device(device).type == "cpu" else contextlib.nullcontext():
        for attempt in range(2):
            calls = {key: _call(m.draw, replicates) for key, m in units.items() if key not in failed}
            floor = _floor(replicates * n * values_per_sample, device, dtype)
            round_seconds = _warm_up(calls, floor, device, failed)
            calls = {key: call for key, call in calls.items() if key not in failed}
            squeeze = round_seconds * cost.MIN_ROUNDS / cost.BLOCK_BUDGET_S
            if attempt or squeeze <= 1 or replicates == 1:
                break
            replicates = max(1, int(replicates / squeeze))
        seed = first.seed(base_seed)
        costs, floor_seconds, _ = cost.time_block(calls, floor, device, seed=seed) if calls else ({}, math.nan, 0)
    spent = time.perf_counter() - started
    timed = max(1, sum(m.cost_key in costs for m in measured))
    for m in measured:
        if m.cost_key in failed:
            error = failed[m.cost_key]
            m.row.update(status="error", note=f"cost measurement failed: {type(error).__name__}: {error}".replace("\n", " "))
            continue
        c = costs[m.cost_key]
        m.row.update(_cost_columns(m.row, c, replicates, floor_seconds / (replicates * n * values_per_sample),
                                   cost_clock="wall_synchronized" if torch.device(device).type == "cuda" else "process_cpu",
                                   cost_time_s=spent / timed))  # fmt: skip


def _call(draw: Callable[[int], Tensor], replicates: int) -> Callable[[], Tensor]:
    return lambda: draw(replicates)


def _warm_up(calls: dict, floor: Callable[[], Tensor], device: str, failed: dict) -> float:
    """Call everything once (allocator growth, lazy initialisation, a control variate's training); the seconds
    one round takes. A variant whose call raises is moved to ``failed``."""
    clock = cost.call_clock(device)
    total = clock(floor)
    for key, call in calls.items():
        try:
            total += clock(call)
        except Exception as error:  # noqa: BLE001 - recorded on the variant's rows
            failed[key] = error
    return total


def _cost_columns(row: dict, c: cost.Cost, replicates: int, floor_per_value: float, **extra) -> dict:
    """Cost columns of one row from its variant's Cost; the work-normalised variance's interval combines the
    variance's and the cost's on the log scale."""
    n = row["n_samples"]
    columns = dict(
        seconds_per_estimate=c.seconds / replicates,
        seconds_per_estimate_ci_low=c.seconds_low / replicates,
        seconds_per_estimate_ci_high=c.seconds_high / replicates,
        samples_per_second=n * replicates / c.seconds if c.seconds > 0 else math.inf,
        relative_cost=c.relative,
        relative_cost_ci_low=c.relative_low,
        relative_cost_ci_high=c.relative_high,
        floor_seconds_per_sample=floor_per_value,
        timing_replicates=replicates,
        cost_rounds=c.rounds,
        **extra,
    )
    if row.get("status") == "ok" and not row.get("variance_infinite"):
        work = row["grad_var"] * n * c.relative
        low, high = row["grad_var_ci_low"], row["grad_var_ci_high"]
        if work > 0 and low > 0:
            se = math.hypot(cost.interval_log_se(low, high), c.log_se)
            columns.update(work_normalized_var=work, work_normalized_var_ci_low=work * math.exp(-Z95 * se),
                           work_normalized_var_ci_high=work * math.exp(Z95 * se))  # fmt: skip
        else:
            columns.update(work_normalized_var=work, work_normalized_var_ci_low=0.0,
                           work_normalized_var_ci_high=row["grad_var_ci_high"] * n * c.relative_high)  # fmt: skip
    return columns

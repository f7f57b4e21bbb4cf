"""Measure one cell: replicate estimates -> bias and variance statistics, plus a warmed-up timing."""

from __future__ import annotations

import hashlib
import math
import socket
import time
from datetime import datetime, timezone

import numpy as np
import torch
from torch.utils import benchmark

from estimators import estimate, get_estimator
from estimators.variance_reduction import compose
from estimators.workloads import WORKLOADS, estimate_workload

from . import cell_progress, environment
from .grid import DTYPES, Cell
from .statistics import (
    TARGET_VARIANCE_REL_SE,
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
# A timed call holds about this many samples (at least one estimate) whatever M is, so throughput is
# comparable across cells, and calls are short enough for ~10+ timed blocks per cell.
TIMING_SAMPLES = 1 << 18
TIMING_MIN_RUN_TIME = 0.15  # seconds of timed blocks per cell; shorter windows gave ±2× noise on 2 cores
# A workload's sample holds a whole data set's activations (569 patients, 100 images): 10³-10⁵ times a toy
# problem's, so its timed calls hold fewer samples, and --replicates auto starts from 200 estimates.
WORKLOAD_TIMING_SAMPLES = 256
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
        problem_hash=environment.problem_fingerprint(cell.problem),
    )
    return row


def pilot_replicates(n_samples: int) -> int:
    """Estimates in an auto-sized cell's pilot: PILOT_REPLICATES, or none where the M·N cap alone fixes M
    (N > 2^24 / 800: M = max(2^24 // N, 100) whatever the kurtosis)."""
    return PILOT_REPLICATES if MAX_SAMPLES_PER_CELL // n_samples > AUTO_MIN_REPLICATES else 0


def choose_replicates(pilot: np.ndarray, n_samples: int) -> int:
    """M for a 5% relative s.e. of the variance given the pilot's kurtosis, within [800, 20000] and M·N <= 2^24."""
    wanted = replicates_for_relative_se(kurtosis(pilot[np.isfinite(pilot)]))
    wanted = min(max(wanted, AUTO_MIN_REPLICATES), AUTO_MAX_REPLICATES)
    return max(min(wanted, MAX_SAMPLES_PER_CELL // n_samples), 100)


def time_estimates(run, device: str) -> tuple[float, int]:
    """Median seconds of ``run()`` over repeated blocks after a warm-up (torch.utils.benchmark synchronises CUDA)."""
    run()  # warm-up: allocator, kernels, lazy initialisation
    environment.synchronize(device)
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=TIMING_MIN_RUN_TIME)
    return float(measurement.median), len(measurement.times)


def timing_columns(draw, cell: Cell, variance: float, samples_per_call: int) -> dict:
    """Time ``draw(R)`` with R estimates of about ``samples_per_call`` samples per call; the timing columns."""
    timing_replicates = max(1, samples_per_call // cell.n_samples)
    seconds, runs = time_estimates(lambda: draw(timing_replicates), cell.device)
    seconds_per_estimate = seconds / timing_replicates
    return dict(
        seconds_per_estimate=seconds_per_estimate,
        samples_per_second=cell.n_samples / seconds_per_estimate,
        work_normalized_var=variance * seconds_per_estimate,
        timing_replicates=timing_replicates,
        timing_runs=runs,
    )


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
        grad_var=summary.var,
        grad_var_ci_low=summary.var_ci_low,
        grad_var_ci_high=summary.var_ci_high,
        grad_var_rel_se=summary.var_rel_se,
        kurtosis=summary.kurtosis,
        per_sample_var=summary.var * n_samples,
        mse=summary.mse,
    )


def measure_cell(cell: Cell, base_seed: int, *, timed: bool = True) -> dict:
    """Measure one cell and return its table row (status ok or skipped); raises on errors.

    ``timed=False`` leaves the timing columns empty: the statistics alone, for tests that need many cells fast.
    """
    if cell.problem in WORKLOADS:
        return measure_workload_cell(cell, base_seed, timed=timed)
    started = time.perf_counter()
    row = base_row(cell, base_seed, utc_now())
    problem = cell.build_problem()
    estimator = get_estimator(cell.estimator)
    row["cost_evals_per_sample"] = estimator.cost_evaluations(problem)
    row["true_grad_se"] = 0.0
    if problem.gradient is not None:
        row["true_grad"] = problem.gradient(cell.theta)
    row["expected_unbiased"] = estimator.unbiased_for(problem)
    options = dict(cell.estimator_params)
    reason = compose(cell.variance_reduction, estimator, problem, cell.n_samples)
    if isinstance(reason, str):
        row.update(status="skipped", note=reason, elapsed_s=time.perf_counter() - started)
        return row

    def draw(replicates: int, label: str | None = None) -> torch.Tensor:
        shown = None if label is None else cell_progress.tracker(label, replicates * cell.n_samples)
        return estimate(estimator, problem, cell.theta, cell.n_samples, replicates,
                        device=cell.device, dtype=DTYPES[cell.dtype], options=options,
                        variance_reduction=cell.variance_reduction, progress=shown)  # fmt: skip

    seed = row["seed"]
    if problem.gradient is None:
        row["true_grad"], row["true_grad_se"], reference = reference_gradient(problem, cell.theta)
        row["note"] = (f"no exact gradient: true_grad is a {REFERENCE_SAMPLES}-sample {reference} reference "
                       f"(± {row['true_grad_se']:.3g})")  # fmt: skip
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
        row.update(
            status="skipped",
            note=f"numerically unusable in {cell.dtype}: {row['n_nonfinite']} of {estimates.size} estimates are "
            "NaN or ±inf, too few finite ones for statistics",
            elapsed_s=time.perf_counter() - started,
        )
        return row
    if finite.size < estimates.size:
        row["note"] = f"{row['n_nonfinite']} non-finite estimates excluded from the statistics"
    summary = summarize(finite, row["true_grad"], eps=torch.finfo(DTYPES[cell.dtype]).eps, true_grad_se=row["true_grad_se"])
    row.update(
        summary_columns(summary, cell.n_samples),
        n_params=1,
        grad_var_max=summary.var,
        grad_norm_var=float(np.var(np.abs(finite), ddof=1)),
        objective=_objective(problem, cell.theta),
    )
    if timed:
        row.update(timing_columns(draw, cell, summary.var, TIMING_SAMPLES))
    row["elapsed_s"] = time.perf_counter() - started
    notes = [row["note"], problem.heavy_tail_warning(cell.theta), variance_interval_caveat(summary.kurtosis)]
    if not math.isfinite(row["bias_z"]):
        notes.append("estimates are constant")
    row["note"] = "; ".join(n for n in notes if n)
    return row


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


def measure_workload_cell(cell: Cell, base_seed: int, *, timed: bool = True) -> dict:
    """Measure one workload cell: M estimates of the whole gradient vector at the checkpoint θ = training step,
    summarised over coordinates (``statistics.summarize_vector``) against the workload's ground truth."""
    started = time.perf_counter()
    row = base_row(cell, base_seed, utc_now())
    workload = WORKLOADS[cell.problem]
    step = workload.check_step(cell.theta)
    method = cell.estimator if cell.variance_reduction == "none" else f"{cell.estimator}+{cell.variance_reduction}"
    reason = workload.skip_reason(method, cell.n_samples)
    spec = workload.estimators.get(method)
    row["n_params"] = workload.parameter_count
    if spec is not None:
        row["cost_evals_per_sample"] = spec.cost_evaluations
        row["expected_unbiased"] = spec.unbiased
    truth, truth_error = workload.exact_gradient(step)
    row.update(true_grad=float(truth.norm()), true_grad_se=float(truth_error.norm()), objective=workload.objective(step))
    if reason:
        row.update(status="skipped", note=reason, elapsed_s=time.perf_counter() - started)
        return row
    dtype = DTYPES[cell.dtype]

    def draw(replicates: int) -> torch.Tensor:
        return estimate_workload(workload, method, step, cell.n_samples, replicates, device=cell.device, dtype=dtype,
                                 options=dict(cell.estimator_params))  # fmt: skip

    torch.manual_seed(row["seed"])
    eps = torch.finfo(dtype).eps
    if cell.replicates is None:
        # auto: WORKLOAD_REPLICATES first; more (same stream, appended) until the mean variance's relative s.e.
        # is about 5%. Heavy-tailed coordinates (measure-valued at N = 1, kurtosis ~45) gave a false bias alarm at
        # z = 4.8 with M = 200; at the M this rule picks their means are close enough to normal for the z-test.
        first = draw(WORKLOAD_REPLICATES).double().cpu()
        pilot = summarize_vector(first.numpy(), truth.numpy(), truth_error.numpy(), eps=eps).summary
        wanted = math.ceil(WORKLOAD_REPLICATES * (pilot.var_rel_se / TARGET_VARIANCE_REL_SE) ** 2)
        replicates = min(max(wanted, WORKLOAD_REPLICATES), WORKLOAD_MAX_REPLICATES)
        more = [draw(replicates - WORKLOAD_REPLICATES).double().cpu()] if replicates > WORKLOAD_REPLICATES else []
        estimates = torch.cat([first, *more]).numpy()
    else:
        replicates = cell.replicates
        estimates = draw(replicates).double().cpu().numpy()
    finite_rows = np.isfinite(estimates).all(axis=1)
    row["n_replicates"] = replicates
    row["n_nonfinite"] = int((~finite_rows).sum())
    if finite_rows.sum() < 5:
        row.update(status="skipped", note=f"numerically unusable in {cell.dtype}: {row['n_nonfinite']} of "
                   f"{replicates} estimates have NaN or ±inf coordinates", elapsed_s=time.perf_counter() - started)  # fmt: skip
        return row
    unresolved = None
    if workload.unresolved_by_sampling is not None:
        unresolved = workload.unresolved_by_sampling(step, replicates * cell.n_samples).numpy()
    vector = summarize_vector(estimates[finite_rows], truth.numpy(), truth_error.numpy(), eps=eps,
                              unresolved=unresolved)  # fmt: skip
    summary = vector.summary
    row.update(
        summary_columns(summary, cell.n_samples),
        grad_var_max=vector.var_max,
        grad_norm_var=vector.norm_var,
    )
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
    if timed:
        row.update(timing_columns(draw, cell, summary.var, WORKLOAD_TIMING_SAMPLES))
    row["note"] = "; ".join(notes)
    row["elapsed_s"] = time.perf_counter() - started
    return row

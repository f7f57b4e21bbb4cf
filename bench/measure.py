"""Measure one cell: replicate estimates -> bias and variance statistics, plus a warmed-up timing."""

from __future__ import annotations

import math
import socket
import time
from datetime import datetime, timezone

import numpy as np
import torch
from torch.utils import benchmark

from estimators import estimate, get_estimator
from estimators.variance_reduction import compose

from . import environment
from .grid import DTYPES, Cell
from .statistics import kurtosis, replicates_for_relative_se, summarize
from .table import COLUMNS

PILOT_REPLICATES = 400
AUTO_MIN_REPLICATES = 800  # Gaussian estimates: 5% relative s.e. of the variance needs M ≈ 800
AUTO_MAX_REPLICATES = 20_000
MAX_SAMPLES_PER_CELL = 1 << 24  # caps M·N for auto replicates; the achieved precision is in grad_var_rel_se
# A timed call holds about this many samples (at least one estimate) whatever M is, so throughput is
# comparable across cells, and calls are short enough for ~10+ timed blocks per cell.
TIMING_SAMPLES = 1 << 18
TIMING_MIN_RUN_TIME = 0.15  # seconds of timed blocks per cell; shorter windows gave ±2× noise on 2 cores


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
    )
    return row


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


def measure_cell(cell: Cell, base_seed: int, *, timed: bool = True) -> dict:
    """Measure one cell and return its table row (status ok or skipped); raises on errors.

    ``timed=False`` leaves the timing columns empty: the statistics alone, for tests that need many cells fast.
    """
    started = time.perf_counter()
    row = base_row(cell, base_seed, utc_now())
    problem = cell.build_problem()
    estimator = get_estimator(cell.estimator)
    row["cost_evals_per_sample"] = estimator.cost_evaluations(problem)
    row["true_grad"] = problem.gradient(cell.theta)
    row["expected_unbiased"] = estimator.unbiased_for(problem)
    options = dict(cell.estimator_params)
    reason = compose(cell.variance_reduction, estimator, problem, cell.n_samples)
    if isinstance(reason, str):
        row.update(status="skipped", note=reason, elapsed_s=time.perf_counter() - started)
        return row

    def draw(replicates: int) -> torch.Tensor:
        return estimate(estimator, problem, cell.theta, cell.n_samples, replicates,
                        device=cell.device, dtype=DTYPES[cell.dtype], options=options,
                        variance_reduction=cell.variance_reduction)  # fmt: skip

    seed = row["seed"]
    if cell.replicates is None:
        torch.manual_seed(seed ^ 0x5EED)  # the pilot uses its own stream, so M does not select the data
        replicates = choose_replicates(draw(PILOT_REPLICATES).double().cpu().numpy(), cell.n_samples)
    else:
        replicates = cell.replicates
    torch.manual_seed(seed)
    estimates = draw(replicates).double().cpu().numpy()
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
    summary = summarize(finite, row["true_grad"], eps=torch.finfo(DTYPES[cell.dtype]).eps)
    row.update(
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
        per_sample_var=summary.var * cell.n_samples,
        mse=summary.mse,
    )
    if timed:
        timing_replicates = max(1, TIMING_SAMPLES // cell.n_samples)
        seconds, runs = time_estimates(lambda: draw(timing_replicates), cell.device)
        seconds_per_estimate = seconds / timing_replicates
        row.update(
            seconds_per_estimate=seconds_per_estimate,
            samples_per_second=cell.n_samples / seconds_per_estimate,
            work_normalized_var=summary.var * seconds_per_estimate,
            timing_replicates=timing_replicates,
            timing_runs=runs,
        )
    row["elapsed_s"] = time.perf_counter() - started
    notes = [row["note"], problem.heavy_tail_warning(cell.theta)]
    if not math.isfinite(row["bias_z"]):
        notes.append("estimates are constant")
    row["note"] = "; ".join(n for n in notes if n)
    return row

"""What an estimate costs, measured per comparison block so that timing noise cancels instead of deciding.

All estimator variants of one (problem, parameters, wrt, N, device, dtype) are timed together, in rounds: each
round calls every variant once and the device's RNG floor (``torch.randn`` of the same number of random values)
once, in a shuffled order, and divides each call's time by the floor's time in that round. What the machine does
to both calls of a round (another process, a slower clock, a busy memory bus) cancels in the ratio; what it does
to one call alone is an outlier that the median over rounds ignores and the bootstrap interval reports.

On CPU a call's time is the process's CPU time (``time.process_time``) on one intra-op thread: the work the call
does, which a competing process cannot stretch by taking the core away (wall time then varies several-fold; see
docs/performance.md). On CUDA it is wall time with the device synchronised before and after the call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from . import environment

# Random values per timed call: small enough that a call's tensors stay in cache (steadier timings), large
# enough that a call's fixed overhead is a minor part of it.
TIMING_SAMPLES = 1 << 17
MIN_ROUNDS = 10
MAX_ROUNDS = 60
# Rounds go on until every variant's relative cost is known to about ±10% (95% interval), or the budget is spent.
TARGET_LOG_HALF_WIDTH = math.log(1.10)
# Seconds of timed calls per block. When the minimum rounds would not fit, the calls are made smaller.
BLOCK_BUDGET_S = 2.0
BOOTSTRAP_RESAMPLES = 999
CONFIDENCE = 0.95
# Run-to-run spread of a relative cost beyond what one run's rounds show (contention changes compute-heavy and
# memory-heavy kernels differently): this floor on each log standard error makes the intervals of two sweeps
# disagree about 5% of the time, as 95% intervals should (docs/performance.md).
RUN_TO_RUN_LOG_SD = 0.025


@dataclass(frozen=True)
class Cost:
    """One variant's cost in a block: per call (seconds, median over rounds, 95% bootstrap interval over this
    run's rounds) and relative to the RNG floor (median over rounds of call time / floor time in the same round;
    its 95% interval combines the bootstrap's with RUN_TO_RUN_LOG_SD, so that it covers a re-run)."""

    seconds: float
    seconds_low: float
    seconds_high: float
    relative: float
    relative_low: float
    relative_high: float
    rounds: int

    @property
    def log_se(self) -> float:
        """Standard error of log(relative), read off its interval."""
        return interval_log_se(self.relative_low, self.relative_high)


def interval_log_se(low: float, high: float) -> float:
    if not (low > 0 and high > 0):
        return math.inf
    return (math.log(high) - math.log(low)) / (2 * stats.norm.ppf(0.5 + CONFIDENCE / 2))


def median_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of ``values`` with its 95% percentile-bootstrap interval."""
    values = np.asarray(values, dtype=float)
    median = float(np.median(values))
    if values.size < 2 or np.ptp(values) == 0:
        return median, median, median
    result = stats.bootstrap((values,), np.median, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", vectorized=True, random_state=np.random.default_rng(seed))  # fmt: skip
    low, high = result.confidence_interval
    return median, float(low), float(high)


def call_clock(device: str) -> Callable[[Callable[[], object]], float]:
    """A function timing one call on ``device``: CPU time on CPU, synchronised wall time on CUDA."""
    if torch.device(device).type == "cuda":

        def timed(call: Callable[[], object]) -> float:
            environment.synchronize(device)
            start = time.perf_counter()
            call()
            environment.synchronize(device)
            return time.perf_counter() - start

        return timed

    def timed_cpu(call: Callable[[], object]) -> float:
        start = time.process_time()
        call()
        return time.process_time() - start

    return timed_cpu


def time_block(
    calls: Mapping[Hashable, Callable[[], object]],
    floor: Callable[[], object],
    device: str,
    *,
    seed: int = 0,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    budget_s: float = BLOCK_BUDGET_S,
) -> tuple[dict[Hashable, Cost], float, int]:
    """Time every call of ``calls`` and the ``floor`` in shuffled rounds; (costs, floor median, rounds).

    Rounds continue past ``min_rounds`` until every relative cost's 95% interval is within
    ±TARGET_LOG_HALF_WIDTH on the log scale, ``max_rounds`` are done, or ``budget_s`` seconds of timed calls
    are spent. The shuffles are seeded, so only the clock differs between two runs of one block.
    """
    keys = list(calls)
    clock = call_clock(device)
    everything = [*(calls[k] for k in keys), floor]
    times = np.empty((max_rounds, len(everything)))
    rng = np.random.default_rng(seed)
    spent = 0.0
    rounds = 0
    while rounds < max_rounds:
        for index in rng.permutation(len(everything)):
            times[rounds, index] = clock(everything[index])
        spent += float(times[rounds].sum())
        rounds += 1
        if rounds >= min_rounds and (spent >= budget_s or (rounds % 5 == 0 and _precise(times[:rounds], seed))):
            break
    times = times[:rounds]
    floor_times = times[:, -1]
    costs = {}
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    for column, key in enumerate(keys):
        seconds = median_interval(times[:, column], seed)
        relative, low, high = median_interval(times[:, column] / floor_times, seed)
        se = math.hypot(interval_log_se(low, high), RUN_TO_RUN_LOG_SD) if relative > 0 else math.inf
        costs[key] = Cost(*seconds, relative, relative * math.exp(-z * se), relative * math.exp(z * se), rounds=rounds)
    return costs, float(np.median(floor_times)), rounds


def _precise(times: np.ndarray, seed: int) -> bool:
    ratios = times[:, :-1] / times[:, -1:]
    for column in range(ratios.shape[1]):
        _, low, high = median_interval(ratios[:, column], seed)
        if not (low > 0 and math.log(high / low) / 2 <= TARGET_LOG_HALF_WIDTH):
            return False
    return True

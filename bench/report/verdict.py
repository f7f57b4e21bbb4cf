"""Which estimator to choose at one (problem, θ, N): a ranking by work-normalised variance in which a winner is
named only when noise cannot flip it.

Every unbiased estimator is compared with the one of lowest work-normalised variance W = variance × cost. The
ratio W_x / W_best is a variance ratio times a cost ratio, each with its interval (the variances' Bonett
intervals, the costs' bootstrap intervals over timing rounds), combined on the log scale. An estimator is
*beaten* when the whole 95% interval of its ratio lies above TIE_BAND; the best is the winner only when it beats
every other one, and otherwise the verdict is a tie of the best and everything it does not beat.

The same rule with the cost replaced by the exact number of cost evaluations per sample gives a ranking no
timing can flip (``by_evaluations``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..cost import interval_log_se
from ..statistics import Z95

# A winner must be better than every other estimator by more than this factor, with 95% confidence. Two reasons
# for a band this wide: a cost ratio measured again moves by ~4.5% (sd of its log, docs/performance.md) and more
# on another CPU type, so a narrower band put some default-grid verdicts on a coin flip between runs; and a
# smaller difference in work-normalised variance is rarely worth acting on.
TIE_BAND = 1.5
# A best variance this far below another's is rounding (every estimate exact), not a measured advantage.
ZERO_VARIANCE_FRACTION = 1e-8


def rankable(rows: pd.DataFrame) -> pd.Series:
    """Rows that may be recommended: unbiased in theory *and* in this measurement, with a finite variance.

    Naive autograd can hit the exact gradient at one θ (where the dropped term vanishes) and must still not be
    chosen; an infinite variance has no work-normalised value to rank."""
    return (rows["expected_unbiased"].eq(True) & rows["biased"].eq(False) & ~rows["variance_infinite"].eq(True)
            & rows["grad_var"].notna())  # fmt: skip


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"×{fmt(self.value, digits)} [{fmt(self.low, digits)}, {fmt(self.high, digits)}]"


@dataclass(frozen=True)
class Comparison:
    """One estimator against the best: W ratio = variance ratio × cost ratio, each with its 95% interval."""

    estimator: str
    ratio: Interval
    variance: Interval
    cost: Interval | None  # None for the evaluation-count ranking, whose cost ratio is exact
    beaten: bool


@dataclass(frozen=True)
class Verdict:
    best: str | None
    tied: tuple[str, ...]  # the best and every estimator it does not beat (one name: a winner)
    comparisons: tuple[Comparison, ...]  # every other rankable estimator, best first
    zero_variance: bool  # the best's estimates are exact up to rounding

    @property
    def winner(self) -> str | None:
        return self.best if len(self.tied) == 1 else None

    def text(self) -> str:
        if self.best is None:
            return "—"
        if self.winner is not None:
            return f"**{self.winner}**" + (" (zero variance here: every estimate exact up to float rounding)"
                                           if self.zero_variance else "")  # fmt: skip
        return "tie: " + ", ".join(self.tied)


def _ratio(value: float, best: float, value_se: float, best_se: float) -> Interval:
    if best == 0:
        return Interval(1.0, 1.0, 1.0) if value == 0 else Interval(math.inf, math.inf, math.inf)
    ratio = value / best
    se = math.hypot(value_se, best_se)
    if not math.isfinite(se):
        return Interval(ratio, 0.0, math.inf)
    return Interval(ratio, ratio * math.exp(-Z95 * se), ratio * math.exp(Z95 * se))


def _variance_se(row) -> float:
    return interval_log_se(row["grad_var_ci_low"], row["grad_var_ci_high"])


def _cost_se(row) -> float:
    return interval_log_se(row["relative_cost_ci_low"], row["relative_cost_ci_high"])


def _decide(rows: pd.DataFrame, cost_column: str | None) -> Verdict:
    """The verdict among ``rows`` (one per estimator variant) by grad_var × cost (cost_column None: measured
    relative cost with its interval; else that exact column)."""
    candidates = rows[rankable(rows)]
    if cost_column is None:
        candidates = candidates[candidates["relative_cost"].notna()]
        work = candidates["grad_var"] * candidates["relative_cost"]
    else:
        candidates = candidates[candidates[cost_column].notna() & (candidates[cost_column] > 0)]
        work = candidates["grad_var"] * candidates[cost_column]
    if candidates.empty:
        return Verdict(None, (), (), False)
    order = np.argsort(work.to_numpy(), kind="stable")
    candidates, work = candidates.iloc[order], work.iloc[order]
    best = candidates.iloc[0]
    best_work = float(work.iloc[0])
    comparisons = []
    for (_, row), w in zip(candidates.iloc[1:].iterrows(), work.iloc[1:]):
        variance = _ratio(row["grad_var"], best["grad_var"], _variance_se(row), _variance_se(best))
        if cost_column is None:
            cost = _ratio(row["relative_cost"], best["relative_cost"], _cost_se(row), _cost_se(best))
            se = math.hypot(_variance_se(row), _variance_se(best), _cost_se(row), _cost_se(best))
        else:
            cost = None
            se = math.hypot(_variance_se(row), _variance_se(best))
        ratio = _ratio(float(w), best_work, se, 0.0)
        if best_work == 0:  # exact estimates beat any that are measurably random
            beaten = bool(row["grad_var_ci_low"] > 0)
        else:
            beaten = bool(ratio.low > TIE_BAND)
        comparisons.append(Comparison(row["estimator"], ratio, variance, cost, beaten))
    tied = (best["estimator"], *(c.estimator for c in comparisons if not c.beaten))
    if len(tied) > 1:
        # Listed in an order no timing can change: by variance × cost evaluations (the statistics are seeded).
        deterministic = candidates.set_index("estimator")
        key = deterministic["grad_var"] * deterministic["cost_evals_per_sample"].fillna(1)
        tied = tuple(sorted(tied, key=lambda name: (float(key[name]), name)))
    runner = candidates.iloc[1]["grad_var"] if len(candidates) > 1 else math.nan
    zero = bool(len(candidates) > 1 and best["grad_var"] <= ZERO_VARIANCE_FRACTION * runner)
    return Verdict(best["estimator"], tied, tuple(comparisons), zero)


def by_cost(rows: pd.DataFrame) -> Verdict:
    """The verdict by work-normalised variance with the measured cost (relative to the RNG floor)."""
    return _decide(rows, None)


def by_evaluations(rows: pd.DataFrame) -> Verdict:
    """The verdict by variance × cost evaluations per sample: exact counts, so no timing can flip it."""
    return _decide(rows, "cost_evals_per_sample")


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a report: significant digits, — for missing, ∞ for infinite."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def ranked(rows: pd.DataFrame, verdict: Verdict) -> list[tuple[pd.Series, str, Comparison | None]]:
    """Every row in the verdict's order, with its rank label ("1", "=1" for a tie with the best, "—" for a row
    that is not ranked) and its comparison with the best (None for the best and the unranked)."""
    by_name = {row["estimator"]: row for _, row in rows.iterrows()}
    out = []
    if verdict.best is not None:
        out.append((by_name[verdict.best], "1", None))
        for position, comparison in enumerate(verdict.comparisons, start=2):
            label = str(position) if comparison.beaten else "=1"
            out.append((by_name[comparison.estimator], label, comparison))
    listed = {row["estimator"] for row, _, _ in out}
    out += [(row, "—", None) for _, row in rows.iterrows() if row["estimator"] not in listed]
    return out


def comparison_text(comparison: Comparison | None) -> str:
    """"×3.4 [2.9, 4.0] = variance ×1.0 [0.9, 1.1] · cost ×3.3 [3.1, 3.6]" (tie marked)."""
    if comparison is None:
        return ""
    parts = comparison.ratio.text() + " = variance " + comparison.variance.text()
    if comparison.cost is not None:
        parts += " · cost " + comparison.cost.text()
    return parts + ("" if comparison.beaten else " (tie)")

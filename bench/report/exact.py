"""The report's check of measured variances against exact ones (``estimators.exact``): how often the measured 95%
interval covered the exact variance, with a binomial interval on that rate, and the cells where it did not."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from ..regression import exact_variance_z
from ..statistics import CONFIDENCE
from .verdict import fmt

SHOWN_MISSES = 30  # the cells furthest from their exact value; the rest are in table.csv


def coverage(rows: pd.DataFrame) -> tuple[int, int, float, float]:
    """(covered, cells with a verdict, Clopper–Pearson 95% interval of the coverage rate)."""
    judged = rows["exact_var_covered"].dropna()
    covered, total = int(judged.astype(bool).sum()), int(len(judged))
    if total == 0:
        return 0, 0, math.nan, math.nan
    interval = stats.binomtest(covered, total).proportion_ci(CONFIDENCE, method="exact")
    return covered, total, float(interval.low), float(interval.high)


def exact_section(ok: pd.DataFrame) -> list[str]:
    if "exact_var" not in ok or ok.empty:
        return []
    with_exact = ok[ok["exact_var"].notna()]
    covered, total, low, high = coverage(ok)
    lines = ["## Measured variance against the exact variance", ""]
    if total == 0:
        return lines + ["No measured cell of this run has an exact variance (see `exact_var_note` in table.csv).", ""]
    expected = CONFIDENCE
    judgement = ("as honest 95% intervals and correct implementations should" if low <= expected <= high else
                 "**below** what honest 95% intervals give: some intervals are too narrow or some implementations "
                 "differ from their exact value" if high < expected else
                 "**above** 95%: the intervals are wider than they need to be")  # fmt: skip
    lines += [
        f"{len(with_exact)} of {len(ok)} measured cells have an exact variance, computed without sampling (closed "
        "forms, quadrature, enumeration: `estimators/exact/`, derivations in docs/math.md)"
        + (f"; {len(with_exact) - total} of them are not judged, their variance being 0 or at float rounding "
           "both exactly and as measured" if len(with_exact) > total else "")
        + f". The measured 95% interval covered it in **{covered} of {total} = {100 * covered / total:.1f}%** "
        f"[{100 * low:.1f}%, {100 * high:.1f}%] (Clopper–Pearson 95%), {judgement}. About 5% of the cells miss "
        "by chance; a miss far outside its interval, or many at one estimator, points at a bug or at float32 "
        "rounding (the exact value is that of the mathematics, in exact arithmetic).",
        "",
    ]
    missed = with_exact[with_exact["exact_var_covered"].eq(False)].copy()
    if len(missed):
        missed["z"] = exact_variance_z(missed)
        missed = missed.reindex(missed["z"].abs().sort_values(ascending=False).index)
        lines += [f"Cells where the interval missed the exact variance ({len(missed)}, furthest first"
                  + (f"; the first {SHOWN_MISSES} shown, all have `exact_var_covered` False in table.csv" if len(missed) > SHOWN_MISSES else "")
                  + "):", "",
                  "| problem | θ | N | estimator | dtype | per-sample variance [95% CI] | exact | measured / exact | z |",
                  "|---|---:|---:|---|---|---|---:|---:|---:|"]  # fmt: skip
        for r in missed.head(SHOWN_MISSES).itertuples():
            n = r.n_samples
            lines.append(f"| {r.problem}{_params(r.problem_params)} wrt {r.wrt} | {r.theta:g} | {n} | {r.estimator} | {r.dtype} "
                         f"| {fmt(r.grad_var * n)} [{fmt(r.grad_var_ci_low * n, 3)}, {fmt(r.grad_var_ci_high * n, 3)}] "
                         f"| {fmt(r.exact_var * n)} | {fmt(r.grad_var / r.exact_var, 3)} | {fmt(r.z, 3)} |")  # fmt: skip
        lines.append("")
    without = ok[ok["exact_var"].isna() & ok["exact_var_note"].fillna("").ne("")]
    if len(without):
        reasons = without.groupby("exact_var_note").size().sort_values(ascending=False)
        lines += ["Cells without an exact variance, by reason:", "", "| cells | reason |", "|---:|---|"]
        lines += [f"| {count} | {reason} |" for reason, count in reasons.head(12).items()]
        if len(reasons) > 12:
            lines.append(f"| {int(reasons.iloc[12:].sum())} | {len(reasons) - 12} other reasons (`exact_var_note`) |")
        lines.append("")
    return lines


def _params(params_json: str) -> str:
    return "" if params_json in ("{}", "") else f" {params_json}"

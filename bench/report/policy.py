"""The report's section on group baselines (GRPO, Dr. GRPO, RLOO) on categorical_policy: exact bias against G
(``estimators.exact.policy``), the measured bias with its interval, per-sample variance measured against exact,
and which baseline to use in words, with the numbers of this run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from estimators import PROBLEMS

from ..statistics import Z95
from .verdict import fmt

POLICY_PROBLEM = "categorical_policy"
# The group baselines, and RLOO, which is Dr. GRPO times G/(G − 1): the unbiased member of the family.
GROUP_BASELINES = ("grpo", "dr_grpo", "score_function_loo")


ROUNDING = 1e-12  # relative: an exact bias below this is the enumeration's float64 rounding, shown as 0


def exact_bias(row: pd.Series) -> float:
    bias = row["exact_mean"] - row["true_grad"]
    return 0.0 if abs(bias) <= ROUNDING * abs(row["true_grad"]) else bias


def relative_bias(row: pd.Series) -> float:
    """(exact mean − gradient) / gradient; nan at a zero gradient."""
    return exact_bias(row) / row["true_grad"] if row["true_grad"] != 0 else float("nan")


def _percent(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{100 * value:+.1f}%"


def _variance_cell(row: pd.Series) -> str:
    n = row["n_samples"]
    exact = f"{fmt(row['exact_var'] * n)}" if np.isfinite(row["exact_var"]) else "—"
    return f"{fmt(row['per_sample_var'])} [{fmt(row['grad_var_ci_low'] * n, 3)}, {fmt(row['grad_var_ci_high'] * n, 3)}] / {exact}"


def _table(rows: pd.DataFrame) -> list[str]:
    lines = ["| θ | G | estimator | dL/dθ | exact mean | exact bias (relative) | measured bias ± 1.96·se | per-sample variance [95% CI] / exact |",
             "|---:|---:|---|---:|---:|---|---|---|"]  # fmt: skip
    for r in rows.sort_values(["theta", "base", "n_samples"]).to_dict("records"):
        lines.append(f"| {r['theta']:g} | {r['n_samples']} | {r['base']} | {fmt(r['true_grad'])} | {fmt(r['exact_mean'])} "
                     f"| {fmt(exact_bias(r), 3)} ({_percent(relative_bias(r))}) | {fmt(r['bias'], 3)} ± {fmt(Z95 * r['bias_se'], 2)} "
                     f"| {_variance_cell(r)} |")  # fmt: skip
    return lines + [""]


def _ratio_range(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    ratio = rows["exact_mean"] / rows["true_grad"]
    return rows.loc[ratio.idxmin()], rows.loc[ratio.idxmax()]


def advice(rows: pd.DataFrame) -> list[str]:
    """Which group baseline to use, with this run's exact numbers (at the largest G measured for each)."""
    known = rows[np.isfinite(rows["exact_mean"]) & (rows["true_grad"] != 0)]
    sentences = []
    dr = known[known["base"] == "dr_grpo"]
    if len(dr):
        g = int(dr["n_samples"].max())
        at = dr[dr["n_samples"] == g].iloc[0]
        sentences.append(f"dr_grpo's mean is exactly (G − 1)/G of the gradient: {fmt(100 / g, 3)}% too small at G = {g} "
                         f"(exact mean {fmt(at['exact_mean'])} against {fmt(at['true_grad'])} at θ = {at['theta']:g}), "
                         f"{fmt(100 / int(dr['n_samples'].min()), 3)}% at G = {int(dr['n_samples'].min())}.")  # fmt: skip
    grpo = known[known["base"] == "grpo"]
    if len(grpo):
        low, high = _ratio_range(grpo)
        sentences.append(
            f"grpo's mean is {fmt(low['exact_mean'] / low['true_grad'], 3)}× the gradient at θ = {low['theta']:g}, "
            f"G = {low['n_samples']} and {fmt(high['exact_mean'] / high['true_grad'], 3)}× at θ = {high['theta']:g}, "
            f"G = {high['n_samples']}: dividing by the group's reward standard deviation rescales each group by about "
            f"1/√(L(1 − L)) ({fmt(1 / np.sqrt(high['objective'] * (1 - high['objective'])), 3)} at L = "
            f"{fmt(high['objective'], 3)}), which depends on the success rates, and groups of equal rewards "
            "contribute nothing, so its bias changes sign and size with G and with the task's difficulty."
        )  # fmt: skip
    loo = rows[rows["base"] == "score_function_loo"]
    if len(loo) and len(dr):
        g = int(loo["n_samples"].max())
        pair = rows[(rows["n_samples"] == g) & rows["base"].isin(["dr_grpo", "score_function_loo"])]
        exact = pair.groupby("base")["exact_var"].mean() * g
        cost = "" if len(exact) < 2 else (f" (per-sample variance {fmt(exact['score_function_loo'], 3)} against "
                                          f"dr_grpo's {fmt(exact['dr_grpo'], 3)} at G = {g}, averaged over θ)")  # fmt: skip
        sentences.append("To remove the bias, use score_function_loo (RLOO): its estimate is dr_grpo's times "
                         f"G/(G − 1), so it is unbiased at the same cost, its variance larger by (G/(G − 1))²{cost}.")  # fmt: skip
    return [" ".join(sentences), ""] if sentences else []


def policy_section(ok: pd.DataFrame) -> list[str]:
    if ok.empty or "exact_mean" not in ok:
        return []
    base = ok["base"] if "base" in ok else ok["estimator"]
    rows = ok.assign(base=base)
    rows = rows[(rows["problem"] == POLICY_PROBLEM) & rows["base"].isin(GROUP_BASELINES)
                & (rows["variance_reduction"] == "none")]  # fmt: skip
    if rows.empty:
        return []
    lines = ["## Group baselines on categorical_policy", "",
             "The N samples of one estimate are the group (G = N). Exact bias is the exact mean of one estimate, by "
             "enumeration of the group's outcomes, minus dL/dθ; the measured bias is the sampled mean minus dL/dθ. "
             "score_function_loo (RLOO) is the unbiased reference.", ""]  # fmt: skip
    rows = rows.assign(success0=[json.loads(p).get("success0", np.nan) for p in rows["problem_params"]],
                       others=[json.dumps({k: v for k, v in json.loads(p).items() if k != "success0"}, sort_keys=True)
                               for p in rows["problem_params"]])  # fmt: skip
    default = PROBLEMS.get(POLICY_PROBLEM).defaults["success0"]
    for (params, wrt, device, dtype), group in rows.groupby(["problem_params", "wrt", "device", "dtype"], sort=True):
        if group["success0"].iloc[0] != default and (rows["success0"] == default).any():
            continue  # other success rates of the best action: the table below, against that rate
        values = ", ".join(f"{k}={v:g}" for k, v in sorted(json.loads(params).items()))
        lines += [f"### {POLICY_PROBLEM}({values}) wrt {wrt} — {device}, {dtype}", ""]
        lines += _table(group) + advice(group)
    for (others, wrt, device, dtype), group in rows.groupby(["others", "wrt", "device", "dtype"], sort=True):
        if group["success0"].nunique() > 1:
            lines += _success_rate_table(group, others, wrt, device, dtype)
    return lines


def _success_rate_table(rows: pd.DataFrame, others: str, wrt: str, device: str, dtype: str) -> list[str]:
    """GRPO's and Dr. GRPO's bias against the best action's success rate s₀, at every θ and G measured at more than
    one s₀: GRPO's division by the group's reward spread makes its bias depend on the task, Dr. GRPO's does not."""
    values = ", ".join(f"{k}={v:g}" for k, v in sorted(json.loads(others).items()))
    lines = [f"### Against the best action's success rate s₀: {POLICY_PROBLEM}({values}) wrt {wrt} — {device}, {dtype}", "",
             "| θ | G | s₀ | dL/dθ | grpo: exact bias (relative) | grpo: measured bias ± 1.96·se | dr_grpo: exact bias (relative) "
             "| exact per-sample variance: grpo / RLOO |", "|---:|---:|---:|---:|---|---|---|---|"]  # fmt: skip
    by = {base: rows[rows["base"] == base].set_index(["theta", "n_samples", "success0"]) for base in GROUP_BASELINES}
    keys = sorted(set(by["grpo"].index) & set(by["dr_grpo"].index))
    keys = [k for k in keys if sum(1 for j in keys if j[:2] == k[:2]) > 1]
    ratios = []
    for key in keys:
        grpo, dr = by["grpo"].loc[key], by["dr_grpo"].loc[key]
        loo = by["score_function_loo"].loc[key] if key in by["score_function_loo"].index else None
        variance = f"{fmt(grpo['exact_var'] * key[1], 3)} / {fmt(loo['exact_var'] * key[1], 3) if loo is not None else '—'}"
        lines.append(f"| {key[0]:g} | {key[1]} | {key[2]:g} | {fmt(grpo['true_grad'])} | {fmt(exact_bias(grpo), 3)} "
                     f"({_percent(relative_bias(grpo))}) | {fmt(grpo['bias'], 3)} ± {fmt(Z95 * grpo['bias_se'], 2)} "
                     f"| {fmt(exact_bias(dr), 3)} ({_percent(relative_bias(dr))}) | {variance} |")  # fmt: skip
        if grpo["true_grad"] != 0 and np.isfinite(grpo["exact_mean"]):
            ratios.append((grpo["exact_mean"] / grpo["true_grad"], key))
    lines.append("")
    if ratios:
        (low, at_low), (high, at_high) = min(ratios), max(ratios)
        lines += [f"Over these success rates grpo's mean runs from {fmt(low, 3)}× the gradient (s₀ = {at_low[2]:g}, "
                  f"G = {at_low[1]}) to {fmt(high, 3)}× (s₀ = {at_high[2]:g}, G = {at_high[1]}), while dr_grpo stays at "
                  "(G − 1)/G whatever s₀: GRPO's bias is a property of the task, not only of the group size, so a "
                  "number measured on one task does not carry over to another.", ""]  # fmt: skip
    return lines

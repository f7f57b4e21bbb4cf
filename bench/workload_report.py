"""The report's section on real workloads: variance along training and a work-normalised ranking per checkpoint.

A workload row summarises a gradient *vector* (see results/README.md): grad_var is the mean per-coordinate
variance, grad_var_max the largest, grad_norm_var the variance of ‖ĝ‖, bias the norm of the bias vector and
bias_z the worst coordinate's z (Bonferroni-corrected p-value).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from estimators.workloads import WORKLOADS

from . import plots
# The scalar report's formatting and ranking rule (an estimator biased in theory, or measurably biased here, is
# never ranked); report.py imports this module only inside write_report, so the import is not circular.
from .report import _fmt, _ranked

def ranking_table(rows: pd.DataFrame) -> list[str]:
    ranked = _ranked(rows)
    fair = ranked[ranked["rank"].notna()]
    best = fair["work_normalized_var"].iloc[0] if len(fair) else math.nan
    lines = [
        "| rank | estimator | mean per-coordinate variance [95% CI] | max coordinate variance | variance of ‖ĝ‖ "
        "| verdict: ‖mean − exact‖ / ‖exact‖, noise included (worst coordinate z) | µs / estimate "
        "| work-normalised variance | × best (< 1.5: a tie within timing noise) |",
        "|---:|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for _, row in ranked.iterrows():
        ratio = row["work_normalized_var"] / best if row["rank"] is not None and best > 0 else math.nan
        relative = row["bias"] / row["true_grad"] if row["true_grad"] else math.nan
        verdict = "**BIASED**" if row["biased"] else ("unbiased" if row["expected_unbiased"] else "biased in general")
        lines.append(
            f"| {row['rank'] if row['rank'] is not None else '—'} | {row['estimator']} "
            f"| {_fmt(row['grad_var'])} [{_fmt(row['grad_var_ci_low'], 3)}, {_fmt(row['grad_var_ci_high'], 3)}] "
            f"| {_fmt(row['grad_var_max'], 3)} | {_fmt(row['grad_norm_var'], 3)} "
            f"| {verdict}: {_fmt(relative, 3)} (z = {_fmt(row['bias_z'], 3)}) "
            f"| {_fmt(row['seconds_per_estimate'] * 1e6, 3)} | {_fmt(row['work_normalized_var'], 3)} | {_fmt(ratio, 3)} |"
        )
    return lines


def _best_by_checkpoint(group: pd.DataFrame, n: int) -> str:
    parts = []
    for step, rows in group[group["n_samples"] == n].groupby("theta"):
        fair = _ranked(rows)
        fair = fair[fair["rank"].notna()]
        if len(fair):
            parts.append(f"step {step:g}: **{fair.iloc[0]['estimator']}**")
    return "; ".join(parts)


def choice_lines(ok: pd.DataFrame) -> list[str]:
    """Lines for the report's 'Which estimator to choose' section: the best per checkpoint of each workload."""
    lines = []
    rows_all = ok[ok["problem"].isin(WORKLOADS)]
    for (problem, device, dtype), group in rows_all.groupby(["problem", "device", "dtype"], sort=False):
        n_max = int(group["n_samples"].max())
        lines.append(f"- workload `{problem}` [{device}, {dtype}], N = {n_max}: {_best_by_checkpoint(group, n_max)} "
                     "(see Real workloads)")  # fmt: skip
    return lines


def workload_biases(ok: pd.DataFrame) -> list[str]:
    """Lines for the report's 'Biased estimators' section."""
    lines = []
    rows_all = ok[ok["problem"].isin(WORKLOADS) & ok["biased"].astype(bool)]
    for (problem, estimator), rows in rows_all.groupby(["problem", "estimator"], sort=False):
        worst = rows.loc[rows["bias_z"].abs().idxmax()]
        lines.append(
            f"- **{estimator}** on workload `{problem}`: biased in {len(rows)} of "
            f"{int(((ok['problem'] == problem) & (ok['estimator'] == estimator)).sum())} cells. Worst: step "
            f"{worst['theta']:g}, N = {worst['n_samples']}: ‖bias‖ = {_fmt(worst['bias'])} against ‖exact‖ = "
            f"{_fmt(worst['true_grad'])}, worst coordinate z = {_fmt(worst['bias_z'], 3)}."
            + (" **Theory says unbiased: investigate.**" if worst["expected_unbiased"] else "")
        )
    return lines


def workload_sections(ok: pd.DataFrame, skipped: pd.DataFrame, out_dir: Path) -> list[str]:
    rows_all = ok[ok["problem"].isin(WORKLOADS)]
    if not len(rows_all):
        return []
    lines = [
        "## Real workloads",
        "",
        "The gradient of a real objective w.r.t. a whole parameter vector, at checkpoints of a short training run "
        "(θ = the training step). Variance is summarised over the P coordinates: the mean per-coordinate variance "
        "tr(Σ)/P (ranked, with a 95% interval), the largest coordinate's, and the variance of the gradient's norm. "
        "Bias is tested per coordinate against the ground truth (its own error included) and the worst z is shown "
        "(Bonferroni over P). The ranking is by work-normalised variance at the largest N, per checkpoint, because "
        "the best estimator changes along training.",
        "",
    ]
    for (problem, device, dtype), group in rows_all.groupby(["problem", "device", "dtype"], sort=False):
        workload = WORKLOADS[problem]
        n_max = int(group["n_samples"].max())
        lines += [f"### {problem} — {device}, {dtype}", "", workload.summary + ".", "",
                  f"Ground truth: {workload.ground_truth}.", ""]  # fmt: skip
        checkpoints = group.groupby("theta").first().reset_index()
        lines += ["| training step | objective (ELBO) | ‖exact gradient‖ | ground-truth error (‖·‖) |", "|---:|---:|---:|---:|"]
        lines += [f"| {r.theta:g} | {_fmt(r.objective, 6)} | {_fmt(r.true_grad)} | {_fmt(r.true_grad_se, 2)} |"
                  for r in checkpoints.itertuples()]  # fmt: skip
        lines += ["", f"Best by work-normalised variance at N = {n_max}: {_best_by_checkpoint(group, n_max)}.", ""]
        for step, rows in group[group["n_samples"] == n_max].groupby("theta"):
            lines += [f"**step {step:g}, N = {n_max}**", ""] + ranking_table(rows) + [""]
        slug = f"workload_{problem}_{device}_{dtype}".replace(":", "_")
        figure = plots.variance_along_training(group, problem, out_dir / f"{slug}_variance_along_training.png")
        lines += [f"![]({figure.name})", ""]
        mine = skipped[skipped["problem"] == problem]
        for note, rows in mine.groupby("note", sort=False):
            lines.append(f"- skipped ({note}): {', '.join(f'`{e}`' for e in dict.fromkeys(rows['estimator']))}")
        lines.append("")
    return lines

"""The report's section on real workloads: variance along training and a work-normalised ranking per checkpoint.

A workload row summarises a gradient *vector* (docs/schema.md): grad_var is the mean per-coordinate
variance, grad_var_max the largest, grad_norm_var the variance of ‖ĝ‖, bias the norm of the bias vector and
bias_z the worst coordinate's z (Bonferroni-corrected p-value).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from estimators import PROBLEMS, ProblemError, make_problem

from . import plots, verdict
from .verdict import fmt


def episodes_per_second(row) -> float:
    """Episodes an episodic workload's estimator rolls out per second of one thread's CPU time, those its baseline
    is fitted on included: samples/s × episodes per sample (cost_evals_per_sample)."""
    return row["samples_per_second"] * row["cost_evals_per_sample"]


def ranking_table(rows: pd.DataFrame, episodic: bool = False) -> list[str]:
    decided = verdict.by_cost(rows)
    lines = [
        "| rank | estimator | mean per-coordinate variance [95% CI] | max coordinate variance | variance of ‖ĝ‖ "
        "| verdict: ‖mean − exact‖ / ‖exact‖, noise included (worst coordinate z) | cost per sample / RNG floor [95% CI] "
        "| µs / estimate | work-normalised variance [95% CI] | × best = variance × cost [95% CIs] |"
        + (" episodes / s (one thread) |" if episodic else ""),
        "|---:|---|---|---:|---:|---|---|---:|---|---|" + ("---:|" if episodic else ""),
    ]
    for row, rank, comparison in verdict.ranked(rows, decided):
        relative = row["bias"] / row["true_grad"] if row["true_grad"] else math.nan
        flag = "**BIASED**" if row["biased"] is True else ("unbiased" if row["expected_unbiased"] else "biased in general")
        lines.append(
            f"| {rank} | {row['estimator']} "
            f"| {fmt(row['grad_var'])} [{fmt(row['grad_var_ci_low'], 3)}, {fmt(row['grad_var_ci_high'], 3)}] "
            f"| {fmt(row['grad_var_max'], 3)} | {fmt(row['grad_norm_var'], 3)} "
            f"| {flag}: {fmt(relative, 3)} (z = {fmt(row['bias_z'], 3)}) "
            f"| {fmt(row['relative_cost'], 3)} [{fmt(row['relative_cost_ci_low'], 3)}, {fmt(row['relative_cost_ci_high'], 3)}] "
            f"| {fmt(row['seconds_per_estimate'] * 1e6, 3)} "
            f"| {fmt(row['work_normalized_var'], 3)} [{fmt(row['work_normalized_var_ci_low'], 3)}, "
            f"{fmt(row['work_normalized_var_ci_high'], 3)}] | {verdict.comparison_text(comparison)} |"
            + (f" {fmt(episodes_per_second(row), 3)} |" if episodic else "")
        )
    return lines


def _best_by_checkpoint(group: pd.DataFrame, n: int) -> str:
    parts = []
    for step, rows in group[group["n_samples"] == n].groupby("theta"):
        decided = verdict.by_cost(rows)
        if decided.best is not None:
            parts.append(f"step {step:g}: {decided.text()}")
    return "; ".join(parts)


def choice_lines(ok: pd.DataFrame) -> list[str]:
    """Lines for the report's 'Which estimator to choose' section: the best per checkpoint of each workload."""
    lines = []
    rows_all = ok[ok["n_params"] > 1]
    for (problem, device, dtype), group in rows_all.groupby(["problem", "device", "dtype"], sort=False):
        n_max = int(group["n_samples"].max())
        lines.append(f"- workload `{problem}` [{device}, {dtype}], N = {n_max}: {_best_by_checkpoint(group, n_max)} "
                     "(see Real workloads)")  # fmt: skip
    return lines


def workload_biases(ok: pd.DataFrame) -> list[str]:
    """Lines for the report's 'Biased estimators' section."""
    lines = []
    rows_all = ok[(ok["n_params"] > 1) & ok["biased"].eq(True)]
    for (problem, estimator), rows in rows_all.groupby(["problem", "estimator"], sort=False):
        worst = rows.loc[rows["bias_z"].abs().idxmax()]
        lines.append(
            f"- **{estimator}** on workload `{problem}`: biased in {len(rows)} of "
            f"{int(((ok['problem'] == problem) & (ok['estimator'] == estimator)).sum())} cells. Worst: step "
            f"{worst['theta']:g}, N = {worst['n_samples']}: ‖bias‖ = {fmt(worst['bias'])} against ‖exact‖ = "
            f"{fmt(worst['true_grad'])}, worst coordinate z = {fmt(worst['bias_z'], 3)}."
            + (" **Theory says unbiased: investigate.**" if worst["expected_unbiased"] else "")
        )
    return lines


def _described(problem: str) -> tuple[str, str, bool]:
    """(summary, ground truth, whether its samples are episodes) of a workload, from its registration; placeholders
    for one this version lacks."""
    try:
        built = make_problem(problem)
        return PROBLEMS.get(problem).summary, built.workload.ground_truth, built.episodes is not None
    except (ProblemError, AttributeError):
        return f"{problem} (not known to this version of varbench)", "unknown", False


def workload_sections(ok: pd.DataFrame, skipped: pd.DataFrame, out_dir: Path) -> list[str]:
    rows_all = ok[ok["n_params"] > 1]
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
        summary, ground_truth, episodic = _described(problem)
        n_max = int(group["n_samples"].max())
        lines += [f"### {problem} — {device}, {dtype}", "", summary + ".", "",
                  f"Ground truth: {ground_truth}.", ""]  # fmt: skip
        if episodic:
            lines += ["Its samples are episodes: N is episodes per estimate, a cost evaluation is one episode rolled "
                      "out (a baseline fitted on N separate episodes costs 2 per sample), and throughput is episodes "
                      "per second of one thread's CPU time, those episodes included.", ""]  # fmt: skip
        checkpoints = group.groupby("theta").first().reset_index()
        objective = "expected return" if episodic else "ELBO"
        lines += [f"| training step | objective ({objective}) | ‖exact gradient‖ | ground-truth error (‖·‖) |",
                  "|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r.theta:g} | {fmt(r.objective, 6)} | {fmt(r.true_grad)} | {fmt(r.true_grad_se, 2)} |"
                  for r in checkpoints.itertuples()]  # fmt: skip
        lines += ["", f"Best by work-normalised variance at N = {n_max}: {_best_by_checkpoint(group, n_max)}.", ""]
        for step, rows in group[group["n_samples"] == n_max].groupby("theta"):
            lines += [f"**step {step:g}, N = {n_max}**", ""] + ranking_table(rows, episodic) + [""]
        slug = f"workload_{problem}_{device}_{dtype}".replace(":", "_")
        figure = plots.variance_along_training(group, problem, out_dir / f"{slug}_variance_along_training.png")
        lines += [f"![]({figure.name})", ""]
        mine = skipped[skipped["problem"] == problem]
        for note, rows in mine.groupby("note", sort=False):
            lines.append(f"- skipped ({note}): {', '.join(f'`{e}`' for e in dict.fromkeys(rows['estimator']))}")
        lines.append("")
    return lines

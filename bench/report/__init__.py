"""Render ``report.md`` and its PNG plots from a results table, without re-running anything."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import ESTIMATORS, PEER_STATUS, PROBLEMS, VARIANCE_REDUCTIONS, ProblemError, Registry, describe, make_problem


from .. import environment, regression, run_folder
from ..statistics import BIAS_ALPHA, ROUNDING_ULPS, Z95, bias_critical_z, familywise_biased
from ..table import TABLE_NAME, TableError, latest_rows, load_table
from . import interactive, page, plots, verdict
from .verdict import fmt
from .exact import exact_section
from .policy import policy_section
from .workloads import choice_lines, workload_biases, workload_sections

INSTANCE = ["problem", "problem_params", "wrt", "device", "dtype"]


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts)).strip("_")


def _title(problem: str, params_json: str, wrt: str) -> str:
    params = json.loads(params_json) if params_json else {}
    inner = ", ".join(f"{k}={v:g}" for k, v in sorted(params.items()))
    return f"{problem}({inner}) wrt {wrt}"


def _formula(problem: str, params_json: str, wrt: str) -> str:
    try:
        return make_problem(problem, wrt, json.loads(params_json)).gradient_formula
    except (ProblemError, ValueError):
        return "(problem not known to this version of varbench)"


def _verdict(row: pd.Series) -> str:
    if row["variance_infinite"] is True:
        return "no verdict: infinite variance"
    if row["biased"] is True:
        flag = "**BIASED**"
        if row["expected_unbiased"]:
            # A note explains some of these (samples clamped by the dtype); otherwise it is a bug or a false alarm.
            flag += " (theory says unbiased: see the ⚠ note below)" if row["note"] else " (theory says unbiased: investigate)"
        return flag
    if row.get("per_cell_biased") is True:
        return "unbiased (p < 0.001 in this cell, within chance across the report)"
    return "unbiased" if row["expected_unbiased"] else "biased in general; bias not detectable here"


def _interval(value: float, low: float, high: float, scale: float = 1.0, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{fmt(value * scale, digits)} [{fmt(low * scale, 3)}, {fmt(high * scale, 3)}]"


def _exact_mean(row: pd.Series) -> str:
    """The exact gradient, and the estimator's own exact mean where it differs (a biased estimator's)."""
    text = fmt(row["true_grad"])
    mean = row.get("exact_mean")
    if mean is not None and np.isfinite(mean) and not math.isclose(mean, row["true_grad"], rel_tol=1e-9, abs_tol=1e-12):
        text += f" (its mean {fmt(mean)})"
    return text


def _exact_variance(row: pd.Series) -> str:
    exact = row.get("exact_var")
    if exact is None or not np.isfinite(exact):
        return ""
    return f" / {fmt(exact * row['n_samples'])}" + (" ✗" if row.get("exact_var_covered") is False else "")


def ranking_table(rows: pd.DataFrame) -> list[str]:
    """One θ at one N: a Markdown table of estimators ranked by work-normalised variance, with the ratio to the
    best split into its variance and cost factors (each with its 95% interval)."""
    decided = verdict.by_cost(rows)
    lines = [
        "| rank | estimator | mean ± 1.96·se | exact | bias verdict (z) | per-sample variance [95% CI] / exact "
        "| cost per sample / RNG floor [95% CI] | µs / estimate | work-normalised variance [95% CI] "
        "| × best = variance × cost [95% CIs] |",
        "|---:|---|---|---:|---|---|---|---:|---|---|",
    ]
    for row, rank, comparison in verdict.ranked(rows, decided):
        n = row["n_samples"]
        lines.append(
            f"| {rank} | {row['estimator']} "
            f"| {fmt(row['grad_mean'])} ± {fmt(Z95 * row['bias_se'], 2)} | {_exact_mean(row)} "
            f"| {_verdict(row)} ({fmt(row['bias_z'], 3)}) "
            f"| {'∞ (sample value ' + fmt(row['per_sample_var']) + ')' if row['variance_infinite'] is True else _interval(row['grad_var'], row['grad_var_ci_low'], row['grad_var_ci_high'], n)}{_exact_variance(row)} "
            f"| {_interval(row['relative_cost'], row['relative_cost_ci_low'], row['relative_cost_ci_high'], digits=3)} "
            f"| {fmt(row['seconds_per_estimate'] * 1e6, 3)} "
            f"| {_interval(row['work_normalized_var'], row['work_normalized_var_ci_low'], row['work_normalized_var_ci_high'], digits=3)} "
            f"| {verdict.comparison_text(comparison)} |"
        )
    return lines


def _not_recommended(rows: pd.DataFrame) -> str:
    names = []
    for r in rows[~verdict.rankable(rows)].itertuples():
        if r.variance_infinite is True:
            names.append(f"{r.estimator} (infinite variance)")
        elif r.biased is True:
            names.append(f"**{r.estimator}**")
        elif not r.expected_unbiased:
            names.append(f"{r.estimator} (bias not detectable here)")
    return ", ".join(names) or "none"


def _choice_rows(ok: pd.DataFrame) -> list[str]:
    """The verdicts alone (no measured numbers), so that two runs of one seed give the same table unless a
    verdict itself changed; the ranking tables below give each ratio with its variance and cost factors."""
    lines = [
        "| problem | θ | N | choose (work-normalised variance, measured cost) "
        "| by variance × cost evaluations (no timing) | not recommended |",
        "|---|---:|---:|---|---|---|",
    ]
    for key, group in ok.groupby(INSTANCE, sort=False):
        n_max = group["n_samples"].max()
        for theta, rows in group[group["n_samples"] == n_max].groupby("theta"):
            title = _title(key[0], key[1], key[2])
            lines.append(f"| {title} [{key[3]}, {key[4]}] | {theta:g} | {n_max} | {verdict.by_cost(rows).text()} "
                         f"| {verdict.by_evaluations(rows).text()} | {_not_recommended(rows)} |")  # fmt: skip
    return lines


_INFINITE_VARIANCE = (
    "A cell marked *infinite variance* is one where the problem declares the estimates' second moment infinite "
    "at that θ, although the gradient exists: the sample variance of any number of estimates is a finite number "
    "that keeps growing with M, so neither a variance interval, nor a bias z-test (which divides by it), nor a "
    "work-normalised ranking means anything there. Those cells get no bias verdict and no rank; their mean is "
    "shown for what it is worth."
)


def _infinite_variance_lines(ok: pd.DataFrame) -> list[str]:
    rows = ok[ok["variance_infinite"].eq(True)]
    if rows.empty:
        return []
    lines = ["## Infinite variance", "", _INFINITE_VARIANCE, ""]
    for (problem, params_json, wrt), group in rows.groupby(["problem", "problem_params", "wrt"], sort=False):
        where = ", ".join(sorted({f"{r.estimator} θ={r.theta:g} N={r.n_samples}" for r in group.itertuples()}))
        reason = group["note"].iloc[0].split(";")[0].removeprefix("infinite variance: ")
        lines.append(f"- `{_title(problem, params_json, wrt)}`: {reason} ({where})")
    return lines + [""]


def _bias_warnings(ok: pd.DataFrame) -> list[str]:
    """One line per (problem family, wrt, estimator) with a significant bias, worst cell as the example."""
    lines = []
    flagged = ok[ok["biased"].eq(True)]
    # The seed problem first: it is the case users meet in practice (a wrong, non-zero gradient).
    # In the order problems are registered (the seed problems first), so the report leads with the familiar case.
    order = {name: index for index, name in enumerate(PROBLEMS.names())}
    groups = sorted(flagged.groupby(["problem", "wrt", "estimator"], sort=False), key=lambda g: order.get(g[0][0], len(order)))
    for (problem, wrt, estimator), rows in groups:
        worst = rows.loc[rows["bias_z"].abs().idxmax()]
        lines.append(
            f"- **{estimator}** on `{problem}` wrt {wrt}: biased in {len(rows)} cells. Worst: "
            f"`{_title(problem, worst['problem_params'], wrt)}` at θ = {worst['theta']:g}, N = {worst['n_samples']}: mean "
            f"{fmt(worst['grad_mean'])} ± {fmt(Z95 * worst['bias_se'], 2)}, exact {fmt(worst['true_grad'])} "
            f"(bias {fmt(worst['bias'])}, z = {fmt(worst['bias_z'], 3)})."
            + (" **Theory says this estimator is unbiased here: a bug or a false alarm.**"
               if worst["expected_unbiased"] and not worst["note"] else "")
        )
        if worst["expected_unbiased"] and worst["note"]:
            lines.append(f"  Theory says unbiased; this cell's note explains it: {worst['note']}")
        note = _problem_note(problem, worst["problem_params"], wrt, worst["base"])
        if note:
            lines.append(f"  {note}")
        elif (rows["grad_mean"] == 0).all() and (rows["grad_var"] == 0).all():
            lines.append("  It returns 0 every time: θ reaches L only through p here, which this estimator does not "
                         "differentiate (autograd through a non-reparameterised sample).")
    return lines


def _chance_flags(ok: pd.DataFrame) -> list[str]:
    """The cells of estimators that theory calls unbiased whose per-cell test fired but not the report-wide one."""
    tested = ok[ok["expected_unbiased"].eq(True) & ok["bias_p_value"].notna()]
    chance = tested[tested["per_cell_biased"].eq(True) & ~tested["biased"].eq(True)]
    if chance.empty:
        return []
    where = "; ".join(f"{r.estimator} on `{_title(r.problem, r.problem_params, r.wrt)}` θ = {r.theta:g}, N = {r.n_samples} "
                      f"(z = {fmt(r.bias_z, 3)})" for r in chance.itertuples())  # fmt: skip
    verb = "has" if len(chance) == 1 else "have"
    return [f"Within chance: {len(chance)} of the {len(tested)} cells of estimators that theory calls unbiased {verb} "
            f"p < {BIAS_ALPHA:g} in their own test, where about {len(tested) * BIAS_ALPHA:.2g} are expected by chance, "
            f"and none of them stays significant after Holm's correction across the {len(tested)}: {where}. They "
            "are ranked as unbiased.", ""]  # fmt: skip


def _with_problem_params(ok: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """(rows with one column per problem parameter, each row's parameter dict), index reset."""
    ok = ok.reset_index(drop=True)
    params = ok["problem_params"].map(lambda s: json.loads(s) if s else {})
    return pd.concat([ok, pd.DataFrame(list(params), index=ok.index)], axis=1), params


def _parameter_sweeps(ok: pd.DataFrame, out_dir: Path) -> list[str]:
    """Plots of variance against a problem parameter swept at fixed θ (Mohamed et al. Fig. 2 style)."""
    lines = []
    expanded, params = _with_problem_params(ok)
    for (problem, wrt, device, dtype), family in expanded.groupby(["problem", "wrt", "device", "dtype"], sort=False):
        names = sorted(set().union(*params[family.index]))
        for parameter in names:
            others = [p for p in names if p != parameter]
            for fixed, rows in family.groupby(["theta", *others], sort=False):
                if rows[parameter].nunique() < 3 or parameter == "dim":  # dim: log–log in _dimension_sweeps
                    continue
                fixed = fixed if isinstance(fixed, tuple) else (fixed,)
                label = ", ".join(f"{name}={value:g}" for name, value in zip(["θ", *others], fixed))
                title = f"{problem} wrt {wrt} ({label})"
                path = plots.per_sample_variance_vs(
                    rows, parameter, title, out_dir / f"{_slug(problem, wrt, 'vs', parameter, *fixed, device, dtype)}.png"
                )
                lines += [f"### {title} [{device}, {dtype}]: variance against {parameter}", "", f"![]({path.name})", ""]
    return lines


def _problem_note(problem: str, params_json: str, wrt: str, estimator: str) -> str:
    """What the problem says about an estimator on it (``Problem.estimator_notes``); '' if nothing or unknown."""
    try:
        return make_problem(problem, wrt, json.loads(params_json)).estimator_notes.get(estimator, "")
    except (ProblemError, ValueError):
        return ""


def _relaxation_bias_figures(group: pd.DataFrame, problem: str, params_json: str, wrt: str, title: str,
                             path: Path) -> list[Path]:
    """Bias vs temperature of the relaxations (estimators biased in theory with a ``temperature`` parameter) at
    the largest N, with the exact bias where the problem knows it (``Problem.exact_mean``), when some θ has at
    least two temperatures."""
    temperature = group["estimator_params"].map(lambda s: json.loads(s).get("temperature", math.nan))
    rows = group[temperature.notna() & group["expected_unbiased"].eq(False) & (group["variance_reduction"] == "none")]
    if rows.empty:
        return []
    rows = rows.assign(temperature=temperature[rows.index])
    rows = rows[rows["n_samples"] == rows["n_samples"].max()]
    rows = rows[rows.groupby(["base", "theta"])["temperature"].transform("nunique") >= 2]
    if rows.empty:
        return []
    exact = {}
    try:
        instance = make_problem(problem, wrt, json.loads(params_json))
    except (ProblemError, ValueError):
        instance = None
    if instance is not None:
        taus = np.geomspace(rows["temperature"].min() / 1.5, rows["temperature"].max() * 1.5, 25)
        for (base, theta), _ in rows.groupby(["base", "theta"]):
            known = instance.exact_mean
            means = [known(theta, base, {"temperature": tau}) if known else None for tau in taus]
            if all(m is not None for m in means):
                exact[(base, theta)] = (taus, np.array(means) - instance.gradient(theta))
    return [plots.relaxation_bias_vs_temperature(rows, title, path, exact)]


def variance_reduction_factors(ok: pd.DataFrame) -> pd.DataFrame:
    """Each variance-reduced cell's grad_var over its plain-MC twin (same instance, θ, N, estimator variant).

    The two cells have independent seeds, so the log ratio's standard error is the root sum of squares of the
    two cells' relative variance standard errors; the interval is ratio·exp(±1.96·se).
    """
    ok = ok.assign(base=[describe(e, json.loads(p)) for e, p in zip(ok["base"], ok["estimator_params"])])
    key = [*INSTANCE, "theta", "n_samples", "base"]
    plain = ok[ok["variance_reduction"] == "none"].drop_duplicates(key, keep="last").set_index(key)
    rows = []
    for row in ok[ok["variance_reduction"] != "none"].itertuples(index=False):
        twin_key = tuple(getattr(row, k) for k in key)
        if twin_key not in plain.index:
            continue
        twin = plain.loc[twin_key]
        if not twin["grad_var"] > 0:
            continue
        ratio = row.grad_var / twin["grad_var"]
        se = math.hypot(row.grad_var_rel_se, twin["grad_var_rel_se"])
        se = se if math.isfinite(se) else math.inf
        work = row.work_normalized_var / twin["work_normalized_var"] if twin["work_normalized_var"] > 0 else math.nan
        rows.append({**dict(zip(key, twin_key)), "scheme": row.variance_reduction, "ratio": ratio,
                     "ratio_low": ratio * math.exp(-Z95 * se), "ratio_high": ratio * math.exp(Z95 * se),
                     "work_ratio": work, "bias_z": row.bias_z, "biased": row.biased})  # fmt: skip
    return pd.DataFrame(rows, columns=[*key, "scheme", "ratio", "ratio_low", "ratio_high", "work_ratio", "bias_z", "biased"])


def _variance_reduction_section(ok: pd.DataFrame, out_dir: Path) -> list[str]:
    """Variance of every scheme relative to plain Monte Carlo, per problem instance: a plot and a table."""
    factors = variance_reduction_factors(ok)
    if factors.empty:
        return []
    lines = [
        "## Variance reduction against plain Monte Carlo",
        "",
        "Variance of the N-sample estimate under each scheme divided by that of the same estimator with plain Monte "
        "Carlo at the same problem, θ and N (below 1 helps), with a 95% interval from both cells' variance standard "
        "errors. *Work ratio* divides the work-normalised variances, so it charges the scheme's extra time "
        "(scrambling Sobol points, the baseline's per-sample derivatives). Under `qmc` the samples of one estimate "
        "are dependent, so only the N-sample variance means anything (not per-sample variance). A scheme can make "
        "things worse: antithetic pairs double the variance of a per-sample estimate that is even in ε, and the "
        "delta method's quadratic h is a poor control variate for a bounded cost whose expansion grows in the tails.",
        "",
    ]
    for key, rows in factors.groupby(INSTANCE, sort=False):
        problem, params_json, wrt, device, dtype = key
        title = _title(problem, params_json, wrt)
        path = plots.variance_reduction_factor(
            rows, title, out_dir / f"{_slug(problem, wrt, *json.loads(params_json).values(), device, dtype)}_variance_reduction.png"
        )
        lines += [f"### {title} — {device}, {dtype}", "", f"![]({path.name})", ""]
        lines += [
            "| θ | estimator | scheme | N | variance ratio [95% CI] | work ratio | bias z |",
            "|---:|---|---|---:|---|---:|---:|",
        ]
        for row in rows.sort_values(["theta", "base", "scheme", "n_samples"]).itertuples():
            flag = " **BIASED**" if row.biased else ""
            lines.append(
                f"| {row.theta:g} | {row.base} | {row.scheme} | {row.n_samples} "
                f"| {fmt(row.ratio, 3)} [{fmt(row.ratio_low, 3)}, {fmt(row.ratio_high, 3)}] "
                f"| {fmt(row.work_ratio, 3)} | {fmt(row.bias_z, 3)}{flag} |"
            )
        lines.append("")
    return lines


def _dimension_sweeps(ok: pd.DataFrame, out_dir: Path) -> list[str]:
    """Log–log plots of per-sample variance against the dimension D for problems with a ``dim`` parameter."""
    lines = []
    expanded, params = _with_problem_params(ok)
    with_dim = params.map(lambda p: "dim" in p)
    if not with_dim.any():
        return lines
    expanded = expanded[with_dim]
    others = sorted(set().union(*params[with_dim]) - {"dim"})
    for fixed, rows in expanded.groupby(["problem", "wrt", "device", "dtype", "theta", *others], sort=False):
        # Estimator variants measured at a single D (a finite-difference step sweep at one D) are no curve.
        rows = rows[rows.groupby("estimator")["dim"].transform("nunique") > 1]
        if rows["dim"].nunique() < 2:
            continue
        problem, wrt, device, dtype, theta, *values = fixed
        label = ", ".join(f"{name}={value:g}" for name, value in zip(["θ", *others], [theta, *values]))
        title = f"{problem} wrt {wrt} ({label})"
        path = plots.variance_vs_dimension(rows, title, out_dir / f"{_slug(problem, wrt, 'vs_dim', theta, *values, device, dtype)}.png")
        n_max = rows["n_samples"].max()
        at_n = rows[rows["n_samples"] == n_max]
        table = at_n.pivot_table(index="estimator", columns="dim", values="per_sample_var", aggfunc="last")
        lines += [f"### {title} [{device}, {dtype}]: variance against D", "", f"![]({path.name})", "",
                  f"Per-sample variance at N = {n_max}:", "",
                  "| estimator | " + " | ".join(f"D = {d:g}" for d in table.columns) + " |",
                  "|---|" + "---:|" * len(table.columns)]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(fmt(v) for v in row) + " |" for name, row in table.iterrows()]
        lines.append("")
    return lines


@dataclass(frozen=True)
class ReportContext:
    """What every report section reads: the folder, and the latest row of every cell split by kind."""

    out_dir: Path
    frame: pd.DataFrame  # every cell, latest row; ``estimator`` is the variant's label, ``base`` its registry name
    ok: pd.DataFrame  # measured cells with a scalar θ (bias flags after the report-wide Holm rule)
    workloads: pd.DataFrame  # measured cells of problems whose θ is a parameter vector
    skipped: pd.DataFrame
    errors: pd.DataFrame


@dataclass(frozen=True)
class Section:
    """A part of report.md: ``render(context)`` returns its Markdown lines ([] to leave it out); sections are
    written in increasing ``order``."""

    order: float
    render: Callable[[ReportContext], list[str]]


@dataclass(frozen=True)
class ProblemPlot:
    """A figure in every problem's section: ``draw(group, title, stem)`` draws the rows of one problem instance to
    files named from ``stem`` (a path without suffix) and returns their Markdown ([] when it has nothing to show)."""

    order: float
    draw: Callable[[pd.DataFrame, str, Path], list[str]]


# The report's parts and the figures of each problem section, registered like problems and estimators: a user
# adds one with SECTIONS.register(name, Section(order, render)) or PLOTS.register(name, ProblemPlot(order, draw)).
SECTIONS: Registry[Section] = Registry("report section", ValueError)
PLOTS: Registry[ProblemPlot] = Registry("report plot", ValueError)


def write_report(out_dir: Path, workers: int = 1) -> Path:
    """Read ``out_dir/table.csv``, draw the plots beside it and write ``out_dir/report.md``: its registered sections
    in order, and ``out_dir/report.html``: the same sections as a web page; each replaced whole or not at all.
    ``workers`` > 1 draws the PNGs in that many spawned processes while the sections go on; spawning re-runs the
    caller's script unless it is ``python -m`` or guarded by ``if __name__ == "__main__"``, so it is opt-in (the
    command line uses it)."""
    out_dir = Path(out_dir)
    frame = latest_rows(load_table(out_dir / TABLE_NAME))
    if not len(frame):
        raise TableError(f"results table {out_dir / TABLE_NAME} has no rows yet (`varbench run --out {out_dir}` adds them)")
    # The report compares estimator variants (parameters, variance reduction), so they are its "estimators";
    # ``base`` keeps the registry name (colours, what a problem says about an estimator).
    frame = frame.assign(base=frame["estimator"], estimator=frame["method"])
    ok = frame[frame["status"] == "ok"].copy()
    # A flag on an estimator that theory calls unbiased must survive the report's many cells (Holm).
    ok = ok.assign(per_cell_biased=ok["biased"],
                   biased=familywise_biased(ok["biased"], ok["bias_p_value"], ok["expected_unbiased"]))  # fmt: skip
    vector = ok["n_params"] > 1
    context = ReportContext(out_dir, frame, ok[~vector], ok[vector], frame[frame["status"] == "skipped"],
                            frame[frame["status"] == "error"])  # fmt: skip
    # All figures are written before the page embeds them.
    with plots.rendering(workers):
        lines = [line for section in sorted(SECTIONS.values(), key=lambda s: s.order) for line in section.render(context)]
    markdown = "\n".join(lines)
    # The web page renders the same Markdown (so the same verdicts), then a table of every cell to filter.
    web_page = page.render_page("\n".join([markdown, "", *_cells_section(context)]), out_dir, _interactive_figures(context))
    path = out_dir / "report.md"
    run_folder.replace_whole(path, markdown.encode("utf-8"))
    run_folder.replace_whole(out_dir / "report.html", web_page.encode("utf-8"))
    return path


def _problem_stem(out_dir: Path, key: tuple) -> Path:
    """The path, without suffix, from which a problem instance's figures are named."""
    problem, params_json, wrt, device, dtype = key
    return out_dir / _slug(problem, wrt, *json.loads(params_json).values(), device, dtype)


def _interactive_figures(c: ReportContext) -> dict:
    """report.html's interactive figures, by the name of the PNG each replaces there."""
    figures = {}
    for key, group in c.ok.groupby(INSTANCE, sort=False):
        stem, title = _problem_stem(c.out_dir, key).name, _title(key[0], key[1], key[2])
        figures[f"{stem}_variance_vs_n.png"] = interactive.variance_vs_n(group, title)
        if group["theta"].nunique() >= 2:
            figures[f"{stem}_variance_vs_theta.png"] = interactive.variance_vs_theta(group, title)
    return figures


def _cells_section(c: ReportContext) -> list[str]:
    """Every measured cell of a scalar θ in one table (report.html only, where it can be sorted and filtered)."""
    if not len(c.ok):
        return []
    lines = ["## All measured cells", "",
             "Every measured cell, one row each: sort by a column (click its header), filter by problem, estimator, "
             "θ and N, or by any text. Verdicts as in the ranking tables.", "",
             "| problem | θ | N | estimator | mean ± 1.96·se | exact | bias verdict (z) | per-sample variance [95% CI] "
             "| work-normalised variance [95% CI] |", "|---|---:|---:|---|---|---:|---|---|---|"]  # fmt: skip
    for _, row in c.ok.sort_values(INSTANCE + ["theta", "n_samples", "estimator"]).iterrows():
        n = row["n_samples"]
        variance = ("∞" if row["variance_infinite"] is True else
                    _interval(row["grad_var"], row["grad_var_ci_low"], row["grad_var_ci_high"], n))  # fmt: skip
        lines.append(
            f"| {_title(row['problem'], row['problem_params'], row['wrt'])} [{row['device']}, {row['dtype']}] "
            f"| {row['theta']:g} | {n} | {row['estimator']} | {fmt(row['grad_mean'])} ± {fmt(Z95 * row['bias_se'], 2)} "
            f"| {_exact_mean(row)} | {_verdict(row)} ({fmt(row['bias_z'], 3)}) | {variance} "
            f"| {_interval(row['work_normalized_var'], row['work_normalized_var_ci_low'], row['work_normalized_var_ci_high'], digits=3)} |"
        )
    return lines + [""]


def _header(c: ReportContext) -> list[str]:
    seeds = ", ".join(str(s) for s in sorted(c.frame["base_seed"].dropna().astype(int).unique()))
    lines = [
        run_folder.REPORT_TITLE,
        "",
        f"Rendered {datetime.now(timezone.utc).isoformat(timespec='seconds')} from `{TABLE_NAME}` "
        f"({len(c.ok) + len(c.workloads)} measured cells, {len(c.skipped)} skipped, {len(c.errors)} failed). "
        f"Seeds: base {seeds}; each cell's own seed is in the table.",
        "",
        "How to read it: each cell draws M independent estimates of dL/dθ, each from N samples. *Bias* is their mean "
        "minus the exact gradient; an estimator is flagged **BIASED** when |z| = |bias| / se exceeds "
        f"{bias_critical_z():.3g} (two-sided p < {BIAS_ALPHA:g}); se includes the dtype's rounding resolution "
        f"({ROUNDING_ULPS} ulps of the gradient's scale), so estimates exact up to their last bits are not called biased. "
        "For an estimator that theory calls unbiased the flag must also survive Holm's correction across all such "
        "cells of the report, since among a thousand cells a per-cell test fires about once by chance. "
        "*Variance* is that of one N-sample estimate, with a 95% interval (Bonett 2006) that stays honest for "
        "heavy-tailed estimates; per-sample variance = variance × N. *Cost* is measured per comparison block: every "
        "estimator at one problem and N is timed in the same rounds, in a shuffled order, beside `torch.randn` drawing "
        "the same number of random values (the RNG floor), and the cost per sample is the median over rounds of the "
        "call's time over the floor's, with a 95% bootstrap interval; on CPU the clock is the process's CPU time on one "
        "thread, so another busy process cannot stretch it. *Work-normalised variance* = variance × N × that relative "
        "cost: the variance you get for a fixed compute budget (lower is better). Rankings use it and leave biased "
        "estimators unranked, because no amount of averaging removes bias. *× best* splits an estimator's ratio to "
        f"the best into a variance factor and a cost factor, each with its interval. A winner is named only when the "
        f"whole 95% interval of every other estimator's ratio lies above {verdict.TIE_BAND:g}×; otherwise the verdict "
        "is a *tie* listing every estimator the best does not beat. The column *by variance × cost evaluations* ranks "
        "by the exact number of cost evaluations per sample instead of a timing, so no machine can change it.",
        "",
    ]
    versions = c.frame[["git_sha", "torch_version"]].drop_duplicates()
    if len(versions) > 1:
        listed = "; ".join(f"{r.git_sha} with torch {r.torch_version}" for r in versions.itertuples())
        lines += [
            f"> **Mixed versions:** these rows were measured by {len(versions)} code/torch versions ({listed}). "
            "Re-running into a folder resumes it, so rows from before a change are kept; use a fresh `--out` "
            "to compare versions cleanly.",
            "",
        ]
    return lines


def _biased_section(c: ReportContext) -> list[str]:
    if not (len(c.ok) or len(c.workloads)):
        return []
    warnings = _bias_warnings(c.ok) + workload_biases(c.workloads)
    lines = ["## Biased estimators", ""] + (warnings or ["No measured cell is significantly biased."]) + [""]
    return lines + _chance_flags(pd.concat([c.ok, c.workloads])) + _infinite_variance_lines(c.ok)


def _choice_section(c: ReportContext) -> list[str]:
    if not (len(c.ok) or len(c.workloads)):
        return []
    lines = ["## Which estimator to choose", ""]
    if len(c.ok):
        lines += [f"At the largest N of each problem. A winner beats every other unbiased estimator by more than "
                  f"{verdict.TIE_BAND:g}× with 95% confidence; a tie lists every estimator the best does not beat. "
                  "Why one loses (its variance and cost factors) is in the problem's ranking table below.", ""]
        lines += _choice_rows(c.ok) + [""]
    return lines + choice_lines(c.workloads) + ([""] if len(c.workloads) else [])


def _problem_sections(c: ReportContext) -> list[str]:
    """One section per problem instance: its exact gradient, a ranking table per θ, its figures, its notes."""
    lines = []
    for key, group in c.ok.groupby(INSTANCE, sort=False):
        problem, params_json, wrt, device, dtype = key
        title = _title(problem, params_json, wrt)
        stem = _problem_stem(c.out_dir, key)
        lines += [f"## {title} — {device}, {dtype}", "", f"Exact gradient: `{_formula(problem, params_json, wrt)}`", ""]
        n_max = group["n_samples"].max()
        for theta, rows in group[group["n_samples"] == n_max].groupby("theta"):
            lines += [f"**θ = {theta:g}, N = {n_max}**", ""] + ranking_table(rows) + [""]
        for plot in sorted(PLOTS.values(), key=lambda p: p.order):
            lines += plot.draw(group, title, stem)
        lines += [
            "Cost evaluations per sample: "
            + ", ".join(f"{e} {int(n)}" for e, n in group.groupby("estimator", sort=False)["cost_evals_per_sample"].first().items())
            + ". The cost plot is measured, so extra evaluations show up as a higher cost per sample.",
            "",
        ]
        skipped = c.skipped
        mine = skipped[(skipped["problem"] == problem) & (skipped["problem_params"] == params_json) & (skipped["wrt"] == wrt)]
        for note, rows in mine.groupby("note", sort=False):
            names = ", ".join(f"`{e}`" for e in dict.fromkeys(rows["estimator"]))
            lines.append(f"- skipped where it does not apply ({note}): {names}")
        # "estimates are constant" (θ reaching L only through p) is already explained under Biased estimators.
        noted = group[(group["note"] != "") & (group["note"] != "estimates are constant")]
        for note, rows in noted.groupby("note", sort=False):
            where = ", ".join(sorted({f"{r.estimator} θ={r.theta:g} N={r.n_samples}" for r in rows.itertuples()}))
            lines.append(f"- ⚠ {note} ({where})")
        lines.append("")
    return lines


def _variance_vs_n(group: pd.DataFrame, title: str, stem: Path) -> list[str]:
    return _figure(plots.variance_vs_n(group, title, stem.with_name(f"{stem.name}_variance_vs_n.png")), group, "grad_var")


def _variance_vs_theta(group: pd.DataFrame, title: str, stem: Path) -> list[str]:
    if group["theta"].nunique() < 2:
        return []
    largest = group[group["n_samples"] == group["n_samples"].max()]
    path = plots.per_sample_variance_vs(group, "theta", title, stem.with_name(f"{stem.name}_variance_vs_theta.png"))
    return _figure(path, largest, "per_sample_var")


def _bias_plot(group: pd.DataFrame, title: str, stem: Path) -> list[str]:
    return _figure(plots.bias(group, title, stem.with_name(f"{stem.name}_bias.png")))


def _cost_plot(group: pd.DataFrame, title: str, stem: Path) -> list[str]:
    if not group["relative_cost"].notna().any():
        return []
    return _figure(plots.relative_cost(group, title, stem.with_name(f"{stem.name}_cost.png")))


def _relaxation_plot(group: pd.DataFrame, title: str, stem: Path) -> list[str]:
    first = group.iloc[0]
    paths = _relaxation_bias_figures(group, first["problem"], first["problem_params"], first["wrt"], title,
                                     stem.with_name(f"{stem.name}_relaxation_bias.png"))  # fmt: skip
    return [line for path in paths for line in _figure(path)]


def _sweeps_section(c: ReportContext) -> list[str]:
    if not len(c.ok):
        return []
    sweeps = _parameter_sweeps(c.ok, c.out_dir)
    lines = (["## Variance against problem parameters", ""] + sweeps) if sweeps else []
    lines += _variance_reduction_section(c.ok, c.out_dir)
    dimensions = _dimension_sweeps(c.ok, c.out_dir)
    if dimensions:
        lines += ["## Variance against dimension", "",
                  "Per-sample variance against the dimension D of the problems that have one (log–log): an estimator "
                  "whose variance grows with D pays for every coordinate's noise, one whose variance does not is "
                  "the one to scale up with.", ""] + dimensions  # fmt: skip
    return lines


def _failed_section(c: ReportContext) -> list[str]:
    if not len(c.errors):
        return []
    lines = ["## Failed cells", "", "Re-running the same command retries them.", ""]
    lines += [f"- {r.problem} {r.wrt} θ={r.theta:g} {r.estimator} N={r.n_samples} {r.device}: {r.note}" for r in c.errors.itertuples()]
    return lines + [""]


def _environment_section(c: ReportContext) -> list[str]:
    lines = ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in environment.describe().items()]
    lines += [f"| peer {k} | {v} |" for k, v in PEER_STATUS.items()]  # peers that failed to install, too
    recorded = c.frame[["device", "device_name", "cost_clock", "torch_version", "num_threads", "git_sha", "hostname"]].drop_duplicates()
    lines += ["", "Recorded with the rows (the machines that measured them):", ""] + _markdown_table(recorded) + [""]
    lines += ["Estimators:", ""] + [f"- `{name}`: {e.summary}" for name, e in ESTIMATORS.items()] + [""]
    return lines + ["Variance reductions:", ""] + [f"- `{v.name}`: {v.summary}" for v in VARIANCE_REDUCTIONS.values()] + [""]


for _name, _order, _render in (
    ("header", 0, _header),
    ("regression", 10, lambda c: _regression_section(c.out_dir)),
    ("biased", 20, _biased_section),
    ("choice", 30, _choice_section),
    ("workloads", 40, lambda c: workload_sections(c.workloads, c.skipped, c.out_dir)),
    ("policy", 45, lambda c: policy_section(c.ok)),
    ("problems", 50, _problem_sections),
    ("exact", 55, lambda c: exact_section(c.ok)),
    ("sweeps", 60, _sweeps_section),
    ("failed", 70, _failed_section),
    ("environment", 80, _environment_section),
):
    SECTIONS.register(_name, Section(_order, _render))
for _name, _order, _draw in (
    ("variance_vs_n", 10, _variance_vs_n),
    ("variance_vs_theta", 20, _variance_vs_theta),
    ("bias", 30, _bias_plot),
    ("cost", 40, _cost_plot),
    ("relaxation_bias", 50, _relaxation_plot),
):
    PLOTS.register(_name, ProblemPlot(_order, _draw))


def _figure(path: Path, rows: pd.DataFrame | None = None, column: str | None = None) -> list[str]:
    """A figure's Markdown, captioned with the estimators a log axis had to leave out (zero variance)."""
    lines = [f"![]({path.name})", ""]
    if rows is not None:
        missing = sorted(set(rows.loc[rows[column] == 0, "estimator"]) - set(rows.loc[rows[column] > 0, "estimator"]))
        if missing:
            lines += [f"*Not drawn (zero variance in every cell, no place on a log axis): {', '.join(missing)}.*", ""]
    return lines
def _regression_section(out_dir: Path) -> list[str]:
    """Verdicts of `varbench regress` (regressions.csv beside the table), when this folder is a regression run."""
    path = out_dir / regression.REGRESSIONS_CSV
    if not path.exists():
        return []
    verdicts = pd.read_csv(path, keep_default_na=False, na_values=[""])
    counts = verdicts.groupby(["metric", "verdict"]).size().unstack(fill_value=0).reset_index()
    lines = [
        "## Regression check against the baseline",
        "",
        f"Variance: one-sided test on log(new/baseline variance), kurtosis-adjusted, Holm-corrected across the grid at "
        f"family-wise α = {regression.ALPHA:g}; a regression needs significance *and* a ratio ≥ "
        f"{regression.MIN_VARIANCE_RATIO:g}. Bias: estimators that theory calls unbiased are tested against the exact "
        f"gradient (Holm, α = {regression.ALPHA:g}), whatever the baseline says. Speed: median call time relative to "
        f"torch.randn of the same size timed beside it (pytest-benchmark), gated at ≥ {regression.SPEED_FAIL_FACTOR:g}× only on the baseline's machine fingerprint; "
        f"pytest-benchmark's own comparison of the raw call times is in `{regression.SPEED_COMPARE_TXT}`.",
        "",
    ] + _markdown_table(counts) + [""]
    flagged = verdicts[verdicts["verdict"] != "ok"]
    lines += [f"- {regression.describe_verdict(row)}" for _, row in flagged.iterrows()] or ["All cells ok."]
    return lines + [""]


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return [header, rule] + ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]

"""Render ``report.md`` and its PNG plots from a results table, without re-running anything."""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import ESTIMATORS, PEER_STATUS, VARIANCE_REDUCTIONS, ProblemError, make_problem
from estimators.discrete_estimators import exact_relaxed_mean

from estimators.workloads import WORKLOADS

from . import environment, plots, run_folder
from .statistics import BIAS_ALPHA, ROUNDING_ULPS, Z95, bias_critical_z
from .table import TABLE_NAME, TableError, latest_rows, load_table

INSTANCE = ["problem", "problem_params", "wrt", "device", "dtype"]
# Identical-cost cells timed on a shared 2-core machine differ by up to ~1.5-2x, so a work-normalised
# variance ratio below this is not evidence that one estimator beats the other.
TIMING_TIE_FACTOR = 1.5


def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


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
    if row["biased"]:
        flag = "**BIASED**"
        if row["expected_unbiased"]:
            # A note explains some of these (samples clamped by the dtype); otherwise it is a bug or a false alarm.
            flag += " (theory says unbiased: see the ⚠ note below)" if row["note"] else " (theory says unbiased: investigate)"
        return flag
    return "unbiased" if row["expected_unbiased"] else "biased in general; bias not detectable here"


def _rankable(rows: pd.DataFrame) -> pd.Series:
    # Only estimators that are unbiased in theory *and* in this measurement are recommended: naive autograd
    # can hit the exact gradient at one θ (where the dropped term vanishes) and must still not be chosen.
    return ~rows["biased"].astype(bool) & rows["expected_unbiased"].astype(bool)


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """Unbiased estimators by work-normalised variance, then the others (which get no rank)."""
    rankable = _rankable(rows)
    fair = rows[rankable].sort_values("work_normalized_var")
    fair = fair.assign(rank=range(1, len(fair) + 1))
    unfair = rows[~rankable].assign(rank=None)
    return pd.concat([fair, unfair])


def _ratio(value: float, best: float) -> float:
    # The best estimator can be exact with zero variance (the coupled MVD pair on a cost symmetric about μ).
    if best == 0:
        return 1.0 if value == 0 else math.inf
    return value / best


def ranking_table(rows: pd.DataFrame) -> list[str]:
    """One θ at one N: a Markdown table of estimators ranked by work-normalised variance."""
    ranked = _ranked(rows)
    best = ranked["work_normalized_var"].iloc[0] if ranked["rank"].notna().any() else math.nan
    lines = [
        "| rank | estimator | mean ± 1.96·se | exact | bias verdict (z) | per-sample variance [95% CI] | µs / estimate | work-normalised variance | × best |",
        "|---:|---|---|---:|---|---|---:|---:|---:|",
    ]
    for _, row in ranked.iterrows():
        n = row["n_samples"]
        ratio = _ratio(row["work_normalized_var"], best) if row["rank"] is not None else math.nan
        lines.append(
            f"| {row['rank'] if row['rank'] is not None else '—'} | {row['estimator']} "
            f"| {_fmt(row['grad_mean'])} ± {_fmt(Z95 * row['bias_se'], 2)} | {_fmt(row['true_grad'])} "
            f"| {_verdict(row)} ({_fmt(row['bias_z'], 3)}) "
            f"| {_fmt(row['per_sample_var'])} [{_fmt(row['grad_var_ci_low'] * n)}, {_fmt(row['grad_var_ci_high'] * n)}] "
            f"| {_fmt(row['seconds_per_estimate'] * 1e6, 3)} | {_fmt(row['work_normalized_var'], 3)} | {_fmt(ratio, 3)} |"
        )
    return lines


ZERO_VARIANCE_FRACTION = 1e-8  # a best variance this far below the runner-up's is rounding, not noise


def _choice_rows(ok: pd.DataFrame) -> list[str]:
    lines = [
        "| problem | θ | N | best (work-normalised variance) | runner-up (× best) | not recommended (biased) |",
        "|---|---:|---:|---|---|---|",
    ]
    for key, group in ok.groupby(INSTANCE, sort=False):
        n_max = group["n_samples"].max()
        for theta, rows in group[group["n_samples"] == n_max].groupby("theta"):
            ranked = _ranked(rows)
            fair = ranked[ranked["rank"].notna()]
            best = fair.iloc[0]["estimator"] if len(fair) else "—"
            runner = "—"
            if len(fair) > 1:
                ratio = _ratio(fair.iloc[1]["work_normalized_var"], fair.iloc[0]["work_normalized_var"])
                tie = ", a tie within timing noise" if ratio < TIMING_TIE_FACTOR else ""
                runner = f"{fair.iloc[1]['estimator']} (×{_fmt(ratio, 3)}{tie})"
                # E.g. the coupled measure-valued pair at a symmetric point, or pathwise on a linear cost: every
                # estimate is the exact gradient, and the ×1e14 against the runner-up is float rounding.
                if fair.iloc[0]["grad_var"] <= ZERO_VARIANCE_FRACTION * fair.iloc[1]["grad_var"]:
                    best += " (zero variance here: every estimate exact up to float rounding)"
            unranked = ranked[ranked["rank"].isna()]
            biased = ", ".join(
                f"**{r.estimator}**" if r.biased else f"{r.estimator} (bias not detectable here)"
                for r in unranked.itertuples()
            ) or "none"
            title = _title(key[0], key[1], key[2])
            lines.append(f"| {title} [{key[3]}, {key[4]}] | {theta:g} | {n_max} | {best} | {runner} | {biased} |")
    return lines


def _bias_warnings(ok: pd.DataFrame) -> list[str]:
    """One line per (problem family, wrt, estimator) with a significant bias, worst cell as the example."""
    lines = []
    flagged = ok[ok["biased"].astype(bool)]
    # The seed problem first: it is the case users meet in practice (a wrong, non-zero gradient).
    groups = sorted(flagged.groupby(["problem", "wrt", "estimator"], sort=False), key=lambda g: g[0][0] != "seed_dependent")
    for (problem, wrt, estimator), rows in groups:
        worst = rows.loc[rows["bias_z"].abs().idxmax()]
        lines.append(
            f"- **{estimator}** on `{problem}` wrt {wrt}: biased in {len(rows)} cells. Worst: "
            f"`{_title(problem, worst['problem_params'], wrt)}` at θ = {worst['theta']:g}, N = {worst['n_samples']}: mean "
            f"{_fmt(worst['grad_mean'])} ± {_fmt(Z95 * worst['bias_se'], 2)}, exact {_fmt(worst['true_grad'])} "
            f"(bias {_fmt(worst['bias'])}, z = {_fmt(worst['bias_z'], 3)})."
            + (" **Theory says this estimator is unbiased here: a bug or a false alarm.**"
               if worst["expected_unbiased"] and not worst["note"] else "")
        )
        if worst["expected_unbiased"] and worst["note"]:
            lines.append(f"  Theory says unbiased; this cell's note explains it: {worst['note']}")
        if estimator == "naive" and problem == "seed_dependent":
            lines.append(
                "  It drops the product-rule term E[f ∂log p] = +6θ² that autograd through `torch.normal(mean=θ)` or "
                "`.sample()` cannot see: naive autograd averages 3θ² + 3 instead of 9θ² + 3."
            )
        elif estimator == "naive" and (rows["grad_mean"] == 0).all() and (rows["grad_var"] == 0).all():
            lines.append("  θ enters only through p, so autograd through a non-reparameterised sample returns 0 every time.")
    return lines


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


def _relaxation_bias_figures(group: pd.DataFrame, problem: str, params_json: str, wrt: str, title: str,
                             path: Path) -> list[Path]:
    """Bias vs temperature of the relaxed (biased) discrete estimators at the largest N, with the exact bias
    where it is known (the Bernoulli problems), when some θ has at least two temperatures."""
    rows = group[group["method"].str.match(r"(gumbel_softmax|straight_through)\[") & (group["variance_reduction"] == "none")]
    if rows.empty:
        return []
    rows = rows.assign(base=rows["method"].str.split("[").str[0],
                       temperature=rows["estimator_params"].map(lambda s: json.loads(s).get("temperature", math.nan)))  # fmt: skip
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
            means = [exact_relaxed_mean(instance, theta, base, tau) for tau in taus]
            if all(m is not None for m in means):
                exact[(base, theta)] = (taus, np.array(means) - instance.gradient(theta))
    return [plots.relaxation_bias_vs_temperature(rows, title, path, exact)]


def variance_reduction_factors(ok: pd.DataFrame) -> pd.DataFrame:
    """Each variance-reduced cell's grad_var over its plain-MC twin (same instance, θ, N, estimator variant).

    The two cells have independent seeds, so the log ratio's standard error is the root sum of squares of the
    two cells' relative variance standard errors; the interval is ratio·exp(±1.96·se).
    """
    ok = ok.assign(base=[m.removesuffix(f"+{v}") if v != "none" else m for m, v in zip(ok["method"], ok["variance_reduction"])])
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
                f"| {_fmt(row.ratio, 3)} [{_fmt(row.ratio_low, 3)}, {_fmt(row.ratio_high, 3)}] "
                f"| {_fmt(row.work_ratio, 3)} | {_fmt(row.bias_z, 3)}{flag} |"
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
        lines += [f"| {name} | " + " | ".join(_fmt(v) for v in row) + " |" for name, row in table.iterrows()]
        lines.append("")
    return lines


def write_report(out_dir: Path) -> Path:
    """Read ``out_dir/table.csv``, draw the plots beside it and write ``out_dir/report.md``."""
    out_dir = Path(out_dir)
    frame = latest_rows(load_table(out_dir / TABLE_NAME))
    if not len(frame):
        raise TableError(f"results table {out_dir / TABLE_NAME} has no rows yet (`varbench run --out {out_dir}` adds them)")
    # The report compares estimator variants (parameters, variance reduction), so they are its "estimators".
    frame = frame.assign(estimator=frame["method"])
    ok = frame[frame["status"] == "ok"].copy()
    skipped = frame[frame["status"] == "skipped"]
    errors = frame[frame["status"] == "error"]

    lines = [
        run_folder.REPORT_TITLE,
        "",
        f"Rendered {datetime.now(timezone.utc).isoformat(timespec='seconds')} from `{TABLE_NAME}` "
        f"({len(ok)} measured cells, {len(skipped)} skipped, {len(errors)} failed). "
        f"Seeds: base {', '.join(str(s) for s in sorted(frame['base_seed'].dropna().astype(int).unique()))}; "
        "each cell's own seed is in the table.",
        "",
        "How to read it: each cell draws M independent estimates of dL/dθ, each from N samples. *Bias* is their mean "
        "minus the exact gradient; an estimator is flagged **BIASED** when |z| = |bias| / se exceeds "
        f"{bias_critical_z():.3g} (two-sided p < {BIAS_ALPHA:g}); se includes the dtype's rounding resolution "
        f"({ROUNDING_ULPS} ulps of the gradient's scale), so estimates exact up to their last bits are not called biased. "
        "*Variance* is that of one N-sample estimate, with a 95% interval (Bonett 2006) that stays honest for "
        "heavy-tailed estimates; per-sample variance = variance × N. *Work-normalised variance* = variance × seconds per "
        "estimate: the variance you get for a fixed compute budget (lower is better). Rankings use it and leave biased "
        "estimators unranked, because no amount of averaging removes bias.",
        "",
    ]
    versions = frame[["git_sha", "torch_version"]].drop_duplicates()
    if len(versions) > 1:
        listed = "; ".join(f"{r.git_sha} with torch {r.torch_version}" for r in versions.itertuples())
        lines += [
            f"> **Mixed versions:** these rows were measured by {len(versions)} code/torch versions ({listed}). "
            "Re-running into a folder resumes it, so rows from before a change are kept; use a fresh `--out` "
            "to compare versions cleanly.",
            "",
        ]
    lines += _regression_section(out_dir)
    from .workload_report import choice_lines, workload_biases, workload_sections  # it uses _fmt and _ranked from here

    # Workloads (gradient vectors at training checkpoints) have their own section; the rest is per scalar θ.
    workloads = ok[ok["problem"].isin(WORKLOADS)]
    ok = ok[~ok["problem"].isin(WORKLOADS)]
    if len(ok) or len(workloads):
        warnings = _bias_warnings(ok) + workload_biases(workloads)
        lines += ["## Biased estimators", ""] + (warnings or ["No measured cell is significantly biased."]) + [""]
    if len(ok) or len(workloads):
        lines += ["## Which estimator to choose", ""]
        if len(ok):
            lines += ["At the largest N of each problem:", ""] + _choice_rows(ok) + [""]
        lines += choice_lines(workloads) + ([""] if len(workloads) else [])
    lines += workload_sections(workloads, skipped, out_dir)
    for key, group in ok.groupby(INSTANCE, sort=False):
        problem, params_json, wrt, device, dtype = key
        title = _title(problem, params_json, wrt)
        slug = _slug(problem, wrt, *json.loads(params_json).values(), device, dtype)
        lines += [f"## {title} — {device}, {dtype}", "", f"Exact gradient: `{_formula(problem, params_json, wrt)}`", ""]
        n_max = group["n_samples"].max()
        for theta, rows in group[group["n_samples"] == n_max].groupby("theta"):
            lines += [f"**θ = {theta:g}, N = {n_max}**", ""] + ranking_table(rows) + [""]
        figures = [
            plots.variance_vs_n(group, title, out_dir / f"{slug}_variance_vs_n.png"),
            plots.bias(group, title, out_dir / f"{slug}_bias.png"),
            plots.throughput(group, title, out_dir / f"{slug}_throughput.png"),
        ]
        if group["theta"].nunique() > 1:
            figures.insert(1, plots.per_sample_variance_vs(group, "theta", title, out_dir / f"{slug}_variance_vs_theta.png"))
        figures += _relaxation_bias_figures(group, problem, params_json, wrt, title, out_dir / f"{slug}_relaxation_bias.png")
        lines += [f"![]({path.name})" for path in figures] + [""]
        lines += [
            "Cost evaluations per sample: "
            + ", ".join(f"{e} {int(c)}" for e, c in group.groupby("estimator", sort=False)["cost_evals_per_sample"].first().items())
            + ". Throughput is measured, so extra evaluations show up as lower samples/s.",
            "",
        ]
        mine = skipped[(skipped["problem"] == problem) & (skipped["problem_params"] == params_json) & (skipped["wrt"] == wrt)]
        for note, rows in mine.groupby("note", sort=False):
            names = ", ".join(f"`{e}`" for e in dict.fromkeys(rows["estimator"]))
            lines.append(f"- skipped where it does not apply ({note}): {names}")
        # "estimates are constant" (naive when θ only enters p) is already explained under Biased estimators.
        noted = group[(group["note"] != "") & (group["note"] != "estimates are constant")]
        for note, rows in noted.groupby("note", sort=False):
            where = ", ".join(sorted({f"{r.estimator} θ={r.theta:g} N={r.n_samples}" for r in rows.itertuples()}))
            lines.append(f"- ⚠ {note} ({where})")
        lines.append("")
    if len(ok):
        sweeps = _parameter_sweeps(ok, out_dir)
        if sweeps:
            lines += ["## Variance against problem parameters", ""] + sweeps
        lines += _variance_reduction_section(ok, out_dir)
        dimensions = _dimension_sweeps(ok, out_dir)
        if dimensions:
            lines += ["## Variance against dimension", "",
                      "θ moves the first coordinate's mean only; f sums over all D coordinates. The score function "
                      "carries the other D − 1 coordinates' noise, so its variance grows with D; pathwise and the "
                      "coupled measure-valued pair do not.", ""] + dimensions  # fmt: skip
    if len(errors):
        lines += ["## Failed cells", "", "Re-running the same command retries them.", ""]
        lines += [f"- {r.problem} {r.wrt} θ={r.theta:g} {r.estimator} N={r.n_samples} {r.device}: {r.note}" for r in errors.itertuples()]
        lines.append("")
    lines += ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in environment.describe().items()]
    lines += [f"| peer {k} | {v} |" for k, v in PEER_STATUS.items()]  # peers that failed to install, too
    recorded = frame[["device", "device_name", "torch_version", "num_threads", "git_sha", "hostname"]].drop_duplicates()
    lines += ["", "Recorded with the rows (the machines that measured them):", ""] + _markdown_table(recorded) + [""]
    lines += ["Estimators:", ""] + [f"- `{e.name}`: {e.summary}" for e in ESTIMATORS.values()] + [""]
    lines += ["Variance reductions:", ""] + [f"- `{v.name}`: {v.summary}" for v in VARIANCE_REDUCTIONS.values()] + [""]
    path = out_dir / "report.md"
    replace_whole(path, "\n".join(lines).encode("utf-8"))
    return path


def replace_whole(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file and a rename, so it is never seen (or left) half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _regression_section(out_dir: Path) -> list[str]:
    """Verdicts of `varbench regress` (regressions.csv beside the table), when this folder is a regression run."""
    from . import regression  # noqa: PLC0415

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

"""The history of runs across commits: a store that concurrent CI jobs append to, the series of each cell's
variance, bias z and relative speed across commits, and the commits where they changed.

**Store**: a folder of immutable parquet files per run, named by run date, commit and a random id:
``<name>.table.parquet`` (the run's results table, the table schema's types), ``<name>.verdicts.parquet`` (the
gate's verdicts, when the run has them) and ``<name>.points.parquet`` (one row per cell and metric,
``POINT_SCHEMA``), each written to a temporary name and ``os.replace``d, the points last.
An append never opens another run's file, so two jobs appending at once cannot lose each other's run, and a
reader that globs ``*.points.parquet`` sees whole runs only. The marker ``.varbench-history`` says the folder
is a history, so an append never writes into a folder that holds anything else.

**Changes**: per series, a piecewise-constant fit weighted by each point's own standard error (binary
segmentation); a split is accepted when its χ²₁ statistic exceeds the Bonferroni threshold over the candidate
splits and the series (``split_threshold``), so on a history where nothing changed the chance of reporting any
change is at most ``ALPHA``. docs/regression.md derives it.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from . import run_folder
from .cost import RUN_TO_RUN_LOG_SD
from .regression import REGRESSIONS_CSV, SPEED_JSON, log_variance_se, machine_fingerprint, read_speed
from .statistics import Z95
from .table import TABLE_NAME, TableError, latest_rows, load_table, to_arrow, write_parquet_atomically

MARKER = ".varbench-history"
POINTS_SUFFIX = ".points.parquet"
TABLE_SUFFIX = ".table.parquet"
VERDICTS_SUFFIX = ".verdicts.parquet"
ALPHA = 0.01  # chance of reporting any change on a history where nothing changed (all series together)
METRICS = ("variance", "bias_z", "speed")
# The gate's metric behind each history metric (regressions.csv), so a point carries that run's verdict.
GATE_METRIC = {"variance": "variance", "bias": "bias_z", "speed": "speed"}

IDENTITY = ["cell_id", "method", "problem", "problem_params", "wrt", "theta", "n_samples", "device", "dtype"]
RUN_KEY = ["run_id", "commit", "dirty", "machine", "run_date", "recorded_at", "source"]
# (column, arrow type, meaning): one row per run, cell and metric.
POINT_SCHEMA: list[tuple[str, pa.DataType, str]] = [
    ("run_id", pa.string(), "random id of the appended run (also in the file names)"),
    ("commit", pa.string(), "git sha of the run's rows, without '-dirty'"),
    ("dirty", pa.bool_(), "the run's code had uncommitted changes"),
    ("machine", pa.string(), "machine fingerprint: the speed benchmarks' (regression.machine_fingerprint), else CPU/GPU model, torch and threads from the table"),
    ("run_date", pa.string(), "UTC time the run's first cell started (ISO 8601): the history's default order"),
    ("recorded_at", pa.string(), "UTC time the run was appended"),
    ("source", pa.string(), "the run folder as given to the append"),
    *[(name, pa.float64() if name == "theta" else pa.int64() if name == "n_samples" else pa.string(), "the cell, as in the results table")
      for name in IDENTITY],
    ("metric", pa.string(), "variance (grad_var), bias_z, or speed (cost relative to the RNG floor: the table's relative_cost, or a speed benchmark's)"),
    ("value", pa.float64(), "the metric's value"),
    ("ci_low", pa.float64(), "lower end of its 95% interval"),
    ("ci_high", pa.float64(), "upper end"),
    ("estimate", pa.float64(), "what changes are fitted on: log(value) for variance and speed, value for bias_z"),
    ("se", pa.float64(), "standard error of estimate"),
    ("verdict", pa.string(), "the gate's verdict on this cell and metric in that run (regressions.csv), empty without one"),
]  # fmt: skip
POINT_COLUMNS = [name for name, _, _ in POINT_SCHEMA]
ARROW_POINTS = pa.schema([(name, kind) for name, kind, _ in POINT_SCHEMA])
LOG_METRICS = ("variance", "speed")  # changes are ratios; bias_z changes are differences
SERIES = ["metric", *IDENTITY, "machine_key"]  # machine_key: the machine for speed, "" otherwise
# What `varbench history` writes into --out (besides one plot per metric).
RENDER_FILES = ("summary.md", "history.md", "history.csv", "changes.csv")


class HistoryError(ValueError):
    """A folder that is not a history, a run that cannot be appended, an unreadable history file."""


# ---------------------------------------------------------------------------------------------------------
# Points from a run folder


def _split_sha(sha: str) -> tuple[str, bool]:
    return (sha[: -len("-dirty")], True) if sha.endswith("-dirty") else (sha, False)


def table_machine(table: pd.DataFrame) -> str:
    """A fingerprint from the table alone (no speed benchmarks): device model, torch, threads; never the
    hostname, which CI runners change every job."""
    row = table.iloc[0]
    return f"{row['device_name']}, torch {row['torch_version']}, {row['num_threads']} threads"


def table_points(table: pd.DataFrame) -> pd.DataFrame:
    """Variance, bias z and (where the run timed its cells) relative cost of every ok cell, one row each."""
    ok = latest_rows(table)
    ok = ok[(ok["status"] == "ok") & ~ok["variance_infinite"].eq(True)]
    frames = []
    var = ok[(ok["grad_var"] > 0) & (ok["grad_var_ci_low"] > 0) & np.isfinite(ok["grad_var_ci_high"])]
    frames.append(var[IDENTITY].assign(metric="variance", value=var["grad_var"], ci_low=var["grad_var_ci_low"],
                                       ci_high=var["grad_var_ci_high"], estimate=np.log(var["grad_var"]),
                                       se=log_variance_se(var)))  # fmt: skip
    z = ok[np.isfinite(ok["bias_z"])]
    # bias_z is a z-score: standard error 1 by construction.
    frames.append(z[IDENTITY].assign(metric="bias_z", value=z["bias_z"], ci_low=z["bias_z"] - Z95,
                                     ci_high=z["bias_z"] + Z95, estimate=z["bias_z"], se=1.0))  # fmt: skip
    cost = ok[(ok["relative_cost_ci_low"] > 0) & np.isfinite(ok["relative_cost_ci_high"])]
    # The interval already includes the run-to-run floor (bench/cost.py), so its log width is the se.
    frames.append(cost[IDENTITY].assign(
        metric="speed", value=cost["relative_cost"], ci_low=cost["relative_cost_ci_low"],
        ci_high=cost["relative_cost_ci_high"], estimate=np.log(cost["relative_cost"]),
        se=(np.log(cost["relative_cost_ci_high"]) - np.log(cost["relative_cost_ci_low"])) / (2 * Z95)))  # fmt: skip
    return pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else pd.DataFrame()


def speed_points(speed: dict) -> pd.DataFrame:
    """One point per speed benchmark: its cost relative to the RNG floor, the median over the run's processes;
    the se of that median (1.2533·sd/√k over the processes' log medians) combined with the run-to-run floor."""
    rows = []
    for bench in speed.get("benchmarks", []):
        info = bench.get("extra_info", {})
        medians = np.log(np.asarray(info.get("run_relative_medians") or [], dtype=float))
        if medians.size < 2 or not np.isfinite(medians).all():
            continue  # a file recorded before floors were timed: no relative cost, no spread
        se = math.hypot(1.2533 * float(np.std(medians, ddof=1)) / math.sqrt(medians.size), RUN_TO_RUN_LOG_SD)
        centre = float(np.median(medians))
        rows.append(dict(cell_id=bench["fullname"], method=info.get("estimator", ""), problem=info.get("problem", ""),
                         problem_params="", wrt="", theta=info.get("theta"), n_samples=info.get("n_samples"),
                         device="cpu", dtype="", metric="speed", value=math.exp(centre),
                         ci_low=math.exp(centre - Z95 * se), ci_high=math.exp(centre + Z95 * se), estimate=centre,
                         se=se))  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Run:
    """A run folder read for the history: its table, its points, its key, and the gate's verdicts if any."""

    table: pd.DataFrame
    points: pd.DataFrame
    key: dict
    verdicts: pd.DataFrame | None = None


def read_run(folder: Path, verdicts: pd.DataFrame | None = None) -> Run:
    """The run in ``folder`` (its table, speed.json and regressions.csv where present) as history points;
    HistoryError naming the folder when it holds no usable table."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HistoryError(f"run folder {folder} does not exist (a folder written by varbench run or regress)")
    try:
        table = latest_rows(load_table(folder / TABLE_NAME))
    except TableError as error:
        raise HistoryError(f"run folder {folder}: {error}") from None
    if not (table["status"] == "ok").any():
        raise HistoryError(f"run folder {folder}: its table has no ok cells to record")
    try:
        speed = read_speed(folder / SPEED_JSON)
    except ValueError as error:
        raise HistoryError(f"run folder {folder}: {SPEED_JSON} is corrupt ({error})") from None
    if verdicts is None and (folder / REGRESSIONS_CSV).is_file():
        verdicts = pd.read_csv(folder / REGRESSIONS_CSV, keep_default_na=False, na_values=[""])
    ok = table[table["status"] == "ok"]
    shas = ok["git_sha"].dropna().astype(str)
    commit, dirty = _split_sha(str(shas.mode().iloc[0]) if len(shas) else "")
    key = dict(run_id=uuid.uuid4().hex, commit=commit, dirty=dirty,
               machine=machine_fingerprint(speed) if speed.get("benchmarks") else table_machine(ok),
               run_date=str(ok["started_at"].min()), recorded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               source=str(folder))  # fmt: skip
    parts = [p for p in (table_points(table), speed_points(speed)) if len(p)]
    if not parts:
        raise HistoryError(f"run folder {folder}: no variance, bias z or speed figure to record (every variance is "
                           "zero or infinite, and there are no speed benchmarks)")  # fmt: skip
    points = pd.concat(parts, ignore_index=True)
    points["verdict"] = ""
    if verdicts is not None and len(verdicts):
        gate = verdicts.assign(metric=verdicts["metric"].map(GATE_METRIC)).dropna(subset=["metric"])
        found = dict(zip(zip(gate["cell_id"].astype(str), gate["metric"]), gate["verdict"]))
        points["verdict"] = [found.get((c, m), "") for c, m in zip(points["cell_id"], points["metric"])]
    for column, value in key.items():
        points[column] = value
    return Run(table, points[POINT_COLUMNS], key, verdicts)


# ---------------------------------------------------------------------------------------------------------
# The store


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def check_store(folder: Path, *, create: bool, flag: str = "--history") -> Path:
    """A folder that is a history (its marker), or, with ``create``, a new or empty one made into one;
    HistoryError otherwise, before anything is written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HistoryError(f"{flag} {folder} is a file, not a folder; choose a history folder")
    if (folder / MARKER).is_file():
        return folder
    entries = _entries(folder) - {run_folder.LOCK_NAME}
    if entries:
        shown = ", ".join(sorted(entries)[:5]) + (", …" if len(entries) > 5 else "")
        raise HistoryError(f"{flag} {folder} is not a varbench history (no {MARKER} marker; it holds {shown}); "
                           "choose a new or empty folder")  # fmt: skip
    if not create:
        raise HistoryError(f"{flag} {folder} holds no history yet (`varbench regress --history {folder}` or "
                           f"`varbench history {folder} --append RUN_DIR` starts one)")  # fmt: skip
    return folder


def _start_store(folder: Path) -> None:
    run_folder.ensure_writable(folder, "--history")
    if not (folder / MARKER).is_file():  # two jobs starting one history write the same marker: either wins
        marker = dict(format=1, note="a varbench history: immutable parquet files per run; "
                                     "`varbench history DIR` renders it")  # fmt: skip
        run_folder.replace_whole(folder / MARKER, (json.dumps(marker) + "\n").encode())


def append_run(folder: Path, run: Run) -> Path:
    """Add ``run`` to the history in ``folder`` (created when new or empty): its table file, its verdicts file,
    then its points file, each written whole under a name no other append uses. Returns the points file."""
    folder = check_store(folder, create=True)
    _start_store(folder)
    stamp = "".join(ch for ch in run.key["run_date"][:19] if ch.isalnum()) or "undated"
    name = f"{stamp}_{run.key['commit'][:12] or 'nocommit'}{'-dirty' if run.key['dirty'] else ''}_{run.key['run_id'][:12]}"
    table = to_arrow(run.table).replace_schema_metadata({b"varbench.run": json.dumps(run.key).encode()})
    write_parquet_atomically(table, folder / f"{name}{TABLE_SUFFIX}")
    if run.verdicts is not None and len(run.verdicts):
        verdicts = pa.Table.from_pandas(run.verdicts.astype({"note": str}), preserve_index=False)
        write_parquet_atomically(verdicts.replace_schema_metadata({b"varbench.run": json.dumps(run.key).encode()}),
                                 folder / f"{name}{VERDICTS_SUFFIX}")  # fmt: skip
    points = pa.Table.from_pandas(run.points, schema=ARROW_POINTS, preserve_index=False)
    return write_parquet_atomically(points, folder / f"{name}{POINTS_SUFFIX}")


def load_points(folder: Path) -> pd.DataFrame:
    """Every run's points in the history (whole runs only: a points file is renamed into place last)."""
    folder = check_store(folder, create=False, flag="DIR")
    frames = []
    for path in sorted(folder.glob(f"*{POINTS_SUFFIX}")):
        try:
            frames.append(pq.read_table(path, schema=ARROW_POINTS).to_pandas())
        except (pa.ArrowException, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise HistoryError(f"history file {path} cannot be read ({first}); move it out of the history") from None
    if not frames:
        raise HistoryError(f"history {folder} has no runs yet")
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Ordering


def run_order(points: pd.DataFrame, order: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """The runs in history order with their position (0, 1, …), and how many runs were left out.

    Without ``order``: by run date (then append time). With ``order`` (commits oldest first, e.g. from
    ``git log --reverse --format=%H``; abbreviated shas match by prefix): by the commit's place in it, then run
    date; runs of commits not in it are left out."""
    runs = points.drop_duplicates("run_id")[["run_id", "commit", "dirty", "run_date", "recorded_at", "machine"]].copy()
    if order is not None:
        def place(commit: str) -> float:
            for i, listed in enumerate(order):
                if listed and (commit.startswith(listed) or listed.startswith(commit)) and commit:
                    return i
            return math.nan

        runs["place"] = runs["commit"].map(place)
        left_out = int(runs["place"].isna().sum())
        runs = runs.dropna(subset=["place"]).sort_values(["place", "run_date", "recorded_at"])
    else:
        left_out = 0
        runs = runs.sort_values(["run_date", "recorded_at"])
    runs["position"] = np.arange(len(runs))
    return runs.drop(columns=[c for c in ("place",) if c in runs]).reset_index(drop=True), left_out


# ---------------------------------------------------------------------------------------------------------
# Change points: pure functions on (estimate, se) in order


def split_threshold(n_points: int, n_series: int, alpha: float = ALPHA) -> float:
    """The χ²₁ value a best split of ``n_points`` must exceed: Bonferroni over its n − 1 candidate splits and the
    ``n_series`` series, so an unchanged history reports a change with probability at most ``alpha``."""
    return float(stats.chi2.isf(alpha / (max(n_points - 1, 1) * max(n_series, 1)), df=1))


def best_split(estimate: np.ndarray, se: np.ndarray) -> tuple[int, float]:
    """(k, statistic): the split into [0, k) and [k, n) that most reduces the weighted squared error (weights
    1/se²), and that reduction, (m₁ − m₂)² / (1/W₁ + 1/W₂): χ²₁ for any fixed k when nothing changed."""
    w = 1.0 / se**2
    cw, cwy = np.cumsum(w)[:-1], np.cumsum(w * estimate)[:-1]
    total_w, total_wy = w.sum(), (w * estimate).sum()
    before, after = cwy / cw, (total_wy - cwy) / (total_w - cw)
    statistic = (before - after) ** 2 / (1.0 / cw + 1.0 / (total_w - cw))
    k = int(np.argmax(statistic))
    return k + 1, float(statistic[k])


def change_points(estimate: np.ndarray, se: np.ndarray, n_series: int = 1, alpha: float = ALPHA) -> list[int]:
    """Indices where a new level starts, by binary segmentation: split at the best point while its statistic
    exceeds ``split_threshold`` for the segment's length, then look inside both halves."""
    estimate, se = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    found: list[int] = []
    pending = [(0, len(estimate))]
    while pending:
        low, high = pending.pop()
        if high - low < 2:
            continue
        k, statistic = best_split(estimate[low:high], se[low:high])
        if statistic > split_threshold(high - low, n_series, alpha):
            found.append(low + k)
            pending += [(low, low + k), (low + k, high)]
    return sorted(found)


def segment_means(estimate: np.ndarray, se: np.ndarray, starts: list[int]) -> list[tuple[int, int, float, float]]:
    """(first, end, weighted mean, its se) of each segment between the change points."""
    bounds = [0, *starts, len(estimate)]
    out = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        w = 1.0 / np.asarray(se[low:high], dtype=float) ** 2
        out.append((low, high, float((w * estimate[low:high]).sum() / w.sum()), float(1.0 / math.sqrt(w.sum()))))
    return out


# ---------------------------------------------------------------------------------------------------------
# The analysis


@dataclass(frozen=True)
class HistoryAnalysis:
    points: pd.DataFrame  # every point in order, with its series, position, segment and the segment's level
    changes: pd.DataFrame  # one row per change found
    runs: pd.DataFrame  # the runs in order
    left_out: int  # runs of commits not in --order
    n_series: int
    alpha: float


def analyse(points: pd.DataFrame, order: list[str] | None = None, alpha: float = ALPHA) -> HistoryAnalysis:
    """Order the runs, split every series (cell × metric, × machine for speed) into constant levels, and list the
    changes: the first commit of the new level, its size (ratio for variance and speed, difference for bias z)
    with a 95% interval from the two levels' standard errors."""
    runs, left_out = run_order(points, order)
    points = points.merge(runs[["run_id", "position"]], on="run_id")
    points = points[np.isfinite(points["estimate"]) & (points["se"] > 0) & np.isfinite(points["se"])].copy()
    points["machine_key"] = np.where(points["metric"] == "speed", points["machine"], "")
    points = points.sort_values(["position"], kind="stable")
    groups = list(points.groupby(SERIES, dropna=False, sort=True))
    n_series = sum(len(g) >= 2 for _, g in groups)
    annotated, changes = [], []
    for series_id, (_, group) in enumerate(groups):
        estimate, se = group["estimate"].to_numpy(), group["se"].to_numpy()
        starts = change_points(estimate, se, n_series, alpha) if len(group) >= 2 else []
        levels = segment_means(estimate, se, starts)
        segment = np.concatenate([[i] * (high - low) for i, (low, high, _, _) in enumerate(levels)])
        level = np.concatenate([[mean] * (high - low) for low, high, mean, _ in levels])
        annotated.append(group.assign(series=series_id, segment=segment, level=level))
        log_scale = group["metric"].iloc[0] in LOG_METRICS
        for (_, _, before, se_before), (low, _, after, se_after) in zip(levels[:-1], levels[1:]):
            diff, se_diff = after - before, math.hypot(se_before, se_after)
            first, previous = group.iloc[low], group.iloc[low - 1]
            size = (math.exp(diff), math.exp(diff - Z95 * se_diff), math.exp(diff + Z95 * se_diff)) if log_scale \
                else (diff, diff - Z95 * se_diff, diff + Z95 * se_diff)  # fmt: skip
            changes.append({**{c: first[c] for c in SERIES}, "series": series_id, "first_commit": first["commit"],
                            "first_dirty": first["dirty"], "first_run_date": first["run_date"],
                            "previous_commit": previous["commit"], "position": int(first["position"]),
                            "size_kind": "ratio" if log_scale else "difference", "size": size[0],
                            "ci_low": size[1], "ci_high": size[2], "z": diff / se_diff,
                            "worse": bool(abs(after) > abs(before)) if not log_scale else bool(diff > 0)})  # fmt: skip
    change_columns = [*SERIES, "series", "first_commit", "first_dirty", "first_run_date", "previous_commit", "position",
                      "size_kind", "size", "ci_low", "ci_high", "z", "worse"]  # fmt: skip
    frame = pd.concat(annotated, ignore_index=True) if annotated else points.assign(series=[], segment=[], level=[])
    return HistoryAnalysis(frame, pd.DataFrame(changes, columns=change_columns), runs, left_out, n_series, alpha)


# ---------------------------------------------------------------------------------------------------------
# Rendering: tables, plots, the summary for a pull request


MAX_PANELS = 48  # per plot: series with changes first, then the longest
METRIC_TITLES = {"variance": "variance of the estimate (log scale, 95% interval)", "bias_z": "bias z (±1.96)",
                 "speed": "cost relative to the RNG floor (log scale, 95% interval)"}  # fmt: skip


def _where(row: pd.Series) -> str:
    text = f"{row['method']} on {row['problem']}"
    if isinstance(row.get("problem_params"), str) and row["problem_params"] not in ("", "{}"):
        text += f" {row['problem_params']}"
    if isinstance(row.get("wrt"), str) and row["wrt"]:
        text += f" wrt {row['wrt']}"
    if pd.notna(row.get("theta")):
        text += f" θ={row['theta']:g}"
    if pd.notna(row.get("n_samples")):
        text += f" N={int(row['n_samples'])}"
    if isinstance(row.get("dtype"), str) and row["dtype"]:
        text += f" {row['dtype']}"
    return text


def _size(row: pd.Series) -> str:
    unit = "×" if row["size_kind"] == "ratio" else ""
    sign = "+" if row["size_kind"] == "difference" and row["size"] >= 0 else ""
    return f"{sign}{row['size']:.3g}{unit} [95% CI {row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def describe_change(row: pd.Series) -> str:
    """One line: the series, the first commit of its new level, the change with its interval."""
    what = {"variance": "variance", "bias_z": "bias z", "speed": "relative cost"}[row["metric"]]
    dirty = " (dirty)" if row["first_dirty"] else ""
    return (f"{'WORSE' if row['worse'] else 'BETTER'}: {_where(row)}: {what} {_size(row)} from commit "
            f"{row['first_commit'][:12]}{dirty} (previous {row['previous_commit'][:12]})")


def summary_markdown(analysis: HistoryAnalysis, order_given: bool) -> str:
    """summary.md: the changes as a short Markdown table, fit for a pull-request comment."""
    changes = analysis.changes.sort_values(["worse", "z"], ascending=[False, False], key=lambda s: s.abs() if s.name == "z" else s)
    runs = analysis.runs
    commits = runs["commit"].nunique()
    lines = [f"### varbench history: {len(changes)} change(s) in {analysis.n_series} series over {commits} "
             f"commit{'s' if commits != 1 else ''} ({len(runs)} run{'s' if len(runs) != 1 else ''})", ""]  # fmt: skip
    if len(changes):
        lines += ["| | cell | metric | first commit | change [95% CI] |", "|---|---|---|---|---|"]
        for _, row in changes.head(20).iterrows():
            metric = {"variance": "variance", "bias_z": "bias z", "speed": "relative cost"}[row["metric"]]
            lines.append(f"| {'worse' if row['worse'] else 'better'} | {_where(row)} | {metric} | "
                         f"`{row['first_commit'][:12]}`{' (dirty)' if row['first_dirty'] else ''} | {_size(row)} |")  # fmt: skip
        if len(changes) > 20:
            lines.append(f"| | … {len(changes) - 20} more in changes.csv | | | |")
    else:
        lines.append("No change found.")
    order = "in the commits' order given with --order" if order_given else "by run date"
    left = f"; {analysis.left_out} run(s) of commits not in --order left out" if analysis.left_out else ""
    lines += ["", f"Runs ordered {order}{left}. A change is a step in a piecewise-constant fit weighted by each point's "
              f"own standard error, accepted past a χ²₁ threshold Bonferroni-corrected over the splits and the "
              f"{analysis.n_series} series: on a history where nothing changed, P(any change) ≤ {analysis.alpha:g} "
              "(docs/regression.md)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def series_markdown(analysis: HistoryAnalysis) -> str:
    """history.md: one line per series: points, latest value with its interval, changes."""
    lines = ["# varbench history: every series", "",
             "| metric | cell | machine | points | latest [95% CI] | latest commit | changes |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    counts = analysis.changes.groupby("series").size()
    for series, group in analysis.points.groupby("series", sort=True):
        last = group.iloc[-1]
        lines.append(f"| {last['metric']} | {_where(last)} | {last['machine_key'] or '—'} | {len(group)} | "
                     f"{last['value']:.4g} [{last['ci_low']:.4g}, {last['ci_high']:.4g}] | `{last['commit'][:12]}` | "
                     f"{int(counts.get(series, 0))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_metric(analysis: HistoryAnalysis, metric: str, path: Path) -> Path | None:
    """Small multiples, one per series of ``metric``: each run's value and interval, the fitted levels, and a
    dashed line before the first commit of each change."""
    import matplotlib  # noqa: PLC0415 - plotting only when rendering

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import seaborn as sns  # noqa: PLC0415

    from .report.plots import colour, save_figure  # noqa: PLC0415

    points = analysis.points[analysis.points["metric"] == metric]
    if not len(points):
        return None
    changed = set(analysis.changes.loc[analysis.changes["metric"] == metric, "series"])
    lengths = points.groupby("series").size()
    series = sorted(lengths.index, key=lambda s: (s not in changed, -lengths[s], s))[:MAX_PANELS]
    columns = min(4, len(series))
    rows = math.ceil(len(series) / columns)
    sns.set_theme(style="whitegrid", font_scale=0.7)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.4 * rows), squeeze=False, sharex=True)
    labels = analysis.runs["commit"].str[:7].tolist()
    for ax, sid in zip(axes.flat, series):
        group = points[points["series"] == sid]
        first = group.iloc[0]
        x = group["position"].to_numpy()
        tint = colour(str(first["method"]).split("[")[0].split("+")[0])
        ax.errorbar(x, group["value"], yerr=[group["value"] - group["ci_low"], group["ci_high"] - group["value"]],
                    fmt="o", ms=2.5, lw=0.8, color=tint)  # fmt: skip
        level = np.exp(group["level"]) if metric in LOG_METRICS else group["level"]
        ax.step(x, level, where="mid", color="black", lw=1)
        for position in analysis.changes.loc[analysis.changes["series"] == sid, "position"]:
            ax.axvline(position - 0.5, color="crimson", ls="--", lw=1)
        if metric in LOG_METRICS:
            ax.set_yscale("log")
        ax.set_title(_where(first) + (f"\n{first['machine_key'][:40]}" if first["machine_key"] else ""), fontsize=6)
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    step = max(1, len(labels) // 8)
    for ax in axes[-1]:
        ax.set_xticks(range(0, len(labels), step), [labels[i] for i in range(0, len(labels), step)], rotation=60)
    fig.suptitle(f"{METRIC_TITLES[metric]} across commits", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.4 * rows)))  # room for the title
    return save_figure(fig, path)


def render(analysis: HistoryAnalysis, out: Path, *, order_given: bool = False) -> Path:
    """Write summary.md, history.md, history.csv, changes.csv and one plot per metric into ``out``; each file
    whole or not at all. Returns summary.md."""
    out = Path(out)

    def write_text(name: str, text: str) -> None:
        run_folder.replace_whole(out / name, text.encode("utf-8"))

    columns = ["position", "run_id", "commit", "dirty", "run_date", "machine", "series", *SERIES[:-1], "value",
               "ci_low", "ci_high", "estimate", "se", "segment", "level", "verdict"]  # fmt: skip
    write_text("history.csv", analysis.points.sort_values(["series", "position"])[columns].to_csv(index=False))
    write_text("changes.csv", analysis.changes.to_csv(index=False))
    write_text("history.md", series_markdown(analysis))
    for metric in METRICS:
        plot_metric(analysis, metric, out / f"history_{metric}.png")
    write_text("summary.md", summary_markdown(analysis, order_given))
    return out / "summary.md"

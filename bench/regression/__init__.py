"""Regression gate: compare a fresh run of the ``ci`` preset with a committed baseline, cell by cell.

A variance is itself a random quantity, so the gate is a statistical test, not a threshold:

- **variance**: one-sided test on log(new / baseline variance). Each side's standard error is read off its
  Bonett (2006) interval (kurtosis-adjusted, so heavy-tailed score-function estimates get wide intervals);
  the two runs are independent or positively correlated (same seeds), so adding the variances is conservative.
  A cell *regresses* only when the increase is significant after Holm's correction across the grid *and*
  the measured ratio is at least ``MIN_VARIANCE_RATIO`` (asv's rule: significant and large enough to matter).
- **bias**: an estimator that theory calls unbiased regresses when its mean differs significantly from the
  exact gradient (Holm across the grid), whatever the baseline says. For estimators biased in theory, a
  significant change of |bias| against the baseline is a regression (larger) or an improvement (smaller).
- **exact_variance**, **exact_mean**: where ``estimators.exact`` knows a cell's exact variance, the measured
  variance is tested against it (two-sided z on the log scale from the Bonett interval, Holm across the grid),
  and an estimator biased in theory has its mean tested against its exact mean. A significant deviation is a
  regression whatever the baseline says: the reference has no noise.
- **speed**: pytest-benchmark runs of ``bench/speed_benchmarks.py``; ratio of each call's median cost
  relative to ``torch.randn`` of the same size (timed beside every round) with a bootstrap interval. Reported
  always; a regression only when the baseline was recorded on the same machine fingerprint and the ratio is at
  least ``SPEED_FAIL_FACTOR`` with an interval above ``SPEED_MIN_LOW``. pytest-benchmark's own ``compare`` of
  the two saved runs (raw call times) is written beside the verdicts as ``speed_compare.txt``.

Verdicts per cell and metric: ok, improved, regressed, new (no baseline cell), missing (baseline cell not in
the new run). Pure functions on tables; running the sweep and the benchmarks is in ``run_regression``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .. import environment, run_folder
from ..statistics import FLOAT32_EPS, Z95, holm, rounding_resolution
from ..table import PARQUET_NAME, TABLE_NAME, TableError, latest_rows, load_table, table_exists

ALPHA = 0.01  # family-wise false-alarm rate per metric across the whole grid (Holm)
MIN_VARIANCE_RATIO = 1.2  # a variance change under 20% is not worth failing a build for
# Speed fails only past this factor (on the median over SPEED_REPEATS runs), with the pooled-rounds 95%
# interval above SPEED_MIN_LOW: single runs of unchanged code differ per benchmark by more than the band of a
# variance test (docs/performance.md), which is also why speed is gated only on the baseline's machine type.
SPEED_FAIL_FACTOR = 1.6
SPEED_MIN_LOW = 1.2
SPEED_REPEATS = 5  # benchmark processes per run; the gate compares the median of their medians
# The benchmark processes keep freed memory in their heap (environment.STEADY_HEAP_ENV): page faults from
# returning every freed tensor to the kernel made the same call's median vary 3x across processes.
SPEED_JSON = "speed.json"
META_JSON = "baseline.json"
REGRESSIONS_CSV = "regressions.csv"
SPEED_COMPARE_TXT = "speed_compare.txt"
VERDICTS = ("regressed", "missing", "new", "improved", "ok")
IDENTITY = ["cell_id", "method", "problem", "problem_params", "wrt", "theta", "n_samples", "device", "dtype"]
COLUMNS = IDENTITY + ["metric", "verdict", "baseline", "new", "ratio", "ci_low", "ci_high", "p_value",
                      "p_adjusted", "note"]  # fmt: skip


class BaselineError(ValueError):
    """A missing, corrupt or mismatched baseline; the message says how to make one."""


BASELINE_FILES = frozenset({TABLE_NAME, SPEED_JSON, META_JSON})
# What `varbench regress` writes into its folder (besides the report's plots).
REGRESS_FILES = (TABLE_NAME, PARQUET_NAME, SPEED_JSON, SPEED_COMPARE_TXT, REGRESSIONS_CSV, *run_folder.REPORT_FILES)


def _is_old_baseline(folder: Path, entries: set[str]) -> bool:
    """A baseline folder recorded before markers existed (the committed one): exactly the baseline's files."""
    return entries in (BASELINE_FILES, BASELINE_FILES | {PARQUET_NAME})


def _is_old_regress_run(folder: Path, entries: set[str]) -> bool:
    """A regression folder written before markers existed: its verdicts, its report, and nothing but the names
    `regress` writes."""
    return (REGRESSIONS_CSV in entries and run_folder.is_varbench_report(folder / "report.md")
            and all(name in REGRESS_FILES or name.endswith(".png") for name in entries))  # fmt: skip


def _remedy(folder: Path) -> str:
    # Never advise recording into a folder that holds anything else: `baseline` would refuse it, and it must not
    # read as advice to replace someone's results.
    try:
        run_folder.check_claimable(folder, "baseline", adopt=_is_old_baseline)
        where = f"`varbench baseline --out {folder}`"
    except run_folder.RunFolderError:
        where = "`varbench baseline --out NEW_FOLDER` (a new or empty folder) and pass --baseline NEW_FOLDER"
    return f"record one with {where}, or run `make baseline` to re-record results/baseline"


# ---------------------------------------------------------------------------------------------------------
# Statistics


def log_variance_se(rows: pd.DataFrame) -> pd.Series:
    """Standard error of log(grad_var), read off the Bonett interval: (log high − log low) / (2·z)."""
    return (np.log(rows["grad_var_ci_high"]) - np.log(rows["grad_var_ci_low"])) / (2 * Z95)


def exact_variance_z(rows: pd.DataFrame) -> pd.Series:
    """log(measured / exact variance) in standard errors, both read off the measured Bonett interval (its centre on
    the log scale, and ``log_variance_se``): the gate's test against exact, and the report's distance of a miss."""
    centre = (np.log(rows["grad_var_ci_low"]) + np.log(rows["grad_var_ci_high"])) / 2
    return (centre - np.log(rows["exact_var"])) / log_variance_se(rows)


def _identity(row: pd.Series) -> dict:
    return {column: row[column] for column in IDENTITY}


def _compare_variance(pairs: pd.DataFrame, alpha: float, min_ratio: float) -> list[dict]:
    out = []
    both_zero = (pairs["grad_var_new"] == 0) & (pairs["grad_var_base"] == 0)
    one_zero = ((pairs["grad_var_new"] == 0) | (pairs["grad_var_base"] == 0)) & ~both_zero
    testable = pairs[~both_zero & ~one_zero]
    log_ratio = np.log(testable["grad_var_new"]) - np.log(testable["grad_var_base"])
    se = np.sqrt(log_variance_se(testable.rename(columns=lambda c: c.removesuffix("_new"))) ** 2
                 + log_variance_se(testable.rename(columns=lambda c: c.removesuffix("_base"))) ** 2)  # fmt: skip
    z = log_ratio / se
    p_up, p_down = stats.norm.sf(z), stats.norm.cdf(z)
    adj_up, adj_down = holm(p_up), holm(p_down)
    for i, (_, row) in enumerate(testable.iterrows()):
        ratio = math.exp(log_ratio.iloc[i])
        if adj_up[i] < alpha and ratio >= min_ratio:
            verdict, p, p_adj = "regressed", p_up[i], adj_up[i]
        elif adj_down[i] < alpha and ratio <= 1 / min_ratio:
            verdict, p, p_adj = "improved", p_down[i], adj_down[i]
        else:
            verdict, p, p_adj = "ok", p_up[i], adj_up[i]
        out.append(
            _identity(row)
            | dict(metric="variance", verdict=verdict, baseline=row["grad_var_base"], new=row["grad_var_new"],
                   ratio=ratio, ci_low=math.exp(log_ratio.iloc[i] - Z95 * se.iloc[i]),
                   ci_high=math.exp(log_ratio.iloc[i] + Z95 * se.iloc[i]), p_value=p, p_adjusted=p_adj, note="")
        )  # fmt: skip
    for _, row in pairs[both_zero | one_zero].iterrows():
        became_noisy = row["grad_var_base"] == 0 and row["grad_var_new"] > 0
        out.append(
            _identity(row)
            | dict(metric="variance", verdict="regressed" if became_noisy else ("ok" if row["grad_var_new"] == 0
                   and row["grad_var_base"] == 0 else "improved"),
                   baseline=row["grad_var_base"], new=row["grad_var_new"], ratio=math.nan, ci_low=math.nan,
                   ci_high=math.nan, p_value=math.nan, p_adjusted=math.nan,
                   note="a deterministic estimator became random" if became_noisy else "zero variance")
        )  # fmt: skip
    return out


def _compare_bias(pairs: pd.DataFrame, alpha: float) -> list[dict]:
    out = []
    unbiased = pairs[pairs["expected_unbiased_new"].astype(bool)]
    # Against the exact gradient: the baseline does not get a vote.
    adjusted = holm(unbiased["bias_p_value_new"].to_numpy())
    for i, (_, row) in enumerate(unbiased.iterrows()):
        was_biased = row["bias_p_value_base"] < alpha / max(len(unbiased), 1)
        if adjusted[i] < alpha:
            verdict, note = "regressed", "theory says unbiased; the mean differs significantly from the exact gradient"
        else:
            verdict, note = ("improved", "no longer biased") if was_biased else ("ok", "")
        half = Z95 * row["bias_se_new"]
        out.append(
            _identity(row)
            | dict(metric="bias", verdict=verdict, baseline=row["bias_base"], new=row["bias_new"], ratio=math.nan,
                   ci_low=row["bias_new"] - half, ci_high=row["bias_new"] + half, p_value=row["bias_p_value_new"],
                   p_adjusted=adjusted[i], note=note)
        )  # fmt: skip
    # Biased in theory: compare |bias| with the baseline's (two independent means).
    biased = pairs[~pairs["expected_unbiased_new"].astype(bool)]
    diff = biased["bias_new"].abs() - biased["bias_base"].abs()
    se = np.sqrt(biased["bias_se_new"] ** 2 + biased["bias_se_base"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    p = 2 * stats.norm.sf(np.abs(z))
    adjusted = holm(p)
    for i, (_, row) in enumerate(biased.iterrows()):
        verdict = "ok"
        if adjusted[i] < alpha:
            verdict = "regressed" if z[i] > 0 else "improved"
        out.append(
            _identity(row)
            | dict(metric="bias", verdict=verdict, baseline=row["bias_base"], new=row["bias_new"], ratio=math.nan,
                   ci_low=diff.iloc[i] - Z95 * se.iloc[i], ci_high=diff.iloc[i] + Z95 * se.iloc[i], p_value=p[i],
                   p_adjusted=adjusted[i], note="biased in theory: |bias| compared with the baseline (interval: change of |bias|)")
        )  # fmt: skip
    return out


def _compare_exact(new_ok: pd.DataFrame, alpha: float) -> list[dict]:
    """Measured against exact, no baseline needed: the variance of every cell with an exact variance, and the mean
    of every estimator biased in theory with an exact mean (an unbiased one's mean is the bias test's). A
    significant deviation (Holm over the cells, per metric) is a regression whatever the baseline says."""
    out = []
    if "exact_var" not in new_ok:
        return out
    # The cells the run judged against exact (exact_var_covered set): not those at float rounding, not infinite.
    rows = new_ok[new_ok["exact_var_covered"].notna() & (new_ok["exact_var"] > 0) & (new_ok["grad_var"] > 0)]
    z = exact_variance_z(rows)
    p = 2 * stats.norm.sf(np.abs(z.to_numpy(dtype=float)))
    adjusted = holm(p)
    for i, (_, row) in enumerate(rows.iterrows()):
        regressed = adjusted[i] < alpha
        out.append(_identity(row) | dict(
            metric="exact_variance", verdict="regressed" if regressed else "ok", baseline=row["exact_var"],
            new=row["grad_var"], ratio=row["grad_var"] / row["exact_var"],
            ci_low=row["grad_var_ci_low"] / row["exact_var"], ci_high=row["grad_var_ci_high"] / row["exact_var"],
            p_value=p[i], p_adjusted=adjusted[i],
            note="the measured variance differs significantly from the exact variance" if regressed else "exact variance: baseline column holds it"))  # fmt: skip
    biased = new_ok[new_ok["exact_mean"].notna() & ~new_ok["expected_unbiased"].astype(bool) & (new_ok["bias_se"] > 0)]
    eps = np.where(biased["dtype"] == "float64", np.finfo(np.float64).eps, FLOAT32_EPS)
    resolution = [rounding_resolution(r.exact_mean, r.grad_mean, math.sqrt(r.grad_var), e) for r, e in zip(biased.itertuples(), eps)]
    z = (biased["grad_mean"] - biased["exact_mean"]) / np.hypot(biased["bias_se"], resolution)
    p = 2 * stats.norm.sf(np.abs(z.to_numpy(dtype=float)))
    adjusted = holm(p)
    for i, (_, row) in enumerate(biased.iterrows()):
        regressed = adjusted[i] < alpha
        half = Z95 * row["bias_se"]
        out.append(_identity(row) | dict(
            metric="exact_mean", verdict="regressed" if regressed else "ok", baseline=row["exact_mean"],
            new=row["grad_mean"], ratio=math.nan, ci_low=row["grad_mean"] - half, ci_high=row["grad_mean"] + half,
            p_value=p[i], p_adjusted=adjusted[i],
            note="biased in theory; the mean differs significantly from its exact mean" if regressed else "exact mean: baseline column holds it"))  # fmt: skip
    return out


def compare_tables(
    baseline: pd.DataFrame, new: pd.DataFrame, *, alpha: float = ALPHA, min_ratio: float = MIN_VARIANCE_RATIO
) -> pd.DataFrame:
    """Verdicts (one row per cell and metric) of ``new`` against ``baseline``; both are results tables."""
    baseline, new = latest_rows(baseline), latest_rows(new)
    rows: list[dict] = []
    base_ok = baseline[baseline["status"] == "ok"]
    new_ok = new[new["status"] == "ok"]
    pairs = new_ok.merge(base_ok, on="cell_id", suffixes=("_new", "_base"))
    for column in IDENTITY[1:]:
        pairs[column] = pairs[f"{column}_new"]
    # An infinite variance has no interval and no z-test: such cells are reported, not tested.
    infinite = pairs["variance_infinite_new"].eq(True) | pairs["variance_infinite_base"].eq(True)
    for _, row in pairs[infinite].iterrows():
        rows += [_identity(row) | dict(metric=metric, verdict="ok", note="infinite variance: not tested")
                 for metric in ("variance", "bias")]  # fmt: skip
    pairs = pairs[~infinite].infer_objects()
    if len(pairs):
        rows += _compare_variance(pairs, alpha, min_ratio)
        rows += _compare_bias(pairs, alpha)
    rows += _compare_exact(new_ok[~new_ok["variance_infinite"].eq(True)].infer_objects(), alpha)
    for _, row in new_ok[~new_ok["cell_id"].isin(base_ok["cell_id"])].iterrows():
        rows.append(_identity(row) | dict(metric="cell", verdict="new", note="not in the baseline"))
    for _, row in base_ok[~base_ok["cell_id"].isin(new_ok["cell_id"])].iterrows():
        failed = new[(new["cell_id"] == row["cell_id"]) & (new["status"] == "error")]
        if len(failed):
            rows.append(_identity(row) | dict(metric="cell", verdict="regressed", note=f"failed: {failed['note'].iloc[-1]}"))
        else:
            rows.append(_identity(row) | dict(metric="cell", verdict="missing", note="in the baseline, not measured now"))
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------------
# Speed (pytest-benchmark JSON)


def machine_fingerprint(speed: dict) -> str:
    """What must match for timings to be comparable: CPU model and count, OS, architecture, Python, torch."""
    info = speed.get("machine_info", {})
    cpu = info.get("cpu", {})
    first = (speed.get("benchmarks") or [{}])[0].get("extra_info", {})
    # brand_raw alone is often generic in VMs ("AMD EPYC"), so family/model/clock tell CPU generations apart.
    parts = [cpu.get("brand_raw", "?"), f"family {cpu.get('family', '?')} model {cpu.get('model', '?')}",
             cpu.get("hz_advertised_friendly", "?"), f"{cpu.get('count', '?')} cpus", info.get("system", "?"),
             info.get("machine", "?"), f"python {info.get('python_version', '?')}",
             f"torch {first.get('torch_version', '?')}", f"{first.get('num_threads', '?')} threads"]  # fmt: skip
    return ", ".join(str(p) for p in parts)


def _median_ratio_interval(new: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    draws = 2000
    new_medians = np.median(rng.choice(new, (draws, new.size)), axis=1)
    base_medians = np.median(rng.choice(base, (draws, base.size)), axis=1)
    ratios = new_medians / base_medians
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def compare_speed(baseline: dict, new: dict, *, fail_factor: float = SPEED_FAIL_FACTOR) -> pd.DataFrame:
    """Verdicts on each benchmark's cost relative to the RNG floor (median call time for files recorded before
    floors were timed); gated only when the machine fingerprints match."""
    same_machine = machine_fingerprint(baseline) == machine_fingerprint(new)
    base_by_name = {b["fullname"]: b for b in baseline.get("benchmarks", [])}
    new_by_name = {b["fullname"]: b for b in new.get("benchmarks", [])}
    rng = np.random.default_rng(0)
    rows = []
    for name, bench_new in new_by_name.items():
        info = bench_new.get("extra_info", {})
        identity = dict(cell_id=name, method=info.get("estimator", ""), problem=info.get("problem", ""),
                        theta=info.get("theta"), n_samples=info.get("n_samples"), device="cpu")  # fmt: skip
        bench_base = base_by_name.get(name)
        if bench_base is None:
            rows.append(identity | dict(metric="speed", verdict="new", note="benchmark not in the baseline"))
            continue
        # Relative to the RNG floor timed beside each round when both runs have it (see speed_benchmarks.py).
        relative = all("run_relative_medians" in b.get("extra_info", {}) for b in (bench_new, bench_base))
        if relative:
            t_new, t_base = _relative_rounds(bench_new), _relative_rounds(bench_base)
        else:
            t_new = np.asarray(bench_new["stats"].get("data") or [bench_new["stats"]["median"]], dtype=float)
            t_base = np.asarray(bench_base["stats"].get("data") or [bench_base["stats"]["median"]], dtype=float)
        ratio = _typical_cost(bench_new, relative) / _typical_cost(bench_base, relative)
        # The interval's relative width comes from bootstrapping the first runs' rounds, centred on the ratio.
        low, high = _median_ratio_interval(t_new, t_base, rng)
        first_ratio = float(np.median(t_new) / np.median(t_base))
        low, high = low * ratio / first_ratio, high * ratio / first_ratio
        verdict, note = "ok", ""
        if ratio >= fail_factor and low > SPEED_MIN_LOW:
            verdict = "regressed" if same_machine else "ok"
            if not same_machine:
                note = f"{ratio:.2f}x slower, not gated: baseline recorded on another machine"
        elif ratio <= 1 / fail_factor and high < 1 / SPEED_MIN_LOW:
            verdict = "improved"
        if same_machine is False and not note:
            note = "baseline recorded on another machine: reported, not gated"
        rows.append(
            identity
            | dict(metric="speed", verdict=verdict, baseline=_typical_cost(bench_base, relative),
                   new=_typical_cost(bench_new, relative),
                   ratio=ratio, ci_low=low, ci_high=high, note=note)
        )  # fmt: skip
    for name, bench_base in base_by_name.items():
        if name not in new_by_name:
            info = bench_base.get("extra_info", {})
            rows.append(dict(cell_id=name, method=info.get("estimator", ""), problem=info.get("problem", ""),
                             metric="speed", verdict="missing", note="benchmark in the baseline, not run now"))  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------------
# Running: baseline recording and the gate itself


def run_speed_benchmarks(json_path: Path, *, extra_args: tuple[str, ...] = (), repeats: int = SPEED_REPEATS) -> dict:
    """Run bench/speed_benchmarks.py under pytest-benchmark ``repeats`` times, each in a fresh process, and save
    one pytest-benchmark JSON: the first run's, with every run's median in ``extra_info["run_medians"]``.

    Fresh processes because a run's timings carry a per-run offset (allocator and page state); five because fewer
    left that offset in the median (docs/performance.md). ``extra_args`` go to pytest (e.g. ``-k pathwise``)."""
    runs = [run_speed_process(json_path, repeat, extra_args=extra_args) for repeat in range(repeats)]
    merged = merge_speed_runs(runs)
    json_path.write_text(json.dumps(merged, indent=1))
    return merged


def run_speed_process(json_path: Path, repeat: int, *, extra_args: tuple[str, ...] = ()) -> dict:
    """One fresh pytest-benchmark process over bench/speed_benchmarks.py; its JSON (the file is removed)."""
    module = Path(__file__).with_name("speed_benchmarks.py")
    path = json_path.with_name(f"{json_path.stem}.run{repeat}.json")
    # Rounds and warm-up are the module's own (benchmark.pedantic), so no --benchmark-min-rounds/-max-time here.
    command = [sys.executable, "-m", "pytest", str(module), "-q", "-p", "no:cacheprovider",
               f"--benchmark-json={path}", "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
               *extra_args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, **environment.STEADY_HEAP_ENV))
    if done.returncode != 0:
        raise RuntimeError(f"speed benchmarks failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    run = json.loads(path.read_text())
    path.unlink()
    return run


def merge_speed_runs(runs: list[dict]) -> dict:
    """The first run's JSON, with every run's median per benchmark in ``extra_info["run_medians"]`` and, where
    the benchmark timed its RNG floor, every run's median cost relative to it in ``run_relative_medians``."""
    merged = json.loads(json.dumps(runs[0]))
    for bench in merged["benchmarks"]:
        same = [other for run in runs for other in run["benchmarks"] if other["fullname"] == bench["fullname"]]
        bench["extra_info"]["run_medians"] = [other["stats"]["median"] for other in same]
        relative = [_relative_rounds(other) for other in same]
        if all(rounds is not None for rounds in relative):
            bench["extra_info"]["run_relative_medians"] = [float(np.median(rounds)) for rounds in relative]
    return merged


def _relative_rounds(bench: dict) -> np.ndarray | None:
    """Each timed round's call time over the RNG-floor time measured just before it; None for older files."""
    floor = bench.get("extra_info", {}).get("floor_times")
    data = bench["stats"].get("data")
    if not floor or not data or len(floor) != len(data):
        return None
    return np.asarray(data, dtype=float) / np.asarray(floor, dtype=float)


def _typical_cost(bench: dict, relative: bool) -> float:
    """Median over runs of each run's median: cost relative to the RNG floor, or call time in seconds."""
    info = bench.get("extra_info", {})
    if relative:
        return float(np.median(info["run_relative_medians"]))
    return float(np.median(info.get("run_medians") or [bench["stats"]["median"]]))


def read_speed(path: Path) -> dict:
    """A saved pytest-benchmark run (speed.json), or {} where there is none; ValueError when it is not one."""
    if not path.is_file():
        return {}
    speed = json.loads(path.read_text())
    if not isinstance(speed, dict) or not isinstance(speed.get("benchmarks"), list):
        raise ValueError("no 'benchmarks' list")
    return speed


def load_baseline(folder: Path) -> tuple[pd.DataFrame, dict, dict]:
    """(table, speed JSON, metadata) of a recorded baseline; BaselineError naming what is wrong otherwise."""
    folder = Path(folder)
    if not (folder / META_JSON).exists() or not table_exists(folder / TABLE_NAME):
        raise BaselineError(f"no baseline in {folder}/ ({META_JSON} and {TABLE_NAME} expected); {_remedy(folder)}")
    try:
        meta = json.loads((folder / META_JSON).read_text())
        if not isinstance(meta, dict) or "preset" not in meta or "base_seed" not in meta:
            raise ValueError("missing keys preset/base_seed")
    except ValueError as error:
        raise BaselineError(f"baseline {folder / META_JSON} is corrupt ({error}); {_remedy(folder)}") from None
    try:
        table = load_table(folder / TABLE_NAME)
    except TableError as error:
        raise BaselineError(f"{error}; {_remedy(folder)}") from None
    if not len(table):
        raise BaselineError(f"baseline table {folder / TABLE_NAME} has no rows; {_remedy(folder)}")
    try:
        speed = read_speed(folder / SPEED_JSON)
    except ValueError as error:
        raise BaselineError(f"baseline {folder / SPEED_JSON} is corrupt ({error}); {_remedy(folder)}") from None
    return table, speed, meta


@dataclass(frozen=True)
class RegressionOutcome:
    verdicts: pd.DataFrame
    fingerprint_matches: bool
    report: Path | None = None

    @property
    def regressed(self) -> pd.DataFrame:
        return self.verdicts[self.verdicts["verdict"] == "regressed"]


def record_baseline(folder: Path, *, preset_name: str = "ci", base_seed: int = 0, progress: bool = True) -> Path:
    """Measure ``preset_name`` and the speed benchmarks into ``folder``: a new or empty folder, or one a baseline
    was recorded into before (then the files it recorded are replaced; nothing else is touched)."""
    from .. import grid, sweep  # noqa: PLC0415 - heavy imports only when running

    folder = Path(folder)
    cells = grid.expand(grid.preset(preset_name))
    grid.check_base_seed(base_seed)
    run_folder.check_claimable(folder, "baseline", adopt=_is_old_baseline)  # before anything is written
    run_folder.ensure_writable(folder)
    with run_folder.locked(folder, "baseline", wait_hint=""):
        claim = run_folder.claim(folder, "baseline", tuple(sorted(BASELINE_FILES)), adopt=_is_old_baseline)
        outcome = sweep.run_cells(cells, folder, base_seed, progress=progress)
        if outcome.errors:
            raise RuntimeError(f"{outcome.errors} baseline cells failed (see {outcome.table}); not recording a baseline")
        speed = run_speed_benchmarks(folder / SPEED_JSON)
        meta = dict(preset=preset_name, base_seed=base_seed, git_sha=environment.git_sha(),
                    machine=machine_fingerprint(speed), python=platform.python_version())  # fmt: skip
        (folder / META_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        claim.record()
    return folder


def run_regression(baseline_folder: Path, out: Path, *, base_seed: int | None = None, progress: bool = True,
                   render: Callable[[Path], Path] | None = None) -> RegressionOutcome:  # fmt: skip
    """Re-measure the baseline's preset into ``out`` and compare; writes ``out/regressions.csv`` (and, with
    ``render``, e.g. ``bench.report.write_report``, the report). ``out`` is new, empty, or a folder ``regress``
    wrote before: a regression run is always a fresh measurement, so the files it wrote there before are
    replaced, and only those."""
    from .. import grid, sweep  # noqa: PLC0415

    baseline, baseline_speed, meta = load_baseline(baseline_folder)  # fails before any work is done
    out = Path(out)
    if out.resolve() == Path(baseline_folder).resolve():
        raise BaselineError(f"--out {out} is the baseline folder; choose another")
    seed = meta["base_seed"] if base_seed is None else base_seed
    cells = grid.expand(grid.preset(meta["preset"]))
    grid.check_base_seed(seed)
    run_folder.check_claimable(out, "regress", adopt=_is_old_regress_run)
    run_folder.ensure_writable(out)
    with run_folder.locked(out, "regress", wait_hint=""):
        claim = run_folder.claim(out, "regress", REGRESS_FILES, adopt=_is_old_regress_run)
        sweep.run_cells(cells, out, seed, progress=progress)
        new = load_table(out / TABLE_NAME)
        verdicts = [compare_tables(baseline, new)]
        same_machine = False
        if baseline_speed:
            speed = run_speed_benchmarks(out / SPEED_JSON)
            same_machine = machine_fingerprint(speed) == machine_fingerprint(baseline_speed)
            verdicts.append(compare_speed(baseline_speed, speed))
            write_pytest_benchmark_compare(Path(baseline_folder) / SPEED_JSON, out / SPEED_JSON, out / SPEED_COMPARE_TXT)
        frame = ordered_verdicts(verdicts)
        frame.to_csv(out / REGRESSIONS_CSV, index=False)
        outcome = RegressionOutcome(frame, same_machine)
        if render is not None:
            outcome = RegressionOutcome(frame, same_machine, render(out))
        claim.record()
    return outcome


def ordered_verdicts(verdicts: list[pd.DataFrame]) -> pd.DataFrame:
    """The verdict tables as one, regressions first (the order of ``VERDICTS``)."""
    frame = pd.concat([v for v in verdicts if len(v)] or [pd.DataFrame(columns=COLUMNS)], ignore_index=True)
    return frame.sort_values("verdict", key=lambda s: s.map(VERDICTS.index), kind="stable").reset_index(drop=True)


def load_run(folder: Path, flag: str) -> tuple[pd.DataFrame, dict]:
    """(table, speed JSON or {}) of any run folder (run, regress, baseline); TableError naming ``flag`` and the
    folder otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TableError(f"{flag} {folder} is not a folder (give a run folder written by varbench run, regress or "
                         "baseline)")  # fmt: skip
    try:
        table = load_table(folder / TABLE_NAME)
    except TableError as error:
        raise TableError(f"{flag} {folder}: {error}") from None
    if not (table["status"] == "ok").any():
        raise TableError(f"{flag} {folder}: its results table has no ok cells to compare")
    try:
        speed = read_speed(folder / SPEED_JSON)
    except ValueError as error:
        raise TableError(f"{flag} {folder}: {folder / SPEED_JSON} is corrupt ({error})") from None
    return table, speed


def compare_runs(folder_a: Path, folder_b: Path) -> RegressionOutcome:
    """The gate's verdicts of run B against run A (any two run folders): ``compare_tables``, and ``compare_speed``
    when both have speed benchmarks (gated only on the same machine fingerprint)."""
    table_a, speed_a = load_run(folder_a, "RUN_A")
    table_b, speed_b = load_run(folder_b, "RUN_B")
    verdicts = [compare_tables(table_a, table_b)]
    same_machine = True  # nothing to say about machines without speed figures on both sides
    if speed_a and speed_b:
        same_machine = machine_fingerprint(speed_a) == machine_fingerprint(speed_b)
        verdicts.append(compare_speed(speed_a, speed_b))
    return RegressionOutcome(ordered_verdicts(verdicts), same_machine)


def write_pytest_benchmark_compare(baseline_json: Path, new_json: Path, path: Path) -> None:
    """pytest-benchmark's own side-by-side table of the two saved runs (raw call times, one group per
    benchmark), for readers who know that tool; the verdicts come from ``compare_speed``, not from it."""
    # pytest_benchmark.cli has no __main__ guard, so `python -m` would print nothing; call its entry point.
    entry = "import sys; from pytest_benchmark.cli import main; sys.argv[0] = 'pytest-benchmark'; main()"
    command = [sys.executable, "-c", entry, "compare", str(baseline_json), str(new_json),
               "--group-by=fullname", "--columns=median,iqr,rounds", "--sort=name"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    text = done.stdout if done.returncode == 0 else f"pytest-benchmark compare failed (exit {done.returncode}):\n{done.stderr}"
    path.write_text(text)


def describe_verdict(row: pd.Series) -> str:
    """One line naming the cell, the metric, the ratio (or value) and its interval."""
    where = f"{row['method']} on {row['problem']}"
    if isinstance(row.get("problem_params"), str) and row["problem_params"] not in ("", "{}"):
        where += f" {row['problem_params']}"
    if pd.notna(row.get("wrt")):
        where += f" wrt {row['wrt']}"
    if pd.notna(row.get("theta")):
        where += f" θ={row['theta']:g}"
    if pd.notna(row.get("n_samples")):
        where += f" N={int(row['n_samples'])}"
    if row["metric"] in ("variance", "speed") and pd.notna(row["ratio"]):
        what = f"{row['metric']} ratio new/baseline {row['ratio']:.3g} [95% CI {row['ci_low']:.3g}, {row['ci_high']:.3g}]"
    elif row["metric"] == "exact_variance" and pd.notna(row["ratio"]):
        what = f"variance measured/exact {row['ratio']:.3g} [95% CI {row['ci_low']:.3g}, {row['ci_high']:.3g}]"
    elif row["metric"] == "exact_mean" and pd.notna(row["new"]):
        what = f"mean {row['new']:.4g} [95% CI {row['ci_low']:.4g}, {row['ci_high']:.4g}] against exact {row['baseline']:.4g}"
    elif row["metric"] == "bias" and pd.notna(row["new"]):
        what = f"bias {row['new']:.4g} [95% CI {row['ci_low']:.4g}, {row['ci_high']:.4g}]"
    else:
        what = row["metric"]
    if pd.notna(row.get("p_adjusted")):
        what += f", Holm-adjusted p = {row['p_adjusted']:.2g}"
    note = f" — {row['note']}" if isinstance(row.get("note"), str) and row["note"] else ""
    return f"{row['verdict'].upper()}: {where}: {what}{note}"

"""The history across commits: appends that never lose a run, change points at the right commit with a false-alarm
rate at most the nominal one, and `varbench compare` giving the gate's verdicts on any two run folders.

The synthetic histories are built from realistic rows: real estimates through the sweep's measurement code (a
variance step is an estimator with more noise from one commit on), and speed files merged by the gate's own code
from per-process rounds whose spreads are those docs/performance.md measured."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import cli, history, measure, regression, statistics
from bench.grid import Sweep, expand
from bench.statistics import Z95
from bench.table import TABLE_NAME, append_rows
from estimators import ESTIMATORS

REPO = Path(__file__).resolve().parent.parent
COMMITS = 30
VARIANCE_STEP_AT, SPEED_STEP_AT = 17, 9
VARIANCE_STEP = 1.3  # variance × 1.3 from VARIANCE_STEP_AT on
# pathwise (the one that gets noisier) and the score function (heavy-tailed, unchanged), M = 2000 as the ci preset.
CELLS = expand([Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)},
                      estimators=("pathwise", "score_function"), n_samples=(10,), replicates=2000)])  # fmt: skip
BENCHMARKS = ("test_speed[pathwise-seed_dependent]", "test_speed[score_function-seed_dependent]")
# Per docs/performance.md: relative costs vary by sd 0.03-0.05 (log) from run to run; rounds scatter more.
PROCESS_LOG_SD, ROUND_LOG_SD, ROUNDS = 0.04, 0.1, 40


def sha(i: int) -> str:
    return hashlib.sha1(f"commit {i}".encode()).hexdigest()


def _noisier(estimator, factor: float):
    """The same estimator with its noise scaled by ``factor`` around the exact gradient (as in test_regression)."""

    def surrogate(problem, theta, n_samples, **options):
        exact = problem.gradient(float(theta.detach().flatten()[0]))
        summed = estimator.surrogate(problem, theta, n_samples, **options).reshape(-1, *theta.shape).sum(dim=0)
        return factor * summed - (factor - 1) * exact * n_samples * theta

    return dataclasses.replace(estimator, surrogate=surrogate)


def speed_file(rng: np.random.Generator, costs: dict[str, float]) -> dict:
    """A speed.json as `regress` writes it: five processes' rounds (call time and the RNG floor before it),
    merged by the gate's own merge_speed_runs."""
    runs = []
    for _ in range(regression.SPEED_REPEATS):
        benchmarks = []
        for name, cost in costs.items():
            offset = math.exp(rng.normal(0, PROCESS_LOG_SD))
            floor = 1e-3 * np.exp(rng.normal(0, ROUND_LOG_SD, ROUNDS))
            data = cost * floor * offset * np.exp(rng.normal(0, ROUND_LOG_SD, ROUNDS))
            benchmarks.append(dict(fullname=name, stats=dict(data=data.tolist(), median=float(np.median(data))),
                                   extra_info=dict(floor_times=floor.tolist(), estimator=name.split("[")[1].split("-")[0],
                                                   problem="seed_dependent", theta=3.0, n_samples=1000,
                                                   torch_version="2.13.0", num_threads=1)))  # fmt: skip
        runs.append(dict(machine_info=dict(cpu=dict(brand_raw="test cpu"), system="Linux"), benchmarks=benchmarks))
    return regression.merge_speed_runs(runs)


def write_run(folder: Path, commit: int, rows: list[dict], speed: dict | None) -> Path:
    folder.mkdir(parents=True)
    started = f"2026-01-{1 + commit // 24:02d}T{commit % 24:02d}:00:00+00:00"
    append_rows(folder / TABLE_NAME, [dict(row, git_sha=sha(commit), started_at=started) for row in rows])
    if speed is not None:
        (folder / regression.SPEED_JSON).write_text(json.dumps(speed))
    return folder


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> list[Path]:
    """COMMITS run folders: pathwise's variance × 1.3 from VARIANCE_STEP_AT, both benchmarks 2× slower from
    SPEED_STEP_AT, everything else unchanged."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(19)
    folders = []
    with pytest.MonkeyPatch.context() as patch:
        for i in range(COMMITS):
            if i == VARIANCE_STEP_AT:
                patch.setitem(ESTIMATORS, "pathwise", _noisier(ESTIMATORS["pathwise"], math.sqrt(VARIANCE_STEP)))
            rows = [measure.measure_cell(cell, base_seed=i, timed=False) for cell in CELLS]
            factor = 2.0 if i >= SPEED_STEP_AT else 1.0
            speed = speed_file(rng, {BENCHMARKS[0]: 3.0 * factor, BENCHMARKS[1]: 5.0 * factor})
            folders.append(write_run(root / f"run{i:02d}", i, rows, speed))
    return folders


@pytest.fixture(scope="module")
def rendered(run_folders, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("history")
    store, out = root / "history", root / "out"
    # Appended out of order: the history orders runs by their date, not by when they were added.
    shuffled = [run_folders[i] for i in np.random.default_rng(3).permutation(COMMITS)]
    assert cli.main(["history", str(store), *[arg for run in shuffled for arg in ("--append", str(run))]]) == 0
    assert cli.main(["history", str(store), "--out", str(out)]) == 0
    return store, out


def test_a_variance_step_and_a_speed_step_are_located_at_their_commits(rendered):
    _, out = rendered
    changes = pd.read_csv(out / "changes.csv", keep_default_na=False)
    variance = changes[changes["metric"] == "variance"]
    assert list(variance["method"]) == ["pathwise"], changes
    (step,) = variance.to_dict("records")
    assert step["first_commit"] == sha(VARIANCE_STEP_AT) and step["previous_commit"] == sha(VARIANCE_STEP_AT - 1)
    assert step["size_kind"] == "ratio" and step["ci_low"] <= VARIANCE_STEP <= step["ci_high"] and step["worse"]
    speed = changes[changes["metric"] == "speed"]
    assert sorted(speed["cell_id"]) == sorted(BENCHMARKS), changes
    assert (speed["first_commit"] == sha(SPEED_STEP_AT)).all()
    assert ((speed["ci_low"] <= 2.0) & (2.0 <= speed["ci_high"])).all() and speed["worse"].all()
    # Nothing else changed: at family-wise α = 0.01 any further change would be a false alarm.
    assert len(changes) == 3 and not (changes["metric"] == "bias_z").any()


def test_the_rendering_has_plots_tables_and_a_summary_for_a_pull_request(rendered):
    store, out = rendered
    summary = (out / "summary.md").read_text()
    assert summary.startswith("### varbench history: 3 change(s)") and f"`{sha(VARIANCE_STEP_AT)[:12]}`" in summary
    assert "1.3" in summary and "95% CI" in summary and "P(any change) ≤ 0.01" in summary
    table = pd.read_csv(out / "history.csv", keep_default_na=False)
    assert set(table["metric"]) == {"variance", "bias_z", "speed"}
    assert table.groupby("series").size().eq(COMMITS).all()  # one point per commit in every series
    assert "| variance | pathwise on gaussian_cos" in (out / "history.md").read_text()
    for metric in history.METRICS:
        assert (out / f"history_{metric}.png").stat().st_size > 10_000
    # The store: one table and one points file per run, nothing half-written, the marker.
    names = sorted(p.name for p in store.iterdir())
    assert sum(n.endswith(history.POINTS_SUFFIX) for n in names) == COMMITS
    assert sum(n.endswith(history.TABLE_SUFFIX) for n in names) == COMMITS
    assert history.MARKER in names and not [n for n in names if n.endswith(".tmp")]


def test_an_order_from_git_log_decides_the_order_and_leaves_out_other_commits(rendered, tmp_path):
    store, _ = rendered
    # Abbreviated shas, oldest first; the last five commits are not listed (another branch).
    order = tmp_path / "order.txt"
    order.write_text("\n".join(sha(i)[:10] for i in range(COMMITS - 5)) + "\n")
    out = tmp_path / "out"
    assert cli.main(["history", str(store), "--out", str(out), "--order", str(order)]) == 0
    summary = (out / "summary.md").read_text()
    assert "5 run(s) of commits not in --order left out" in summary
    changes = pd.read_csv(out / "changes.csv", keep_default_na=False)
    assert sorted(changes["first_commit"]) == sorted([sha(VARIANCE_STEP_AT)] + [sha(SPEED_STEP_AT)] * 2)


def test_a_timed_run_adds_its_relative_costs_as_speed_points(run_folders):
    table = history.load_table(run_folders[0] / TABLE_NAME)
    table.loc[0, ["relative_cost", "relative_cost_ci_low", "relative_cost_ci_high"]] = [2.0, 1.6, 2.5]
    points = history.table_points(table)
    (speed,) = points[points["metric"] == "speed"].to_dict("records")
    assert speed["cell_id"] == table.loc[0, "cell_id"] and speed["estimate"] == math.log(2.0)
    assert speed["se"] == pytest.approx(math.log(2.5 / 1.6) / (2 * Z95))
    assert sorted(points["metric"]) == ["bias_z", "bias_z", "speed", "variance", "variance"]


# ---------------------------------------------------------------------------------------------------------
# Calibration: no change on unchanged series, at most at the nominal rate


def variance_series(rng: np.random.Generator, points: int, m: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """log variance and its Bonett se (as the history takes them from a table) of ``points`` runs of M
    replicate estimates, each the mean of 10 skewed (exponential) samples."""
    out = []
    for _ in range(points):
        x = rng.exponential(size=(m, 10)).mean(axis=1)
        low, high = statistics.variance_interval(x)
        out.append((math.log(np.var(x, ddof=1)), (math.log(high) - math.log(low)) / (2 * Z95)))
    return tuple(np.array(v) for v in zip(*out))


def test_unchanged_variance_series_raise_alarms_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(2026)
    alpha, series = 0.05, 200
    alarms, fixed_split = 0, 0
    for _ in range(series):
        estimate, se = variance_series(rng, COMMITS)
        alarms += bool(history.change_points(estimate, se, n_series=1, alpha=alpha))
        # The statistic at one fixed split is χ²₁ when nothing changed: its rejection rate must be alpha, not
        # less (the se would be too large) nor more (too small).
        left, right = estimate[:15], estimate[15:]
        w_left, w_right = 1 / se[:15] ** 2, 1 / se[15:] ** 2
        diff = (w_left * left).sum() / w_left.sum() - (w_right * right).sum() / w_right.sum()
        fixed_split += diff**2 / (1 / w_left.sum() + 1 / w_right.sum()) > stats.chi2.isf(alpha, 1)
    assert alarms <= stats.binom.ppf(0.999, series, alpha), alarms
    assert stats.binom.ppf(0.001, series, alpha) <= fixed_split <= stats.binom.ppf(0.999, series, alpha), fixed_split


def test_unchanged_speed_series_raise_alarms_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(7)
    alpha, series = 0.05, 100
    alarms = 0
    for _ in range(series):
        points = pd.concat([history.speed_points(speed_file(rng, {BENCHMARKS[0]: 3.0})) for _ in range(COMMITS)])
        alarms += bool(history.change_points(points["estimate"].to_numpy(), points["se"].to_numpy(), 1, alpha))
    assert alarms <= stats.binom.ppf(0.999, series, alpha), alarms


def test_the_threshold_is_bonferroni_over_splits_and_series():
    # One series of 2 points: one split, χ²₁ at alpha; 11 points in 10 series: alpha / 100.
    assert history.split_threshold(2, 1, 0.05) == pytest.approx(Z95**2, rel=1e-6)
    assert history.split_threshold(11, 10, 0.05) == pytest.approx(stats.norm.isf(0.05 / 200) ** 2, rel=1e-6)
    # A step of 5 standard errors in a series of 20 is found at its index; a flat series gives nothing.
    y = np.r_[np.zeros(12), np.full(8, 5.0)]
    assert history.change_points(y, np.ones(20)) == [12]
    assert history.change_points(np.zeros(20), np.ones(20)) == []


# ---------------------------------------------------------------------------------------------------------
# Concurrent appends, bad folders


@pytest.mark.integration
def test_two_concurrent_appends_keep_both_runs(run_folders, tmp_path):
    store = tmp_path / "history"
    command = [sys.executable, "-m", "bench", "history", str(store)]
    halves = [run_folders[:5], run_folders[5:10]]
    jobs = [subprocess.Popen([*command, *[arg for run in half for arg in ("--append", str(run))]], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for half in halves]  # fmt: skip
    for job in jobs:
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
    points = history.load_points(store)
    assert points["run_id"].nunique() == 10
    assert sorted(points["commit"].unique()) == sorted(sha(i) for i in range(10))


def test_an_append_refuses_a_folder_that_is_not_a_history_before_writing(run_folders, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli.main(["history", str(other), "--append", str(run_folders[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"varbench: error: DIR {other} is not a varbench history (no {history.MARKER} marker; it holds "
                   "notes.txt); choose a new or empty folder")  # fmt: skip
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # A bad run folder among good ones: one line, and none of them is added.
    store = tmp_path / "store"
    assert cli.main(["history", str(store), "--append", str(run_folders[0]), "--append", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"varbench: error: run folder {tmp_path / 'nope'} does not exist")
    assert not list(store.glob(f"*{history.POINTS_SUFFIX}"))


def test_regress_with_history_appends_the_run_with_its_verdicts(run_folders, tmp_path, monkeypatch, capsys):
    """The wiring of `regress --history` (the gate itself is tests/test_regression.py's): a folder that is not a
    history is refused before anything is measured, and a measured run lands in the history with its verdicts."""
    measured = []

    def fake_regression(baseline, out, **options):
        measured.append(out)
        out.mkdir(parents=True)
        (out / TABLE_NAME).write_bytes((run_folders[1] / TABLE_NAME).read_bytes())
        verdicts = regression.compare_runs(run_folders[0], run_folders[1]).verdicts
        verdicts.loc[verdicts["metric"] == "variance", "verdict"] = "improved"  # marks them to find them again
        return regression.RegressionOutcome(verdicts, True, out / "report.md")

    monkeypatch.setattr(regression, "run_regression", fake_regression)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    args = ["regress", "--baseline", str(run_folders[0]), "--out", str(tmp_path / "regress")]
    assert cli.main([*args, "--history", str(other)]) == 2 and not measured
    assert "is not a varbench history" in capsys.readouterr().err
    assert cli.main([*args, "--history", str(tmp_path / "store")]) == 0 and measured
    points = history.load_points(tmp_path / "store")
    assert points["commit"].unique().tolist() == [sha(1)]
    assert set(points.loc[points["metric"] == "variance", "verdict"]) == {"improved"}
    assert set(points.loc[points["metric"] == "bias_z", "verdict"]) <= {"ok", "regressed", "improved"}
    (verdicts_file,) = (tmp_path / "store").glob(f"*{history.VERDICTS_SUFFIX}")
    stored = pd.read_parquet(verdicts_file)
    assert len(stored) == len(regression.compare_runs(run_folders[0], run_folders[1]).verdicts)
    assert set(stored["metric"]) >= {"variance", "bias", "speed", "exact_variance"}


# ---------------------------------------------------------------------------------------------------------
# varbench compare


def test_compare_gives_the_gates_verdicts_on_two_folders(run_folders, tmp_path, capsys):
    before, same, after = run_folders[0], run_folders[1], run_folders[-1]
    assert cli.main(["compare", str(before), str(same)]) == 0
    out = capsys.readouterr().out
    assert "speed" in out and "variance" in out  # the verdict counts, as regress prints them
    verdicts_dir = tmp_path / "verdicts"
    assert cli.main(["compare", str(before), str(after), "--out", str(verdicts_dir)]) == 1
    captured = capsys.readouterr()
    verdicts = pd.read_csv(verdicts_dir / regression.REGRESSIONS_CSV, keep_default_na=False)
    regressed = verdicts[verdicts["verdict"] == "regressed"]
    # pathwise's variance × 1.3 and both benchmarks 2× slower (same machine fingerprint): what the gate says.
    expected = regression.compare_runs(before, after).verdicts
    assert sorted(zip(regressed["metric"], regressed["method"])) == sorted(
        zip(*expected.loc[expected["verdict"] == "regressed", ["metric", "method"]].T.to_numpy()))
    assert ("variance", "pathwise") in set(zip(regressed["metric"], regressed["method"]))
    assert (regressed["metric"] == "speed").sum() == 2
    assert "REGRESSED: pathwise on gaussian_cos" in captured.err
    # Bad folders: one line each, exit 2.
    assert cli.main(["compare", str(tmp_path / "missing"), str(after)]) == 2
    assert capsys.readouterr().err.strip() == (f"varbench: error: RUN_A {tmp_path / 'missing'} is not a folder (give "
                                               "a run folder written by varbench run, regress or baseline)")  # fmt: skip
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(before), str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip() == (f"varbench: error: RUN_B {tmp_path / 'empty'}: no results table at "
                                               f"{tmp_path / 'empty' / TABLE_NAME}")  # fmt: skip


def test_the_example_ci_workflow_parses():
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")
    workflow = yaml.safe_load((REPO / "docs" / "ci-history-example.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("--history" in run for run in steps) and any("varbench history" in run for run in steps)

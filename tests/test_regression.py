"""The regression gate: it stays quiet on unchanged code and catches noisier, biased and slower estimators.

Statistical checks run real estimates through the same measurement code as a sweep (timing switched off so
hundreds of cells take seconds); their thresholds are binomial bounds on the nominal false-alarm rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import cli, measure, regression, statistics
from bench.grid import Sweep, expand
from bench.table import COLUMNS, TABLE_NAME, append_rows
from estimators import ESTIMATORS

REPO = Path(__file__).resolve().parent.parent

# A small grid with a heavy-tailed estimator (score function at θ = 3), a biased one (naive), the coupled MVD
# and a smooth Gaussian cost: 6 cells.
GRID = expand([
    Sweep("seed_dependent", thetas=(3.0,), estimators=("score_function", "pathwise", "naive", "measure_valued"),
          n_samples=(10,), replicates=400),
    Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, estimators=("score_function", "pathwise"),
          n_samples=(10,), replicates=400),
])  # fmt: skip


def measure_grid(base_seed: int, cells=GRID) -> pd.DataFrame:
    rows = [measure.measure_cell(cell, base_seed, timed=False) for cell in cells]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_holm_adjustment_matches_the_step_down_definition():
    # sorted p: .005, .01, .03, .04 -> ×4, ×3, ×2, ×1 = .02, .03, .06, .04 -> running max .02, .03, .06, .06
    adjusted = statistics.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert statistics.holm(np.array([0.9, 0.8])).max() <= 1.0


RUNS = 40


@pytest.fixture(scope="module")
def independent_run_pairs():
    """RUNS pairs of runs of unchanged code with different base seeds (independent samples)."""
    return [(measure_grid(2 * i + 1000), measure_grid(2 * i + 1001)) for i in range(RUNS)]


@pytest.mark.slow
def test_unchanged_code_false_alarm_rate_is_at_most_nominal(independent_run_pairs):
    # Gate as shipped: a run raises an alarm if any cell regresses on any metric. Holm keeps each metric's
    # family-wise rate at ALPHA, so at most 2·ALPHA per run (variance + bias); allow binomial noise at 99.9%.
    alarms = sum(
        (regression.compare_tables(base, new)["verdict"] == "regressed").any() for base, new in independent_run_pairs
    )
    assert alarms <= stats.binom.ppf(0.999, RUNS, 2 * regression.ALPHA), alarms


@pytest.mark.slow
def test_variance_test_is_calibrated_per_cell(independent_run_pairs):
    # Without the minimum effect and at a loose level, the one-sided variance test must reject about alpha of
    # the time: not more (false alarms), and not far less (a test that never fires is no test).
    alpha, rejections, tests = 0.1, 0, 0
    for base, new in independent_run_pairs:
        verdicts = regression.compare_tables(base, new, alpha=1.0, min_ratio=1.0)
        variance = verdicts[(verdicts["metric"] == "variance") & verdicts["p_value"].notna()]
        # p_value is that of the verdict's direction; an increase is what the gate fails on.
        rejections += int(((variance["p_value"] < alpha) & (variance["ratio"] > 1)).sum())
        tests += len(variance)
    assert tests == RUNS * len(GRID)
    assert stats.binom.ppf(0.001, tests, alpha) <= rejections <= stats.binom.ppf(0.999, tests, alpha), (rejections, tests)


def _summed(estimator, problem, theta, n_samples, options):
    """The estimator's surrogate summed over its samples (surrogates may be per sample or already summed):
    its gradient w.r.t. θ is N·ĝ."""
    return estimator.surrogate(problem, theta, n_samples, **options).reshape(-1, *theta.shape).sum(dim=0)


def _noisier(estimator, factor: float):
    """The same estimator with its noise scaled by ``factor`` around the exact gradient (mean unchanged)."""

    def surrogate(problem, theta, n_samples, **options):
        exact = problem.gradient(float(theta.detach().flatten()[0]))
        # d/dθ of (factor·S − (factor − 1)·exact·N·θ) = N (factor·ĝ − (factor − 1)·exact): same mean, factor × spread.
        summed = _summed(estimator, problem, theta, n_samples, options)
        return factor * summed - (factor - 1) * exact * n_samples * theta

    return dataclasses.replace(estimator, surrogate=surrogate)


def _shifted(estimator, shift: float):
    def surrogate(problem, theta, n_samples, **options):
        return _summed(estimator, problem, theta, n_samples, options) + n_samples * shift * theta

    return dataclasses.replace(estimator, surrogate=surrogate)


def test_noise_thirty_percent_larger_is_detected(monkeypatch):
    baseline = measure_grid(7)
    monkeypatch.setitem(ESTIMATORS, "pathwise", _noisier(ESTIMATORS["pathwise"], 1.3))
    verdicts = regression.compare_tables(baseline, measure_grid(8))
    variance = verdicts[verdicts["metric"] == "variance"]
    flagged = variance[variance["method"] == "pathwise"]
    assert len(flagged) == 2 and (flagged["verdict"] == "regressed").all(), flagged
    # Noise × 1.3 is variance × 1.69: the reported interval must cover it.
    assert ((flagged["ci_low"] <= 1.3**2) & (1.3**2 <= flagged["ci_high"])).all()
    line = regression.describe_verdict(flagged.iloc[0])
    assert line.startswith("REGRESSED: pathwise on") and "variance ratio" in line and "95% CI" in line
    others = verdicts[(verdicts["method"] != "pathwise")]
    assert (others["verdict"] == "ok").all(), others[others["verdict"] != "ok"]


def test_an_estimator_made_biased_is_detected_even_if_the_baseline_is_biased_too(monkeypatch):
    # 15 is ~6 standard errors of the noisiest cell (score function at θ = 3, N = 10: sqrt(22860/10/400) ≈ 2.4).
    monkeypatch.setitem(ESTIMATORS, "score_function", _shifted(ESTIMATORS["score_function"], 15.0))
    verdicts = regression.compare_tables(measure_grid(11), measure_grid(12))
    bias = verdicts[(verdicts["metric"] == "bias") & (verdicts["method"] == "score_function")]
    assert len(bias) == 2 and (bias["verdict"] == "regressed").all(), bias
    assert (bias["ci_low"] <= 15.0).all() and (bias["ci_high"] >= 15.0).all()
    line = regression.describe_verdict(bias.iloc[0])
    assert line.startswith("REGRESSED: score_function on") and "bias" in line and "95% CI" in line


def test_new_missing_and_failed_cells_are_reported():
    base = measure_grid(3)
    new = measure_grid(4)
    dropped_from_base = base.iloc[1:]
    dropped_from_new = new.iloc[:-1].copy()
    verdicts = regression.compare_tables(dropped_from_base, dropped_from_new)
    cells = verdicts[verdicts["metric"] == "cell"].set_index("cell_id")["verdict"]
    assert cells[base.iloc[0]["cell_id"]] == "new"
    assert cells[new.iloc[-1]["cell_id"]] == "missing"
    failed = new.copy()
    failed.loc[failed.index[0], ["status", "note"]] = ["error", "RuntimeError: boom"]
    verdicts = regression.compare_tables(base, failed)
    row = verdicts[(verdicts["metric"] == "cell")].iloc[0]
    assert row["verdict"] == "regressed" and "boom" in row["note"]


def test_cells_with_an_infinite_variance_are_reported_not_tested():
    # dL/dσ exists (1 + 2kσ² > 0) but 1 + 4kσ² < 0: the sample variance keeps growing with M, so a variance or
    # bias test against the baseline would fire at random.
    cells = expand([Sweep("gaussian_exp", thetas=(1.2,), wrt="sigma", params={"k": (-0.3,), "mu": (0.4,)},
                          estimators=("pathwise", "score_function"), n_samples=(10,), replicates=400)])  # fmt: skip
    verdicts = regression.compare_tables(measure_grid(1, cells), measure_grid(2, cells))
    assert len(verdicts) == 4 and (verdicts["verdict"] == "ok").all()
    assert (verdicts["note"] == "infinite variance: not tested").all()


# --------------------------------------------------------------------------------------------------------
# Speed: real pytest-benchmark runs of bench/regression/speed_benchmarks.py, one benchmark each.


@pytest.fixture(scope="module")
def speed_runs(tmp_path_factory):
    """Baseline, unchanged and twice-slower runs of one benchmark, their processes interleaved.

    Twice slower: the benchmark process loads the test-only plugin tests/slower_estimates.py, with which every
    estimate does its work twice. Interleaved (base, same, slow, then rotated) because the gate compares runs
    recorded at different times, and a test that ran all of one before the other measured the machine's drift,
    not the code: on a shared CI machine, five back-to-back base processes came out 1.6x slower than the five
    that followed them."""
    folder = tmp_path_factory.mktemp("speed")
    select = ("-k", "pathwise and seed_dependent")
    args = {"base": select, "same": select, "slow": (*select, "-p", "tests.slower_estimates")}
    runs: dict[str, list[dict]] = {name: [] for name in args}
    names = list(args)
    with pytest.MonkeyPatch.context() as patch:  # the benchmark processes import the plugin from this checkout
        patch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        for repeat in range(regression.SPEED_REPEATS):
            for name in names[repeat % 3 :] + names[: repeat % 3]:
                runs[name].append(regression.run_speed_process(folder / f"{name}.json", repeat, extra_args=args[name]))
    return tuple(regression.merge_speed_runs(runs[name]) for name in names)


@pytest.mark.integration
def test_speed_benchmark_records_what_it_timed(speed_runs):
    base, _, _ = speed_runs
    (bench,) = base["benchmarks"]
    info = bench["extra_info"]
    assert info["estimator"] == "pathwise" and info["n_samples"] == 1000 and info["num_threads"] == 1
    # pathwise on seed_dependent at θ = 3: per-sample variance 1314 (docs/math.md), so Var of a 1000-sample mean ≈ 1.314.
    assert abs(info["grad_var"] / 1.314 - 1) < 0.15 and abs(info["grad_mean"] - 84) < 0.2
    # One RNG-floor timing per timed round, from each of the five processes.
    assert len(info["floor_times"]) == len(bench["stats"]["data"]) and len(info["run_relative_medians"]) == 5


@pytest.mark.integration
def test_unchanged_speed_is_ok_and_a_twofold_slowdown_on_the_same_machine_is_detected(speed_runs):
    base, same, slow = speed_runs
    unchanged = regression.compare_speed(base, same)
    assert unchanged["verdict"].tolist() == ["ok"], unchanged.to_dict("records")
    (row,) = regression.compare_speed(base, slow).to_dict("records")
    assert row["verdict"] == "regressed", row
    assert row["ci_low"] > regression.SPEED_MIN_LOW and row["ratio"] >= regression.SPEED_FAIL_FACTOR


@pytest.mark.integration
def test_pytest_benchmark_compare_of_the_saved_runs_is_written_beside_the_verdicts(speed_runs, tmp_path):
    base, _, slow = speed_runs
    paths = [tmp_path / "base.json", tmp_path / "slow.json"]
    for path, run in zip(paths, (base, slow)):
        path.write_text(json.dumps(run))
    regression.write_pytest_benchmark_compare(*paths, tmp_path / "compare.txt")
    text = (tmp_path / "compare.txt").read_text()
    # pytest-benchmark's own table: both saved runs of the one benchmark, by median.
    # pytest-benchmark's own table: one group for the benchmark, a line per saved run (named after its file).
    assert "test_estimate_speed[pathwise-seed_dependent-theta]" in text and "Median" in text, text
    assert "base)" in text and "slow)" in text, text


@pytest.mark.integration
def test_speed_on_another_machine_is_reported_not_gated(speed_runs):
    base, _, slow = speed_runs
    other = json.loads(json.dumps(base))
    other["machine_info"]["cpu"]["brand_raw"] = "Some Other CPU"
    (row,) = regression.compare_speed(other, slow).to_dict("records")
    assert row["verdict"] == "ok" and "not gated" in row["note"] and row["ratio"] >= 1.6


# --------------------------------------------------------------------------------------------------------
# Baseline files


def _write_baseline(folder, rows: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    append_rows(folder / TABLE_NAME, rows.to_dict("records"))
    (folder / regression.META_JSON).write_text(json.dumps({"preset": "ci", "base_seed": 0}))


@pytest.mark.parametrize("damage", ["missing folder", "no table", "corrupt table", "corrupt meta", "corrupt speed"])
def test_missing_or_corrupt_baseline_tells_the_user_to_run_make_baseline(damage, tmp_path):
    folder = tmp_path / "baseline"
    if damage != "missing folder":
        _write_baseline(folder, measure_grid(1, GRID[:1]))
    if damage == "no table":
        (folder / TABLE_NAME).unlink()
    elif damage == "corrupt table":
        (folder / TABLE_NAME).write_text("not,a,varbench\ntable,at,all\n")
    elif damage == "corrupt meta":
        (folder / regression.META_JSON).write_text("{ half")
    elif damage == "corrupt speed":
        (folder / regression.SPEED_JSON).write_text("[]")
    with pytest.raises(regression.BaselineError, match="make baseline"):
        regression.load_baseline(folder)


def test_regress_cli_with_no_baseline_fails_fast_with_one_clear_line(tmp_path, capsys):
    code = cli.main(["regress", "--baseline", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "make baseline" in err[0]
    assert not (tmp_path / "out").exists()  # nothing was run


def test_committed_baseline_is_readable_and_matches_the_ci_preset():
    from bench.grid import preset

    table, speed, meta = regression.load_baseline(Path(__file__).parents[1] / "results" / "baseline")
    assert meta["preset"] == "ci"
    expected = {cell.cell_id for cell in expand(preset("ci"))}
    assert set(table["cell_id"]) == expected
    assert speed["benchmarks"], "the baseline has no speed benchmarks"

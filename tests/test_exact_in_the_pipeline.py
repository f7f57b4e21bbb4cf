"""The exact moments where a user meets them: the table's exact columns, the report's coverage section, the
regression gate's test against exact values (no baseline needed), and `varbench exact`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import cli, measure, regression
from bench.grid import Sweep, expand
from bench.report.exact import coverage, exact_section
from bench.table import COLUMNS
from estimators import ESTIMATORS

from .test_regression import _noisier, _shifted


def measure_cells(sweeps, base_seed: int) -> pd.DataFrame:
    rows = [measure.measure_cell(cell, base_seed, timed=False) for cell in expand(sweeps)]
    return pd.DataFrame(rows, columns=COLUMNS).infer_objects()


def test_a_cell_records_its_exact_mean_and_variance_and_whether_the_interval_covers_it():
    frame = measure_cells([Sweep("seed_dependent", thetas=(3.0,), estimators=("pathwise", "naive"), n_samples=(10,),
                                 replicates=2000)], base_seed=0)  # fmt: skip
    pathwise, naive = (frame[frame["estimator"] == name].iloc[0] for name in ("pathwise", "naive"))
    # Per-sample variances 1314 (pathwise) and 342 (naive, whose mean is 3θ² + 3 = 30): docs/math.md.
    assert pathwise["exact_var"] == pytest.approx(131.4, rel=1e-9) and pathwise["exact_mean"] == pytest.approx(84)
    assert naive["exact_var"] == pytest.approx(34.2, rel=1e-9) and naive["exact_mean"] == pytest.approx(30)
    for row in (pathwise, naive):
        inside = row["grad_var_ci_low"] <= row["exact_var"] <= row["grad_var_ci_high"]
        assert row["exact_var_covered"] is inside and pd.isna(row["exact_var_note"])


def test_a_cell_without_an_exact_value_says_why():
    frame = measure_cells([Sweep("bernoulli_toy", thetas=(0.0,), wrt="logit", estimators=("relax",), n_samples=(10,),
                                 replicates=50)], base_seed=0)  # fmt: skip
    row = frame.iloc[0]
    assert pd.isna(row["exact_var"]) and row["exact_var_covered"] is None and "train" in row["exact_var_note"].lower()


def test_a_cell_whose_exact_variance_is_zero_is_not_judged_on_float_rounding():
    # f = (x − k)² at μ = k: the measured-valued pair f(μ + σW) − f(μ − σW) cancels exactly, so its exact
    # variance is 0 and the float32 estimates differ only by rounding; plain MC is judged as usual.
    frame = measure_cells([Sweep("gaussian_quadratic", thetas=(1.0,), wrt="mu", params={"k": (1.0,)},
                                 estimators=("measure_valued", "pathwise"), n_samples=(10,), replicates=400)], 0)  # fmt: skip
    mvd, pathwise = (frame[frame["estimator"] == name].iloc[0] for name in ("measure_valued", "pathwise"))
    assert mvd["exact_var"] < 1e-20 and 0 < mvd["grad_var"] < 1e-12
    assert mvd["exact_var_covered"] is None and "rounding: not compared" in mvd["exact_var_note"]
    assert pathwise["exact_var_covered"] is not None and pathwise["exact_var"] == pytest.approx(0.4)


def test_coverage_counts_covered_cells_with_a_clopper_pearson_interval():
    ok = pd.DataFrame({"exact_var_covered": [True] * 19 + [False] + [None] * 3})
    covered, total, low, high = coverage(ok)
    assert (covered, total) == (19, 20)
    # Clopper–Pearson from its definition: Beta quantiles of the binomial's conjugate.
    assert low == pytest.approx(stats.beta.ppf(0.025, 19, 2)) and high == pytest.approx(stats.beta.ppf(0.975, 20, 1))


def test_the_report_section_names_the_cells_whose_interval_missed():
    frame = measure_cells([Sweep("seed_dependent", thetas=(3.0,), estimators=("pathwise", "score_function"),
                                 n_samples=(10,), replicates=400)], base_seed=0)  # fmt: skip
    frame["exact_var_covered"] = [True, False]  # as if the score function's interval had missed
    lines = exact_section(frame.assign(estimator=frame["method"]))
    text = "\n".join(lines)
    assert "covered it in **1 of 2 = 50.0%**" in text
    missed = [line for line in lines if line.startswith("| seed_dependent")]
    assert len(missed) == 1 and "score_function" in missed[0]


def ci_cells(replicates: int = 2000) -> list[Sweep]:
    return [Sweep("seed_dependent", thetas=(3.0,), estimators=("score_function", "pathwise", "naive", "measure_valued"),
                  n_samples=(10,), replicates=replicates),
            Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, estimators=("score_function", "pathwise"),
                  n_samples=(10,), replicates=replicates)]  # fmt: skip


def test_the_gate_passes_correct_estimators_against_their_exact_values():
    new = measure_cells(ci_cells(), base_seed=3)
    verdicts = regression.compare_tables(new.iloc[0:0], new)
    exact = verdicts[verdicts["metric"].isin(["exact_variance", "exact_mean"])]
    assert set(exact["metric"]) == {"exact_variance", "exact_mean"} and len(exact[exact["metric"] == "exact_variance"]) == 6
    assert (exact["verdict"] == "ok").all(), exact[exact["verdict"] != "ok"]


def test_a_variance_inflated_thirty_percent_is_caught_against_exact_without_any_baseline(monkeypatch):
    # Noise × √1.3: variance × 1.3. At M = 2000 the log-variance's s.e. is ~0.032 for pathwise's Gaussian
    # estimates, so log 1.3 = 0.26 is ~8 standard errors: far beyond Holm's bound for six cells at α = 0.01.
    monkeypatch.setitem(ESTIMATORS, "pathwise", _noisier(ESTIMATORS["pathwise"], math.sqrt(1.3)))
    new = measure_cells(ci_cells(), base_seed=4)
    verdicts = regression.compare_tables(new.iloc[0:0], new)  # an empty baseline: every cell is "new"
    exact = verdicts[verdicts["metric"] == "exact_variance"]
    flagged = exact[exact["method"] == "pathwise"]
    assert len(flagged) == 2 and (flagged["verdict"] == "regressed").all(), flagged
    assert ((flagged["ci_low"] <= 1.3) & (1.3 <= flagged["ci_high"])).all(), flagged
    assert (exact[exact["method"] != "pathwise"]["verdict"] == "ok").all()
    line = regression.describe_verdict(flagged.iloc[0])
    assert line.startswith("REGRESSED: pathwise on") and "measured/exact" in line


def test_a_biased_estimator_whose_mean_moves_is_caught_against_its_exact_mean(monkeypatch):
    # naive's exact mean at θ = 3 is 30 (docs/math.md); shifted by 1, about 7.6 of its standard errors
    # (sqrt(34.2 / 2000) = 0.13).
    monkeypatch.setitem(ESTIMATORS, "naive", _shifted(ESTIMATORS["naive"], 1.0))
    new = measure_cells(ci_cells(), base_seed=5)
    verdicts = regression.compare_tables(new.iloc[0:0], new)
    flagged = verdicts[(verdicts["metric"] == "exact_mean") & (verdicts["method"] == "naive")]
    assert len(flagged) == 1 and flagged["verdict"].iloc[0] == "regressed", flagged


# ---------------------------------------------------------------------------------------------------------
# varbench exact


def test_varbench_exact_draws_figure_2_with_values_from_independent_closed_forms(tmp_path, capsys):
    out = tmp_path / "exact"
    assert cli.main(["exact", "--over", "k=-3:3:7", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "exact.csv")
    assert (out / "exact.png").stat().st_size > 10_000
    assert set(frame["problem"]) == {"gaussian_quadratic", "gaussian_exp", "gaussian_cos"}
    assert set(frame["wrt"]) == {"mu", "sigma"} and set(frame["x"]) == set(np.linspace(-3, 3, 7))
    quadratic_mu = frame[(frame["problem"] == "gaussian_quadratic") & (frame["wrt"] == "mu")]
    # f = (x − k)², x = μ + σε at μ = σ = 1: pathwise 2(x − k) has variance 4σ² at every k; at k = μ the score
    # function's f·ε is ε³, of variance E ε⁶ = 15; the measure-valued pair f(μ + σW) − f(μ − σW) is 0.
    assert np.allclose(quadratic_mu[quadratic_mu["estimator"] == "pathwise"]["per_sample_var"], 4.0, rtol=1e-10)
    at_mean = quadratic_mu[quadratic_mu["x"] == 1.0].set_index("estimator")["per_sample_var"]
    assert at_mean["score_function"] == pytest.approx(15.0, rel=1e-10) and at_mean["measure_valued"] == pytest.approx(0, abs=1e-10)
    # exp(−k x²) has no finite second moment of f for k ≤ −1/(4σ²): those points say why instead of a number.
    negative = frame[(frame["problem"] == "gaussian_exp") & (frame["x"] <= -1)]
    assert negative["per_sample_var"].isna().all() and negative["note"].str.len().gt(0).all()
    assert frame["git_sha"].notna().all() and frame["scipy_version"].notna().all()


@pytest.mark.parametrize("args, message", [
    (["--over", "k=3:1:10"], "need finite LOW < HIGH"),
    (["--over", "k"], "expected NAME=LOW:HIGH:STEPS"),
    (["--over", "q=0:1:5"], "has no parameter q"),
    (["--estimator", "nonsense"], "unknown estimator 'nonsense'"),
    (["--n", "0"], "--n must be >= 1"),
])  # fmt: skip
def test_varbench_exact_refuses_bad_input_in_one_line_before_writing(tmp_path, capsys, args, message):
    out = tmp_path / "exact"
    assert cli.main(["exact", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_varbench_exact_does_not_write_into_a_folder_it_did_not_create(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("a user's file")
    assert cli.main(["exact", "--over", "k=0:1:3", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "mine.txt").read_text() == "a user's file" and not (tmp_path / "exact.csv").exists()

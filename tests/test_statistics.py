"""The statistics helpers on their own: edge cases and the formulas' known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.measure import choose_replicates
from bench.statistics import (
    UNDERCOVERING_KURTOSIS,
    bias_critical_z,
    kurtosis,
    replicates_for_relative_se,
    summarize,
    variance_interval,
    variance_interval_caveat,
    variance_relative_se,
)


def test_kurtosis_is_nan_where_undefined_and_three_for_gaussian_data():
    assert math.isnan(kurtosis(np.array([])))
    assert math.isnan(kurtosis(np.full(100, 2.5)))
    x = np.random.default_rng(0).standard_normal(200_000)
    assert kurtosis(x) == pytest.approx(3.0, abs=0.05)


def test_replicate_rule_gives_800_for_gaussian_estimates_and_more_for_heavy_tails():
    assert replicates_for_relative_se(3.0) == 800  # (3 − 1) / 0.05²
    assert replicates_for_relative_se(15.0) == 5600
    assert variance_relative_se(3.0, 800) == pytest.approx(0.05, rel=0.01)


def test_choose_replicates_respects_its_bounds_and_survives_all_nonfinite_pilots():
    assert choose_replicates(np.full(400, np.nan), 10) == 800  # unknown kurtosis: the Gaussian default
    heavy = np.random.default_rng(1).standard_t(5, 400)
    assert 800 <= choose_replicates(heavy, 1) <= 20_000
    assert choose_replicates(heavy, 10**6) == 100  # M·N capped at 2^24, never below 100


def test_constant_estimates_have_a_zero_width_interval_and_certain_bias():
    assert variance_interval(np.zeros(50)) == (0.0, 0.0)
    wrong = summarize(np.zeros(50), true_grad=2.0)
    assert wrong.biased and wrong.bias_z == -math.inf
    right = summarize(np.zeros(50), true_grad=0.0)
    assert not right.biased and right.bias_z == 0.0


def test_variance_interval_needs_five_values():
    with pytest.raises(ValueError, match="at least 5"):
        variance_interval(np.arange(4.0))


def test_bias_threshold_is_the_two_sided_0_001_critical_value():
    assert bias_critical_z() == pytest.approx(3.2905, abs=1e-4)


def test_an_estimate_exact_up_to_float32_rounding_is_not_called_biased():
    # Pathwise on E[log x] wrt a Gamma's rate is −1/rate for every sample: in float32 the 800 estimates of
    # −0.2 scatter over their last bits, a variance of ~1e-16 whose standard error alone gave z = −48.
    import torch

    from bench.measure import measure_cell
    from bench.grid import Cell

    cell = Cell("gamma", (("power", 0.0), ("shape", 1.0)), "rate", 5.0, "pathwise", 10, "cpu", replicates=800)
    row = measure_cell(cell, 0, timed=False)
    assert row["status"] == "ok" and row["grad_var"] < 1e-12 and row["grad_mean"] == pytest.approx(-0.2, rel=1e-6)
    assert not row["biased"] and abs(row["bias_z"]) < 1
    # The same arithmetic resolution does not hide a real bias: a 1e-4 relative offset on the same spread.
    x = torch.full((800,), -0.2, dtype=torch.float32).double().numpy() + np.random.default_rng(1).normal(0, 1e-8, 800)
    assert summarize(x + 2e-5, -0.2).biased and not summarize(x, -0.2).biased
    # float64's resolution is 2^29 times finer: the float32 rounding of −0.2 is a bias there.
    assert summarize(x, -0.2, eps=float(np.finfo(np.float64).eps)).biased


def test_terms_that_cancel_to_a_zero_gradient_keep_the_rounding_of_the_objectives_scale():
    # IndeCateR on bernoulli_multi: four coordinate terms of size ~L cancel to dL/dθ = 0 up to ~1e-18 in float64,
    # the same for every estimate. Judged at the gradient's scale (0) that is z ≈ 1e2; at |L|'s it is rounding.
    float64 = float(np.finfo(np.float64).eps)
    x = np.full(4000, 2.8e-18) + np.random.default_rng(2).normal(0, 1e-20, 4000)
    assert summarize(x, 0.0, eps=float64).biased
    assert not summarize(x, 0.0, eps=float64, objective=0.25).biased
    # It is a floor of ~64 ulps of |L|, not a licence: a bias of 1e-12 at L = 0.25 is still found.
    assert summarize(x + 1e-12, 0.0, eps=float64, objective=0.25).biased


def test_the_variance_interval_under_covers_at_kurtosis_in_the_hundreds_so_rows_say_so():
    """ĝ = x²(1 − x), x ~ Exp(1): the score function of E[x²] w.r.t. a Gamma(1, β)'s rate at β = 1, one sample.
    Var = E[x⁴] − 2E[x⁵] + E[x⁶] − 4² = 24 − 240 + 720 − 16 = 488 and kurtosis in the hundreds. Drawn with
    numpy (not the estimators), 400 seeded replications of M = 20 000."""
    rng = np.random.default_rng(2026)
    covered, kurtoses = 0, []
    for _ in range(400):
        x = rng.exponential(size=20_000)
        g = x**2 * (1 - x)
        low, high = variance_interval(g)
        covered += low <= 488.0 <= high
        kurtoses.append(kurtosis(g))
    assert np.median(kurtoses) > UNDERCOVERING_KURTOSIS
    # Were the interval's coverage 95%, so few covering intervals would have probability < 1e-6.
    assert stats.binom.cdf(covered, 400, 0.95) < 1e-6, covered / 400
    assert variance_interval_caveat(float(np.median(kurtoses))).startswith("kurtosis")
    assert variance_interval_caveat(3.0) == "" and variance_interval_caveat(float("nan")) == ""


def test_a_row_whose_kurtosis_exceeds_the_threshold_says_its_interval_is_approximate():
    from bench.grid import Cell
    from bench.measure import measure_cell

    heavy = Cell("gamma", (("power", 2.0), ("shape", 1.0)), "rate", 1.0, "score_function", 1, "cpu", "float32", 2000)
    light = Cell("gaussian_cos", (("k", 1.0), ("sigma", 1.0)), "mu", 1.0, "pathwise", 10, "cpu", "float32", 2000)
    for cell, heavy_tailed in ((heavy, True), (light, False)):
        row = measure_cell(cell, 0, timed=False)
        assert (row["kurtosis"] > UNDERCOVERING_KURTOSIS) == heavy_tailed, row["kurtosis"]
        assert ("variance interval is approximate" in row["note"]) == heavy_tailed, row["note"]


def test_a_report_wide_bias_flag_needs_holm_for_estimators_unbiased_in_theory():
    import pandas as pd

    from bench.statistics import familywise_biased

    rng = np.random.default_rng(7)
    p = pd.Series(rng.uniform(size=1000))
    p[3] = 5e-4  # per-cell significant at 0.001, but one of a thousand
    p[4] = 1e-9  # significant whatever the number of cells
    per_cell = p < 0.001
    unbiased = pd.Series(True, index=p.index)
    unbiased[5] = False  # biased in theory: its flag stands as it is
    p[5] = 5e-4
    per_cell[5] = True
    flags = familywise_biased(per_cell, p, unbiased)
    assert per_cell[3] and not flags[3]
    assert flags[4] and flags[5]
    assert flags.sum() == 2

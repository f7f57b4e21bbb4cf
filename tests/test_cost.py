"""Cost measured per comparison block, and verdicts that timing noise cannot flip.

Timing assertions are ratios measured in one run (never absolute times). The statistics are seeded; the noise
injected into one estimator's calls is deliberately not, since it stands for another process on the machine.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pandas as pd
import pytest

from bench import cost, measure
from bench.report import plots, verdict
from bench.grid import Sweep, expand
from bench.sweep import comparison_blocks, run_cells
from bench.table import load_table
from estimators import ESTIMATORS, Estimator
from estimators.methods.basic import pathwise


def spin(seconds: float) -> None:
    """Busy-wait for ``seconds`` of this process's CPU time (work, unlike a sleep, which the CPU clock ignores)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_median_interval_brackets_the_median_and_is_deterministic():
    values = np.random.default_rng(3).lognormal(0.0, 0.2, 40)
    median, low, high = cost.median_interval(values, seed=1)
    assert low <= median <= high and median == pytest.approx(np.median(values))
    assert (median, low, high) == cost.median_interval(values, seed=1)
    assert cost.median_interval(np.full(7, 2.0)) == (2.0, 2.0, 2.0)


def test_a_block_measures_a_known_cost_ratio_against_the_floor():
    calls = {"once": lambda: spin(0.002), "thrice": lambda: spin(0.006)}
    costs, floor_seconds, rounds = cost.time_block(calls, lambda: spin(0.002), "cpu", seed=0, budget_s=1.0)
    assert rounds >= cost.MIN_ROUNDS and floor_seconds > 0
    ratio = costs["thrice"].relative / costs["once"].relative
    assert 2.5 < ratio < 3.5
    for c in costs.values():
        assert c.relative_low <= c.relative <= c.relative_high and c.seconds_low <= c.seconds <= c.seconds_high


def test_a_round_runs_every_call_once_in_a_seeded_shuffled_order():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    cost.time_block(calls, lambda: order.append("floor"), "cpu", seed=5, min_rounds=10, max_rounds=10)
    rounds = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert len(rounds) == 10 and all(sorted(r) == ["A", "B", "C", "floor"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not a fixed order
    again: list[str] = []
    calls = {name: (lambda name=name: again.append(name)) for name in "ABC"}
    cost.time_block(calls, lambda: again.append("floor"), "cpu", seed=5, min_rounds=10, max_rounds=10)
    assert again == order


# ---------------------------------------------------------------------------------------------------------
# The verdict rule on synthetic rows: the intervals are given, so the outcome is known.


def row(name: str, var: float, relative: float, *, var_se: float = 0.05, cost_se: float = 0.03, evals: int = 1,
        unbiased: bool = True, biased: bool | None = False, infinite: bool = False) -> dict:
    z = 1.959964
    return dict(estimator=name, grad_var=var, grad_var_ci_low=var * math.exp(-z * var_se),
                grad_var_ci_high=var * math.exp(z * var_se), relative_cost=relative,
                relative_cost_ci_low=relative * math.exp(-z * cost_se), relative_cost_ci_high=relative * math.exp(z * cost_se),
                cost_evals_per_sample=evals, expected_unbiased=unbiased, biased=biased, variance_infinite=infinite)  # fmt: skip


def test_estimators_identical_up_to_their_names_are_a_tie():
    decided = verdict.by_cost(pd.DataFrame([row("a", 10.0, 2.0), row("a_twin", 10.3, 1.97), row("noisy", 50.0, 2.0)]))
    assert decided.winner is None and set(decided.tied) == {"a", "a_twin"}
    assert decided.text() in ("tie: a, a_twin", "tie: a_twin, a")


def test_three_times_the_cost_loses_even_at_equal_variance():
    decided = verdict.by_cost(pd.DataFrame([row("cheap", 10.0, 2.0), row("dear", 10.0, 6.0)]))
    assert decided.winner == "cheap" and decided.text() == "**cheap**"
    (dear,) = decided.comparisons
    assert dear.beaten and dear.cost.value == pytest.approx(3.0) and dear.variance.value == pytest.approx(1.0)
    assert dear.ratio.low > verdict.TIE_BAND


def test_an_advantage_inside_the_tie_band_or_not_significant_is_a_tie():
    # 1.2x worse with tight intervals: significant but inside the band.
    assert verdict.by_cost(pd.DataFrame([row("a", 10.0, 2.0), row("b", 12.0, 2.0, var_se=0.01, cost_se=0.01)])).winner is None
    # 3x worse on the point estimate, but the variance is known only to ±100%.
    assert verdict.by_cost(pd.DataFrame([row("a", 10.0, 2.0, var_se=0.5), row("b", 30.0, 2.0, var_se=0.5)])).winner is None
    # Half the variance at twice the cost: the same work-normalised variance.
    assert verdict.by_cost(pd.DataFrame([row("a", 10.0, 2.0), row("b", 5.0, 4.0)])).winner is None


def test_biased_infinite_and_uncosted_rows_are_never_ranked():
    rows = pd.DataFrame([row("ok", 10.0, 2.0), row("biased", 0.1, 1.0, biased=True), row("theory", 0.1, 1.0, unbiased=False),
                         row("infinite", 0.1, 1.0, biased=None, infinite=True), row("no_cost", 0.1, math.nan)])  # fmt: skip
    decided = verdict.by_cost(rows)
    assert decided.winner == "ok" and not decided.comparisons
    assert list(verdict.rankable(rows)) == [True, False, False, False, True]


def test_the_evaluation_count_ranking_ignores_timings():
    rows = pd.DataFrame([row("one_eval", 10.0, 50.0, evals=1), row("three_evals", 10.0, 1.0, evals=3)])
    assert verdict.by_cost(rows).winner == "three_evals"  # measured cost says 50x
    assert verdict.by_evaluations(rows).winner == "one_eval"  # exact counts say 3x


def test_an_exact_estimator_beats_a_random_one_however_cheap():
    rows = pd.DataFrame([row("exact", 0.0, 5.0), row("random", 4.0, 1.0)])
    rows.loc[0, ["grad_var_ci_low", "grad_var_ci_high"]] = 0.0
    decided = verdict.by_cost(rows)
    assert decided.winner == "exact" and decided.zero_variance


# ---------------------------------------------------------------------------------------------------------
# The whole pipeline, with real estimators and real timings.


def _variant(name: str, surrogate) -> Estimator:
    base = ESTIMATORS["pathwise"]
    return Estimator(name, surrogate, f"test variant of pathwise: {name}", skip_reason=base.skip_reason,
                     coupled_samples_reason=None)  # fmt: skip


def pathwise_thrice(problem, theta, n_samples):
    """pathwise's estimate at three times its work: two more surrogates enter the graph with weight 0."""
    first = pathwise(problem, theta, n_samples)
    return first + 0.0 * pathwise(problem, theta, n_samples) + 0.0 * pathwise(problem, theta, n_samples)


_noise = random.Random()  # deliberately unseeded: another process on the machine is not reproducible either


def pathwise_noisy(problem, theta, n_samples):
    """pathwise, whose calls a third of the time take 2-6 times longer (CPU work, as a competing process's
    cache and memory pressure would cost)."""
    started = time.process_time()
    out = pathwise(problem, theta, n_samples)
    if _noise.random() < 1 / 3:
        spin(_noise.uniform(1.0, 5.0) * (time.process_time() - started))
    return out


@pytest.fixture
def variants(monkeypatch):
    for name, surrogate in (("pathwise_twin", pathwise), ("pathwise_thrice", pathwise_thrice),
                            ("pathwise_noisy", pathwise_noisy)):  # fmt: skip
        monkeypatch.setitem(ESTIMATORS, name, _variant(name, surrogate))


@pytest.mark.slow
def test_verdicts_survive_noisy_calls_and_see_real_cost_and_name_only_differences(variants, tmp_path):
    sweep = Sweep("seed_dependent", thetas=(1.0, 3.0), n_samples=(100,),
                  estimators=("pathwise", "pathwise_twin", "pathwise_thrice", "pathwise_noisy", "score_function"))  # fmt: skip
    cells = expand([sweep])
    assert len(comparison_blocks(cells)) == 1
    verdicts = []
    for run in range(3):
        run_cells(cells, tmp_path / str(run), base_seed=0, progress=False)
        table = load_table(tmp_path / str(run) / "table.csv")
        assert (table["cost_rounds"] >= cost.MIN_ROUNDS).all()
        # θ shares one cost measurement: the same costs at both θ.
        assert table.groupby("estimator")["relative_cost"].nunique().eq(1).all()
        decided = {theta: verdict.by_cost(rows) for theta, rows in table.groupby("theta")}
        verdicts.append({theta: (d.text(), verdict.by_evaluations(table[table["theta"] == theta]).text())
                         for theta, d in decided.items()})  # fmt: skip
        for d in decided.values():
            assert set(d.tied) == {"pathwise", "pathwise_twin", "pathwise_noisy"}, d.text()
            thrice = next(c for c in d.comparisons if c.estimator == "pathwise_thrice")
            assert thrice.beaten and 2.0 < thrice.cost.value < 4.0, thrice
    assert verdicts[0] == verdicts[1] == verdicts[2]


def test_colours_are_fixed_per_name_and_biased_lines_are_grey_and_dashed(monkeypatch):
    shipped = [plots.colour(name) for name in ESTIMATORS]
    assert len(set(shipped)) == len(shipped)
    before = {name: plots.colour(name) for name in [*ESTIMATORS, "my_module:mine"]}
    assert before["my_module:mine"] != plots.BIASED_COLOUR
    # Registering an estimator (first in name order) recolours none of the others, nor a user's.
    monkeypatch.setitem(ESTIMATORS, "aaa_new", ESTIMATORS["pathwise"])
    assert {name: plots.colour(name) for name in before} == before
    variant = pd.DataFrame({"base": ["gumbel_softmax"], "expected_unbiased": [True], "biased": [False]})
    assert plots.estimator_style("gumbel_softmax[temperature=0.5]+antithetic", variant)["color"] == plots.colour("gumbel_softmax")
    biased = pd.DataFrame({"expected_unbiased": [False], "biased": [True]})
    style = plots.estimator_style("naive", biased)
    assert style["color"] == plots.BIASED_COLOUR and style["ls"] == "--" and style["label"] == "naive (biased)"
    fine = pd.DataFrame({"expected_unbiased": [True], "biased": [False]})
    assert plots.estimator_style("pathwise", fine)["color"] == plots.colour("pathwise")


def test_each_cell_records_its_share_of_the_block_timing(tmp_path):
    cells = expand([Sweep("seed_fixed", thetas=(1.0, 2.0), n_samples=(10,), estimators=("pathwise", "score_function"),
                          replicates=100)])  # fmt: skip
    rows = measure.measure_block(cells, 0)
    assert {r["cost_clock"] for r in rows} == {"process_cpu"}
    assert all(r["elapsed_s"] >= r["cost_time_s"] > 0 for r in rows)
    for r in rows:
        assert r["seconds_per_estimate"] == pytest.approx(r["n_samples"] / r["samples_per_second"])
        assert r["work_normalized_var"] == pytest.approx(r["grad_var"] * r["n_samples"] * r["relative_cost"])
        assert r["work_normalized_var_ci_low"] < r["work_normalized_var"] < r["work_normalized_var_ci_high"]

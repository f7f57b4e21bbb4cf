"""The performance benchmark's machinery (not its timings: those are ratios reported by `make perf`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import perf
from bench.statistics import Z95, kurtosis, variance_relative_se
from estimators import make_problem
from tests.helpers import bonferroni_z

Z = bonferroni_z(2)


def test_the_hand_written_loop_computes_the_same_estimator():
    # The loop is the baseline the speed-up is measured against, so it must be the same estimator: pathwise on
    # the seed problem at θ = 3 has mean 84 and per-sample variance 1314 (docs/math.md).
    torch.manual_seed(5)
    x = perf.loop_estimates("pathwise", make_problem("seed_dependent"), 3.0, 10, 400)
    assert abs(x.mean() - 84) / (x.std(ddof=1) / math.sqrt(x.size)) < Z
    assert abs(math.log(np.var(x, ddof=1) * 10 / 1314)) < Z * variance_relative_se(kurtosis(x), x.size)


@pytest.mark.integration
def test_memory_probe_runs_a_cell_in_a_fresh_process_and_reports_its_statistics():
    case = ("seed_dependent", "theta", {}, 3.0)
    n, m = 1000, 2000
    # One call on this thread (a budget far above the cell's needs, no parallel chunks): all N·M float32 samples
    # are held at once, so the peak the probe reports must be at least their size.
    result = perf.measure_memory("pathwise", case, n=n, m=m, device="cpu", budget=1 << 30, seed=3, parallel=False)
    assert result.peak_bytes >= n * m * 4 and result.device_peak_bytes is None and result.elapsed_s > 0
    assert abs(result.bias_z) < Z
    # Per-sample variance 1314, so 1.314 for a 1000-sample mean; Bonett's interval is symmetric in log variance.
    low, high = result.var_ci
    assert abs(math.log(1314 / n / math.sqrt(low * high))) < Z * math.log(high / low) / (2 * Z95), result.var_ci


@pytest.mark.integration
def test_perf_run_writes_every_section_and_a_report(tmp_path):
    config = perf.PerfConfig(floor_samples=1 << 14, loop_ns=(10, 1000), loop_replicates=20,
                             memory_cells=((10, 100),), billion=False, min_run_time=0.01,
                             sweep=(("seed_fixed",), (1.0, 2.0), ("pathwise", "score_function"), (10,)))  # fmt: skip
    table = perf.run_perf(tmp_path, config, progress=lambda message: None)
    on_disk = pd.read_csv(tmp_path / "perf.csv")
    assert len(on_disk) == len(table) and list(on_disk.columns) == perf.COLUMNS
    sections = {"floor", "relative_cost", "loop", "memory", "sweep"}
    if torch.get_num_threads() > 1:  # the same ratio on one thread, for the pathwise and score-function rows
        sections.add("floor_one_thread")
        alone = table[table["section"] == "floor_one_thread"]
        assert set(alone["estimator"]) == set(perf.FLOOR_ESTIMATORS) and len(alone) == 2 * len(perf.GAUSSIAN_CASES)
    assert set(table["section"]) == sections
    assert (table.loc[table["section"] != "memory", "value"] > 0).all()  # a memory peak may be 0 bytes above its start
    targets = table[table["target"].notna()]
    # Targets apply to pathwise and the score function on the Gaussian problems and to the loop at N = 1000.
    assert set(targets["estimator"]) == set(perf.FLOOR_ESTIMATORS)
    assert set(targets[targets["section"] == "loop"]["n_samples"]) == {1000}
    report = perf.write_perf_report(tmp_path).read_text()
    for heading in ("RNG floor", "| 1 thread |", "Python loop", "Memory per cell", "Cost relative to pathwise", "## Targets",
                    "cells per second"):
        assert heading in report
    sweep = table[table["section"] == "sweep"].set_index("metric")["value"]
    assert 0 < sweep["timing_share"] < 1 and sweep["cells_per_second"] > 0


def test_perf_writes_only_into_a_new_empty_or_its_own_folder(tmp_path, capsys):
    from bench import cli, run_folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    assert cli.main(["perf", "--out", str(mine), "--no-billion"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty and was not written by `varbench perf`" in err[0]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # A folder an earlier perf wrote (before markers existed) is recognised as perf's own.
    old = tmp_path / "old"
    old.mkdir()
    (old / "perf.csv").write_text("section\n")
    (old / "perf.md").write_text(perf.PERF_TITLE + "\n")
    run_folder.check_claimable(old, "perf", adopt=perf.is_old_perf_run)
    (old / "perf.md").write_text("# my own notes\n")
    with pytest.raises(run_folder.RunFolderError):
        run_folder.check_claimable(old, "perf", adopt=perf.is_old_perf_run)

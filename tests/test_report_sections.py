"""The report is built from registered sections and per-problem plots: a user's own goes in through the same door."""

from __future__ import annotations

import pandas as pd

from bench import report
from bench.grid import Sweep, expand
from bench.sweep import run_cells


def test_a_registered_section_and_plot_appear_in_the_report(tmp_path):
    run_cells(expand([Sweep("seed_fixed", thetas=(1.0,), estimators=("pathwise", "score_function"), n_samples=(10,),
                            replicates=100)]), tmp_path, base_seed=0, progress=False)  # fmt: skip
    seen: list[int] = []

    def my_section(context: report.ReportContext) -> list[str]:
        return ["## My section", "", f"{len(context.ok)} measured cells.", ""]

    def my_plot(group: pd.DataFrame, title: str, stem) -> list[str]:
        seen.append(len(group))
        return [f"*my plot of {title}*", ""]

    report.SECTIONS.register("mine", report.Section(25, my_section))
    report.PLOTS.register("mine", report.ProblemPlot(35, my_plot))
    try:
        text = report.write_report(tmp_path).read_text()
    finally:
        report.SECTIONS.unregister("mine")
        report.PLOTS.unregister("mine")
    assert "## My section\n\n2 measured cells." in text
    # After the biased-estimators section (order 20), before the choice (30); the plot after the bias plot (30).
    assert text.index("## Biased estimators") < text.index("## My section") < text.index("## Which estimator to choose")
    assert seen == [2] and text.index("_bias.png") < text.index("*my plot of seed_fixed() wrt theta*") < text.index("_cost.png")
    assert "## My section" not in report.write_report(tmp_path).read_text()

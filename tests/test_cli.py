"""End to end: the varbench CLI on a tiny grid, the report it renders, resuming after an interruption, and
bad input answered with one clear line and no damage to an existing table."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import cli, measure
from bench.table import COLUMNS, load_table
from estimators import ESTIMATORS, make_problem
from tests.helpers import is_blank

REPO = Path(__file__).resolve().parent.parent
# The five original estimators, so the counts below do not change when estimators are added.
TINY = ["run", "--problem", "seed_dependent", "--theta", "0,3", "--n", "1,10", "--replicates", "300", "--no-progress",
        "--estimator", "naive,score_function,score_function_loo,pathwise,measure_valued"]  # fmt: skip
TINY_CELLS = 2 * 5 * 2  # θ × estimators × N (those that do not apply are recorded as skipped)
STATISTICAL = ["cell_id", "status", "theta", "estimator", "n_samples", "n_replicates", "grad_mean", "grad_var",
               "grad_var_ci_low", "grad_var_ci_high", "bias_z", "seed"]  # fmt: skip


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    assert cli.main([*TINY, "--out", str(out)]) == 0
    return out


def test_run_writes_a_complete_table(tiny_run):
    table = load_table(tiny_run / "table.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == TINY_CELLS
    assert table["cell_id"].is_unique
    # Estimators for other kinds of latents (the discrete ones) are skipped on a Gaussian with their reason.
    inapplicable = {name for name, e in ESTIMATORS.items() if e.skip_reason(make_problem("seed_dependent"), 10)}
    assert (table[table["estimator"].isin(inapplicable)]["status"] == "skipped").all()
    skipped = table[(table["status"] == "skipped") & ~table["estimator"].isin(inapplicable)]
    assert set(skipped["estimator"]) == {"score_function_loo"} and set(skipped["n_samples"]) == {1}
    assert (skipped["note"].str.contains("N >= 2")).all()
    ok = table[table["status"] == "ok"]
    assert (ok["n_replicates"] == 300).all()
    for column in ["seed", "device", "torch_version", "git_sha", "started_at", "seconds_per_estimate"]:
        assert ok[column].notna().all(), column
    assert (ok["torch_version"] == torch.__version__).all()
    naive = ok[(ok["estimator"] == "naive") & (ok["theta"] == 3.0)]
    assert naive["biased"].all() and (naive["true_grad"] == 84.0).all()
    assert (ok[ok["estimator"] != "naive"]["expected_unbiased"]).all()


def test_report_flags_naive_as_biased_and_draws_non_blank_plots(tiny_run):
    report = (tiny_run / "report.md").read_text()
    assert "## Biased estimators" in report
    assert re.search(r"\*\*naive\*\* on `seed_dependent`", report)
    assert "9θ² + 3" in report and "+6θ²" in report
    assert "## Which estimator to choose" in report and "## Environment" in report
    images = re.findall(r"!\[\]\(([^)]+\.png)\)", report)
    assert len(images) >= 4
    for name in images:
        assert (tiny_run / name).exists(), name
        assert not is_blank(tiny_run / name), name


def test_report_says_when_the_best_estimator_is_exact_rather_than_a_huge_ratio(tmp_path, capsys):
    # f = Σ x_d: the pathwise gradient is 1 for every sample (zero variance); the score function's is noisy.
    args = ["run", "--problem", "diag_gaussian_sum", "--set", "dim=2", "--theta", "1", "--n", "10", "--replicates",
            "100", "--estimator", "pathwise,score_function", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    choice = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| diag_gaussian_sum(")]
    assert len(choice) == 1 and "| **pathwise** (zero variance here" in choice[0], choice
    # A noisy best estimator is not called exact.
    noisy = tmp_path / "noisy"
    args = [*args[:-1], str(noisy)]
    args[args.index("pathwise,score_function")] = "score_function,score_function_loo"
    assert run_cli(args, capsys)[0] == 0
    assert "zero variance here" not in (noisy / "report.md").read_text()


def test_report_command_rerenders_without_rerunning(tiny_run, capsys):
    before = digest(tiny_run / "table.csv")
    for png in tiny_run.glob("*.png"):
        png.unlink()
    (tiny_run / "report.md").unlink()
    code, out, _ = run_cli(["report", str(tiny_run)], capsys)
    assert code == 0 and "report written" in out
    assert (tiny_run / "report.md").exists() and list(tiny_run.glob("*.png"))
    assert digest(tiny_run / "table.csv") == before


def test_report_warns_when_rows_come_from_different_code_versions(tiny_run, tmp_path, capsys):
    table = pd.read_csv(tiny_run / "table.csv", keep_default_na=False, dtype=str)
    table.loc[:3, "git_sha"] = "0123abc"
    table.to_csv(tmp_path / "table.csv", index=False)
    assert run_cli(["report", str(tmp_path)], capsys)[0] == 0
    assert "**Mixed versions:**" in (tmp_path / "report.md").read_text()
    assert "Mixed versions" not in (tiny_run / "report.md").read_text()


def test_rerunning_the_same_command_skips_finished_cells(tiny_run, capsys):
    before = digest(tiny_run / "table.csv")
    code, out, _ = run_cli([*TINY, "--out", str(tiny_run), "--no-report"], capsys)
    assert code == 0 and f"0 cells measured, {TINY_CELLS} already" in out
    assert digest(tiny_run / "table.csv") == before


def test_a_cell_rerun_alone_reproduces_its_numbers(tiny_run, tmp_path):
    full = load_table(tiny_run / "table.csv")
    alone_dir = tmp_path / "alone"
    assert cli.main(["run", "--problem", "seed_dependent", "--theta", "3", "--n", "10", "--estimator", "pathwise",
                     "--replicates", "300", "--no-progress", "--no-report", "--out", str(alone_dir)]) == 0  # fmt: skip
    alone = load_table(alone_dir / "table.csv").iloc[0]
    match = full[full["cell_id"] == alone["cell_id"]].iloc[0]
    for column in ["seed", "grad_mean", "grad_var", "grad_var_ci_low", "grad_var_ci_high"]:
        assert alone[column] == match[column], column


def test_interrupted_run_resumes_and_loses_nothing(tmp_path, monkeypatch, tiny_run):
    real = measure.measure_statistics
    calls = {"n": 0}
    first_block = TINY_CELLS // 2  # blocks are the N values: N = 1, then N = 10

    def interrupt_in_the_second_block(cell, base_seed):
        calls["n"] += 1
        if calls["n"] == first_block + 3:
            raise KeyboardInterrupt
        return real(cell, base_seed)

    monkeypatch.setattr(measure, "measure_statistics", interrupt_in_the_second_block)
    assert cli.main([*TINY, "--out", str(tmp_path)]) == 130
    first = load_table(tmp_path / "table.csv")
    assert len(first) == first_block and (first["n_samples"] == 1).all()
    # A kill in the middle of writing a row leaves a partial line; the resume drops it.
    with open(tmp_path / "table.csv", "a") as handle:
        handle.write("deadbeef,ok,,seed_dep")
    monkeypatch.setattr(measure, "measure_statistics", real)
    assert cli.main([*TINY, "--out", str(tmp_path), "--no-report"]) == 0
    resumed = load_table(tmp_path / "table.csv")
    assert len(resumed) == TINY_CELLS and resumed["cell_id"].is_unique
    pd.testing.assert_frame_equal(resumed.iloc[:first_block][STATISTICAL], first[STATISTICAL])
    # Same numbers as the uninterrupted run (timing columns aside).
    reference = load_table(tiny_run / "table.csv").set_index("cell_id").sort_index()
    resumed = resumed.set_index("cell_id").sort_index()
    pd.testing.assert_frame_equal(resumed[STATISTICAL[1:]], reference[STATISTICAL[1:]])


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    real = measure.measure_statistics

    def fail_pathwise(cell, base_seed):
        if cell.estimator == "pathwise":
            raise FloatingPointError("injected failure")
        return real(cell, base_seed)

    monkeypatch.setattr(measure, "measure_statistics", fail_pathwise)
    code, _, err = run_cli([*TINY, "--theta", "3", "--out", str(tmp_path), "--no-report"], capsys)
    assert code == 1 and "2 cells failed" in err
    table = load_table(tmp_path / "table.csv")
    errors = table[table["status"] == "error"]
    assert set(errors["estimator"]) == {"pathwise"} and errors["note"].str.contains("injected failure").all()
    assert (table["status"] == "ok").sum() == 7
    monkeypatch.setattr(measure, "measure_statistics", real)
    assert cli.main([*TINY, "--theta", "3", "--out", str(tmp_path), "--no-report"]) == 0  # errors are retried


def test_cells_with_an_infinite_fourth_moment_are_flagged_in_table_and_report(tmp_path):
    args = ["run", "--problem", "gaussian_exp", "--wrt", "sigma", "--set", "k=-0.2", "--set", "mu=0.5",
            "--theta", "0.5,1", "--estimator", "pathwise", "--n", "10", "--replicates", "200",
            "--dtype", "float64", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == 0
    table = load_table(tmp_path / "table.csv").set_index("theta")
    assert (table["dtype"] == "float64").all()
    assert table.loc[0.5, "note"] == ""  # 1 + 8kσ² = 0.6 > 0
    assert "fourth moment is infinite" in table.loc[1.0, "note"]  # 1 + 8kσ² = −0.6, 1 + 4kσ² = 0.2 > 0
    assert not table["variance_infinite"].any()
    assert "⚠ f = exp(−kx²) with k < 0" in (tmp_path / "report.md").read_text()


def test_an_infinite_variance_is_no_bias_and_gets_no_rank(tmp_path, capsys):
    # 1 + 2kσ² = 0.136 > 0, so dL/dσ = 34.85 exists; 1 + 4kσ² = −0.728 <= 0, so every estimator's variance is
    # infinite: the sample variance grows with M and a z-test on it used to call all three BIASED.
    args = ["run", "--problem", "gaussian_exp", "--wrt", "sigma", "--theta", "1.2", "--set", "mu=0.4", "--set", "k=-0.3",
            "--estimator", "pathwise,score_function,measure_valued", "--n", "100", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    table = load_table(tmp_path / "table.csv")
    assert len(table) == 3 and table["variance_infinite"].eq(True).all()
    assert table["biased"].isna().all() and table["bias_z"].isna().all() and table["grad_var_ci_low"].isna().all()
    assert table["note"].str.startswith("infinite variance: ").all()
    assert table["true_grad"].iloc[0] == pytest.approx(34.85, abs=0.01)
    report = (tmp_path / "report.md").read_text()
    assert "No measured cell is significantly biased." in report and "**BIASED** (" not in report
    assert "## Infinite variance" in report
    assert report.count("neither a variance interval, nor a bias z-test") == 1
    choice = [line for line in report.splitlines() if line.startswith("| gaussian_exp")]
    assert len(choice) == 1 and "| — |" in choice[0] and choice[0].count("(infinite variance)") == 3, choice
    assert "no verdict: infinite variance" in report


BAD_INPUT = [
    (["--problem", "gaussian_cos", "--wrt", "sigma", "--theta", "0"], "outside the valid range"),
    (["--problem", "gaussian_cos", "--wrt", "sigma", "--theta=-1"], "sigma is a Gaussian scale"),
    (["--problem", "gaussian_cos", "--wrt", "mu", "--set", "sigma=-1"], "sigma must be > 0"),
    (["--problem", "seed_dependent", "--n", "0"], "N (samples per estimate) must be an integer >= 1, got 0"),
    (["--problem", "seed_dependent", "--n=-5"], "got -5"),
    (["--problem", "seed_dependent", "--n", "ten"], "got 'ten'"),
    (["--problem", "seed_dependent", "--theta", "nan"], "theta must be a finite number, got nan"),
    (["--problem", "nope"], "unknown problem 'nope'; allowed: seed_fixed"),
    (["--problem", "seed_dependent", "--estimator", "sf2"], "unknown estimator 'sf2'; allowed: naive"),
    (["--problem", "seed_dependent", "--device", "tpu"], "unknown device 'tpu'"),
    (["--problem", "seed_dependent", "--replicates", "3"], "replicates must be >= 10"),
    (["--problem", "gaussian_cos", "--set", "q=1"], "has no parameter q"),
    (["--problem", "gaussian_cos", "--set", "k"], "--set takes NAME=VALUE"),
    (["--preset", "default", "--problem", "seed_fixed"], "--preset fixes the grid"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--problem", "seed_dependent", "--variance-reduction", "magic"], "unknown variance reduction 'magic'; allowed: none"),
    (["--problem", "seed_dependent", "--estimator", "pathwise", "--estimator-param", "temperature=0.5"],
     "no estimator in this sweep has parameter temperature"),
    (["--problem", "seed_dependent", "--estimator-param", "temperature"], "--estimator-param takes NAME=VALUE"),
    (["--preset", "quick", "--variance-reduction", "none"], "drop --variance-reduction"),
    (["--problem", "seed_dependent", "--executor", "spark"], "invalid choice: 'spark'"),
    (["--problem", "seed_dependent", "--scheduler", "tcp://host:8786"], "--scheduler is for --executor dask"),
    (["--problem", "seed_dependent", "--workers", "2"], "--workers is for --executor dask"),
    (["--problem", "seed_dependent", "--executor", "dask", "--workers", "0"], "--workers: must be an integer >= 1, got '0'"),
    (["--problem", "seed_dependent", "--executor", "dask", "--workers", "two"], "got 'two'"),
    (["--problem", "seed_dependent", "--executor", "dask", "--workers", "2", "--scheduler", "tcp://host:8786"],
     "with --scheduler the cluster's own workers run the cells: drop one of them"),
    # Grid errors come before a cluster is started.
    (["--problem", "seed_dependent", "--executor", "dask", "--n", "0"], "must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_gives_one_clear_line_and_leaves_the_table_alone(args, message, tiny_run, capsys):
    before = digest(tiny_run / "table.csv")
    code, out, err = run_cli(["run", *args, "--out", str(tiny_run), "--no-progress"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varbench: error: "), err
    assert message in lines[0]
    assert digest(tiny_run / "table.csv") == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_with_the_alternatives(tmp_path, capsys):
    code, _, err = run_cli(["run", "--problem", "seed_dependent", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "not available on this machine" in err and "available: cpu" in err
    assert not (tmp_path / "table.csv").exists()


def test_the_dask_executor_without_dask_installed_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    code, _, err = run_cli(["run", "--problem", "seed_dependent", "--executor", "dask", "--no-progress",
                            "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--executor dask needs dask.distributed, which is not installed: pip install -e '.[dask]'" in err
    assert not (tmp_path / "table.csv").exists()


@pytest.mark.integration
def test_core_modules_import_without_dask():
    code = ("import sys; sys.modules['distributed'] = sys.modules['dask'] = None; "
            "import bench.cli, bench.sweep, bench.executors, bench.regression; print('ok')")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    "content",
    ["this is not a table\n", "problem,theta\nseed_dependent,1\n", b"\x00\xff\xfe garbage".decode("latin-1")],
)
def test_corrupt_table_is_reported_and_not_modified(tmp_path, capsys, content):
    table = tmp_path / "table.csv"
    table.write_text(content, encoding="latin-1")
    before = digest(table)
    code, _, err = run_cli([*TINY, "--out", str(tmp_path)], capsys)
    assert code == 2 and "is corrupt" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "is corrupt" in err
    assert digest(table) == before


def test_corrupt_value_inside_a_valid_table_is_named(tiny_run, tmp_path, capsys):
    text = (tiny_run / "table.csv").read_text().splitlines()
    fields = text[2].split(",")
    fields[COLUMNS.index("grad_var")] = "lots"
    text[2] = ",".join(fields)
    (tmp_path / "table.csv").write_text("\n".join(text) + "\n")
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "column grad_var has non-numeric value 'lots' on line 3" in err


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "no results table" in err


def test_list_names_every_problem_and_estimator(capsys):
    from estimators import ESTIMATORS, PROBLEMS

    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in [*PROBLEMS, *ESTIMATORS]:
        assert re.search(rf"^\s+{name}\s", out, re.M), name


@pytest.mark.integration
def test_python_dash_m_bench_is_the_same_cli_and_prints_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--problem", "seed_dependent", "--theta", "nan"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "varbench: error: theta must be a finite number, got nan"


def test_docs_schema_is_the_code_s_schema(capsys):
    from bench.table import schema_markdown

    assert (REPO / "docs" / "schema.md").read_text(encoding="utf-8") == schema_markdown()
    documented = re.findall(r"^\| `([a-z_]+)` \|", schema_markdown(), re.M)
    assert documented == COLUMNS
    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0 and out == schema_markdown()

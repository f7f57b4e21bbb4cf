"""What a new user hits when things go wrong (issue 14): nothing lost, nothing stale, nothing half-read, and bad
input answered with one line before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import cli, measure
from bench.table import COLUMNS, TABLE_NAME, load_table

REPO = Path(__file__).resolve().parent.parent
# Two cells, a few seconds in all: an unbiased and a biased estimator at θ = 3.
SMALL = ["run", "--problem", "seed_dependent", "--theta", "3", "--n", "10", "--replicates", "200",
         "--estimator", "pathwise,naive", "--no-progress"]  # fmt: skip


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varbench: error: "), err
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# A user problem module; {cost} is its cost.
SOFTPLUS = """import torch
from torch.distributions import Normal
from estimators import custom_problem

problem = custom_problem("edited", distribution=lambda theta: Normal(theta, torch.ones_like(theta)),
                         cost=lambda x, theta: {cost})
"""


def _varbench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    assert cli.main([*SMALL, "--out", str(out)]) == 0
    return out


def copy_run(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    (target / TABLE_NAME).write_bytes((source / TABLE_NAME).read_bytes())
    return target


# ---------------------------------------------------------------------------------------------------------
# 3. A half-written last row is ignored by every reader, with the warning `run` prints, and left in place.


def test_report_ignores_a_partial_last_row_with_a_warning_and_leaves_the_file(small_run, tmp_path, capsys):
    folder = copy_run(small_run, tmp_path / "cut")
    text = (folder / TABLE_NAME).read_text()
    pathwise = next(line for line in text.splitlines()[1:] if ",pathwise," in line)
    # The same (unbiased) cell written again and cut inside bias_z by a kill: read as data, it was BIASED.
    cut = pathwise[: len(",".join(pathwise.split(",")[: COLUMNS.index("bias_z")])) + 3]
    with open(folder / TABLE_NAME, "a") as handle:
        handle.write(cut)
    before = digest(folder / TABLE_NAME)
    code, _, err = run_cli(["report", str(folder)], capsys)
    assert code == 0
    warning = [line for line in err.splitlines() if "partial" in line]
    assert warning == [f"varbench: ignoring the partial last row of {folder / TABLE_NAME} (left by an interrupted run)"]
    assert digest(folder / TABLE_NAME) == before
    report = (folder / "report.md").read_text()
    assert "**naive** on `seed_dependent`" in report and "**pathwise**" not in report
    assert len(load_table(folder / TABLE_NAME)) == 2
    # `run`, the writer, drops it with the same line.
    code, out, err = run_cli([*SMALL, "--out", str(folder), "--no-report"], capsys)
    assert code == 0 and warning[0] in err.splitlines() and "0 cells measured" in out
    assert (folder / TABLE_NAME).read_text() == text


# ---------------------------------------------------------------------------------------------------------
# 12. An empty or header-only table is a new table; another schema's header names the columns that differ.


@pytest.mark.parametrize("content", ["", ",".join(COLUMNS)[:37], ",".join(COLUMNS), ",".join(COLUMNS) + "\n"],
                         ids=["empty", "partial header", "header without newline", "header only"])  # fmt: skip
def test_an_empty_or_header_only_table_is_a_new_table(content, tmp_path, capsys):
    (tmp_path / TABLE_NAME).write_text(content)
    assert len(load_table(tmp_path / TABLE_NAME)) == 0
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "no rows yet" in one_error_line(err)
    assert (tmp_path / TABLE_NAME).read_text() == content  # readers leave it alone
    code, out, _ = run_cli([*SMALL, "--estimator", "pathwise", "--out", str(tmp_path), "--no-report"], capsys)
    assert code == 0 and "1 cells measured" in out
    assert len(load_table(tmp_path / TABLE_NAME)) == 1


def test_a_header_from_another_schema_names_the_columns_that_differ(small_run, tmp_path, capsys):
    frame = pd.read_csv(small_run / TABLE_NAME, dtype=str, keep_default_na=False)
    frame = frame.drop(columns=["kurtosis", "mse"]).rename(columns={"note": "remark"})
    frame.to_csv(tmp_path / TABLE_NAME, index=False)
    before = digest(tmp_path / TABLE_NAME)
    for args in (["report", str(tmp_path)], [*SMALL, "--out", str(tmp_path)]):
        code, _, err = run_cli(args, capsys)
        line = one_error_line(err)
        assert code == 2 and "missing columns note, kurtosis, mse" in line and "unexpected column remark" in line
    assert digest(tmp_path / TABLE_NAME) == before


# ---------------------------------------------------------------------------------------------------------
# 6. Seeds: 0 <= seed < 2^63, and the seed columns round-trip exactly.


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64 + 1)])
def test_a_seed_outside_the_int64_range_is_refused(seed, tmp_path, capsys):
    for command in ([*SMALL, "--out", str(tmp_path / "run")], ["baseline", "--out", str(tmp_path / "base")],
                    ["regress", "--out", str(tmp_path / "reg")]):  # fmt: skip
        code, _, err = run_cli([*command, f"--seed={seed}"], capsys)
        assert code == 2 and f"--seed: must be an integer from 0 to 2^63 - 1, got '{seed}'" in one_error_line(err)
    assert not any(tmp_path.iterdir())


def test_seed_columns_round_trip_exactly_and_large_seeds_resume(tmp_path, capsys):
    args = [*SMALL, "--estimator", "pathwise", "--out", str(tmp_path), "--no-report"]
    for seed in (2**63 - 1, 2**63 - 2):  # as floats, both are 2^63: the second was reported "already" done
        code, out, _ = run_cli([*args, "--seed", str(seed)], capsys)
        assert code == 0 and "1 cells measured" in out
    frame = load_table(tmp_path / TABLE_NAME)
    assert frame["base_seed"].dtype == "int64" and frame["seed"].dtype == "int64"
    assert list(frame["base_seed"]) == [2**63 - 1, 2**63 - 2]
    assert set(frame["seed"]) == {int(line.split(",")[COLUMNS.index("seed")])
                                  for line in (tmp_path / TABLE_NAME).read_text().splitlines()[1:]}  # fmt: skip
    code, out, _ = run_cli([*args, "--seed", str(2**63 - 1)], capsys)
    assert code == 0 and "0 cells measured, 1 already" in out


# ---------------------------------------------------------------------------------------------------------
# 5. A user's problem is probed at a valid θ: wrong shapes, dtypes, non-finite values are one clear error.


def _normal(theta):
    import torch
    from torch.distributions import Normal

    return Normal(theta, torch.ones_like(theta))


def _bad_problems():
    import math

    import torch
    from torch.distributions import Normal

    return [
        (dict(cost=lambda x, t: x.sum()), "cost(x, θ) must return one value per sample, shape [N, *θ.shape] = [4, 3]"),
        (dict(cost=lambda x, t: x.mean(dim=0)), "got shape [3]"),
        (dict(cost=lambda x, t: x[..., None] * t), "got shape [4, 3, 3]"),
        (dict(cost=lambda x, t: (x > 0).long()), "must return floating-point values, got dtype torch.int64"),
        (dict(cost=lambda x, t: torch.log(x - x)), "returned non-finite values"),
        (dict(cost=lambda x, t: float(x.sum())), "must return a tensor"),
        (dict(distribution=lambda t: Normal(t.sum(), 1.0)), "must have θ's shape as its batch shape"),
        (dict(distribution=lambda t: "normal"), "torch.distributions object"),
        (dict(gradient=lambda t: math.nan), "gradient(θ) must be finite"),
        (dict(objective=lambda t: [t]), "objective(θ) must return a number"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_a_bad_user_problem_is_refused_with_a_clear_error(index):
    from estimators import ProblemError, custom_problem

    changes, message = _bad_problems()[index]
    spec = dict(distribution=_normal, cost=lambda x, t: x**2) | changes
    with pytest.raises(ProblemError, match=re.escape(message)):
        custom_problem("mine", spec.pop("distribution"), spec.pop("cost"), **spec)


def test_a_wrong_shape_cost_from_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "shapes.py").write_text(SOFTPLUS.format(cost="x.sum()"))
    result = _varbench(["run", "--problem", "shapes:problem", "--out", "out"], tmp_path)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == ("varbench: error: --problem shapes:problem: problem edited: cost(x, θ) must return "
                                     "one value per sample, shape [N, *θ.shape] = [4, 3] for samples x of shape "
                                     "[4, 3]; got shape []")  # fmt: skip


def test_a_problem_built_without_custom_problem_is_probed_too(tmp_path):
    source = ("import dataclasses\nfrom estimators import make_problem\n"
              "problem = dataclasses.replace(make_problem('seed_dependent'), cost=lambda x, t: x.sum())\n")  # fmt: skip
    (tmp_path / "raw.py").write_text(source)
    result = _varbench(["run", "--problem", "raw:problem", "--out", "out"], tmp_path)
    assert result.returncode == 2 and "must return one value per sample" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# 11. Estimator parameters are checked against their declared ranges before anything is written.

BAD_PARAMETERS = [
    ("bernoulli_toy", "gumbel_softmax", "temperature=-1", "temperature of estimator gumbel_softmax"),
    ("bernoulli_toy", "straight_through", "temperature=0", "must be a number > 0, got 0"),
    ("bernoulli_toy", "rebar", "temperature=0", "temperature of estimator rebar"),
    ("bernoulli_toy", "rebar", "eta=inf", "parameter eta of estimator rebar must be finite"),
    ("bernoulli_toy", "relax", "train_steps=-1", "must be an integer >= 0, got -1"),
    ("bernoulli_toy", "relax", "train_steps=2.5", "must be an integer >= 0, got 2.5"),
    ("seed_dependent", "finite_difference", "step=0", "step of estimator finite_difference"),
    ("seed_dependent", "finite_difference", "step=-0.1", "must be a number > 0, got -0.1"),
]


@pytest.mark.parametrize("problem, estimator, assignment, message", BAD_PARAMETERS, ids=[b[2] for b in BAD_PARAMETERS])
def test_a_bad_estimator_parameter_is_refused_before_anything_is_written(problem, estimator, assignment, message,
                                                                        tmp_path, capsys):  # fmt: skip
    code, _, err = run_cli(["run", "--problem", problem, "--estimator", estimator, "--estimator-param", assignment,
                            "--out", str(tmp_path / "out"), "--no-progress"], capsys)  # fmt: skip
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_finite_difference_step_reaching_outside_the_valid_range_is_refused_up_front(tmp_path, capsys):
    code, _, err = run_cli(["run", "--problem", "gaussian_cos", "--wrt", "sigma", "--theta", "0.05", "--estimator",
                            "finite_difference", "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert code == 2 and "needs θ ± step inside the valid range (0, inf)" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_every_shipped_estimator_parameter_declares_its_range():
    from estimators import ESTIMATORS

    for estimator in ESTIMATORS.values():
        assert set(estimator.parameter_ranges) == set(estimator.parameters), estimator.name
        estimator.resolve_options()  # the defaults are inside their ranges


# ---------------------------------------------------------------------------------------------------------
# 13. The pilot of --replicates auto costs at most a quarter of the measurement; a long cell shows progress.


@pytest.mark.parametrize("n", [1, 10, 1000, 20_000, 21_000, 10**5, 10**6, 10**9])
def test_the_pilot_never_costs_more_than_a_quarter_of_the_measurement(n):
    import numpy as np

    pilot = measure.pilot_replicates(n)
    for kurtosis_pilot in (np.array([]), np.random.default_rng(0).standard_t(3, 400)):
        assert 4 * pilot <= measure.choose_replicates(kurtosis_pilot, n)


def test_a_large_n_cell_runs_no_pilot(monkeypatch):
    from bench.grid import Cell

    drawn = []
    real = measure.estimate
    monkeypatch.setattr(measure, "estimate", lambda *a, **k: drawn.append(a[4]) or real(*a, **k))
    row = measure.measure_cell(Cell("seed_dependent", (), "theta", 1.0, "pathwise", 2**20, "cpu"), 0, timed=False)
    assert drawn == [100] and row["n_replicates"] == 100  # M = max(2^24 // N, 100), with or without a pilot


def test_a_long_cell_shows_its_progress_on_the_bar(tmp_path, capsys, monkeypatch):
    from bench import cell_progress, sweep
    from bench.grid import Sweep, expand

    monkeypatch.setattr(cell_progress, "QUIET_S", 0.0)  # every cell is "long"
    cells = expand([Sweep("seed_dependent", thetas=(1.0,), estimators=("pathwise",), n_samples=(2**21,),
                          replicates=10)])  # fmt: skip
    sweep.run_cells(cells, tmp_path, 0, progress=True, timed=False)
    err = capsys.readouterr().err
    assert "seed_dependent pathwise N=2097152: estimates " in err and "%" in err

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
    assert "**naive** on `seed_dependent`" in report and "**pathwise** on" not in report
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
# 10. Empty values are errors naming the flag; 14. a negative list after --theta is taken as it is written.

EMPTY = [
    (["--problem", "seed_dependent", "--theta", ""], "--theta is empty"),
    (["--problem", "seed_dependent", "--n", ""], "--n is empty"),
    (["--problem", "seed_dependent", "--estimator", ""], "--estimator is empty"),
    (["--problem", "seed_dependent", "--theta", "1,,2"], "--theta has an empty item in '1,,2'"),
    (["--problem", "seed_dependent", "--n", "10,"], "--n has an empty item in '10,'"),
    (["--problem", "seed_dependent", "--estimator", "pathwise,,naive"], "--estimator has an empty item"),
    (["--problem", ""], "--problem is empty"),
    (["--problem", "seed_dependent,"], "--problem has an empty item"),
    (["--problem", "seed_dependent", "--device", ""], "--device is empty"),
    (["--problem", "seed_dependent", "--replicates", ""], "--replicates must be 'auto' or an integer >= 10, got ''"),
    (["--problem", "seed_dependent", "--variance-reduction", ""], "--variance-reduction is empty"),
    (["--problem", "gaussian_cos", "--set", "k="], "--set k is empty"),
    (["--problem", "bernoulli_toy", "--estimator", "relax", "--estimator-param", "train_steps=,"],
     "--estimator-param train_steps has an empty item"),
    (["--problem", "seed_dependent", "--wrt", ""], "argument --wrt: is empty; give a parameter name"),
    (["--problem", "seed_dependent", "--out", ""], "argument --out: is empty; give a folder"),
]


@pytest.mark.parametrize("args, message", EMPTY, ids=[m for _, m in EMPTY])
def test_an_empty_value_is_an_error_naming_the_flag(args, message, tmp_path, capsys):
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(["run", *args, *out, "--no-progress"], capsys)
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["report", ""], ["regress", "--baseline", ""], ["baseline", "--out", ""]])
def test_other_commands_refuse_empty_folders_too(args, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "is empty; give a" in one_error_line(err)


def test_a_theta_list_starting_with_a_minus_is_accepted_as_written(tmp_path, capsys):
    args = ["run", "--problem", "seed_dependent", "--theta", "-1,2", "--n", "10", "--replicates", "20",
            "--estimator", "pathwise", "--no-progress", "--no-report", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(load_table(tmp_path / TABLE_NAME)["theta"]) == [-1.0, 2.0]
    code, _, err = run_cli(["run", "--problem", "seed_dependent", "--n", "-5,10", "--out", str(tmp_path)], capsys)
    assert code == 2 and "must be an integer >= 1, got -5" in one_error_line(err)


# ---------------------------------------------------------------------------------------------------------
# 8. `varbench list | head -1`: the reader going away is not an error.


@pytest.mark.integration
def test_a_closed_pipe_ends_the_output_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone, as `head -1` has after its line
    try:
        result = subprocess.run([sys.executable, "-m", "bench", "list"], stdout=write_end, stderr=subprocess.PIPE,
                                cwd=REPO, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == b"" and result.returncode == 128 + signal.SIGPIPE


@pytest.mark.integration
def test_list_piped_into_head_prints_its_first_line_and_no_traceback():
    result = subprocess.run(f"{sys.executable} -m bench list | head -1", shell=True, cwd=REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.stdout.startswith("problems") and result.stderr == ""


# ---------------------------------------------------------------------------------------------------------
# 9. A folder that cannot be created or written is one line, before anything is measured.


def test_out_below_a_file_is_one_line_before_measuring(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("mine\n")
    measured = []
    monkeypatch.setattr(measure, "measure_cell", lambda *a, **k: measured.append(a))
    code, _, err = run_cli([*SMALL, "--out", str(tmp_path / "afile" / "sub")], capsys)
    line = one_error_line(err)
    assert code == 2 and "afile is a file, not a folder" in line and not measured
    assert (tmp_path / "afile").read_text() == "mine\n"


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        return folder / "out"
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no folder here is unwritable")
    return Path("/sys/varbench-unwritable-test")  # root cannot create folders in sysfs either


def test_an_unwritable_out_is_one_line_before_measuring(tmp_path, capsys, monkeypatch):
    measured = []
    monkeypatch.setattr(measure, "measure_cell", lambda *a, **k: measured.append(a))
    target = _unwritable(tmp_path)
    for args in ([*SMALL, "--out", str(target)], ["baseline", "--out", str(target)],
                 ["perf", "--device", "cpu", "--out", str(target)]):  # fmt: skip
        code, _, err = run_cli(args, capsys)
        assert code == 2 and f"{target} cannot be written" in one_error_line(err) and not measured


# ---------------------------------------------------------------------------------------------------------
# 7. Ctrl-C while the report renders, and SIGTERM anywhere: 130 / 143 with one line, the table intact, and no
# half-written report.


def _stop_in_plots(monkeypatch, stop):
    from bench.report import plots

    def interrupt(*args, **kwargs):
        stop()
        time.sleep(5)  # a signal is handled at the next bytecode; this is never reached in full
        raise AssertionError("not interrupted")

    monkeypatch.setattr(plots, "bias", interrupt)


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


def _ctrl_c():
    raise KeyboardInterrupt


@pytest.mark.parametrize("stop, code", [(_ctrl_c, 130), (_sigterm, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stop_while_run_renders_the_report_leaves_the_table_and_no_report(stop, code, tmp_path, capsys, monkeypatch):
    _stop_in_plots(monkeypatch, stop)
    returned, _, err = run_cli([*SMALL, "--out", str(tmp_path)], capsys)
    line = err.strip()
    assert returned == code and len(line.splitlines()) == 1 and "while rendering the report" in line
    assert f"`varbench report {tmp_path}` renders it" in line
    assert len(load_table(tmp_path / TABLE_NAME)) == 2
    assert not (tmp_path / "report.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("stop, code", [(_ctrl_c, 130), (_sigterm, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stopped_report_command_keeps_the_previous_report(stop, code, small_run, tmp_path, capsys, monkeypatch):
    folder = copy_run(small_run, tmp_path / "copy")
    (folder / "report.md").write_bytes((small_run / "report.md").read_bytes())
    before = folder_digest(folder)
    _stop_in_plots(monkeypatch, stop)
    returned, _, err = run_cli(["report", str(folder)], capsys)
    assert returned == code and len(err.strip().splitlines()) == 1
    after = folder_digest(folder)
    assert {name: after[name] for name in before} == before  # report.md and table.csv as they were


@pytest.mark.integration
def test_sigterm_during_a_sweep_exits_143_with_one_line_and_a_resumable_table(tmp_path):
    out = tmp_path / "run"
    # Four comparison blocks (one per N) of 12 cells: rows land a block at a time.
    args = [*SMALL, "--theta", "0,1,2,3", "--n", "10,20,30,40", "--estimator", "pathwise,naive,score_function",
            "--out", str(out)]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        (out / TABLE_NAME).exists() and len((out / TABLE_NAME).read_text().splitlines()) >= 2
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert err.strip() == (f"varbench: terminated (SIGTERM); finished cells are saved in {out / TABLE_NAME}. "
                           "Run the same command again to resume.")  # fmt: skip
    done = load_table(out / TABLE_NAME)
    assert len(done) in (12, 24, 36) and (out / TABLE_NAME).read_bytes().endswith(b"\n")


# ---------------------------------------------------------------------------------------------------------
# 1. baseline and regress write only into a folder that is new, empty, or theirs; they replace only what they
# wrote; no message advises a command that would replace results.

TINY_GRID = dict(thetas=(3.0,), estimators=("pathwise", "naive"), n_samples=(10,), replicates=200)


@pytest.fixture
def tiny_presets(monkeypatch):
    """`ci` (the grid of baseline and regress) is two cells here, and the speed runs an empty JSON."""
    from bench import grid, regression

    monkeypatch.setattr(grid, "preset", lambda name, devices=("cpu",): [grid.Sweep("seed_dependent", **TINY_GRID)])

    def no_speed_runs(path, **kwargs):
        speed = {"benchmarks": [], "machine_info": {}}
        path.write_text(json.dumps(speed))
        return speed

    monkeypatch.setattr(regression, "run_speed_benchmarks", no_speed_runs)


@pytest.fixture
def baseline_folder(tmp_path, tiny_presets) -> Path:
    folder = tmp_path / "baseline"
    assert cli.main(["baseline", "--out", str(folder), "--no-progress"]) == 0
    return folder


@pytest.mark.integration
def test_regress_replaces_only_the_files_it_wrote(baseline_folder, tmp_path, capsys):
    out = tmp_path / "regress"
    code, _, err = run_cli(["regress", "--baseline", str(baseline_folder), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    marker = json.loads((out / ".varbench-run").read_text())
    assert marker["command"] == "regress" and {TABLE_NAME, "regressions.csv", "report.md"} <= set(marker["files"])
    (out / "notes.txt").write_text("my notes\n")
    (out / "sub").mkdir()
    (out / "sub" / "table.csv").write_text("mine\n")
    code, _, err = run_cli(["regress", "--baseline", str(baseline_folder), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "my notes\n" and (out / "sub" / "table.csv").read_text() == "mine\n"
    assert len(load_table(out / TABLE_NAME)) == 2  # a fresh measurement, not appended to the last one
    assert "notes.txt" not in json.loads((out / ".varbench-run").read_text())["files"]


@pytest.mark.integration
@pytest.mark.parametrize("command", ["regress", "baseline"])
@pytest.mark.parametrize("content", ["user file", "run folder", "other command"])
def test_baseline_and_regress_refuse_a_folder_they_did_not_write(command, content, baseline_folder, small_run,
                                                                 tmp_path, capsys):  # fmt: skip
    out = tmp_path / "theirs"
    if content == "user file":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work\n")
    elif content == "run folder":
        copy_run(small_run, out)
    else:  # a regression folder given to baseline, a baseline folder given to regress
        source = baseline_folder if command == "regress" else tmp_path / "reg"
        if command == "baseline":
            assert cli.main(["regress", "--baseline", str(baseline_folder), "--out", str(source), "--no-progress"]) == 0
        out = tmp_path / "copy"
        out.mkdir()
        for path in source.iterdir():
            (out / path.name).write_bytes(path.read_bytes())
    before = folder_digest(out)
    args = ["--out", str(out), "--no-progress"]
    code, _, err = run_cli([command, *args] + (["--baseline", str(baseline_folder)] if command == "regress" else []),
                           capsys)  # fmt: skip
    line = one_error_line(err)
    assert code == 2 and str(out) in line and "new or empty folder" in line
    assert folder_digest(out) == before


def test_baseline_rerecords_its_own_folder_and_adopts_an_unmarked_baseline(baseline_folder, capsys):
    first = load_table(baseline_folder / TABLE_NAME)
    (baseline_folder / ".varbench-run").unlink()  # as the committed baseline was before markers
    assert run_cli(["baseline", "--out", str(baseline_folder), "--no-progress"], capsys)[0] == 0
    again = load_table(baseline_folder / TABLE_NAME)
    assert len(again) == len(first)  # replaced, not appended to
    assert json.loads((baseline_folder / ".varbench-run").read_text())["command"] == "baseline"


def test_a_baseline_without_rows_is_refused_not_compared(baseline_folder, tmp_path, capsys):
    (baseline_folder / TABLE_NAME).write_text(",".join(COLUMNS) + "\n")
    code, _, err = run_cli(["regress", "--baseline", str(baseline_folder), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "has no rows" in one_error_line(err) and not (tmp_path / "r").exists()


def test_run_does_not_append_to_a_baseline_or_regression_folder(baseline_folder, tmp_path, capsys):
    before = folder_digest(baseline_folder)
    code, _, err = run_cli([*SMALL, "--out", str(baseline_folder)], capsys)
    assert code == 2 and "holds the output of `varbench baseline`" in one_error_line(err)
    assert folder_digest(baseline_folder) == before


def test_no_message_advises_replacing_a_folder_that_holds_results(small_run, tmp_path, capsys):
    code, _, err = run_cli(["regress", "--baseline", str(small_run), "--out", str(tmp_path / "r")], capsys)
    line = one_error_line(err)
    assert code == 2 and f"--out {small_run}" not in line and "NEW_FOLDER" in line
    code, _, err = run_cli(["regress", "--baseline", str(tmp_path / "none"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and f"`varbench baseline --out {tmp_path / 'none'}`" in one_error_line(err)


def test_report_does_not_overwrite_a_report_it_did_not_write(small_run, tmp_path, capsys):
    folder = copy_run(small_run, tmp_path / "copy")
    (folder / "report.md").write_text("# My own report\n")
    for args in (["report", str(folder)], [*SMALL, "--out", str(folder)]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "was not written by varbench" in one_error_line(err)
    assert (folder / "report.md").read_text() == "# My own report\n"


# ---------------------------------------------------------------------------------------------------------
# 4. One writer per run folder: a second run stops with one line naming the holder, or waits with --wait.

HOLD = ("import sys, time; from pathlib import Path; from bench import run_folder; "
        "lock = run_folder.locked(Path(sys.argv[1]), 'run'); lock.__enter__(); print('held', flush=True); "
        "time.sleep(float(sys.argv[2]))")  # fmt: skip


@pytest.mark.integration
def test_a_second_run_into_a_busy_folder_names_the_holder_or_waits(tmp_path, capsys):
    import socket

    tmp_path.mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "600"], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli([*SMALL, "--out", str(tmp_path)], capsys)
        line = one_error_line(err)
        assert code == 2 and f"is in use by varbench run (pid {holder.pid} on {socket.gethostname()}, since" in line
        assert "--wait" in line and not (tmp_path / TABLE_NAME).exists()
    finally:
        holder.kill()
        holder.wait()
    short = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert short.stdout.readline().strip() == "held"
    code, out, err = run_cli([*SMALL, "--out", str(tmp_path), "--no-report", "--wait"], capsys)
    short.wait()
    assert code == 0 and "waiting for it" in err and "2 cells measured" in out


@pytest.mark.integration
def test_two_concurrent_runs_measure_each_cell_once(tmp_path):
    args = [sys.executable, "-m", "bench", *SMALL, "--theta", "1,3", "--out", str(tmp_path), "--no-report", "--wait"]
    runs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert len(load_table(tmp_path / TABLE_NAME)) == 4
    assert sorted(out.split(" cells measured")[0].split()[-1] for out, _ in outputs) == ["0", "4"]


# ---------------------------------------------------------------------------------------------------------
# 2. Rows carry the fingerprint of the code that measured them; cells measured by other code are measured again.

@pytest.mark.integration
def test_an_edited_user_problem_is_measured_again_unless_kept(tmp_path):
    (tmp_path / "edited_problem.py").write_text(SOFTPLUS.format(cost="torch.nn.functional.softplus(x)"))
    args = ["run", "--problem", "edited_problem:problem", "--theta", "1", "--estimator", "pathwise", "--n", "10",
            "--replicates", "200", "--no-progress", "--no-report", "--out", "out"]  # fmt: skip
    first = _varbench(args, tmp_path)
    assert first.returncode == 0 and "1 cells measured, 0 already" in first.stdout, first.stderr
    (tmp_path / "edited_problem.py").write_text(SOFTPLUS.format(cost="x**3"))  # dL/dθ = 3θ² + 3 = 6 at θ = 1
    kept = _varbench([*args, "--keep-stale"], tmp_path)
    assert "0 cells measured, 1 already (1 of them measured by other code, kept)" in kept.stdout, kept.stderr
    again = _varbench(args, tmp_path)
    assert again.returncode == 0 and "1 cells measured (1 of them again), 0 already" in again.stdout, again.stderr
    assert "1 finished cells were measured by other code" in again.stderr
    rows = load_table(tmp_path / "out" / TABLE_NAME)
    assert len(rows) == 2 and rows["user_code_hash"].nunique() == 2  # the old row stays; readers take the latest
    from bench.table import latest_rows

    assert latest_rows(rows)["grad_mean"].iloc[0] == pytest.approx(6.0, rel=0.2)
    assert "0 cells measured, 1 already" in _varbench(args, tmp_path).stdout
    forced = _varbench([*args, "--force"], tmp_path)
    assert "1 cells measured (1 of them again)" in forced.stdout and len(load_table(tmp_path / "out" / TABLE_NAME)) == 3


def test_cells_measured_by_another_varbench_are_measured_again(small_run, tmp_path, capsys):
    folder = copy_run(small_run, tmp_path / "copy")
    frame = pd.read_csv(folder / TABLE_NAME, dtype=str, keep_default_na=False)
    assert (frame["code_hash"] != "").all() and (frame["user_code_hash"] == "").all()
    frame.loc[0, "code_hash"] = "0123456789abcdef"
    frame.to_csv(folder / TABLE_NAME, index=False, lineterminator="\n")
    code, out, err = run_cli([*SMALL, "--out", str(folder), "--no-report"], capsys)
    assert code == 0 and "1 cells measured (1 of them again), 1 already" in out and "measured by other code" in err
    assert len(load_table(folder / TABLE_NAME)) == 3


def test_the_code_fingerprint_follows_measuring_code_only(tmp_path, monkeypatch):
    from bench import environment

    for package in ("bench", "estimators"):
        for path in (REPO / package).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    monkeypatch.setattr(environment, "_REPO", tmp_path)

    def fingerprint() -> str:
        environment.code_fingerprint.cache_clear()
        return environment.code_fingerprint()

    try:
        original = fingerprint()
        with open(tmp_path / "bench" / "report" / "__init__.py", "a") as handle:
            handle.write("# the report is not part of a measurement\n")
        assert fingerprint() == original
        with open(tmp_path / "estimators" / "problems" / "gaussian.py", "a") as handle:
            handle.write("# an uncommitted edit of a problem\n")
        assert fingerprint() != original
    finally:
        environment.code_fingerprint.cache_clear()


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


@pytest.mark.integration
def test_a_wrong_shape_cost_from_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "shapes.py").write_text(SOFTPLUS.format(cost="x.sum()"))
    result = _varbench(["run", "--problem", "shapes:problem", "--out", "out"], tmp_path)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == ("varbench: error: problem shapes:problem: problem edited: cost(x, θ) must return "
                                     "one value per sample, shape [N, *θ.shape] = [4, 3] for samples x of shape "
                                     "[4, 3]; got shape []")  # fmt: skip


@pytest.mark.integration
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
    assert "seed_dependent N=2097152: pathwise estimates " in err and "%" in err

"""A user's own estimator goes through the same door as a shipped one: ``--estimator module:attribute`` locally and
on a Dask cluster, an installed plug-in's entry point, ``varbench check``, and one clear line for a surrogate of
the wrong shape. Statistics are seeded; the assertions use the cells' own 95% intervals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration  # every test here runs varbench in a fresh process
REPO = Path(__file__).resolve().parent.parent
SEED_DEPENDENT_PATHWISE_PER_SAMPLE_VARIANCE = 1314.0  # 144θ² + 18 at θ = 3 (docs/math.md)

USER_MODULE = textwrap.dedent('''
    from estimators import custom_estimator


    def my_pathwise(problem, theta, n_samples):
        """pathwise, written again: reparameterised samples through the cost."""
        return problem.cost(problem.distribution(theta).rsample((n_samples,)), theta)


    def plus_half_theta(problem, theta, n_samples):
        """pathwise, plus 0.5·θ on every estimate: biased by 0.5."""
        return my_pathwise(problem, theta, n_samples) + 0.5 * theta * theta


    def needs_rsample(problem, n_samples):
        ok = problem.example_distribution().has_rsample and problem.cost_is_differentiable
        return None if ok else "needs a reparameterised sampler and a differentiable cost"


    mine = custom_estimator("mine", my_pathwise, applies=needs_rsample)
    biased = custom_estimator("biased", plus_half_theta, applies=needs_rsample)


    def flat(problem, theta, n_samples):
        return my_pathwise(problem, theta, n_samples).sum()


    wrong_shape = custom_estimator("wrong_shape", flat)


    def scaled_pathwise(problem, theta, n_samples, scale):
        """pathwise times a user option: biased unless scale = 1."""
        return scale * my_pathwise(problem, theta, n_samples)


    from estimators import ParameterRange

    scaled = custom_estimator("scaled", scaled_pathwise, applies=needs_rsample, coupled_samples=True,
                              parameters={"scale": 1.0},
                              parameter_ranges={"scale": ParameterRange("a multiplier", low=0.0)})
''')


def varbench(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    (folder / "mod.py").write_text(USER_MODULE)
    return folder


RUN = ["run", "--problem", "seed_dependent", "--theta", "3", "--estimator", "pathwise,mod:mine,mod:biased", "--n",
       "100", "--no-progress"]  # fmt: skip


def _check_user_rows(table: pd.DataFrame) -> None:
    rows = table.set_index("estimator")
    assert (rows["status"] == "ok").all(), rows[["status", "note"]]
    mine = rows.loc["mod:mine"]
    low, high = mine["grad_var_ci_low"] * 100, mine["grad_var_ci_high"] * 100
    assert low <= SEED_DEPENDENT_PATHWISE_PER_SAMPLE_VARIANCE <= high
    assert mine["biased"] == False and mine["expected_unbiased"] == True  # noqa: E712 - numpy/pandas booleans
    assert rows.loc["mod:biased", "biased"] == True  # noqa: E712
    assert rows.loc["mod:biased", "grad_mean"] - 84 == pytest.approx(3 * 0.5 * 2, abs=0.5)  # ∂(0.5θ²)/∂θ = θ = 3


@pytest.fixture(scope="module")
def local_run(user_folder) -> pd.DataFrame:
    result = varbench([*RUN, "--out", "local"], user_folder)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(user_folder / "local" / "table.csv")


def test_a_user_s_estimators_run_beside_the_shipped_ones(user_folder, local_run):
    _check_user_rows(local_run)
    report = (user_folder / "local" / "report.md").read_text()
    assert "**mod:biased** on `seed_dependent`" in report
    assert "tie: pathwise, mod:mine" in report or "tie: mod:mine, pathwise" in report


def test_a_user_s_estimators_give_identical_statistics_on_an_embedded_dask_cluster(user_folder, local_run):
    pytest.importorskip("distributed")
    result = varbench([*RUN, "--out", "dask", "--no-report", "--executor", "dask", "--workers", "2"], user_folder)
    assert result.returncode == 0, result.stderr
    dask_run = pd.read_csv(user_folder / "dask" / "table.csv")
    _check_user_rows(dask_run)
    statistics = ["seed", "n_replicates", "grad_mean", "grad_var", "bias_z", "biased"]
    local, remote = (t.set_index("estimator").sort_index()[statistics] for t in (local_run, dask_run))
    pd.testing.assert_frame_equal(local, remote)  # the cell's seed fixes every draw, wherever it runs


def test_check_passes_a_correct_estimator_and_names_where_a_biased_one_fails(user_folder):
    good = varbench(["check", "mod:mine"], user_folder)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().splitlines()[-1].startswith("passed at all")
    bad = varbench(["check", "mod:biased"], user_folder)
    assert bad.returncode == 1
    verdict = bad.stdout.strip().splitlines()[-1]
    assert verdict.startswith("FAILED at") and "seed_dependent() wrt theta θ=1" in verdict
    assert "FAIL: mean" in bad.stdout


def test_a_surrogate_of_the_wrong_shape_is_one_line_before_anything_is_written(user_folder):
    result = varbench(["run", "--problem", "seed_dependent", "--estimator", "mod:wrong_shape", "--n", "10",
                       "--out", "never"], user_folder)  # fmt: skip
    assert result.returncode == 2 and not (user_folder / "never").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varbench: error: estimator mod:wrong_shape: its surrogate returned "
                                                   "shape [] for N = 10 samples")  # fmt: skip


def test_an_unknown_user_estimator_says_what_is_wrong(user_folder):
    result = varbench(["run", "--problem", "seed_dependent", "--estimator", "mod:nothing", "--out", "never"], user_folder)
    assert result.returncode == 2 and result.stderr.strip() == (
        "varbench: error: estimator mod:nothing: module 'mod' has no attribute 'nothing'")


def test_a_bare_surrogate_function_is_refused_in_one_line_saying_how_to_wrap_it(user_folder):
    result = varbench(["run", "--problem", "seed_dependent", "--estimator", "mod:my_pathwise", "--out", "never"],
                      user_folder)  # fmt: skip
    assert result.returncode == 2 and not (user_folder / "never").exists()
    assert result.stderr.strip().splitlines() == [
        "varbench: error: estimator mod:my_pathwise: must be an Estimator (build it with estimators.custom_estimator), "
        "got function (a surrogate function? wrap it: estimators.custom_estimator(name, surrogate))"]


def test_a_user_s_declarations_reach_the_sweep_options_ranges_and_coupled_sampling(user_folder):
    bad = varbench(["run", "--problem", "seed_dependent", "--estimator", "mod:scaled", "--estimator-param",
                    "scale=-1", "--out", "never"], user_folder)  # fmt: skip
    assert bad.returncode == 2 and not (user_folder / "never").exists()
    assert bad.stderr.strip() == ("varbench: error: parameter scale of estimator mod:scaled (a multiplier) must be a "
                                  "number > 0, got -1")  # fmt: skip
    run = varbench(["run", "--problem", "seed_dependent", "--theta", "3", "--estimator", "mod:scaled",
                    "--estimator-param", "scale=1,2", "--variance-reduction", "none,antithetic", "--n", "10",
                    "--replicates", "2000", "--no-progress", "--no-report", "--out", "declared"], user_folder)  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(user_folder / "declared" / "table.csv")
    assert (table["status"] == "ok").all() and len(table) == 4, table[["method", "status", "note"]]
    biased = table.set_index("method")["biased"]
    assert set(biased.index) == {"mod:scaled[scale=1]", "mod:scaled[scale=2]", "mod:scaled[scale=1]+antithetic",
                                 "mod:scaled[scale=2]+antithetic"}  # fmt: skip
    assert biased["mod:scaled[scale=2]"] and biased["mod:scaled[scale=2]+antithetic"]  # 168 against 84: far outside
    assert not biased["mod:scaled[scale=1]"] and not biased["mod:scaled[scale=1]+antithetic"]


def test_an_installed_plug_in_registers_by_name_in_every_process(tmp_path):
    site = tmp_path / "site"
    (site / "varbench_plugin_example-0.1.dist-info").mkdir(parents=True)
    (site / "varbench_plugin_example-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: varbench-plugin-example\nVersion: 0.1\n")
    (site / "varbench_plugin_example-0.1.dist-info" / "entry_points.txt").write_text(
        "[varbench.estimators]\nplugged = varbench_plugin_example:mine\n\n"
        "[varbench.problems]\nplugged_problem = varbench_plugin_example:problem\n")  # fmt: skip
    (site / "varbench_plugin_example.py").write_text(USER_MODULE + textwrap.dedent('''
        import torch
        from torch.distributions import Normal
        from estimators import custom_problem

        problem = custom_problem("plugged_problem", lambda t: Normal(t, torch.ones_like(t)), lambda x, t: x**2,
                                 gradient=lambda t: 2 * t)
    '''))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    listed = varbench(["list"], tmp_path, env)
    assert listed.returncode == 0 and "plugged" in listed.stdout and "plugged_problem" in listed.stdout
    run = varbench(["run", "--problem", "plugged_problem", "--theta", "1", "--estimator", "plugged,pathwise", "--n",
                    "10", "--replicates", "500", "--no-progress", "--no-report", "--out", "out"], tmp_path, env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert set(table["estimator"]) == {"plugged", "pathwise"} and (table["status"] == "ok").all()
    assert not table["biased"].any()

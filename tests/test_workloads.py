"""Real workloads: their ground truths checked independently, every estimator's bias tested against them, the
vector summary's intervals and tests checked on synthetic data, and a user's own problem end to end.

Statistical tests are seeded; a cell is "biased" at Bonferroni-corrected p < 0.001 over its coordinates
(``summarize_vector``), the same rule the report uses.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Bernoulli, Independent

from bench.statistics import summarize_vector
from estimators import ESTIMATORS, EstimatorError, ProblemError, estimate, get_estimator, make_problem
from estimators.variance_reduction import compose
from estimators.workloads import bayes_logreg, discrete_vae

REPO = Path(__file__).resolve().parents[1]
LOGREG_PROBLEM, VAE_PROBLEM = make_problem("bayes_logreg"), make_problem("discrete_vae")
LOGREG, VAE = LOGREG_PROBLEM.workload, VAE_PROBLEM.workload


def unbiased_estimators(problem, steps) -> list[str]:
    """Every registered estimator declared unbiased on the workload that runs there (the pipeline's rule, compose):
    the registry decides, so a new estimator is tested here without editing this file."""
    names = []
    for name in ESTIMATORS.names(exclude=("user", "plugin")):
        points = [problem.at(step) for step in steps]
        if all(ESTIMATORS[name].unbiased_for(p) and not isinstance(compose("none", ESTIMATORS[name], p, 10), str)
               for p in points):  # fmt: skip
            names.append(name)
    return names


def estimate_method(problem, method: str, step, n, m, **options):
    """Estimates [M, P] of a method written estimator[+scheme], as a sweep's cell runs it."""
    estimator, _, scheme = method.partition("+")
    return estimate(get_estimator(estimator), problem, step, n, m, variance_reduction=scheme or "none", **options)


def _vector_summary(workload, estimator, step, n, m, seed, *, with_unresolved=True):
    torch.manual_seed(seed)
    problem = LOGREG_PROBLEM if workload is LOGREG else VAE_PROBLEM
    estimates = estimate_method(problem, estimator, step, n, m).double().numpy()
    truth, error = workload.exact_gradient(step)
    unresolved = None
    if with_unresolved and workload.unresolved_by_sampling is not None:
        unresolved = workload.unresolved_by_sampling(step, n * m).numpy()
    return summarize_vector(estimates, truth.numpy(), error.numpy(), eps=float(np.finfo(np.float32).eps),
                            unresolved=unresolved)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# bayes_logreg: ground truth


def test_kl_to_prior_is_the_closed_form():
    phi = bayes_logreg.parameters(50)
    m, s = bayes_logreg.split(phi)
    closed = float((0.5 * ((2 * s).exp() + m**2 - 1) - s).sum())
    assert float(bayes_logreg.kl_to_prior(phi)) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("step", [0, 500])
def test_expected_softplus_matches_adaptive_quadrature(step):
    """The trapezoidal rule against scipy's adaptive quadrature on 40 patients' marginals, the widest included."""
    phi = bayes_logreg.parameters(step)
    design, _ = bayes_logreg.data()
    m, s = bayes_logreg.split(phi)
    means = design @ m
    sds = ((2 * s).exp() @ (design**2).T).sqrt()
    chosen = sorted({int(sds.argmax()), *range(0, len(sds), 15)})
    t, weights = bayes_logreg._quadrature_rule(bayes_logreg.QUADRATURE_STEP)
    for i in chosen:
        mu, sd = float(means[i]), float(sds[i])
        ours = float((torch.nn.functional.softplus(means[i] + sds[i] * t) * weights).sum())
        value, _ = integrate.quad(lambda u: np.logaddexp(0.0, mu + sd * u) * stats.norm.pdf(u), -40, 40,
                                  points=[-mu / sd], epsabs=1e-13, epsrel=1e-12, limit=400)  # fmt: skip
        assert ours == pytest.approx(value, rel=1e-11, abs=1e-12), (i, sd)


def test_exact_gradient_matches_a_finite_difference_of_the_elbo():
    phi = bayes_logreg.parameters(50)
    grad, error = bayes_logreg.exact_gradient(50)
    h = 1e-5
    for j in (0, 7, 30, 31, 45, 61):  # means and log-scales, the bias coordinate among them
        step = torch.zeros_like(phi)
        step[j] = h
        difference = (bayes_logreg.elbo(phi + step) - bayes_logreg.elbo(phi - step)) / (2 * h)
        # Central difference: O(h²) truncation and ~1e-16·|ELBO|/h rounding, both far below 1e-6 here.
        assert float(difference) == pytest.approx(float(grad[j]), abs=1e-6 + 1e-7 * abs(float(grad[j])))
    assert float(error.max()) < 1e-6


@pytest.mark.slow
def test_pathwise_reference_agrees_with_the_quadrature_truth():
    """A 2^17-sample float64 pathwise reference: every coordinate within its Bonferroni 99.9% interval."""
    torch.manual_seed(7)
    estimates = estimate_method(LOGREG_PROBLEM, "pathwise", 500, 1, 1 << 17, dtype=torch.float64).numpy()
    truth, _ = LOGREG.exact_gradient(500)
    z = (estimates.mean(axis=0) - truth.numpy()) / (estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates)))
    assert np.abs(z).max() < stats.norm.isf(0.0005 / truth.numel()), np.abs(z).max()


# ---------------------------------------------------------------------------------------------------------
# discrete_vae: ground truth


def test_enumerated_expected_cost_matches_a_direct_sum_over_configurations():
    step = 30
    images = discrete_vae.evaluation_batch()[:7]
    logits = discrete_vae.encoder_logits(discrete_vae.parameters(step), images)
    decoder = {k: v for k, v in discrete_vae.TRAINING[step].items() if k != "encoder"}
    z = discrete_vae.all_configurations()
    assert len(torch.unique(z, dim=0)) == 2**discrete_vae.LATENTS
    log_q = Independent(Bernoulli(logits=logits), 1).log_prob(z.unsqueeze(1))  # [C, B]
    direct = (log_q.exp() * discrete_vae.log_joint(z.unsqueeze(1).expand(-1, len(images), -1), images, decoder)).sum(0)
    assert torch.allclose(direct, discrete_vae.exact_expected_cost(logits, images, decoder), rtol=1e-12, atol=1e-10)
    assert torch.allclose(log_q.exp().sum(0), torch.ones(len(images), dtype=torch.float64))


def test_vae_exact_gradient_matches_a_finite_difference():
    step = 30
    phi = discrete_vae.parameters(step)
    grad, _ = discrete_vae.exact_gradient(step)
    images = discrete_vae.evaluation_batch()
    decoder = {k: v for k, v in discrete_vae.TRAINING[step].items() if k != "encoder"}

    def elbo(p):
        logits = discrete_vae.encoder_logits(p, images)
        return float((discrete_vae.exact_expected_cost(logits, images, decoder) + discrete_vae.entropy(logits)).mean())

    for j in (0, 100, 333, 515, 519):
        step_vector = torch.zeros_like(phi)
        step_vector[j] = 1e-5
        difference = (elbo(phi + step_vector) - elbo(phi - step_vector)) / 2e-5
        assert difference == pytest.approx(float(grad[j]), abs=1e-8 + 1e-6 * abs(float(grad[j])))


def test_a_training_run_is_the_same_however_far_it_was_advanced_first():
    early = discrete_vae.TRAINING.__class__(discrete_vae._initial_parameters, discrete_vae._training_loss,
                                           discrete_vae.LEARNING_RATE, 40)  # fmt: skip
    late = discrete_vae.TRAINING.__class__(discrete_vae._initial_parameters, discrete_vae._training_loss,
                                          discrete_vae.LEARNING_RATE, 40)  # fmt: skip
    late[40]
    assert torch.equal(early[25]["encoder"], late[25]["encoder"]) and torch.equal(early[40]["weight"], late[40]["weight"])


def test_training_improves_both_objectives():
    assert LOGREG.objective(500) > LOGREG.objective(50) > LOGREG.objective(0)
    assert VAE.objective(300) > VAE.objective(30) > VAE.objective(0)


# ---------------------------------------------------------------------------------------------------------
# Estimators against the ground truths


# The unbiased estimators, and the score function with the delta-method control variate as an example of a scheme.
@pytest.mark.slow
@pytest.mark.parametrize("estimator", [*unbiased_estimators(LOGREG_PROBLEM, (0, 500)), "score_function+delta_cv"])
@pytest.mark.parametrize("step", [0, 500])
def test_logreg_estimators_are_unbiased(estimator, step):
    m = 100 if estimator == "measure_valued" else 400  # measure_valued evaluates the cost twice per coordinate of φ
    summary = _vector_summary(LOGREG, estimator, step, 10, m, seed=step + 11).summary
    assert not summary.biased, (summary.bias_z, summary.bias_p_value)


def test_logreg_bias_test_catches_an_estimator_that_drops_the_score_term():
    """naive autograd sees no path from φ to the log-likelihood of w ~ q(w) drawn by .sample(): it returns the KL
    term alone, and must be flagged."""
    assert not get_estimator("naive").unbiased_for(LOGREG_PROBLEM.at(50))
    summary = _vector_summary(LOGREG, "naive", 50, 10, 100, seed=3).summary
    assert summary.biased and summary.bias > 0.5 * summary.mean


@pytest.mark.slow
@pytest.mark.parametrize("estimator", unbiased_estimators(VAE_PROBLEM, (0, 300)))
@pytest.mark.parametrize("step", [0, 300])
def test_vae_unbiased_estimators_are_not_flagged(estimator, step):
    summary = _vector_summary(VAE, estimator, step, 10, 200, seed=step + 5).summary
    assert not summary.biased, (summary.bias_z, summary.bias_p_value)


@pytest.mark.parametrize("estimator", ["gumbel_softmax", "straight_through"])
def test_vae_relaxations_are_flagged_biased_against_the_exact_gradient(estimator):
    summary = _vector_summary(VAE, estimator, 0, 10, 200, seed=1).summary
    assert summary.biased and abs(summary.bias_z) > 10


def test_saturated_latents_would_fake_a_bias_without_the_rare_event_term():
    """At step 300 the encoder is nearly deterministic for some (image, latent) pairs; N·M = 400 draws per image
    miss their minority outcomes, so the score function's mean misses their gradient with a tiny spread.
    Without the unresolved term the z-test calls it biased; with it, it does not."""
    blind = _vector_summary(VAE, "score_function", 300, 2, 200, seed=5, with_unresolved=False).summary
    fair = _vector_summary(VAE, "score_function", 300, 2, 200, seed=5).summary
    assert blind.biased and not fair.biased
    # and the term vanishes where the sample does contain every outcome
    assert float(VAE.unresolved_by_sampling(0, 400).abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------------------
# The vector summary on synthetic data with known answers


def test_vector_variance_interval_covers_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    variances = rng.uniform(0.5, 4.0, size=40)
    covered = 0
    for _ in range(200):
        draws = rng.normal(0.0, np.sqrt(variances), size=(300, 40))
        summary = summarize_vector(draws, np.zeros(40), np.zeros(40)).summary
        covered += summary.var_ci_low <= variances.mean() <= summary.var_ci_high
    # 95% nominal: with 200 trials, fewer than 180 covered has probability < 1e-3 under Binomial(200, 0.95).
    assert covered >= stats.binom.ppf(0.001, 200, 0.95), covered


def test_vector_bias_test_detects_one_shifted_coordinate_and_tolerates_none():
    rng = np.random.default_rng(1)
    draws = rng.normal(0.0, 1.0, size=(400, 30))
    assert not summarize_vector(draws, np.zeros(30), np.zeros(30)).summary.biased
    shifted = np.zeros(30)
    shifted[17] = 8 / math.sqrt(400)  # 8 standard errors on one coordinate
    result = summarize_vector(draws, shifted, np.zeros(30))
    assert result.summary.biased and result.worst_coordinate == 17


def test_bad_checkpoint_and_estimator_are_refused_with_what_is_allowed():
    with pytest.raises(ProblemError, match=r"training step in \[0, 2000\]"):
        estimate_method(LOGREG_PROBLEM, "pathwise", 2001, 1, 10)
    with pytest.raises(ProblemError, match="an integer"):
        estimate_method(LOGREG_PROBLEM, "pathwise", 2.5, 1, 10)
    with pytest.raises(EstimatorError, match="arm does not apply to bayes_logreg.*needs Bernoulli"):
        estimate_method(LOGREG_PROBLEM, "arm", 0, 1, 10)
    with pytest.raises(EstimatorError, match="θ is a parameter vector here, and finite_difference needs a scalar θ"):
        estimate_method(LOGREG_PROBLEM, "finite_difference", 0, 1, 10)


# ---------------------------------------------------------------------------------------------------------
# End to end: a workload sweep and the README's user problem


def _varbench(args, cwd):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_workload_sweep_writes_rows_and_its_report_section(tmp_path):
    out = tmp_path / "run"
    result = _varbench(["run", "--problem", "discrete_vae", "--theta", "0,30", "--estimator", "disarm,gumbel_softmax",
                        "--n", "2", "--replicates", "50", "--out", str(out), "--no-progress"], REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "table.csv")
    assert (table["status"] == "ok").all() and (table["n_params"] == 520).all()
    assert set(table["theta"]) == {0.0, 30.0} and table["objective"].notna().all()
    report = (out / "report.md").read_text()
    assert "## Real workloads" in report and "### discrete_vae" in report
    assert (out / "workload_discrete_vae_cpu_float32_variance_along_training.png").exists()


def _readme_user_problem() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(# my_problem\.py.*?)```", readme, re.S)
    assert match, "README must show the user-problem example as a ```python block starting '# my_problem.py'"
    return match.group(1)


@pytest.mark.integration
def test_readme_user_problem_runs_end_to_end(tmp_path):
    (tmp_path / "my_problem.py").write_text(_readme_user_problem())
    out = tmp_path / "mine"
    result = _varbench(["run", "--problem", "my_problem:my_problem", "--theta", "0,2", "--estimator",
                        "naive,pathwise,score_function", "--n", "10", "--out", str(out), "--no-progress"], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "table.csv").set_index(["estimator", "theta"])
    for theta in (0.0, 2.0):
        # dL/dθ = E[σ(θ + ε)], ε ~ N(0, 1), computed independently of varbench's reference.
        exact, _ = integrate.quad(lambda t: stats.norm.pdf(t) / (1 + math.exp(-(theta + t))), -40, 40, epsabs=1e-13)
        reference = table.loc[("pathwise", theta)]
        assert abs(reference["true_grad"] - exact) < 5 * reference["true_grad_se"]
        assert not table.loc[("pathwise", theta), "biased"] and not table.loc[("score_function", theta), "biased"]
        assert table.loc[("naive", theta), "biased"]  # p moves with θ and .sample() cannot see it
    assert "no exact gradient" in table.loc[("pathwise", 0.0), "note"]


@pytest.mark.integration
def test_user_problem_errors_name_the_problem(tmp_path):
    result = _varbench(["run", "--problem", "no_such_module:thing", "--out", str(tmp_path / "x")], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("varbench: error: problem no_such_module:thing: cannot import module")
    (tmp_path / "not_a_problem.py").write_text("thing = 3\n")
    result = _varbench(["run", "--problem", "not_a_problem:thing", "--out", str(tmp_path / "x")], tmp_path)
    assert result.returncode == 2 and "must be a Problem" in result.stderr

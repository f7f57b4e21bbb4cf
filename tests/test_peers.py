"""Peer libraries' estimators (estimators/peers.py): the estimator each claims to be, unbiased, with its variance.

Tests of a peer skip, saying why, when it is not installed (``pip install -e '.[peers]'``); CI does not install
peers. Statistical checks are seeded z-tests with a Bonferroni-corrected critical value for this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import cli
from bench.statistics import kurtosis, variance_interval, variance_relative_se
from estimators import ESTIMATORS, PEER_STATUS, estimate, make_problem
from tests.helpers import bonferroni_z

# peer estimator -> (peer library, our estimator it computes)
PEERS = {
    "pyro_trace_elbo": ("pyro", "pathwise"),
    "pyro_tracegraph_elbo": ("pyro", "score_function"),
    "pyro_tracegraph_elbo_avg_baseline": ("pyro", None),
    "storch_reparameterization": ("storchastic", "pathwise"),
    "storch_score_function": ("storchastic", "score_function"),
}
# (problem, wrt, params, θ): the seed problem with ∂f/∂θ ≠ 0, and Gaussian costs w.r.t. μ and σ.
PROBLEMS = [
    ("seed_dependent", None, {}, 3.0),
    ("gaussian_cos", "mu", {"k": 1.0, "sigma": 1.0}, 1.0),
    ("gaussian_quadratic", "sigma", {"k": 1.0, "mu": 1.0}, 2.0),
]
# Exact per-sample variances on seed_dependent at θ = 3 (tests/test_estimators.py checks them by quadrature).
EXACT_PER_SAMPLE_VARIANCE = {"pathwise": 1314.0, "score_function": 22860.0}
Z_CRIT = bonferroni_z(len(PEERS) * len(PROBLEMS) + len(PEERS) + 1)


def peer(name: str):
    library = PEERS[name][0]
    if name not in ESTIMATORS.names("peer"):
        pytest.skip(f"{library} is unavailable: {PEER_STATUS[library]}")
    return ESTIMATORS[name]


def draw(estimator, problem, theta, n, m, seed):
    torch.manual_seed(seed)
    return estimate(estimator, problem, theta, n, m, dtype=torch.float64).numpy()


def test_every_peer_is_either_registered_or_reported_with_its_failure():
    assert set(PEER_STATUS) == {"pyro", "storchastic"}
    for name, (library, _) in PEERS.items():
        status = PEER_STATUS[library]
        if status.startswith("ok ("):
            assert name in ESTIMATORS.names("peer")
        else:
            assert status.startswith(("not installed:", "fails to import:")), status
            assert name not in ESTIMATORS
    assert set(ESTIMATORS.names("peer")) <= set(PEERS)


def test_list_prints_peer_status_including_failures(monkeypatch, capsys):
    monkeypatch.setitem(PEER_STATUS, "storchastic", "fails to import: ImportError: test reason")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fails to import: ImportError: test reason" in out
    assert f"pyro                 {PEER_STATUS['pyro']}" in out


def test_presets_leave_peers_out():
    from bench.grid import preset

    names = {cell.estimator for sweep in preset("ci") for cell in sweep.cells()}
    assert names and not names & set(PEERS)


@pytest.mark.parametrize("problem_name, wrt, params, theta", PROBLEMS)
@pytest.mark.parametrize("name", [n for n, (_, ours) in PEERS.items() if ours])
def test_peer_computes_our_estimator_sample_for_sample(name, problem_name, wrt, params, theta):
    """Same seed, same draws: a peer that computes the estimator it claims returns our estimates exactly
    (up to rounding), so its bias and variance are those of ours. A missing ∂f/∂θ, an extra score term or a
    wrong scaling by N or M would show here."""
    estimator, ours = peer(name), ESTIMATORS[PEERS[name][1]]
    problem = make_problem(problem_name, wrt, params)
    theirs_x = draw(estimator, problem, theta, 10, 300, seed=11)
    ours_x = draw(ours, problem, theta, 10, 300, seed=11)
    # Storchastic averages its plates with weights 1/n held in float32 even for float64 inputs: every estimate
    # comes out scaled by 1 + ~4e-8 (measured), so the tolerance allows float32 rounding of the scale, no more.
    rtol = 1e-6 if PEERS[name][0] == "storchastic" else 1e-9
    np.testing.assert_allclose(theirs_x, ours_x, rtol=rtol, atol=rtol * max(1.0, abs(problem.gradient(theta))))


@pytest.mark.parametrize("problem_name, wrt, params, theta", PROBLEMS)
@pytest.mark.parametrize("name", list(PEERS))
def test_peer_is_unbiased(name, problem_name, wrt, params, theta):
    estimator = peer(name)
    problem = make_problem(problem_name, wrt, params)
    m = 5000 if name.endswith("avg_baseline") else 20_000  # the baseline variant runs 21 passes per call
    x = draw(estimator, problem, theta, 4, m, seed=hash((name, problem_name)) % 2**31)
    z = (x.mean() - problem.gradient(theta)) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"{name} mean {x.mean():.6g} vs exact {problem.gradient(theta):.6g} (z = {z:.2f})"


@pytest.mark.parametrize("name", [n for n, (_, ours) in PEERS.items() if ours])
def test_peer_per_sample_variance_matches_ours_exactly_known(name):
    """On seed_dependent at θ = 3: 1314 for the pathwise peers, 22860 for the score-function peers."""
    estimator = peer(name)
    exact = EXACT_PER_SAMPLE_VARIANCE[PEERS[name][1]]
    x = draw(estimator, make_problem("seed_dependent"), 3.0, 1, 20_000, seed=hash(("var", name)) % 2**31)
    empirical = float(np.var(x, ddof=1))
    z = math.log(empirical / exact) / variance_relative_se(kurtosis(x), x.size)
    assert abs(z) < Z_CRIT, f"{name}: per-sample variance {empirical:.5g} vs exact {exact:.5g} (z = {z:.2f})"


def test_pyro_decaying_average_baseline_reduces_variance_and_keeps_no_state():
    baseline = peer("pyro_tracegraph_elbo_avg_baseline")
    plain = peer("pyro_tracegraph_elbo")
    import pyro

    problem = make_problem("seed_dependent")
    with_baseline = draw(baseline, problem, 3.0, 10, 2000, seed=5)
    without = draw(plain, problem, 3.0, 10, 2000, seed=6)
    # f ≈ 3θz² has mean 90 at θ = 3: subtracting its running average cuts the score term's variance.
    assert variance_interval(with_baseline)[1] < variance_interval(without)[0]
    # Each call runs in a private param store: nothing is left behind and a re-run reproduces the numbers.
    assert not any(key.startswith("__baseline") for key in pyro.get_param_store().keys())
    np.testing.assert_array_equal(draw(baseline, problem, 3.0, 10, 2000, seed=5), with_baseline)

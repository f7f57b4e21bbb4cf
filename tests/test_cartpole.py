"""The CartPole workload: its reference gradient against a finite difference of J with common random numbers, the
episodic estimators' bias against the reference (GAE's detected at λ < 1), the variance ranking a user expects at
initialisation, where estimators apply, and bad input.

Statistical tests are seeded; "biased" is Bonferroni-corrected p < 0.001 over the coordinates (``summarize_vector``),
the report's rule; the finite-difference check's bound is the normal quantile at family-wise α = 0.001.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.grid import GridError, Sweep
from bench.statistics import BIAS_ALPHA, summarize_vector
from estimators import ESTIMATORS, EstimatorError, ProblemError, custom_estimator, estimate, get_estimator, make_problem
from estimators.core.episodes import episode_surrogate, fit_value
from estimators.variance_reduction import compose
from estimators.workloads import cartpole

PROBLEM = make_problem("cartpole_policy")
WORKLOAD = PROBLEM.workload


def episodic_estimators(unbiased: bool) -> list[str]:
    """Shipped estimators that run on the cartpole problem (the pipeline's rule, compose) and that theory declares
    unbiased (or not) there: the registry decides, so a new one is tested without editing this file."""
    point = PROBLEM.at(0)
    return [name for name in ESTIMATORS.names(exclude=("user", "plugin"))
            if not isinstance(compose("none", ESTIMATORS[name], point, 10), str)
            and ESTIMATORS[name].unbiased_for(point) == unbiased]  # fmt: skip


def summary(estimator: str, step: int, n: int, m: int, seed: int, **options):
    torch.manual_seed(seed)
    estimates = estimate(get_estimator(estimator), PROBLEM, float(step), n, m, options=options).double().numpy()
    truth, error = WORKLOAD.exact_gradient(step)
    return summarize_vector(estimates, truth.numpy(), error.numpy(), eps=float(np.finfo(np.float32).eps)).summary


# Richardson's central difference (8[J(h) − J(−h)] − [J(2h) − J(−2h)])/12h, truncation error O(h⁴); every J(·) is a
# mean over the same episodes (reset states and action uniforms). A flipped action changes a return by O(R), so the
# difference's variance falls as h grows: h = 0.1 keeps its standard error near the reference's.
FD_STEP = 0.1
FD_EPISODES = 1 << 14


@functools.lru_cache(maxsize=None)
def finite_difference(step: int, which: str, seed: int) -> tuple[float, float]:
    """(directional derivative of J along ``direction(step, which)``, its standard error), from per-episode
    differences."""
    theta = cartpole.parameters(step).double()
    direction = directions(step)[which]

    def returns(k: int) -> torch.Tensor:
        moved = (theta + k * FD_STEP * direction)[None]
        return cartpole.ENVIRONMENT.rollout_seeded(moved, FD_EPISODES, seed).returns()[:, 0]

    per_episode = (8 * (returns(1) - returns(-1)) - (returns(2) - returns(-2))) / (12 * FD_STEP)
    return float(per_episode.mean()), float(per_episode.std() / math.sqrt(FD_EPISODES))


def reference_along(step: int, direction: torch.Tensor) -> tuple[float, float]:
    mean, covariance, _ = cartpole.reference(step)
    return float(direction @ mean), float(direction @ covariance @ direction).__pow__(0.5)


def fd_z(step: int, which: str, seed: int, scale: float = 1.0) -> tuple[float, str]:
    """z of (scale × reference − finite difference) along the direction, and the numbers, for the message."""
    fd, fd_se = finite_difference(step, which, seed)
    ref, ref_se = reference_along(step, directions(step)[which])
    z = (scale * ref - fd) / math.hypot(fd_se, ref_se)
    return z, f"reference {ref:.4g} ± {ref_se:.2g}, finite difference {fd:.4g} ± {fd_se:.2g}, z = {z:.2f}"


CRITICAL = float(stats.norm.isf(BIAS_ALPHA / 2 / 2))  # two directions per checkpoint, family-wise α = 0.001


def directions(step: int) -> dict[str, torch.Tensor]:
    """The reference gradient's direction (where J changes most) and a seeded random one, unit vectors."""
    mean = cartpole.reference(step)[0]
    random = torch.randn(cartpole.N_PARAMS, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return {"gradient": mean / mean.norm(), "random": random / random.norm()}


def test_reference_gradient_matches_a_finite_difference_with_common_random_numbers():
    for which in ("gradient", "random"):
        z, text = fd_z(0, which, seed=100)
        assert abs(z) <= CRITICAL, text


@pytest.mark.slow
def test_reference_gradient_matches_a_finite_difference_at_a_trained_checkpoint():
    # Step 10 (the conformance check's point too, so its reference is computed once per test process).
    z, text = fd_z(10, "gradient", seed=210)
    assert abs(z) <= CRITICAL, text


def test_mirrored_episodes_are_the_exact_mirror_images_at_initialisation():
    """At θ = 0 the episode from −s0 with uniforms 1 − u is, step by step, the mirror of the one from s0 with u:
    states negated, actions swapped, same length; so its b-score is negated and its W-score unchanged."""
    pairs = 128
    theta = torch.zeros(2 * pairs, cartpole.N_PARAMS, dtype=torch.float64)
    episodes = cartpole.ENVIRONMENT.rollout_seeded(theta, 1, 31, mirrored=True)
    alive, first, second = episodes.alive[:, 0], slice(0, pairs), slice(pairs, 2 * pairs)
    assert torch.equal(alive[:, first], alive[:, second]) and alive.sum(dim=0).float().std() > 0
    live = alive[:, first]
    observations, actions = episodes.observations[:, 0], episodes.actions[:, 0]
    assert torch.equal(observations[:, second][live], -observations[:, first][live])
    assert torch.equal(actions[:, second][live], 1 - actions[:, first][live])
    assert torch.equal(episodes.returns()[0, first], episodes.returns()[0, second])
    leaf = theta.clone().requires_grad_(True)
    (scores,) = torch.autograd.grad(episode_surrogate(episodes, leaf, episodes.rewards_to_go()).sum(), leaf)
    weights, bias = slice(0, cartpole.N_PARAMS - 2), slice(cartpole.N_PARAMS - 2, None)
    assert torch.allclose(scores[second, weights], scores[first, weights], rtol=0, atol=1e-12)
    assert torch.allclose(scores[second, bias], -scores[first, bias], rtol=0, atol=1e-12)
    assert scores[first, bias].abs().max() > 1  # each episode's own b-term is far from 0; only the pair cancels


def test_reference_at_initialisation_is_mirror_symmetric():
    """θ = 0: the b-coordinates, exactly 0 by CartPole's mirror symmetry, are 0 to float64 rounding, and so is their
    standard error (the episodes' own b-terms are not: the se is the pairs'); the W-columns are opposite."""
    mean, covariance, _ = cartpole.reference(0)
    scale = float(mean.abs().max())
    weights = mean[: cartpole.N_PARAMS - 2].reshape(cartpole.OBSERVATIONS, cartpole.ACTIONS)
    assert float(mean[-2:].abs().max()) <= 1e-12 * scale, mean
    assert float(covariance.diagonal()[-2:].max()).__pow__(0.5) <= 1e-12 * scale, covariance.diagonal()
    assert torch.allclose(weights[:, 0], -weights[:, 1], rtol=0, atol=1e-12 * scale)
    assert float(weights.abs().min()) > 0.1  # the W-coordinates are kept, not cancelled


def test_reference_standard_error_is_from_the_pair_averages(monkeypatch):
    """At a trained checkpoint (a policy that is not mirror-symmetric), on a small reference: the mean is the pair
    averages' and the covariance that of their mean, the pairs (episode i, its mirror i + chunk/2) as the units."""
    for name, value in (("REFERENCE_EPISODES", 512), ("REFERENCE_CHUNK", 256), ("FIT_EPISODES", 256)):
        monkeypatch.setattr(cartpole, name, value)
    mean, covariance, _ = cartpole.reference.__wrapped__(10)
    theta = cartpole.parameters(10).double()
    fitted = fit_value(cartpole.ENVIRONMENT.rollout_seeded(theta[None], 256, cartpole.REFERENCE_SEED, mirrored=True))
    pairs = torch.cat([cartpole._reference_chunk(theta, fitted, cartpole.REFERENCE_SEED + 1 + chunk)[0]
                       for chunk in range(2)])  # fmt: skip
    assert pairs.shape == (256, cartpole.N_PARAMS)
    assert torch.allclose(mean, pairs.mean(dim=0), rtol=1e-12, atol=1e-12)
    assert torch.allclose(covariance, torch.cov(pairs.T) / 256, rtol=1e-9, atol=1e-15)


def test_the_finite_difference_check_can_fail():
    """A reference 20% too large along its own direction is caught: the check can see a wrong ground truth."""
    z, text = fd_z(0, "gradient", seed=100, scale=1.2)
    assert abs(z) > CRITICAL, text


@pytest.mark.parametrize("estimator", episodic_estimators(unbiased=True))
def test_unbiased_episodic_estimators_are_not_flagged_at_initialisation(estimator):
    result = summary(estimator, 0, 10, 200, seed=7)
    assert not result.biased, f"{estimator}: worst coordinate z = {result.bias_z:.2f}, p = {result.bias_p_value:.2g}"


@pytest.mark.slow
@pytest.mark.parametrize("estimator", episodic_estimators(unbiased=True))
def test_unbiased_episodic_estimators_are_not_flagged_at_a_trained_checkpoint(estimator):
    result = summary(estimator, 10, 10, 200, seed=8)
    assert not result.biased, f"{estimator}: worst coordinate z = {result.bias_z:.2f}, p = {result.bias_p_value:.2g}"


def test_gae_bias_is_detected_below_lambda_one_and_absent_at_one():
    """With a linear value function (not the policy's exact value), GAE(λ = 0.5) is biased and the test sees it;
    GAE(λ = 1) is rewards-to-go minus the same V, unbiased, and is not flagged."""
    biased = summary("gae", 10, 10, 200, seed=9, **{"lambda": 0.5})
    assert biased.biased, f"GAE(0.5) not flagged: z = {biased.bias_z:.2f}"
    exact = summary("gae", 10, 10, 200, seed=9, **{"lambda": 1.0})
    assert not exact.biased, f"GAE(1) flagged: z = {exact.bias_z:.2f}"


def test_rewards_to_go_and_baselines_have_far_less_variance_than_reinforce_at_initialisation():
    """At θ = 0, N = 20: each variance-reduced estimator's 95% interval for its mean per-coordinate variance lies
    wholly below plain REINFORCE's, and reward-to-go's and the value baseline's lie below a third of its lower end."""
    plain = summary("reinforce_return", 0, 20, 200, seed=11)
    reduced = {name: summary(name, 0, 20, 200, seed=11)
               for name in ("reward_to_go", "constant_baseline", "value_baseline", "score_function_loo")}  # fmt: skip
    for name, result in reduced.items():
        assert result.var_ci_high < plain.var_ci_low, (name, result.var, plain.var)
    for name in ("reward_to_go", "value_baseline"):
        assert reduced[name].var_ci_high < plain.var_ci_low / 3, (name, reduced[name].var, plain.var)


def test_classic_estimators_do_not_apply_to_episodes_and_episodic_ones_only_to_episodes():
    point = PROBLEM.at(0)
    reason = compose("none", get_estimator("score_function"), point, 10)
    assert isinstance(reason, str) and "episodes" in reason and "does not declare" in reason
    seed_problem = make_problem("seed_dependent")
    reason = compose("none", get_estimator("reward_to_go"), seed_problem, 10)
    assert isinstance(reason, str) and "episodic problem" in reason
    assert not isinstance(compose("none", get_estimator("grpo"), point, 10), str)
    reason = compose("optimal_baseline", get_estimator("score_function_loo"), point, 10)
    assert isinstance(reason, str) and "episodes" in reason


def test_a_users_estimator_that_declares_it_applies_to_episodes_runs():
    def return_times_score(problem, theta, n_samples):
        episodes = problem.episodes.rollout(theta, n_samples)
        return episode_surrogate(episodes, theta, episodes.returns())

    mine = custom_estimator("mine", return_times_score, episodic=True)
    torch.manual_seed(0)
    ours = estimate(get_estimator("reinforce_return"), PROBLEM, 0.0, 4, 6, dtype=torch.float64)
    torch.manual_seed(0)
    assert torch.equal(estimate(mine, PROBLEM, 0.0, 4, 6, dtype=torch.float64), ours)
    undeclared = custom_estimator("undeclared", return_times_score)
    with pytest.raises(EstimatorError, match="does not declare that it applies to episodic problems"):
        estimate(undeclared, PROBLEM, 0.0, 4, 6)


def test_bad_input_is_refused_in_one_line_naming_the_value():
    with pytest.raises(GridError) as error:
        Sweep("cartpole_policy", thetas=(0.0,), estimators=("gae",), n_samples=(10,),
              estimator_params={"lambda": (1.5,)}).cells()  # fmt: skip
    assert "lambda" in str(error.value) and "1.5" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ProblemError, match=r"training step in \[0, 100\], got 101"):
        PROBLEM.check_theta(101.0)
    with pytest.raises(EstimatorError, match="lambda .* must be a number >= 0"):
        get_estimator("gae").resolve_options({"lambda": -0.5})


def test_rollouts_are_reproducible_and_count_their_environment_steps():
    theta = cartpole.parameters(0)[None].double()
    first = cartpole.ENVIRONMENT.rollout_seeded(theta, 8, 5)
    again = cartpole.ENVIRONMENT.rollout_seeded(theta, 8, 5)
    assert torch.equal(first.actions, again.actions) and torch.equal(first.returns(), again.returns())
    lengths = first.alive.sum(dim=0)
    assert torch.equal(first.returns(), lengths.double())  # reward 1 per step, γ = 1
    assert first.environment_steps == first.alive.shape[0] * 8  # every env is stepped until the last one ends

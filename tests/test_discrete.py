"""Discrete-latent problems and estimators against exact values.

Ground truth is written here independently of the library: brute-force enumeration of every outcome for
the objectives and gradients, Gauss–Legendre quadrature over the logistic noise for the exact means of the
biased relaxations, and one-dimensional quadrature over the uniform of ARM/DisARM for their exact variances.
Statistical checks are seeded z-tests with one Bonferroni-corrected critical value for the whole file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from bench.statistics import kurtosis, summarize, variance_interval, variance_relative_se
from estimators import ESTIMATORS, estimate, make_problem
from tests.helpers import bonferroni_z

# (name, params, θ values): every family, default and non-default parameters, θ on both sides of 0.
CASES = [
    ("bernoulli_toy", {"t": 0.45}, (-1.5, 0.0, 2.0)),
    ("bernoulli_toy", {"t": 0.499}, (0.0, 1.0)),
    ("bernoulli_multi", {}, (-1.0, 0.5)),
    ("bernoulli_multi", {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}, (0.0, 1.5)),
    ("categorical_toy", {}, (0.0, 1.0)),
    ("categorical_toy", {"logit1": -1.0, "logit2": 0.5, "logit3": 2.0}, (-0.5, 1.5)),
]
PROBLEM_CASES = [
    pytest.param(name, params, theta, id=f"{name}-{'-'.join(f'{k}{v:g}' for k, v in params.items())}-theta{theta:g}")
    for name, params, thetas in CASES
    for theta in thetas
]
N_BIAS = 4  # samples per estimate in the bias tests
SHIPPED = ESTIMATORS.names(exclude=("user", "plugin"))


def _unbiased_here(name: str, problem_name: str, params: dict) -> bool:
    problem = make_problem(problem_name, params=params)
    return ESTIMATORS[name].unbiased_for(problem) and ESTIMATORS[name].skip_reason(problem, N_BIAS) is None


# (estimator, options): every registered estimator declared unbiased on a discrete case it applies to (the
# registry decides, so a new one is tested here without editing this file), with its default options but
# RELAX's training shortened (unbiased for any control variate, so a short training keeps the test fast without
# weakening it); and REBAR also away from its defaults.
OPTIONS = {"relax": {"train_steps": 30}}
UNBIASED = [(name, OPTIONS.get(name, {})) for name in SHIPPED
            if any(_unbiased_here(name, problem, params) for problem, params, _ in CASES)]  # fmt: skip
UNBIASED.append(("rebar", {"temperature": 0.1, "eta": 0.3}))
UNBIASED_CASES = [
    pytest.param(name, options, problem, params, theta, id=f"{case.id}-{name}{''.join(f'-{k}{v:g}' for k, v in options.items())}")
    for case in PROBLEM_CASES
    for problem, params, theta in [case.values]
    for name, options in UNBIASED
    if _unbiased_here(name, problem, params)
]
# (problem, params, θ, τ) where the relaxations' exact means are checked.
RELAXED = [
    ("bernoulli_toy", {"t": 0.45}, 0.0, 0.5),
    ("bernoulli_toy", {"t": 0.499}, 1.0, 0.1),
    ("bernoulli_toy", {"t": 0.45}, -2.0, 2.0),
    ("bernoulli_multi", {}, 0.5, 0.5),
    ("bernoulli_multi", {"t1": 0.1, "t2": 0.3, "t3": 0.6, "t4": 0.95}, 1.0, 1.0),
]
N_Z_TESTS = len(PROBLEM_CASES) * len(UNBIASED) + 2 * len(RELAXED) + 8
Z_CRIT = bonferroni_z(N_Z_TESTS)


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


def draw(name, problem, theta, n, m, seed, options=None):
    torch.manual_seed(seed)
    return estimate(ESTIMATORS[name], problem, theta, n, m, dtype=torch.float64, options=options).numpy()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------------------
# Exact objective and gradient: brute-force enumeration written from the problem statements.


def enumerate_problem(name: str, params: dict, theta: float) -> list[tuple[float, float, float]]:
    """(probability, cost, ∂_θ log probability) of every outcome."""
    if name == "bernoulli_toy":
        t, p = params.get("t", 0.45), sigmoid(theta)
        return [(p, (1 - t) ** 2, 1 - p), (1 - p, t**2, -p)]
    if name == "bernoulli_multi":
        targets = [params.get(k, d) for k, d in zip(("t1", "t2", "t3", "t4"), (0.49, 0.499, 0.501, 0.51))]
        p, rows = sigmoid(theta), []
        for b in itertools.product((0, 1), repeat=4):
            prob = math.prod(p if bd else 1 - p for bd in b)
            cost = sum((bd - td) ** 2 for bd, td in zip(b, targets)) / 4
            rows.append((prob, cost, sum(bd - p for bd in b)))  # ∂θ log p^b (1−p)^(1−b) = b − p per coordinate
        return rows
    if name == "categorical_toy":
        logits = [theta] + [params.get(f"logit{k}", 0.0) for k in (1, 2, 3)]
        weights = [math.exp(v) for v in logits]
        probs = [w / sum(weights) for w in weights]
        return [(probs[k], k / 3, (k == 0) - probs[0]) for k in range(4)]
    raise AssertionError(name)


@pytest.mark.parametrize("name, params, theta", PROBLEM_CASES)
def test_exact_objective_and_gradient_match_brute_force_enumeration(name, params, theta):
    problem = make_problem(name, params=params)
    rows = enumerate_problem(name, params, theta)
    assert sum(p for p, _, _ in rows) == pytest.approx(1.0, abs=1e-14)
    assert problem.objective(theta) == pytest.approx(sum(p * f for p, f, _ in rows), rel=1e-12, abs=1e-15)
    assert problem.gradient(theta) == pytest.approx(sum(p * f * s for p, f, s in rows), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("name, params, theta", PROBLEM_CASES)
def test_exact_gradient_matches_finite_difference_of_the_enumerated_objective(name, params, theta):
    problem = make_problem(name, params=params)
    h = 1e-5

    def objective(th: float) -> float:
        return sum(p * f for p, f, _ in enumerate_problem(name, params, th))

    fd = (objective(theta + h) - objective(theta - h)) / (2 * h)
    assert problem.gradient(theta) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_bernoulli_multi_with_default_targets_has_an_exactly_zero_gradient_from_cancelling_coordinates():
    problem = make_problem("bernoulli_multi")
    for theta in (-2.0, 0.0, 1.0):
        assert problem.gradient(theta) == 0.0
        # Each coordinate alone has a non-zero gradient p(1−p)(1 − 2t_d)/4 (bernoulli_toy's, over 4); they cancel.
        p = sigmoid(theta)
        for target in (0.49, 0.499, 0.501, 0.51):
            alone = make_problem("bernoulli_toy", params={"t": target}).gradient(theta)
            assert alone == pytest.approx(p * (1 - p) * (1 - 2 * target), rel=1e-12) and alone != 0


def test_discrete_problems_validate_their_parameters():
    from estimators import ProblemError

    with pytest.raises(ProblemError, match="has no parameter k"):
        make_problem("bernoulli_toy", params={"k": 1.0})
    with pytest.raises(ProblemError, match="has no parameter t5"):
        make_problem("bernoulli_multi", params={"t5": 0.5})
    with pytest.raises(ProblemError, match="no parameter wrt='mu'"):
        make_problem("categorical_toy", "mu")


# --------------------------------------------------------------------------------------------------------
# Unbiasedness.


@pytest.mark.slow
@pytest.mark.parametrize("name, options, problem_name, params, theta", UNBIASED_CASES)
def test_unbiased_estimators_are_unbiased_on_discrete_problems(name, options, problem_name, params, theta):
    problem = make_problem(problem_name, params=params)
    x = draw(name, problem, theta, N_BIAS, 20_000, seed_for(name, options, problem.label, theta), options)
    exact = problem.gradient(theta)
    if x.std() <= 1e-12 * max(1.0, abs(exact)):
        # Constant estimates (DisARM on one Bernoulli at σ(θ) = ½; IndeCateR, which sums each coordinate out):
        # each must be the exact gradient up to float64 rounding at the cost's scale, which a z-test would
        # mistake for bias.
        assert x.mean() == pytest.approx(exact, rel=1e-12, abs=1e-12 * max(1.0, abs(problem.objective(theta))))
        return
    z = (x.mean() - exact) / (x.std(ddof=1) / math.sqrt(x.size))
    assert abs(z) < Z_CRIT, f"{name}{options}: mean {x.mean():.6g} vs exact {exact:.6g} (z = {z:.2f})"


# --------------------------------------------------------------------------------------------------------
# The biased relaxations: their measured means against exact means by quadrature over the logistic noise.


@functools.lru_cache(maxsize=1)
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    return special.roots_legendre(3000)


def exact_relaxation_mean_by_quadrature(problem, theta: float, temperature: float, straight_through: bool) -> float:
    """E[∂_θ f(x)] with x = σ((θ + logit u)/τ) per coordinate (or its hard value forward), u ~ U(0, 1) iid per
    coordinate, by Gauss–Legendre in u on each side of the hard sample's jump at u = σ(−θ). The cost is the
    problem's own, differentiated by autograd at every node; it is separable across coordinates (f = mean of
    per-coordinate terms), so coordinate d's term needs only its own u_d: all coordinates share the node."""
    nodes, weights = _legendre()
    split = sigmoid(-theta)
    total = 0.0
    for low, high in ((0.0, split), (split, 1.0)):
        u = torch.tensor((nodes + 1) / 2 * (high - low) + low, dtype=torch.float64)
        w = torch.tensor(weights / 2 * (high - low), dtype=torch.float64)
        theta_nodes = torch.full_like(u, theta, requires_grad=True)
        soft = torch.sigmoid((theta_nodes + torch.log(u) - torch.log1p(-u)) / temperature)
        x = ((u > split).double() + soft - soft.detach()) if straight_through else soft
        dims = 4 if problem.name == "bernoulli_multi" else 1
        # Coordinate d's term of the gradient only depends on x_d; give each coordinate the same x and sum.
        sample = x.unsqueeze(-1).expand(-1, dims) if dims > 1 else x
        (grad,) = torch.autograd.grad(problem.cost(sample, theta_nodes).sum(), theta_nodes)
        total += float((w * grad).sum())
    return total


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gumbel_softmax", "straight_through"])
@pytest.mark.parametrize("name, params, theta, temperature", RELAXED)
def test_relaxation_bias_matches_its_exact_value(estimator, name, params, theta, temperature):
    problem = make_problem(name, params=params)
    assert not ESTIMATORS[estimator].unbiased_for(problem)
    exact_mean = exact_relaxation_mean_by_quadrature(problem, theta, temperature, estimator == "straight_through")
    # The library's exact mean (what the report plots) agrees with this independent computation.
    assert problem.exact_mean(theta, estimator, {"temperature": temperature}) == pytest.approx(exact_mean, rel=1e-7, abs=1e-12)
    x = draw(estimator, problem, theta, 10, 20_000, seed_for("relaxed", estimator, name, params, theta, temperature),
             {"temperature": temperature})  # fmt: skip
    summary = summarize(x, problem.gradient(theta))
    z = (x.mean() - exact_mean) / summary.bias_se
    assert abs(z) < Z_CRIT, f"mean {x.mean():.6g} vs exact relaxed mean {exact_mean:.6g} (z = {z:.2f})"
    # The exact bias is large enough here to be detected: the report must flag it.
    if abs(exact_mean - problem.gradient(theta)) > 8 * summary.bias_se:
        assert summary.biased


def test_relaxation_bias_vanishes_as_temperature_falls_while_variance_grows():
    # Not monotone over all τ (the Gumbel-softmax bias changes sign between τ = 2 and τ = ½ at θ = ½), but
    # it goes to 0 as τ → 0, about linearly.
    problem, theta = make_problem("bernoulli_toy"), 0.5
    for estimator in ("gumbel_softmax", "straight_through"):
        biases = [abs(problem.exact_mean(theta, estimator, {"temperature": tau}) - problem.gradient(theta)) for tau in (0.2, 0.1, 0.05, 0.02)]
        assert biases == sorted(biases, reverse=True) and biases[-1] < 0.2 * biases[0], (estimator, biases)
    variances = [np.var(draw("gumbel_softmax", problem, theta, 1, 4000, seed_for("tau", tau), {"temperature": tau}))
                 for tau in (2.0, 0.02)]  # fmt: skip
    assert variances[1] > 10 * variances[0]


# --------------------------------------------------------------------------------------------------------
# ARM and DisARM: exact per-sample variances on bernoulli_toy by quadrature over the one uniform.


def _arm_sample(u: float, theta: float, t: float) -> float:
    f = lambda b: (b - t) ** 2  # noqa: E731
    return (f(float(u > sigmoid(-theta))) - f(float(u < sigmoid(theta)))) * (u - 0.5)


def _disarm_sample(u: float, theta: float, t: float) -> float:
    f = lambda b: (b - t) ** 2  # noqa: E731
    p = sigmoid(theta)
    b, b_anti = float(u < p), float(1 - u < p)
    return 0.5 * (f(b) - f(b_anti)) * (-1) ** b_anti * float(b != b_anti) * sigmoid(abs(theta))


def exact_moments(sample, theta: float, t: float) -> tuple[float, float]:
    """(mean, variance) of one sample's estimate over u ~ U(0, 1), split at its jumps σ(±θ)."""
    points = sorted({sigmoid(theta), sigmoid(-theta)})
    pieces = [0.0, *points, 1.0]
    m1 = sum(integrate.quad(lambda u: sample(u, theta, t), a, b, epsabs=1e-15)[0] for a, b in zip(pieces, pieces[1:]))
    m2 = sum(integrate.quad(lambda u: sample(u, theta, t) ** 2, a, b, epsabs=1e-15)[0] for a, b in zip(pieces, pieces[1:]))
    return m1, m2 - m1**2


@pytest.mark.parametrize("t", [0.45, 0.499, 0.1, 0.9])
def test_disarm_variance_is_never_above_arm_on_bernoulli_toy(t):
    problem = make_problem("bernoulli_toy", params={"t": t})
    for theta in np.linspace(-5, 5, 41):
        arm_mean, arm_var = exact_moments(_arm_sample, theta, t)
        disarm_mean, disarm_var = exact_moments(_disarm_sample, theta, t)
        # The formulas are the right estimators: both means are the exact gradient.
        assert arm_mean == pytest.approx(problem.gradient(theta), rel=1e-8, abs=1e-14)
        assert disarm_mean == pytest.approx(problem.gradient(theta), rel=1e-8, abs=1e-14)
        assert disarm_var <= arm_var * (1 + 1e-9), f"θ={theta:g}: DisARM {disarm_var:.6g} > ARM {arm_var:.6g}"


@pytest.mark.parametrize("name, sample", [("arm", _arm_sample), ("disarm", _disarm_sample)])
@pytest.mark.parametrize("theta", [0.0, 1.5])
def test_arm_and_disarm_variances_match_their_exact_values(name, sample, theta):
    # Ties the exact formulas above to the implementation, so the ordering they prove holds for the code.
    t = 0.45
    _, exact = exact_moments(sample, theta, t)
    x = draw(name, make_problem("bernoulli_toy", params={"t": t}), theta, 1, 20_000, seed_for("var", name, theta))
    if theta == 0.0 and name == "disarm":  # σ(θ) = ½: b ≠ b̃ always, every estimate is exact
        assert exact < 1e-20 and np.var(x) < 1e-20
        return
    se = variance_relative_se(kurtosis(x), x.size)
    z = math.log(float(np.var(x, ddof=1)) / exact) / se
    assert abs(z) < Z_CRIT, f"{name}: variance {np.var(x, ddof=1):.5g} vs exact {exact:.5g} (z = {z:.2f})"


# --------------------------------------------------------------------------------------------------------
# RELAX and mechanics.


def test_untrained_relax_is_rebar_and_training_lowers_its_variance():
    problem, theta = make_problem("bernoulli_toy"), 0.0
    rebar = draw("rebar", problem, theta, 1, 4000, 11)
    untrained = draw("relax", problem, theta, 1, 4000, 11, {"train_steps": 0})
    # c_φ starts as η f(σ_λ(z)) with η = 1, λ = ½ and a zero residual: REBAR's defaults, up to rounding of exp(log ½).
    np.testing.assert_allclose(untrained, rebar, rtol=1e-6, atol=1e-9)
    trained = draw("relax", problem, theta, 1, 4000, 12, {"train_steps": 100})
    assert variance_interval(trained)[1] < variance_interval(rebar)[0]


def test_relax_is_reproducible_whatever_the_cache_holds():
    from estimators.methods import discrete as discrete_estimators

    problem = make_problem("categorical_toy")
    first = draw("relax", problem, 0.5, 3, 200, 5, {"train_steps": 10})
    discrete_estimators._RELAX_CACHE.clear()
    torch.manual_seed(99)
    torch.rand(7)  # a different global stream before training must not change the trained control
    second = draw("relax", problem, 0.5, 3, 200, 5, {"train_steps": 10})
    np.testing.assert_array_equal(first, second)


def test_discrete_estimators_declare_applicability_cost_and_bias_truthfully():
    toy, multi, cat, gauss = (make_problem(n) for n in ("bernoulli_toy", "bernoulli_multi", "categorical_toy", "seed_dependent"))
    for name in ("arm", "disarm"):
        assert "Bernoulli" in ESTIMATORS[name].skip_reason(cat, 10)
        assert ESTIMATORS[name].cost_evaluations(toy) == 2
    for name in ("arm", "disarm", "gumbel_softmax", "straight_through", "rebar", "relax"):
        assert ESTIMATORS[name].skip_reason(toy, 1) is None and ESTIMATORS[name].skip_reason(multi, 1) is None
        assert "Bernoulli or categorical" in ESTIMATORS[name].skip_reason(gauss, 10)
    for name in ("gumbel_softmax", "straight_through", "rebar", "relax"):
        assert ESTIMATORS[name].skip_reason(cat, 1) is None
    assert ESTIMATORS["rebar"].cost_evaluations(toy) == ESTIMATORS["relax"].cost_evaluations(cat) == 3
    # Which estimators are biased is each one's own declaration (the registry's), not a list kept here; the bias
    # tests check the unbiased ones, and these examples the relaxations and naive autograd.
    for name in ("naive", "gumbel_softmax", "straight_through"):
        assert not ESTIMATORS[name].unbiased_for(toy) and ESTIMATORS[name].skip_reason(toy, 10) is None
    for name in ("score_function", "score_function_loo", "arm", "disarm", "rebar", "relax"):
        assert ESTIMATORS[name].unbiased_for(toy)
    assert "rsample" in ESTIMATORS["pathwise"].skip_reason(toy, 10)
    assert "Gaussians only" in ESTIMATORS["measure_valued"].skip_reason(multi, 10)


def test_naive_autograd_through_a_discrete_sample_returns_zero():
    x = draw("naive", make_problem("bernoulli_toy"), 0.0, 10, 100, 3)
    assert np.all(x == 0.0)


@pytest.mark.parametrize("name, options", [("gumbel_softmax", {"temperature": 0.0}), ("rebar", {"temperature": -1.0}),
                                           ("relax", {"train_steps": 2.5})])  # fmt: skip
def test_invalid_estimator_parameters_are_rejected(name, options):
    with pytest.raises(ValueError, match="must be"):
        draw(name, make_problem("bernoulli_toy"), 0.0, 2, 10, 0, options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("name", [n for n in SHIPPED if any(ESTIMATORS[n].skip_reason(make_problem(p), 10) is None
                                                           for p in ("bernoulli_multi", "categorical_toy"))])
@pytest.mark.parametrize("problem_name", ["bernoulli_multi", "categorical_toy"])
def test_discrete_estimators_run_on_cuda(name, problem_name):
    problem = make_problem(problem_name)
    if ESTIMATORS[name].skip_reason(problem, 10):
        pytest.skip(ESTIMATORS[name].skip_reason(problem, 10))
    options = {"train_steps": 20} if name == "relax" else None
    torch.manual_seed(3)
    x = estimate(ESTIMATORS[name], problem, 0.5, 10, 4000, device="cuda", dtype=torch.float64, options=options)
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    if ESTIMATORS[name].unbiased_for(problem):
        z = (x.mean().item() - problem.gradient(0.5)) / (x.std().item() / math.sqrt(x.numel()))
        assert abs(z) < 4.5


def test_default_preset_runs_every_discrete_problem_and_estimator_and_full_extends_it():
    from bench.grid import expand, preset

    default, full = expand(preset("default")), expand(preset("full"))
    assert set(default) <= set(full) and len(full) > len(default)
    discrete = [c for c in default if c.problem in ("bernoulli_toy", "bernoulli_multi", "categorical_toy")]
    assert {c.problem for c in discrete} == {"bernoulli_toy", "bernoulli_multi", "categorical_toy"}
    assert {"arm", "disarm", "gumbel_softmax", "straight_through", "rebar", "relax"} <= {c.estimator for c in discrete}
    assert {dict(c.params).get("t") for c in discrete if c.problem == "bernoulli_toy"} == {0.45, 0.499}
    temperatures = {dict(c.estimator_params)["temperature"] for c in discrete if c.estimator == "gumbel_softmax"}
    assert len(temperatures) >= 3  # enough for the report's bias-vs-temperature plot

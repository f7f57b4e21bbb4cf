"""Sweeps are declared, not scripted: a Sweep is a grid of values per axis; its cells are the product.

A Cell is one (problem, params, wrt, θ, estimator, estimator parameters, variance reduction, N, device, dtype)
measurement. Its seed is a hash of
the base seed and the cell, so any cell re-run alone gives the same numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

import torch

from estimators import (ESTIMATORS, EstimatorError, Method, Problem, estimate, get_estimator,
                        get_variance_reduction, make_problem)  # fmt: skip

from .environment import resolve_devices

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MIN_REPLICATES = 10


def default_estimators() -> tuple[str, ...]:
    """What `run --problem` without --estimator measures: every registered estimator (installed plug-ins too)
    but the peers', which run only when named or with --estimator all, so that what runs does not depend on
    which optional peer libraries happen to be installed."""
    return tuple(ESTIMATORS.names(exclude=("peer",)))


# The presets name their estimators, so a newly registered estimator joins no preset (and changes no committed
# baseline) until it is added here. The finite-difference reference runs in its own sweeps (_dimension_sweeps).
PRESET_SCHEMES = ("none", "antithetic", "qmc", "optimal_baseline", "delta_cv")
PRESET_ESTIMATORS = ("naive", "score_function", "score_function_loo", "pathwise", "measure_valued", "arm", "disarm",
                     "gumbel_softmax", "straight_through", "rebar", "relax")  # fmt: skip
# The regression gate's grid has its own list: adding an estimator to the presets leaves results/baseline valid.
CI_ESTIMATORS = ("naive", "score_function", "score_function_loo", "pathwise", "measure_valued", "arm", "disarm",
                 "gumbel_softmax", "straight_through", "rebar", "relax")  # fmt: skip


class GridError(ValueError):
    """An invalid sweep axis value; the message names it and what is allowed."""


MAX_SEED = 2**63 - 1  # seeds are stored as int64 (bench.table.MAX_SEED)


def check_base_seed(seed: object) -> int:
    """``seed`` if it is an integer in [0, 2^63): the table stores seeds as int64."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise GridError(f"--seed must be an integer from 0 to 2^63 - 1, got {seed}")
    return seed


@dataclass(frozen=True)
class Cell:
    problem: str
    params: tuple[tuple[str, float], ...]
    wrt: str
    theta: float
    estimator: str
    n_samples: int
    device: str
    dtype: str = "float32"
    replicates: int | None = None  # None: chosen from a pilot run's kurtosis
    # The estimator's parameters, all of them resolved (defaults included), sorted by name.
    estimator_params: tuple[tuple[str, float], ...] = ()
    variance_reduction: str = "none"

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)

    @property
    def estimator_params_json(self) -> str:
        return json.dumps(dict(self.estimator_params), sort_keys=True)

    @property
    def method_id(self) -> Method:
        """The estimator variant's identity: estimator, resolved parameters, variance-reduction scheme."""
        return Method(self.estimator, self.estimator_params, self.variance_reduction)

    @property
    def method(self) -> str:
        """The estimator variant's display name, e.g. ``gumbel_softmax[temperature=0.5]+antithetic``."""
        return self.method_id.label

    @property
    def identity(self) -> str:
        parts = [self.problem, self.params_json, self.wrt, repr(float(self.theta)), self.estimator,
                 str(self.n_samples), self.device, self.dtype]  # fmt: skip
        # Appended only when set, so cells of plain estimators keep the ids (and seeds) they always had.
        if self.estimator_params:
            parts.append(self.estimator_params_json)
        if self.variance_reduction != "none":
            parts.append(self.variance_reduction)
        return "|".join(parts)

    @property
    def block_key(self) -> tuple:
        """Cells with the same key form one comparison block: their costs are measured together (bench/cost.py)."""
        return (self.problem, self.params, self.wrt, self.n_samples, self.device, self.dtype)

    @property
    def cell_id(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    def seed(self, base_seed: int) -> int:
        """Per-cell torch seed: a hash of (base seed, cell identity); 63 bits so it is a valid torch seed."""
        digest = hashlib.sha256(f"{base_seed}|{self.identity}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def build_problem(self) -> Problem:
        return make_problem(self.problem, self.wrt, dict(self.params))


@dataclass(frozen=True)
class Sweep:
    """A grid over one problem family: every combination of the listed values is one cell."""

    problem: str
    thetas: tuple[float, ...]
    estimators: tuple[str, ...] = field(default_factory=default_estimators)
    n_samples: tuple[int, ...] = (1, 10, 100, 1000)
    devices: tuple[str, ...] = ("cpu",)
    wrt: str | None = None
    # Each parameter may list several values; the sweep takes their product.
    params: dict[str, tuple[float, ...]] = field(default_factory=dict)
    dtype: str = "float32"
    replicates: int | None = None
    # Estimator parameters to sweep, e.g. {"temperature": (0.1, 0.5, 1.0)}: each estimator takes the product of
    # the ones it declares and its defaults for the rest; estimators without them are unaffected.
    estimator_params: dict[str, tuple[float, ...]] = field(default_factory=dict)
    variance_reductions: tuple[str, ...] = ("none",)

    def _estimator_variants(self) -> list[tuple[str, tuple[tuple[str, float], ...]]]:
        variants = []
        declared = set()
        for name in self.estimators:
            estimator = get_estimator(name)
            declared |= set(estimator.parameters)
            keys = sorted(k for k in self.estimator_params if k in estimator.parameters)
            for values in itertools.product(*(self.estimator_params[k] for k in keys)):
                options = estimator.resolve_options(dict(zip(keys, values)))
                variants.append((name, tuple(sorted(options.items()))))
        unused = sorted(set(self.estimator_params) - declared)
        if unused:
            raise GridError(
                f"no estimator in this sweep has parameter {', '.join(unused)} "
                f"(estimators: {', '.join(self.estimators)})"
            )
        return variants

    def cells(self, available_devices: list[str] | None = None) -> list[Cell]:
        """Validate every axis and expand the grid; raises before anything runs.

        ``available_devices``: the devices a cluster's workers offer (see ``resolve_devices``); None = this machine.
        """
        if self.dtype not in DTYPES:
            raise GridError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.replicates is not None and self.replicates < MIN_REPLICATES:
            raise GridError(f"replicates must be >= {MIN_REPLICATES} (or auto), got {self.replicates}")
        for n in self.n_samples:
            if int(n) != n or n < 1:
                raise GridError(f"N (samples per estimate) must be an integer >= 1, got {n}")
        variants = self._estimator_variants()
        for scheme in self.variance_reductions:
            get_variance_reduction(scheme)
        devices = resolve_devices(",".join(self.devices), available_devices)
        keys = sorted(self.params)
        cells = []
        for values in itertools.product(*(self.params[k] for k in keys)):
            params = dict(zip(keys, values))
            problem = make_problem(self.problem, self.wrt, params)
            for theta in self.thetas:
                problem.check_theta(theta)
                self._check_point(problem, theta, variants)
            for estimator in dict.fromkeys(name for name, _ in variants):
                probe_user_estimator(estimator, problem, self.thetas[0], min(self.n_samples))
            resolved = tuple(sorted(problem.params.items()))
            for theta, (estimator, options), scheme, n, device in itertools.product(
                self.thetas, variants, self.variance_reductions, self.n_samples, devices
            ):
                cells.append(
                    Cell(problem.name, resolved, problem.wrt, float(theta), estimator, int(n), device,
                         self.dtype, self.replicates, options, scheme)
                )  # fmt: skip
        return cells

    def _check_point(self, problem: Problem, theta: float, variants) -> None:
        """GridError for an estimator whose options cannot work at this θ (e.g. a step reaching outside θ's range),
        where the estimator applies at all (elsewhere its cells are recorded as skipped)."""
        for name, options in variants:
            estimator = get_estimator(name)
            if estimator.point_error is None or estimator.skip_reason(problem, max(self.n_samples)) is not None:
                continue
            reason = estimator.point_error(problem, float(theta), dict(options))
            if reason:
                raise GridError(reason)


PROBE_REPLICATES = 3


def probe_user_estimator(name: str, problem: Problem, theta: float, n_samples: int) -> None:
    """Run a user's (or a plug-in's) estimator once on a tiny cell, so that a surrogate of the wrong shape or one
    that raises is one line before anything is written, not an error row per cell. Shipped estimators are
    tested by the suite and not probed. Draws from a forked stream: the sweep's numbers do not change."""
    if not {"user", "plugin"} & ESTIMATORS.tags(name):
        return
    estimator = get_estimator(name)
    if estimator.skip_reason(problem, n_samples) is not None:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            estimate(estimator, problem, theta, n_samples, PROBE_REPLICATES)
        except EstimatorError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's surrogate may raise anything
            raise EstimatorError(f"estimator {name} failed on {problem.label} at θ={theta:g}, N={n_samples}: "
                                 f"{type(error).__name__}: {error}") from None  # fmt: skip


def expand(sweeps: list[Sweep], available_devices: list[str] | None = None) -> list[Cell]:
    """All cells of several sweeps, duplicates removed, order kept (``available_devices``: see ``Sweep.cells``)."""
    return list(dict.fromkeys(cell for sweep in sweeps for cell in sweep.cells(available_devices)))




def _gaussian_sweeps(**common) -> list[Sweep]:
    """Mohamed et al. (2020) Fig. 2-style cells: μ = σ = 1 across k, plus a θ sweep at k = 1."""
    k_values = {"gaussian_quadratic": (-3.0, -1.0, 1.0, 3.0), "gaussian_exp": (0.5, 1.0, 2.0),
                "gaussian_cos": (0.5, 1.0, 2.0, 3.0)}  # fmt: skip
    sweeps = []
    for name, ks in k_values.items():
        sweeps.append(Sweep(name, thetas=(1.0,), wrt="mu", params={"k": ks, "sigma": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(1.0,), wrt="sigma", params={"k": ks, "mu": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(-1.0, 0.0, 2.0), wrt="mu", params={"k": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(0.5, 2.0), wrt="sigma", params={"k": (1.0,)}, **common))
    return sweeps


RELAXATIONS = ("gumbel_softmax", "straight_through")
# Discrete estimators since 2020, measured beside the classic ones on the discrete problems and the discrete VAE
# (not in the ci grid, so the committed baseline stays valid).
RECENT_DISCRETE = ("reinmax", "gumbel_rao", "indecater", "double_cv", "arms")


def _discrete_sweeps(full: bool = False, **common) -> list[Sweep]:
    """Discrete latents: every applicable estimator at θ = ½ on bernoulli_toy (t = 0.45 and 0.499, the
    REBAR/RELAX settings), bernoulli_multi and categorical_toy, at N <= 100, plus the relaxations' bias
    against temperature at the largest N. ``full`` adds N = 1000, θ on both sides (θ = 0
    is where DisARM is exact on one Bernoulli), temperatures for every discrete problem and for REBAR, and
    RELAX's training budget."""
    if not full:
        # N = 1000 doubles the discrete cells' cost (REBAR and RELAX are the slowest estimators); it is in `full`.
        common = {**common, "n_samples": tuple(n for n in common["n_samples"] if n <= 100)}
    largest_n = (max(common["n_samples"]),)
    temperatures = (0.1, 0.5, 1.0, 2.0)
    toy_targets = {"t": (0.45, 0.499)}
    if not full:
        recent = {**common, "estimators": RECENT_DISCRETE}
        return [
            Sweep("bernoulli_toy", thetas=(0.5,), params=toy_targets, **common),
            Sweep("bernoulli_multi", thetas=(0.5,), **common),
            Sweep("categorical_toy", thetas=(0.5,), **common),
            Sweep("bernoulli_toy", thetas=(0.5,), params=toy_targets, **recent),
            Sweep("bernoulli_multi", thetas=(0.5,), **recent),
            Sweep("categorical_toy", thetas=(0.5,), **recent),
            Sweep("bernoulli_toy", thetas=(0.5,), params={"t": (0.45,)}, estimator_params={"temperature": temperatures},
                  **{**common, "estimators": (*RELAXATIONS, "reinmax", "gumbel_rao"), "n_samples": largest_n}),
        ]  # fmt: skip
    thetas = (-2.0, 0.0, 0.5, 2.0)
    swept = {**common, "n_samples": largest_n, "estimators": (*RELAXATIONS, "rebar")}
    recent = {**common, "estimators": RECENT_DISCRETE}
    return [
        Sweep("bernoulli_toy", thetas=thetas, params=toy_targets, **common),
        Sweep("bernoulli_multi", thetas=thetas, **common),
        Sweep("categorical_toy", thetas=thetas, **common),
        Sweep("bernoulli_toy", thetas=thetas, params=toy_targets, **recent),
        Sweep("bernoulli_multi", thetas=thetas, **recent),
        Sweep("categorical_toy", thetas=thetas, **recent),
        *(Sweep(name, thetas=(0.5,), params=params, estimator_params={"temperature": temperatures}, **swept)
          for name, params in (("bernoulli_toy", toy_targets), ("bernoulli_multi", {}), ("categorical_toy", {}))),
        Sweep("bernoulli_toy", thetas=(0.5,), params=toy_targets, estimator_params={"train_steps": (0.0, 50.0, 200.0, 1000.0)},
              **{**common, "n_samples": largest_n, "estimators": ("relax",)}),
    ]  # fmt: skip


POLICY_ESTIMATORS = ("score_function", "score_function_loo", "grpo", "dr_grpo", "naive")
POLICY_GROUP_SIZES = (2, 4, 8, 16)
POLICY_BEST_SUCCESS_RATES = (0.5, 0.7, 0.99, 0.999)


def _policy_sweeps(devices: tuple[str, ...], **common) -> list[Sweep]:
    """The group baselines of RL for language models against the score function and RLOO on categorical_policy,
    the group being the N samples of an estimate (G = N ∈ {2, 4, 8, 16}, the sizes GRPO is run with), at θ = 0
    and 1 (p_0 = ¼ and ½): 40 small cells, every one with exact moments."""
    # The best action's success rate from a coin flip to nearly always right, since GRPO's normalisation by the
    # group's reward spread makes its bias depend on it: 24 more cells at θ = 0 (0.9, the default, is above).
    return [Sweep("categorical_policy", thetas=(0.0, 1.0), estimators=POLICY_ESTIMATORS,
                  n_samples=POLICY_GROUP_SIZES, devices=devices),
            Sweep("categorical_policy", thetas=(0.0,), params={"success0": POLICY_BEST_SUCCESS_RATES},
                  estimators=("score_function_loo", "grpo", "dr_grpo"), n_samples=(4, 16), devices=devices)]  # fmt: skip


def _variance_reduction_sweeps(**common) -> list[Sweep]:
    """Every scheme against plain Monte Carlo (score function, pathwise) on three smooth Gaussian cells, ~1 min.

    QMC skips N = 10: a scrambled Sobol coordinate per replicate costs ~50 µs, so its timing call (2^18
    samples = 26 214 replicates at N = 10) alone would take most of the budget.
    """
    cells = [
        ("seed_dependent", None, {}, 3.0),
        ("gaussian_cos", "mu", {"k": (1.0,), "sigma": (1.0,)}, 1.0),
        ("gaussian_exp", "sigma", {"k": (1.0,), "mu": (1.0,)}, 1.0),
    ]
    common = {**common, "estimators": ("score_function", "pathwise")}
    common.pop("n_samples", None)
    without_qmc = tuple(v for v in PRESET_SCHEMES if v != "qmc")
    sweeps = []
    for problem, wrt, params, theta in cells:
        sweeps.append(Sweep(problem, thetas=(theta,), wrt=wrt, params=params, **common,
                            n_samples=(10, 100, 1000), variance_reductions=without_qmc))  # fmt: skip
        sweeps.append(Sweep(problem, thetas=(theta,), wrt=wrt, params=params, **common,
                            n_samples=(100, 1000), variance_reductions=("qmc",)))  # fmt: skip
    return sweeps


def _variance_reduction_sweeps_full(**common) -> list[Sweep]:
    """Every estimator under every scheme on both wrt of each Gaussian cost and on the seed problem, N up to 1000."""
    common = {**common, "n_samples": (10, 100, 1000), "variance_reductions": PRESET_SCHEMES}
    sweeps = [Sweep("seed_dependent", thetas=(1.0, 3.0), **common)]
    for name in ("gaussian_quadratic", "gaussian_exp", "gaussian_cos"):
        sweeps.append(Sweep(name, thetas=(0.0, 1.0), wrt="mu", params={"k": (1.0,), "sigma": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(0.5, 1.0), wrt="sigma", params={"k": (1.0,), "mu": (1.0,)}, **common))
    return sweeps


def _implicit_sweeps(full: bool = False, **common) -> list[Sweep]:
    """Gamma, Beta, Dirichlet (implicit reparameterisation) with f = log x, x, x², and small concentrations in
    float32 and float64, where torch's clamping of tiny samples to the dtype's smallest normal number biases
    the estimates (and any NaN/inf estimate is counted in n_nonfinite)."""
    if not full:  # about 18 cells: score function against implicit pathwise
        common = {**common, "n_samples": (100,), "estimators": ("score_function", "pathwise")}
        return [
            Sweep("gamma", thetas=(0.5, 2.0), wrt="shape", params={"power": (0.0, 2.0)}, **common),
            Sweep("gamma", thetas=(1.0,), wrt="rate", params={"power": (1.0,)}, **common),
            Sweep("beta", thetas=(1.0,), wrt="a", params={"power": (0.0,)}, **common),
            Sweep("dirichlet", thetas=(1.0,), params={"power": (0.0,)}, **common),
            *(Sweep("gamma", thetas=(0.01,), wrt="shape", params={"power": (0.0,)}, dtype=dtype, **common)
              for dtype in ("float32", "float64")),
        ]  # fmt: skip
    thetas, powers, small = (0.1, 0.5, 1.0, 2.0, 5.0), (0.0, 1.0, 2.0), (0.001, 0.01, 0.05, 0.1)
    sweeps = [
        Sweep("gamma", thetas=thetas, wrt="shape", params={"power": powers}, **common),
        Sweep("gamma", thetas=thetas, wrt="rate", params={"power": powers}, **common),
        Sweep("beta", thetas=thetas, wrt="a", params={"power": powers}, **common),
        Sweep("beta", thetas=thetas, wrt="b", params={"power": powers}, **common),
        Sweep("dirichlet", thetas=thetas, params={"power": powers}, **common),
    ]
    for dtype in ("float32", "float64"):
        sweeps += [
            Sweep("gamma", thetas=small, wrt="shape", params={"power": (0.0, 1.0)}, dtype=dtype, **common),
            Sweep("beta", thetas=small, wrt="a", params={"power": (0.0,), "b": (0.1, 1.0)}, dtype=dtype, **common),
            Sweep("dirichlet", thetas=small, params={"power": (0.0,), "rest": (0.1, 1.0)}, dtype=dtype, **common),
        ]
    return sweeps


def _dimension_sweeps(full: bool = False, **common) -> list[Sweep]:
    """Diagonal Gaussians across the dimension D at θ = μ1 = 1, μ = 0 (the report plots variance against D),
    and finite differences across their step h: bias 4θh² on the quartic cost, 3h² on seed_dependent."""
    if full:
        dims, steps = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), (0.01, 0.1, 0.5, 1.0)
    else:  # about 20 cells
        dims, steps = (1.0, 4.0, 16.0), (0.1, 1.0)
        common = {**common, "n_samples": (100,), "estimators": ("score_function", "pathwise", "measure_valued")}
    sweeps = [
        Sweep(name, thetas=(1.0,), params={"dim": dims, "mu": (0.0,), "sigma": (1.0,)}, **common)
        for name in ("diag_gaussian_sum", "diag_gaussian_quartic")
    ]
    fd = {**common, "estimators": ("finite_difference",), "estimator_params": {"step": steps}}
    sweeps.append(Sweep("diag_gaussian_quartic", thetas=(1.0,), params={"dim": (4.0,)}, **fd))
    sweeps.append(Sweep("seed_dependent", thetas=(3.0,), **{**fd, "n_samples": (1000,)}))
    return sweeps


VAE_ESTIMATORS = ("score_function", "score_function_loo", "arm", "disarm", "gumbel_softmax", "straight_through", "rebar",
                  "relax")  # fmt: skip


def _workload_sweeps(full: bool = False, **common) -> list[Sweep]:
    """Real workloads at checkpoints of their training runs, M = 200: Bayesian logistic
    regression (pathwise, score function with and without baselines, delta-method control variate,
    measure-valued) and the discrete VAE's encoder (every discrete estimator). ``full`` adds checkpoints and
    trains on to step 2000, larger N and the relaxations' temperatures."""
    devices = common["devices"]
    logreg, vae = make_problem("bayes_logreg").workload, make_problem("discrete_vae").workload
    logreg_steps = tuple(map(float, logreg.full_checkpoints if full else logreg.checkpoints))
    vae_steps = tuple(map(float, vae.full_checkpoints if full else vae.checkpoints))
    logreg_n = (1, 10, 100, 1000) if full else (1, 10, 100)
    # 124 cost evaluations per sample (two per mean and per log-scale): N = 100 is in `full` only.
    mvd_n = (1, 10, 100) if full else (1, 10)
    vae_n = (2, 10, 100) if full else (2, 10)
    sweeps = [
        Sweep("bayes_logreg", thetas=logreg_steps, estimators=("pathwise", "score_function", "score_function_loo"),
              n_samples=logreg_n, devices=devices),
        Sweep("bayes_logreg", thetas=logreg_steps, estimators=("score_function",), variance_reductions=("delta_cv",),
              n_samples=logreg_n, devices=devices),
        Sweep("bayes_logreg", thetas=logreg_steps, estimators=("measure_valued",), n_samples=mvd_n, devices=devices),
        Sweep("discrete_vae", thetas=vae_steps, estimators=VAE_ESTIMATORS, n_samples=vae_n, devices=devices),
        Sweep("discrete_vae", thetas=vae_steps, estimators=RECENT_DISCRETE, n_samples=vae_n, devices=devices),
    ]  # fmt: skip
    if full:
        sweeps.append(Sweep("discrete_vae", thetas=vae_steps, estimators=RELAXATIONS, n_samples=(10,), devices=devices,
                            estimator_params={"temperature": (0.1, 0.5, 1.0)}))  # fmt: skip
    return sweeps + _cartpole_sweeps(full, devices)


CARTPOLE_ESTIMATORS = ("reinforce_return", "reward_to_go", "constant_baseline", "value_baseline", "gae",
                       "score_function_loo", "grpo", "dr_grpo")  # fmt: skip


def _cartpole_sweeps(full: bool, devices: tuple[str, ...]) -> list[Sweep]:
    """CartPole's policy at its checkpoints, every estimator that applies to episodes, M = 200 estimates of N
    episodes: N = 10 by default (24 cells, about 55 s of CPU time with the references; a small rollout's time is
    mostly gymnasium's per-step overhead, so the cost measurement's minimum rounds dominate); ``full`` adds
    checkpoints, N = 5, 20 and 100, and GAE's λ from 0 to 1."""
    cartpole = make_problem("cartpole_policy").workload
    steps = tuple(map(float, cartpole.full_checkpoints if full else cartpole.checkpoints))
    sweeps = [Sweep("cartpole_policy", thetas=steps, estimators=CARTPOLE_ESTIMATORS,
                    n_samples=(5, 10, 20, 100) if full else (10,), devices=devices, replicates=200)]  # fmt: skip
    if full:
        sweeps.append(Sweep("cartpole_policy", thetas=steps, estimators=("gae",), n_samples=(20,), devices=devices,
                            replicates=200, estimator_params={"lambda": (0.0, 0.5, 0.9, 1.0)}))  # fmt: skip
    return sweeps


def preset(name: str, devices: tuple[str, ...] = ("cpu",)) -> list[Sweep]:
    """Named sweeps: ``default`` (make bench, <= 10 min on 2 cores), ``quick`` (make quick, <= 1 min), ``ci``
    (the regression gate's fixed grid) and ``full`` (default plus the larger discrete, variance-reduction,
    implicit-reparameterisation and dimension grids; well over 10 minutes)."""
    if name == "default":
        common = {"devices": devices, "n_samples": (1, 10, 100, 1000), "estimators": PRESET_ESTIMATORS}
        return [
            Sweep("seed_dependent", thetas=(0.0, 1.0, 2.0, 3.0), **common),
            Sweep("seed_fixed", thetas=(1.0, 3.0), **common),
            *_gaussian_sweeps(**common),
            *_discrete_sweeps(**common),
            *_policy_sweeps(**common),
            *_variance_reduction_sweeps(**common),
            *_implicit_sweeps(**common),
            *_dimension_sweeps(**common),
            *_workload_sweeps(**common),
        ]
    if name == "full":
        # Everything in default, plus the larger discrete grid (θ sweeps, temperatures, RELAX's budget), every
        # estimator under every variance-reduction scheme, and larger implicit and dimension grids.
        common = {"devices": devices, "n_samples": (1, 10, 100, 1000), "estimators": PRESET_ESTIMATORS}
        return [*preset("default", devices), *_discrete_sweeps(full=True, **common),
                *_variance_reduction_sweeps_full(devices=devices), *_implicit_sweeps(full=True, **common),
                *_dimension_sweeps(full=True, **common), *_workload_sweeps(full=True, **common)]  # fmt: skip
    if name == "quick":
        common = {"devices": devices, "n_samples": (1, 10, 100), "estimators": PRESET_ESTIMATORS}
        return [
            Sweep("seed_dependent", thetas=(1.0, 3.0), **common),
            Sweep("seed_fixed", thetas=(3.0,), **common),
            Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, **common),
            Sweep("gaussian_quadratic", thetas=(1.0,), wrt="sigma", params={"k": (1.0,)}, **common),
        ]
    if name == "ci":
        # The regression gate's grid (make regress / make baseline): fixed M so a baseline and a new run have
        # the same precision; covers the biased naive baseline, heavy-tailed score-function estimates, both
        # Gaussian parameters, the measure-valued estimator and the discrete estimators on the REBAR toy.
        # A few minutes with the speed runs.
        common = {"devices": ("cpu",), "n_samples": (10, 1000), "replicates": 2000, "estimators": CI_ESTIMATORS}
        return [
            Sweep("bernoulli_toy", thetas=(0.0,), wrt="logit", params={"t": (0.45,)}, **common),
            Sweep("seed_dependent", thetas=(1.0, 3.0), **common),
            Sweep("seed_fixed", thetas=(3.0,), **common),
            Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, **common),
            Sweep("gaussian_quadratic", thetas=(1.0,), wrt="sigma", params={"k": (1.0,)}, **common),
            Sweep("gaussian_exp", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, **common),
        ]
    raise GridError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")


PRESETS = ("default", "quick", "ci", "full")

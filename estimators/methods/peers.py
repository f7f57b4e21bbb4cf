"""Peer libraries' gradient estimators, run on the same problems and through the same ``estimate()``.

Optional: ``pip install -e '.[peers]'`` installs Pyro and Storchastic. Each peer registers its estimators only
when it imports; otherwise ``PEER_STATUS`` says why it is missing (``varbench list`` and the report's Environment
section print it), so a peer that fails to install is reported, not hidden.

Every peer estimator is a surrogate with the suite's signature: θ holds M replicates, the peer draws N samples
per replicate in one vectorised call (Pyro: two nested ``pyro.plate``\\ s; Storchastic: a plate over the
replicates plus the method's sample plate), and the surrogate's gradient w.r.t. θ is Σ_m Σ_n of the per-sample
estimates, which ``estimate()`` divides by N.

Pyro (``pyro_*``): guide and model sample the site ``z`` from the problem's own ``torch.distributions`` object at
θ, and the model adds ``pyro.factor("cost", f_θ(z))``, so the ELBO is E_q[f] exactly and −loss is the surrogate.

- ``pyro_trace_elbo``: ``Trace_ELBO`` with z reparameterised. Model and guide use the same θ, so
  log p(z_θ) − log q(z_θ) cancels identically and the gradient is ∂_θ f_θ(g_θ(ε)) — our ``pathwise``.
- ``pyro_tracegraph_elbo``: ``TraceGraph_ELBO`` with z marked non-reparameterised (``has_rsample`` False), so
  Pyro adds log q(z) · downstream cost, with the downstream cost Rao–Blackwellised per plate element: f(z) at
  that (n, m). TraceGraph drops the guide's entropy term for non-reparameterised sites (its expected score is 0);
  a model sharing θ would then add its own score ∂_θ log p_θ(z) to every sample (unbiased, but not REINFORCE),
  so the model sees θ detached (identical values, log p − log q still 0). The gradient is f ∂log q + ∂f — our
  ``score_function``.
- ``pyro_tracegraph_elbo_avg_baseline``: the same with Pyro's decaying-average baseline
  (``use_decaying_avg_baseline``, β = 0.9), b ← β b + (1 − β) f per plate element. That average is state Pyro
  keeps in its global param store across steps. Carrying it across our calls would make a cell's numbers depend
  on what ran before it and break when M changes, so each call runs in a fresh, private param-store scope and
  first takes ``BASELINE_WARMUP_STEPS`` forward passes (no gradients) on fresh samples to bring the average to
  its running state (its mean is (1 − β^K) E[f]); the measured pass then uses an average that is independent of
  its own samples, so it stays unbiased. The warm-up passes are part of the call and so of its measured time
  (``cost_evaluations`` counts them): in training they would be amortised over steps.

TraceGraph_ELBO has no public ``differentiable_loss`` in Pyro 1.9 (only ``loss_and_grads``, which calls
``backward`` itself), so its surrogate comes from the ``_loss_and_surrogate_loss`` that ``loss_and_grads`` uses.

Storchastic (``storch_*``): θ is denoted independent over the replicates, the method samples N values per
replicate, ``f_θ(z)`` is registered as the cost, and ``storch.inference.surrogate_loss()`` (what
``storch.backward()`` differentiates) is the surrogate; it averages over both plates, so it is scaled by M·N.

- ``storch_reparameterization``: ``storch.method.Reparameterization``, our ``pathwise``.
- ``storch_score_function``: ``storch.method.ScoreFunction`` without baseline, our ``score_function``.
"""

from __future__ import annotations

import importlib.metadata
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..core.estimator import Estimator
from ..core.problem import Problem
from .basic import needs_rsample

BASELINE_WARMUP_STEPS = 20
BASELINE_BETA = 0.9

PEER_ESTIMATORS: dict[str, Estimator] = {}
# peer -> "ok (<dist> <version>)" or why it is unavailable; shown by `varbench list` and in the report.
PEER_STATUS: dict[str, str] = {}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _failure(error: BaseException) -> str:
    kind = "not installed" if isinstance(error, ModuleNotFoundError) else "fails to import"
    return f"{kind}: {type(error).__name__}: {error} (pip install -e '.[peers]')"


# ---------------------------------------------------------------------------------------------------------
# Pyro.

try:
    import pyro
    from pyro.distributions.torch_distribution import TorchDistribution
    from pyro.infer import Trace_ELBO, TraceGraph_ELBO
except Exception as error:  # noqa: BLE001 - any import failure is reported, not raised
    pyro = None
    PEER_STATUS["pyro"] = _failure(error)
else:
    PEER_STATUS["pyro"] = f"ok (pyro-ppl {_version('pyro-ppl')})"

    class _PyroSite(TorchDistribution):
        """A ``torch.distributions`` object as a Pyro site; ``reparameterized=False`` hides its rsample, so
        Pyro samples with ``.sample()`` and treats the site with the score function."""

        arg_constraints: dict = {}

        def __init__(self, base: Distribution, reparameterized: bool):
            self.base = base
            self._reparameterized = reparameterized and base.has_rsample
            super().__init__(base.batch_shape, base.event_shape, validate_args=False)

        @property
        def has_rsample(self) -> bool:
            return self._reparameterized

        @property
        def support(self):
            return self.base.support

        def sample(self, sample_shape=torch.Size()) -> Tensor:
            return self.base.sample(sample_shape)

        def rsample(self, sample_shape=torch.Size()) -> Tensor:
            return self.base.rsample(sample_shape)

        def log_prob(self, value: Tensor) -> Tensor:
            return self.base.log_prob(value)

    def _site(problem: Problem, theta: Tensor, n_samples: int, reparameterized: bool) -> _PyroSite:
        dist = problem.distribution(theta)
        return _PyroSite(dist.expand(torch.Size((n_samples,)) + dist.batch_shape), reparameterized)

    def _model_and_guide(
        problem: Problem, theta: Tensor, n_samples: int, *, reparameterized: bool, infer: dict | None = None
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        (replicates,) = theta.shape
        guide_site = _site(problem, theta, n_samples, reparameterized)
        # See the module docstring: TraceGraph (non-reparameterised) needs the model's θ detached, Trace_ELBO
        # (reparameterised) needs it shared so log p − log q cancels along the path.
        model_site = guide_site if reparameterized else _site(problem, theta.detach(), n_samples, reparameterized)

        def plates():
            return pyro.plate("replicates", replicates, dim=-1), pyro.plate("samples", n_samples, dim=-2)

        def model() -> None:
            over_replicates, over_samples = plates()
            with over_replicates, over_samples:
                z = pyro.sample("z", model_site)
                pyro.factor("cost", problem.cost(z, theta))

        def guide() -> None:
            over_replicates, over_samples = plates()
            with over_replicates, over_samples:
                pyro.sample("z", guide_site, infer=dict(infer or {}))

        return model, guide

    def pyro_trace_elbo(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        """ĝ = ∂_θ f_θ(g_θ(ε)): −Trace_ELBO.differentiable_loss with z reparameterised (Pyro's pathwise)."""
        model, guide = _model_and_guide(problem, theta, n_samples, reparameterized=True)
        return -Trace_ELBO(max_plate_nesting=2).differentiable_loss(model, guide)

    def _tracegraph_surrogate(model, guide) -> Tensor:
        _, surrogate_loss = TraceGraph_ELBO(max_plate_nesting=2)._loss_and_surrogate_loss(model, guide, (), {})
        return -surrogate_loss

    def pyro_tracegraph_elbo(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        """ĝ = f_θ(z) ∂_θ log q_θ(z) + ∂_θ f_θ(z): TraceGraph_ELBO's surrogate, z non-reparameterised."""
        model, guide = _model_and_guide(problem, theta, n_samples, reparameterized=False)
        return _tracegraph_surrogate(model, guide)

    def pyro_tracegraph_elbo_avg_baseline(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        """ĝ = (f − b) ∂_θ log q + ∂_θ f, b Pyro's decaying average of f (β = 0.9) after a private warm-up."""
        infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": BASELINE_BETA}}
        with pyro.get_param_store().scope():  # a private store: no baseline state leaks into or out of a call
            with torch.no_grad():
                for _ in range(BASELINE_WARMUP_STEPS):
                    model, guide = _model_and_guide(problem, theta, n_samples, reparameterized=False, infer=infer)
                    _tracegraph_surrogate(model, guide)
            model, guide = _model_and_guide(problem, theta, n_samples, reparameterized=False, infer=infer)
            return _tracegraph_surrogate(model, guide)

    PEER_ESTIMATORS.update(
        {
            e.name: e
            for e in (
                Estimator(
                    "pyro_trace_elbo",
                    pyro_trace_elbo,
                    "Pyro Trace_ELBO, z reparameterised: pathwise ∂f(g_θ(ε)) (peer of pathwise)",
                    skip_reason=needs_rsample,
                    vector_theta=False,
                ),
                Estimator(
                    "pyro_tracegraph_elbo",
                    pyro_tracegraph_elbo,
                    "Pyro TraceGraph_ELBO, z non-reparameterised: f ∂log q + ∂f (peer of score_function)",
                    vector_theta=False,
                ),
                Estimator(
                    "pyro_tracegraph_elbo_avg_baseline",
                    pyro_tracegraph_elbo_avg_baseline,
                    f"Pyro TraceGraph_ELBO with its decaying-average baseline (β={BASELINE_BETA:g}), warmed up "
                    f"{BASELINE_WARMUP_STEPS} passes in a private param store per call",
                    cost_evaluations=lambda problem: 1 + BASELINE_WARMUP_STEPS,
                    vector_theta=False,
                ),
            )
        }
    )


# ---------------------------------------------------------------------------------------------------------
# Storchastic.

try:
    import storch
    from storch.method import Reparameterization, ScoreFunction
except Exception as error:  # noqa: BLE001
    storch = None
    PEER_STATUS["storchastic"] = _failure(error)
else:
    PEER_STATUS["storchastic"] = f"ok (storchastic {_version('storchastic')})"

    def _storch_surrogate(method, problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        (replicates,) = theta.shape
        storch.reset()  # storchastic keeps registered costs in module state; start clean
        try:
            indep_theta = storch.denote_independent(theta, 0, "replicates")
            z = method(problem.distribution(indep_theta))
            storch.add_cost(problem.cost(z, indep_theta), "cost")
            surrogate = storch.inference.surrogate_loss()
        finally:
            storch.reset()
        # surrogate_loss() averages over the replicate and sample plates.
        surrogate = surrogate._tensor if isinstance(surrogate, storch.Tensor) else surrogate
        return surrogate * (replicates * n_samples)

    def storch_reparameterization(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        """ĝ = ∂_θ f_θ(g_θ(ε)): storch.method.Reparameterization (Storchastic's pathwise)."""
        return _storch_surrogate(Reparameterization("z", n_samples=n_samples), problem, theta, n_samples)

    def storch_score_function(problem: Problem, theta: Tensor, n_samples: int) -> Tensor:
        """ĝ = f ∂_θ log p + ∂_θ f: storch.method.ScoreFunction without a baseline."""
        method = ScoreFunction("z", n_samples=n_samples, baseline_factory="None")
        return _storch_surrogate(method, problem, theta, n_samples)

    PEER_ESTIMATORS.update(
        {
            e.name: e
            for e in (
                Estimator(
                    "storch_reparameterization",
                    storch_reparameterization,
                    "Storchastic Reparameterization: pathwise (peer of pathwise)",
                    skip_reason=needs_rsample,
                    vector_theta=False,
                ),
                Estimator(
                    "storch_score_function",
                    storch_score_function,
                    "Storchastic ScoreFunction, no baseline: f ∂log p + ∂f (peer of score_function)",
                    vector_theta=False,
                ),
            )
        }
    )

__all__ = ["PEER_ESTIMATORS", "PEER_STATUS", "BASELINE_WARMUP_STEPS"]

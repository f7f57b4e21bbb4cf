"""Real workloads: the gradient of a model's objective w.r.t. a whole parameter vector φ, at checkpoints of a
short training run, instead of a scalar θ.

A workload hands the estimators the same two things a scalar problem does — a ``Problem`` whose
``distribution(θ)`` and ``cost(x, θ)`` define E_{p_θ}[f] — where θ is now a function of the replicated
parameter vector (``to_theta``: φ[M, P] -> the distribution's parameters), so every surrogate of
``gradient_estimators`` and ``discrete_estimators`` runs unchanged and autograd carries ∂/∂θ back to φ. The
part of the objective computed exactly (the analytic KL or entropy) is added to every estimate; it moves the
mean, never the variance.

Ground truth is per workload (``Workload.ground_truth``): Gauss–Hermite quadrature of one-dimensional
marginals for ``bayes_logreg``, enumeration of every latent configuration for ``discrete_vae``; each comes
with its own error bound, which the bias test adds to the estimate's standard error.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..methods import get_estimator
from .base import Workload, WorkloadError
from .bayes_logreg import BAYES_LOGREG
from .discrete_vae import DISCRETE_VAE

WORKING_MEMORY = 1 << 28  # bytes per vectorised call; a workload sample holds a whole data set's activations


_EXACT_TERMS: dict[tuple[str, int], Tensor] = {}


def _exact_term(workload: Workload, step: int) -> Tensor:
    """The exactly computed term's gradient at a checkpoint, once per process (not inside every timed call)."""
    key = (workload.name, step)
    if key not in _EXACT_TERMS:
        _EXACT_TERMS[key] = workload.exact_term_gradient(workload.parameters(step))
    return _EXACT_TERMS[key]


def estimate_workload(
    workload: Workload,
    estimator: str,
    step: int,
    n_samples: int,
    n_replicates: int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    options: Mapping[str, float] | None = None,
    memory_budget: int = WORKING_MEMORY,
) -> Tensor:
    """``n_replicates`` independent estimates [M, P] of the objective's gradient w.r.t. φ at ``step``, each from
    ``n_samples`` samples. Replicates are copies of φ in a batch dimension (one backward pass gives them all),
    in calls sized to ``memory_budget``. Draws from torch's global generator: seed it for reproducible numbers."""
    if n_samples < 1:
        raise WorkloadError(f"n_samples must be >= 1, got {n_samples}")
    if n_replicates < 1:
        raise WorkloadError(f"n_replicates must be >= 1, got {n_replicates}")
    reason = workload.skip_reason(estimator, n_samples)
    if reason:
        raise WorkloadError(reason)
    spec = workload.estimators[estimator]
    # Options (REBAR's temperature and η, RELAX's budget, …) resolve against the shared registry's defaults.
    resolved = get_estimator(estimator.split("+")[0]).resolve_options(options)
    step = workload.check_step(step)
    phi = workload.parameters(step).to(device=device, dtype=dtype)
    exact = _exact_term(workload, step).to(device=device, dtype=dtype)
    per_call = max(1, memory_budget // (workload.bytes_per_sample * n_samples))
    pieces = []
    for start in range(0, n_replicates, per_call):
        size = min(per_call, n_replicates - start)
        replicated = phi.expand(size, -1).clone().requires_grad_(True)
        surrogate = spec.surrogate(workload.problem(step), workload.to_theta(replicated), n_samples, **resolved)
        # No path from φ to the surrogate (naive autograd through .sample()): autograd's gradient is 0.
        grad = torch.autograd.grad(surrogate.sum(), replicated)[0] if surrogate.requires_grad else torch.zeros_like(replicated)
        pieces.append(grad.detach() * (workload.surrogate_scale / n_samples) + exact)
    return torch.cat(pieces)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (BAYES_LOGREG, DISCRETE_VAE)}


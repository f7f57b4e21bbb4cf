"""Real workloads: problems whose θ is a parameter vector φ — a model's, at checkpoints of a short training run.

A workload hands the estimators what a scalar problem does — a ``Problem`` whose ``distribution(θ)`` and
``cost(x, θ)`` define E_{p_θ}[f] — with θ a function of the replicated parameter vector (``to_theta``: φ [M, P]
-> the distribution's parameters), so every registered estimator that applies runs unchanged (a user's too),
through the same ``estimate``, and autograd carries ∂/∂θ back to φ. The part of the objective computed exactly
(the analytic KL or entropy) is added to every estimate; it moves the mean, never the variance.

Ground truth is per workload (``Workload.ground_truth``): quadrature of one-dimensional marginals for
``bayes_logreg``, enumeration of every latent configuration for ``discrete_vae``; each comes with its own error
bound, which the bias test adds to the estimate's standard error. Both register in ``estimators.problems.PROBLEMS``
with the tag ``workload``.

``cartpole_policy`` is episodic: its samples are episodes of an environment (``Problem.episodes``), so only the
estimators that declare they apply to episodic problems run on it; its ground truth is a high-precision reference
estimate with its standard error.
"""

from __future__ import annotations

from .bayes_logreg import FAMILY as BAYES_LOGREG_FAMILY
from .cartpole import FAMILY as CARTPOLE_FAMILY
from .discrete_vae import FAMILY as DISCRETE_VAE_FAMILY

FAMILIES = (BAYES_LOGREG_FAMILY, DISCRETE_VAE_FAMILY, CARTPOLE_FAMILY)

__all__ = ["FAMILIES"]

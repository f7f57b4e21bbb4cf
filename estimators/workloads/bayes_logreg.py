"""``bayes_logreg``: Bayesian logistic regression on scikit-learn's breast-cancer data (Mohamed et al. 2020 §8.3).

569 patients, 30 standardised features plus a bias column (D = 31), labels y ∈ {0, 1}; prior w ~ N(0, I);
variational posterior q(w) = N(m, diag(exp(2s))). φ = (m, s), P = 62. The ELBO is

    ELBO(φ) = E_q[log p(y | X, w)] − KL(q ‖ N(0, I)),   log p(y | X, w) = Σ_i y_i a_i − softplus(a_i),  a = Xw.

The estimators estimate the gradient of the expected log-likelihood (the Monte Carlo part); the KL is analytic
(torch.distributions.kl_divergence) and its gradient is added to every estimate.

Ground truth without sampling: a_i = x_iᵀw is Gaussian under q, a_i ~ N(x_iᵀm, Σ_j x_ij² exp(2s_j)), so each
E_q[softplus(a_i)] is a one-dimensional Gaussian integral, computed by quadrature (the trapezoidal rule on a fine
uniform grid) in float64 and differentiated by autograd (the nodes are fixed, so the gradient of the rule is
the rule applied to the gradient). Its error is bounded by the change when the grid step doubles; ``tests/test_workloads.py`` also checks it
against a 2^20-sample pathwise reference and its confidence interval.

Checkpoints: Adam (learning rate 0.05) on that gradient (by a coarser rule) from the prior (m = 0, s = 0), 500 steps
(2000 in the full preset);
deterministic, so every process (or Dask worker) reconstructs the same φ at every step.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence
from torch.nn.functional import softplus

from ..core.problem import Problem, Workload
from .base import TrainingRun, checkpoint_problem, workload_family

TRAIN_STEPS = 2000  # the full preset's last checkpoint; make bench trains only to its own (500)
LEARNING_RATE = 0.05
CHECKPOINTS = (0, 50, 500)
FULL_CHECKPOINTS = (0, 10, 50, 100, 200, 500, 1000, 2000)
# The trapezoidal rule on a uniform grid converges geometrically for integrands analytic in a strip, here
# softplus(μ + s t) φ(t), whose nearest singularities sit π/s off the real axis: its error is ~exp(−2π²/(s h)).
# The widest marginal has s ≈ 22 at initialisation (outlying patients), so h = 0.025 leaves ~1e-15 relative;
# Gauss–Hermite with 192 nodes erred by 2e-2 there. Beyond |t| = 12 the Gaussian weight is < 1e-31.
QUADRATURE_STEP = 0.025
# The optimisation only has to be deterministic, not exact: it uses a 10× coarser rule, 10× fewer nodes.
TRAINING_QUADRATURE_STEP = 0.25
QUADRATURE_HALF_WIDTH = 12.0


@functools.lru_cache(maxsize=None)
def data() -> tuple[Tensor, Tensor]:
    """(X [569, 31] standardised features and a bias column, y [569] in {0, 1}), float64."""
    from sklearn.datasets import load_breast_cancer  # ships with scikit-learn: nothing is downloaded

    features, labels = load_breast_cancer(return_X_y=True)
    standardised = (features - features.mean(axis=0)) / features.std(axis=0)
    design = np.hstack([standardised, np.ones((len(features), 1))])
    return torch.from_numpy(design), torch.from_numpy(labels.astype(np.float64))


def dimension() -> int:
    return data()[0].shape[1]


def split(phi: Tensor) -> tuple[Tensor, Tensor]:
    """φ [..., 2D] -> (mean m [..., D], log-scale s [..., D])."""
    d = phi.shape[-1] // 2
    return phi[..., :d], phi[..., d:]


def variational(phi: Tensor) -> Independent:
    m, s = split(phi)
    return Independent(Normal(m, s.exp()), 1)


def log_likelihood(w: Tensor) -> Tensor:
    """log p(y | X, w) for weights w [..., D] -> [...]."""
    design, labels = data()
    logits = w @ design.to(w).T
    return (labels.to(w) * logits - softplus(logits)).sum(dim=-1)


@functools.lru_cache(maxsize=None)
def _quadrature_rule(step: float) -> tuple[Tensor, Tensor]:
    """Nodes t and weights h·φ(t) of the trapezoidal rule on [−QUADRATURE_HALF_WIDTH, QUADRATURE_HALF_WIDTH]."""
    t = torch.arange(-QUADRATURE_HALF_WIDTH, QUADRATURE_HALF_WIDTH + step / 2, step, dtype=torch.float64)
    return t, step * torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)


def expected_log_likelihood(phi: Tensor, step: float = QUADRATURE_STEP) -> Tensor:
    """E_q[log p(y | X, w)] by quadrature of each a_i's Gaussian marginal (float64)."""
    design, labels = data()
    m, s = split(phi)
    mean = m @ design.T  # [..., 569]
    sd = ((2 * s).exp() @ (design**2).T).sqrt()  # Var(a_i) = Σ_j x_ij² σ_j²
    t, weights = _quadrature_rule(step)
    expected_softplus = (softplus(mean.unsqueeze(-1) + sd.unsqueeze(-1) * t) * weights).sum(dim=-1)
    return (labels * mean - expected_softplus).sum(dim=-1)


def kl_to_prior(phi: Tensor) -> Tensor:
    m, _ = split(phi)
    prior = Independent(Normal(torch.zeros_like(m), torch.ones_like(m)), 1)
    return kl_divergence(variational(phi), prior)


def elbo(phi: Tensor, step: float = QUADRATURE_STEP) -> Tensor:
    return expected_log_likelihood(phi, step) - kl_to_prior(phi)


def elbo_gradient(phi: Tensor, step: float = QUADRATURE_STEP) -> Tensor:
    point = phi.detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(elbo(point, step), point)
    return grad


def kl_gradient(phi: Tensor) -> Tensor:
    """∂/∂φ of −KL(q ‖ prior): the exactly computed part of the ELBO's gradient, added to every estimate."""
    point = phi.detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(-kl_to_prior(point), point)
    return grad


def _training_loss(state: dict[str, Tensor], step: int) -> Tensor:
    return -elbo(state["phi"], TRAINING_QUADRATURE_STEP)


# Adam on the ELBO's gradient (coarse quadrature) from the prior, m = 0, s = 0.
TRAINING = TrainingRun(lambda: {"phi": torch.zeros(2 * dimension(), dtype=torch.float64)}, _training_loss,
                       LEARNING_RATE, TRAIN_STEPS)  # fmt: skip


def parameters(step: int) -> Tensor:
    return TRAINING[step]["phi"]


@functools.lru_cache(maxsize=None)
def exact_gradient(step: int) -> tuple[Tensor, Tensor]:
    """(ELBO gradient by quadrature, its error bound: the change when the grid step halves, floored at float64
    rounding of a 569-term sum, 1e-12 relative)."""
    phi = parameters(step)
    coarse = elbo_gradient(phi, 2 * QUADRATURE_STEP)
    grad = elbo_gradient(phi, QUADRATURE_STEP)
    return grad, torch.maximum((grad - coarse).abs(), 1e-12 * (1 + grad.abs()))


def objective(step: int) -> float:
    return float(elbo(parameters(step)))


# ---------------------------------------------------------------------------------------------------------
# The delta-method control variate (Mohamed et al. 2020 §7.2, as used in §8.3) for a vector of weights:
# h(w) = f(m) + ∇f(m)ᵀ(w − m) + ½ (w − m)ᵀ H(m) (w − m), whose mean under q is f(m) + ½ Σ_j H_jj(m) σ_j²
# in closed form, with H(m) = −Xᵀ diag(σ'(Xm)) X for the logistic log-likelihood.


def _expected_taylor(phi: Tensor) -> Tensor:
    """E_q[h] = f(m₀) + ∇f(m₀)ᵀ(m − m₀) + ½ Σ_j H_jj(m₀) σ_j² (+ a term quadratic in m − m₀, zero with its
    gradient at m = m₀), for the expansion point m₀ = m held fixed: differentiated, it gives ∇f(m₀) for the
    means and H_jj(m₀) σ_j² for the log-scales, the exact gradient of the control's mean."""
    design, _ = data()
    m, s = split(phi)
    logits = m.detach() @ design.to(m).T
    curvature = torch.sigmoid(logits) * torch.sigmoid(-logits)  # σ'(a) = σ(a)(1 − σ(a))
    hessian_diagonal = -(curvature @ (design.to(m) ** 2))  # H_jj = −Σ_i σ'(a_i) x_ij²
    # log_likelihood(m) has the value f(m₀) and the gradient ∇f(m₀) at m = m₀.
    return log_likelihood(m) + 0.5 * (hessian_diagonal * (2 * s).exp()).sum(dim=-1)


def _taylor(phi: Tensor, w: Tensor) -> Tensor:
    """h(w) for samples w [N, M, D] around the (detached) means of φ [M, 2D]."""
    design, _ = data()
    x = design.to(w)
    m = split(phi.detach())[0]
    logits = m @ x.T  # [M, 569]
    probabilities = torch.sigmoid(logits)
    gradient = (data()[1].to(w) - probabilities) @ x  # ∇f(m) = Xᵀ(y − σ(Xm)), [M, D]
    curvature = probabilities * (1 - probabilities)
    delta = w - m
    projected = delta @ x.T  # (w − m)ᵀ x_i, [N, M, 569]
    quadratic = -(curvature * projected**2).sum(dim=-1)  # (w − m)ᵀ H (w − m)
    return log_likelihood(m) + (gradient * delta).sum(dim=-1) + 0.5 * quadratic


def delta_method(theta: Tensor, dist) -> tuple:
    """This problem's delta-method control variate (the ``delta_cv`` scheme): h, and E_q[h] differentiable in φ."""
    return (lambda w: _taylor(theta, w)), _expected_taylor(theta)


SUMMARY = ("Bayesian logistic regression, breast-cancer data (569 × 31), N(0, I) prior, diagonal-Gaussian q; "
           "ELBO gradient w.r.t. the 31 means and 31 log-scales (Mohamed et al. §8.3)")
GROUND_TRUTH = (f"no closed form: quadrature (trapezoidal rule, step {QUADRATURE_STEP}) of each logit's Gaussian "
                "marginal, differentiated by autograd in float64; KL analytic. Its error bound (the change when the "
                "step doubles) is in true_grad_se; a 2^20-sample pathwise reference agrees within its interval "
                "(tests)")  # fmt: skip


@functools.lru_cache(maxsize=None)
def at_checkpoint(step: int) -> Problem:
    """w ~ q_φ, f = log p(y | X, w): the same distribution and cost at every checkpoint (θ = φ itself)."""
    return checkpoint_problem("bayes_logreg", "w ~ N(m, diag(exp(2s))), f = log p(y | X, w)", "m,log_s", variational,
                              lambda w, theta: log_likelihood(w), cost_is_differentiable=True, workload=BAYES_LOGREG,
                              step=step, gradient_formula=GROUND_TRUTH, control_variate=delta_method)  # fmt: skip


BAYES_LOGREG = Workload(
    n_params=62,
    train_steps=TRAIN_STEPS,
    checkpoints=CHECKPOINTS,
    full_checkpoints=FULL_CHECKPOINTS,
    at=at_checkpoint,
    parameters=parameters,
    to_theta=lambda phi: phi,
    exact_gradient=exact_gradient,
    objective=objective,
    ground_truth=GROUND_TRUTH,
    exact_term_gradient=kl_gradient,
    # ~8 values per data point per sample (logits, softplus, their gradients), float32.
    bytes_per_sample=8 * 569 * 4,
)

FAMILY = workload_family("bayes_logreg", SUMMARY, "m,log_s", BAYES_LOGREG,
                         default_estimators=("pathwise", "score_function", "score_function_loo", "measure_valued"))  # fmt: skip

"""``discrete_vae``: a small VAE with Bernoulli latents on scikit-learn's 8×8 digits, binarised.

1797 images x ∈ {0, 1}^64 (pixel intensity ≥ 8 of 16). K = 8 Bernoulli latents; encoder q(z | x) =
Bernoulli(σ(xW + b)) (φ = (W, b), P = 64·8 + 8 = 520: the gradient measured); decoder p(x | z) =
Bernoulli(σ(zV + c)) and prior p(z) = Bernoulli(σ(π)), held fixed at each checkpoint. The ELBO per image is

    ELBO(x) = E_q[f_x(z)] + H[q(· | x)],   f_x(z) = log p(x | z) + log p(z),

averaged over a fixed evaluation batch of 100 images (every 18th). The estimators estimate ∇_φ E_q[f] — the
encoder gradient that REINFORCE, RLOO, ARM, DisARM, REBAR, RELAX, Gumbel-softmax and straight-through differ
on — each image with its own N samples; the entropy is analytic and its gradient added to every estimate.

Ground truth is exact: with K = 8 there are 256 latent configurations, so E_q[f] is a finite sum, and autograd
of it (float64) is the exact encoder gradient, the relaxations' bias included.

Checkpoints: Adam (learning rate 0.02) on the exact ELBO (every parameter) of seeded random minibatches of
200 images, 300 steps from a seeded initialisation (2000 in the full preset); deterministic, so every process reconstructs the same φ.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Independent
from torch.nn.functional import logsigmoid, softplus

from ..core.problem import Problem, Workload
from .base import TrainingRun, checkpoint_problem, workload_family

LATENTS = 8
PIXELS = 64
TRAIN_STEPS = 2000  # the full preset's last checkpoint; make bench trains only to its own (300)
LEARNING_RATE = 0.02
TRAINING_BATCH = 200  # images per step: the exact ELBO of all 1797 per step would make the training run slow
CHECKPOINTS = (0, 30, 300)
FULL_CHECKPOINTS = (0, 10, 30, 100, 300, 1000, 2000)
EVALUATION_STRIDE = 18  # every 18th image: 100 images in the evaluation batch
INITIAL_SCALE = 0.1


@functools.lru_cache(maxsize=None)
def data() -> Tensor:
    """All 1797 binarised images [1797, 64], float64."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: nothing is downloaded

    return torch.from_numpy((load_digits().data >= 8).astype("float64"))


def evaluation_batch() -> Tensor:
    return data()[::EVALUATION_STRIDE]


def all_configurations(dtype: torch.dtype = torch.float64) -> Tensor:
    """Every z ∈ {0, 1}^K, [2^K, K]."""
    codes = torch.arange(2**LATENTS).unsqueeze(-1)
    return ((codes >> torch.arange(LATENTS)) & 1).to(dtype)


def _split_encoder(phi: Tensor) -> tuple[Tensor, Tensor]:
    """φ [..., 520] -> (W [..., 64, 8], b [..., 8])."""
    weights = phi[..., : PIXELS * LATENTS].reshape(*phi.shape[:-1], PIXELS, LATENTS)
    return weights, phi[..., PIXELS * LATENTS :]


def encoder_logits(phi: Tensor, images: Tensor) -> Tensor:
    """Logits of q(z | x) for every image: φ [..., P], images [B, 64] -> [..., B, K]."""
    weights, bias = _split_encoder(phi)
    return images.to(phi) @ weights + bias.unsqueeze(-2)


def log_joint(z: Tensor, images: Tensor, decoder: dict[str, Tensor]) -> Tensor:
    """f_x(z) = log p(x | z) + log p(z) for z [..., B, K] (binary or relaxed in [0, 1]), images [B, 64] -> [..., B].

    Written with logsigmoid rather than Bernoulli.log_prob, which rejects the relaxed values Gumbel-softmax feeds it;
    both are linear in z, so a relaxed z gives the usual relaxed objective."""
    logits = z @ decoder["weight"].to(z) + decoder["bias"].to(z)
    x = images.to(z)
    likelihood = (x * logits - softplus(logits)).sum(dim=-1)
    prior = decoder["prior"].to(z)
    return likelihood + (z * logsigmoid(prior) + (1 - z) * logsigmoid(-prior)).sum(dim=-1)


def exact_expected_cost(logits: Tensor, images: Tensor, decoder: dict[str, Tensor]) -> Tensor:
    """E_q[f_x(z)] per image by enumerating all 2^K configurations: logits [B, K] -> [B]."""
    z = all_configurations(logits.dtype)  # [C, K]
    log_q = z @ logsigmoid(logits).T + (1 - z) @ logsigmoid(-logits).T  # [C, B]
    # f_x(z) is linear in x given z, so one [B, 64] × [64, C] product scores every image under every z.
    decoded = z @ decoder["weight"].to(z) + decoder["bias"].to(z)  # [C, 64]
    prior = decoder["prior"].to(z)
    log_prior = z @ logsigmoid(prior) + (1 - z) @ logsigmoid(-prior)  # [C]
    costs = images.to(z) @ decoded.T - softplus(decoded).sum(dim=-1) + log_prior  # [B, C]
    return (log_q.T.exp() * costs).sum(dim=-1)


def entropy(logits: Tensor) -> Tensor:
    return Independent(Bernoulli(logits=logits), 1).entropy()


def _initial_parameters() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    pixel_mean = data().mean(dim=0).clamp(0.01, 0.99)
    return {
        "encoder": INITIAL_SCALE * torch.randn(PIXELS * LATENTS + LATENTS, generator=generator, dtype=torch.float64),
        "weight": INITIAL_SCALE * torch.randn(LATENTS, PIXELS, generator=generator, dtype=torch.float64),
        "bias": torch.logit(pixel_mean),  # the decoder starts at the pixel means, as usual
        "prior": torch.zeros(LATENTS, dtype=torch.float64),
    }


def _elbo(state: dict[str, Tensor], images: Tensor) -> Tensor:
    logits = encoder_logits(state["encoder"], images)
    return (exact_expected_cost(logits, images, state) + entropy(logits)).mean()


def _training_loss(state: dict[str, Tensor], step: int) -> Tensor:
    # Each step's minibatch comes from a generator seeded by the step, so the run is the same however far it
    # has been advanced before.
    images = data()
    batch = images[torch.randint(len(images), (TRAINING_BATCH,), generator=torch.Generator().manual_seed(1 + step))]
    return -_elbo(state, batch)


# Adam on the exact ELBO of seeded random minibatches, every parameter, from a seeded initialisation.
TRAINING = TrainingRun(_initial_parameters, _training_loss, LEARNING_RATE, TRAIN_STEPS)


def parameters(step: int) -> Tensor:
    return TRAINING[step]["encoder"]


def _decoder(step: int) -> dict[str, Tensor]:
    return {k: v for k, v in TRAINING[step].items() if k != "encoder"}


@functools.lru_cache(maxsize=None)
def exact_gradient(step: int) -> tuple[Tensor, Tensor]:
    """(exact ∇_φ of the evaluation batch's mean ELBO by enumeration, its float64 rounding bound)."""
    phi = parameters(step).clone().requires_grad_(True)
    images = evaluation_batch()
    logits = encoder_logits(phi, images)
    (grad,) = torch.autograd.grad((exact_expected_cost(logits, images, _decoder(step)) + entropy(logits)).mean(), phi)
    return grad, 1e-12 * (1 + grad.abs())


RARE_EVENT_COUNT = 30.0


def unresolved_by_sampling(step: int, draws: int) -> Tensor:
    """Per encoder parameter, a bound on the part of an estimate's mean that ``draws`` samples per image cannot
    resolve.

    A trained encoder saturates latents (σ(η) within 1e-6 of 0 or 1 at step 300). Every unbiased estimator
    here gets part of its mean from the minority outcome of each (image, latent) pair, with probability m_bk =
    min(q, 1 − q); when a cell's N·M draws per image expect it fewer than ``RARE_EVENT_COUNT`` times (a Poisson
    count that small is too skewed for a z-test over 520 coordinates; 5 still gave false alarms), the sample
    mean misses it with a tiny sample variance, and a z-test calls an unbiased estimator biased (REINFORCE at
    step 300, N = 2: z = 845 on one weight). One outcome's weight in any estimator here is at most 2 max_z |f_b(z)|
    (f·(b − σ) for REINFORCE, a difference of two costs for RLOO, ARM, DisARM, REBAR, RELAX), so the missing part
    is at most 2 m_bk max_z |f_b(z)| per pair; this sums that bound over the rare pairs, per parameter and
    averaged over the batch like the gradient, and the bias test adds it to its uncertainty."""
    images = evaluation_batch()
    decoder = _decoder(step)
    logits = encoder_logits(parameters(step), images)
    z = all_configurations()
    largest_cost = log_joint(z.unsqueeze(1).expand(-1, images.shape[0], -1), images, decoder).abs().max(dim=0).values  # [B]
    q = torch.sigmoid(logits)
    minority = torch.minimum(q, 1 - q)
    rare = draws * minority < RARE_EVENT_COUNT
    blind = 2 * minority * largest_cost.unsqueeze(-1) * rare / images.shape[0]  # [B, K]
    return torch.cat([(images.T @ blind).flatten(), blind.sum(dim=0)])


def objective(step: int) -> float:
    images = evaluation_batch()
    logits = encoder_logits(parameters(step), images)
    return float((exact_expected_cost(logits, images, _decoder(step)) + entropy(logits)).mean())


def entropy_gradient(phi: Tensor) -> Tensor:
    point = phi.detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(entropy(encoder_logits(point, evaluation_batch())).mean(), point)
    return grad


SUMMARY = (f"VAE with {LATENTS} Bernoulli latents on binarised 8×8 digits (1797 images), linear encoder and decoder; "
           "ELBO gradient w.r.t. the encoder's 520 parameters on a 100-image batch")
GROUND_TRUTH = (f"exact: E_q[f] summed over all {2**LATENTS} latent configurations per image and differentiated by "
                "autograd in float64 (error: float64 rounding)")


@functools.lru_cache(maxsize=None)
def at_checkpoint(step: int) -> Problem:
    """The latent distribution (θ = encoder logits [..., B, K]) and the cost f_x(z) with the decoder at ``step``."""
    decoder = _decoder(step)
    images = evaluation_batch()
    return checkpoint_problem(
        "discrete_vae",
        f"z ~ Bernoulli(σ(xW + b))^{LATENTS}, f = log p(x | z) + log p(z), decoder at step {step}",
        "encoder",
        lambda logits: Independent(Bernoulli(logits=logits), 1),
        lambda z, theta: log_joint(z, images, decoder),
        cost_is_differentiable=True,
        workload=DISCRETE_VAE,
        step=step,
        gradient_formula=GROUND_TRUTH,
        params={"step": float(step)},
    )


DISCRETE_VAE = Workload(
    n_params=PIXELS * LATENTS + LATENTS,
    train_steps=TRAIN_STEPS,
    checkpoints=CHECKPOINTS,
    full_checkpoints=FULL_CHECKPOINTS,
    at=at_checkpoint,
    parameters=parameters,
    to_theta=lambda phi: encoder_logits(phi, evaluation_batch()),
    exact_gradient=exact_gradient,
    objective=objective,
    ground_truth=GROUND_TRUTH,
    exact_term_gradient=entropy_gradient,
    surrogate_scale=1.0 / len(range(0, 1797, EVALUATION_STRIDE)),  # the batch's mean ELBO
    # ~12 float32 values per pixel per image per sample (decoder logits, softplus, gradients; ×3 for REBAR).
    bytes_per_sample=12 * PIXELS * 100 * 4 * 3,
    unresolved_by_sampling=unresolved_by_sampling,
    unresolved_reason=f"latent outcomes expected fewer than {RARE_EVENT_COUNT:g} times in the cell's draws per image",
)

FAMILY = workload_family("discrete_vae", SUMMARY, "encoder", DISCRETE_VAE,
                         default_estimators=("score_function", "score_function_loo", "arm", "disarm", "gumbel_softmax",
                                             "straight_through", "rebar", "relax"))  # fmt: skip

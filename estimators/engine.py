"""``estimate``: M replicate estimates of dL/dθ in vectorised calls, sized from a memory budget."""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import torch
from torch import Tensor

from .core import random_streams
from .core.estimator import Estimator, EstimatorError, describe
from .core.problem import Problem
from .variance_reduction import compose


# Working memory of one vectorised call per sample, in values of the dtype: the sample, the cost, log-probabilities,
# autograd's saved tensors and gradients. Pathwise on the seed problem needs a few (`make perf` measures it);
# estimators with more intermediates (measure-valued pairs, relaxations) several times that: 64 bounds them all.
WORKING_VALUES_PER_SAMPLE = 64
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes per vectorised call
# Samples per call when an estimate's calls run on the CPU's threads, each from its own random stream: small
# enough that one call's tensors stay in cache and that an estimate has calls to overlap, large enough that
# per-call overhead stays small (the call sizes tried: docs/performance.md).
PARALLEL_CALL_SAMPLES = 1 << 19
# (estimator, problem) pairs seen drawing from torch's global generator inside a parallel call: run serially.
_GLOBAL_GENERATOR_USERS: set[tuple[str, str]] = set()


def check_surrogate(name: str, surrogate: object, n_samples: int, batch: tuple[int, ...]) -> None:
    """EstimatorError unless ``surrogate`` is what the signature promises (estimators/core/estimator.py): a floating
    tensor of shape [N, *batch] (one term per sample) or [*batch] (summed over the samples), ``batch`` the
    distribution's batch shape: θ's shape for a scalar θ, the replicates and a workload's data points else."""
    per_sample, summed = (n_samples, *batch), tuple(batch)
    if not isinstance(surrogate, Tensor):
        raise EstimatorError(f"estimator {name}: its surrogate must return a tensor of shape [N, *θ.shape] = "
                             f"{list(per_sample)} or [*θ.shape] = {list(summed)}, got {type(surrogate).__name__}")  # fmt: skip
    if tuple(surrogate.shape) not in (per_sample, summed):
        raise EstimatorError(f"estimator {name}: its surrogate returned shape {list(surrogate.shape)} for N = "
                             f"{n_samples} samples and θ of shape {list(summed)} (the replicates); expected "
                             f"[N, *θ.shape] = {list(per_sample)} or, summed over the samples, {list(summed)}")  # fmt: skip
    if not surrogate.is_floating_point():
        raise EstimatorError(f"estimator {name}: its surrogate must be floating-point, got dtype {surrogate.dtype}")


def plan_chunks(
    n_samples: int, n_replicates: int, bytes_per_sample: int, memory_budget: int, split_samples: bool
) -> tuple[int, int]:
    """(replicates per call, samples per call) so one call's working memory fits ``memory_budget``.

    Replicates are split first; when a single estimate's N samples do not fit, its samples are split too (its
    gradient is then a sum of partial sums), if the estimator's samples are independent.
    """
    samples_that_fit = max(1, memory_budget // bytes_per_sample)
    if n_samples <= samples_that_fit or not split_samples:
        return max(1, min(n_replicates, samples_that_fit // n_samples)), n_samples
    return 1, samples_that_fit


_EXACT_TERMS: dict[tuple[int, int], Tensor] = {}


def _exact_term(workload, step: int) -> Tensor | None:
    """A workload's exactly computed term's gradient at a checkpoint, once per process (not in every timed call)."""
    if workload.exact_term_gradient is None:
        return None
    key = (id(workload), step)
    if key not in _EXACT_TERMS:
        _EXACT_TERMS[key] = workload.exact_term_gradient(workload.parameters(step))
    return _EXACT_TERMS[key]


def estimate(
    estimator: Estimator,
    problem: Problem,
    theta: float,
    n_samples: int,
    n_replicates: int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    options: Mapping[str, float] | None = None,
    variance_reduction: str = "none",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    parallel: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Return ``n_replicates`` independent estimates of dL/dθ, each from ``n_samples`` samples: a tensor [M] for a
    scalar θ, [M, P] for a workload (θ = a training step; the gradient is w.r.t. its parameter vector).

    ``options`` override the estimator's parameters; ``variance_reduction`` names a scheme from
    ``VARIANCE_REDUCTIONS`` that is composed with the estimator. Replicates are independent copies of θ (of φ)
    in a batch dimension, so one backward pass per call gives all of them. Calls are sized by ``plan_chunks`` so
    each stays within ``memory_budget`` bytes of working memory, whatever M·N is.
    Seed torch's global generator for reproducible numbers. On CPU, a ``parallel_safe`` estimator's calls on a
    scalar problem (at most PARALLEL_CALL_SAMPLES samples each) run on torch's threads, each drawing from its own
    stream seeded from one draw of the global generator; the numbers are the same whatever the thread count.
    Everything else, and everything when ``parallel`` is False (calls sized by the budget alone, on this
    thread), draws from the global generator on ``device`` directly. ``progress``, if given, is called with the
    number of samples each call just finished (from the thread that ran it), e.g. to show progress in a long cell.
    """
    if n_samples < 1:
        raise EstimatorError(f"n_samples must be >= 1, got {n_samples}")
    if n_replicates < 1:
        raise EstimatorError(f"n_replicates must be >= 1, got {n_replicates}")
    if memory_budget < 1:
        raise EstimatorError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    problem.check_theta(theta)
    point = problem.at(theta)
    workload = point.workload
    resolved = estimator.resolve_options(options)
    surrogate_or_reason = compose(variance_reduction, estimator, point, n_samples)
    if isinstance(surrogate_or_reason, str):
        raise EstimatorError(
            f"{describe(estimator.name, resolved, variance_reduction)} does not apply to {point.label} "
            f"at N={n_samples}: {surrogate_or_reason}"
        )
    surrogate_fn = surrogate_or_reason
    if workload is None:
        start = torch.tensor(float(theta), dtype=dtype, device=device)
        to_theta, batch_tail, scale, exact = (lambda leaf: leaf), (), 1.0, None
        # Samples interact under a leave-one-out baseline or a variance-reduction scheme (antithetic pairs, QMC
        # points), so only plain independent-sample estimators may have one estimate's samples split.
        split = estimator.samples_independent and variance_reduction == "none"
        bytes_per_sample = WORKING_VALUES_PER_SAMPLE * torch.empty((), dtype=dtype).element_size()
    else:
        step = workload.check_step(theta)
        start = workload.parameters(step).to(dtype=dtype, device=device)
        to_theta, scale = workload.to_theta, workload.surrogate_scale
        batch_tail = tuple(point.distribution(to_theta(start[None])).batch_shape[1:])  # e.g. a VAE's images
        exact = _exact_term(workload, step)
        exact = None if exact is None else exact.to(dtype=dtype, device=device)
        split, bytes_per_sample = False, workload.bytes_per_sample

    def block(replicates: int, samples_per_call: int) -> Callable[[], Tensor]:
        """The estimates of ``replicates`` replicates, their samples drawn ``samples_per_call`` per call."""

        def run() -> Tensor:
            leaf = start.expand(replicates, *start.shape).clone().requires_grad_(True)
            theta_batch = to_theta(leaf)
            total = torch.zeros_like(leaf)
            for first in range(0, n_samples, samples_per_call):
                samples = min(samples_per_call, n_samples - first)
                surrogate = surrogate_fn(point, theta_batch, samples, **resolved)
                check_surrogate(estimator.name, surrogate, samples, (replicates, *batch_tail))
                # No path from θ to the surrogate (naive autograd on a cost without θ): autograd's gradient is 0.
                if surrogate.requires_grad:
                    (grad,) = torch.autograd.grad(surrogate.sum(), leaf, allow_unused=True)
                    if grad is not None:
                        total = total + grad.detach()
                if progress is not None:
                    progress(replicates * samples)
            estimates = total * (scale / n_samples)
            return estimates if exact is None else estimates + exact

        return run

    def blocks(budget: int) -> list[Callable[[], Tensor]]:
        replicates_per_call, samples_per_call = plan_chunks(n_samples, n_replicates, bytes_per_sample, budget, split)
        return [block(min(replicates_per_call, n_replicates - start), samples_per_call)
                for start in range(0, n_replicates, replicates_per_call)]  # fmt: skip

    key = (estimator.name, point.label)
    if parallel and workload is None and torch.device(device).type == "cpu" and estimator.parallel_safe \
            and variance_reduction == "none" and key not in _GLOBAL_GENERATOR_USERS:  # fmt: skip
        # Cache-sized calls, each from its own stream (random_streams), run on the CPU's threads: one call's
        # noise is drawn while another's arithmetic runs. The split depends only on N, M, dtype and the budget,
        # never on the thread count, so the numbers are the same on every machine. An estimate that is one
        # call anyway draws from the global generator directly: routing its draws through a TorchFunctionMode
        # has a fixed cost per call, which would tilt small cells' timings against these estimators.
        call_bytes = min(memory_budget, PARALLEL_CALL_SAMPLES * bytes_per_sample)
        tasks = blocks(call_bytes)
        if len(tasks) > 1:
            workers = min(torch.get_num_threads(), max(1, memory_budget // call_bytes))
            try:
                return torch.cat(random_streams.run_chunks(tasks, workers)).detach()
            except random_streams.GlobalGeneratorUsed as error:
                _GLOBAL_GENERATOR_USERS.add(key)
                warnings.warn(f"{estimator.name} on {point.label}: {error}; its estimates are drawn serially from "
                              "the global generator instead", RuntimeWarning, stacklevel=2)  # fmt: skip
    return torch.cat([run() for run in blocks(memory_budget)]).detach()

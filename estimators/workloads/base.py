"""A real workload's definition: what the estimators see of it and where its ground truth comes from.

See estimators/workloads/__init__.py for the registry and the estimation driver."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..core.problem import Problem, ProblemError
from ..core.random_streams import one_intra_op_thread


class TrainingRun:
    """A deterministic optimisation run (Adam on ``loss(state, step)``), advanced only as far as the checkpoints
    asked for so far require, and kept: step k's parameters are the same whichever checkpoint comes first, so
    ``make bench`` pays for its short checkpoints only and the ``full`` preset's longer runs extend the same one."""

    def __init__(self, initial: Callable[[], dict[str, Tensor]], loss: Callable[[dict[str, Tensor], int], Tensor],
                 learning_rate: float, steps: int):  # fmt: skip
        self._initial, self._loss, self._learning_rate, self.steps = initial, loss, learning_rate, steps
        self._history: list[dict[str, Tensor]] = []

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        if not 0 <= step <= self.steps:
            raise WorkloadError(f"training step must be in [0, {self.steps}], got {step}")
        if not self._history:
            self._state = {k: v.clone().requires_grad_(True) for k, v in self._initial().items()}
            self._optimiser = torch.optim.Adam(list(self._state.values()), lr=self._learning_rate)
            self._history.append({k: v.detach().clone() for k, v in self._state.items()})
        with one_intra_op_thread():  # small tensors: a second thread contending with another process only slows it
            while len(self._history) <= step:
                self._optimiser.zero_grad()
                self._loss(self._state, len(self._history) - 1).backward()
                self._optimiser.step()
                self._history.append({k: v.detach().clone() for k, v in self._state.items()})
        return self._history[step]


class WorkloadError(ProblemError):
    """An unknown workload, checkpoint or estimator; the message says what is allowed."""


@dataclass(frozen=True)
class WorkloadEstimator:
    """How one estimator runs on a workload: its surrogate (the shared signature) and its cost accounting."""

    surrogate: Callable[..., Tensor]
    cost_evaluations: int
    unbiased: bool
    min_samples: int = 1


@dataclass(frozen=True, eq=False)
class Workload:
    name: str
    summary: str
    wrt: str
    # How the exact gradient is obtained and how large its error is, for the report.
    ground_truth: str
    train_steps: int
    checkpoints: tuple[int, ...]  # the default sweep's steps: initialisation, mid-way, near convergence
    full_checkpoints: tuple[int, ...]  # the full preset's: more of them, and a longer run
    parameter_count: int
    estimators: Mapping[str, WorkloadEstimator]
    # step -> the distribution and cost the surrogates see at that checkpoint; θ = to_theta(φ)
    problem: Callable[[int], Problem]
    to_theta: Callable[[Tensor], Tensor]
    # step -> φ [P] (float64, on the CPU) after ``step`` optimisation steps.
    parameters: Callable[[int], Tensor]
    # step -> (exact gradient of the objective w.r.t. φ [P], its absolute error bound [P]), float64.
    exact_gradient: Callable[[int], tuple[Tensor, Tensor]]
    objective: Callable[[int], float]  # the objective (ELBO) at the checkpoint
    # φ [P] -> gradient of the exactly computed term, added to every estimate (float64 -> caller's dtype).
    exact_term_gradient: Callable[[Tensor], Tensor]
    # (step, draws per data point) -> per coordinate, the exact gradient mass carried by events the cell's draws
    # expect to see fewer than a handful of times (saturated discrete latents); None when there are none.
    unresolved_by_sampling: Callable[[int, int], Tensor] | None = None
    unresolved_reason: str = ""  # what those events are, for the row's note
    # Surrogate sums over these trailing axes are averaged, e.g. the images of a VAE's evaluation batch.
    surrogate_scale: float = 1.0
    bytes_per_sample: int = 64 * 1024

    @property
    def estimator_names(self) -> tuple[str, ...]:
        """The registry names of the estimators it runs (variance-reduced variants by their base name)."""
        return tuple(dict.fromkeys(name.split("+")[0] for name in self.estimators))

    def check_step(self, step: float) -> int:
        if not isinstance(step, (int, float)) or not math.isfinite(step) or step != int(step):
            raise WorkloadError(f"the checkpoint (theta) of {self.name} is a training step, an integer; got {step!r}")
        if not 0 <= step <= self.train_steps:
            raise WorkloadError(
                f"the checkpoint (theta) of {self.name} must be a training step in [0, {self.train_steps}], got {step:g}"
            )
        return int(step)

    def skip_reason(self, estimator: str, n_samples: int) -> str | None:
        spec = self.estimators.get(estimator)
        if spec is None:
            return f"{estimator} is not run on {self.name} (it runs {', '.join(self.estimators)})"
        if n_samples < spec.min_samples:
            return f"{estimator} needs N >= {spec.min_samples} samples per estimate"
        return None


def _not_scalar(theta: float) -> float:
    raise ProblemError("a workload's objective and gradient are vectors: see Workload.exact_gradient")


def surrogate_problem(name: str, summary: str, wrt: str, distribution, cost, *, cost_is_differentiable: bool,
                      params: Mapping[str, float] | None = None) -> Problem:
    """The ``Problem`` a workload hands the estimators: θ is the distribution's parameter tensor (any shape)."""
    return Problem(
        name=name,
        wrt=wrt,
        params=dict(params or {}),
        summary=summary,
        distribution=distribution,
        cost=cost,
        objective=_not_scalar,
        gradient=_not_scalar,
        gradient_formula="(vector gradient; see the workload's ground truth)",
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
        cost_is_differentiable=cost_is_differentiable,
    )



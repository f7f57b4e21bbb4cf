"""What the real workloads share: a deterministic training run whose checkpoints give the parameter vector, the
problem the estimators see at a checkpoint, and a workload as a problem family."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..core.problem import Problem, ProblemError, ProblemFamily, Workload
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
            raise ProblemError(f"training step must be in [0, {self.steps}], got {step}")
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


def checkpoint_problem(name: str, summary: str, wrt: str, distribution, cost, *, cost_is_differentiable: bool,
                       workload: Workload, step: int, gradient_formula: str,
                       params: Mapping[str, float] | None = None, control_variate=None, episodes=None) -> Problem:  # fmt: skip
    """The ``Problem`` the estimators see at one checkpoint of a workload: ``distribution(θ)`` and ``cost(x, θ)``
    take θ = workload.to_theta(φ) (any shape), and its example θ is the checkpoint's own."""
    return Problem(
        name=name,
        wrt=wrt,
        params=dict(params or {}),
        summary=summary,
        distribution=distribution,
        cost=cost,
        objective=None,
        gradient=None,
        gradient_formula=gradient_formula,
        distribution_depends_on_theta=True,
        cost_depends_on_theta=False,
        cost_is_differentiable=cost_is_differentiable,
        work_depends_on_theta=True,  # another checkpoint is another model
        workload=workload,
        example_theta=lambda: workload.to_theta(workload.parameters(step)[None]),
        control_variate=control_variate,
        episodes=episodes,
    )


def workload_family(name: str, summary: str, wrt: str, workload: Workload,
                    default_estimators: tuple[str, ...]) -> ProblemFamily:  # fmt: skip
    """A workload as a problem family: no parameters, θ a training step (its checkpoints by default)."""
    # The family's problem has no parameters of its own: θ (the step) picks the checkpoint, through ``at``.
    return ProblemFamily(name=name, summary=summary, wrt_choices=(wrt,),
                         build=lambda wrt, params: dataclasses.replace(workload.at(workload.checkpoints[0]), params={}),
                         default_thetas=tuple(float(step) for step in workload.checkpoints),
                         default_estimators=default_estimators)  # fmt: skip

"""The problems varbench ships, registered in ``PROBLEMS`` with tags, and ``make_problem`` to build one by name.

Tags: ``seed`` (the two seed problems), ``gaussian`` (Mohamed et al.'s test costs), ``implicit`` (Gamma, Beta,
Dirichlet), ``discrete`` (Bernoulli and categorical latents), ``diagonal_gaussian`` (D-dimensional),
``policy`` (a softmax policy with a binary reward, for group baselines),
``workload`` (real models, θ a parameter vector at a training checkpoint: ``estimators.workloads``). A user's
problem is ``module:attribute`` or an installed plug-in (entry-point group ``varbench.problems``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.problem import Problem, ProblemError, ProblemFamily, adopt_problem, resolve_parameters
from ..core.registry import Registry
from .. import workloads
from . import diagonal_gaussian, discrete, gaussian, implicit, policy

PROBLEMS: Registry[ProblemFamily] = Registry("problem", ProblemError, entry_point_group="varbench.problems",
                                             adopt=adopt_problem)  # fmt: skip

for _name in ("seed_fixed", "seed_dependent"):
    PROBLEMS.register(_name, gaussian.FAMILIES[_name], "seed")
for _name, _family in gaussian.FAMILIES.items():
    if _name.startswith("gaussian_"):
        PROBLEMS.register(_name, _family, "gaussian")
for _tag, _families in (("implicit", implicit.IMPLICIT_FAMILIES), ("discrete", discrete.DISCRETE_FAMILIES),
                        ("diagonal_gaussian", diagonal_gaussian.DIAGONAL_GAUSSIAN_FAMILIES),
                        ("policy", policy.POLICY_FAMILIES)):  # fmt: skip
    for _name, _family in _families.items():
        PROBLEMS.register(_name, _family, _tag)


for _family in workloads.FAMILIES:
    PROBLEMS.register(_family.name, _family, "workload")


def make_problem(name: str, wrt: str | None = None, params: Mapping[str, float] | None = None) -> Problem:
    """Build the problem ``name`` w.r.t. ``wrt`` (default: the family's first) with ``params`` over defaults.

    A name ``module:attribute`` loads a user's own ``Problem`` (see ``custom_problem``) from an importable module."""
    family = PROBLEMS.get(name)
    wrt = wrt or family.wrt_choices[0]
    if wrt not in family.wrt_choices:
        raise ProblemError(f"problem {name} has no parameter wrt={wrt!r}; allowed: {', '.join(family.wrt_choices)}")
    allowed = family.allowed_params(wrt)
    resolved = resolve_parameters(
        f"problem {name} (wrt {wrt})", dict(params or {}), {k: family.defaults[k] for k in allowed}, ProblemError
    )
    return family.build(wrt, resolved)


__all__ = ["PROBLEMS", "Problem", "ProblemError", "ProblemFamily", "make_problem"]

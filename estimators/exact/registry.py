"""The exact moments' types and their registry: one function per (estimator name, problem family name), as
``torch.distributions.kl.register_kl`` keeps one KL per pair of distribution types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

from ..core.estimator import Method
from ..core.problem import Problem
from ..core.registry import Registry


@dataclass(frozen=True)
class Exact:
    mean: float  # exact mean of one N-sample estimate (equals the true gradient for an unbiased estimator)
    var: float  # exact variance of one N-sample estimate


# (problem, method, θ, N) -> the exact moments, or a one-line reason they are not available.
ExactFunction = Callable[[Problem, Method, float, int], Union[Exact, str]]

# One item per (estimator, problem family), named "estimator on family" and tagged with both names: the same
# Registry as problems and estimators, so a user's exact function goes through the door a shipped one does.
EXACT_MOMENTS: Registry[ExactFunction] = Registry("exact moments", ValueError)


def _pair_name(estimator: str, problem: str) -> str:
    return f"{estimator} on {problem}"


def register_exact(estimator: str, *problems: str) -> Callable[[ExactFunction], ExactFunction]:
    """Decorator: ``function(problem, method, θ, N) -> Exact | str`` gives the exact moments of ``estimator`` on
    each named problem family (a later registration of a pair replaces the earlier one)."""
    if not problems:
        raise ValueError(f"register_exact({estimator!r}) needs at least one problem family name")

    def decorate(function: ExactFunction) -> ExactFunction:
        for problem in problems:
            EXACT_MOMENTS.register(_pair_name(estimator, problem), function, estimator, problem)
        return function

    return decorate


def exact_function(estimator: str, problem: str) -> ExactFunction | None:
    name = _pair_name(estimator, problem)
    return EXACT_MOMENTS.get(name) if name in EXACT_MOMENTS else None  # `in` first: a user's name holds a ':'


def registered_pairs() -> tuple[tuple[str, str], ...]:
    return tuple(sorted(tuple(name.split(" on ", 1)) for name in EXACT_MOMENTS.names()))


@dataclass(frozen=True)
class Keyed:
    """A problem as an ``lru_cache`` argument: hashed and compared by its identity (family, wrt, parameters), not
    by the object, so a rebuilt problem hits the cache; the problem itself rides along uncompared."""

    key: tuple
    problem: Problem = field(compare=False, hash=False)


def keyed(problem: Problem) -> Keyed:
    return Keyed((problem.name, problem.wrt, tuple(sorted(problem.params.items()))), problem)


def options(method: Method) -> Mapping[str, float]:
    return dict(method.params)

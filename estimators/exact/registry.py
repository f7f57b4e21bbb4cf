"""The exact moments' types and their registry: one function per (estimator name, problem family name), as
``torch.distributions.kl.register_kl`` keeps one KL per pair of distribution types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

from ..core.estimator import Method
from ..core.problem import Problem


@dataclass(frozen=True)
class Exact:
    mean: float  # exact mean of one N-sample estimate (equals the true gradient for an unbiased estimator)
    var: float  # exact variance of one N-sample estimate


# (problem, method, θ, N) -> the exact moments, or a one-line reason they are not available.
ExactFunction = Callable[[Problem, Method, float, int], Union[Exact, str]]

_EXACT: dict[tuple[str, str], ExactFunction] = {}


def register_exact(estimator: str, *problems: str) -> Callable[[ExactFunction], ExactFunction]:
    """Decorator: ``function(problem, method, θ, N) -> Exact | str`` gives the exact moments of ``estimator`` on
    each named problem family (a later registration of a pair replaces the earlier one)."""
    if not problems:
        raise ValueError(f"register_exact({estimator!r}) needs at least one problem family name")

    def decorate(function: ExactFunction) -> ExactFunction:
        for problem in problems:
            _EXACT[(estimator, problem)] = function
        return function

    return decorate


def exact_function(estimator: str, problem: str) -> ExactFunction | None:
    return _EXACT.get((estimator, problem))


def registered_pairs() -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_EXACT))


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

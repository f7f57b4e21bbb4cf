"""Every shipped estimator passes `varbench check` at every example point it applies to, and every estimator and
problem family has an example point to be checked at (the pattern of torch.distributions' ``test_has_examples``).

The cases come from the registries, so a newly registered estimator or problem family is tested without editing
this file: through ``bench.check`` (shape, determinism under a seed, finite estimates, and unbiasedness where the
estimator declares itself unbiased), or, when it has no example point, by the completeness tests failing. Peers
are registered, hence tested, only where their libraries are installed; a user's estimators (``module:attribute``)
and installed third-party plug-ins are not the project's, and are left to ``varbench check``.

The bias z-tests are Bonferroni-corrected over every one in this file: a correct set of estimators fails it with
probability at most ``FAMILY_ALPHA``. Each case draws from its own fixed seed, so a commit passes or fails
deterministically.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from scipy import stats

from bench import check
from estimators import ESTIMATORS, PROBLEMS, custom_estimator

FAMILY_ALPHA = 0.001
NOT_SHIPPED = ("user", "plugin")
POINTS = check.example_points()


def shipped_estimators() -> list[str]:
    return ESTIMATORS.names(exclude=NOT_SHIPPED)


def applies(estimator, point: check.CheckPoint) -> bool:
    return check.skip_reason(estimator, point.problem, check.CHECK_SAMPLES) is None


CASES = [(name, point) for name in shipped_estimators() for point in POINTS if applies(ESTIMATORS[name], point)]
BIAS_TESTS = sum(check.tests_bias(ESTIMATORS[name], point) for name, point in CASES)
CRITICAL_Z = float(stats.norm.isf(FAMILY_ALPHA / 2 / max(BIAS_TESTS, 1)))


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


@pytest.mark.slow
@pytest.mark.parametrize("name, point", CASES, ids=[f"{name}-{point.problem.name}-{point.problem.wrt}" for name, point in CASES])
def test_every_estimator_passes_the_check_at_every_example_point_it_applies_to(name, point):
    estimator = ESTIMATORS[name]
    tests_bias = check.tests_bias(estimator, point)
    row = check.check_point(estimator, point, seed_for(name, point.label), check.CHECK_SAMPLES,
                             check.CHECK_REPLICATES, CRITICAL_Z, tests_bias)  # fmt: skip
    table = check.render(name, [row])
    assert row.applies == "yes" and not row.failed, table
    if tests_bias:  # declared unbiased here with an exact gradient: the z-test ran and passed
        assert row.unbiased.startswith("ok:"), table
    else:
        assert row.unbiased.startswith("—"), table


# ---------------------------------------------------------------------------------------------------------
# Completeness: nothing registered goes untested.


def estimators_without_example(names: list[str]) -> list[str]:
    return [name for name in names if not any(applies(ESTIMATORS[name], point) for point in POINTS)]


def families_without_example(names: list[str]) -> list[str]:
    covered = {(point.problem.name, point.problem.wrt) for point in POINTS}
    return [f"{name} (wrt {wrt}, tags {', '.join(sorted(PROBLEMS.tags(name)))})" for name in names
            for wrt in PROBLEMS.get(name).wrt_choices if (name, wrt) not in covered]  # fmt: skip


def test_every_estimator_applies_to_an_example_point():
    missing = estimators_without_example(shipped_estimators())
    assert not missing, "; ".join(f"add an example point for estimator {name} to bench.check.example_points(): it "
                                  "applies to none, so nothing checks it" for name in missing)  # fmt: skip


def test_every_problem_family_has_an_example_point():
    missing = families_without_example(PROBLEMS.names(exclude=NOT_SHIPPED))
    assert not missing, "; ".join(f"add an example point for problem {family} to bench.check.example_points()"
                                  for family in missing)  # fmt: skip


def test_the_bias_tests_cover_every_family_an_unbiased_estimator_applies_to():
    # The parametrisation above really reaches the z-test: at least one bias test per problem family.
    tested = {point.problem.name for name, point in CASES if check.tests_bias(ESTIMATORS[name], point)}
    assert tested == {point.problem.name for point in POINTS}, sorted({p.problem.name for p in POINTS} - tested)


def test_the_completeness_checks_can_fail():
    """A new estimator that applies to no example point, and a new problem family, are reported."""
    nowhere = custom_estimator("nowhere", lambda problem, theta, n_samples: theta * n_samples,
                               applies=lambda problem, n_samples: "applies to no shipped problem")  # fmt: skip
    family = PROBLEMS.get("seed_dependent")
    try:
        ESTIMATORS.register("nowhere", nowhere, "core")
        PROBLEMS.register("seed_again", family, "a_new_tag")
        assert estimators_without_example(shipped_estimators()) == ["nowhere"]
        # seed_again's problems are named seed_dependent, so no example point is seed_again's own.
        assert families_without_example(PROBLEMS.names(exclude=NOT_SHIPPED)) == ["seed_again (wrt theta, tags a_new_tag)"]
    finally:
        ESTIMATORS.unregister("nowhere")
        PROBLEMS.unregister("seed_again")
    assert "nowhere" not in ESTIMATORS.names() and "seed_again" not in PROBLEMS.names()


def test_a_surrogate_that_is_not_unbiased_fails_the_check_at_the_critical_value_used_here():
    """The parametrised test can fail: pathwise shifted by 0.5 on every estimate, declared unbiased, fails."""
    pathwise = ESTIMATORS["pathwise"]

    def shifted(problem, theta, n_samples, **options):
        return pathwise.surrogate(problem, theta, n_samples, **options).sum(dim=0) + 0.5 * n_samples * theta

    biased = custom_estimator("shifted", shifted, applies=lambda problem, n: pathwise.skip_reason(problem, n))
    point = next(p for p in POINTS if p.problem.name == "seed_dependent")
    torch.manual_seed(0)
    row = check.check_point(biased, point, 0, check.CHECK_SAMPLES, check.CHECK_REPLICATES, CRITICAL_Z, True)
    assert row.shape == row.deterministic == row.finite == "ok" and row.unbiased.startswith("FAIL:"), row

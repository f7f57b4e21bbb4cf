"""A pytest plugin for the regression gate's own tests: ``-p tests.slower_estimates`` makes every call of
``estimators.estimate`` do its work twice, so the speed benchmarks (bench/regression/speed_benchmarks.py) time
estimators that are genuinely twice as slow. The benchmark module knows nothing of it; only tests load it."""

from __future__ import annotations

import pytest

import estimators

_estimate = estimators.estimate


def _estimate_twice(*args, **kwargs):
    _estimate(*args, **kwargs)
    return _estimate(*args, **kwargs)


def pytest_configure(config):
    # Before collection, so that a benchmark module's `from estimators import estimate` binds the slower one.
    estimators.estimate = _estimate_twice


def pytest_unconfigure(config):
    estimators.estimate = _estimate


def pytest_collection_modifyitems(items):
    # A benchmark that took `estimate` from elsewhere would run at full speed, and the test would fail for a
    # reason it does not name: say it here.
    for module in {item.module for item in items}:
        if getattr(module, "estimate", None) is not _estimate_twice:
            raise pytest.UsageError(f"tests.slower_estimates: {module.__name__} does not call estimators.estimate, "
                                    "so it cannot be slowed down")  # fmt: skip

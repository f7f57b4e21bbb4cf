"""Chunks of an estimate drawn from their own streams and run on several threads (estimators/random_streams.py):
the numbers must not depend on the thread count, every built-in cell must stay on its chunk's stream, and an
unrouted random op must fall back to the serial global stream rather than give timing-dependent numbers."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from bench import check
from bench.grid import expand, preset
from estimators import ESTIMATORS, PROBLEMS, estimate, make_problem
from estimators import engine
from estimators.core import random_streams
from estimators.engine import WORKING_VALUES_PER_SAMPLE

PARALLEL = [name for name, e in ESTIMATORS.items() if e.parallel_safe]
SEED_PROBLEM = make_problem("seed_dependent", "theta", {})


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _many_calls(name: str, seed: int, problem=SEED_PROBLEM, n: int = 100, m: int = 400, calls_of: int = 1000,
                theta: float = 3.0):  # fmt: skip
    """m estimates of n samples in calls of ``calls_of`` samples (so 40 calls by default), seeded."""
    torch.manual_seed(seed)
    budget = calls_of * WORKING_VALUES_PER_SAMPLE * 4
    return estimate(ESTIMATORS[name], problem, theta, n, m, memory_budget=budget)


def _scalar_point_for(name: str) -> check.CheckPoint:
    """The first example point with a scalar θ the estimator applies to (the seed problem for the core ones)."""
    estimator = ESTIMATORS[name]
    return next(point for point in check.example_points()
                if point.problem.workload is None and check.skip_reason(estimator, point.problem, 100) is None)  # fmt: skip


@pytest.mark.parametrize("name", PARALLEL)
def test_numbers_do_not_depend_on_the_thread_count(name, threads):
    point = _scalar_point_for(name)
    results = []
    for count in (1, 2, 3, 2):
        threads(count)
        results.append(_many_calls(name, seed=11, problem=point.problem, theta=point.theta))
    for other in results[1:]:
        assert torch.equal(results[0], other)
    if torch.unique(results[0]).numel() > 1:  # the seed does matter (IndeCateR is exact on the toys: no noise)
        assert not torch.equal(results[0], _many_calls(name, seed=12, problem=point.problem, theta=point.theta))


def test_chunks_draw_distinct_streams(threads):
    threads(2)
    # Calls of one replicate each: with colliding streams, whole estimates would repeat.
    estimates = _many_calls("pathwise", seed=3, n=1000, m=300, calls_of=1000)
    assert torch.unique(estimates).numel() == 300


def test_the_global_stream_advances_by_one_draw_whatever_the_chunking(threads):
    threads(2)
    states = []
    for calls_of in (1000, 2000):
        _many_calls("score_function", seed=4, calls_of=calls_of)
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])


def test_every_parallel_safe_cell_of_the_default_sweep_draws_only_from_its_chunk_stream():
    """Each (problem, estimator) the default sweep runs in parallel must never touch the global generator;
    otherwise it would take the serial fallback (and warn). The workloads have their own driver."""
    cells = {(c.problem, c.wrt, c.params, c.theta, c.estimator) for c in expand(preset("default"), ["cpu"])
             if c.problem in PROBLEMS and c.estimator in PARALLEL and c.variance_reduction == "none" and not c.estimator_params}  # fmt: skip
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for problem_name, wrt, params, theta, name in sorted(cells):
            problem = make_problem(problem_name, wrt, dict(params))
            if (problem.label, name) in seen or ESTIMATORS[name].skip_reason(problem, 4) is not None:
                continue
            seen.add((problem.label, name))
            # Calls of 2 samples, so that the estimate is several calls (one call draws from the global stream).
            estimate(ESTIMATORS[name], problem, theta, 4, 3, memory_budget=2 * WORKING_VALUES_PER_SAMPLE * 4)
    assert len(seen) >= 20, seen
    assert not engine._GLOBAL_GENERATOR_USERS


def test_an_unrouted_random_op_falls_back_to_the_serial_global_stream(monkeypatch, threads):
    threads(2)
    serial = dataclasses.replace(ESTIMATORS["pathwise"], parallel_safe=False)
    torch.manual_seed(5)
    expected = estimate(serial, SEED_PROBLEM, 3.0, 100, 400, memory_budget=1000 * WORKING_VALUES_PER_SAMPLE * 4)
    expected_state = torch.get_rng_state()
    # Normal.rsample draws with Tensor.normal_: unrouted, it uses the global generator from both threads.
    monkeypatch.setattr(random_streams, "RANDOM_OPS", random_streams.RANDOM_OPS - {torch.Tensor.normal_})
    monkeypatch.setattr(engine, "_GLOBAL_GENERATOR_USERS", set())
    with pytest.warns(RuntimeWarning, match="global generator"):
        fallback = _many_calls("pathwise", seed=5)
    assert torch.equal(fallback, expected)
    assert torch.equal(torch.get_rng_state(), expected_state)
    assert ("pathwise", SEED_PROBLEM.label) in engine._GLOBAL_GENERATOR_USERS
    again = _many_calls("pathwise", seed=5)  # remembered: straight to the serial path, same numbers, no warning
    assert torch.equal(again, expected)


def test_the_one_thread_override_survives_overlapping_estimates(threads):
    threads(2)
    with random_streams.one_intra_op_thread():
        assert torch.get_num_threads() == 1
        with random_streams.one_intra_op_thread():  # a second estimate starting meanwhile (Dask worker threads)
            pass
        assert torch.get_num_threads() == 1  # the first still runs: a plain save/restore would have reset it
    assert torch.get_num_threads() == 2


def test_an_estimate_of_one_call_draws_from_the_global_stream_directly():
    serial = dataclasses.replace(ESTIMATORS["pathwise"], parallel_safe=False)
    torch.manual_seed(6)
    expected = estimate(serial, SEED_PROBLEM, 3.0, 100, 40)
    torch.manual_seed(6)
    assert torch.equal(estimate(ESTIMATORS["pathwise"], SEED_PROBLEM, 3.0, 100, 40), expected)


def test_parallel_false_draws_every_call_from_the_global_stream_on_this_thread():
    budget = 1000 * WORKING_VALUES_PER_SAMPLE * 4  # 40 calls
    serial = dataclasses.replace(ESTIMATORS["score_function"], parallel_safe=False)
    torch.manual_seed(7)
    expected = estimate(serial, SEED_PROBLEM, 3.0, 100, 400, memory_budget=budget)
    torch.manual_seed(7)
    off = estimate(ESTIMATORS["score_function"], SEED_PROBLEM, 3.0, 100, 400, memory_budget=budget, parallel=False)
    assert torch.equal(off, expected)
    assert not torch.equal(off, _many_calls("score_function", seed=7))

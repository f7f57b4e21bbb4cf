"""The CUDA path of the sweep. Skipped on machines without a GPU (this project's CI has none); a session or
user with a GPU runs it with `make test`."""

from __future__ import annotations

import math

import pytest
import torch

from bench.grid import Cell
from bench.measure import measure_cell
from estimators import ESTIMATORS, estimate, make_problem

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


# seed_dependent at θ = 3: naive autograd's mean is E[∂f/∂θ] = 3(θ² + 1) = 30 (the exact gradient is 84).
KNOWN_BIASED_MEANS = {"naive": 30.0}


@pytest.mark.parametrize("name", ESTIMATORS.names(exclude=("user", "plugin")))
def test_estimators_run_on_cuda_and_agree_with_the_exact_gradient(name):
    problem = make_problem("seed_dependent")
    if ESTIMATORS[name].skip_reason(problem, 10):  # the discrete estimators: covered in test_discrete.py below
        pytest.skip(ESTIMATORS[name].skip_reason(problem, 10))
    torch.manual_seed(3)
    x = estimate(ESTIMATORS[name], problem, 3.0, 10, 4000, device="cuda", dtype=torch.float64)
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    # An estimator declared unbiased has the exact gradient's mean; a biased one its own known mean, where known.
    expected = problem.gradient(3.0) if ESTIMATORS[name].unbiased_for(problem) else KNOWN_BIASED_MEANS.get(name)
    if expected is not None:
        z = (x.mean().item() - expected) / (x.std().item() / math.sqrt(x.numel()))
        assert abs(z) < 4.5


def test_a_cuda_cell_records_the_gpu_and_a_synchronised_timing():
    row = measure_cell(Cell("gaussian_cos", (("k", 1.0), ("sigma", 1.0)), "mu", 1.0, "pathwise", 100, "cuda"), 0)
    assert row["status"] == "ok" and row["device"] == "cuda"
    assert row["device_name"] == torch.cuda.get_device_name(0)
    assert row["seconds_per_estimate"] > 0 and row["cost_rounds"] >= 1

"""Closed forms for the seed problems (f = 3θx², x = θ + ε or x = ε), from the Gaussian moments E[ε^k]; a second
derivation beside the quadrature of ``gaussian.py``, which is what ``exact_moments`` uses (tests compare them).

Per-sample (mean, variance) of each estimator, seed_dependent (x = θ + ε), h the finite difference's step:

    naive              3x²                          3θ² + 3          36θ² + 18
    pathwise           3x² + 6θx                    9θ² + 3          144θ² + 18
    score_function     3θx²ε + 3x²                  9θ² + 3          9θ⁶ + 162θ⁴ + 351θ² + 18
    finite_difference  9θ² + 3h² + 12θε + 3ε²       9θ² + 3 + 3h²    144θ² + 18
    measure_valued     12θ²W/√(2π) + 3x′²           9θ² + 3          36θ⁴(4 − π)/π + 36θ² + 18

(W ~ Weibull(√2, 2): E W = √(π/2), Var W = 2 − π/2; x′ an independent draw.) On seed_fixed every estimator's
term is 3ε²: mean 3, variance 18.
"""

from __future__ import annotations

import math


def seed_dependent_per_sample(estimator: str, theta: float, step: float = 0.1) -> tuple[float, float]:
    t = theta
    table = {
        "naive": (3 * t**2 + 3, 36 * t**2 + 18),
        "pathwise": (9 * t**2 + 3, 144 * t**2 + 18),
        "score_function": (9 * t**2 + 3, 9 * t**6 + 162 * t**4 + 351 * t**2 + 18),
        "finite_difference": (9 * t**2 + 3 + 3 * step**2, 144 * t**2 + 18),
        "measure_valued": (9 * t**2 + 3, 36 * t**4 * (4 - math.pi) / math.pi + 36 * t**2 + 18),
    }
    return table[estimator]


def seed_fixed_per_sample(estimator: str, theta: float, step: float = 0.1) -> tuple[float, float]:
    return 3.0, 18.0

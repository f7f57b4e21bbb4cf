"""Summary statistics of M replicate gradient estimates: bias with its z-score, variance with an interval
that stays honest for heavy-tailed estimates, and the replicate count needed for a target precision."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
Z95 = float(stats.norm.ppf(0.975))  # half-width multiplier of the 95% intervals shown in reports and plots
# An estimator is flagged biased when its bias is significant at this two-sided level. Strict, because a
# report holds many cells and a false "biased" label is a costly mistake to make about an estimator.
BIAS_ALPHA = 0.001
# Floating-point resolution of a bias: per-sample gradients carry a few ulps of rounding and their N-sample
# mean up to log2(N) more, so a bias within this many ulps (of the computation's dtype) of the gradient's
# scale is arithmetic, not the estimator. Without it, estimators that are exact per sample (pathwise on
# E[log x] wrt a Gamma's rate, antithetic pathwise on a quadratic) were flagged biased at z = 17 to 48 on
# variances of 1e-16: float32's last bit of −0.2.
ROUNDING_ULPS = 64
FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Target relative standard error of the variance when the replicate count is chosen automatically.
TARGET_VARIANCE_REL_SE = 0.05


def bias_critical_z() -> float:
    """|bias z| above which a cell is flagged biased (two-sided level BIAS_ALPHA)."""
    return float(stats.norm.isf(BIAS_ALPHA / 2))


@dataclass(frozen=True)
class EstimateSummary:
    n_replicates: int
    mean: float
    bias: float
    bias_se: float
    bias_z: float
    bias_p_value: float
    biased: bool
    var: float
    var_ci_low: float
    var_ci_high: float
    var_rel_se: float
    kurtosis: float
    mse: float


def kurtosis(x: np.ndarray) -> float:
    """Pearson kurtosis m4 / m2² (3 for a Gaussian); nan for constant data or fewer than 4 values."""
    if x.size < 4 or np.ptp(x) == 0:
        return math.nan
    return float(stats.kurtosis(x, fisher=False, bias=True))


def variance_relative_se(kurt: float, m: int) -> float:
    """Asymptotic relative standard error of the sample variance: sqrt((κ − (M−3)/(M−1)) / M)."""
    if not math.isfinite(kurt):
        return 0.0
    return math.sqrt(max(kurt - (m - 3) / (m - 1), 0.0) / m)


def replicates_for_relative_se(kurt: float, target: float = TARGET_VARIANCE_REL_SE) -> int:
    """Replicates M at which the variance's relative standard error is about ``target``: M ≈ (κ − 1)/target²."""
    if not math.isfinite(kurt):
        kurt = 3.0
    return math.ceil(max(kurt - 1.0, 0.0) / target**2)


def variance_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Bonett's (2006) interval for a variance, which does not assume Gaussian data.

    Log-scale interval around c·s² with a standard error from a kurtosis estimate centred at a trimmed
    mean: se = c·sqrt((γ̂₄ − (M−3)/M) / (M−1)), c = M/(M − z). A plain χ² interval assumes κ = 3 and
    under-covers badly for heavy-tailed estimates such as the score function's.
    """
    m = x.size
    if m < 5:
        raise ValueError(f"a variance interval needs at least 5 replicates, got {m}")
    s2 = float(np.var(x, ddof=1))
    if s2 == 0.0:
        return 0.0, 0.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    trimmed = stats.trim_mean(x, 1.0 / (2.0 * math.sqrt(m - 4)))
    gamma4 = m * float(np.sum((x - trimmed) ** 4)) / float(np.sum((x - x.mean()) ** 2)) ** 2
    c = m / (m - z)
    se = c * math.sqrt(max(gamma4 - (m - 3) / m, 0.0) / (m - 1))
    centre = math.log(c * s2)
    return math.exp(centre - z * se), math.exp(centre + z * se)


def rounding_resolution(true_grad: float, mean: float, sd: float, eps: float = FLOAT32_EPS) -> float:
    """The smallest bias that floating-point arithmetic in a dtype of machine epsilon ``eps`` can resolve:
    ROUNDING_ULPS ulps of the gradient's scale (the largest of |exact|, |mean| and the estimates' spread)."""
    return ROUNDING_ULPS * eps * max(abs(true_grad), abs(mean), sd)


def summarize(estimates: np.ndarray, true_grad: float, confidence: float = CONFIDENCE, *,
              eps: float = FLOAT32_EPS) -> EstimateSummary:  # fmt: skip
    """Bias (vs the exact gradient), variance and MSE of one cell's replicate estimates, computed in a dtype
    of machine epsilon ``eps``: the bias z-score divides by the standard error and the dtype's rounding
    resolution combined, sqrt(se² + r²), so an estimate exact up to its last bits is not called biased."""
    x = np.asarray(estimates, dtype=np.float64)
    m = x.size
    mean = float(x.mean())
    var = float(np.var(x, ddof=1))
    bias = mean - true_grad
    bias_se = math.sqrt(var / m)
    resolution = rounding_resolution(true_grad, mean, math.sqrt(var), eps)
    if bias_se > 0:
        bias_z = bias / math.hypot(bias_se, resolution)
    else:
        # Zero spread: the estimator is deterministic, so any bias beyond rounding is certain.
        bias_z = 0.0 if abs(bias) <= resolution else math.copysign(math.inf, bias)
    p_value = float(2 * stats.norm.sf(abs(bias_z)))
    low, high = variance_interval(x, confidence)
    kurt = kurtosis(x)
    return EstimateSummary(
        n_replicates=m,
        mean=mean,
        bias=bias,
        bias_se=bias_se,
        bias_z=bias_z,
        bias_p_value=p_value,
        biased=p_value < BIAS_ALPHA,
        var=var,
        var_ci_low=low,
        var_ci_high=high,
        var_rel_se=variance_relative_se(kurt, m),
        kurtosis=kurt,
        mse=bias**2 + var,
    )

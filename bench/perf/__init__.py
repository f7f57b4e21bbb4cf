"""Performance benchmark (``make perf`` / ``varbench perf``): how close the vectorised estimators run to the
device's random-number floor, how much faster one vectorised call is than the per-estimate Python loop people
write by hand, how much memory a cell needs, and what each estimator costs relative to pathwise.

Every target is a ratio of two timings taken in the same run on the same device, so it means the same on a
laptop, a CI VM or a GPU; absolute rates are recorded for context only. Results: ``<out>/perf.csv`` (tidy,
one row per measurement) and ``<out>/perf.md``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils import benchmark

from estimators import ESTIMATORS, estimate, make_problem
from estimators.core.random_streams import one_intra_op_thread
from estimators.engine import DEFAULT_MEMORY_BUDGET, PARALLEL_CALL_SAMPLES, WORKING_VALUES_PER_SAMPLE

from .. import environment

PERF_TITLE = "# varbench performance"
FLOOR_TARGET = 0.5  # vectorised samples/s at least half of torch.randn's on the same device
LOOP_TARGET = 10.0  # vectorised at least 10x the per-estimate loop at N = 1000, M = 1000
FLOOR_ESTIMATORS = ("pathwise", "score_function")
# (problem, wrt, params, θ): the seed problem and two Gaussian costs, one per parameter.
GAUSSIAN_CASES = [
    ("seed_dependent", "theta", {}, 3.0),
    ("gaussian_cos", "mu", {"k": 1.0, "sigma": 1.0}, 1.0),
    ("gaussian_quadratic", "sigma", {"k": 1.0, "mu": 1.0}, 1.0),
]
COLUMNS = ["section", "device", "device_name", "problem", "estimator", "n_samples", "n_replicates", "metric",
           "value", "target", "meets_target", "note", "torch_version", "num_threads", "git_sha", "hostname",
           "started_at"]  # fmt: skip


def _median_seconds(run, device: str, min_run_time: float = 0.3) -> float:
    run()  # warm-up
    environment.synchronize(device)
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def rng_floor(total: int, device: str, min_run_time: float = 0.3) -> float:
    """Samples per second of ``torch.randn`` drawing ``total`` values on ``device``: the rate no estimator beats."""
    return total / _median_seconds(lambda: torch.randn(total, device=device), device, min_run_time)


def vectorised_rate(name: str, problem, theta: float, n: int, m: int, device: str, min_run_time: float = 0.3) -> float:
    """Samples per second of one vectorised ``estimate`` call producing m estimates of n samples."""
    estimator = ESTIMATORS[name]
    return n * m / _median_seconds(lambda: estimate(estimator, problem, theta, n, m, device=device), device, min_run_time)


def floor_fraction(name: str, problem, theta: float, n: int, m: int, device: str, min_run_time: float = 0.3,
                   rounds: int = 5) -> tuple[float, float]:
    """(fraction of the RNG floor, samples/s) of one vectorised ``estimate`` call of m estimates of n samples.

    Paired: each round times ``torch.randn`` of the same n·m samples right before the call, and the fraction
    is the median over rounds of floor time / call time: the floor alone drifts within a minute on a shared
    machine, so a floor timed once at the start would put every later ratio off.
    """
    estimator = ESTIMATORS[name]
    floor_times, call_times = [], []
    for _ in range(rounds):
        floor_times.append(_median_seconds(lambda: torch.randn(n * m, device=device), device, min_run_time / rounds))
        call_times.append(_median_seconds(lambda: estimate(estimator, problem, theta, n, m, device=device), device,
                                          min_run_time / rounds))  # fmt: skip
    fraction = float(np.median(np.asarray(floor_times) / np.asarray(call_times)))
    return fraction, n * m / float(np.median(call_times))


def loop_estimates(name: str, problem, theta: float, n: int, m: int, device: str = "cpu") -> np.ndarray:
    """The hand-written way: one estimate at a time, a fresh leaf θ, ``.backward()``, ``.item()`` each time."""
    surrogate = ESTIMATORS[name].surrogate
    out = np.empty(m)
    for i in range(m):
        leaf = torch.tensor([theta], device=device, requires_grad=True)
        loss = surrogate(problem, leaf, n).sum() / n
        if loss.requires_grad:
            loss.backward()
        out[i] = 0.0 if leaf.grad is None else leaf.grad.item()
    return out


def loop_rate(name: str, problem, theta: float, n: int, m: int, device: str) -> float:
    loop_estimates(name, problem, theta, n, min(m, 10), device)  # warm-up
    environment.synchronize(device)
    started = time.perf_counter()
    loop_estimates(name, problem, theta, n, m, device)
    environment.synchronize(device)
    return n * m / (time.perf_counter() - started)


_MEMORY_PROBE = """
import json, resource, sys, time, torch
from estimators import ESTIMATORS, estimate, make_problem
from bench.statistics import summarize

def rss_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

args = json.loads(sys.argv[1])
problem = make_problem(args["problem"], args["wrt"], args["params"])
device = args["device"]
estimate(ESTIMATORS[args["estimator"]], problem, args["theta"], 10, 10, device=device)  # import/warm-up
try:  # Linux: reset the peak (VmHWM) to the current RSS so the peak below belongs to this cell alone
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before, peak = rss_kib("VmRSS"), lambda: rss_kib("VmHWM")
except OSError:  # elsewhere: the process's high-water mark, which may include import-time peaks
    before, peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats(device)
torch.manual_seed(args["seed"])
started = time.perf_counter()
x = estimate(ESTIMATORS[args["estimator"]], problem, args["theta"], args["n"], args["m"], device=device,
             memory_budget=args["budget"], parallel=args["parallel"]).double().cpu().numpy()
elapsed = time.perf_counter() - started
s = summarize(x, problem.gradient(args["theta"]))
print(json.dumps({"peak_bytes": (peak() - before) * 1024, "elapsed_s": elapsed,
                  "device_peak_bytes": torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None,
                  "mean": s.mean, "bias_z": s.bias_z, "var": s.var, "var_ci": [s.var_ci_low, s.var_ci_high]}))
"""


@dataclass(frozen=True)
class MemoryResult:
    peak_bytes: int  # peak resident memory during the call above the resident memory before it (host memory)
    device_peak_bytes: int | None
    elapsed_s: float
    mean: float
    bias_z: float
    var: float
    var_ci: tuple[float, float]


def measure_memory(name: str, case: tuple, n: int, m: int, device: str, budget: int, seed: int = 0,
                   parallel: bool = True) -> MemoryResult:
    """Run one cell's estimates in a fresh process and report its peak memory growth and statistics.

    A fresh process because the peak RSS is a high-water mark that cannot be reset within a process.
    """
    problem, wrt, params, theta = case
    payload = json.dumps(dict(problem=problem, wrt=wrt, params=params, theta=theta, estimator=name, n=n, m=m,
                              device=device, budget=budget, seed=seed, parallel=parallel))  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, payload], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryResult(result["peak_bytes"], result["device_peak_bytes"], result["elapsed_s"], result["mean"],
                        result["bias_z"], result["var"], tuple(result["var_ci"]))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The benchmark


# The grid whose wall time the block-wise cost measurement was built to cut: cells per second and the share of
# the time spent timing, against the statistics' share (docs/performance.md compares it with earlier versions).
SWEEP_GRID = (("seed_dependent",), (0.5, 1.0, 2.0, 3.0),
              ("naive", "score_function", "score_function_loo", "pathwise", "measure_valued"), (1, 10, 100))  # fmt: skip


def sweep_speed(out: Path, grid: tuple = SWEEP_GRID) -> dict:
    """Measure ``grid`` (problems, θ, estimators, N) as ``varbench run`` does into a fresh ``out`` folder: wall
    time, cells per second, the share of the cells' time spent measuring cost, and the median relative standard
    error of the variance (the precision the time bought)."""
    from .. import sweep  # noqa: PLC0415 - the sweep machinery is only needed here
    from ..grid import Sweep, expand  # noqa: PLC0415
    from ..table import load_table  # noqa: PLC0415

    problems, thetas, estimators, ns = grid
    cells = expand([Sweep(problem, thetas=thetas, estimators=estimators, n_samples=ns) for problem in problems])
    started = time.perf_counter()
    sweep.run_cells(cells, out, base_seed=0, progress=False)
    wall = time.perf_counter() - started
    table = load_table(out / "table.csv")
    ok = table[table["status"] == "ok"]
    return dict(cells=len(cells), wall_s=wall, cells_per_second=len(cells) / wall,
                timing_share=float(ok["cost_time_s"].sum() / ok["elapsed_s"].sum()),
                median_grad_var_rel_se=float(ok["grad_var_rel_se"].median()))  # fmt: skip


@dataclass(frozen=True)
class PerfConfig:
    devices: tuple[str, ...] = ("cpu",)
    floor_samples: int = 1 << 22
    loop_ns: tuple[int, ...] = (1, 10, 100, 1000)
    loop_replicates: int = 1000
    # The memory section: M·N per cell with the default budget, and the 10^9-sample cell (M = 1000, N = 10^6).
    memory_cells: tuple[tuple[int, int], ...] = ((1000, 10_000), (1000, 100_000))
    billion: bool = True
    min_run_time: float = 0.3  # seconds of timed blocks per measurement
    # The sweep section: this grid measured end to end (statistics and cost), on the CPU.
    sweep: tuple = SWEEP_GRID


PERF_FILES = ("perf.csv", "perf.md")


def is_old_perf_run(folder: Path, entries: set[str]) -> bool:
    """A perf folder written before markers existed: nothing but perf.csv and a perf.md that varbench wrote."""
    report = folder / "perf.md"
    return bool(entries) and entries <= set(PERF_FILES) and (not report.exists() or report.read_text(
        encoding="utf-8", errors="replace").startswith(PERF_TITLE))  # fmt: skip


def run_perf(out: Path, config: PerfConfig = PerfConfig(), progress=print) -> pd.DataFrame:
    """Measure every section on every device; write ``out/perf.csv`` (replaced whole after each measurement, so an
    interrupted run keeps what it finished) and return the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    meta = dict(torch_version=torch.__version__, num_threads=torch.get_num_threads(), git_sha=environment.git_sha(),
                hostname=socket.gethostname())  # fmt: skip

    def add(**row):
        row.setdefault("started_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        rows.append({**dict.fromkeys(COLUMNS), **meta, **row})
        temporary = out / ".perf.csv.tmp"
        pd.DataFrame(rows, columns=COLUMNS).to_csv(temporary, index=False)
        os.replace(temporary, out / "perf.csv")  # never half-written

    for device in config.devices:
        name_of_device = environment.device_name(device)
        common = dict(device=device, device_name=name_of_device)
        progress(f"[{device}] RNG floor and vectorised throughput")
        floor = rng_floor(config.floor_samples, device, config.min_run_time)
        add(section="floor", **common, problem="torch.randn", estimator="", n_samples=config.floor_samples,
            n_replicates=1, metric="samples_per_second", value=floor)  # fmt: skip
        n = 1000
        m = config.floor_samples // n
        pathwise_seconds: dict[str, float] = {}
        for case in GAUSSIAN_CASES:
            problem = make_problem(case[0], case[1], case[2])
            for name, estimator in ESTIMATORS.items():
                if estimator.skip_reason(problem, n) is not None:
                    continue
                fraction, rate = floor_fraction(name, problem, case[3], n, m, device, config.min_run_time)
                is_target = name in FLOOR_ESTIMATORS
                add(section="floor", **common, problem=problem.label, estimator=name, n_samples=n, n_replicates=m,
                    metric="fraction_of_rng_floor", value=fraction, target=FLOOR_TARGET if is_target else None,
                    meets_target=(fraction >= FLOOR_TARGET) if is_target else None,
                    note=f"{rate:.3g} samples/s; {estimator.cost_evaluations(problem)} cost evaluations per sample")  # fmt: skip
                if is_target and device == "cpu" and torch.get_num_threads() > 1:
                    # torch.randn fills on one CPU thread; the estimate overlaps its calls' draws on all of
                    # them. The one-thread fraction shows how much of the ratio is that overlap.
                    with one_intra_op_thread():
                        alone, rate = floor_fraction(name, problem, case[3], n, m, device, config.min_run_time)
                    add(section="floor_one_thread", **common, problem=problem.label, estimator=name, n_samples=n,
                        n_replicates=m, metric="fraction_of_rng_floor", value=alone,
                        note=f"torch.set_num_threads(1); {rate:.3g} samples/s")  # fmt: skip
                seconds = n / rate
                if name == "pathwise":
                    pathwise_seconds[problem.label] = seconds
                if problem.label in pathwise_seconds:
                    add(section="relative_cost", **common, problem=problem.label, estimator=name, n_samples=n,
                        n_replicates=m, metric="seconds_relative_to_pathwise",
                        value=seconds / pathwise_seconds[problem.label],
                        note=f"{estimator.cost_evaluations(problem)} cost evaluations per sample")  # fmt: skip

        progress(f"[{device}] per-estimate Python loop against the vectorised call")
        case = GAUSSIAN_CASES[0]
        problem = make_problem(case[0], case[1], case[2])
        for name in FLOOR_ESTIMATORS:
            for n in config.loop_ns:
                vec = vectorised_rate(name, problem, case[3], n, config.loop_replicates, device, config.min_run_time)
                loop = loop_rate(name, problem, case[3], n, config.loop_replicates, device)
                at_target_point = n == 1000
                add(section="loop", **common, problem=problem.label, estimator=name, n_samples=n,
                    n_replicates=config.loop_replicates, metric="vectorised_speedup_over_loop", value=vec / loop,
                    target=LOOP_TARGET if at_target_point else None,
                    meets_target=(vec / loop >= LOOP_TARGET) if at_target_point else None,
                    note=f"vectorised {vec:.3g} samples/s, loop {loop:.3g} samples/s")  # fmt: skip

        if device == "cpu" and config.sweep:
            progress("[cpu] a sweep end to end: cells per second and the share of time spent timing")
            with tempfile.TemporaryDirectory() as folder:
                speed = sweep_speed(Path(folder), config.sweep)
            what = f"{speed['cells']} cells of {', '.join(config.sweep[0])}, θ × estimators × N = " \
                   f"{len(config.sweep[1])} × {len(config.sweep[2])} × {len(config.sweep[3])}"  # fmt: skip
            for metric, note in (("cells_per_second", f"{what}; {speed['wall_s']:.1f} s wall time"),
                                 ("timing_share", "cost measurement's share of the cells' time (the rest: statistics)"),
                                 ("median_grad_var_rel_se", "median relative standard error of the variance")):  # fmt: skip
                add(section="sweep", **common, problem=", ".join(config.sweep[0]), estimator="", n_samples=None,
                    n_replicates=None, metric=metric, value=speed[metric], note=note)  # fmt: skip

        progress(f"[{device}] memory per cell")
        cells = [(m, n, DEFAULT_MEMORY_BUDGET) for m, n in config.memory_cells]
        cells.append((config.memory_cells[0][0], config.memory_cells[0][1], 1 << 40))  # unchunked reference
        if config.billion:
            cells.append((1000, 1_000_000, DEFAULT_MEMORY_BUDGET))
        for m, n, budget in cells:
            unchunked = budget > DEFAULT_MEMORY_BUDGET
            # The reference is one call from the global generator: without parallel=False, estimate() would
            # still split it into 2^19-sample calls on their own streams (same numbers as the chunked row).
            result = measure_memory("pathwise", case, n, m, device, budget, parallel=not unchunked)
            exact_var = 1314.0 / n  # seed_dependent at θ = 3: per-sample pathwise variance 1314 (docs/math.md)
            chunked = ("unchunked: one call, budget 1 TiB, parallel=False" if unchunked
                       else f"budget {budget / 2**30:g} GiB")  # fmt: skip
            add(section="memory", **common, problem=problem.label, estimator="pathwise", n_samples=n, n_replicates=m,
                metric="peak_memory_bytes", value=result.device_peak_bytes or result.peak_bytes,
                note=(f"M·N = {m * n:.3g} samples, {chunked}, {result.elapsed_s:.1f} s; mean {result.mean:.4f} "
                      f"(exact 84, z = {result.bias_z:.2f}); variance {result.var:.4g} "
                      f"[{result.var_ci[0]:.4g}, {result.var_ci[1]:.4g}] (exact {exact_var:.4g})"))  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def write_perf_report(out: Path) -> Path:
    """Render ``out/perf.md`` from ``out/perf.csv``."""
    out = Path(out)
    frame = pd.read_csv(out / "perf.csv", keep_default_na=False, na_values=[""])
    lines = [PERF_TITLE, "",
             "Every target is a ratio of two timings from this one run on the same device, so it holds wherever it "
             "is measured; absolute rates depend on the machine. Medians of repeated blocks after a warm-up "
             "(`torch.utils.benchmark`, which synchronises CUDA). The fraction of the RNG floor is paired: five "
             "rounds each time `torch.randn` of the same number of samples right before the estimator, and the "
             "median of the rounds' ratios is reported (the floor rate in the heading is the first, unpaired one, "
             "for context).", ""]  # fmt: skip
    for device, rows in frame.groupby("device", sort=False):
        lines += [f"## {device} — {rows['device_name'].iloc[0]}", ""]
        floor = rows[(rows["section"] == "floor") & (rows["problem"] == "torch.randn")]["value"].iloc[0]
        lines += [f"### Samples per second against the RNG floor (`torch.randn`: {floor:.3g} samples/s)", "",
                  f"Target: pathwise and score function ≥ {FLOOR_TARGET:g} of the floor.", ""]  # fmt: skip
        alone = rows[rows["section"] == "floor_one_thread"].set_index(["problem", "estimator"])["value"]
        if device == "cpu" and len(alone):
            lines += [f"On CPU `torch.randn` fills on one thread. `estimate` splits a cell into calls of at most "
                      f"{PARALLEL_CALL_SAMPLES} samples, each drawing from its own random stream, and runs them on "
                      f"torch's {int(rows['num_threads'].iloc[0])} threads, so one call draws while another "
                      "computes; the numbers do not depend on the thread count. The *1 thread* column is the same "
                      "ratio with `torch.set_num_threads(1)`: the per-sample efficiency without that overlap.", ""]  # fmt: skip
        lines += ["| problem | estimator | fraction of floor | 1 thread | target | | detail |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows[(rows["section"] == "floor") & (rows["problem"] != "torch.randn")].itertuples():
            single = alone.get((r.problem, r.estimator))
            single = "" if single is None else f"{single:.2f}"
            lines.append(f"| {r.problem} | {r.estimator} | {r.value:.2f} | {single} | {_target(r)} | {_met(r)} | {r.note} |")
        lines += ["", "### Vectorised call against a per-estimate Python loop (`.backward()` per estimate)", "",
                  f"Target: ≥ {LOOP_TARGET:g}× at N = 1000, M = 1000.", "",
                  "| estimator | N | M | speed-up | target | | detail |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows[rows["section"] == "loop"].itertuples():
            lines.append(f"| {r.estimator} | {r.n_samples} | {r.n_replicates} | {r.value:.1f}× | {_target(r)} | {_met(r)} | {r.note} |")
        lines += ["", "### Memory per cell", "",
                  f"Calls are sized from a memory budget ({_fmt_bytes(DEFAULT_MEMORY_BUDGET)} by default, "
                  f"{WORKING_VALUES_PER_SAMPLE} values per sample): replicates are split first, then one estimate's "
                  "samples. The unchunked reference draws the same cell in one call, from other random numbers: its "
                  "mean and variance agree with the chunked row's within their intervals, not bit for bit. Peak = the process's peak resident memory during the cell above its resident memory before it (Linux: peak reset through /proc/self/clear_refs; GPU: peak allocated).",
                  "", "| M | N | peak memory | detail |", "|---|---|---|---|"]  # fmt: skip
        for r in rows[rows["section"] == "memory"].itertuples():
            lines.append(f"| {r.n_replicates} | {r.n_samples:g} | {_fmt_bytes(r.value)} | {r.note} |")
        sweep_rows = rows[rows["section"] == "sweep"].set_index("metric")
        if len(sweep_rows):
            lines += ["", "### A sweep end to end", "",
                      f"{sweep_rows.loc['cells_per_second', 'note']}: **{sweep_rows.loc['cells_per_second', 'value']:.3g} "
                      f"cells per second**, {100 * sweep_rows.loc['timing_share', 'value']:.0f}% of the cells' time "
                      "spent measuring cost (the rest on their statistics), at a median relative standard error of "
                      f"the variance of {sweep_rows.loc['median_grad_var_rel_se', 'value']:.3g}."]  # fmt: skip
        lines += ["", "### Cost relative to pathwise (same problem, N = 1000)", "",
                  "| problem | estimator | time / pathwise's | detail |", "|---|---|---|---|"]  # fmt: skip
        for r in rows[rows["section"] == "relative_cost"].itertuples():
            lines.append(f"| {r.problem} | {r.estimator} | {r.value:.2f} | {r.note} |")
        lines.append("")
    missed = frame[frame["meets_target"].astype(str).str.lower() == "false"]
    lines += ["## Targets", ""]
    lines += [f"- **missed**: {r.section} {r.estimator} on {r.problem} ({r.device}, N={r.n_samples}): {r.value:.2f} < {r.target:g}"
              for r in missed.itertuples()] or ["All targets met."]  # fmt: skip
    first = frame.iloc[0]
    lines += ["", f"Recorded with torch {first['torch_version']}, {first['num_threads']} threads, git {first['git_sha']}, "
              f"host {first['hostname']}.", ""]  # fmt: skip
    path = out / "perf.md"
    temporary = out / ".perf.md.tmp"
    temporary.write_text("\n".join(lines), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _target(row) -> str:
    return "" if row.target is None or (isinstance(row.target, float) and math.isnan(row.target)) else f"≥ {row.target:g}"


def _met(row) -> str:
    value = str(row.meets_target).lower()
    return {"true": "✓", "false": "**missed**"}.get(value, "")

"""``varbench`` command line: run a sweep, re-render a report, list problems and estimators."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from estimators import (
    ESTIMATORS,
    PEER_STATUS,
    PROBLEM_FAMILIES,
    VARIANCE_REDUCTIONS,
    EstimatorError,
    ProblemError,
    VarianceReductionError,
)

from estimators.workloads import WORKLOADS

from . import environment
from .environment import DeviceError
from .executors import EXECUTORS, ExecutorError, open_executor
from .grid import CORE_ESTIMATORS, DTYPES, PRESETS, GridError, Sweep, check_base_seed, expand, preset
from .regression import BaselineError
from .table import TableError

USER_ERRORS = (ProblemError, EstimatorError, VarianceReductionError, GridError, DeviceError, TableError, BaselineError,
               ExecutorError)


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see `varbench {self.prog.split()[-1]} --help`)")


def _parse_list(text: str, what: str, convert, kind: str) -> tuple:
    values = []
    for item in text.split(","):
        try:
            values.append(convert(item.strip()))
        except ValueError:
            raise UsageError(f"{what} must be a comma-separated list of {kind}, got {item.strip()!r}") from None
    return tuple(values)


def _floats(text: str, what: str) -> tuple[float, ...]:
    return _parse_list(text, what, float, "numbers")


def _ints(text: str, what: str) -> tuple[int, ...]:
    return _parse_list(text, what, int, "integers")


def _params(assignments: list[str], flag: str = "--set") -> dict[str, tuple[float, ...]]:
    params: dict[str, tuple[float, ...]] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} takes NAME=VALUE[,VALUE…], got {assignment!r}")
        params[key.strip()] = _floats(value, f"{flag} {key.strip()}")
    return params


def _sweeps_from_args(args: argparse.Namespace) -> list[Sweep]:
    devices = tuple(d.strip() for d in args.device.split(","))
    if args.preset:
        explicit = [flag for flag in ("problem", "theta", "n", "estimator", "wrt", "variance_reduction")
                    if getattr(args, flag) is not None]  # fmt: skip
        explicit += ["set"] * bool(args.set) + ["estimator-param"] * bool(args.estimator_param)
        if explicit:
            raise UsageError(f"--preset fixes the grid; drop --{explicit[0].replace('_', '-')} or drop --preset")
        sweeps = preset(args.preset, devices)
        if args.replicates is not None:  # otherwise each preset's own choice (auto, or fixed for ci)
            sweeps = [dataclasses.replace(s, replicates=_replicates(args.replicates)) for s in sweeps]
        # A preset may fix a sweep's dtype (float64 cells); --dtype, when given, overrides every sweep.
        return [dataclasses.replace(s, dtype=args.dtype or s.dtype) for s in sweeps]
    if not args.problem:
        raise UsageError("give --problem NAME (see `varbench list`) or --preset " + "|".join(PRESETS))
    estimators = CORE_ESTIMATORS if args.estimator is None else tuple(ESTIMATORS) if args.estimator == "all" else tuple(
        e.strip() for e in args.estimator.split(",")
    )

    def defaults(problem: str) -> tuple[tuple[str, ...], str]:
        # A workload runs its own estimators at its checkpoints unless told otherwise.
        workload = WORKLOADS.get(problem)
        if workload is None:
            return estimators, "1"
        chosen = workload.estimator_names if args.estimator is None else estimators
        return chosen, ",".join(str(step) for step in workload.checkpoints)

    return [
        Sweep(
            problem=problem.strip(),
            thetas=_floats(args.theta or defaults(problem.strip())[1], "--theta"),
            estimators=defaults(problem.strip())[0],
            n_samples=_ints(args.n or "1,10,100,1000", "--n"),
            devices=devices,
            wrt=args.wrt,
            params=_params(args.set),
            estimator_params=_params(args.estimator_param, "--estimator-param"),
            variance_reductions=tuple(v.strip() for v in (args.variance_reduction or "none").split(",")),
            dtype=args.dtype or "float32",
            replicates=_replicates(args.replicates or "auto"),
        )
        for problem in args.problem.split(",")
    ]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:  # argparse prefixes "argument --workers: "
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        return check_base_seed(int(text))
    except ValueError:  # GridError too; argparse prefixes "argument --seed: "
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2^63 - 1, got {text!r}") from None


def _replicates(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--replicates must be 'auto' or an integer, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    from . import report, sweep  # heavy imports only when needed

    sweeps = _sweeps_from_args(args)
    # On a cluster the workers, not this machine, have or lack a GPU: cuda is checked when the cells run.
    executor = open_executor(args.executor, scheduler=args.scheduler, workers=args.workers)
    cells = expand(sweeps, None if args.executor == "local" else ["cpu", "cuda"])  # every error before any start
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        with executor:
            if args.executor != "local":  # --device auto: the devices the cluster's workers have
                cells = expand(sweeps, executor.devices())
            outcome = sweep.run_cells(cells, out, args.seed, progress=not args.no_progress, executor=executor)
    except KeyboardInterrupt:
        print(f"\nvarbench: interrupted; finished cells are saved in {out}/table.csv. "
              "Run the same command again to resume.", file=sys.stderr)  # fmt: skip
        return 130
    print(f"varbench: {outcome.measured} cells measured, {outcome.already_done} already in {outcome.table}, "
          f"{outcome.errors} failed")  # fmt: skip
    if not args.no_report:
        print(f"varbench: report written to {report.write_report(out)}")
    if outcome.errors:
        print(f"varbench: {outcome.errors} cells failed (see the 'note' column); re-run to retry them", file=sys.stderr)
        return 1
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from . import regression

    folder = regression.record_baseline(Path(args.out), base_seed=args.seed, progress=not args.no_progress)
    print(f"varbench: baseline recorded in {folder}/ (commit it to make it the reference for `make regress`)")
    return 0


def _regress(args: argparse.Namespace) -> int:
    from . import regression, report

    try:
        outcome = regression.run_regression(Path(args.baseline), Path(args.out), base_seed=args.seed,
                                            progress=not args.no_progress)  # fmt: skip
    except KeyboardInterrupt:
        print("\nvarbench: interrupted", file=sys.stderr)
        return 130
    verdicts = outcome.verdicts
    counts = verdicts.groupby(["metric", "verdict"]).size().unstack(fill_value=0)
    print("varbench: regression check against", args.baseline)
    print(counts.to_string())
    for _, row in verdicts[verdicts["verdict"] != "ok"].iterrows():
        print("  " + regression.describe_verdict(row))
    if not outcome.fingerprint_matches:
        print("varbench: speed was measured on another machine than the baseline: reported, not gated")
    print(f"varbench: verdicts in {Path(args.out) / regression.REGRESSIONS_CSV}; "
          f"report in {report.write_report(Path(args.out))}")  # fmt: skip
    if len(outcome.regressed):
        print(f"varbench: {len(outcome.regressed)} regression(s):", file=sys.stderr)
        for _, row in outcome.regressed.iterrows():
            print("  " + regression.describe_verdict(row), file=sys.stderr)
        return 1
    return 0


def _perf(args: argparse.Namespace) -> int:
    from . import perf
    from .environment import resolve_devices

    config = perf.PerfConfig(devices=tuple(resolve_devices(args.device)), billion=not args.no_billion)
    table = perf.run_perf(Path(args.out), config, progress=lambda m: print(f"varbench perf: {m}", flush=True))
    print(f"varbench: performance report written to {perf.write_perf_report(Path(args.out))}")
    missed = table[table["meets_target"].astype(str).str.lower() == "false"]
    if len(missed):
        print(f"varbench: {len(missed)} performance target(s) missed (see the report)", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _report(args: argparse.Namespace) -> int:
    from . import report

    print(f"varbench: report written to {report.write_report(Path(args.dir))}")
    return 0


def _list(args: argparse.Namespace) -> int:
    print("problems (--problem; --wrt; --set NAME=VALUE):")
    for family in PROBLEM_FAMILIES.values():
        params = ", ".join(f"{k}={v:g}" for k, v in family.defaults.items()) or "none"
        print(f"  {family.name:20s} {family.summary} [wrt {'|'.join(family.wrt_choices)}; defaults: {params}]")
    print("workloads (--problem; θ = --theta is a training step; the gradient is a vector):")
    for workload in WORKLOADS.values():
        print(f"  {workload.name:20s} {workload.summary} [checkpoints {', '.join(map(str, workload.checkpoints))} "
              f"(full: {', '.join(map(str, workload.full_checkpoints))}; any step up to {workload.train_steps}); "
              f"estimators: {', '.join(workload.estimators)}]")  # fmt: skip
    print("estimators (--estimator):")
    for estimator in ESTIMATORS.values():
        params = ", ".join(f"{k}={v:g}" for k, v in estimator.parameters.items())
        print(f"  {estimator.name:20s} {estimator.summary}" + (f" [parameters: {params}]" if params else ""))
    print("peers (pip install -e '.[peers]'; their estimators run when named or with --estimator all):")
    for peer, status in PEER_STATUS.items():
        print(f"  {peer:20s} {status}")
    print("variance reductions (--variance-reduction):")
    for scheme in VARIANCE_REDUCTIONS.values():
        print(f"  {scheme.name:20s} {scheme.summary}")
    print(f"presets (--preset): {', '.join(PRESETS)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="varbench", description="Benchmark Monte Carlo gradient estimators against exact gradients.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a sweep and write table.csv, plots and report.md to --out")
    run.add_argument("--preset", choices=PRESETS, help="a named grid (default: make bench; quick: make quick; "
                     "full: make full, default plus the larger discrete and variance-reduction grids; ci: make regress)")  # fmt: skip
    run.add_argument("--problem", help="problem name(s), comma-separated (see `varbench list`)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE[,VALUE…]",
                     help="problem parameter, e.g. --set k=-3 (several values sweep it); repeatable")  # fmt: skip
    run.add_argument("--wrt", help="parameter θ stands for (mu or sigma for the Gaussian costs)")
    run.add_argument("--theta", help="θ values, e.g. 0,1,3 (for a leading minus write --theta=-1,2); default 1")
    run.add_argument("--estimator",
                     help="estimator name(s), comma-separated, or all (peers included); default: all but peers")
    run.add_argument("--estimator-param", action="append", default=[], metavar="NAME=VALUE[,VALUE…]",
                     help="estimator parameter, e.g. --estimator-param temperature=0.1,0.5 (several values sweep it)")  # fmt: skip
    run.add_argument("--variance-reduction", help="scheme(s), comma-separated (see `varbench list`); default none")
    run.add_argument("--n", help="samples per estimate, e.g. 1,10,100,1000 (the default)")
    run.add_argument("--replicates", help="estimates per cell, or auto (5%% relative s.e. of the variance; the default "
                     "except for --preset ci, which fixes 2000)")  # fmt: skip
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, comma-separated, or auto (= all available)")
    run.add_argument("--dtype", choices=list(DTYPES), help="float32 (default) or float64; overrides a preset's dtypes")
    run.add_argument("--seed", type=_seed, default=0, help="base seed; each cell's seed is a hash of it and the cell")
    run.add_argument("--out", default="results/latest", help="results folder (re-running into it resumes)")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="where cells run: local (default, in this process) or dask (a dask.distributed cluster; "
                     "pip install -e '.[dask]')")  # fmt: skip
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="with --executor dask: an existing cluster's scheduler, e.g. tcp://host:8786")  # fmt: skip
    run.add_argument("--workers", type=_positive_int, metavar="K",
                     help="with --executor dask and no --scheduler: worker processes of the embedded cluster "
                     "(default: one per CPU core)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="write the table only")
    run.set_defaults(handler=_run)

    base = commands.add_parser("baseline", help="record the regression baseline: the ci preset and speed benchmarks")
    base.add_argument("--out", default="results/baseline", help="baseline folder (its contents are replaced)")
    base.add_argument("--seed", type=_seed, default=0, help="base seed of the baseline run")
    base.add_argument("--no-progress", action="store_true", help="no progress bar")
    base.set_defaults(handler=_baseline)

    reg = commands.add_parser("regress", help="re-measure the baseline's grid and fail on a statistical regression")
    reg.add_argument("--baseline", default="results/baseline", help="baseline folder (from `varbench baseline`)")
    reg.add_argument("--out", default="results/regress", help="folder for this run (replaced each time)")
    reg.add_argument("--seed", type=_seed, help="base seed (default: the baseline's, so unchanged code reproduces it)")
    reg.add_argument("--no-progress", action="store_true", help="no progress bar")
    reg.set_defaults(handler=_regress)

    prf = commands.add_parser("perf", help="performance: RNG floor, loop vs vectorised, memory, relative cost")
    prf.add_argument("--device", default="auto", help="cpu, cuda, comma-separated, or auto (= all available)")
    prf.add_argument("--out", default="results/perf", help="folder for perf.csv and perf.md")
    prf.add_argument("--no-billion", action="store_true", help="skip the 10^9-sample memory cell (~15 s on a CPU)")
    prf.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    prf.set_defaults(handler=_perf)

    rep = commands.add_parser("report", help="re-render plots and report.md from DIR/table.csv")
    rep.add_argument("dir", help="results folder holding table.csv")
    rep.set_defaults(handler=_report)

    lst = commands.add_parser("list", help="list problems, estimators and presets")
    lst.set_defaults(handler=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Sweeps, perf and regression runs time the estimators, not glibc returning and re-faulting their memory.
    environment.keep_freed_memory()
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (UsageError, *USER_ERRORS) as error:
        print(f"varbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

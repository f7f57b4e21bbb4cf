"""``varbench`` command line: run a sweep, re-render a report, list problems and estimators."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

from estimators import (
    ESTIMATORS,
    PEER_STATUS,
    PROBLEMS,
    VARIANCE_REDUCTIONS,
    EstimatorError,
    ProblemError,
    VarianceReductionError,
    make_problem,
)

from . import environment, run_folder
from .environment import DeviceError
from .exact_curves import ExactCurveError
from .executors import EXECUTORS, ExecutorError, open_executor
from .grid import DTYPES, MIN_REPLICATES, PRESETS, GridError, Sweep, check_base_seed, default_estimators, expand, preset
from .history import ALPHA as HISTORY_ALPHA
from .history import HistoryError
from .regression import BaselineError
from .table import TABLE_NAME, TableError, table_exists

USER_ERRORS = (ExactCurveError, ProblemError, EstimatorError, VarianceReductionError, GridError, DeviceError, TableError, BaselineError, HistoryError,
               ExecutorError, run_folder.RunFolderError)


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(f"{message} (see `varbench {self.prog.split()[-1]} --help`)")


def _items(text: str, what: str, kind: str) -> list[str]:
    """The comma-separated items of ``text``; an empty value or an empty item is an error naming ``what``."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise UsageError(f"{what} is empty; give a comma-separated list of {kind}")
    if "" in items:
        raise UsageError(f"{what} has an empty item in {text!r}; give a comma-separated list of {kind}")
    return items


def _parse_list(text: str, what: str, convert, kind: str) -> tuple:
    values = []
    for item in _items(text, what, kind):
        try:
            values.append(convert(item))
        except ValueError:
            raise UsageError(f"{what} must be a comma-separated list of {kind}, got {item!r}") from None
    return tuple(values)


def _names(text: str, what: str, kind: str) -> tuple[str, ...]:
    return tuple(_items(text, what, kind))


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
    devices = _names(args.device, "--device", "devices (cpu, cuda, cuda:N, auto)")
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
    if args.problem is None:
        raise UsageError("give --problem NAME (see `varbench list`) or --preset " + "|".join(PRESETS))
    problems = _names(args.problem, "--problem", "problem names (see `varbench list`)")
    estimators = default_estimators() if args.estimator is None else tuple(ESTIMATORS) if args.estimator == "all" else (
        _names(args.estimator, "--estimator", "estimator names (see `varbench list`) or all"))
    schemes = ("none",) if args.variance_reduction is None else _names(
        args.variance_reduction, "--variance-reduction", "variance reductions (see `varbench list`)")

    def defaults(problem: str) -> tuple[tuple[str, ...], str]:
        # A family may say what to measure when not told (a workload: its estimators, at its checkpoints).
        family = PROBLEMS.get(problem)
        chosen = family.default_estimators if args.estimator is None and family.default_estimators else estimators
        return chosen, ",".join(f"{theta:g}" for theta in family.default_thetas)

    return [
        Sweep(
            problem=problem,
            thetas=_floats(defaults(problem)[1] if args.theta is None else args.theta, "--theta"),
            estimators=defaults(problem)[0],
            n_samples=_ints("1,10,100,1000" if args.n is None else args.n, "--n"),
            devices=devices,
            wrt=args.wrt,
            params=_params(args.set),
            estimator_params=_params(args.estimator_param, "--estimator-param"),
            variance_reductions=schemes,
            dtype=args.dtype or "float32",
            replicates=_replicates("auto" if args.replicates is None else args.replicates),
        )
        for problem in problems
    ]


def _text(what: str):
    """An argparse type: any non-empty text (argparse names the flag; ``what`` says what is allowed)."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"is empty; give {what}")
        return text

    return parse


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
    if text.strip() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--replicates must be 'auto' or an integer >= {MIN_REPLICATES}, got {text!r}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a scheduler), raised where the signal arrives so that it unwinds like Ctrl-C."""


def _stopped(stop: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _stop_code(stop: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def _render_report(folder: Path) -> int | None:
    """Render folder/report.md; on Ctrl-C or SIGTERM one line and the exit code. report.md is replaced whole
    or not at all, so an interrupted render leaves the previous report (with its render time) or none."""
    from . import report

    try:
        # Figures drawn in worker processes: the command line's main module is guarded, so spawning is safe.
        path = report.write_report(folder, workers=report.plots.rendering_workers())
        print(f"varbench: report written to {path} and {path.with_suffix('.html')}")
    except KeyboardInterrupt as stop:
        print(f"\nvarbench: {_stopped(stop)} while rendering the report; {folder / TABLE_NAME} is intact and "
              f"`varbench report {folder}` renders it", file=sys.stderr)  # fmt: skip
        return _stop_code(stop)
    return None


def _run(args: argparse.Namespace) -> int:
    from . import sweep  # heavy imports only when needed

    sweeps = _sweeps_from_args(args)
    # On a cluster the workers, not this machine, have or lack a GPU: cuda is checked when the cells run.
    executor = open_executor(args.executor, scheduler=args.scheduler, workers=args.workers)
    cells = expand(sweeps, None if args.executor == "local" else ["cpu", "cuda"])  # every error before any start
    if args.force and args.keep_stale:
        raise UsageError("--force re-measures every cell and --keep-stale keeps some: give one of them")
    run_folder.check_not_claimed(Path(args.out), "run")
    out = run_folder.ensure_writable(Path(args.out))
    if not args.no_report:
        run_folder.check_report_replaceable(out)
    try:
        # The lock first, so a busy folder is reported before a cluster starts; this process appends every row.
        with run_folder.locked(out, "run", wait=args.wait), executor:
            if args.executor != "local":  # --device auto: the devices the cluster's workers have
                cells = expand(sweeps, executor.devices())
            outcome = sweep.run_cells(cells, out, args.seed, progress=not args.no_progress, executor=executor,
                                      force=args.force, keep_stale=args.keep_stale)  # fmt: skip
    except KeyboardInterrupt as stop:
        print(f"\nvarbench: {_stopped(stop)}; finished cells are saved in {out / TABLE_NAME}. "
              "Run the same command again to resume.", file=sys.stderr)  # fmt: skip
        return _stop_code(stop)
    again = f" ({outcome.remeasured} of them again)" if outcome.remeasured else ""
    kept = f" ({outcome.kept_stale} of them measured by other code, kept)" if outcome.kept_stale else ""
    print(f"varbench: {outcome.measured} cells measured{again}, {outcome.already_done} already{kept} in "
          f"{outcome.table}, {outcome.errors} failed")  # fmt: skip
    if not args.no_report:
        stopped = _render_report(out)
        if stopped is not None:
            return stopped
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
    from . import history, regression, report

    if args.history is not None:
        history.check_store(Path(args.history), create=True)  # a folder that is not a history: before measuring
    outcome = regression.run_regression(Path(args.baseline), Path(args.out), base_seed=args.seed,
                                        progress=not args.no_progress, render=report.write_report)  # fmt: skip
    print("varbench: regression check against", args.baseline)
    _print_verdicts(outcome)
    print(f"varbench: verdicts in {Path(args.out) / regression.REGRESSIONS_CSV}; report in {outcome.report}")
    if args.history is not None:
        added = history.append_run(Path(args.history), history.read_run(Path(args.out), outcome.verdicts))
        print(f"varbench: run added to the history as {added}")
    return _fail_on_regressions(outcome)


def _print_verdicts(outcome) -> None:
    from . import regression

    verdicts = outcome.verdicts
    if len(verdicts):
        print(verdicts.groupby(["metric", "verdict"]).size().unstack(fill_value=0).to_string())
    for _, row in verdicts[verdicts["verdict"] != "ok"].iterrows():
        print("  " + regression.describe_verdict(row))
    if not outcome.fingerprint_matches:
        print("varbench: speed was measured on another machine than the baseline: reported, not gated")


def _fail_on_regressions(outcome) -> int:
    from . import regression

    if len(outcome.regressed):
        print(f"varbench: {len(outcome.regressed)} regression(s):", file=sys.stderr)
        for _, row in outcome.regressed.iterrows():
            print("  " + regression.describe_verdict(row), file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import regression

    out = Path(args.out) if args.out is not None else None
    if out is not None:
        run_folder.check_claimable(out, "compare")  # before any work
    outcome = regression.compare_runs(Path(args.run_a), Path(args.run_b))
    print(f"varbench: {args.run_b} compared with {args.run_a}")
    _print_verdicts(outcome)
    if out is not None:
        run_folder.ensure_writable(out)
        with run_folder.locked(out, "compare", wait_hint=""):
            claim = run_folder.claim(out, "compare", (regression.REGRESSIONS_CSV,))
            run_folder.replace_whole(out / regression.REGRESSIONS_CSV, outcome.verdicts.to_csv(index=False).encode("utf-8"))
            claim.record()
        print(f"varbench: verdicts in {out / regression.REGRESSIONS_CSV}")
    return _fail_on_regressions(outcome)


def _history(args: argparse.Namespace) -> int:
    from . import history

    folder = Path(args.dir)
    if args.append:
        if args.order is not None or args.out != RENDER_OUT:
            raise UsageError("--append only adds runs; render with a second `varbench history DIR [--out] [--order]`")
        history.check_store(folder, create=True, flag="DIR")
        runs = [history.read_run(Path(run)) for run in args.append]  # every folder checked before any is added
        for run in runs:
            print(f"varbench: {run.key['source']} added to the history as {history.append_run(folder, run)}")
        return 0
    order = None
    if args.order is not None:
        try:
            order = [line.split()[0] for line in Path(args.order).read_text().splitlines() if line.strip()]
        except OSError as error:
            raise UsageError(f"--order {args.order} cannot be read ({error.strerror}); give a file of commit shas, "
                             "oldest first (git log --reverse --format=%H)") from None  # fmt: skip
    out = Path(args.out)
    if out.resolve() == folder.resolve():
        raise UsageError(f"--out {out} is the history folder; choose another")
    points = history.load_points(folder)
    run_folder.check_claimable(out, "history")
    analysis = history.analyse(points, order, alpha=args.alpha)
    if not len(analysis.runs):
        raise history.HistoryError(f"no run of {folder} is of a commit listed in --order {args.order}")
    run_folder.ensure_writable(out)
    with run_folder.locked(out, "history", wait_hint=""):
        claim = run_folder.claim(out, "history", history.RENDER_FILES)
        summary = history.render(analysis, out, order_given=order is not None)
        claim.record()
    for _, row in analysis.changes.iterrows():
        print("  " + history.describe_change(row))
    runs = len(analysis.runs)
    # A single run has no series to test yet: say so rather than report "no change".
    wait = "; a change needs at least 2 runs" if runs < 2 else ""
    print(f"varbench: {len(analysis.changes)} change(s) in {analysis.n_series} series over {runs} run{'s' if runs != 1 else ''}"
          f"{wait}; summary in {summary}")  # fmt: skip
    return 0


RENDER_OUT = "results/history"


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability strictly between 0 and 1")
    return value


def _perf(args: argparse.Namespace) -> int:
    from . import perf
    from .environment import resolve_devices

    config = perf.PerfConfig(devices=tuple(resolve_devices(args.device)), billion=not args.no_billion)
    out = Path(args.out)
    # perf replaces its own perf.csv and perf.md, so like baseline and regress it writes only into a folder that
    # is new, empty, or one it wrote before.
    run_folder.check_claimable(out, "perf", adopt=perf.is_old_perf_run)
    run_folder.ensure_writable(out)
    with run_folder.locked(out, "perf", wait_hint=""):
        claim = run_folder.claim(out, "perf", perf.PERF_FILES, adopt=perf.is_old_perf_run)
        table = perf.run_perf(out, config, progress=lambda m: print(f"varbench perf: {m}", flush=True))
        print(f"varbench: performance report written to {perf.write_perf_report(out)}")
        claim.record()
    missed = table[table["meets_target"].astype(str).str.lower() == "false"]
    if len(missed):
        print(f"varbench: {len(missed)} performance target(s) missed (see the report)", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .table import schema_markdown

    print(schema_markdown(), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from . import check

    rows = check.check_estimator(args.estimator, seed=args.seed)
    print(check.render(args.estimator, rows))
    return 0 if check.passed(rows) else 1


def _exact(args: argparse.Namespace) -> int:
    from . import exact_curves
    from .report import plots

    request = exact_curves.CurveRequest()
    changes: dict = {}
    if args.problem is not None:
        changes["problems"] = _names(args.problem, "--problem", "problem names (see `varbench list`)")
        changes["wrts"] = None  # each problem's first, unless --wrt says
    if args.wrt is not None:
        changes["wrts"] = _names(args.wrt, "--wrt", "parameter names (see `varbench list`)")
    if args.over is not None:
        changes["axis"] = exact_curves.parse_axis(args.over)
    if args.estimator is not None:
        changes["estimators"] = _names(args.estimator, "--estimator", "estimator names (see `varbench list`)")
    if args.set:
        changes["params"] = tuple(sorted((k, _single(v, f"--set {k}")) for k, v in _params(args.set).items()))
    if args.theta is not None:
        changes["theta"] = _single(_floats(args.theta, "--theta"), "--theta")
    if args.n is not None:
        changes["n_samples"] = _single(_ints(args.n, "--n"), "--n")
    request = dataclasses.replace(request, **changes)
    exact_curves.validate(request)  # every value checked before the folder is touched
    out = Path(args.out)
    run_folder.check_claimable(out, "exact")
    run_folder.ensure_writable(out)
    with run_folder.locked(out, "exact", wait_hint=""):
        claim = run_folder.claim(out, "exact", exact_curves.EXACT_FILES)
        frame = exact_curves.curves(request)
        run_folder.replace_whole(out / "exact.csv", frame.to_csv(index=False).encode("utf-8"))
        plots.exact_variance_curves(frame, out / "exact.png")
        claim.record()
    filled = int(frame["exact_var"].notna().sum())
    print(f"varbench: {filled} of {len(frame)} exact values in {out / 'exact.csv'} (the others: see its note column); "
          f"plot {out / 'exact.png'}")  # fmt: skip
    return 0


def _single(values: tuple, flag: str):
    if len(values) != 1:
        raise UsageError(f"{flag} takes one value here (sweep with --over), got {len(values)}")
    return values[0]


def _report(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not table_exists(folder / TABLE_NAME):
        raise TableError(f"no results table at {folder / TABLE_NAME}")
    run_folder.ensure_writable(folder, "DIR")
    run_folder.check_report_replaceable(folder)
    return _render_report(folder) or 0


def _list(args: argparse.Namespace) -> int:
    print("problems (--problem; --wrt; --set NAME=VALUE):")
    for family in (PROBLEMS.get(name) for name in PROBLEMS.names(exclude=("workload",))):
        params = ", ".join(f"{k}={v:g}" for k, v in family.defaults.items()) or "none"
        print(f"  {family.name:20s} {family.summary} [wrt {'|'.join(family.wrt_choices)}; defaults: {params}]")
    print("workloads (--problem; θ = --theta is a training step; the gradient is a vector):")
    for name in PROBLEMS.names("workload"):
        family = PROBLEMS.get(name)
        workload = make_problem(name).workload
        print(f"  {name:20s} {family.summary} [wrt {family.wrt_choices[0]}; checkpoints "
              f"{', '.join(map(str, workload.checkpoints))} (full: {', '.join(map(str, workload.full_checkpoints))}; "
              f"any step up to {workload.train_steps}); default estimators: {', '.join(family.default_estimators)}]")  # fmt: skip
    print("estimators (--estimator):")
    for name, estimator in ESTIMATORS.items():
        params = ", ".join(f"{k}={v:g}" for k, v in estimator.parameters.items())
        tags = ", ".join(sorted(ESTIMATORS.tags(name)))
        print(f"  {name:20s} {estimator.summary} [{tags}" + (f"; parameters: {params}]" if params else "]"))
    for registry in (PROBLEMS, ESTIMATORS):
        for name, why in registry.broken.items():
            print(f"  plug-in {registry.kind} {name} failed to load: {why}")
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
    run.add_argument("--wrt", type=_text("a parameter name (see `varbench list`)"),
                     help="parameter θ stands for (mu or sigma for the Gaussian costs)")
    run.add_argument("--theta", help="θ values, e.g. 0,1,3 or -1,2; default 1")
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
    run.add_argument("--out", default="results/latest", type=_text("a folder"),
                     help="results folder (re-running into it resumes)")
    run.add_argument("--force", action="store_true", help="re-measure every cell, even those already in the table")
    run.add_argument("--keep-stale", action="store_true",
                     help="keep finished cells measured by other code (another varbench, or an edited user problem) "
                     "instead of re-measuring them")  # fmt: skip
    run.add_argument("--wait", action="store_true",
                     help="if another varbench run is writing --out, wait for it instead of stopping")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="where cells run: local (default, in this process) or dask (a dask.distributed cluster; "
                     "pip install -e '.[dask]')")  # fmt: skip
    run.add_argument("--scheduler", metavar="ADDRESS", type=_text("a scheduler address, e.g. tcp://host:8786"),
                     help="with --executor dask: an existing cluster's scheduler, e.g. tcp://host:8786")  # fmt: skip
    run.add_argument("--workers", type=_positive_int, metavar="K",
                     help="with --executor dask and no --scheduler: worker processes of the embedded cluster "
                     "(default: one per CPU core)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="write the table only")
    run.set_defaults(handler=_run)

    base = commands.add_parser("baseline", help="record the regression baseline: the ci preset and speed benchmarks")
    base.add_argument("--out", default="results/baseline", type=_text("a folder"),
                      help="baseline folder: new, empty, or one a baseline was recorded into (its files are replaced)")
    base.add_argument("--seed", type=_seed, default=0, help="base seed of the baseline run")
    base.add_argument("--no-progress", action="store_true", help="no progress bar")
    base.set_defaults(handler=_baseline)

    reg = commands.add_parser("regress", help="re-measure the baseline's grid and fail on a statistical regression")
    reg.add_argument("--baseline", default="results/baseline", type=_text("a folder"),
                     help="baseline folder (from `varbench baseline`)")
    reg.add_argument("--out", default="results/regress", type=_text("a folder"),
                     help="folder for this run: new, empty, or one regress wrote (its files are replaced)")
    reg.add_argument("--seed", type=_seed, help="base seed (default: the baseline's, so unchanged code reproduces it)")
    reg.add_argument("--no-progress", action="store_true", help="no progress bar")
    reg.add_argument("--history", type=_text("a folder"), metavar="DIR",
                     help="also append this run (table, verdicts, speed) to the history in DIR (new, empty, or a history)")
    reg.set_defaults(handler=_regress)

    cmp = commands.add_parser("compare", help="the gate's verdicts of run folder RUN_B against RUN_A; exit 1 on a regression")
    cmp.add_argument("run_a", type=_text("a run folder"), help="the reference run folder (run, regress or baseline)")
    cmp.add_argument("run_b", type=_text("a run folder"), help="the run folder judged against it")
    cmp.add_argument("--out", type=_text("a folder"), help="also write regressions.csv here (a new or empty folder, "
                     "or one compare wrote)")  # fmt: skip
    cmp.set_defaults(handler=_compare)

    his = commands.add_parser("history", help="series across commits and the commits where they changed (plots, "
                              "tables, summary.md); --append adds runs")  # fmt: skip
    his.add_argument("dir", type=_text("a history folder"), help="the history folder (varbench regress --history DIR)")
    # Repeatable rather than nargs="+", which would swallow DIR when it is written after the run folders.
    his.add_argument("--append", action="append", metavar="RUN_DIR", type=_text("a run folder"),
                     help="add this run folder to the history instead of rendering it (repeat for several)")
    his.add_argument("--out", default=RENDER_OUT, type=_text("a folder"),
                     help="folder for summary.md, history.md, history.csv, changes.csv and the plots")
    his.add_argument("--order", type=_text("a file"), metavar="FILE",
                     help="commit order, oldest first, one sha per line (git log --reverse --format=%%H > FILE); "
                     "default: the runs' dates")  # fmt: skip
    his.add_argument("--alpha", type=_alpha, default=HISTORY_ALPHA,
                     help="chance of reporting any change on a history where nothing changed (default 0.01)")
    his.set_defaults(handler=_history)

    prf = commands.add_parser("perf", help="performance: RNG floor, loop vs vectorised, memory, relative cost")
    prf.add_argument("--device", default="auto", help="cpu, cuda, comma-separated, or auto (= all available)")
    prf.add_argument("--out", default="results/perf", type=_text("a folder"), help="folder for perf.csv and perf.md")
    prf.add_argument("--no-billion", action="store_true", help="skip the 10^9-sample memory cell (~15 s on a CPU)")
    prf.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    prf.set_defaults(handler=_perf)

    rep = commands.add_parser("report", help="re-render plots and report.md from DIR/table.csv")
    rep.add_argument("dir", type=_text("a results folder"), help="results folder holding table.csv")
    rep.set_defaults(handler=_report)

    lst = commands.add_parser("list", help="list problems, estimators and presets")
    lst.set_defaults(handler=_list)

    sch = commands.add_parser("schema", help="print the results table's schema (Markdown, as in docs/schema.md)")
    sch.set_defaults(handler=_schema)

    exa = commands.add_parser("exact", help="exact variance curves over a grid of θ or a problem parameter, no "
                              "sampling (default: Mohamed et al. 2020, Figure 2) -> exact.csv, exact.png")  # fmt: skip
    exa.add_argument("--problem", help="problem name(s), comma-separated (default: the three Gaussian test costs)")
    exa.add_argument("--wrt", help="parameter(s) θ stands for, comma-separated (default: mu,sigma)")
    exa.add_argument("--over", metavar="NAME=LOW:HIGH:STEPS", help="the swept quantity: theta or a problem "
                     "parameter (default: k=-5:5:200)")  # fmt: skip
    exa.add_argument("--estimator", help="estimator name(s), comma-separated (default: score_function,pathwise,"
                     "measure_valued)")  # fmt: skip
    exa.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="fixed problem parameter; repeatable")
    exa.add_argument("--theta", help="θ when --over is a problem parameter (default: the family's default value)")
    exa.add_argument("--n", help="samples per estimate (default 1: per-sample variance)")
    exa.add_argument("--out", default="results/exact", type=_text("a folder"), help="folder for exact.csv and exact.png")
    exa.set_defaults(handler=_exact)

    chk = commands.add_parser("check", help="check an estimator (yours: module:attribute) against every shipped problem")
    chk.add_argument("estimator", help="estimator name, module:attribute, or an installed plug-in's name")
    chk.add_argument("--seed", type=_seed, default=0, help="seed of the check's draws")
    chk.set_defaults(handler=_check)
    return parser


# Options whose value may start with a minus sign (θ = -1, N = -5 to be refused with its own message).
_NUMERIC_OPTIONS = ("--theta", "--n", "--set", "--estimator-param", "--seed", "--replicates", "--workers")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--theta -1,2`` -> ``--theta=-1,2``: argparse takes "-1,2" for an option (only "-1" looks numeric to it)."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _NUMERIC_OPTIONS and re.match(r"-[0-9.]", token) and "--" not in out:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _terminate_on_sigterm():
    """Make SIGTERM raise Terminated in the main thread; returns a function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a repeated SIGTERM must not interrupt the unwinding
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a file descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    # Sweeps, perf and regression runs time the estimators, not glibc returning and re-faulting their memory.
    environment.keep_freed_memory()
    restore = _terminate_on_sigterm()
    try:
        args = build_parser().parse_args(_attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
        code = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows up here, not in the interpreter's exit
        return code
    except (UsageError, *USER_ERRORS) as error:
        print(f"varbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM anywhere else: one line, not a traceback
        print(f"\nvarbench: {_stopped(stop)}", file=sys.stderr)
        return _stop_code(stop)
    except BrokenPipeError:
        # `varbench list | head -1`: the reader has what it wanted; exit as a process killed by SIGPIPE would.
        _silence_stdout()
        return 128 + signal.SIGPIPE
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())

"""Run a list of cells into a results folder: rows are appended as comparison blocks finish, finished cells are skipped
on a re-run, and a failing cell is recorded as an error row instead of ending the sweep. Where the cells are
measured (this process or a Dask cluster) is the executor's business (bench/executors.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import cell_progress, environment, run_folder
from .executors import DaskExecutor, LocalExecutor
from .grid import Cell, check_base_seed
from .table import TABLE_NAME, append_rows, load_table, prepare_for_append, write_parquet


@dataclass(frozen=True)
class SweepOutcome:
    table: Path
    measured: int
    already_done: int
    errors: int
    remeasured: int = 0  # finished cells measured again: stale (measured by other code), or all with force
    kept_stale: int = 0  # finished cells measured by other code, kept (keep_stale)


def finished_runs(table: Path) -> dict[tuple, tuple[str, str]]:
    """Keys of cells already measured (ok or skipped) in ``table``, each with the (code_hash, user_code_hash) of
    its latest such row; errors are retried."""
    if not table.exists():
        return {}
    prepare_for_append(table)  # never repair or append to a file that is not this version's varbench table
    frame = load_table(table)
    done = frame[frame["status"].isin(["ok", "skipped"])]
    return {
        (row.cell_id, int(row.base_seed), None if row.replicates_rule == "auto" else int(row.n_replicates)):
        (row.code_hash, row.user_code_hash)
        for row in done.itertuples()
    }


def code_of(cell: Cell) -> tuple[str, str]:
    """(code_hash, user_code_hash) a row measured now by this process would carry."""
    return environment.code_fingerprint(), environment.user_code_fingerprint(cell.problem, cell.estimator)


def _cell_key(cell: Cell, base_seed: int) -> tuple:
    # An auto-sized cell is the same run whatever M its pilot chose; a fixed one only at the same M.
    return (cell.cell_id, base_seed, cell.replicates)


def run_cells(cells: list[Cell], out_dir: Path, base_seed: int, *, progress: bool = True,
              executor: LocalExecutor | DaskExecutor | None = None, timed: bool = True, force: bool = False,
              keep_stale: bool = False, wait: bool = False) -> SweepOutcome:  # fmt: skip
    """Measure every cell not already in ``out_dir/table.csv``, appending one row per cell as its comparison
    block finishes (an interrupted block is measured again on the next run, to the same statistics).

    ``executor``: where blocks run (default: in this process; see bench/executors.py). Wherever they run, rows
    come back here and are appended by this process alone, in the order they finish, under the folder's lock
    (another process holding it: RunFolderError, or with ``wait`` wait for it). A finished cell measured by other
    code (its row's code_hash or user_code_hash differs) is measured again unless ``keep_stale``; ``force``
    measures every cell again. Rows are only ever appended: readers take each cell's latest. ``timed=False``
    leaves the timing columns empty (tests that only need the statistics).
    """
    check_base_seed(base_seed)
    run_folder.ensure_writable(out_dir)
    with run_folder.locked(out_dir, "run", wait=wait):
        return _run_locked(cells, out_dir, base_seed, progress=progress, executor=executor, timed=timed, force=force,
                           keep_stale=keep_stale)  # fmt: skip


def _run_locked(cells, out_dir, base_seed, *, progress, executor, timed, force, keep_stale) -> SweepOutcome:
    table = out_dir / TABLE_NAME
    done = finished_runs(table)
    stale = {cell for cell in cells if done.get(_cell_key(cell, base_seed), code_of(cell)) != code_of(cell)}
    todo = [cell for cell in cells
            if force or _cell_key(cell, base_seed) not in done or (cell in stale and not keep_stale)]  # fmt: skip
    if stale and not force:
        print(f"varbench: {len(stale)} finished cells were measured by other code (varbench's or the problem "
              f"module's source changed since); " + ("keeping them (--keep-stale)" if keep_stale else
              "measuring them again (--keep-stale keeps them)"), file=sys.stderr)  # fmt: skip
    remeasured = sum(_cell_key(cell, base_seed) in done for cell in todo)
    errors = 0
    # In a log (CI, make bench > file) redraw rarely instead of hundreds of times.
    interval = 0.1 if sys.stderr.isatty() else 15.0
    bar = tqdm(total=len(todo), desc="varbench", unit="cell", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=interval)  # fmt: skip

    current = [""]

    def show(cell: Cell) -> None:
        current[0] = f"{cell.problem} N={cell.n_samples}"
        bar.set_postfix_str(current[0], refresh=False)

    def show_inside(text: str) -> None:  # a long cell's own progress (bench/cell_progress.py)
        bar.set_postfix_str(f"{current[0]}: {text}")

    written: set[Cell] = set()
    try:
        with bar, cell_progress.shown_by(show_inside, interval):
            for block in (executor or LocalExecutor()).rows(comparison_blocks(todo), base_seed, timed=timed, show=show):
                for cell, row in block:
                    if cell in written:  # an executor bug must not become a duplicate row
                        raise RuntimeError(f"executor returned cell {cell.cell_id} ({cell.method}) twice")
                    written.add(cell)
                    errors += row["status"] == "error"
                append_rows(table, [row for _, row in block])
                bar.update(len(block))
    finally:
        if table.exists():  # the typed copy, once per sweep, finished or interrupted (bench/table.py)
            write_parquet(table)
    return SweepOutcome(table, measured=len(todo), already_done=len(cells) - len(todo), errors=errors,
                        remeasured=remeasured, kept_stale=len(stale) if keep_stale and not force else 0)


def comparison_blocks(cells: list[Cell]) -> list[list[Cell]]:
    """``cells`` grouped by ``Cell.block_key`` (the cells whose costs are measured together), in first-seen order."""
    blocks: dict[tuple, list[Cell]] = {}
    for cell in cells:
        blocks.setdefault(cell.block_key, []).append(cell)
    return list(blocks.values())

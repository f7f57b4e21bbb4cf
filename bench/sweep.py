"""Run a list of cells into a results folder: rows are appended as cells finish, finished cells are skipped
on a re-run, and a failing cell is recorded as an error row instead of ending the sweep. Where the cells are
measured (this process or a Dask cluster) is the executor's business (bench/executors.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import cell_progress
from .executors import DaskExecutor, LocalExecutor
from .grid import Cell, check_base_seed
from .table import TABLE_NAME, append_row, load_table, prepare_for_append


@dataclass(frozen=True)
class SweepOutcome:
    table: Path
    measured: int
    already_done: int
    errors: int


def finished_runs(table: Path) -> set[tuple]:
    """Keys of cells already measured (ok or skipped) in ``table``; errors are retried."""
    if not table.exists():
        return set()
    prepare_for_append(table)  # never repair or append to a file that is not this version's varbench table
    frame = load_table(table)
    done = frame[frame["status"].isin(["ok", "skipped"])]
    return {
        (row.cell_id, int(row.base_seed), None if row.replicates_rule == "auto" else int(row.n_replicates))
        for row in done.itertuples()
    }


def _cell_key(cell: Cell, base_seed: int) -> tuple:
    # An auto-sized cell is the same run whatever M its pilot chose; a fixed one only at the same M.
    return (cell.cell_id, base_seed, cell.replicates)


def run_cells(cells: list[Cell], out_dir: Path, base_seed: int, *, progress: bool = True,
              executor: LocalExecutor | DaskExecutor | None = None, timed: bool = True) -> SweepOutcome:  # fmt: skip
    """Measure every cell not already in ``out_dir/table.csv``, appending one row per finished cell.

    ``executor``: where cells run (default: in this process; see bench/executors.py). Wherever they run, rows
    come back here and are appended by this process alone, in the order they finish. ``timed=False`` leaves
    the timing columns empty (tests that only need the statistics).
    """
    check_base_seed(base_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / TABLE_NAME
    done = finished_runs(table)
    todo = [cell for cell in cells if _cell_key(cell, base_seed) not in done]
    errors = 0
    # In a log (CI, make bench > file) redraw rarely instead of hundreds of times.
    interval = 0.1 if sys.stderr.isatty() else 15.0
    bar = tqdm(total=len(todo), desc="varbench", unit="cell", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=interval)  # fmt: skip

    current = [""]

    def show(cell: Cell) -> None:
        current[0] = f"{cell.problem} {cell.method} N={cell.n_samples}"
        bar.set_postfix_str(current[0], refresh=False)

    def show_inside(text: str) -> None:  # a long cell's own progress (bench/cell_progress.py)
        bar.set_postfix_str(f"{current[0]}: {text}")

    written: set[Cell] = set()
    with bar, cell_progress.shown_by(show_inside, interval):
        for cell, row in (executor or LocalExecutor()).rows(todo, base_seed, timed=timed, show=show):
            if cell in written:  # an executor bug must not become a duplicate row
                raise RuntimeError(f"executor returned cell {cell.cell_id} ({cell.method}) twice")
            written.add(cell)
            errors += row["status"] == "error"
            append_row(table, row)
            bar.update(1)
    return SweepOutcome(table, measured=len(todo), already_done=len(cells) - len(todo), errors=errors)

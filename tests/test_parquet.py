"""table.parquet: written beside table.csv when a sweep ends, the same rows with the same types, preferred by
readers while it matches the CSV it was written from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import cli
from bench.table import (
    ARROW_SCHEMA,
    COLUMNS,
    MAX_SEED,
    PARQUET_NAME,
    TABLE_NAME,
    _load_parquet_if_current,
    _parse_csv,
    append_rows,
    load_table,
    table_exists,
    write_parquet,
)

# Skipped cells (score_function_loo at N = 1: empty statistics) and timed cells (cost columns filled).
RUN = ["run", "--problem", "seed_dependent", "--theta", "3", "--n", "1,10", "--replicates", "50",
       "--estimator", "pathwise,naive,score_function_loo", "--no-progress", "--no-report"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parquet") / "run"
    assert cli.main([*RUN, "--out", str(out)]) == 0
    return out


def from_csv(folder: Path) -> pd.DataFrame:
    path = folder / TABLE_NAME
    return _parse_csv(path, path.read_bytes())


def test_the_parquet_round_trips_the_table_exactly(run):
    assert (run / PARQUET_NAME).is_file()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the atomic write left nothing behind
    csv, typed = from_csv(run), load_table(run / TABLE_NAME)
    assert list(typed.columns) == COLUMNS
    assert (typed["status"] == "skipped").any() and typed["grad_var"].isna().any()  # NaN cells are exercised
    assert typed["seconds_per_estimate"].notna().any()
    pd.testing.assert_frame_equal(typed, csv, check_dtype=True, check_exact=True)
    # Floats bit for bit (assert_frame_equal treats NaN == NaN; this checks the same positions hold NaN).
    for column in typed.select_dtypes("float64"):
        np.testing.assert_array_equal(typed[column].to_numpy(), csv[column].to_numpy())
    # The file's own types are the schema's, not whatever pandas inferred.
    assert pq.read_schema(run / PARQUET_NAME).remove_metadata() == ARROW_SCHEMA


def test_readers_prefer_the_parquet_and_fall_back_to_the_csv(run, tmp_path):
    only_parquet = tmp_path / "only_parquet"
    only_parquet.mkdir()
    (only_parquet / PARQUET_NAME).write_bytes((run / PARQUET_NAME).read_bytes())
    assert table_exists(only_parquet / TABLE_NAME)
    pd.testing.assert_frame_equal(load_table(only_parquet / TABLE_NAME), from_csv(run), check_exact=True)

    # A row appended to the CSV after the parquet was written (an older varbench, a hand edit): the CSV wins.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / PARQUET_NAME).write_bytes((run / PARQUET_NAME).read_bytes())
    lines = (run / TABLE_NAME).read_text().splitlines(keepends=True)
    (stale / TABLE_NAME).write_text("".join(lines + lines[-1:]))
    assert len(load_table(stale / TABLE_NAME)) == len(lines)  # header + rows + the copy = rows + 1

    # An unreadable parquet beside a CSV: the CSV is read; without one, one clear error naming the file.
    (stale / PARQUET_NAME).write_bytes(b"PAR1 not really")
    assert len(load_table(stale / TABLE_NAME)) == len(lines)
    (stale / TABLE_NAME).unlink()
    with pytest.raises(ValueError, match=f"results table {stale / PARQUET_NAME} is corrupt"):
        load_table(stale / TABLE_NAME)


def test_extreme_values_and_missing_seeds_round_trip(run, tmp_path):
    row = from_csv(run).iloc[0].to_dict()
    extreme = dict(row, seed=MAX_SEED, base_seed=MAX_SEED - 1, grad_var=math.inf, bias_z=-math.inf, kurtosis=math.nan,
                   theta=5e-324, note='comma, "quote" and\nnewline', biased=None)  # fmt: skip
    path = tmp_path / TABLE_NAME
    append_rows(path, [{c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in row.items()}, extreme])
    write_parquet(path)
    typed, csv = load_table(path), from_csv(tmp_path)
    pd.testing.assert_frame_equal(typed, csv, check_dtype=True, check_exact=True)
    assert typed["seed"].iloc[1] == MAX_SEED and typed["seed"].dtype == "int64"
    assert typed["grad_var"].iloc[1] == math.inf and typed["theta"].iloc[1] == 5e-324
    assert typed["note"].iloc[1] == extreme["note"] and typed["biased"].iloc[1] is None
    # A missing seed: nullable Int64 from both readers, never a float.
    (tmp_path / "missing").mkdir()
    append_rows(tmp_path / "missing" / TABLE_NAME, [dict(row, seed=None), dict(row, seed=MAX_SEED)])
    write_parquet(tmp_path / "missing" / TABLE_NAME)
    typed = load_table(tmp_path / "missing" / TABLE_NAME)
    pd.testing.assert_frame_equal(typed, from_csv(tmp_path / "missing"), check_dtype=True, check_exact=True)
    assert str(typed["seed"].dtype) == "Int64" and typed["seed"].iloc[1] == MAX_SEED


def test_a_resumed_sweep_refreshes_the_parquet_at_its_end(run, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (TABLE_NAME, PARQUET_NAME):
        (folder / name).write_bytes((run / name).read_bytes())
    more = [arg if arg != "3" else "1,3" for arg in RUN]  # θ = 1 is new, θ = 3 is done
    assert cli.main([*more, "--out", str(folder)]) == 0
    csv = from_csv(folder)
    assert len(csv) > len(from_csv(run))
    assert _load_parquet_if_current(folder / PARQUET_NAME, folder / TABLE_NAME) is not None  # written from this CSV
    pd.testing.assert_frame_equal(load_table(folder / TABLE_NAME), csv, check_exact=True)

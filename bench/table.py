"""The results table: its schema (the one place it is defined), appending rows as cells finish, and loading
with validation so a corrupt file is reported, never silently overwritten.

Each run folder holds ``table.csv`` (appended as cells finish: what a killed run keeps) and ``table.parquet``
beside it (the same rows with their types, replaced whole when a sweep ends or is interrupted: rewriting it after
every block would cost a parse of the whole table each time). The parquet records the sha256 of the CSV it was
written from; readers prefer it while it matches, and otherwise (older folders, a sweep still running, a CSV
edited after) read the CSV."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# (column, type, meaning). docs/schema.md is generated from it (varbench schema); a test keeps the two equal.
SCHEMA: list[tuple[str, str, str]] = [
    ("cell_id", "str", "hash of the cell's identity (problem, params, wrt, theta, estimator, N, device, dtype, and estimator_params and variance_reduction when set)"),
    ("status", "str", "ok | skipped (estimator does not apply; see note) | error (see note)"),
    ("note", "str", "why a cell was skipped or failed; empty when ok"),
    ("problem", "str", "problem family name (see `varbench list`)"),
    ("problem_params", "str", "fixed problem parameters as JSON with sorted keys, e.g. {\"k\": 1.0, \"sigma\": 1.0}"),
    ("wrt", "str", "the parameter θ stands for: theta (seed problems), mu or sigma (Gaussian costs), logit (Bernoulli problems), logit0 (categorical_toy), shape/rate (gamma), a/b (beta), alpha1 (dirichlet) or mu1 (diagonal Gaussians); for workloads the parameter vector: m,log_s (bayes_logreg), encoder (discrete_vae); see `varbench list`"),
    ("theta", "float", "value of θ at which the gradient is estimated; for workloads the training step of the checkpoint"),
    ("estimator", "str", "estimator name (see `varbench list`)"),
    ("estimator_params", "str", "the estimator's own parameters as JSON with sorted keys, defaults included, e.g. {\"temperature\": 0.5}; {} when it has none"),
    ("variance_reduction", "str", "variance-reduction scheme composed with the estimator (see `varbench list`); none = plain Monte Carlo"),
    ("method", "str", "display name of the estimator variant: estimator[params]+variance_reduction, e.g. gumbel_softmax[temperature=0.5]"),
    ("device", "str", "torch device the estimates were computed on (cpu, cuda, cuda:1, …)"),
    ("device_name", "str", "CPU model or GPU name of that device"),
    ("dtype", "str", "floating-point type of the computation (float32 or float64)"),
    ("n_samples", "int", "N: samples per estimate"),
    ("n_replicates", "int", "M: independent estimates drawn for this cell"),
    ("replicates_rule", "str", "how M was chosen: auto (pilot kurtosis, target 5% relative s.e. of the variance) or fixed"),
    ("cost_evals_per_sample", "int", "cost-function evaluations per sample (measure_valued: 2 per Gaussian parameter θ enters, +1 if f depends on θ; arm, disarm: 2; rebar, relax: 3); on an episodic problem (`cartpole_policy`), episodes rolled out per sample (2 for a baseline fitted on N separate episodes), so `samples_per_second` × it is episodes per second"),
    ("grad_mean", "float", "mean of the M estimates (workloads, n_params > 1: the norm ‖mean‖₂ of the mean gradient vector)"),
    ("true_grad", "float", "exact dL/dθ from the problem's closed form, or the reference value when there is none (see true_grad_se); workloads: ‖exact gradient‖₂"),
    ("bias", "float", "grad_mean − true_grad (workloads: ‖mean − exact‖₂, the norm of the bias vector)"),
    ("bias_se", "float", "standard error of grad_mean: sqrt(grad_var / M) (workloads: sqrt(Σ_j se_j²))"),
    ("bias_z", "float", "bias / sqrt(bias_se² + true_grad_se² + rounding²); ~N(0, 1) for an unbiased estimator (±inf if the estimates are constant and wrong); workloads: the per-coordinate z of largest magnitude"),
    ("bias_p_value", "float", "two-sided p-value of bias_z (workloads: Bonferroni-corrected over the n_params coordinates)"),
    ("biased", "bool", "bias_p_value < 0.001: the estimator is measurably biased on this cell; empty when there is no verdict (variance_infinite)"),
    ("expected_unbiased", "bool", "whether theory says the estimator is unbiased on this problem"),
    ("variance_infinite", "bool", "the problem declares the estimates' second moment infinite at this θ (see note): grad_var is the sample value of an infinite quantity, and bias_z, bias_p_value, biased and the variance interval are empty"),
    ("grad_var", "float", "sample variance (ddof=1) of the M estimates = variance of an N-sample estimate (workloads: the mean per-coordinate variance tr(Σ)/n_params)"),
    ("grad_var_ci_low", "float", "lower end of the 95% interval for grad_var (Bonett 2006, kurtosis-adjusted; workloads: log-normal from the replicates' squared deviations)"),
    ("grad_var_ci_high", "float", "upper end of that interval"),
    ("grad_var_rel_se", "float", "relative standard error of grad_var from the sample kurtosis"),
    ("kurtosis", "float", "Pearson kurtosis of the M estimates (3 for Gaussian estimates); empty for workloads"),
    ("per_sample_var", "float", "grad_var × N: the variance of one sample's contribution (for independent-sample estimators)"),
    ("exact_mean", "float", "exact mean of one N-sample estimate, computed without sampling (estimators.exact: closed forms, quadrature, enumeration); differs from true_grad for a biased estimator; empty where exact_var_note says why"),
    ("exact_var", "float", "exact variance of one N-sample estimate (the quantity grad_var estimates), computed the same way; empty where exact_var_note says why"),
    ("exact_var_note", "str", "why exact_mean and exact_var are empty (no exact form registered for the estimator on this problem, a trained control variate, a workload, infinite variance, …); empty when they are filled"),
    ("exact_var_covered", "bool", "exact_var lies inside [grad_var_ci_low, grad_var_ci_high]; over many cells about 95% should (the report counts them); empty without both, or where both variances are at the dtype's rounding (exact_var_note says so)"),
    ("mse", "float", "bias² + grad_var (workloads: bias²/n_params + grad_var, per coordinate)"),
    ("n_params", "int", "coordinates of the gradient: 1 for problems with scalar θ; the parameter vector's size for workloads"),
    ("grad_var_max", "float", "largest per-coordinate variance of the estimates (= grad_var when n_params = 1)"),
    ("grad_norm_var", "float", "sample variance of the estimates' Euclidean norm ‖ĝ‖₂ (of |ĝ| when n_params = 1)"),
    ("true_grad_se", "float", "error of the ground truth itself: 0 for a closed form; quadrature error bound (bayes_logreg), float64 rounding (discrete_vae), or the reference estimate's standard error for a user problem without an exact gradient"),
    ("objective", "float", "value of the objective L(θ) at the cell (the ELBO at the checkpoint for workloads); empty when unknown"),
    ("n_nonfinite", "int", "estimates that were NaN or ±inf (excluded from the statistics)"),
    ("seconds_per_estimate", "float", "cost of one estimate: median over the block's timing rounds of one call's time / timing_replicates (see cost_clock); empty when the cost was not measured"),
    ("seconds_per_estimate_ci_low", "float", "lower end of the 95% percentile-bootstrap interval of seconds_per_estimate over the rounds"),
    ("seconds_per_estimate_ci_high", "float", "upper end of that interval"),
    ("samples_per_second", "float", "n_samples / seconds_per_estimate"),
    ("relative_cost", "float", "time per sample relative to the device's RNG floor: median over rounds of (call time / time of torch.randn drawing the same number of random values, timed in the same round); what the machine does to both calls cancels"),
    ("relative_cost_ci_low", "float", "lower end of its 95% interval: the percentile bootstrap over the rounds, widened on the log scale by the run-to-run spread measured on a shared machine (sd 0.025), so that it covers a re-run"),
    ("relative_cost_ci_high", "float", "upper end of that interval"),
    ("work_normalized_var", "float", "grad_var × n_samples × relative_cost: variance of an estimate times its cost, the cost in units of the RNG floor's time per sample (Glynn–Whitt efficiency; lower is better); × floor_seconds_per_sample gives variance × seconds"),
    ("work_normalized_var_ci_low", "float", "lower end of its 95% interval: grad_var's and relative_cost's intervals combined on the log scale"),
    ("work_normalized_var_ci_high", "float", "upper end of that interval"),
    ("floor_seconds_per_sample", "float", "the block's RNG floor: median seconds per random value of torch.randn on the cell's device and dtype, same clock"),
    ("cost_clock", "str", "process_cpu (cpu: CPU time of this process, one intra-op thread, so a competing process cannot stretch it) or wall_synchronized (cuda: wall time, device synchronised)"),
    ("timing_replicates", "int", "replicates per timed call, the same for every variant of the comparison block (about 2^17 random values per call)"),
    ("cost_rounds", "int", "timing rounds behind the medians: each round times every variant of the block and the floor once, in a shuffled order"),
    ("cost_time_s", "float", "wall time of the block's cost measurement charged to this cell (the block's total over the cells it timed)"),
    ("seed", "int", "torch seed of this cell: a hash of (base seed, cell), so the cell re-runs alone to the same numbers"),
    ("base_seed", "int", "the sweep's --seed"),
    ("torch_version", "str", "torch.__version__"),
    ("num_threads", "int", "torch intra-op threads"),
    ("git_sha", "str", "commit of varbench that produced the row (+ '-dirty' with uncommitted changes)"),
    ("hostname", "str", "machine that produced the row"),
    ("started_at", "str", "UTC time the cell started (ISO 8601)"),
    ("code_hash", "str", "16 hex digits of sha256 over varbench's measuring source (bench/ and estimators/ but the CLI, report, plot and gate modules), committed or not; a re-run re-measures finished cells whose code_hash or user_code_hash differs from the running code's (--keep-stale keeps them)"),
    ("user_code_hash", "str", "for a user problem or estimator (module:attribute), 16 hex digits of sha256 over its module's source file (both combined when the cell names two); empty for varbench's own"),
    ("elapsed_s", "float", "wall time spent on the cell: its statistics (pilot included) plus cost_time_s"),
]
COLUMNS = [name for name, _, _ in SCHEMA]


def schema_markdown() -> str:
    """docs/schema.md: the table's columns as this module defines them (``varbench schema`` prints it; a test
    keeps the committed file equal to it, so the documentation cannot drift from the code)."""
    lines = ["# The results table (`table.csv`)", "",
             "Generated from `bench/table.py` by `varbench schema`; do not edit by hand. One row per cell (see "
             "docs/statistics.md for what a cell is and how each statistic is computed). Floats are written with "
             "full precision (`repr`), so numbers round-trip exactly; `seed` and `base_seed` are integers in "
             "[0, 2⁶³) read back as exact int64; booleans are `True`/`False`, empty where there is no verdict. "
             "`table.parquet` beside it holds the same rows with these types (string, float64, int64, bool; empty "
             "is null); readers prefer it while it matches the CSV it was written from.", "",
             "| column | type | meaning |", "|---|---|---|"]  # fmt: skip
    lines += [f"| `{name}` | {kind} | {meaning.replace('|', chr(92) + '|')} |" for name, kind, meaning in SCHEMA]
    return "\n".join(lines) + "\n"
_TYPES = {name: kind for name, kind, _ in SCHEMA}
BOOL_COLUMNS = [name for name, kind, _ in SCHEMA if kind == "bool"]
TABLE_NAME = "table.csv"
PARQUET_NAME = "table.parquet"
# The parquet file's column types, from the schema: every column nullable (an empty CSV field is a null).
ARROW_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
ARROW_SCHEMA = pa.schema([(name, ARROW_TYPES[kind]) for name, kind, _ in SCHEMA])
CSV_DIGEST_KEY = b"varbench.csv_sha256"  # parquet metadata: the CSV bytes the file was written from
STR_COLUMNS = [name for name, kind, _ in SCHEMA if kind == "str"]


class TableError(ValueError):
    """A results table that cannot be read as a varbench table."""


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows (header first if the file is new) in one write, flushed and fsynced, so a crash loses nothing
    finished and at worst leaves one partial last line, which ``drop_partial_last_line`` removes."""
    for row in rows:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise KeyError(f"row is missing columns: {missing}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writerow(COLUMNS)
    writer.writerows([_format(row[c]) for c in COLUMNS] for row in rows)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


HEADER = ",".join(COLUMNS)
SEED_COLUMNS = ("seed", "base_seed")  # read as exact int64: as floats, seeds near 2^63 collide
MAX_SEED = 2**63 - 1


def partial_row_warning(path: Path) -> str:
    """The one line every reader and the writer print for a row cut off by a killed run."""
    return f"varbench: ignoring the partial last row of {path} (left by an interrupted run)"


def _is_unstarted(data: bytes) -> bool:
    """An empty file, or a header cut off before its newline (a kill before the first row): a new table."""
    return HEADER.encode().startswith(data)


def _header_problem(path: Path, first_line: str, *, strict: bool) -> str | None:
    """None when ``first_line`` is this version's header (``strict``: exactly; else: it has every column);
    otherwise one sentence naming the columns that differ."""
    found = next(csv.reader([first_line]), [])
    missing = [c for c in COLUMNS if c not in found]
    unexpected = [c for c in found if c not in COLUMNS]
    if first_line == HEADER or not (strict or missing):
        return None

    def listed(what: str, names: list[str]) -> str:
        shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
        return f"{what} column{'s' if len(names) > 1 else ''} {shown}"

    parts = [listed("missing", missing)] * bool(missing) + [listed("unexpected", unexpected)] * bool(unexpected)
    detail = "; ".join(parts) or "the same columns in another order"
    return (f"results table {path} is corrupt or from another varbench version ({detail}; the schema is in "
            "docs/schema.md); move it away or choose another --out")  # fmt: skip


def prepare_for_append(path: Path) -> None:
    """Before ``run`` appends: refuse a file that is not this version's table, and repair what a killed run of
    varbench left (a cut-off header or last row), with the readers' warning. Only the writer modifies the file."""
    if not path.exists():
        return
    data = path.read_bytes()
    if _is_unstarted(data):
        if data:
            path.write_bytes(b"")  # varbench's own header, cut off: append_rows writes it again
        return
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    problem = _header_problem(path, first, strict=True)  # rows are appended in this version's column order
    if problem:
        raise TableError(problem)
    if not data.endswith(b"\n"):
        print(partial_row_warning(path), file=sys.stderr)
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _exact_seeds(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A seed column as exact integers (int64, or nullable Int64 with empty cells), never through float."""
    values = []
    for line, text in enumerate(frame[column], start=2):
        if pd.isna(text) or text == "":
            values.append(None)
            continue
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_SEED:
            raise TableError(f"results table {path} is corrupt: column {column} has {text!r} on line {line}, "
                             f"not an integer from 0 to 2^63 - 1")  # fmt: skip
        values.append(value)
    if any(v is None for v in values):
        return pd.array(values, dtype="Int64")
    return pd.Series(values, index=frame.index, dtype="int64")


def parquet_path(csv_path: Path) -> Path:
    """The typed copy that is kept beside a CSV table: table.csv -> table.parquet."""
    return Path(csv_path).with_suffix(".parquet")


def load_table(path: Path) -> pd.DataFrame:
    """Read and validate a results table; raise TableError naming the file and the problem.

    ``path`` names the CSV; its parquet copy (``parquet_path``) is read instead while it was written from these
    very CSV bytes, or when the CSV is gone. Never modifies a file: an empty or header-only CSV reads as a table
    without rows, and a partial last row (a run killed mid-write, or one still writing) is left out with
    ``partial_row_warning``."""
    path = Path(path)
    typed = parquet_path(path)
    if typed.is_file():
        frame = _load_parquet_if_current(typed, path)
        if frame is not None:
            return frame
    if not path.exists():
        raise TableError(f"no results table at {path}")
    return _parse_csv(path, path.read_bytes())


def table_exists(csv_path: Path) -> bool:
    """Whether ``load_table(csv_path)`` has a file to read (the CSV or its parquet copy)."""
    return Path(csv_path).is_file() or parquet_path(csv_path).is_file()


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def _load_parquet_if_current(typed: Path, csv_path: Path) -> pd.DataFrame | None:
    """The parquet copy as ``load_table`` returns tables, or None when the CSV has changed since it was written
    (or the copy cannot be read and the CSV can): then the CSV is the table."""
    csv_exists = csv_path.is_file()
    try:
        written_from = (pq.read_schema(typed).metadata or {}).get(CSV_DIGEST_KEY)
        if csv_exists and written_from != _digest(csv_path.read_bytes()):
            return None
        table = pq.read_table(typed)
        if table.schema.names != COLUMNS:
            raise pa.ArrowInvalid("its columns are not this version's schema (docs/schema.md)")
        table = table.cast(ARROW_SCHEMA)
    except (pa.ArrowException, OSError) as error:
        if csv_exists:
            return None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"results table {typed} is corrupt ({first})") from None
    return from_arrow(table)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """A table with ``ARROW_SCHEMA``'s columns as ``load_table`` returns tables."""
    frame = table.select(COLUMNS).to_pandas()
    for column in SEED_COLUMNS:  # exact int64, nullable where a seed is missing (never through float)
        values = table.column(column)
        frame[column] = (pd.array(values.to_pylist(), dtype="Int64") if values.null_count
                         else pd.Series(values.to_numpy(), dtype="int64"))  # fmt: skip
    return _normalized(frame)


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """``frame`` (as ``load_table`` returns it) with ``ARROW_SCHEMA``'s types, for parquet."""
    arrays = []
    for name, kind, _ in SCHEMA:
        values = frame[name]
        if kind in ("str", "bool"):
            arrays.append(pa.array([None if pd.isna(v) else v for v in values], type=ARROW_TYPES[kind]))
        else:
            arrays.append(pa.array(values, type=ARROW_TYPES[kind], from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def write_parquet_atomically(table: pa.Table, target: Path) -> Path:
    """Write ``table`` to ``target`` through a temporary file, fsynced, then ``os.replace``: a reader sees the
    previous file or this one, never a part."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    """The in-memory types both readers return: strings as str with NaN where empty (note and the code hashes
    as ""), numbers as float64 or int64 (float64 where a value is missing), booleans as True/False/None."""
    for column in STR_COLUMNS:
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), np.nan)
    for column in COLUMNS:
        if _TYPES[column] in ("float", "int") and column not in SEED_COLUMNS and frame[column].dtype == object:
            frame[column] = frame[column].astype("float64" if _TYPES[column] == "float" else "int64")  # no rows
        if _TYPES[column] == "int" and column not in SEED_COLUMNS and frame[column].dtype == "float64":
            values = frame[column]
            if np.isfinite(values).all() and (values == values.round()).all():  # "3.0" in a CSV is still an int
                frame[column] = values.astype("int64")
    for column in BOOL_COLUMNS:
        # True, False, or None where the table holds no verdict (never NaN, which is truthy).
        flags = frame[column].astype(object)
        frame[column] = flags.where(flags.notna(), None)
    for column in ("note", "code_hash", "user_code_hash"):
        frame[column] = frame[column].fillna("")
    return frame.copy()  # one block per dtype again: column by column, pandas warns later callers of fragmentation


def write_parquet(csv_path: Path) -> Path:
    """Replace the parquet copy of the CSV table at ``csv_path`` with its current rows, atomically; every writer
    of a table calls it when it has appended its rows."""
    csv_path = Path(csv_path)
    data = csv_path.read_bytes()
    table = to_arrow(_parse_csv(csv_path, data))
    table = table.replace_schema_metadata({CSV_DIGEST_KEY: _digest(data)})
    return write_parquet_atomically(table, parquet_path(csv_path))


def _parse_csv(path: Path, data: bytes) -> pd.DataFrame:
    """``data`` (the bytes of the CSV at ``path``) validated and typed."""
    if _is_unstarted(data):
        data = HEADER.encode() + b"\n"
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    problem = _header_problem(path, first, strict=False)
    if problem:
        raise TableError(problem)
    if not data.endswith(b"\n"):
        print(partial_row_warning(path), file=sys.stderr)
        data = data[: data.rfind(b"\n") + 1]
    try:
        frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""],
                            dtype={**dict.fromkeys(STR_COLUMNS, str), **dict.fromkeys(SEED_COLUMNS, str)})  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"results table {path} is corrupt ({first})") from None
    for column in COLUMNS:
        if column in SEED_COLUMNS:
            frame[column] = _exact_seeds(frame, column, path)
        elif _TYPES[column] in ("float", "int") and len(frame):
            converted = pd.to_numeric(frame[column], errors="coerce")
            # 'nan' is a legitimate value (e.g. kurtosis of constant estimates); anything else non-numeric is not.
            bad = converted.isna() & frame[column].notna() & (frame[column].astype(str).str.lower() != "nan")
            if bad.any():
                line = int(bad.idxmax()) + 2  # header is line 1
                raise TableError(
                    f"results table {path} is corrupt: column {column} has non-numeric value "
                    f"{frame[column][bad].iloc[0]!r} on line {line}"
                )
            frame[column] = converted
    bad_status = ~frame["status"].isin(["ok", "skipped", "error"])
    if bad_status.any():
        raise TableError(
            f"results table {path} is corrupt: status {frame['status'][bad_status].iloc[0]!r} on line "
            f"{int(bad_status.idxmax()) + 2}; allowed: ok, skipped, error"
        )
    for column in BOOL_COLUMNS:
        frame[column] = frame[column].astype(str).str.lower().map({"true": True, "false": False})
    return _normalized(frame)


def latest_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the last one written (a re-run with another seed or after an error supersedes)."""
    return frame.drop_duplicates(subset="cell_id", keep="last").reset_index(drop=True)

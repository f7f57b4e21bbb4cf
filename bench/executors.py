"""Where a sweep's cells are measured: in this process (the default), or on a dask.distributed cluster.

Either way a comparison block (``Cell.block_key``: the cells whose costs are measured together) is the unit of
work, each finished block's rows come back to this process, and only this
process appends to the table (``sweep.run_cells``): the table keeps its single writer, so resuming after a crash
works as for a local run. A cell's seed is a hash of (base seed, cell), so a worker anywhere computes the same
numbers as a local run; the timing columns are measured on the worker (its ``hostname`` and ``device_name``).

dask is optional (``pip install -e '.[dask]'``): this module imports without it, and asks for it only when a
Dask executor is opened.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import environment, measure
from .grid import Cell

EXECUTORS = ("local", "dask")
# Workers declare a GPU as this Dask worker resource (`dask worker … --resources GPU=1`); cuda cells ask for it.
GPU_RESOURCE = "GPU"
NO_GPU_WORKER = f"no Dask worker has a GPU (start workers on GPU hosts with --resources {GPU_RESOURCE}=1)"
INSTALL_HINT = "pip install -e '.[dask]'"
# How long a client waits for an existing scheduler to answer, and for its first worker to connect.
CONNECT_TIMEOUT_S = 30
FIRST_WORKER_TIMEOUT_S = 60


class ExecutorError(ValueError):
    """An executor that cannot be used as asked (dask missing, scheduler unreachable, no workers)."""


def measure_rows(block: list[Cell], base_seed: int, timed: bool = True) -> list[dict]:
    """The rows of one comparison block (``measure.measure_block``); error rows if the block itself fails.

    Runs wherever the block runs, so the rows' hostname, device_name and git_sha are those of that process.
    """
    try:
        # measure.measure_block is looked up at call time, so a test can replace it.
        return measure.measure_block(block, base_seed, timed=timed)
    except Exception as error:  # one bad block must not cost the others; it is recorded and retried later
        return [measure.error_row(cell, base_seed, error) for cell in block]


def measure_rows_on_worker(block: list[Cell], base_seed: int, timed: bool = True) -> list[dict]:
    """``measure_rows`` as a Dask task. A worker process starts with its nanny's allocator settings (Dask trims
    freed memory eagerly); the timings assume the steady heap ``varbench`` sets in its own process."""
    environment.keep_freed_memory()
    return measure_rows(block, base_seed, timed)


def skipped_row(cell: Cell, base_seed: int, reason: str) -> dict:
    row = measure.base_row(cell, base_seed, measure.utc_now())
    row.update(status="skipped", note=reason)
    return row


def task_key(block: list[Cell]) -> str:
    """A fresh Dask key naming the block by its first cell: ``varbench-<cell_id>-<random>``."""
    return f"varbench-{block[0].cell_id}-{uuid.uuid4().hex[:12]}"


def needs_gpu(cell: Cell) -> bool:
    return torch.device(cell.device).type == "cuda"


@dataclass
class LocalExecutor:
    """Cells one after the other in this process: the behaviour of every varbench version before executors."""

    def devices(self) -> list[str] | None:
        return None  # this machine's devices, checked by resolve_devices as always

    def rows(self, blocks: list[list[Cell]], base_seed: int, *, timed: bool = True,
             show: Callable[[Cell], None] = lambda cell: None) -> Iterator[list[tuple[Cell, dict]]]:  # fmt: skip
        """Yield each block's [(cell, row), …] in order; ``show`` names the block being measured (progress bar)."""
        for block in blocks:
            show(block[0])
            yield list(zip(block, measure_rows(block, base_seed, timed)))

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        pass


class DaskExecutor:
    """Cells as tasks on a dask.distributed cluster: an existing one (``scheduler``) or an embedded
    ``LocalCluster`` of ``workers`` single-threaded worker processes. Use as a context manager."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        if scheduler is not None and workers is not None:
            raise ExecutorError("--workers sizes the embedded cluster; with --scheduler the cluster's own workers "
                                "run the cells: drop one of them")  # fmt: skip
        if workers is not None and workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {workers}")
        self.scheduler = scheduler
        self.workers = workers if workers is not None or scheduler is not None else (os.cpu_count() or 1)
        self.client = None
        self.cluster = None

    def __enter__(self) -> DaskExecutor:
        try:
            import distributed  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ExecutorError(
                f"--executor dask needs dask.distributed, which is not installed: {INSTALL_HINT}"
            ) from None
        # Dask logs every worker start, stop and rescheduled task at INFO; the progress bar and the table say
        # what matters, and warnings (a lost worker) still show.
        for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            if self.scheduler is None:
                gpu = {GPU_RESOURCE: 1} if torch.cuda.is_available() else None
                # Processes, one thread each: cells run in parallel without sharing an interpreter or torch's
                # thread pool. Loopback only; the HTTP server Dask always starts takes a free port (":0"), so
                # concurrent runs do not clash over 8787.
                self.cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0", resources=gpu,
                )  # fmt: skip
                self.client = distributed.Client(self.cluster)
            else:
                self.client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
                self.client.wait_for_workers(1, timeout=FIRST_WORKER_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as error:  # unreachable, no worker came, malformed address
            self.__exit__(None, None, None)
            where = (f"Dask scheduler {self.scheduler} (an address like tcp://host:8786)" if self.scheduler
                     else "the embedded Dask cluster")  # fmt: skip
            raise ExecutorError(f"cannot use {where}: {type(error).__name__}: {error}".replace("\n", " ")) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def has_gpu_worker(self) -> bool:
        """Whether a worker connected now declares the GPU resource (asked of the scheduler, which knows all)."""
        resources = self.client.run_on_scheduler(
            lambda dask_scheduler: [dict(ws.resources) for ws in dask_scheduler.workers.values()]
        )
        return any(worker.get(GPU_RESOURCE, 0) >= 1 for worker in resources)

    def devices(self) -> list[str]:
        """What ``--device auto`` means on this cluster: cpu, and cuda when a worker declares a GPU."""
        return ["cpu", "cuda"] if self.has_gpu_worker() else ["cpu"]

    def rows(self, blocks: list[list[Cell]], base_seed: int, *, timed: bool = True,
             show: Callable[[Cell], None] = lambda cell: None) -> Iterator[list[tuple[Cell, dict]]]:  # fmt: skip
        """Submit every block, yield each block's [(cell, row), …] as it finishes, each cell exactly once; ``show``
        names the block that last finished (many run at once, so there is no single one being measured)."""
        import distributed  # noqa: PLC0415

        gpu_available = self.has_gpu_worker()
        futures = {}
        for block in blocks:
            if needs_gpu(block[0]) and not gpu_available:
                yield [(cell, skipped_row(cell, base_seed, NO_GPU_WORKER)) for cell in block]
                continue
            # A key of its own per submission: a re-run must measure again, never reuse a result the cluster
            # still holds, and the dashboard and task stream name the block. A block whose worker dies is
            # rescheduled by the scheduler (up to its allowed-failures) before the future errs with
            # KilledWorker; exceptions inside a cell are already rows (measure.measure_block).
            future = self.client.submit(measure_rows_on_worker, block, base_seed, timed, key=task_key(block),
                                        resources={GPU_RESOURCE: 1} if needs_gpu(block[0]) else None)  # fmt: skip
            futures[future] = block
        try:
            for future in distributed.as_completed(futures):
                block = futures.pop(future)
                try:
                    rows = future.result()
                except Exception as error:  # noqa: BLE001 - KilledWorker, a lost scheduler connection, …
                    rows = [measure.error_row(cell, base_seed, error) for cell in block]
                future.release()  # the rows are on the client now; the cluster need not keep them
                show(block[0])
                yield list(zip(block, rows))
        finally:
            # Interrupted (Ctrl-C) or abandoned: stop what is still queued rather than leave it to the cluster.
            if futures:
                self.client.cancel(list(futures))


def open_executor(kind: str, scheduler: str | None = None, workers: int | None = None):
    """The executor named ``kind`` (one of EXECUTORS), not yet entered."""
    if kind == "local":
        given = [flag for flag, value in (("--scheduler", scheduler), ("--workers", workers)) if value is not None]
        if given:
            raise ExecutorError(f"{given[0]} is for --executor dask; the local executor runs in this process")
        return LocalExecutor()
    if kind == "dask":
        return DaskExecutor(scheduler=scheduler, workers=workers)
    raise ExecutorError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")

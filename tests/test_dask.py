"""The Dask executor on a loopback LocalCluster of two worker processes: the same numbers as a local run, cuda
cells skipped with a reason when no worker has a GPU, and a worker killed mid-sweep costing no row and
duplicating none. Skipped where dask.distributed is not installed (it is an optional extra)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

distributed = pytest.importorskip("distributed")

from bench import cli, environment, executors  # noqa: E402
from bench.grid import Sweep, expand  # noqa: E402
from bench.sweep import run_cells  # noqa: E402
from bench.table import load_table  # noqa: E402

pytestmark = pytest.mark.integration

STATISTICAL = ["status", "n_replicates", "seed", "true_grad", "grad_mean", "bias", "grad_var", "grad_var_ci_low",
               "grad_var_ci_high", "kurtosis", "bias_z"]  # fmt: skip
SMALL = Sweep("seed_dependent", thetas=(1.0, 3.0), estimators=("pathwise", "score_function", "measure_valued"),
              n_samples=(10, 1000), replicates=200)  # fmt: skip
# Six comparison blocks (one per N) of about a second each, so the sweep is still running when a worker dies.
KILL_SWEEP = Sweep("seed_dependent", thetas=(0.0, 1.0, 2.0, 3.0), n_samples=(10, 20, 30, 40, 50, 60), replicates=200,
                   estimators=("pathwise", "score_function", "measure_valued"))  # fmt: skip
SWEEP_TIMEOUT_S = 120  # a sweep that has not finished by then has hung; the test fails instead of CI hanging


def start_cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=":0")  # fmt: skip  # a free port: no clash over 8787


@pytest.fixture(scope="module")
def cluster():
    with start_cluster() as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as dask_client:
        yield dask_client


def test_local_and_dask_runs_give_identical_statistics(cluster, tmp_path):
    cells = expand([SMALL])
    local = run_cells(cells, tmp_path / "local", 7, progress=False, timed=False)
    with executors.DaskExecutor(scheduler=cluster.scheduler_address) as executor:
        remote = run_cells(cells, tmp_path / "dask", 7, progress=False, executor=executor, timed=False)
    assert local.measured == remote.measured == len(cells) and local.errors == remote.errors == 0
    local_rows = load_table(local.table).set_index("cell_id").sort_index()
    dask_rows = load_table(remote.table).set_index("cell_id").sort_index()
    assert list(local_rows.index) == list(dask_rows.index) == sorted(c.cell_id for c in cells)
    # Exact equality: each cell's seed is a hash of (base seed, cell), wherever it runs.
    import pandas as pd  # noqa: PLC0415

    pd.testing.assert_frame_equal(local_rows[STATISTICAL], dask_rows[STATISTICAL], check_exact=True)
    # The rows were measured in the worker processes (Dask starts them with one OpenMP thread), not here.
    assert (dask_rows["num_threads"] == 1).all()


def test_cuda_cells_are_skipped_with_the_reason_when_no_worker_has_a_gpu(cluster, tmp_path):
    sweep = Sweep("seed_dependent", thetas=(1.0,), estimators=("pathwise",), n_samples=(10,), replicates=100,
                  devices=("cpu", "cuda"))  # fmt: skip
    # The client's own GPU (or lack of one) does not matter: the cluster's workers declare none.
    cells = sweep.cells(available_devices=["cpu", "cuda"])
    with executors.DaskExecutor(scheduler=cluster.scheduler_address) as executor:
        assert executor.devices() == ["cpu"]
        outcome = run_cells(cells, tmp_path, 0, progress=False, executor=executor, timed=False)
    table = load_table(outcome.table).set_index("device")
    assert table.loc["cuda", "status"] == "skipped"
    assert table.loc["cuda", "note"] == executors.NO_GPU_WORKER and "--resources GPU=1" in executors.NO_GPU_WORKER
    assert table.loc["cpu", "status"] == "ok" and outcome.errors == 0


def sweep_killing_a_worker(scheduler_address: str, dask_client, out: Path) -> tuple[list[str], str]:
    """Run a timed sweep in a thread; once its first row is on disk, SIGKILL a worker that is measuring a cell.
    Returns the cells' ids and the address of the killed worker. Bounded by SWEEP_TIMEOUT_S."""
    cells = expand([KILL_SWEEP])
    failure: list[BaseException] = []

    def sweep() -> None:
        try:
            with executors.DaskExecutor(scheduler=scheduler_address) as executor:
                run_cells(cells, out, 0, progress=False, executor=executor)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failure.append(error)

    runner = threading.Thread(target=sweep, daemon=True)
    runner.start()
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    table = out / "table.csv"
    while not (table.exists() and len(table.read_text().splitlines()) >= 2):  # header + a finished cell
        assert runner.is_alive() and time.monotonic() < deadline, failure or "no row was written"
        time.sleep(0.05)
    busy = [address for address, keys in dask_client.processing().items() if keys]
    assert busy, "no worker is measuring a cell; the sweep ended before a worker could be killed"
    victim = busy[0]
    pid = dask_client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # mid-cell, with no chance to clean up (the nanny starts a new worker)
    runner.join(timeout=max(deadline - time.monotonic(), 1))
    assert not runner.is_alive(), f"the sweep did not finish within {SWEEP_TIMEOUT_S} s of a worker's death"
    assert not failure, failure
    return [cell.cell_id for cell in cells], victim


def test_a_worker_killed_mid_sweep_loses_no_row_and_duplicates_none(cluster, client, tmp_path):
    cell_ids, _ = sweep_killing_a_worker(cluster.scheduler_address, client, tmp_path)
    table = load_table(tmp_path / "table.csv")
    assert table["cell_id"].is_unique and sorted(table["cell_id"]) == sorted(cell_ids)
    # The scheduler reran the killed worker's cell on a live worker.
    assert (table["status"] == "ok").all(), table[["status", "note"]]
    assert table["seconds_per_estimate"].notna().all()


def test_a_cell_whose_worker_dies_for_good_is_an_error_row_and_is_retried_by_a_rerun(cluster, client, tmp_path):
    # No second chance on the scheduler: the cells on the killed worker fail with KilledWorker.
    allowed = cluster.scheduler.allowed_failures
    cluster.scheduler.allowed_failures = 0
    try:
        cell_ids, _ = sweep_killing_a_worker(cluster.scheduler_address, client, tmp_path)
    finally:
        cluster.scheduler.allowed_failures = allowed
    table = load_table(tmp_path / "table.csv")
    assert table["cell_id"].is_unique and sorted(table["cell_id"]) == sorted(cell_ids)
    errors = table[table["status"] == "error"]
    assert len(errors) >= 1 and errors["note"].str.startswith("KilledWorker").all(), errors["note"]
    assert set(table["status"]) <= {"ok", "error"}
    # A re-run measures the failed cells only, and the latest row of every cell is then ok.
    with executors.DaskExecutor(scheduler=cluster.scheduler_address) as executor:
        rerun = run_cells(expand([KILL_SWEEP]), tmp_path, 0, progress=False, executor=executor, timed=False)
    assert rerun.measured == len(errors) and rerun.errors == 0
    latest = load_table(tmp_path / "table.csv").drop_duplicates("cell_id", keep="last")
    assert len(latest) == len(cell_ids) and (latest["status"] == "ok").all()


def test_cuda_cells_go_only_to_the_worker_declaring_a_gpu(cluster, client, tmp_path):
    # The README's worker command for a GPU host, joining the two plain workers. Routing is what is tested:
    # without a GPU here the cuda cells fail on that worker (an error row), with one they are measured.
    command = [str(Path(sys.executable).with_name("dask")), "worker", cluster.scheduler_address, "--nworkers", "1",
               "--nthreads", "1", "--resources", "GPU=1", "--host", "127.0.0.1", "--dashboard-address", ":0"]  # fmt: skip
    gpu_host = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client.wait_for_workers(3, timeout=60)
        gpu_workers = {ws.address for ws in cluster.scheduler.workers.values() if ws.resources.get("GPU")}
        assert len(gpu_workers) == 1
        sweep = Sweep("seed_dependent", thetas=(1.0, 3.0), estimators=("pathwise", "score_function"),
                      n_samples=(10,), replicates=100, devices=("cpu", "cuda"))  # fmt: skip
        cells = sweep.cells(available_devices=["cpu", "cuda"])
        with distributed.get_task_stream(client=client) as stream:
            with executors.DaskExecutor(scheduler=cluster.scheduler_address) as executor:
                assert executor.devices() == ["cpu", "cuda"]
                outcome = run_cells(cells, tmp_path, 0, progress=False, executor=executor, timed=False)
    finally:
        gpu_host.terminate()
        gpu_host.wait(timeout=60)
    # A task's key names its comparison block's first cell; the cuda cells form one block.
    ran_on = {record["key"].split("-")[1]: record["worker"] for record in stream.data}
    cuda_cells = [cell for cell in cells if cell.device == "cuda"]
    assert len(cuda_cells) == 4 and ran_on[cuda_cells[0].cell_id] in gpu_workers
    assert not {cell.cell_id for cell in cuda_cells[1:]} & set(ran_on)
    table = load_table(outcome.table)
    assert table["cell_id"].is_unique and len(table) == len(cells)
    cuda_rows = table[table["device"] == "cuda"]
    if torch.cuda.is_available():
        assert (cuda_rows["status"] == "ok").all()
    else:  # measured where torch has no CUDA: recorded as failed, with torch's reason
        assert (cuda_rows["status"] == "error").all() and (cuda_rows["note"] != "").all()
    assert (table[table["device"] == "cpu"]["status"] == "ok").all()


def test_cli_runs_on_an_embedded_cluster_and_a_local_rerun_resumes_it(tmp_path, capsys):
    args = ["run", "--problem", "seed_dependent", "--theta", "1,3", "--estimator", "pathwise,score_function",
            "--n", "10", "--replicates", "200", "--device", "auto", "--no-progress", "--no-report",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main([*args, "--executor", "dask", "--workers", "2"]) == 0
    assert "4 cells measured, 0 already" in capsys.readouterr().out
    table = load_table(tmp_path / "table.csv")
    assert len(table) == 4 and table["cell_id"].is_unique and (table["status"] == "ok").all()
    # Timed on the workers, which say where: this host, and the devices the embedded workers have.
    assert table["seconds_per_estimate"].notna().all() and table["hostname"].notna().all()
    assert set(table["device"]) == set(environment.available_devices())
    # The same table, whichever executor wrote it: a local re-run finds every cell done.
    assert cli.main(args) == 0
    assert "0 cells measured, 4 already" in capsys.readouterr().out


def test_an_unreachable_scheduler_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2)
    code = cli.main(["run", "--problem", "seed_dependent", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9",
                     "--no-progress", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("varbench: error: cannot use Dask scheduler tcp://127.0.0.1:9"), err
    assert not (tmp_path / "table.csv").exists()

"""build_collection on Ray: the same files as on threads, bad rows named, a worker killed
mid-build, an input larger than the driver's memory budget."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from shardwalk.index.distributed import RayExecutor

import shardwalk
from shardwalk import build, jobs
from shardwalk.cli import main
from shardwalk.errors import InvalidArgumentError
from tests.jobs.test_build import _bad_input
from tests.parquet_data import snapshot_digest, write_dataset
from tests.ray.conftest import run_and_kill_step

pytestmark = pytest.mark.usefixtures("local_ray")

PARAMS = {"partitions": 4, "ef_construction": 64, "m": 12}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet") / "in"
    write_dataset(root, 4000, 16, files=4, seed=5)
    return root


@pytest.fixture(scope="module")
def threads_digest(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    db = tmp_path_factory.mktemp("threads") / "db"
    jobs.build_collection(db, "c", source, tenant_column="tenant", **PARAMS)
    return snapshot_digest(db, "c")


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_writes_the_same_files_as_threads(
    source: Path, threads_digest: dict[str, str], tmp_path: Path, workers: int
) -> None:
    report = jobs.build_collection(
        tmp_path / "db", "c", source, tenant_column="tenant", ray=True, num_workers=workers,
        **PARAMS,
    )  # fmt: skip
    assert report["executor"] == "ray" and report["workers"] == workers
    assert report["bytes"]["object_store"] > 0 and report["rows"] == 4000
    # where the CPU went: each worker's start-up, the driver's per stage, per worker per stage
    started = report["start"]["workers"]  # a process per worker, each started and warm
    assert len({w["pid"] for w in started}) == workers
    assert all(w["cpu_seconds"] > 0 for w in started)
    assert set(report["driver_cpu_seconds"]) == set(report["seconds"]) - {"total"}
    # per process that ran build tasks: Ray may hand a 1-worker job's successive tasks to
    # different idle processes, so their number is not bounded by the workers
    assert all(s > 0 for s in report["build_schedule"]["cpu_seconds_per_worker"])
    assert report["build_schedule"]["cpu_seconds_per_worker"]
    scan = report["stages"]["scan"]
    assert sum(scan["cpu_seconds_per_process"]) == pytest.approx(scan["cpu_seconds"])
    assert snapshot_digest(tmp_path / "db", "c") == threads_digest
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        assert len(engine.collection("c")) == 4000


def test_bad_row_on_ray_names_file_and_row(source: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    jobs.build_collection(db, "c", source, ray=True, **PARAMS)
    before = snapshot_digest(db, "c")
    bad_file, row = _bad_input(tmp_path / "bad", "nan")
    with pytest.raises(InvalidArgumentError, match=rf"{bad_file.name}', row {row}: NaN"):
        jobs.build_collection(db, "c", tmp_path / "bad", ray=True, partitions=2)
    assert snapshot_digest(db, "c") == before


@pytest.mark.parametrize(
    ("step", "n", "dim", "params"),
    [
        # killed after the partition's graph file is in place, before its other files
        ("build_part", 24_000, 32, {"partitions": 4, "ef_construction": 64, "m": 16}),
        # the assign pass reads and spills its blocks in the tasks: a task killed after its
        # block's first spill file is in place is run again elsewhere and writes the same
        # spill files (named by the block's rows) over the ones it wrote
        ("assign_block", 24_000, 64, {"partitions": 8, "ef_construction": 16, "m": 8}),
    ],
)
def test_worker_killed_mid_task_same_output(
    tmp_path: Path, step: str, n: int, dim: int, params: dict
) -> None:
    source = tmp_path / "in"
    write_dataset(source, n, dim, files=n // 6000, seed=11, tenants=False)
    jobs.build_collection(tmp_path / "threads", "c", source, **params)
    report, killed = run_and_kill_step(
        lambda: jobs.build_collection(tmp_path / "ray", "c", source, ray=True, **params),
        build,
        step,
    )
    assert killed not in {t["pid"] for t in report["tasks"]}  # later tasks ran elsewhere
    assert report["stages"]["assign"]["rows"] == n
    assert snapshot_digest(tmp_path / "ray", "c") == snapshot_digest(tmp_path / "threads", "c")


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def test_input_larger_than_the_driver_budget_streams(source: Path, tmp_path: Path) -> None:
    """The driver never holds the vectors, while 2 workers scan and assign blocks in parallel
    and send their results back as they finish: its peak memory during the job grows by less
    than half the decoded input (102 MB; the driver's own growth, ids, sample and Ray's
    bookkeeping, measured 19-34 MB after other tests of the session; Linux: the peak is reset
    through /proc/self/clear_refs, after a first small job loaded what a job imports)."""
    params = {"partitions": 4, "ef_construction": 8, "m": 4}
    jobs.build_collection(tmp_path / "warm", "c", source, ray=True, **params)  # same code paths
    n, dim = 200_000, 128
    write_dataset(tmp_path / "in", n, dim, files=8, seed=2, tenants=False)
    for f in sorted((tmp_path / "in").glob("*.parquet")):  # 4 row groups a file, read at once
        pq.write_table(pq.read_table(f), f, row_group_size=n // 32)
    budget_kib = n * dim * 4 // 2 // 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    start = _hwm_kib()
    report = jobs.build_collection(tmp_path / "db", "c", tmp_path / "in", ray=True, **params)
    grown = _hwm_kib() - start
    assert report["rows"] == n
    assert grown < budget_kib, (grown, budget_kib)
    for stage in ("scan", "assign"):  # in parallel: both workers read blocks
        done = report["stages"][stage]
        assert done["blocks"] == 8 and done["rows"] == n and done["processes"] == 2, done
        assert done["vector_bytes"] >= n * dim * 4


def test_cli_build_on_ray(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--data", str(tmp_path / "db"), "--collection", "c", "--input", str(source)]
    assert main([*args, "--ray", "--num-workers", "2", "--param", "partitions=2"]) == 0
    assert "on 2 ray workers" in capsys.readouterr().out
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        assert len(engine.collection("c")) == 4000
        assert len(engine.collection("c").stats()["index_stats"]["partition_sizes"]) == 2


def _idle_workers() -> set[int]:
    """This session's idle Ray workers: titled ``ray::IDLE``, started by the raylet that this
    process started (their grandparent)."""

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))

    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                idle = f.read().startswith(b"ray::IDLE")
            if idle and parent(parent(int(entry))) == os.getpid():
                found.add(int(entry))
        except (OSError, ValueError, StopIteration):
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:\tZ") for line in f)  # dead, not yet reaped
    except OSError:
        return True


def test_warm_up_starts_a_process_per_worker() -> None:
    """One worker idle, the other's process to start: the warm-up waits for both processes
    (the idle one ran both warm-ups before, in milliseconds, and the second process started
    during the scan)."""
    executor = RayExecutor(2)
    first = executor.warm(build.warm_worker)()  # workers with the tasks' environment
    assert len({w["pid"] for w in first}) == 2
    keep = first[0]["pid"]
    doomed = ({w["pid"] for w in first} | _idle_workers()) - {keep}
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)
    while not all(_gone(pid) for pid in doomed):
        time.sleep(0.01)
    started = executor.warm(build.warm_worker)()
    pids = {w["pid"] for w in started}
    assert len(pids) == 2 and not pids & doomed, (started, keep)
    assert all(w["cpu_seconds"] > 0 for w in started)

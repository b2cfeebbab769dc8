"""The blocks of a batch build (issue 27): row groups packed into blocks that a worker reads
itself, bad rows named by their row in the file whatever block they fall in, vectors checked
per batch without false alarms, the build tasks largest first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardwalk import jobs
from shardwalk.arrow_views import _arrow, _numpy
from shardwalk.build import (
    Block,
    Columns,
    ThreadExecutor,
    _checked,
    plan_blocks,
    plan_tasks,
    scan_block,
)
from shardwalk.errors import InvalidArgumentError
from tests.parquet_data import snapshot_digest

DIM = 8
COLUMNS = Columns("id", "vector", None, None, ())


def _write(path: Path, n: int, *, row_group: int, bad: int | None = None, big: float = 0.0) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    if bad is not None:
        vectors[bad, 3] = np.nan
    if big:
        vectors[:, :2] = big  # finite, but a row's sum overflows float32
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )
    pq.write_table(table, path, row_group_size=row_group)


def test_row_groups_are_packed_into_blocks_of_one_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _write(a, 100, row_group=10)  # 10 row groups
    _write(b, 25, row_group=10)  # 3 row groups: 10, 10, 5
    group = pq.ParquetFile(a).metadata.row_group(0).total_byte_size
    blocks = plan_blocks([str(a), str(b)], target=3 * group)
    assert [blk.row_groups for blk in blocks if blk.path == str(a)] == [
        (0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)
    ]  # fmt: skip
    assert [blk.first_row for blk in blocks if blk.path == str(a)] == [0, 30, 60, 90]
    assert sum(blk.rows for blk in blocks) == 125
    # a row group larger than the target is a block of its own
    assert len(plan_blocks([str(a)], target=1)) == 10


def test_a_bad_row_is_named_by_its_row_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in" / "f.parquet"
    path.parent.mkdir()
    _write(path, 100, row_group=10, bad=57)
    group = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    block = plan_blocks([str(path)], target=2 * group)[2]  # rows 40-59
    assert block.first_row == 40
    kwargs = {"columns": COLUMNS, "dim": DIM, "metric": "l2", "fraction": 1.0, "seed": 0}
    with pytest.raises(InvalidArgumentError, match=r"f.parquet', row 57: NaN"):
        scan_block(block, **kwargs)
    with pytest.raises(InvalidArgumentError, match=r"f.parquet', row 57: NaN"):
        jobs.build_collection(tmp_path / "db", "c", path.parent, partitions=2)


def test_a_bad_row_is_named_whatever_batch_it_falls_in(tmp_path: Path) -> None:
    """The scan decodes a block in batches of a few MB: a row is named by its row in the file
    in any batch of any block."""
    path = tmp_path / "f.parquet"
    _write(path, 100, row_group=30, bad=71)
    group = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    blocks = plan_blocks([str(path)], target=2 * group)  # rows 0-59, 60-99
    seen = []
    with pytest.raises(InvalidArgumentError, match=r"f.parquet', row 71: NaN"):
        for _, ids, _ in _checked(blocks[1], ["id", "vector"], COLUMNS, DIM, "l2", {}, 7):
            seen.append(ids.tolist())
    assert seen == [list(range(60, 67))]  # the second batch (rows 67-73) holds row 71


def test_a_scanned_block_comes_back_in_id_order_with_its_sample(tmp_path: Path) -> None:
    """Its non-vector columns sorted by id (the driver merges the blocks' runs), and the ids
    and vectors of its sampled rows only."""
    path = tmp_path / "f.parquet"
    rng = np.random.default_rng(3)
    ids = rng.permutation(np.arange(1000, 1400, dtype=np.int64))
    vectors = rng.normal(size=(400, DIM)).astype(np.float32)
    table = pa.table({
        "id": pa.array(ids),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        "year": pa.array(ids % 7),
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=150)
    (block,) = plan_blocks([str(path)])
    columns = Columns("id", "vector", None, None, ("year",))
    kept, sample_ids, sample, stats = scan_block(
        block, columns=columns, dim=DIM, metric="l2", fraction=0.25, seed=1
    )  # fmt: skip
    assert kept.column_names == ["id", "year"]
    assert kept.column("id").to_pylist() == sorted(ids.tolist())
    assert kept.column("year").to_pylist() == [i % 7 for i in sorted(ids.tolist())]
    assert 0 < sample_ids.size < 400 and sample.shape == (sample_ids.size, DIM)
    row_of = {int(i): r for r, i in enumerate(ids)}
    assert np.array_equal(sample, vectors[[row_of[int(i)] for i in sample_ids]])
    # the vector data a block yields: its float32 vectors, rows x dim x 4 bytes
    assert stats["vector_bytes"] == 400 * DIM * 4 and stats["started"] <= stats["ended"]


def test_large_finite_values_are_not_taken_for_infinities(tmp_path: Path) -> None:
    """Rows are checked through their sums; a sum that overflows is looked at value by value."""
    path = tmp_path / "f.parquet"
    _write(path, 50, row_group=50, big=3e38)
    (block,) = plan_blocks([str(path)])
    table, sample_ids, sample, stats = scan_block(
        block, columns=COLUMNS, dim=DIM, metric="l2", fraction=1.0, seed=0
    )  # fmt: skip
    assert table.num_rows == 50 and stats["rows"] == 50
    assert sample_ids.tolist() == list(range(50)) and sample.shape == (50, DIM)
    assert np.all(sample[:, 0] == np.float32(3e38))


def test_blocks_do_not_change_the_bytes_and_tasks_start_largest_first(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(4, DIM)) * 10
    sizes = [900, 500, 300, 100]  # partitions of very different sizes
    vectors = np.concatenate([c + rng.normal(size=(s, DIM)) for c, s in zip(centres, sizes)])
    order = rng.permutation(len(vectors))
    table = pa.table(
        {
            "id": pa.array(order.astype(np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.astype(np.float32).ravel()), DIM
            ),
        }
    )
    pq.write_table(table, source / "f.parquet", row_group_size=100)
    params = {"partitions": 4, "m": 8, "ef_construction": 32}
    one = jobs.build_collection(tmp_path / "a", "c", source, num_workers=1, **params)
    jobs.build_collection(tmp_path / "b", "c", source, num_workers=2, **params)
    assert snapshot_digest(tmp_path / "a", "c") == snapshot_digest(tmp_path / "b", "c")
    sizes_found = one["partition_sizes"]
    assert sorted(sizes_found) != sizes_found  # not already in order: the order is chosen
    schedule = one["build_schedule"]
    assert [sizes_found[p] for p in schedule["order"]] == sorted(sizes_found, reverse=True)
    assert len(schedule["busy_seconds"]) == 1 and schedule["tail_seconds"] == 0.0
    scan = one["stages"]["scan"]
    assert scan["rows"] == 1800 and scan["blocks"] == 1 and scan["vector_bytes"] == 1800 * DIM * 4
    # the stage's timeline, in seconds from its start
    assert 0 <= scan["first_block_started_seconds"] <= scan["last_block_ended_seconds"]
    assert scan["last_block_ended_seconds"] <= scan["last_block_back_seconds"]
    assert scan["last_block_back_seconds"] + scan["after_last_block_seconds"] == pytest.approx(
        scan["wall_seconds"]
    )


def test_spill_files_round_trip_and_a_cut_one_is_corruption(tmp_path: Path) -> None:
    """assign_block's spill files (raw: no .npy header for numpy's ast parser, which CPython
    3.11 can fail on threads) give back each partition's rows in id order; a file shorter
    than its header says is CorruptionError naming it."""
    from shardwalk.index.bulk import assign_block, read_spill, spill_dir

    from shardwalk.errors import CorruptionError

    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((3, 8)).astype(np.float32)
    ids = rng.permutation(500).astype(np.int64)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    parts, _ = assign_block(ids, vectors, centroids, "l2", str(tmp_path))
    for p in range(3):
        got_ids, got_vectors, _ = read_spill(tmp_path, p)
        mine = np.sort(ids[parts == p])
        assert np.array_equal(got_ids, mine)
        assert np.array_equal(got_vectors, vectors[np.argsort(ids)][np.isin(np.sort(ids), mine)])
    path = next(spill_dir(tmp_path, 0).glob("b-*"))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CorruptionError, match=path.name):
        read_spill(tmp_path, 0)


def test_arrow_numpy_views_keep_values_offsets_chunks_and_nulls() -> None:
    values = np.arange(10, dtype=np.int64)
    arr = _arrow(values[::2])  # not contiguous: copied
    assert arr.type == pa.int64() and arr.to_pylist() == [0, 2, 4, 6, 8]
    sliced = pa.array(np.arange(10, dtype=np.float32)).slice(3, 4)
    assert _numpy(sliced).tolist() == [3, 4, 5, 6] and _numpy(sliced).dtype == np.float32
    chunked = pa.chunked_array([pa.array([1, 2], pa.uint32()), pa.array([3], pa.uint32())])
    assert _numpy(chunked).tolist() == [1, 2, 3] and _numpy(chunked).dtype == np.uint32
    assert _numpy(pa.chunked_array([], pa.int64())).dtype == np.int64
    assert np.isnan(_numpy(pa.array([1.0, None, 3.0], pa.float32()))[1])  # nulls: NaN
    assert _numpy(pa.array([], pa.int16())).dtype == np.int16


def test_a_scan_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow's conversions import pandas on their first call in a process (0.2-0.7 s of a
    worker's first block, issue 27): the scan and its warm-up use views of the buffers."""
    path = tmp_path / "f.parquet"
    _write(path, 300, row_group=100)
    code = (
        "import sys\n"
        "from shardwalk import build\n"
        "build.warm_worker()\n"
        "for block in build.plan_blocks([sys.argv[1]]):\n"
        "    build.scan_block(block, columns=build.Columns('id', 'vector', None, None, ()),\n"
        "                     dim=8, metric='cosine', fraction=0.5, seed=0)\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_blocks_are_grouped_into_a_few_tasks_per_worker() -> None:
    blocks = [Block(f"f{i}", (0,), 0, 100, 16 << 20) for i in range(16)]
    tasks = plan_tasks(blocks, 2, target=64 << 20)  # 4 tasks of 64 MB, but 4 per worker: 8
    assert [len(t) for t in tasks] == [2] * 8
    assert [b for t in tasks for b in t] == blocks  # every block once, in order
    assert [len(t) for t in plan_tasks(blocks, 1, target=64 << 20)] == [4] * 4
    assert [len(t) for t in plan_tasks(blocks[:5], 2)] == [1] * 5  # fewer blocks than 8
    assert [len(t) for t in plan_tasks(blocks[:7], 1, target=1 << 30)] == [2, 2, 2, 1]
    assert plan_tasks([], 2) == []


def test_a_failed_warm_up_is_raised_by_its_wait() -> None:
    def fails() -> None:
        raise OSError("no temporary directory")

    wait = ThreadExecutor(2).warm(fails)
    with pytest.raises(OSError, match="no temporary directory"):
        wait()
    assert ThreadExecutor(2).warm(lambda: None)() == []


def _scan_peak(path: Path | None, warm: bool = False, step: str = "scan") -> int:
    """The Arrow memory pool's peak (bytes) in a new process that runs ``step`` (scan or
    assign) on ``path``'s one block (after the warm-up if ``warm``; no block if ``path`` is
    None)."""
    code = (
        "import sys, tempfile\n"
        "import numpy as np, pyarrow as pa\n"
        "from shardwalk import build\n"
        f"{'build.warm_worker()' if warm else ''}\n"
        "columns = build.Columns('id', 'vector', None, None, ())\n"
        "for block in build.plan_blocks(sys.argv[1:]):\n"
        f"    if {step == 'scan'}:\n"
        "        build.scan_block(block, columns=columns, dim=8, metric='l2', fraction=0.01,\n"
        "                         seed=0)\n"
        "    else:\n"
        "        build.assign_block(block, columns=columns, dim=8, metric='l2',\n"
        "                           index_metric='l2', centroids=np.eye(2, 8, dtype='f4'),\n"
        "                           staging=tempfile.mkdtemp())\n"
        "print(pa.default_memory_pool().max_memory())\n"
    )
    args = [] if path is None else [str(path)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("step", ["scan", "assign"])
def test_a_pass_streams_a_block_instead_of_holding_it(tmp_path: Path, step: str) -> None:
    """The scan and the assign decode a block a batch at a time from column chunks read a
    buffer at a time: their memory does not grow with the block (pre-buffered, the chunks were
    held whole: a block's size of fresh memory in each new worker, issue 27)."""
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    _write(small, 1 << 18, row_group=1 << 18)  # one row group: one block, ~10 MB decoded
    _write(large, 1 << 19, row_group=1 << 19)  # twice that
    grown = _scan_peak(large, step=step) - _scan_peak(small, step=step)
    # the ids kept (8 bytes a row) grow with the block; the vectors it adds (a pre-buffered
    # block held them all) do not
    assert grown < (1 << 18) * DIM * 4, grown


def test_the_warm_up_takes_the_memory_of_a_block_scan() -> None:
    """The warm-up scans batches as large as a scan's, so a worker's first block reuses memory
    its process has (fresh pages cost a new worker's first blocks 50-150 ms, issue 27)."""
    from shardwalk.build import _SCAN_BATCH_BYTES

    assert _scan_peak(None, warm=True) >= 2 * _SCAN_BATCH_BYTES

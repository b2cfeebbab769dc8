"""Batch builds of collections from Parquet: the pipeline behind ``shardwalk.jobs``.

One pipeline, two executors: :class:`ThreadExecutor` (this process, threads) and
``shardwalk.index.distributed.RayExecutor`` (Ray tasks). Both run the same functions on the
same blocks, so they write the same bytes. A block (:func:`plan_blocks`) is a run of one file's
row groups of about ``_BLOCK_BYTES`` decoded; the worker that runs a step on a block reads it
itself (pyarrow, Arrow batches end to end, a FixedSizeList column viewed zero-copy), so only
small results come back to the driver. A task takes a run of blocks (:func:`plan_tasks`, about
``_TASK_BYTES``, at least a few tasks per worker), read one after the other:

1. scan: every block of the input is read and checked (ids, vectors: dimension, nulls, NaN and
   infinities, zero vectors under cosine), vectorised per batch of a few MB; its non-vector
   columns (sorted by id) and the ids and vectors of its training sample (rows picked by a
   hash of id and seed) come back to the driver, never its other vectors;
2. the driver merges the blocks' id runs, checks that ids are distinct and numbers the rows in
   id order;
3. train: balanced k-means on the sample (in the driver, faiss's threads);
4. assign: every block again, in the worker that reads it, each row to its nearest centroid
   (the centroids put in the object store once), written to per-partition spill files;
   ids and partitions (12 bytes a row) come back to the driver;
5. build: each partition's HNSW graph from its spill files, in a task of its own, written into
   the new snapshot directory; the tasks start largest first (by estimated cost), so the
   workers finish close together;
6. commit: rows, index metadata and the seal, an empty log, then one manifest commit makes the
   new collection (or the new version of an existing one) visible.

A bad row stops the job before anything is committed, with the file and the row named; the
previous version of the collection (if any) is untouched, and the files of the attempt are
removed. Index kinds other than ``partitioned`` build their one index in one task.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shardwalk import _fs
from shardwalk._files import atomic_write_with, make_dirs
from shardwalk._progress import Progress, Stage, check_progress
from shardwalk._threads import ThreadBudget, available_cores, delegated, in_thread, peak_rss_bytes
from shardwalk.arrow_views import _arrow, _numpy
from shardwalk.attributes import attribute_table, shared_array, tenant_array
from shardwalk.build_report import _schedule_report, _stage_report, _stats, _worker_times
from shardwalk.errors import InvalidArgumentError, NotFoundError
from shardwalk.index import bulk, make_index
from shardwalk.index.tenancy import TenantDirectory
from shardwalk.rows import RowTable
from shardwalk.storage import DataDir, remove_dir, seal_snapshot
from shardwalk.validation import METRICS, check_choice, check_index_params, check_name
from shardwalk.wal import WriteAheadLog

__all__ = ["Columns", "ThreadExecutor", "run_pipeline"]

_BATCH = 65_536  # rows per Arrow batch a worker checks at once (a larger row group is split)
_BLOCK_BYTES = 32 << 20  # decoded bytes per block: row groups are packed up to this
# decoded bytes per task of the scan and assign passes (a run of blocks, read one after the
# other): a Ray worker waits 10-20 ms between two tasks (it gets the next one when the driver
# has the last one's result), as long as a 16 MB block takes to read (issue 27)
_TASK_BYTES = 64 << 20
_TASKS_PER_WORKER = 4  # at least, when there are blocks enough: a slow worker takes fewer
# vector bytes per batch of the scan: decoding a block in batches of a few MB instead of whole
# reuses the same few MB of the worker's heap, where a whole block's buffers (~3x its size)
# grow it and take longer to decode (issue 27: ~20 ms per 16.8 MB block, against 40-200 ms
# for the first blocks read whole in a new worker)
_SCAN_BATCH_BYTES = 4 << 20
# bytes of a column chunk the scan reads at a time: streamed, the chunks are not held whole
# (pre-buffered, a block's ~16-32 MB of them were fresh memory in each new worker, whose first
# pages cost 50-150 ms of kernel time to fault in on a VM: issue 27)
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Columns:
    """Where each part of a row is in the input."""

    id: str
    vector: str
    tenant: str | None
    shared: str | None
    attributes: tuple[str, ...]

    @property
    def read(self) -> list[str]:
        """The columns to read from the files."""
        names = [self.id, self.vector, self.tenant, self.shared, *self.attributes]
        return [n for n in names if n is not None]


@dataclass(frozen=True)
class Block:
    """A run of one Parquet file's row groups, the unit of work of the scan and assign steps."""

    path: str
    row_groups: tuple[int, ...]
    first_row: int  # the block's first row, counted in the file
    rows: int
    bytes: int  # decoded bytes of the row groups (from the footer)


def plan_blocks(files: Sequence[str], target: int = _BLOCK_BYTES) -> list[Block]:
    """Each file's row groups packed into blocks of up to ``target`` decoded bytes (a larger row
    group is a block of its own); the same blocks on threads and on Ray."""
    blocks: list[Block] = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        row = 0
        run: list[int] = []
        run_rows = run_bytes = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            size = group.total_byte_size
            if run and run_bytes + size > target:
                blocks.append(Block(path, tuple(run), row, run_rows, run_bytes))
                row += run_rows
                run, run_rows, run_bytes = [], 0, 0
            run.append(g)
            run_rows += group.num_rows
            run_bytes += size
        if run:
            blocks.append(Block(path, tuple(run), row, run_rows, run_bytes))
    return blocks


def plan_tasks(
    blocks: Sequence[Block], workers: int, target: int = _TASK_BYTES
) -> list[tuple[Block, ...]]:
    """The blocks in runs of about ``target`` decoded bytes, the same number of blocks a run
    (the last one shorter), and at least ``_TASKS_PER_WORKER`` runs per worker when there are
    blocks enough."""
    if not blocks:
        return []
    runs = max(-(-sum(b.bytes for b in blocks) // target), _TASKS_PER_WORKER * workers)
    size = -(-len(blocks) // min(runs, len(blocks)))
    return [tuple(blocks[i : i + size]) for i in range(0, len(blocks), size)]


def _each(blocks: tuple[Block, ...], *, step: Callable[..., Any], **kwargs: Any) -> list[Any]:
    """``step(block, **kwargs)`` for each block of a task, in order: its results."""
    return [step(block, **kwargs) for block in blocks]


def _batches(
    block: Block, select: Sequence[str], rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """The block's rows as Arrow batches: in batches of ``rows`` rows if given (each column
    chunk streamed ``_READ_BUFFER`` bytes at a time as the batches are decoded); else its row
    groups read at once, or, for a row group far larger than a block, in batches of ``_BATCH``
    rows (bounded memory)."""
    groups, columns = list(block.row_groups), list(select)
    if rows is not None:
        source = pq.ParquetFile(block.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        yield from source.iter_batches(rows, row_groups=groups, columns=columns, use_threads=False)
        return
    source = pq.ParquetFile(block.path, pre_buffer=True)
    if block.bytes <= 4 * _BLOCK_BYTES:
        table = source.read_row_groups(groups, columns=columns, use_threads=False)
        yield from table.to_batches()
    else:
        yield from source.iter_batches(
            _BATCH, row_groups=groups, columns=columns, use_threads=False
        )


class _BadRow(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason


# -- executors ----------------------------------------------------------------------------------
class ThreadExecutor(bulk.Executor):
    """Runs the pipeline's steps in this process's threads (``workers`` at once)."""

    kind = "threads"

    def __init__(self, workers: int | None = None, budget: ThreadBudget | None = None) -> None:
        self.workers = max(1, workers or (budget.threads if budget else available_cores()))
        self.cpus = 1
        self.object_store_bytes = 0

    def put(self, value: Any) -> Any:
        return value

    def warm(self, fn: Callable[[], Any]) -> Callable[[], list[dict[str, Any]]]:
        """``fn()`` in a thread now (what this process pays once, while the driver reads the
        input's footers); returns the wait for it, which raises what ``fn`` raised (as Ray's
        does). The threads start with each step: no workers to report."""
        done = in_thread(fn, "shardwalk-warm", daemon=True)

        def wait() -> list[dict[str, Any]]:
            done()
            return []

        return wait

    @contextmanager
    def _calls(
        self, fn: Callable[..., Any], name: str, shared: dict[str, Any]
    ) -> Iterator[Callable[[Any], Future]]:
        def run(item: Any) -> Any:
            with delegated(self.cpus):
                return fn(item, **shared)

        # the pool's exit waits for the calls running (those not started were cancelled)
        with ThreadPoolExecutor(self.workers, thread_name_prefix=f"shardwalk-{name}") as pool:
            yield lambda item: pool.submit(run, item)

    def _first_done(self, pending: list[Future]) -> list[Future]:
        return list(wait(pending, return_when=FIRST_COMPLETED).done)

    def _result(self, handle: Future) -> Any:
        return handle.result()

    def _stop(self, pending: list[Future]) -> None:
        for future in pending:
            future.cancel()


# -- checks of a block --------------------------------------------------------------------------
def _vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A list column as (n, dim) float32, a zero-copy (read-only) view of a FixedSizeList of
    float32 without nulls; raises _BadRow at the first row that is not a vector of ``dim``
    finite numbers."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if col.null_count:
        raise _BadRow(
            int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]), "null vector"
        )
    if pa.types.is_fixed_size_list(col.type):
        if col.type.list_size != dim:
            raise _BadRow(0, f"vector of {col.type.list_size} components; expected {dim}")
    else:
        lengths = _numpy(pc.list_value_length(col))
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            raise _BadRow(int(bad[0]), f"vector of {lengths[bad[0]]} components; expected {dim}")
    values = col.flatten()  # the rows' values only (a slice of the child, no copy)
    # a view of float32 without nulls; a null component becomes NaN (named below), other
    # types are converted
    flat = np.asarray(_numpy(values), dtype=np.float32)
    vectors = flat.reshape(n, dim)
    # one pass without a temporary of the block's size: a row's sum is finite when its values
    # are (or overflowed: those rows are looked at one by one)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = np.add.reduce(vectors, axis=1)
    suspect = np.flatnonzero(~np.isfinite(sums))
    if suspect.size:
        finite = np.isfinite(vectors[suspect]).all(axis=1)
        if not finite.all():
            first = int(suspect[np.flatnonzero(~finite)[0]])
            raise _BadRow(first, "NaN or infinite value in the vector")
    return vectors


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _check_block(
    block: pa.RecordBatch | pa.Table, columns: Columns, dim: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a batch (unit vectors under cosine), checked with whole-array
    operations; raises _BadRow naming the first bad row."""
    id_col = _column(block, columns.id)
    if id_col.null_count:
        first = int(np.flatnonzero(id_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise _BadRow(first, f"null id in column {columns.id!r}")
    ids = _numpy(id_col)
    if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise _BadRow(int(np.argmax(ids)), "id beyond the largest int64")
    ids = ids.astype(np.int64, copy=False)
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise _BadRow(int(negative[0]), f"negative id {ids[negative[0]]}")
    vectors = _vectors(_column(block, columns.vector), dim)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if zero.size:
            raise _BadRow(int(zero[0]), "all-zero vector (cosine needs non-zero vectors)")
        vectors = vectors / norms
    return ids, vectors


def _checked(
    block: Block,
    select: Sequence[str],
    columns: Columns,
    dim: int,
    metric: str,
    timing: dict,
    rows: int | None = None,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray]]:
    """(batch, ids, vectors) of each batch of ``block`` (of ``rows`` rows if given, see
    _batches), checked; a bad row is an InvalidArgumentError naming the file and the row.
    ``timing`` gets the seconds spent reading (``read``) and checking (``check``)."""
    row = block.first_row
    batches = _batches(block, select, rows)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        t1 = time.perf_counter()
        timing["read"] = timing.get("read", 0.0) + (t1 - t0)
        if batch is None:
            return
        try:
            ids, vectors = _check_block(batch, columns, dim, metric)
        except _BadRow as bad:
            raise InvalidArgumentError(
                f"{block.path!r}, row {row + bad.index}: {bad.reason}; fix or drop that row "
                "(nothing was committed: the collection, if it existed, is unchanged)"
            ) from None
        timing["check"] = timing.get("check", 0.0) + (time.perf_counter() - t1)
        yield batch, ids, vectors
        row += batch.num_rows


# -- the steps that run on workers -------------------------------------------------------------
def _batch_rows(dim: int) -> int:
    """Rows per batch of the scan and assign passes: ``_SCAN_BATCH_BYTES`` of vectors."""
    return max(1024, _SCAN_BATCH_BYTES // (4 * dim))


def warm_worker() -> None:
    """What a process pays once, at its first block, paid while the job starts instead (the
    executors' warm-up): a Parquet file like an input (int64 ids, float32 vectors) written,
    then read, checked and sampled by :func:`scan_block` (the first use of Parquet's reader,
    its memory pool, and of the checks' kernels). It holds three scan batches
    (``_SCAN_BATCH_BYTES`` of vectors each, whatever their dimension: the same number of
    values to decode), so its scan takes about the memory a block's does (~25 MB of Arrow's
    pool): memory the process has, reused by its first block (issue 27: fresh, a new worker's
    first blocks took 50-150 ms more CPU, the kernel faulting in its pages)."""
    dim = 8
    n = 3 * _SCAN_BATCH_BYTES // (4 * dim)
    # distinct values: encoded plain, as real vectors are (not as a dictionary of one value)
    values = np.arange(n * dim, dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(_arrow(values), dim)
    table = pa.table({"id": _arrow(np.arange(n, dtype=np.int64)), "vector": vectors})
    with tempfile.TemporaryDirectory(prefix="shardwalk-warm-") as tmp:
        path = os.path.join(tmp, "warm.parquet")
        # written plain (what is warmed is the reading: encoding costs 3-5x this)
        pq.write_table(
            table, path, compression="none", use_dictionary=False, write_statistics=False
        )
        columns = Columns("id", "vector", None, None, ())
        for block in plan_blocks([path]):
            scan_block(block, columns=columns, dim=dim, metric="l2", fraction=0.01, seed=0)


def scan_block(
    block: Block, *, columns: Columns, dim: int, metric: str, fraction: float, seed: int
) -> tuple[pa.Table, np.ndarray, np.ndarray, dict[str, Any]]:
    """A block read and checked: its non-vector columns (ids as int64) in id order (the driver
    merges the blocks' runs), the ids and vectors of its rows in the training sample (a few:
    only they cross to the driver), and its timings."""
    t0, cpu0 = time.perf_counter(), time.thread_time()
    timing: dict[str, float] = {}
    out, sample_ids, sample = [], [], []
    rows = _batch_rows(dim)
    for batch, ids, vectors in _checked(block, columns.read, columns, dim, metric, timing, rows):
        t1 = time.perf_counter()
        chosen = np.flatnonzero(bulk.sample_mask(ids, fraction, seed))
        sample_ids.append(ids[chosen])
        sample.append(vectors[chosen])
        kept = batch.drop_columns([columns.vector])
        out.append(
            kept.set_column(kept.schema.get_field_index(columns.id), columns.id, _arrow(ids))
        )
        timing["sample"] = timing.get("sample", 0.0) + (time.perf_counter() - t1)
    kept = pa.Table.from_batches(out)  # a block has rows (plan_blocks skips empty row groups)
    ids = _numpy(kept.column(columns.id))
    if np.any(ids[1:] < ids[:-1]):
        kept = kept.take(_arrow(np.argsort(ids, kind="stable")))
    return (kept, np.concatenate(sample_ids), np.concatenate(sample),
            _stats(block, dim, timing, t0, cpu0))  # fmt: skip


def assign_block(
    block: Block,
    *,
    columns: Columns,
    dim: int,
    metric: str,
    index_metric: str,
    centroids: np.ndarray,
    staging: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Each row of a block to its partition, the rows written to the partitions' spill files
    here (a file per partition per batch): (ids, partitions, per-block stats with the bytes
    spilled). Streamed in the scan's batches: the memory the scan (and the warm-up) took is
    what the assign reuses (read whole, a block's row groups took fresh memory again)."""
    t0, cpu0 = time.perf_counter(), time.thread_time()
    timing: dict[str, float] = {}
    ids_out, parts_out, spilled = [], [], 0
    select = [columns.id, columns.vector]
    rows = _batch_rows(dim)
    for _, ids, vectors in _checked(block, select, columns, dim, metric, timing, rows):
        t1 = time.perf_counter()
        parts, written = bulk.assign_block(ids, vectors, centroids, index_metric, staging)  # type: ignore[arg-type]
        ids_out.append(ids)
        parts_out.append(parts)
        spilled += written
        timing["assign"] = timing.get("assign", 0.0) + (time.perf_counter() - t1)
    stats = {**_stats(block, dim, timing, t0, cpu0), "spilled": spilled}
    if not ids_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int32), stats
    return np.concatenate(ids_out), np.concatenate(parts_out), stats


def build_whole(
    p: int,
    *,
    kind: str,
    staging: str,
    index_dir: str,
    sorted_ids: np.ndarray,
    groups: np.ndarray | None,
    dim: int,
    index_metric: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """An index of another kind than partitioned, built whole from partition 0's spill files
    (every row is there), labels in id order."""
    started, t0, cpu0 = time.time(), time.perf_counter(), time.thread_time()
    ids, vectors, read = bulk.read_spill(staging, 0)
    labels = np.searchsorted(sorted_ids, ids).astype(np.int64)
    index = make_index(kind, dim=dim, metric=index_metric, **params)  # type: ignore[arg-type]
    if ids.size:
        index.add(labels, vectors, groups=None if groups is None else groups[labels])
    os.makedirs(index_dir, exist_ok=True)
    index.save(index_dir)
    return {"partition": 0, "rows": int(ids.size), "seconds": time.perf_counter() - t0,
            "bytes_read": read, "pid": os.getpid(), "peak_rss_bytes": peak_rss_bytes(),
            **_worker_times(started, cpu0)}  # fmt: skip


def build_part(p: int, **kwargs: Any) -> dict[str, Any]:
    started, cpu0 = time.time(), time.thread_time()
    report = bulk.build_partition(p, **kwargs)
    report.update(_worker_times(started, cpu0), peak_rss_bytes=peak_rss_bytes())
    return report


# -- the driver ---------------------------------------------------------------------------------
def input_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The Parquet files of ``source`` (a file, a directory searched recursively, or a list)."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[str] = []
    for item in items:
        path = os.path.abspath(os.fspath(item))
        if os.path.isdir(path):
            found = sorted(
                p
                for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                if p.endswith((".parquet", ".pq")) and os.path.isfile(p)
            )
            if not found:
                raise NotFoundError(f"no .parquet files under {path!r}")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise NotFoundError(f"no such file or directory: {path!r}")
    return files


def _schema_and_dim(files: list[str], columns: Columns) -> tuple[int, int, tuple[str, ...]]:
    """(rows, dim, attribute columns) from the files' footers; checks every column exists."""
    rows = 0
    attributes: tuple[str, ...] | None = None
    dim = 0
    for path in files:
        try:
            meta = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise InvalidArgumentError(f"{path!r} is not a readable Parquet file: {exc}") from exc
        schema = meta.schema_arrow
        for what, name in (("id", columns.id), ("vector", columns.vector),
                           ("tenant", columns.tenant), ("shared_with", columns.shared),
                           *(("attribute", a) for a in columns.attributes)):  # fmt: skip
            if name is not None and name not in schema.names:
                raise InvalidArgumentError(
                    f"{path!r} has no column {name!r}; columns: {schema.names} (set the {what} "
                    "column)"
                )
        if not pa.types.is_integer(schema.field(columns.id).type):
            raise InvalidArgumentError(
                f"{path!r}: id column {columns.id!r} has type {schema.field(columns.id).type}; "
                "expected integers"
            )
        vtype = schema.field(columns.vector).type
        if not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype) or
                pa.types.is_fixed_size_list(vtype)) or not (
            pa.types.is_floating(vtype.value_type) or pa.types.is_integer(vtype.value_type)
        ):  # fmt: skip
            raise InvalidArgumentError(
                f"{path!r}: vector column {columns.vector!r} has type {vtype}; expected a list "
                "of numbers (fixed_size_list<float32> preferred)"
            )
        if not dim and meta.metadata.num_rows:
            first = next(meta.iter_batches(batch_size=1, columns=[columns.vector])).column(0)[0]
            dim = getattr(vtype, "list_size", 0) or (len(first) if first.is_valid else 0)
        if attributes is None:
            skip = {columns.id, columns.vector, columns.tenant, columns.shared}
            attributes = columns.attributes or tuple(n for n in schema.names if n not in skip)
        rows += meta.metadata.num_rows
    if rows == 0:
        raise InvalidArgumentError(f"the input ({len(files)} files) has no rows")
    if dim == 0:
        raise InvalidArgumentError(
            f"cannot tell the vector dimension: the first row of {files[0]!r} has an empty or "
            "null vector"
        )
    return rows, int(dim), attributes or ()


def _find_id(files: list[str], column: str, id_: int) -> list[tuple[str, int]]:
    """Every (file, row) holding ``id_`` in ``column``."""
    found: list[tuple[str, int]] = []
    for path in files:
        start = 0
        for batch in pq.ParquetFile(path).iter_batches(_BATCH, columns=[column]):
            hits = np.flatnonzero(_numpy(batch.column(0)) == id_)
            found.extend((path, start + int(h)) for h in hits)
            start += batch.num_rows
    return found


def run_pipeline(
    path: str | os.PathLike[str],
    name: str,
    source: Any,
    *,
    executor: Any,
    index: str = "partitioned",
    metric: str = "l2",
    columns: Columns,
    index_params: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The pipeline (see the module docstring); ``shardwalk.jobs.build_collection`` documents
    the parameters and picks the executor."""
    t_start = time.perf_counter()
    progress = check_progress(progress)
    check_name("collection", name)
    check_choice("metric", metric, METRICS)
    kind, params = check_index_params(index, index_params)
    started = executor.warm(warm_worker)  # the workers start while the footers are read
    root = os.path.abspath(os.fspath(path)) + os.sep
    files = [f for f in input_files(source) if not f.startswith(root)]  # not our own files
    if not files:
        raise NotFoundError(f"no Parquet input in {source!r} outside the data directory")
    n_rows, dim, attributes = _schema_and_dim(files, columns)
    columns = Columns(columns.id, columns.vector, columns.tenant, columns.shared, attributes)
    index_metric = "ip" if metric == "cosine" else metric
    partitioned = kind == "partitioned"
    if partitioned:
        parts = int(params.get("partitions", 8))
        seed = int(params.get("seed", 0))
        train_size = int(params.get("train_size") or max(1000, 256 * parts))
        layout = {"partitions": parts, "m": int(params.get("m", 16)),
                  "ef_construction": int(params.get("ef_construction", 200)),
                  "ef": int(params.get("ef", 64)), "seed": seed, "train_size": train_size}  # fmt: skip
    else:
        parts, seed, train_size = 1, 0, 0
    fraction = min(1.0, train_size / n_rows) if partitioned else 0.0
    seconds: dict[str, float] = {}
    driver_cpu: dict[str, float] = {}  # CPU seconds of this process (all its threads) per stage
    datadir = DataDir(path)
    generation = datadir.next_generation()
    directory = datadir.collection_dir(name)
    existed = name in datadir.manifest["collections"]
    snap = directory / f"snap-{generation:06d}"
    staging = directory / f"build-{generation:06d}"
    wal = f"wal-{generation:06d}.log"
    try:
        # 0. start: the executor's workers up
        t0, c0 = time.perf_counter(), time.process_time()
        blocks = plan_blocks(files)
        tasks = plan_tasks(blocks, executor.workers)
        workers_started = started()
        seconds["start"] = time.perf_counter() - t0
        driver_cpu["start"] = time.process_time() - c0

        # 1. scan
        t0, c0 = time.perf_counter(), time.process_time()
        kept: list[pa.Table | None] = [None] * len(blocks)  # in the blocks' order
        position = {(b.path, b.first_row): i for i, b in enumerate(blocks)}
        sampled: list[tuple[np.ndarray, np.ndarray]] = []
        block_stats: dict[str, list[dict[str, Any]]] = {"scan": [], "assign": []}
        gathered: dict[str, tuple[float, float]] = {}  # stage: (started, last block back), epoch
        epoch = time.time()
        scanned = Stage(progress, "scan", n_rows)
        # closed before the cleanup below when the loop stops early (the tasks end first)
        with closing(executor.stream(
            _each, tasks, name="scan", step=scan_block,
            columns=columns, dim=dim, metric=metric, fraction=fraction, seed=seed,
        )) as results:  # fmt: skip
            for out, sample_ids, sample, stats in (r for task in results for r in task):
                kept[position[stats["path"], stats["first_row"]]] = out
                sampled.append((sample_ids, sample))
                block_stats["scan"].append(stats)
                scanned.advance(stats["rows"])
        gathered["scan"] = (epoch, time.time())
        scanned.finish()
        table = pa.concat_tables(kept, promote_options="default")  # type: ignore[arg-type]
        del kept
        ids = _numpy(table.column(columns.id))
        # each block's ids are sorted: a merge of their runs (of one run when the input is in
        # id order), not a sort of every id
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        same = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if same.size:
            dup = int(sorted_ids[same[0]])
            places = _find_id(files, columns.id, dup)[:2]
            where = " and ".join(f"{p!r} row {r}" for p, r in places)
            raise InvalidArgumentError(
                f"id {dup} appears more than once: {where}; ids must be distinct (nothing was "
                "committed: the collection, if it existed, is unchanged)"
            )
        table = table.drop_columns([columns.id])  # the ids are sorted_ids
        if table.num_columns:
            table = table.take(_arrow(order))
        seconds["scan"] = time.perf_counter() - t0
        driver_cpu["scan"] = time.process_time() - c0

        # 2. train
        t0, c0 = time.perf_counter(), time.process_time()
        if partitioned:
            # the sample in the blocks' order of arrival: train_centroids takes it in id order
            sample_ids = np.concatenate([i for i, _ in sampled])
            sample = np.concatenate([v for _, v in sampled])
            centroids = bulk.train_centroids(sample_ids, sample, parts, index_metric, seed)  # type: ignore[arg-type]
            del sample
        else:
            centroids = np.zeros((1, dim), np.float32)
        del sampled
        seconds["train"] = time.perf_counter() - t0
        driver_cpu["train"] = time.process_time() - c0

        # 3. assign
        t0, c0, epoch = time.perf_counter(), time.process_time(), time.time()
        make_dirs(directory)  # the collection's directory, durable in collections/
        staging.mkdir()
        part_of = np.zeros(n_rows, np.int32)
        shared_centroids = executor.put(centroids)  # once, not per block
        assigned = Stage(progress, "assign", n_rows)
        with closing(executor.stream(
            _each, tasks, name="assign", step=assign_block,
            columns=columns, dim=dim, metric=metric, index_metric=index_metric,
            centroids=shared_centroids, staging=str(staging),
        )) as results:  # fmt: skip
            for block_ids, block_parts, stats in (r for task in results for r in task):
                part_of[np.searchsorted(sorted_ids, block_ids)] = block_parts
                block_stats["assign"].append(stats)
                assigned.advance(stats["rows"])
        gathered["assign"] = (epoch, time.time())
        assigned.finish()
        spilled = sum(stats["spilled"] for stats in block_stats["assign"])
        seconds["assign"] = time.perf_counter() - t0
        driver_cpu["assign"] = time.process_time() - c0

        # 4. build
        t0, c0 = time.perf_counter(), time.process_time()
        index_dir = snap / "index"
        index_dir.mkdir(parents=True)
        shared = executor.put(sorted_ids)
        built = Stage(progress, "build", parts)
        if partitioned:
            # largest first (a graph's cost grows with its rows): each worker takes the next
            # task when it is done, so the last to start are the short ones and the workers
            # finish close together (the tail is in report["build_schedule"])
            largest_first = np.argsort(-np.bincount(part_of, minlength=parts), kind="stable")
            reports = executor.map(
                build_part, largest_first.tolist(), name="build_partition",
                on_result=lambda _: built.advance(1), staging=str(staging), index_dir=str(index_dir), sorted_ids=shared, dim=dim,
                metric=index_metric, m=layout["m"], ef_construction=layout["ef_construction"],
                seed=seed,
            )  # fmt: skip
            bulk.write_partitioned_meta(
                index_dir, centroids=centroids, part_of=part_of, dim=dim,
                metric=index_metric, params=layout,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            groups = None
            if kind == "multitenant":
                owners = tenant_array(_column_list(table, columns.tenant), n_rows)
                groups = TenantDirectory().add(np.arange(n_rows), owners)
            reports = executor.map(
                build_whole, [0], name="build_index", on_result=lambda _: built.advance(1),
                kind=kind, staging=str(staging),
                index_dir=str(index_dir), sorted_ids=shared, groups=groups, dim=dim,
                index_metric=index_metric, params=params,
            )  # fmt: skip
        built.finish()
        seconds["build"] = time.perf_counter() - t0
        driver_cpu["build"] = time.process_time() - c0

        # 5. commit
        t0, c0 = time.perf_counter(), time.process_time()
        rows_table = _row_table(table, columns, sorted_ids)
        atomic_write_with(snap / "rows.parquet", rows_table.write_parquet)
        seal_snapshot(snap, {"collection": name, "rows": n_rows, "count": n_rows})
        remove_dir(staging)
        WriteAheadLog.create(str(directory / wal))
        entry = {"dim": dim, "metric": metric, "index": kind, "params": params,
                 "snapshot": snap.name, "wal": wal}  # fmt: skip

        def switch(manifest: dict[str, Any]) -> None:
            manifest["collections"][name] = entry

        datadir.commit(switch)
        datadir.remove_unreferenced(name, keep={snap.name, wal})
        seconds["commit"] = time.perf_counter() - t0
        driver_cpu["commit"] = time.process_time() - c0
    except BaseException:
        _fs.rmtree(staging)
        _fs.rmtree(snap)
        _fs.unlink(directory / wal, missing_ok=True)
        if not existed:
            _fs.rmtree(directory)
        datadir.close()
        raise
    datadir.close()
    seconds["total"] = time.perf_counter() - t_start
    sizes = np.bincount(part_of, minlength=parts).tolist()
    return {
        "collection": name,
        "rows": n_rows,
        "dim": dim,
        "index": kind,
        "partitions": parts,
        "partition_sizes": sizes,
        "files": len(files),
        "executor": executor.kind,
        "workers": executor.workers,
        "replaced": existed,
        "snapshot": snap.name,
        "seconds": seconds,
        "driver_cpu_seconds": driver_cpu,
        "start": {"workers": workers_started},
        "stages": {
            stage: _stage_report(found, seconds[stage], executor.workers, *gathered[stage])
            for stage, found in block_stats.items()
        },
        "bytes": {
            "input": sum(os.path.getsize(f) for f in files),
            "spilled": spilled,
            "snapshot": sum(p.stat().st_size for p in snap.rglob("*") if p.is_file()),
            "object_store": executor.object_store_bytes,
        },
        "peak_rss_bytes": {
            "driver": peak_rss_bytes(),
            "workers": max((r.get("peak_rss_bytes", 0) for r in reports), default=0),
        },
        "build_schedule": _schedule_report(reports),
        "tasks": reports,
    }


def _column_list(table: pa.Table, name: str | None) -> Any:
    if name is None:
        return None
    return [None if v is None else str(v) for v in table.column(name).to_pylist()]


def _row_table(table: pa.Table, columns: Columns, ids: np.ndarray) -> RowTable:
    """The rows in id order (``table`` is sorted by id already)."""
    n = ids.size
    tenants = tenant_array(_column_list(table, columns.tenant), n)
    shared = None
    if columns.shared is not None:
        shared = shared_array(table.column(columns.shared).to_pylist(), n)
    attributes = attribute_table(table.select(list(columns.attributes)), n)
    rows = RowTable()
    rows.append(ids, tenants, attributes, shared)
    return rows

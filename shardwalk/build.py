"""Batch builds of collections from Parquet: the pipeline behind ``shardwalk.jobs``.

One pipeline, two executors: :class:`ThreadExecutor` (this process, threads) and
``shardwalk.index.distributed.RayExecutor`` (Ray tasks, Parquet read by Ray Data). Both run
the same functions on the same inputs, so they write the same bytes:

1. scan: every block of the input is read and checked (ids, vectors: dimension, nulls, NaN and
   infinities, zero vectors under cosine); its non-vector columns and its training sample
   (rows picked by a hash of id and seed) come back to the driver, never its vectors;
2. the driver checks that ids are distinct and numbers the rows in id order;
3. train: balanced k-means on the sample (in the driver, faiss's threads);
4. assign: every block again, each row to its nearest centroid, written to spill files;
5. build: each partition's HNSW graph from its spill files, in a task of its own, written into
   the new snapshot directory;
6. commit: rows, index metadata and the seal, an empty log, then one manifest commit makes the
   new collection (or the new version of an existing one) visible.

A bad row stops the job before anything is committed, with the file and the row named; the
previous version of the collection (if any) is untouched, and the files of the attempt are
removed. Index kinds other than ``partitioned`` build their one index in one task.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shardwalk import _fs
from shardwalk._files import atomic_write_with, make_dirs
from shardwalk._threads import ThreadBudget, available_cores, delegated, peak_rss_bytes
from shardwalk.errors import InvalidArgumentError, NotFoundError
from shardwalk.index import bulk, make_index
from shardwalk.index.tenancy import TenantDirectory
from shardwalk.rows import RowTable, attribute_table, shared_array, tenant_array
from shardwalk.storage import DataDir, remove_dir, seal_snapshot
from shardwalk.validation import METRICS, check_choice, check_index_params, check_name
from shardwalk.wal import WriteAheadLog

__all__ = ["Columns", "ThreadExecutor", "build_collection"]

_PATH = "path"  # the column Ray Data adds with include_paths (the thread scan adds it too)
_ERROR, _SAMPLE, _PART, _ROW = "_error", "_sample", "_part", "_row"
_BATCH = 65_536  # rows per block of the thread scan


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


class _BadRow(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason


# -- executors ----------------------------------------------------------------------------------
class ThreadExecutor:
    """Runs the pipeline's steps in this process's threads (``workers`` at once)."""

    kind = "threads"

    def __init__(self, workers: int | None = None, budget: ThreadBudget | None = None) -> None:
        self.workers = max(1, workers or (budget.threads if budget else available_cores()))
        self.cpus = 1
        self.object_store_bytes = 0

    def put(self, value: Any) -> Any:
        return value

    def map(
        self, fn: Callable[..., Any], items: Sequence[Any], *, name: str | None = None, **shared
    ) -> list[Any]:
        def run(item: Any) -> Any:
            with delegated(self.cpus):
                return fn(item, **shared)

        if self.workers == 1 or len(items) <= 1:
            return [run(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(run, items))

    def scan_parquet(
        self, files: Sequence[str], select: Sequence[str], fn: Callable[..., pa.Table], **kwargs
    ) -> Iterator[pa.Table]:
        """``fn(block, **kwargs)`` over blocks of ``_BATCH`` rows, ``workers`` blocks at once,
        in file order (at most twice ``workers`` blocks in memory)."""

        def blocks() -> Iterator[pa.Table]:
            for path in files:
                for batch in pq.ParquetFile(path).iter_batches(_BATCH, columns=list(select)):
                    table = pa.Table.from_batches([batch])
                    yield table.append_column(_PATH, pa.array([path] * table.num_rows))

        def run(block: pa.Table) -> pa.Table:
            with delegated(1):
                return fn(block, **kwargs)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            queue: list[Any] = []
            for block in blocks():
                queue.append(pool.submit(run, block))
                if len(queue) >= 2 * self.workers:
                    yield queue.pop(0).result()
            for future in queue:
                yield future.result()


# -- checks of a block --------------------------------------------------------------------------
def _vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A list column as (n, dim) float32; raises _BadRow at the first row that is not a vector
    of ``dim`` finite numbers."""
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
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            raise _BadRow(int(bad[0]), f"vector of {lengths[bad[0]]} components; expected {dim}")
    values = pc.list_flatten(col)
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    vectors = flat.reshape(n, dim)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise _BadRow(int(np.flatnonzero(~finite)[0]), "NaN or infinite value in the vector")
    return vectors


def _check_block(
    block: pa.Table, columns: Columns, dim: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a block (unit vectors under cosine); raises _BadRow."""
    id_col = block.column(columns.id).combine_chunks()
    if id_col.null_count:
        first = int(np.flatnonzero(id_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise _BadRow(first, f"null id in column {columns.id!r}")
    ids = np.asarray(id_col.to_numpy(zero_copy_only=False))
    if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise _BadRow(int(np.argmax(ids)), "id beyond the largest int64")
    ids = ids.astype(np.int64)
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise _BadRow(int(negative[0]), f"negative id {ids[negative[0]]}")
    vectors = _vectors(block.column(columns.vector), dim)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if zero.size:
            raise _BadRow(int(zero[0]), "all-zero vector (cosine needs non-zero vectors)")
        vectors = vectors / norms
    return ids, vectors


def _error_row(block: pa.Table, columns: Columns, bad: _BadRow) -> pa.Table:
    ids = block.column(columns.id).combine_chunks()
    value = ids[bad.index].as_py() if bad.index < len(ids) else None
    return pa.table(
        {
            _ERROR: pa.array([bad.reason]),
            _PATH: pa.array([block.column(_PATH)[bad.index].as_py()]),
            columns.id: pa.array([value if isinstance(value, int) else None], pa.int64()),
        }
    )


# -- the steps that run on workers -------------------------------------------------------------
def scan_block(
    block: pa.Table, *, columns: Columns, dim: int, metric: str, fraction: float, seed: int
) -> pa.Table:
    """A block checked: its non-vector columns (with ``path``) and ``_sample`` (the vector of
    rows in the training sample, an empty list elsewhere); or one ``_error`` row."""
    try:
        ids, vectors = _check_block(block, columns, dim, metric)
    except _BadRow as bad:
        return _error_row(block, columns, bad)
    chosen = bulk.sample_mask(ids, fraction, seed)
    lengths = np.where(chosen, dim, 0).astype(np.int32)
    offsets = np.zeros(ids.size + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    sample = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors[chosen].reshape(-1)))
    out = block.drop_columns([columns.vector])
    out = out.set_column(out.schema.get_field_index(columns.id), columns.id, pa.array(ids))
    return out.append_column(_SAMPLE, sample).append_column(_ERROR, pa.nulls(ids.size, pa.string()))


def assign_block(
    block: pa.Table,
    *,
    columns: Columns,
    dim: int,
    metric: str,
    index_metric: str,
    centroids: np.ndarray,
    staging: str,
) -> pa.Table:
    """Each row's partition (its rows written to the partitions' spill files): ``id``,
    ``_part`` and the spilled bytes in the schema metadata."""
    ids, vectors = _check_block(block, columns, dim, metric)
    parts, written = bulk.assign_block(ids, vectors, centroids, index_metric, staging)  # type: ignore[arg-type]
    table = pa.table({columns.id: pa.array(ids, pa.int64()), _PART: pa.array(parts, pa.int32())})
    return table.replace_schema_metadata({"spilled": str(written)})


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
    t0 = time.perf_counter()
    ids, vectors, read = bulk.read_spill(staging, 0)
    labels = np.searchsorted(sorted_ids, ids).astype(np.int64)
    index = make_index(kind, dim=dim, metric=index_metric, **params)  # type: ignore[arg-type]
    if ids.size:
        index.add(labels, vectors, groups=None if groups is None else groups[labels])
    os.makedirs(index_dir, exist_ok=True)
    index.save(index_dir)
    return {"partition": 0, "rows": int(ids.size), "seconds": time.perf_counter() - t0,
            "bytes_read": read, "pid": os.getpid(), "peak_rss_bytes": peak_rss_bytes()}  # fmt: skip


def build_part(p: int, **kwargs: Any) -> dict[str, Any]:
    report = bulk.build_partition(p, **kwargs)
    report["peak_rss_bytes"] = peak_rss_bytes()
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


def _locate(path: str, columns: Columns, dim: int, metric: str) -> tuple[int, str]:
    """(row in the file, reason) of the first bad row of ``path`` (read again, streaming)."""
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(_BATCH, columns=[columns.id, columns.vector]):
        try:
            _check_block(pa.Table.from_batches([batch]), columns, dim, metric)
        except _BadRow as bad:
            return start + bad.index, bad.reason
        start += batch.num_rows
    return -1, ""


def _find_id(files: list[str], column: str, id_: int) -> list[tuple[str, int]]:
    """Every (file, row) holding ``id_`` in ``column``."""
    found = []
    for path in files:
        start = 0
        for batch in pq.ParquetFile(path).iter_batches(_BATCH, columns=[column]):
            hits = np.flatnonzero(batch.column(0).to_numpy(zero_copy_only=False) == id_)
            found.extend((path, start + int(h)) for h in hits)
            start += batch.num_rows
    return found


def _bad_row_error(
    error: pa.Table, columns: Columns, dim: int, metric: str
) -> InvalidArgumentError:
    path = error.column(_PATH)[0].as_py()
    id_ = error.column(columns.id)[0].as_py()
    row, reason = _locate(path, columns, dim, metric)
    if row < 0:  # not found again (should not happen): what the worker saw
        reason = error.column(_ERROR)[0].as_py()
    which = f"row {row}" if row >= 0 else f"the row with id {id_}"
    return InvalidArgumentError(
        f"{path!r}, {which}: {reason}; fix or drop that row (nothing was committed: the "
        "collection, if it existed, is unchanged)"
    )


def build_collection(
    path: str | os.PathLike[str],
    name: str,
    source: Any,
    *,
    executor: Any,
    index: str = "partitioned",
    metric: str = "l2",
    columns: Columns,
    index_params: dict[str, Any],
) -> dict[str, Any]:
    """The pipeline (see the module docstring); ``shardwalk.jobs.build_collection`` documents
    the parameters and picks the executor."""
    t_start = time.perf_counter()
    check_name("collection", name)
    check_choice("metric", metric, METRICS)
    kind, params = check_index_params(index, index_params)
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
    datadir = DataDir(path)
    generation = datadir.next_generation()
    directory = datadir.collection_dir(name)
    existed = name in datadir.manifest["collections"]
    snap = directory / f"snap-{generation:06d}"
    staging = directory / f"build-{generation:06d}"
    wal = f"wal-{generation:06d}.log"
    try:
        # 1. scan
        t0 = time.perf_counter()
        kept: list[pa.Table] = []
        for out in executor.scan_parquet(
            files, columns.read, scan_block,
            columns=columns, dim=dim, metric=metric, fraction=fraction, seed=seed,
        ):  # fmt: skip
            if out.column(_ERROR).null_count < out.num_rows:
                raise _bad_row_error(
                    out.filter(out.column(_ERROR).is_valid()), columns, dim, metric
                )
            kept.append(out.drop_columns([_ERROR, _PATH]))
        table = pa.concat_tables(kept, promote_options="default")
        del kept
        ids = table.column(columns.id).to_numpy()
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
        table = table.take(pa.array(order))
        seconds["scan"] = time.perf_counter() - t0

        # 2. train
        t0 = time.perf_counter()
        if partitioned:
            sample_col = table.column(_SAMPLE).combine_chunks()
            lengths = pc.list_value_length(sample_col).to_numpy(zero_copy_only=False)
            sample_ids = sorted_ids[lengths > 0]
            flat = pc.list_flatten(sample_col).to_numpy(zero_copy_only=False)
            sample = np.asarray(flat, np.float32).reshape(-1, dim)
            centroids = bulk.train_centroids(sample_ids, sample, parts, index_metric, seed)  # type: ignore[arg-type]
            del sample, flat
        else:
            centroids = np.zeros((1, dim), np.float32)
        table = table.drop_columns([_SAMPLE])
        seconds["train"] = time.perf_counter() - t0

        # 3. assign
        t0 = time.perf_counter()
        make_dirs(directory)  # the collection's directory, durable in collections/
        staging.mkdir()
        part_of = np.zeros(n_rows, np.int32)
        spilled = 0
        for out in executor.scan_parquet(
            files, [columns.id, columns.vector], assign_block,
            columns=columns, dim=dim, metric=metric, index_metric=index_metric,
            centroids=centroids, staging=str(staging),
        ):  # fmt: skip
            rows = np.searchsorted(sorted_ids, out.column(columns.id).to_numpy())
            part_of[rows] = out.column(_PART).to_numpy()
            spilled += int((out.schema.metadata or {}).get(b"spilled", 0))
        seconds["assign"] = time.perf_counter() - t0

        # 4. build
        t0 = time.perf_counter()
        index_dir = snap / "index"
        index_dir.mkdir(parents=True)
        shared = executor.put(sorted_ids)
        if partitioned:
            # largest first: the last tasks to start are the short ones (less idle at the end)
            largest_first = np.argsort(-np.bincount(part_of, minlength=parts), kind="stable")
            reports = executor.map(
                build_part, largest_first.tolist(), name="build_partition",
                staging=str(staging), index_dir=str(index_dir), sorted_ids=shared, dim=dim,
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
                build_whole, [0], name="build_index", kind=kind, staging=str(staging),
                index_dir=str(index_dir), sorted_ids=shared, groups=groups, dim=dim,
                index_metric=index_metric, params=params,
            )  # fmt: skip
        seconds["build"] = time.perf_counter() - t0

        # 5. commit
        t0 = time.perf_counter()
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

"""A collection's persistence: the log records of its writes and its snapshot files.

The collection decides when (a write is logged before it is applied; a checkpoint writes a
snapshot and starts a new log); this module decides how:

- log records: an upsert is one Arrow record batch (``_id``, ``_vector``, tenant, sharing and
  attribute columns), a delete one of ``_id`` and, for a delete in one owner's namespace, the
  owner (framed and checksummed by ``wal.py``). Ids are namespaced by owner (``rows.py``): an
  upsert replaces the rows of its (owner, id) pairs only, and its ``_id`` field carries
  ``namespaced`` metadata saying so; an upsert record without it (logs written before
  namespaces) replaces the id's row whoever owns it, and a delete record without an owner
  deletes every row of its ids, as they did when written;
- a snapshot directory: ``rows.parquet`` (ids, liveness, tenants, attributes), ``index/``
  (the index's own files), sealed by ``snapshot.json`` (every file's size and crc32, see
  ``storage.py``). Every index kind keeps the vectors itself (``index.store``: faiss's storage,
  or a multi-tenant index's own), so its files hold the only copy on disk too. For an index
  that kept none, ``vectors.arrow`` would hold the live vectors by row (read back when
  present: snapshots of earlier versions have it beside every kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardwalk._files import atomic_write_with
from shardwalk._threads import ThreadBudget
from shardwalk.index import IndexHost, VectorIndex, load_index
from shardwalk.index.store import RowStore, VectorStore
from shardwalk.index.tenancy import TenantDirectory
from shardwalk.rows import SHARED, TENANT, RowTable
from shardwalk.storage import seal_snapshot, verify_snapshot
from shardwalk.wal import WalRecord

__all__ = [
    "Delete",
    "State",
    "Upsert",
    "delete_record",
    "read_snapshot",
    "upsert_record",
    "write_snapshot",
]

_ID, _VECTOR = "_id", "_vector"


@dataclass
class Upsert:
    """The parts of an upsert, as the collection applies them."""

    ids: np.ndarray
    vectors: np.ndarray
    tenants: pa.Array
    attributes: pa.Table
    shared: pa.Array | None
    # replaces each id's rows whoever owns them: an unscoped write (embedded or admin), or a
    # record from before namespaces; else only the rows in the namespace of each row's owner
    everywhere: bool = True


@dataclass
class Delete:
    """A logged delete: ``ids`` in ``owner``'s namespace (a tenant name), or every row of the
    ids when ``everywhere``."""

    ids: np.ndarray
    owner: str | None = None
    everywhere: bool = True


_NAMESPACED = {b"namespaced": b"1"}


@dataclass
class State:
    """What a snapshot holds: the rows, the index, the vectors by row, who sees what."""

    rows: RowTable
    index: VectorIndex
    store: RowStore
    tenants: TenantDirectory


def upsert_record(write: Upsert, dim: int) -> pa.RecordBatch:
    columns = {
        _ID: pa.array(write.ids, pa.int64()),
        _VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(write.vectors.reshape(-1)), dim),
        TENANT: write.tenants,
    }
    if write.shared is not None:
        columns[SHARED] = write.shared
    for name in write.attributes.column_names:
        columns[name] = write.attributes.column(name).combine_chunks()
    batch = pa.record_batch(columns)
    if write.everywhere:  # as every record before namespaces
        return batch
    id_field = batch.schema.field(_ID).with_metadata(_NAMESPACED)
    return pa.RecordBatch.from_arrays(batch.columns, schema=batch.schema.set(0, id_field))


def delete_record(
    ids: np.ndarray, owner: str | None = None, *, everywhere: bool = True
) -> pa.RecordBatch:
    """A delete of ``ids``: every row of them (``everywhere``), or the rows in ``owner``'s
    namespace (a tenant name, None: the ownerless rows)."""
    columns = {_ID: pa.array(ids, pa.int64())}
    if not everywhere:
        columns[TENANT] = pa.array([owner] * len(ids), pa.string())
    return pa.record_batch(columns)


def read_record(record: WalRecord, dim: int) -> Upsert | Delete:
    """A logged write: an :class:`Upsert` or a :class:`Delete`."""
    batch = record.batch
    ids = batch.column(_ID).to_numpy()
    if record.op == "delete":
        if TENANT not in batch.schema.names:  # every row of the ids (as before namespaces)
            return Delete(ids)
        owners = batch.column(TENANT)
        return Delete(ids, owners[0].as_py() if len(owners) else None, everywhere=False)
    everywhere = not (batch.schema.field(_ID).metadata or {}).get(b"namespaced")
    flat = batch.column(_VECTOR).values.to_numpy(zero_copy_only=False)
    names = [n for n in batch.schema.names if n not in (_ID, _VECTOR, TENANT, SHARED)]
    return Upsert(
        ids=ids,
        vectors=np.ascontiguousarray(flat.reshape(-1, dim), dtype=np.float32),
        tenants=batch.column(TENANT),
        attributes=pa.table({n: batch.column(n) for n in names}) if names else pa.table({}),
        shared=batch.column(SHARED) if SHARED in batch.schema.names else None,
        everywhere=everywhere,
    )


def write_snapshot(snap: Path, state: State, *, dim: int, name: str) -> None:
    """Write and seal a snapshot of ``state`` into the new directory ``snap``."""
    (snap / "index").mkdir(parents=True)
    rows = state.rows
    atomic_write_with(snap / "rows.parquet", rows.write_parquet)
    state.index.save(str(snap / "index"))
    if state.store is not getattr(state.index, "store", None):
        _write_vectors(snap / "vectors.arrow", state, dim)
    seal_snapshot(snap, {"collection": name, "rows": rows.rows, "count": len(rows)})


def _write_vectors(path: Path, state: State, dim: int) -> None:
    """The live vectors by row, for an index that does not keep them (none does today)."""
    rows = state.rows
    live = np.flatnonzero(rows.alive)
    table = pa.table(
        {
            "row": pa.array(live, pa.int64()),
            "id": pa.array(rows.ids[live], pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(state.store.take(live).reshape(-1)), dim
            ),
        }
    )

    def write(target: str) -> None:
        with pa.OSFile(target, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    atomic_write_with(path, write)


def read_snapshot(
    snap: Path, *, dim: int, budget: ThreadBudget | None = None, host: IndexHost | None = None
) -> State:
    """A snapshot back, after checking every file against its seal; the index draws its
    threads from ``budget`` (or ``host`` keeps it)."""
    verify_snapshot(snap)
    rows = RowTable.read_parquet(str(snap / "rows.parquet"))
    index = load_index(str((snap / "index").absolute()), budget=budget, host=host)
    store = getattr(index, "store", None)
    if not isinstance(store, RowStore):  # the index keeps no vectors by row: ours
        with pa.memory_map(str(snap / "vectors.arrow"), "r") as source:
            table = pa.ipc.open_file(source).read_all()
        data = np.zeros((rows.rows, dim), dtype=np.float32)  # dead rows stay zero
        flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
        data[table.column("row").to_numpy()] = flat.reshape(-1, dim)
        store = VectorStore(dim, data)
    tenants = TenantDirectory()
    columns = rows.table()
    shared = columns.column(SHARED).combine_chunks() if SHARED in columns.column_names else None
    tenants.add(np.arange(rows.rows), columns.column(TENANT).combine_chunks(), shared)
    return State(rows=rows, index=index, store=store, tenants=tenants)

"""The files of a collection and their upkeep: opening (its snapshot read, its write-ahead log
replayed), checkpoints (a new snapshot and an empty log, switched in the manifest), vectors read
back from the log (for an index kept in Ray actors), compaction (the live rows rebuilt beside
the old ones, swapped in, then checkpointed), and handing freed memory back to the OS.

Functions of a :class:`shardwalk.collection.Collection` (which keeps the read and write paths
and calls them): they work on its state under its locks, taken in the order it documents (see
``Collection.__init__``). Durability rests on
:class:`shardwalk.storage.DataDir`: every file the manifest names is fsynced before the
manifest that names it is renamed into place.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shardwalk import collection_indexer, collection_writes, scope_masks
from shardwalk._threads import in_thread
from shardwalk.errors import CorruptionError, FailedPreconditionError
from shardwalk.index.base import KeepsRoom
from shardwalk.rows import ANY_OWNER, SHARED, TENANT
from shardwalk.snapshot import State, Upsert, read_record, read_snapshot, write_snapshot
from shardwalk.storage import DataDir
from shardwalk.wal import WriteAheadLog

if TYPE_CHECKING:
    from shardwalk.collection import Collection

log = logging.getLogger("shardwalk.collection")

# Background compaction starts once this share of the rows are dead (deleted or replaced) and
# at least _COMPACT_MIN_DEAD of them: Milvus compacts a segment at 20% deleted rows, Qdrant's
# vacuum optimizer at 20% and 1,000 deleted vectors. Dead rows cost memory and, in HNSW, search
# time (tombstones stay in the graph as waypoints and crowd the beam).
_COMPACT_FRACTION = 0.2
_COMPACT_MIN_DEAD = 1000
# A compaction replays the writes that came during its build into the new rows outside the
# commit lock until fewer than this many rows are left; writers wait only for the last ones
_CATCH_UP_ROWS = 256
_COMPACTION_NICE = 10  # the compaction thread runs this much nicer than the process


def _release_free_memory() -> None:
    """Return freed memory to the OS: Arrow's pool, then glibc's heap (where it is glibc)."""
    pa.default_memory_pool().release_unused()
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def _lower_priority(more: int) -> None:
    """Make the calling thread ``more`` nicer (Linux: nice values are per thread); elsewhere,
    or where refused, nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + more))
    except (AttributeError, OSError):
        pass


def _release_index(index: Any) -> None:
    """Let go of what an index holds outside this process (a Ray-hosted one's actors)."""
    close = getattr(index, "close", None)
    if close is not None:
        close()


# -- opening -----------------------------------------------------------------------------------
def attach(collection: Collection, datadir: DataDir, snapshot: str | None, wal: str) -> None:
    """Load the snapshot (if any) and replay the log (called by the engine)."""
    directory = datadir.collection_dir(collection.name)
    collection._datadir = datadir
    if snapshot is not None:
        state = read_snapshot(
            directory / snapshot,
            dim=collection.dim,
            budget=collection._budget,
            host=collection._host,
        )
        _release_index(collection._index)  # the empty one made by the constructor
        collection._install(state.rows, state.index, state.store, state.tenants)
        collection._rows.declare(collection._declared)
    collection._snapshot = snapshot
    # an index read from an earlier format was rebuilt: the next checkpoint rewrites it
    collection._upgraded = bool(getattr(collection._index, "upgraded", False))
    wal_path = str(directory / wal)
    for record in WriteAheadLog.replay(wal_path):  # through the delta: batched inserts
        write = read_record(record, collection.dim)
        if isinstance(write, Upsert):
            collection_writes.apply_upsert(collection, write)
        else:
            owner = ANY_OWNER if write.everywhere else write.owner
            collection_writes.apply_delete(collection, write.ids, owner)
        if len(collection._delta) >= collection.delta_limit:
            collection_indexer.drain(collection)
    collection_indexer.drain(collection)
    collection._wal = WriteAheadLog(wal_path)
    collection._applied_log = (wal_path, collection._wal.size)
    # files of an interrupted checkpoint (written, never committed to the manifest)
    datadir.remove_unreferenced(collection.name, keep={wal} | ({snapshot} if snapshot else set()))


def logged_vectors(collection: Collection, rows: np.ndarray) -> np.ndarray:
    """The vectors of live ``rows`` written since the last checkpoint, read back from the
    write-ahead log (the last upsert of each row's (owner, id) is that row's).

    A read path (a search restoring a Ray actor, under the shared lock): it reads the live
    log only up to the end of the last applied group, an offset taken under the exclusive
    lock, and writes nothing; a group being appended meanwhile is neither read nor cut."""
    applied = collection._applied_log
    if collection._wal is None or applied is None:
        raise FailedPreconditionError(
            f"collection {collection.name!r} keeps no write-ahead log to recover vectors from"
        )
    path, end = applied
    ids = collection._rows.ids[rows]
    codes = collection._rows.owner_codes(rows)
    by_owner = {}  # owner code -> (positions in rows, their ids, argsort of the ids)
    for code in np.unique(codes).tolist():
        mine = np.flatnonzero(codes == code)
        by_owner[code] = (mine, ids[mine], np.argsort(ids[mine]))
    vectors = np.zeros((rows.size, collection.dim), dtype=np.float32)
    found = np.zeros(rows.size, dtype=bool)
    for record in WriteAheadLog.replay(path, end=end):
        write = read_record(record, collection.dim)
        if not isinstance(write, Upsert):
            continue
        written = collection._rows.codes(write.tenants)
        for code in np.unique(written).tolist():
            if code not in by_owner:
                continue
            mine, own_ids, order = by_owner[code]
            sel = np.flatnonzero(written == code)
            at = np.minimum(
                np.searchsorted(own_ids, write.ids[sel], sorter=order), own_ids.size - 1
            )
            hit = own_ids[order[at]] == write.ids[sel]
            vectors[mine[order[at[hit]]]] = write.vectors[sel[hit]]
            found[mine[order[at[hit]]]] = True
    if not found.all():
        raise CorruptionError(
            f"collection {collection.name!r}: ids {ids[~found][:5].tolist()} are live but not in "
            "the write-ahead log since the last checkpoint; reopen the engine"
        )
    return vectors


# -- checkpoints -------------------------------------------------------------------------------
@contextmanager
def checkpointed(collection: Collection) -> Iterator[tuple[dict[str, Any], int]]:
    """Hold writes back, checkpoint if anything changed, and yield this collection's
    manifest entry and its log's size: a consistent cut for a backup (shardwalk.backup),
    which pins the files the entry names before the block ends. Searches run meanwhile."""
    with collection._writes.lock:
        collection._check_open()
        if collection._datadir is None or collection._wal is None:
            raise FailedPreconditionError(f"collection {collection.name!r} has no files to back up")
        if (
            collection._wal.size or collection._snapshot is None or collection._upgraded
        ):  # as flush()
            checkpoint(collection)
            collection._upgraded = False
        yield collection._datadir.manifest["collections"][collection.name], collection._wal.size


def checkpoint(collection: Collection) -> None:
    collection_indexer.drain(collection)  # a snapshot's index holds every row
    datadir, old_wal = collection._datadir, collection._wal
    assert datadir is not None and old_wal is not None
    with datadir.guard(f"a checkpoint of collection {collection.name!r}"):
        generation = datadir.next_generation()
        directory = datadir.collection_dir(collection.name)
        snapshot = f"snap-{generation:06d}"
        wal = f"wal-{generation:06d}.log"
        state = State(
            rows=collection._rows,
            index=collection._index,
            store=collection._store,
            tenants=collection._tenants,
        )
        # On a failure the old snapshot and log stay current; the new files are removed by
        # the next checkpoint or open (not now: a spann index already reads its sealed
        # posting files from the new snapshot, see SpannIndex.save).
        write_snapshot(directory / snapshot, state, dim=collection.dim, name=collection.name)
        WriteAheadLog.create(str(directory / wal))

        def switch(manifest: dict[str, Any]) -> None:
            manifest["collections"][collection.name].update(snapshot=snapshot, wal=wal)

        datadir.commit(switch)
        try:
            old_wal.close()
            collection._wal = WriteAheadLog(str(directory / wal))
            collection._applied_log = (collection._wal.path, collection._wal.size)
            collection._snapshot = snapshot
            datadir.remove_unreferenced(collection.name, keep={snapshot, wal})
        except BaseException as exc:  # the manifest names the new log: no way back
            datadir.fail(exc)
            raise
    # writing the snapshot (Parquet rows, the serialised index) freed large buffers that
    # glibc keeps in its heap otherwise: 200K x 128 built in 50K-row upserts and flushed
    # held 187 MiB, 129 MiB once trimmed
    _release_free_memory()


# -- compaction --------------------------------------------------------------------------------
def maybe_compact(collection: Collection) -> None:
    """Start a background compaction past the dead-row threshold (the commit leader calls
    this: one caller at a time)."""
    threshold = collection.compaction_threshold
    if (
        threshold is None
        or collection._compactor is not None
        or collection._closed_because is not None
    ):
        return
    if not collection._deferred:  # an index in Ray actors: compact() only (new actors)
        return
    rows = collection._rows.rows
    if rows < collection._compact_after:
        return
    if rows - len(collection._rows) < max(collection.compaction_min_dead, threshold * rows):
        return
    thread = collection_indexer.background_thread(collection, "compact", _compact_in_background)
    collection._compactor = thread
    thread.start()


def _compact_in_background(collection: Collection) -> None:
    try:
        compact(collection, threads=1, nice=_COMPACTION_NICE)
    except BaseException as exc:
        collection._compaction_error = f"{type(exc).__name__}: {exc}"
        collection._compact_after = collection._rows.rows + collection.compaction_min_dead
        log.error("collection %r: a background compaction failed", collection.name, exc_info=exc)
    finally:
        collection._compactor = None


def compact(collection: Collection, threads: int | None = None, nice: int = 0) -> None:
    """Copy the live rows (holding back writes and the indexer, not searches), build new
    rows and a new index from them (``threads``: the index insert's; ``nice``: on a
    thread this much nicer, holding none of the collection's locks, so a descheduled
    build never holds up writers), replay the writes applied since the copy, then swap
    and checkpoint."""
    with collection._compaction:
        t0 = time.perf_counter()
        with collection._writes.lock, collection._indexing:  # nothing changes the rows or the index
            if collection._closed_because is not None:
                return
            live = np.flatnonzero(collection._rows.alive)
            columns = collection._rows.columns(live)
            upsert = Upsert(
                ids=collection._rows.ids[live],
                vectors=collection._vectors.take(live),  # the index's and the delta's rows
                tenants=columns.column(TENANT).combine_chunks(),
                attributes=columns.drop_columns(
                    [c for c in (TENANT, SHARED) if c in columns.column_names]
                ),
                shared=columns.column(SHARED).combine_chunks()
                if SHARED in columns.column_names
                else None,
                everywhere=False,  # each row in its owner's namespace, as it was
            )
            with collection._cache_lock:
                scopes = list(collection._masks)
            collection._since_cut = []
        try:
            _compact_from(collection, upsert, scopes, threads, nice, t0)
        finally:
            collection._since_cut = None


def _compact_from(
    collection: Collection,
    upsert: Upsert,
    scopes: list[Any],
    threads: int | None,
    nice: int,
    t0: float,
) -> None:
    fresh = type(collection)(
        name=collection.name,
        dim=collection.dim,
        metric=collection.metric,
        index=collection.index_kind,
        params=collection.params,
        budget=collection._budget,
        host=collection._host,
        attributes=collection.attributes,
    )
    if threads is not None and hasattr(fresh._index, "threads"):
        fresh._index.threads = threads

    def build() -> None:
        if nice:
            _lower_priority(nice)  # searches first: it yields the cores to them
        if upsert.ids.size:
            collection_writes.apply_upsert(fresh, upsert, direct=True)
        if fresh._shares_store and isinstance(fresh._index, KeepsRoom):
            fresh._index.reserve(fresh.delta_limit)  # room for the rows to come, unlocked
        for tenant, predicate in scopes:  # the scopes in use, kept current from here on
            rows = None if tenant is None else fresh._tenants.rows(tenant)
            fresh._masks[(tenant, predicate)] = scope_masks.build_mask(
                fresh, tenant, rows, predicate
            )
        while True:  # the writes of the meantime, writers going on
            with collection._rw.read():
                groups, collection._since_cut = collection._since_cut, []
            for writes in groups or []:
                collection_writes.apply_group(fresh, writes, direct=True)
            if sum(int(w.ids.size) for g in groups or [] for w in g) < _CATCH_UP_ROWS:
                break

    try:
        if nice:  # in a thread of its own, which alone takes the lower priority
            in_thread(build, f"shardwalk-compact-{collection.name}")()
        else:
            build()
        with collection._writes.lock:
            if collection._closed_because is not None:
                _release_index(fresh._index)
                return
            for writes in collection._since_cut or []:  # the last ones, writers waiting
                collection_writes.apply_group(fresh, writes, direct=True)
            if hasattr(fresh._index, "threads"):
                fresh._index.threads = collection.params.get("threads")
            with collection._indexing, collection._index_rw.write(), collection._rw.write():
                t_swap = time.perf_counter()
                old = collection._index
                collection._install(fresh._rows, fresh._index, fresh._store, fresh._tenants)
                collection._version += 1
                with collection._cache_lock:
                    collection._masks = fresh._masks
                collection._since_cut = None
                collection._compaction_swap_seconds = time.perf_counter() - t_swap
            collection._compactions += 1
            collection._compaction_seconds = time.perf_counter() - t0
            _release_index(old)
            if collection._datadir is not None and collection._wal is not None:
                checkpoint(collection)
    except BaseException:
        if fresh._index is not collection._index:
            _release_index(fresh._index)
        raise

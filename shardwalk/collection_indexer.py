"""A collection's rows on their way into its index: a write group's upserts coalesced into
one (one index insert: its rows are linked in parallel), and the background indexer, the thread
that moves the delta's rows (acknowledged, searched exactly) into the index in folds (once the
delta holds _FOLD_ROWS rows or its rows waited _FOLD_DELAY seconds), a turn at a time, beside
searches and writes.

Functions of a :class:`shardwalk.collection.Collection` (which keeps the read and write paths
and calls them): they work on its state under its locks, taken in the order it documents (see
``Collection.__init__``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from shardwalk.snapshot import Upsert

if TYPE_CHECKING:
    from shardwalk.collection import Collection
    from shardwalk.index.base import KeepsRoom

log = logging.getLogger("shardwalk.collection")

# The background indexer's turns: each excludes the searches that go through faiss (batches,
# explain, a single plain query the graph cannot answer alone: faiss's inserts are not safe
# beside its own search; the single queries of the usual paths do not wait: a plain one on
# hnsw searches beside them, search_beside, a scoped one scores the published view, and
# deletes tombstone beside them) for its insert, so a turn inserts about _INDEX_TURN seconds
# of rows (from the time rows took so far), _INDEX_CHUNK_MIN to _INDEX_CHUNK of them. On an
# index whose plain single queries take the lock too (no search_beside: partitioned, SPANN,
# multitenant), every search that meets a turn waits for all of it: there turns stay short,
# _INDEX_TURN_LOCKED, near one search's time at rest.
_INDEX_TURN = 0.005
_INDEX_TURN_LOCKED = 0.0005
_INDEX_CHUNK_MIN = 2
_INSERT_GUESS = 0.0000625  # seconds a row, until the first insert is timed
_INDEX_CHUNK = 128
# The indexer folds the delta in once it holds _FOLD_ROWS rows or its rows have waited
# _FOLD_DELAY seconds (or a writer waits for room), not at every write: each turn's wake-up
# and Python parts take the GIL from the searching threads a few times, and each time holds
# up a search as long as a whole fast one (a tenant's exact scan), so turns after every
# small write (hundreds a second) set the p99 of those searches (bench/reads_profile.py
# --modes, issue 26). Rows in the delta are searched exactly meanwhile: nothing waits for
# them to be indexed but their place in the graph.
_FOLD_ROWS = 64
_FOLD_DELAY = 0.05
_INDEXER_IDLE = 1.0  # seconds an indexer thread waits for rows before it ends

# At interpreter exit the indexers stop between two turns and a background compaction is
# waited for: a daemon thread still inside a native insert when the process tears down aborts
# it ("terminate called without an active exception", exit status 134). The rows left in the
# delta are in the log: the next open indexes them.
_exiting = threading.Event()
_tracked: weakref.WeakSet[Collection] = weakref.WeakSet()  # collections with a background thread


def track(collection: Collection) -> None:
    """Have the exit hook wait for the collection's background threads (indexer, compactor)."""
    _tracked.add(collection)


def background_thread(
    collection: Collection, role: str, target: Callable[[Collection], None]
) -> threading.Thread:
    """A daemon thread ``shardwalk-<role>-<name>`` that runs ``target(collection)``, waited
    for at interpreter exit (:func:`track`); not started: the caller keeps it on the
    collection first, then starts it."""
    track(collection)
    return threading.Thread(
        target=target,
        args=(collection,),
        name=f"shardwalk-{role}-{collection.name}",
        daemon=True,
    )


@atexit.register
def _stop_background() -> None:
    _exiting.set()
    for collection in list(_tracked):
        with collection._room:
            indexer = collection._indexer
            collection._room.notify_all()  # an idle indexer waits for rows
        for thread in (indexer, collection._compactor):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=60.0)


def _coalesce(writes: list[Any]) -> list[Any]:
    """Consecutive upserts of distinct ids (and of one kind: unscoped or in their owners'
    namespaces) as one (one index insert for a group: its rows are linked in parallel);
    anything else as it came, in order."""
    if len(writes) == 1:
        return writes
    out: list[Any] = []
    run: list[Upsert] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(_concat(run))
        run.clear()

    seen: set[int] = set()
    for write in writes:
        if isinstance(write, Upsert):
            ids = set(write.ids.tolist())
            if seen.isdisjoint(ids) and (not run or run[0].everywhere == write.everywhere):
                run.append(write)
                seen |= ids
                continue
            flush()
            run.append(write)
            seen = ids
        else:
            flush()
            seen = set()
            out.append(write)
    flush()
    return out


def _concat(upserts: list[Upsert]) -> Upsert:
    n = [u.ids.size for u in upserts]
    shared = None
    if any(u.shared is not None for u in upserts):
        shared = pa.concat_arrays(
            [
                u.shared if u.shared is not None else pa.nulls(size, pa.list_(pa.string()))
                for u, size in zip(upserts, n)
            ]
        )
    attributes = [u.attributes for u in upserts]
    return Upsert(
        ids=np.concatenate([u.ids for u in upserts]),
        vectors=np.concatenate([u.vectors for u in upserts]),
        tenants=pa.concat_arrays([u.tenants.cast(pa.string()) for u in upserts]),
        attributes=_concat_attributes(attributes, n),
        shared=shared,
        everywhere=upserts[0].everywhere,  # (a run is of one kind: see _coalesce)
    )


def _concat_attributes(tables: list[pa.Table], sizes: list[int]) -> pa.Table:
    if not any(t.num_columns for t in tables):
        return pa.table({})
    filled = [
        t if t.num_columns else pa.table({"__rows__": pa.nulls(size)})
        for t, size in zip(tables, sizes)
    ]
    merged = pa.concat_tables(filled, promote_options="default")
    return merged.drop_columns(["__rows__"]) if "__rows__" in merged.column_names else merged


def kick(collection: Collection) -> None:
    """Make sure an indexer thread works through the delta: start one, or wake it when it
    waits for rows or a fold is due by size (one waiting for a fold's delay sleeps on: a
    wake-up per write is what the folds save)."""
    with collection._room:
        if collection._indexer is None:
            if collection._closed_because is None:
                start_indexer(collection)
        elif collection._indexer_idle or len(collection._delta) >= _FOLD_ROWS:
            collection._room.notify_all()


def start_indexer(collection: Collection) -> None:  # under collection._room
    if _exiting.is_set():
        return
    thread = background_thread(collection, "index", index_loop)
    collection._indexer = thread
    thread.start()


def index_loop(collection: Collection) -> None:
    """The background indexer: insert the delta's rows into the index, a fold at a time
    (see _FOLD_ROWS), a chunk per turn; once the delta stays empty for _INDEXER_IDLE seconds
    the thread ends (the next write starts another). Its inserts run on this thread alone: set once for the thread's life
    (each turn's insert then finds faiss's and numba's thread counts as it wants them)."""
    with collection._budget.take(1):  # (one slot, the thread's own: nothing counted)
        _index_turns(collection)


def _index_turns(collection: Collection) -> None:
    since: float | None = None  # when the delta's rows began to wait (at the latest)
    delta = collection._delta
    while True:
        with collection._room:  # decided under the lock a writer's kick takes: no lost wake-up
            if not len(delta) and collection._closed_because is None:
                since = None
                collection._indexer_idle = True
                collection._room.wait(_INDEXER_IDLE)
                collection._indexer_idle = False
            if not len(delta) or collection._closed_because is not None or _exiting.is_set():
                collection._indexer = None
                collection._room.notify_all()
                return
            if since is None:
                since = time.perf_counter()
            _wait_for_fold(collection, since)
            if collection._closed_because is not None or _exiting.is_set():
                continue  # (the check above ends the thread)
        since = time.perf_counter()  # rows written from now on wait for the next fold
        try:
            fold = len(delta)  # the rows there now; later ones wait for the next fold
            beside = hasattr(collection._index, "search_beside")
            seconds = _INDEX_TURN if beside else _INDEX_TURN_LOCKED
            while fold > 0:
                turn = int(seconds / max(collection._insert_seconds, 1e-7))
                count = min(_INDEX_CHUNK, max(_INDEX_CHUNK_MIN, turn), fold)
                # one thread: an OpenMP team for a few dozen rows costs more in hand-offs
                # than it saves, and a member the OS deschedules holds the turn (and every
                # search waiting for it) at its barrier
                done = index_some(collection, count, threads=1)
                collection._indexed_in_background += done
                fold -= done
                if not done or _exiting.is_set():
                    break
        except BaseException as exc:
            collection._closed_because = "stopped at a failed index insert; reopen the engine"
            collection._closed_cause = exc
            log.error(
                "collection %r stopped at a failed index insert", collection.name, exc_info=exc
            )


def _wait_for_fold(collection: Collection, since: float) -> None:
    """Wait (under ``collection._room``) until a fold is due: the delta holds _FOLD_ROWS
    rows, its rows have waited _FOLD_DELAY seconds since ``since``, a writer waits for room,
    or the collection closes."""
    while (
        len(collection._delta) < _FOLD_ROWS
        and not collection._wanting_room
        and collection._closed_because is None
        and not _exiting.is_set()
    ):
        left = since + _FOLD_DELAY - time.perf_counter()
        if left <= 0:
            return
        collection._room.wait(left)


def index_some(collection: Collection, count: int, threads: int | None = None) -> int:
    """Insert the delta's first ``count`` rows into the index (searches wait only for the
    insert itself; writes of new rows not at all; ``threads``: the insert's, default the
    index's); returns how many."""
    from shardwalk.scope_masks import publish  # (it imports this module)

    with collection._indexing:
        if collection._closed_because is not None:
            return 0
        with collection._rw.read():  # a copy: writers may move the delta meanwhile
            rows, vectors, owners = collection._delta.head(count)
        if not rows.size:
            return 0
        # an index that keeps room (told cheaply: a Protocol's isinstance costs ~25 us a turn)
        keeper = cast("KeepsRoom", collection._index)
        if collection._store_beside_inserts and not keeper.room(rows.size):
            # the insert must not move the vectors that scoped searches read beside it
            # (holding only _rw): it makes room while they are held out (amortised)
            with collection._rw.write(), collection._moving.write():
                keeper.reserve(rows.size)
        with collection._index_rw.write():
            t0 = time.perf_counter()
            collection._add_to_index(rows, vectors, owners, threads)
            took = (time.perf_counter() - t0) / rows.size
            collection._insert_seconds = 0.7 * collection._insert_seconds + 0.3 * took
            with collection._rw.write():
                # rows deleted or replaced while they waited (not in the index then)
                dead = rows[~collection._rows.alive[rows]]
                if dead.size:
                    collection._index.delete(dead)
                collection._delta.advance(rows.size)
                publish(collection)
    with collection._room:
        collection._room.notify_all()  # writers waiting for room
    return int(rows.size)


def drain(collection: Collection) -> None:
    """Index every row of the delta in this thread (one insert: faiss links it in
    parallel). Under the commit lock: no write adds rows meanwhile."""
    while len(collection._delta) and index_some(collection, len(collection._delta)):
        pass


def wait_for_room(collection: Collection, rows: int) -> bool:
    """Wait until the delta has room for ``rows`` more (or is empty); False if the
    collection was closed meanwhile. Called by a group's leader."""
    delta = collection._delta
    if len(delta) + rows <= collection.delta_limit:  # only the leader adds rows: no race here
        return True
    t0 = time.perf_counter()
    with collection._room:
        collection._delta_waits += 1
        collection._wanting_room += 1  # an indexer waiting for a fold's delay folds now
        try:
            while len(delta) and len(delta) + rows > collection.delta_limit:
                if collection._closed_because is not None:
                    return False
                if collection._indexer is None:
                    start_indexer(collection)
                collection._room.notify_all()
                collection._room.wait(0.5)
        finally:
            collection._wanting_room -= 1
        collection._delta_wait_seconds += time.perf_counter() - t0
    return collection._closed_because is None

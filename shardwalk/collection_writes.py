"""A collection's write path: a write group committed (each write checked against the state
and the writes before it, the accepted records logged with one fsync, then applied under the
exclusive lock), and its upserts and deletes applied to the rows, the delta or the index.

Functions of a :class:`shardwalk.collection.Collection` (which keeps the public ``upsert`` and
``delete`` and the read path, and calls them): they work on its state under its locks, taken in
the order it documents (see ``Collection.__init__``).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shardwalk import collection_indexer, collection_persistence, scope_masks
from shardwalk._sync import Entry
from shardwalk.attributes import merge_schema
from shardwalk.collection_indexer import _coalesce
from shardwalk.errors import (
    FailedPreconditionError,
    NotFoundError,
    OutcomeUnknownError,
    ResourceExhaustedError,
    ShardwalkError,
)
from shardwalk.rows import ANY_OWNER
from shardwalk.snapshot import Upsert, delete_record
from shardwalk.wal import encode

if TYPE_CHECKING:
    from shardwalk.collection import Collection

log = logging.getLogger("shardwalk.collection")


@dataclass
class _Upsert(Upsert):
    record: bytes | None = None  # the encoded log record (None without a log)


@dataclass
class _Delete:
    ids: np.ndarray
    missing_ok: bool
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    owner: Any = ANY_OWNER  # a tenant: delete in its namespace only; ANY_OWNER: every row
    # (the row table checked, the live rows of ``present`` in it: what its kill finds, when no
    # write applied before it touched them; set by ``present``, else None)
    rows: tuple[Any, np.ndarray] | None = None


def commit_group(collection: Collection, group: list[Entry]) -> None:
    """Commit queued writes in order (called by the group's leader under the commit lock):
    check each against the state and the writes before it in the group, append every
    accepted record to the log with one fsync, then apply them all under the exclusive
    lock. A rejected write fails alone; the others commit."""
    if collection._closed_because is not None:
        error = FailedPreconditionError(
            f"collection {collection.name!r} {collection._closed_because}"
        )
        for entry in group:
            entry.error = error
        return
    schema = collection._rows.schema
    accepted: list[Entry] = []
    records: list[bytes] = []
    for entry in group:
        write = entry.payload
        try:
            if isinstance(write, _Upsert):
                merge_schema(schema, write.attributes)
                entry.result = int(write.ids.size)
                if write.record is not None:
                    records.append(write.record)
            else:
                write.present = present(collection, write, accepted)
                if write.present.size < write.ids.size and not write.missing_ok:
                    missing = write.ids[~np.isin(write.ids, write.present)]  # as given
                    shown = ", ".join(str(v) for v in missing[:5].tolist())
                    more = f" and {missing.size - 5} more" if missing.size > 5 else ""
                    raise NotFoundError(
                        f"collection {collection.name!r} has no ids {shown}{more}; nothing was "
                        "deleted (pass missing_ok=True to delete the others)"
                    )
                entry.result = int(write.present.size)
                if not write.present.size:
                    continue
                if collection._datadir is not None:
                    everywhere = write.owner is ANY_OWNER
                    owner = None if everywhere else write.owner
                    record = delete_record(write.present, owner, everywhere=everywhere)
                    records.append(encode("delete", record))
            accepted.append(entry)
        except ShardwalkError as exc:
            entry.error = exc
    if not accepted:
        return
    writes = _coalesce([entry.payload for entry in accepted])
    new_rows = sum(int(w.ids.size) for w in writes if isinstance(w, Upsert))
    # a group that would fill the delta alone is indexed before it is acknowledged
    direct = not collection._deferred or new_rows >= collection.delta_limit
    if new_rows and not direct and not collection_indexer.wait_for_room(collection, new_rows):
        error = FailedPreconditionError(
            f"collection {collection.name!r} {collection._closed_because}"
        )
        for entry in accepted:
            entry.error = error
        return
    # rows replaced or deleted may be in the index: their tombstones need it exclusively,
    # unless it takes them beside searches (hnsw: a search keeps the tombstones it started
    # with, and the published view holds the group's)
    fresh = fresh_upserts(collection, writes)
    replaces = direct or not all(fresh)
    beside = getattr(collection._index, "deletes_beside_searches", False)
    kills = direct or (replaces and not beside)
    ahead = {} if replaces else scope_masks.evaluate_ahead(collection, writes)
    logged = False  # the group's records are durable in the log
    try:
        if collection._wal is not None and records:
            assert collection._datadir is not None
            try:
                collection._datadir.append(
                    collection._wal, records, f"a write to {collection.name!r}"
                )
            except (ResourceExhaustedError, FailedPreconditionError) as exc:
                # no space (the log was cut back: nothing written) or read-only after a
                # failed fsync (reads go on): this group fails, the collection stays open
                for entry in accepted:
                    entry.error = exc
                return
            logged = True
        if direct:
            # the rows before this group's go into the index first
            collection_indexer.drain(collection)
        with (
            collection._indexing if direct else nullcontext(),
            collection._index_rw.write() if kills else nullcontext(),
            collection._rw.write(),
            collection._moving.write() if direct else nullcontext(),  # an insert may move them
        ):
            apply_group(collection, writes, direct=direct, fresh=fresh, ahead=ahead)
            cut = collection._since_cut  # (read once: a compaction sets it to None unlocked)
            if cut is not None:  # a compaction replays the group into its new rows
                cut.append(writes)
            if collection._wal is not None:
                collection._applied_log = (collection._wal.path, collection._wal.size)
        if len(collection._delta):
            collection_indexer.kick(collection)
    except BaseException as exc:
        # The log and the memory may now disagree: refuse further use until reopened
        # (replaying the log then gives the state every acknowledged write left).
        # (the cause's text stays out of the message, which a server passes to its
        # clients: it is chained to the errors, and logged)
        collection._closed_because = "stopped at a failed write; reopen the engine"
        collection._closed_cause = exc
        log.error("collection %r stopped at a failed write", collection.name, exc_info=exc)
        for entry in accepted:
            entry.error = (
                OutcomeUnknownError.logged(
                    f"collection {collection.name!r}", "write", "collection", exc
                )
                if logged  # durable, so not a failure: it comes back at the next open
                else FailedPreconditionError(
                    f"collection {collection.name!r} {collection._closed_because}"
                )
            )
            entry.error.__cause__ = exc
        return
    collection_persistence.maybe_compact(collection)


def fresh_upserts(collection: Collection, writes: list[Any]) -> list[bool]:
    """Per write of a group: whether it is an upsert of ids no row holds, before the group
    or by an earlier write of it (its apply then looks up no row to replace). Under the
    commit lock, before the group is applied."""
    fresh = []
    earlier: list[np.ndarray] = []
    for write in writes:
        if not isinstance(write, Upsert):
            fresh.append(False)
            earlier.append(write.present)
            continue
        new = not collection._rows.contains(write.ids).any()
        if new and earlier:
            new = not np.isin(write.ids, np.concatenate(earlier)).any()
        fresh.append(new)
        earlier.append(write.ids)
    return fresh


def apply_group(
    collection: Collection,
    writes: list[Any],
    *,
    direct: bool,
    fresh: list[bool] | None = None,
    ahead: dict[Any, np.ndarray] | None = None,
) -> None:
    """Apply a committed group's writes (coalesced) to the rows, the delta or the index,
    and the cached scope masks (under the exclusive lock, or to a collection no one else
    sees yet: a compaction's). ``fresh``: per write, an upsert of ids no row holds (see
    fresh_upserts); ``ahead``: filter values of its new rows (see scope_masks.evaluate_ahead)."""
    first, schema = collection._rows.rows, collection._rows.schema
    collection._killed = []
    for i, write in enumerate(writes):  # (looked up in this module: tests patch them)
        if isinstance(write, Upsert):
            apply_upsert(collection, write, direct=direct, fresh=fresh is not None and fresh[i])
        else:
            found = write.rows
            rows = found[1] if found is not None and found[0] is collection._rows else None
            apply_delete(collection, write.present, write.owner, rows=rows)
    if collection._checked and collection._rows.schema != schema:
        collection._checked = {}  # predicates are checked against the new schema from now on
    new_ids = fresh is not None and all(fresh)  # upserts of ids no row held: nothing shadowed
    scope_masks.follow_writes(collection, first, schema, writes, ahead, new_ids=new_ids)
    scope_masks.publish(collection)


def present(collection: Collection, write: _Delete, before: list[Entry]) -> np.ndarray:
    """The ids of ``write`` with a row in its namespace (any row, for ``ANY_OWNER``) once
    the writes ``before`` (of this group) are applied, in the order given. Under the
    commit lock."""
    ids, owner = write.ids, write.owner
    write.rows = None
    earlier = [entry.payload for entry in before]
    touched = [w.ids if isinstance(w, Upsert) else w.present for w in earlier]
    overlap = np.isin(ids, np.concatenate(touched)) if touched else None
    if owner is ANY_OWNER and (overlap is None or not overlap.any()):
        # the rows found are the ones its apply kills (no write before it touches them):
        # kept, so the apply does not look them up again
        at, rows = collection._rows.find(ids)
        write.rows = (collection._rows, rows)
        exists = np.zeros(ids.size, dtype=bool)
        exists[at] = True
        return ids[exists]
    exists = collection._rows.contains(ids, owner)
    if overlap is None or not overlap.any():
        return ids[exists]
    # the ids earlier writes of the group touched: who holds each, write by write
    at = np.flatnonzero(overlap)
    subset = ids[at]
    holders: dict[int, set[str | None]] = {i: set() for i in subset.tolist()}
    found_at, found_rows = collection._rows.find(subset)
    for i, name in zip(found_at.tolist(), collection._rows.owners(found_rows)):
        holders[int(subset[i])].add(name)
    for w in earlier:
        if isinstance(w, Upsert):
            hit = np.flatnonzero(np.isin(w.ids, subset))
            names = w.tenants.take(pa.array(hit)).to_pylist()
            for id_, name in zip(w.ids[hit].tolist(), names):
                holders[id_].add(name)
        else:
            for id_ in w.present.tolist():
                if id_ in holders:
                    if w.owner is ANY_OWNER:
                        holders[id_].clear()
                    else:
                        holders[id_].discard(w.owner)
    exists[at] = [
        bool(holders[i]) if owner is ANY_OWNER else owner in holders[i] for i in subset.tolist()
    ]
    return ids[exists]


def apply_upsert(
    collection: Collection, write: Upsert, *, direct: bool = False, fresh: bool = False
) -> None:
    """Apply an upsert to the rows, and its vectors to the delta (``direct``, or an index
    that takes writes directly: to the index, which the delta must not precede).
    ``fresh``: no row holds its ids (nothing to replace or look up)."""
    if not fresh:
        if write.everywhere:  # unscoped: it replaces the id's rows, whoever owns them
            unindex(collection, collection._rows.kill(write.ids))
        replaced = collection._rows.replaced_rows(write.ids, write.tenants)
    rows = collection._rows.append(
        write.ids, write.tenants, write.attributes, write.shared, fresh=fresh
    )
    if not fresh and replaced.size:
        unindex(collection, replaced)
    owners = collection._tenants.add(rows, write.tenants, write.shared)
    if direct or not collection._deferred:
        assert not len(collection._delta), "rows waiting in the delta come first"
        collection._add_to_index(rows, write.vectors, owners)
        collection._delta.reset(collection._rows.rows)
    else:
        collection._delta.append(rows, write.vectors, owners)
    collection._version += 1


def apply_delete(
    collection: Collection, ids: np.ndarray, owner: Any = ANY_OWNER, *, rows: Any = None
) -> None:
    """Kill ``ids``' rows in ``owner``'s namespace; ``rows``: those rows, found before (see
    ``present``)."""
    if rows is None:
        rows = collection._rows.kill(ids, owner)
    else:
        rows = collection._rows.kill_rows(rows)
    unindex(collection, rows)
    collection._version += 1


def unindex(collection: Collection, rows: np.ndarray) -> None:
    """Tombstone dead ``rows`` in the index (those of the delta are not there: the indexer
    tombstones them as it inserts them)."""
    if collection._masks:
        collection._killed.append(rows)
    rows = rows[rows < collection._delta.start]
    if rows.size:
        collection._index.delete(rows)

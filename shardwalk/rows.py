"""The rows of a collection: id, liveness, owner tenant and typed attributes of each vector.

Row numbers are the labels the vector index knows: append-only, so an upsert of an existing row
kills its old row and appends a new one, and the index never has to renumber. Tenants and
attributes are Arrow columns (compact, typed, written as Parquet), appended in chunks
(read and checked by :mod:`shardwalk.attributes`).

Ids are namespaced by owner (as Weaviate's per-tenant shards): a row's key is (owner tenant,
id), rows without an owner forming a namespace of their own, so tenant a's id 99 and tenant b's
id 99 are two rows and a write in one namespace never touches another. Reads by id either name
a namespace (``lookup``) or ask for every live row of the id (``find``, ``ANY_OWNER``), which
lists an id's rows by owner: the ownerless row first, then owners in name order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from shardwalk.errors import CorruptionError

__all__ = ["ANY_OWNER", "SHARED", "TENANT", "RowTable"]

ID, ALIVE, TENANT, SHARED = "_id", "_alive", "_tenant", "_shared"
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_ANY = -2  # the owner code that matches every owner (-1: a tenant with no row, matches none)


class _AnyOwner:
    def __repr__(self) -> str:
        return "ANY_OWNER"


ANY_OWNER: Any = (
    _AnyOwner()
)  # every namespace: ``kill``, ``contains``, ``missing`` of any owner's row
_FEW = 8  # lookups of at most this many ids go one by one (array calls cost more than they save)
# owner names of at most this many rows are coded in Python (a dict lookup each: ~0.1 us; the
# Arrow path costs ~40 us a call whatever the size)
_FEW_NAMES = 64
# a write's Arrow chunk joins the ones before it only once this many are waiting (or as many
# rows): one concatenation of 32 ten-row chunks instead of one per write (each ~20 us, and
# several times that on a write path whose code has left the CPU's caches)
_TAIL_CHUNKS = 32
_TAIL_ROWS = 1024


def _find(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    alive: np.ndarray,
    owner: np.ndarray,
    id_: int,
    code: int,
) -> int:
    """The live row of ``id_`` owned by ``code`` (``_ANY``: any owner) in ``runs``, -1 if none:
    scalar calls, no temporary arrays. An id's entries are adjacent in a run (one per owner,
    usually one in all)."""
    if code == -1:
        return -1
    for keys, rows in runs:
        if id_ < keys[0] or id_ > keys[-1]:  # (runs are sorted: a cheap miss, ~3x a search)
            continue
        i = keys.searchsorted(id_)
        while i < keys.size and keys[i] == id_:
            row = rows[i]
            if alive[row] and (code == _ANY or owner[row] == code):
                return int(row)
            i += 1
    return -1


def _find_all(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], alive: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every live row of each id: (positions in ``ids``, rows), unordered."""
    ats: list[np.ndarray] = []
    found: list[np.ndarray] = []
    if ids.size <= _FEW:  # scalar calls: cheaper than array calls on a few ids
        at_list: list[int] = []
        row_list: list[int] = []
        for position, id_ in enumerate(ids.tolist()):
            for keys, rows in runs:
                if id_ < keys[0] or id_ > keys[-1]:  # a cheap miss (see _find)
                    continue
                i = keys.searchsorted(id_)
                while i < keys.size and keys[i] == id_:
                    if alive[rows[i]]:
                        at_list.append(position)
                        row_list.append(int(rows[i]))
                    i += 1
        return np.array(at_list, dtype=np.int64), np.array(row_list, dtype=np.int64)
    everywhere = np.arange(ids.size)
    if ids.size:  # (Python's min and max beat numpy's calls on a few ids)
        values = ids.tolist() if ids.size <= 64 else (ids.min(), ids.max())
        low, high = min(values), max(values)
    for keys, rows in runs:
        if not ids.size or high < keys[0] or low > keys[-1]:  # no id in its range
            continue
        pos = np.searchsorted(keys, ids)
        at = everywhere
        while at.size:
            p = np.minimum(pos, keys.size - 1)
            same = (pos < keys.size) & (keys[p] == ids[at])
            at, p = at[same], p[same]
            if not at.size:
                break
            candidates = rows[p]
            live = alive[candidates]
            ats.append(at[live])
            found.append(candidates[live])
            pos = p + 1
    if not ats:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(ats) == 1:
        return ats[0], found[0]
    return np.concatenate(ats), np.concatenate(found)


def _merge_runs(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], alive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One sorted run holding the live entries of sorted ``runs`` (which share no live
    (owner, id) pair; an id's entries stay adjacent)."""
    keep = [alive[rows] for _, rows in runs]
    keys = np.concatenate([k[m] for (k, _), m in zip(runs, keep)])
    order = np.argsort(keys, kind="stable")  # timsort: merges the sorted runs it finds, O(n log k)
    keys = keys[order]  # one temporary at a time: ~32 bytes per entry at the peak, not 40
    rows = np.concatenate([r[m] for (_, r), m in zip(runs, keep)])
    return keys, rows[order]


def _concat(chunks: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(chunks, promote_options="default").combine_chunks()


class RowTable:
    """Append-only rows: ids, owners, liveness, the (owner, id) -> live row map, and the
    Arrow columns.

    The map is arrays, not a dict: a few sorted runs of ``(keys, rows)`` (``keys`` the ids of
    ``rows``, ascending; an id's entries adjacent), about 16 bytes per entry, and the owner of
    each row as a small int code (``_owner``, 4 bytes per row: 0 for no owner, then one per
    tenant name in order of appearance). Each ``append`` adds a run of its own (its (owner, id)
    pairs are distinct); the newest runs merge while the one before is at most twice as big
    (as timsort keeps its run stack), so there are at most ~log2(rows) runs and each entry is
    merged O(log n) times. Rows are append-only and at most one row per (owner, id) is alive
    (``append`` kills the row it replaces), so a lookup searches every run with
    ``np.searchsorted`` and a hit counts only where ``alive[row]`` and the row's owner is the
    one asked for (the next entries of the same id are looked at only when the first is
    another owner's, which needs two owners holding the id): the newest row wins without any
    bookkeeping.
    Dead entries (killed or replaced rows) are dropped when their run merges, and every run
    merges into one when they pass ``_dead_fraction`` of the live ids, so the map stays below
    16 * (1 + 0.25) = 20 bytes per live row (:attr:`map_nbytes`; plus the 4-byte owner code
    per row).

    Threads: the read methods (``lookup``, ``find``, ``missing``, ``contains``, ``in``,
    ``len``, ``replaced_rows``, ``ids``, ``alive``, ``rows``, ``schema``, ``map_nbytes``, ``table``, ``columns``, ``to_arrow``, ``write_parquet``) may run in many
    threads at once (a shared lock); the write methods, ``append`` and ``kill``, need the
    caller to exclude every other call (an exclusive lock). Only writes change the id map
    (merges included). The one lazy step on a read path, ``table()`` merging the Arrow chunks,
    builds the merged table first and then swaps it in with one reference assignment (under a
    small lock, so concurrent readers do not merge twice); a reader that still holds the old
    chunk list gets the same rows from it.
    """

    _dead_fraction = 0.25  # dead map entries allowed, as a fraction of live ids, before a merge
    _dead_minimum = 4096  # ... and in any case (small tables would otherwise merge every call)

    def __init__(self) -> None:
        self._n = 0
        self._ids = np.zeros(1024, dtype=np.int64)
        self._owner = np.zeros(1024, dtype=np.int32)  # owner code per row
        self._alive = np.zeros(1024, dtype=bool)
        self._names: list[str | None] = [None]  # owner code -> tenant name (0: no owner)
        self._codes: dict[str | None, int] = {None: 0}
        self._rank = np.zeros(1, dtype=np.int32)  # owner code -> place in name order
        self._runs: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # (keys, rows), oldest first
        self._live = 0  # live rows (= live (owner, id) pairs)
        self._chunks: list[pa.Table] = []
        self._tail = 0  # the newest chunks not merged yet (see append)
        self._tail_rows = 0
        self._entries = 0  # entries in the id map's runs (live and dead)
        self._merge_lock = threading.Lock()
        self._schema: dict[str, pa.DataType] = {}

    def declare(self, types: Mapping[str, pa.DataType]) -> None:
        """Fix the type of declared attributes (before any write, or after loading)."""
        for name, kind in types.items():
            known = self._schema.get(name)
            if known is None or pa.types.is_null(known):
                self._schema[name] = kind

    # -- sizes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._live

    # -- owners -----------------------------------------------------------------------------
    def _code_of(self, tenant: Any) -> int:
        if tenant is ANY_OWNER:
            return _ANY
        return self._codes.get(tenant, -1)

    def _codes_of(self, tenants: pa.Array | pa.ChunkedArray, *, add: bool) -> np.ndarray:
        """The owner code of each entry (int32); unknown names get a new code when ``add``
        (a write), else -1 (they own nothing)."""
        n = len(tenants)
        if tenants.null_count == n:
            return np.zeros(n, dtype=np.int32)
        if n <= _FEW_NAMES:  # a small write: Python's dict beats Arrow's per-call overhead
            names = tenants.to_pylist()
            codes = self._codes
            found = [codes.get(t, -1) for t in names]
            if add and -1 in found:  # names new to the table
                self._add_names(list(dict.fromkeys(t for t in names if t not in codes)))
                found = [codes[t] for t in names]
            return np.array(found, dtype=np.int32)
        if isinstance(tenants, pa.ChunkedArray):
            tenants = tenants.combine_chunks()
        encoded = pc.dictionary_encode(tenants.cast(pa.string()))
        labels = encoded.dictionary.to_pylist()
        if add:
            self._add_names(labels)
        mapping = np.array([self._codes.get(t, -1) for t in labels] + [0], dtype=np.int32)
        indices = pc.fill_null(encoded.indices, len(labels)).to_numpy(zero_copy_only=False)
        return mapping[indices]

    def _add_names(self, labels: list[str]) -> None:
        """Give the names not yet known an owner code each (a write)."""
        new = [t for t in labels if t not in self._codes]
        for tenant in new:
            self._codes[tenant] = len(self._names)
            self._names.append(tenant)
        if new:  # ownerless first, then owners by name
            order = sorted(range(len(self._names)), key=lambda c: (c != 0, self._names[c]))
            rank = np.empty(len(self._names), dtype=np.int32)
            rank[order] = np.arange(len(self._names), dtype=np.int32)
            self._rank = rank

    def code(self, tenant: str | None) -> int:
        """The owner code of a tenant name (0: None, no owner; -1: a name that owns no row)."""
        return self._codes.get(tenant, -1)

    def owner_codes(self, rows: np.ndarray) -> np.ndarray:
        """The owner code of each row (int32; 0: no owner)."""
        return self._owner[np.asarray(rows, dtype=np.int64)]

    def owner_rank(self, rows: np.ndarray) -> np.ndarray:
        """Each row's owner's place in name order (the ownerless first)."""
        return self._rank[self._owner[np.asarray(rows, dtype=np.int64)]]

    def codes(self, tenants: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The owner code of each tenant name (-1 where the name owns no row yet)."""
        return self._codes_of(tenants, add=False)

    @property
    def rows(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self._n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    @property
    def schema(self) -> dict[str, pa.DataType]:
        """Attribute name -> type (``null`` for attributes whose values were all missing)."""
        return dict(self._schema)

    @property
    def map_nbytes(self) -> int:
        """Bytes held by the id map (its sorted runs; ``ids``, owners, ``alive`` not counted)."""
        return sum(keys.nbytes + rows.nbytes for keys, rows in self._runs)

    # -- the id map -------------------------------------------------------------------------
    def _lookup(self, ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The live row of each (code, id), -1 where there is none (read-only: safe from many
        threads)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size <= _FEW:
            return self._lookup_sorted(ids, codes)  # one by one: the order does not matter
        order = np.argsort(ids)
        found = np.empty(ids.shape, dtype=np.int64)
        found[order] = self._lookup_sorted(ids[order], codes[order])
        return found

    def _lookup_sorted(self, ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``_lookup`` of ascending ids: searchsorted walks each run once, cache-friendly
        (10K random ids in a 1M run: 0.6 ms sorted, 2.0 ms unsorted)."""
        # one consistent view, whatever a writer does next
        runs, alive, owner = self._runs, self._alive, self._owner
        if ids.size <= _FEW:
            return np.array(
                [_find(runs, alive, owner, i, c) for i, c in zip(ids.tolist(), codes.tolist())],
                dtype=np.int64,
            )
        found = np.full(ids.shape, -1, dtype=np.int64)
        for keys, rows in runs:
            pos = np.searchsorted(keys, ids)
            at: np.ndarray | None = None  # the ids still looked at (None: all)
            want_ids, want_codes = ids, codes
            while True:
                p = np.minimum(pos, keys.size - 1)
                candidates = rows[p]
                same = (pos < keys.size) & (keys[p] == want_ids)
                mine = (owner[candidates] == want_codes) | (want_codes == _ANY)
                hit = same & alive[candidates] & mine
                if at is None:
                    found[hit] = candidates[hit]
                else:
                    found[at[hit]] = candidates[hit]
                more = np.flatnonzero(same & ~hit)  # the id's next entry may be the owner's
                if not more.size:
                    break
                at = more if at is None else at[more]
                pos, want_ids, want_codes = p[more] + 1, want_ids[more], want_codes[more]
        return found

    def _codes_for(self, ids: np.ndarray, owner: Any) -> np.ndarray:
        if isinstance(owner, np.ndarray):
            return owner.astype(np.int32, copy=False)
        if isinstance(owner, (pa.Array, pa.ChunkedArray)):
            return self.codes(owner)
        return np.full(np.asarray(ids).size, self._code_of(owner), dtype=np.int32)

    def _add_run(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Index new rows: ``keys`` ascending and distinct, all rows alive (writers only)."""
        runs = [*self._runs, (keys, rows)]
        entries = self._entries + keys.size
        while len(runs) > 1 and runs[-2][0].size <= 2 * runs[-1][0].size:
            before = runs[-2][0].size + runs[-1][0].size
            runs[-2:] = [_merge_runs(runs[-2:], self._alive)]
            entries -= before - runs[-1][0].size  # (a merge drops the dead entries)
        self._set_runs(runs, entries)

    def _too_many_dead(self, entries: int) -> bool:
        dead = entries - self._live
        return dead > max(self._dead_fraction * self._live, self._dead_minimum)

    def _set_runs(self, runs: list[tuple[np.ndarray, np.ndarray]], entries: int = -1) -> None:
        """Install ``runs`` (writers only; ``entries``: theirs, if known), first merging them
        all if too many entries died."""
        if entries < 0:
            entries = sum(keys.size for keys, _ in runs)
        if self._too_many_dead(entries):
            runs = [_merge_runs(runs, self._alive)]
            entries = runs[0][0].size
        self._runs = tuple(run for run in runs if run[0].size)  # one reference assignment
        self._entries = entries

    def append(
        self,
        ids: np.ndarray,
        tenants: pa.Array,
        attributes: pa.Table,
        shared: pa.Array | None = None,
        *,
        fresh: bool = False,
    ) -> np.ndarray:
        """Add rows for ``ids`` owned by ``tenants`` (distinct (owner, id) pairs; killing the
        rows of those pairs they replace, in the owners' namespaces only); returns the new rows.
        ``fresh``: the caller knows no live row holds any of the ids (nothing to look up).

        A write: the caller excludes every other call on this table.
        """
        n = ids.size
        if self._n + n > self._ids.shape[0]:
            capacity = max(self._n + n, 2 * self._ids.shape[0])
            self._ids = np.resize(self._ids, capacity)
            self._owner = np.resize(self._owner, capacity)
            alive = np.zeros(capacity, dtype=bool)
            alive[: self._n] = self._alive[: self._n]
            self._alive = alive
        ids = np.asarray(ids, dtype=np.int64)
        codes = self._codes_of(tenants, add=True)
        start = self._n
        rows = np.arange(start, start + n, dtype=np.int64)
        if n > 1 and not (ids[1:] > ids[:-1]).all():  # (ids ascending, as often: in order)
            # by id, then owner: distinct pairs, any sort is stable
            order = np.lexsort((codes, ids))
            keys, run_rows, key_codes = ids[order], rows[order], codes[order]
        else:
            keys, run_rows, key_codes = ids, rows, codes
        old = np.zeros(0, dtype=np.int64)
        if not fresh:
            old = self._lookup_sorted(keys, key_codes)
            old = old[old >= 0]
            self._alive[old] = False
        self._ids[start : start + n] = ids
        self._owner[start : start + n] = codes
        self._alive[start : start + n] = True
        self._n += n
        self._live += n - old.size
        if n:
            self._add_run(keys, run_rows)
        typed = {}  # attributes whose type this write tells first (null: not yet)
        for i, field in enumerate(attributes.schema):
            known = self._schema.get(field.name)
            if known is None or pa.types.is_null(known):
                typed[field.name] = field.type
            elif pa.types.is_null(field.type):
                column = attributes.column(i).cast(known)
                attributes = attributes.set_column(i, field.name, column)
        chunk = (
            attributes.append_column(TENANT, tenants)
            if attributes.num_columns
            else pa.table({TENANT: tenants})
        )
        if shared is not None:
            chunk = chunk.append_column(SHARED, shared)
        chunks = [*self._chunks, chunk]
        # a small write's chunk waits in the tail (at most _TAIL_CHUNKS of them, _TAIL_ROWS
        # rows), which then merges in one call; then the newest chunks merge while the one
        # before is at most twice as big (as the id map's runs): O(log rows) chunks, each row
        # copied O(log rows) times, and no write leaves a read to merge every chunk (O(rows))
        # before it can take a few rows (a read merging them all resets the tail: see table)
        tail = min(self._tail, len(self._chunks)) + 1
        rows_waiting = self._tail_rows + chunk.num_rows
        if tail >= _TAIL_CHUNKS or rows_waiting >= _TAIL_ROWS:
            if tail > 1:
                chunks[-tail:] = [_concat(chunks[-tail:])]
            while len(chunks) > 1 and chunks[-2].num_rows <= 2 * chunks[-1].num_rows:
                chunks[-2:] = [_concat(chunks[-2:])]
            tail = rows_waiting = 0
        self._chunks = chunks  # one reference assignment
        self._tail, self._tail_rows = tail, rows_waiting
        self._schema.update(typed)
        return rows

    def replaced_rows(self, ids: np.ndarray, tenants: Any) -> np.ndarray:
        """The live rows currently holding these (owner, id) pairs (``tenants``: one name or
        None for all ids, or an Arrow array of one per id), those that exist, in the order
        given."""
        rows = self._lookup(ids, self._codes_for(ids, tenants))
        return rows[rows >= 0]

    def kill(self, ids: np.ndarray, owner: Any = ANY_OWNER) -> np.ndarray:
        """Delete ids in ``owner``'s namespace (a tenant name, None: the ownerless rows,
        ``ANY_OWNER``: every row of the ids); returns the rows that died, in the order of the
        ids (an id's rows by owner: see ``find``); unknown ids are skipped.

        A write: the caller excludes every other call on this table.
        """
        if owner is ANY_OWNER:
            _, rows = self.find(ids)
        else:
            rows = self._lookup(ids, self._codes_for(ids, owner))
            rows = rows[rows >= 0]
        return self.kill_rows(rows)

    def kill_rows(self, rows: np.ndarray) -> np.ndarray:
        """Kill live ``rows`` (as ``kill`` found them: an id's rows by owner); returns them,
        each once. A write, as ``kill``."""
        # an id given twice dies once (a set finds no repeat in a few rows ~5x faster)
        if rows.size > 1 and (rows.size > 64 or len(set(rows.tolist())) < rows.size):
            unique, first = np.unique(rows, return_index=True)
            if unique.size < rows.size:
                rows = rows[np.sort(first)]
        if rows.size:
            self._alive[rows] = False
            self._live -= rows.size
            if self._too_many_dead(self._entries):  # merge them all
                self._set_runs(list(self._runs), self._entries)
        return rows

    # -- reads ------------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray, owner: Any = ANY_OWNER) -> np.ndarray:
        """The live row of each id in ``owner``'s namespace (a tenant name; None: the ownerless
        rows; or an int32 array of owner codes, one per id), int64 in the order given, -1
        where there is none. ``ANY_OWNER``: a live row of the id whoever owns it (when
        several owners hold the id, any one of them: ``find`` lists them all)."""
        return self._lookup(ids, self._codes_for(ids, owner))

    def find(self, ids: np.ndarray) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Every live row of each id, whoever owns it: ``(at, rows)``, ``at`` the position of
        the row's id in ``ids``; ordered by position, an id's rows by owner (the ownerless
        row first, then owners in name order)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        at, rows = _find_all(self._runs, self._alive, ids)
        # (positions ascending: one row an id, found in order, as often; nothing to sort)
        if at.size > 1 and not (at[1:] > at[:-1]).all():
            order = np.lexsort((self._rank[self._owner[rows]], at))
            at, rows = at[order], rows[order]
        return at, rows

    def missing(self, ids: np.ndarray, owner: Any = ANY_OWNER) -> np.ndarray:
        """The ids without a row (in ``owner``'s namespace), in the order given."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids[~self.contains(ids, owner)]

    def contains(self, ids: np.ndarray, owner: Any = ANY_OWNER) -> NDArray[np.bool_]:
        """Per id, whether it has a live row (in ``owner``'s namespace; ``ANY_OWNER``: any):
        a bool array, one entry per id in the order given."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if owner is not ANY_OWNER:
            return self.lookup(ids, owner) >= 0
        out = np.zeros(ids.size, dtype=bool)
        at, _ = _find_all(self._runs, self._alive, ids)
        out[at] = True
        return out

    def __contains__(self, id_: object) -> bool:
        """Whether any owner holds a live row of this id."""
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            return False
        value = int(id_)
        if not _INT64_MIN <= value <= _INT64_MAX:
            return False
        return _find(self._runs, self._alive, self._owner, value, _ANY) >= 0

    def table(self) -> pa.Table:
        """All rows' Arrow columns (tenant, shared, attributes) as one table, row-aligned."""
        chunks = self._chunks
        if not chunks:
            return pa.table({TENANT: pa.array([], pa.string())})
        if len(chunks) > 1:
            with self._merge_lock:  # one reader merges; the others wait and take its result
                chunks = self._chunks
                if len(chunks) > 1:
                    merged = pa.concat_tables(chunks, promote_options="default")
                    chunks = [merged.combine_chunks()]
                    self._chunks = chunks  # one reference assignment, the new list complete
                    # (no write runs beside a read: the next one finds its tail merged)
                    self._tail = self._tail_rows = 0
        return chunks[0]

    def owners(self, rows: np.ndarray) -> list[str | None]:
        """The owner tenant of each row (None: no owner)."""
        names = self._names
        return [names[c] for c in self.owner_codes(rows).tolist()]

    def columns(self, rows: np.ndarray) -> pa.Table:
        """The Arrow columns of ``rows`` (in the order given), every column of the table;
        taken from the chunks that hold them (O(rows asked), not a merge of the table)."""
        chunks = self._chunks
        if len(chunks) <= 1:
            return self.table().take(pa.array(rows))
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.cumsum([0] + [c.num_rows for c in chunks])
        which = np.searchsorted(starts, rows, side="right") - 1
        schema = pa.unify_schemas([c.schema for c in chunks], promote_options="default")
        pieces, order = [schema.empty_table()], []
        for c in np.unique(which).tolist():
            at = np.flatnonzero(which == c)
            pieces.append(chunks[c].take(pa.array(rows[at] - starts[c])))
            order.append(at)
        taken = pa.concat_tables(pieces, promote_options="default")
        if len(order) <= 1:  # one chunk held them all (or no row was asked for)
            return taken
        place = np.empty(rows.size, dtype=np.int64)
        place[np.concatenate(order)] = np.arange(rows.size)
        return taken.take(pa.array(place))

    # -- persistence ------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        table = self.table()
        return table.add_column(0, ID, pa.array(self.ids)).add_column(
            1, ALIVE, pa.array(self.alive)
        )

    def write_parquet(self, path: str) -> None:
        pq.write_table(self.to_arrow(), path)

    @classmethod
    def read_parquet(cls, path: str) -> RowTable:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptionError(f"cannot read rows file {path!r}: {exc}") from exc
        out = cls()
        n = table.num_rows
        out._n = n
        out._ids = np.resize(table.column(ID).to_numpy().astype(np.int64), max(n, 1024))
        out._alive = np.zeros(max(n, 1024), dtype=bool)
        out._alive[:n] = table.column(ALIVE).to_numpy(zero_copy_only=False)
        out._owner = np.zeros(max(n, 1024), dtype=np.int32)
        out._owner[:n] = out._codes_of(table.column(TENANT), add=True)
        live = np.flatnonzero(out._alive[:n])
        keys, codes = out._ids[live], out._owner[live]
        order = np.lexsort((codes, keys))
        keys, codes, live = keys[order], codes[order], live[order]
        twice = keys[1:][(keys[1:] == keys[:-1]) & (codes[1:] == codes[:-1])]
        if twice.size:
            shown = ", ".join(str(v) for v in np.unique(twice)[:5].tolist())
            raise CorruptionError(
                f"rows file {path!r} has ids alive in more than one row of one owner: {shown}; "
                "an upsert kills the row it replaces, so the file was not written by shardwalk "
                "or is damaged"
            )
        out._live = live.size
        out._set_runs([(keys, live)])
        rest = table.drop_columns([ID, ALIVE])
        out._chunks = [rest]
        out._schema = {f.name: f.type for f in rest.schema if f.name not in (TENANT, SHARED)}
        return out

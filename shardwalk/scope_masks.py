"""Scope masks: the rows a tenant's or a filter's search may return, cached per (tenant,
predicate) and kept current by every write group (O(rows touched), not O(rows)); and the
published view through which a scoped search that scores its matches exactly takes no lock
(:class:`View`, :func:`publish`, :func:`search_view`).

Functions of a :class:`shardwalk.collection.Collection` (which keeps the read and write paths
and calls them): they read its rows and tenants under its shared lock (a search) or its
exclusive one (a write group), and its mask cache under ``_cache_lock`` (see
``Collection.__init__``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from shardwalk.collection_indexer import _concat_attributes
from shardwalk.errors import InvalidArgumentError
from shardwalk.index import SearchResult
from shardwalk.index._kernels import merge_pending_serial, scan_split_serial
from shardwalk.index.base import empty_result, relabel
from shardwalk.index.filters import evaluate, validate
from shardwalk.index.planner import Scope, exact_path
from shardwalk.rows import ANY_OWNER
from shardwalk.snapshot import Upsert

if TYPE_CHECKING:
    from shardwalk.collection import Collection

_SAMPLE = 1024  # rows a selectivity estimate looks at
_MASKS = 16  # scope masks cached (least recently used dropped)


def _appended(writes: list[Any], rows: int) -> pa.Table | None:
    """The attributes of the rows a group's upserts appended, in row order (each upsert
    appends one row per id, in order, with its table as given): None unless they are
    ``rows`` rows with attributes."""
    upserts = [w for w in writes if isinstance(w, Upsert)]
    sizes = [int(w.ids.size) for w in upserts]
    if not upserts or sum(sizes) != rows:
        return None
    table = (
        upserts[0].attributes
        if len(upserts) == 1
        else _concat_attributes([w.attributes for w in upserts], sizes)
    )
    return table if table.num_rows == rows else None


class _Mask:
    """A scope's rows as a bool mask by row (with room for rows to come: False past the
    last), the same packed little-endian, and the rows themselves (ascending), kept current
    by every write; ``fraction``: the share of a sample of the visible rows that matched when
    it was built (the planner's estimate, for explanations); ``memo``: what searches derive
    from the bits (a graph filter over them: see ``Scope.memo``)."""

    __slots__ = ("allowed", "bits", "fraction", "matches", "memo")

    def __init__(self, allowed: np.ndarray) -> None:
        self.allowed = allowed
        self.bits = np.zeros(allowed.size // 8, dtype=np.uint8)
        self.matches = np.zeros(0, dtype=np.int64)
        self.fraction = 1.0
        self.memo: dict[Any, Any] = {}

    @classmethod
    def empty(cls, rows: int) -> _Mask:
        return cls(np.zeros(_room(rows), dtype=bool))

    def grow(self, rows: int) -> None:
        """Room for ``rows`` rows (doubling, amortised O(1) per row)."""
        if rows <= self.allowed.size:
            return
        allowed = np.zeros(_room(max(rows, 2 * self.allowed.size)), dtype=bool)
        allowed[: self.allowed.size] = self.allowed
        bits = np.zeros(allowed.size // 8, dtype=np.uint8)
        bits[: self.bits.size] = self.bits
        self.allowed, self.bits = allowed, bits

    def set(self, rows: np.ndarray, keep: np.ndarray) -> None:
        """Of ``rows`` (ascending, unique), exactly ``keep`` (a subset) are in scope now."""
        now = np.zeros(rows.size, dtype=bool)
        now[np.searchsorted(rows, keep)] = True
        changed = self.allowed[rows] != now
        if not changed.any():
            return
        self.allowed[rows] = now
        self._repack(rows[changed])
        gone = rows[changed & ~now]
        if gone.size:
            self.matches = self.matches[self.allowed[self.matches]]
        new = rows[changed & now]
        if new.size:
            if not self.matches.size or new[0] > self.matches[-1]:
                self.matches = np.concatenate([self.matches, new])
            else:
                self.matches = np.union1d(self.matches, new)

    def add_new(self, rows: np.ndarray) -> None:
        """New ``rows`` (ascending, past every row before them, none in scope until now) are
        in scope: ``set`` for a group of new rows, in fewer calls."""
        if not rows.size:
            return
        self.allowed[rows] = True
        self._repack(rows)
        self.matches = np.concatenate([self.matches, rows])

    def drop(self, rows: np.ndarray) -> None:
        """Dead ``rows`` (ascending, unique) are out of scope: ``set`` with none kept, in
        fewer calls."""
        gone = rows[self.allowed[rows]]
        if not gone.size:
            return
        self.allowed[gone] = False
        self._repack(gone)
        self.matches = self.matches[self.allowed[self.matches]]

    def _repack(self, moved: np.ndarray) -> None:
        """Pack again the bytes of ``moved`` (rows whose bit changed; ascending)."""
        low, high = int(moved[0]) >> 3, int(moved[-1]) >> 3  # the packed bytes to redo
        if high - low < 512:  # close together (a group's rows): repack the span in one call
            span = self.allowed[low << 3 : (high + 1) << 3]
            self.bits[low : high + 1] = np.packbits(span, bitorder="little")
        else:
            touched = np.unique(moved >> 3)
            spans = self.allowed[(touched[:, None] << 3) + np.arange(8)]
            self.bits[touched] = np.packbits(spans, axis=1, bitorder="little")[:, 0]


def _room(rows: int) -> int:
    """A mask's length for ``rows`` rows: a whole number of bytes when packed."""
    return max(64, (rows + 7) // 8 * 8)


def scope(collection: Collection, tenant: str | None, predicate: Any) -> Scope | None:
    """The live rows a search may return (None: every live row, no filtering)."""
    if tenant is None and predicate is None:
        return None
    tenant_rows = None if tenant is None else collection._tenants.rows(tenant)
    mask = cached_mask(collection, tenant, predicate, tenant_rows)
    if tenant is None:
        visible = len(collection._rows)
    elif predicate is None:
        visible = int(mask.matches.size)
    else:  # the tenant's own scope, kept beside this one (its size is the visible count)
        visible = int(cached_mask(collection, tenant, None, tenant_rows).matches.size)
    return Scope(
        matches=mask.matches,
        allowed=mask.allowed,
        allowed_bits=mask.bits,
        tenant_rows=tenant_rows,
        tenant_key=tenant,
        tenant_version=collection._tenants.version(tenant) if tenant is not None else 0,
        visible=visible,
        # what a planner without the exact count would have estimated
        estimated=visible if predicate is None else round(mask.fraction * visible),
        memo=mask.memo,
    )


def cached_mask(
    collection: Collection, tenant: str | None, predicate: Any, tenant_rows: np.ndarray | None
) -> _Mask:
    """The scope's mask from the cache (least recently used dropped), built on a miss."""
    key = (tenant, predicate)
    with collection._cache_lock:
        cached = collection._masks.get(key)
        if cached is not None:
            collection._masks.move_to_end(key)
            return cached
    # built outside the cache lock (searches run in parallel; writes wait for them), looked
    # up in this module (tests count the masks built from scratch by wrapping it)
    cached = build_mask(collection, tenant, tenant_rows, predicate)
    with collection._cache_lock:
        collection._masks[key] = cached
        while len(collection._masks) > _MASKS:
            collection._masks.popitem(last=False)
    # (under the shared lock: no write moves the state a view captures meanwhile)
    publish(collection)
    return cached


def build_mask(
    collection: Collection, tenant: str | None, tenant_rows: np.ndarray | None, predicate: Any
) -> _Mask:
    """A scope's mask from scratch: O(rows) (O(tenant rows) for a tenant's scope)."""
    alive = collection._rows.alive
    visible = None
    if tenant_rows is not None:
        assert tenant is not None
        visible = one_per_id(collection, tenant_rows[alive[tenant_rows]], tenant)
    n = collection._rows.rows
    fraction = 1.0
    if predicate is None:
        assert visible is not None
        mask = _Mask.empty(n)
        mask.allowed[visible] = True
        matches = visible
    else:
        mask = _Mask.empty(n)
        if visible is None:
            mask.allowed[:n] = evaluate(predicate, collection._rows.table()) & alive
        else:
            mask.allowed[visible[evaluate(predicate, collection._rows.columns(visible))]] = True
        matches = np.flatnonzero(mask.allowed[:n])
        pool = visible if visible is not None else np.flatnonzero(alive)
        if pool.size:
            sample = pool[:: max(1, pool.size // _SAMPLE)]
            fraction = float(mask.allowed[sample].mean())
    mask.matches, mask.fraction = matches, fraction
    mask.bits[:] = np.packbits(mask.allowed, bitorder="little")
    return mask


def follow_writes(
    collection: Collection,
    first: int,
    schema: dict[str, Any],
    writes: list[Any],
    ahead: dict[Any, np.ndarray] | None = None,
    *,
    new_ids: bool = False,
) -> None:
    """Bring the cached scope masks up to date with the write group just applied (under
    the exclusive lock): the rows it added from ``first`` on, the rows it killed, and the
    rows of the ids it touched (an own row shadows a shared one, a deleted one reveals it)
    are re-evaluated; nothing else. A mask whose attributes changed shape (a column added
    or typed) is dropped and rebuilt when next used. O(rows touched), not O(rows).
    ``ahead``: predicate values on the new rows, evaluated before (evaluate_ahead);
    ``new_ids``: the group is upserts of ids no row held before it (see
    collection_writes.fresh_upserts): their only live rows are the new ones."""
    collection._version += 1
    killed, collection._killed = collection._killed, []
    if not collection._masks:
        return
    if not collection._deferred or collection._rows.schema != schema:
        # (an index in Ray actors caches each mask's array by identity: new arrays only)
        with collection._cache_lock:
            collection._masks.clear()
        return
    live = np.zeros(0, dtype=np.int64)
    if not new_ids and not all(
        w.everywhere if isinstance(w, Upsert) else w.owner is ANY_OWNER for w in writes
    ):
        # a write in one owner's namespace can leave another owner's row of its id live,
        # now shadowed or revealed; unscoped writes leave no row of their ids but theirs
        ids = [w.ids if isinstance(w, Upsert) else w.present for w in writes]
        ids += [collection._rows.ids[rows] for rows in killed]
        _, live = collection._rows.find(np.unique(np.concatenate(ids)))
    n = collection._rows.rows
    rows = np.arange(first, n, dtype=np.int64)  # the new rows (ascending, unique)
    others = [part for part in (live, *killed) if part.size]
    if others:
        rows = _sorted_unique(np.concatenate([*others, rows]))
    if not rows.size:
        return
    # (the new rows alone: a slice, and a row's place among them is row - first)
    alive = collection._rows.alive[rows] if others else collection._rows.alive[first:n]
    with collection._cache_lock:
        masks = list(collection._masks.items())
    matched: dict[Any, np.ndarray] = {}  # predicate -> its value on each of rows
    touched = None  # the rows' attributes (read when a predicate is not in ``ahead``)
    owned = False  # a tenant sees exactly the rows it owns among these
    only_new = rows.size == n - first  # (ascending, past every row before: see add_new)
    if only_new:  # only the new rows (a group of new ids; ascending)
        matched = {p: v for p, v in (ahead or {}).items() if v.size == rows.size}
        # of rows no access list names, a tenant sees those it owns (no shared row to
        # shadow): their owner codes tell, without the tenant's merged rows (O(its rows))
        owned = new_ids and all(w.shared is None for w in writes if isinstance(w, Upsert))
    for (tenant, predicate), mask in masks:
        mask.grow(n)
        keep = rows[alive]
        if not keep.size and not only_new:  # rows that died, none live: out of every scope
            mask.drop(rows)
            continue
        if tenant is not None and keep.size and owned:
            keep = keep[collection._rows.owner_codes(keep) == collection._rows.code(tenant)]
        elif tenant is not None and keep.size:  # (none live: none in scope, as rows died)
            tenant_rows = collection._tenants.rows(tenant)
            at = np.minimum(np.searchsorted(tenant_rows, keep), max(tenant_rows.size - 1, 0))
            keep = keep[tenant_rows[at] == keep] if tenant_rows.size else keep[:0]
            keep = one_per_id(collection, keep, tenant)
        if predicate is not None and keep.size:
            values = matched.get(predicate)
            if values is None:  # the touched rows' attributes, read once for every mask
                if touched is None:
                    # new rows: the group's own tables, as they were stored (~65 us less
                    # than taking them back from the row table's chunks)
                    touched = _appended(writes, rows.size) if only_new else None
                    if touched is None:
                        touched = collection._rows.columns(rows)
                values = matched[predicate] = evaluate(predicate, touched)
            at = keep - first if not others else np.searchsorted(rows, keep)
            keep = keep[values[at]]
        if only_new:
            mask.add_new(keep)
        else:
            mask.set(rows, keep)


def _sorted_unique(rows: np.ndarray) -> np.ndarray:
    """``np.unique(rows)``, in Python for a few rows (np.unique's calls cost ~5 us)."""
    if rows.size > 64:
        return np.unique(rows)
    return np.array(sorted(set(rows.tolist())), dtype=np.int64)


def evaluate_ahead(collection: Collection, writes: list[Any]) -> dict[Any, np.ndarray]:
    """The cached filter masks' predicates on the rows a group of upserts of new ids will
    append, from the group's own attribute tables (as they will be stored), before its
    exclusive section, which then only sets bits (~45 us less of it per filter: Arrow's
    kernels cost that much on a few rows). Under the commit lock: no other write changes
    the masks meanwhile; a mask a search adds meanwhile is evaluated in the section."""
    if not collection._masks or not collection._deferred:
        return {}
    with collection._cache_lock:
        predicates = {p for _, p in collection._masks if p is not None}
    new_rows = sum(int(w.ids.size) for w in writes if isinstance(w, Upsert))
    table = _appended(writes, new_rows) if predicates else None
    if table is None:
        return {}
    schema = collection._rows.schema
    for column in table.schema:  # a group that types an attribute drops the masks
        if not pa.types.is_null(column.type) and schema.get(column.name) != column.type:
            return {}
    return {p: evaluate(p, table) for p in predicates}


def one_per_id(collection: Collection, rows: np.ndarray, tenant: str) -> np.ndarray:
    """Of the live ``rows`` (ascending) ``tenant`` may see, one per id: its own row, else
    the row shared with it whose owner comes first by name (the ownerless first), as
    :meth:`Collection.get` picks. Costs nothing beyond an owner check unless rows are shared
    with it."""
    shared = rows[collection._rows.owner_codes(rows) != collection._rows.code(tenant)]
    if not shared.size:
        return rows
    ids = collection._rows.ids[shared]
    mine = collection._rows.lookup(ids, tenant) >= 0  # the tenant's own row of the id shadows it
    keep, ids = shared[~mine], ids[~mine]
    if keep.size > 1:
        order = np.lexsort((collection._rows.owner_rank(keep), ids))
        first = np.ones(order.size, dtype=bool)
        first[1:] = ids[order][1:] != ids[order][:-1]
        keep = keep[order[first]]
    if keep.size == shared.size:
        return rows
    return np.setdiff1d(rows, np.setdiff1d(shared, keep), assume_unique=True)


class View:
    """What a scoped search that scores its matches exactly reads, captured as one object at
    the end of every exclusive section that changes it (a write group applied, an indexer
    turn's rows moved out of the delta, a scope mask added) and swapped in with one
    assignment: such a search takes it with one attribute read and never waits for a write
    group's exclusive section (the group's apply, ~250 us, hundreds of times a second under a
    writer). Everything it holds stays as it was for the rows it covers: a mask's ``matches``
    is replaced by a write, never changed; the delta's vectors and the rows' ids are written
    only past the rows captured (or into new arrays); the index's storage holds every row
    before ``start`` and moves only under ``Collection._moving``, which the search holds
    while it scans.

    A plain search reads it too: on an index that searches beside its inserts (HNSWIndex's
    search_beside) under ``_moving`` alone, asking for the rows below ``start`` (rows linked
    since are still the delta's); else holding the index's lock shared, but not the one write
    groups of new rows take exclusively: a view is published inside every section that
    changes the index, so under that lock the two agree. Either way it reads the index's
    tombstones (``marks``) as the group that published the view left them (hnsw: a group's
    deletes tombstone rows beside searches, in a copy).

    ``masks``: (tenant, predicate) -> the live rows in that scope (ascending), for every
    cached scope mask; ``live``: live rows (the index's and the delta's); ``start``, ``delta``,
    ``alive``: the first row not in the index, the vectors from it on and which of those rows
    are live; ``ids``: id by row;
    ``checked``: the validated predicates (see ``Collection._validated``) of ``schema``, the
    attribute types captured."""

    __slots__ = (
        "alive",
        "checked",
        "delta",
        "ids",
        "index",
        "ip",
        "live",
        "marks",
        "masks",
        "schema",
        "start",
        "vectors",
    )

    def __init__(self, collection: Collection, vectors: Callable[[], np.ndarray | None]) -> None:
        index = collection._index
        self.vectors = vectors  # the index's storage by row (HNSWIndex.label_vectors)
        with collection._cache_lock:
            self.masks = {key: mask.matches for key, mask in collection._masks.items()}
        self.index = index
        # the index's tombstones (hnsw: deletes do not wait for its searches; a plain search
        # reads the ones that go with the rest of the view)
        marks = getattr(index, "marks", None)
        self.marks = None if marks is None else marks()
        self.ip = index.metric == "ip"
        self.live = len(collection._rows)
        self.ids = collection._rows.ids
        self.start = collection._delta.start
        self.delta = collection._delta.vectors()
        # which of the delta's rows are live (a copy: deletes change the rows' in place)
        self.alive = collection._rows.alive[self.start :].copy()
        self.checked = collection._checked
        self.schema = collection._rows.schema  # (a copy)


def publish(collection: Collection) -> None:
    """Capture and swap in the collection's :class:`View` (under its exclusive lock, or its
    shared one: the state a view reads does not change meanwhile). None where a view cannot
    serve: an index in Ray actors, or one whose stored vectors an insert may move."""
    vectors = getattr(collection._index, "label_vectors", None)
    if collection._deferred and collection._store_beside_inserts and vectors is not None:
        collection._view = View(collection, vectors)
    else:
        collection._view = None


def search_view(
    collection: Collection,
    queries: np.ndarray,
    k: int,
    tenant: str | None,
    where: Any,
    params: dict[str, Any],
) -> SearchResult | None:
    """One query in a scope the planner scores exactly, through the published view: no lock
    but ``_moving``'s shared side (the index's storage stays put). None when the view cannot
    answer (none published, a batch, a scope not yet cached, a path other than exact, a bad
    predicate, a closed collection): the caller then takes the locks. The answer is the locked exact path's: the same rows scored the same way."""
    if tenant is None and where is None:
        return _plain(collection, queries, k, params)
    view = collection._view
    if view is None or queries.shape[0] != 1:
        return None
    predicate = None
    if where is not None:
        checked = view.checked.get(id(where))
        if checked is not None and checked[0] is where:
            predicate = checked[1]
        else:  # another object (a server decodes one per request): checked here, ~3 us
            try:
                predicate = validate(where, view.schema)
            except InvalidArgumentError:
                return None  # the locked path raises it
    matches = view.masks.get((tenant, predicate))
    if matches is None:
        return None
    count = int(matches.size)
    if not count:
        return empty_result(1, k)
    if not exact_path(view.index, count, view.live, tenant is not None, k, params):
        return None
    with collection._moving.read():
        if collection._closed_because is not None:
            return None
        base = view.vectors()
        if base is None:
            return None
        found, distances = scan_split_serial(
            queries, base, view.delta, view.start, matches, view.ids, k, view.ip
        )
    return SearchResult(ids=found, distances=distances)


def _plain(
    collection: Collection, queries: np.ndarray, k: int, params: dict[str, Any]
) -> SearchResult | None:
    """One unscoped query: the index's search and the view's delta, merged in one kernel.
    An index that searches beside its inserts (HNSWIndex.search_beside: the rows below the
    view's start, as the index holds them now) takes only ``_moving`` (its arrays stay put):
    neither write groups nor the indexer's inserts hold it up. Else the index's search
    under its lock (shared): write groups of new rows (which leave the index alone) do not
    hold it up. None as :func:`search_view`."""
    view = collection._view
    if view is None or queries.shape[0] != 1:
        return None
    beside = getattr(view.index, "search_beside", None)
    if beside is not None:
        with collection._moving.read():
            if collection._closed_because is not None:
                return None
            # (the view's delta merged in the same kernel call: one release of the GIL)
            pending = (view.delta, view.alive, view.ids)
            found = beside(
                queries, k, limit=view.start, pending=pending, marks=view.marks, **params
            )
            if found is not None:
                return cast(SearchResult, found)
    with collection._index_rw.read(), collection._moving.read():
        view = collection._view  # (read under the lock: the one that goes with the index)
        if view is None or collection._closed_because is not None:
            return None
        if view.marks is not None:
            found = view.index.search(queries, k, marks=view.marks, **params)
        else:
            found = view.index.search(queries, k, **params)
        return _merged(view, queries, found, k)


def _merged(view: View, queries: np.ndarray, found: SearchResult, k: int) -> SearchResult:
    """The index's answer (rows below the view's start) and the view's delta, as ids."""
    if not view.delta.shape[0]:
        return SearchResult(ids=relabel(found.ids, view.ids), distances=found.distances)
    ids, distances = merge_pending_serial(
        queries,
        found.ids,
        found.distances,
        view.delta,
        view.alive,
        view.start,
        view.ids,
        k,
        view.ip,
    )
    return SearchResult(ids=ids, distances=distances)

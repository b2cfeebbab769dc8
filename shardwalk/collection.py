"""A collection: vectors keyed by int64 ids, with owner tenants, access lists and typed
attributes, an index, and (on disk) a snapshot plus a write-ahead log.

Ids are namespaced by owner (as Weaviate's per-tenant shards): a row's key is (owner tenant,
id), the rows without an owner forming a namespace of their own. An upsert replaces the rows
of its (owner, id) pairs only; a delete or get naming a tenant acts in that tenant's namespace
(a get also sees rows shared with the tenant: its own row of an id first, else the shared row
whose owner comes first by name, the ownerless first); a delete without a tenant deletes every
row of its ids and a get without a tenant returns every row of each id (by owner, in that
order). A tenant-scoped search holds one row per id (the one its get returns); an unscoped one
may return an id once per owner.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from shardwalk import collection_indexer, collection_persistence, collection_writes, scope_masks
from shardwalk._deadline import check as check_deadline
from shardwalk._sync import GroupCommit, RWLock
from shardwalk._threads import ThreadBudget, default_budget
from shardwalk.attributes import DECLARABLE, attribute_table, conform, shared_array, tenant_array
from shardwalk.collection_indexer import _INSERT_GUESS
from shardwalk.collection_persistence import (
    _COMPACT_FRACTION,
    _COMPACT_MIN_DEAD,
    _release_free_memory,
    _release_index,
)
from shardwalk.collection_writes import _Delete, _Upsert
from shardwalk.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from shardwalk.index import IndexHost, SearchResult, make_index
from shardwalk.index.base import relabel
from shardwalk.index.filters import Predicate, validate
from shardwalk.index.planner import Explain, Pending, Scope, plan_search, plan_store_search
from shardwalk.index.store import DeltaBuffer, DeltaStore, RowStore, VectorStore
from shardwalk.index.tenancy import TenantDirectory
from shardwalk.rows import ANY_OWNER, SHARED, TENANT, RowTable
from shardwalk.scope_masks import _Mask
from shardwalk.snapshot import (
    upsert_record,
)
from shardwalk.storage import DataDir
from shardwalk.types import Attributes, AttributeValue, Param, Report, SharedWith, Tenants
from shardwalk.validation import (
    as_ids,
    check_ids,
    check_k,
    check_name,
    check_search_params,
    check_vectors,
)
from shardwalk.wal import WriteAheadLog, encode

if TYPE_CHECKING:
    from shardwalk.index.base import IndexMetric

log = logging.getLogger(__name__)

__all__ = ["Collection", "Records"]

_CHECKED = 64  # predicates whose validation is kept (see Collection._validated)
# After an upsert of this many rows, hand freed memory back to the OS: a batch's transient
# copies are large allocations that glibc, once its mmap threshold has grown, keeps in its heap
# (100K x 128 built in 50K-row upserts: 232 MiB resident, 129 MiB once trimmed).
_LARGE_WRITE = 4096
# The delta (rows acknowledged but not yet in the index, searched exactly) holds at most this
# many bytes of vectors, and at least _DELTA_MIN_ROWS rows: 4096 rows of 128 dims, an exact
# scan of ~0.2 ms per query (Qdrant scans unindexed segments up to 10 MB, Milvus its growing
# segments). Writers wait while it is full; a write group at least this large is indexed before
# it is acknowledged (it would fill the delta alone; one parallel insert builds it fastest).
_DELTA_BYTES = 2 << 20
_DELTA_MIN_ROWS = 256


def _shared_lists(columns: pa.Table, n: int) -> list[list[str]]:
    if SHARED not in columns.column_names:
        return [[] for _ in range(n)]
    return [v or [] for v in columns.column(SHARED).to_pylist()]


@dataclass(frozen=True)
class Records:
    """Stored records, in the order their ids were asked for.

    Attributes
    ----------
    ids : (n,) int64
    vectors : (n, dim) float32 (unit-normalised in cosine collections)
    tenants : list of owner tenant per record (None: no owner)
    attributes : dict of attribute name -> list of n values (None where unset)
    shared_with : list of the further tenants each record is shared with
    """

    ids: NDArray[np.int64]
    vectors: NDArray[np.float32]
    tenants: list[str | None]
    attributes: dict[str, list[AttributeValue]]
    shared_with: list[list[str]]


class Collection:
    """Vectors keyed by int64 ids, searchable by k nearest neighbours.

    Obtain one from :meth:`shardwalk.Engine.create_collection` or
    :meth:`shardwalk.Engine.collection`.

    Methods are thread-safe, and reads run in parallel: any number of threads search, get and
    read statistics at once under a shared lock. A single query in a scope scored exactly (a
    tenant's, or a selective filter's) takes no lock: it reads the view each write publishes
    as one object before it is acknowledged; nor does a single plain query on an hnsw index
    (its graph search runs beside the index's inserts). Writes are group-committed: concurrent
    upserts and deletes share one log append and one fsync, then apply in memory under a short
    exclusive lock, and each call returns once its write is durable and visible. New rows are
    visible before the index holds them: they wait in a delta (a growing segment, as in
    Qdrant and Milvus) that every search scores exactly and merges with the index's answer,
    while a background thread inserts them into the index; writers wait only when the delta
    is full (``stats()["delta"]``), and a write group that would fill it alone is indexed
    before it returns. A search sees every write acknowledged before it started. A checkpoint
    (``flush``) indexes the delta and holds back writes while it writes the snapshot, never
    reads. ``delta_limit`` (rows) bounds the delta (default: 2 MiB of vectors, at least 256
    rows).

    Deleted and replaced rows stay behind as dead rows (in HNSW, tombstones: still waypoints of
    the graph, never returned). Once ``compaction_threshold`` of the rows (default 0.2) and at
    least ``compaction_min_dead`` (default 1000) are dead, a background thread rebuilds the
    rows and the index from the live rows, as :meth:`compact` does (``None`` turns it off;
    an index kept in Ray actors is compacted by :meth:`compact` only):
    writes go on meanwhile and are replayed into the new ones, searches wait only for the swap,
    and a checkpoint then makes it durable (``stats()["compaction"]``).
    """

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        metric: str,
        index: str,
        params: dict[str, Any],
        datadir: DataDir | None = None,
        budget: ThreadBudget | None = None,
        host: IndexHost | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        # the declared attribute schema (name -> type name), None when none was declared
        self.attributes = dict(attributes) if attributes is not None else None
        self._declared = {n: DECLARABLE[t] for n, t in (attributes or {}).items()}
        self.dim = dim
        self.metric = metric
        self.index_kind = index
        self.params = dict(params)
        self._budget = budget or default_budget()  # the engine's: threads for every call
        self._host = host  # keeps the index elsewhere (Ray actors) for the kinds it hosts
        self._index = make_index(
            index, dim=dim, metric=self._index_metric, budget=self._budget, host=host, **params
        )
        self._rows = RowTable()
        self._rows.declare(self._declared)
        self._tenants = TenantDirectory()
        self._store = self._store_for(self._index)
        # rows acknowledged but not yet in the index (see _DELTA_BYTES); reads see the rows
        # of both through _vectors
        self._delta = DeltaBuffer(dim)
        self._vectors = DeltaStore(self._store, self._delta)
        self.delta_limit = max(_DELTA_MIN_ROWS, _DELTA_BYTES // (4 * dim))  # rows
        # an index kept in Ray actors takes writes directly (its actors plan their own scopes)
        self._deferred = not getattr(self._index, "applies_scope", False)
        self._indexing = threading.Lock()  # one index insert at a time (background or drain)
        self._room = threading.Condition(threading.Lock())  # the indexer and writers waiting
        self._indexer: threading.Thread | None = None
        self._indexer_idle = False  # it waits for rows (a write wakes it; see kick)
        self._wanting_room = 0  # write groups waiting for room in the delta
        self._delta_waits = 0  # write groups that waited for room in the delta
        self._delta_wait_seconds = 0.0
        self._indexed_in_background = 0
        self._insert_seconds = _INSERT_GUESS  # per row, a moving average of the inserts
        # background compaction (see the class docstring); None: never in the background
        self.compaction_threshold: float | None = _COMPACT_FRACTION
        self.compaction_min_dead = _COMPACT_MIN_DEAD
        self._compaction = threading.Lock()  # one compaction at a time
        self._compactor: threading.Thread | None = None
        # the write groups applied since a compaction copied the rows (None: none running),
        # replayed into its new rows; appended under the exclusive lock
        self._since_cut: list[list[Any]] | None = None
        self._compactions = 0
        self._compaction_seconds = 0.0  # the last one's, from its copy to its swap
        self._compaction_swap_seconds = 0.0  # the last one's exclusive hold (searches wait)
        self._compaction_error: str | None = None
        self._compact_after = 0  # after a failed one: not before the rows grow past this
        self._hook_index()
        self._version = 0  # bumped by every write
        # (tenant, predicate) -> its scope's mask, kept current by every write
        # (scope_masks.follow_writes)
        self._masks: OrderedDict[Any, _Mask] = OrderedDict()
        # id(predicate) -> (predicate, predicate validated): see _validated; cleared when the
        # schema changes (under the exclusive lock)
        self._checked: dict[int, tuple[Any, Predicate]] = {}
        self._killed: list[np.ndarray] = []  # rows the write group being applied killed
        # Locks, always taken in this order: the commit lock (GroupCommit.lock), _indexing,
        # _index_rw, _rw. _index_rw: shared by reads, exclusive for index inserts and deletes
        # (the background indexer's, and a write group that replaces or deletes rows); _rw:
        # shared by reads, exclusive while a group is applied to the rows and the delta. A
        # write of new rows takes only _rw: it never waits for an index insert. A scoped search
        # whose path reads only the vectors (exact) takes only _rw when the index's inserts
        # leave the stored vectors in place (_store_beside_inserts): it never waits for one.
        # _moving: shared by the single queries answered through the published view
        # (scope_masks.View: a scoped one takes no other lock, nor a plain one on an index
        # that searches beside its inserts, HNSWIndex.search_beside; else _index_rw too);
        # exclusive, inside _rw's exclusive sections, wherever the index's stored vectors may
        # move (a reserve, an insert without room), and at close.
        self._index_rw = RWLock()
        self._rw = RWLock()
        self._moving = RWLock()
        self._view: scope_masks.View | None = None  # see scope_masks.publish
        # its lock: one commit or checkpoint
        self._writes = GroupCommit(lambda group: collection_writes.commit_group(self, group))
        self._cache_lock = threading.Lock()  # the filter mask cache
        self._datadir = datadir
        self._wal: WriteAheadLog | None = None
        # (path, bytes) of the live log whose writes are all applied in memory: set under the
        # exclusive lock (so consistent with what a reader sees), read by
        # collection_persistence.logged_vectors
        self._applied_log: tuple[str, int] | None = None
        self._snapshot: str | None = None
        self._upgraded = False  # the snapshot's index is in an earlier format (see attach)
        self._closed_because: str | None = None
        self._closed_cause: BaseException | None = None  # chained to the errors it causes

    def _store_for(self, index: Any) -> RowStore:
        """Vectors by row: the index's own store when it keeps one (stored once), else ours."""
        store = getattr(index, "store", None)
        return store if isinstance(store, RowStore) else VectorStore(self.dim)

    def _hook_index(self) -> None:
        """An index that keeps its vectors in other processes (Ray actors) replays the writes
        since its last checkpoint into one it restarts: from our log."""
        if hasattr(self._index, "recover_vectors"):
            self._index.recover_vectors = partial(collection_persistence.logged_vectors, self)

    @property
    def declared_types(self) -> dict[str, pa.DataType]:
        """The declared attributes (name -> Arrow type, in declaration order; empty when the
        collection declares none)."""
        return dict(self._declared)

    @property
    def _shares_store(self) -> bool:
        return self._store is getattr(self._index, "store", None)

    @property
    def _index_metric(self) -> IndexMetric:
        return "ip" if self.metric == "cosine" else cast("IndexMetric", self.metric)

    def __repr__(self) -> str:
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric!r}, "
            f"index={self.index_kind!r}, count={len(self)})"
        )

    # -- files: snapshot, log, checkpoints, compaction (shardwalk.collection_persistence) ------
    def _checkpointed(self) -> AbstractContextManager[tuple[dict[str, Any], int]]:
        """Writes held back, checkpointed: this collection's manifest entry and log size (how
        shardwalk.backup pins collections and graphs alike)."""
        return collection_persistence.checkpointed(self)

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise FailedPreconditionError(
                f"collection {self.name!r} {self._closed_because}"
            ) from self._closed_cause

    def _install(self, rows: RowTable, index: Any, store: RowStore, tenants: Any) -> None:
        """Take these rows, index (holding every row), store and tenants (exclusively)."""
        self._view = None  # (published again by the next write; searches meanwhile lock)
        self._rows, self._index = rows, index
        self._store, self._tenants = store, tenants
        self._checked = {}
        self._vectors.base = store
        self._delta.reset(rows.rows)
        self._deferred = not getattr(index, "applies_scope", False)
        self._hook_index()

    def _close(self, because: str) -> None:
        with (
            self._writes.lock,
            self._indexing,
            self._index_rw.write(),
            self._rw.write(),
            self._moving.write(),
        ):
            self._view = None
            if self._wal is not None:
                self._wal.close()
                self._wal = None
            if self._closed_because is None:
                _release_index(self._index)
            self._closed_because = because
        with self._room:
            self._room.notify_all()  # writers waiting for room in the delta

    # -- writes -----------------------------------------------------------------------------
    def _prepare_vectors(self, vectors: Any, *, what: str, rows: int | None = None) -> np.ndarray:
        arr = check_vectors(
            vectors, dim=self.dim, what=what, owner=f"collection {self.name!r}", rows=rows
        )
        if self.metric == "cosine":
            norms = np.linalg.norm(arr, axis=1, keepdims=True)
            zero = np.flatnonzero(norms[:, 0] == 0)
            if zero.size:
                raise InvalidArgumentError(
                    f"{what} rows {zero[:5].tolist()} are all zeros; cosine distance needs "
                    f"non-zero vectors (collection {self.name!r} uses metric 'cosine')"
                )
            arr = arr / norms
        return arr

    def upsert(
        self,
        ids: ArrayLike,
        vectors: ArrayLike,
        tenants: Tenants | None = None,
        attributes: Attributes | None = None,
        shared_with: SharedWith | None = None,
        *,
        tenant: str | None = None,
    ) -> int:
        """Insert vectors, or replace the vectors of ids that exist.

        Ids are namespaced by owner: the row of id 99 owned by tenant "a" and the row of id 99
        owned by "b" can be two rows. A write *for a tenant* (``tenant="a"``: what the server
        does for a tenant's API key) lands in that tenant's namespace: its rows are owned by
        "a" and replace only a's rows of the ids, whoever else holds them (applied under the
        collection's write lock, so two tenants writing one new id at once each get a row of
        their own). An unscoped write (no ``tenant``: embedded code, admin keys) replaces every
        row of each id, whoever owns it, with the one it writes (owned by ``tenants``).

        Durable on return when the engine has a data directory (written to the log and fsynced).

        Parameters
        ----------
        ids : sequence of int
            Distinct int64 ids, one per vector.
        vectors : array-like, shape (n, dim)
            Finite numbers; stored as float32 (unit-normalised for cosine).
        tenants : str or sequence of str, optional
            Owner tenant of each vector (one name for all, or one per id).
        attributes : dict of columns, list of dicts, or pyarrow.Table, optional
            Typed attributes (int, float, bool, string, list of strings) per vector.
        shared_with : sequence of lists of str, optional
            Per vector, further tenants that may see it besides its owner (an access list).
        tenant : str, optional
            Write for this tenant, in its id namespace (``tenants`` must be None or name only
            it).

        Returns
        -------
        int
            The number of vectors written.

        Raises
        ------
        InvalidArgumentError
            Wrong dimension or dtype, NaN/inf, empty input, duplicate ids, mismatched lengths,
            unsupported attribute types, a declared attribute of another type.
        """
        ids = check_ids(ids)
        arr = self._prepare_vectors(vectors, what="vectors", rows=ids.size)
        if tenant is not None:
            if not isinstance(tenant, str) or not tenant:
                raise InvalidArgumentError(f"tenant must be a non-empty string; got {tenant!r}")
            if tenants is not None and set(tenant_array(tenants, ids.size).to_pylist()) != {tenant}:
                raise InvalidArgumentError(
                    f"a write for tenant {tenant!r} writes rows it owns; tenants must be None "
                    f"or {tenant!r}"
                )
            tenants = tenant
        owners = tenant_array(tenants, ids.size)
        shared = shared_array(shared_with, ids.size)
        attrs = attribute_table(attributes, ids.size)
        if self._declared:
            attrs = conform(attrs, self._declared)
        write = _Upsert(ids, arr, owners, attrs, shared, everywhere=tenant is None)
        if self._datadir is not None:  # encoded here, in the caller's thread
            write.record = encode("upsert", upsert_record(write, self.dim))
        written: int = self._writes.submit(write)
        if ids.size >= _LARGE_WRITE:
            del write, arr  # the batch's copies (checked, normalised, encoded) are garbage now
            _release_free_memory()
        return written

    def delete(self, ids: ArrayLike, *, missing_ok: bool = False, tenant: str | None = None) -> int:
        """Delete vectors by id; returns how many ids were deleted.

        ``tenant``: delete only the rows this tenant owns (its namespace, as the delete is
        committed; ids without such a row count as missing). Without it, every row of each id
        is deleted, whoever owns it.

        Raises
        ------
        NotFoundError
            Some ids do not exist (unless ``missing_ok``, which makes retries idempotent).
        """
        owner = ANY_OWNER
        if tenant is not None:
            check_name("tenant", tenant)
            owner = tenant
        deleted: int = self._writes.submit(_Delete(check_ids(ids), missing_ok, owner=owner))
        return deleted

    # write groups: shardwalk.collection_writes; background indexing: collection_indexer
    def _add_to_index(
        self, rows: np.ndarray, vectors: np.ndarray, owners: np.ndarray, threads: int | None = None
    ) -> None:
        if threads is not None and getattr(self._index, "kind", "") == "hnsw":
            self._index.add(rows, vectors, groups=owners, threads=threads)  # type: ignore[call-arg]
        else:
            self._index.add(rows, vectors, groups=owners)  # a layout hint: owner tenants
        if not self._shares_store:
            assert isinstance(self._store, VectorStore)
            self._store.extend(vectors)

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        queries: ArrayLike,
        k: int = 10,
        *,
        tenant: str | None = None,
        where: Predicate | None = None,
        explain: bool = False,
        **search_params: Param,
    ) -> SearchResult:
        """The k nearest stored vectors of each query, within a tenant's scope and a filter.

        Parameters
        ----------
        queries : array-like, shape (n, dim) or (dim,)
            One query per row (a 1-D array is one query).
        k : int, default 10
            Neighbours per query. Exactly min(k, matches) come back; rows are padded with
            -1 / +inf beyond that.
        tenant : str, optional
            Only vectors this tenant owns or that are shared with it. A tenant with no vectors
            gets empty results (not an error: names of other tenants are not disclosed).
        where : predicate, optional
            A typed filter built with :class:`shardwalk.F`, e.g.
            ``(F("year") >= 2020) & F("lang").isin(["en", "de"])``.
        explain : bool, default False
            Attach an :class:`~shardwalk.index.planner.Explain` as ``result.explain``: the path
            that ran and why, estimated and actual match counts, time.
        **search_params
            Index-specific: ``ef`` (hnsw, partitioned), ``nprobe`` (partitioned,
            multitenant), ``candidates`` (multitenant).

        Returns
        -------
        SearchResult
            ``ids`` (n, k) int64 and ``distances`` (n, k) float32, closest first. Distances:
            squared L2 for ``l2``, ``1 - <q, x>`` for ``ip``, ``1 - cos`` for ``cosine``.

        Raises
        ------
        InvalidArgumentError
            Bad queries, k, parameter, tenant name, or a filter on an unknown attribute or of
            the wrong type.
        """
        check_deadline("search")
        k = check_k(k)
        params = check_search_params(self.index_kind, search_params)
        arr = self._prepare_vectors(queries, what="queries")
        if tenant is not None:
            check_name("tenant", tenant)
        # A single scoped query the planner scores exactly reads the published view and
        # takes no lock, nor a single plain one on hnsw (see scope_masks.View); else
        # the search takes the locks below.
        if not explain:
            found = scope_masks.search_view(self, arr, k, tenant, where, params)
            if found is not None:
                return found
        # A scoped search first tries the paths that read only the vectors (exact, empty)
        # without the index's lock, which the background indexer holds for its inserts: an
        # insert moves no stored vector (see index_some), so these run beside it.
        store_only = (tenant is not None or where is not None) and self._store_beside_inserts
        while True:
            with nullcontext() if store_only else self._index_rw.read(), self._rw.read():
                self._check_open()
                predicate = None if where is None else self._validated(where)
                scope = scope_masks.scope(self, tenant, predicate)
                planned = self._plan(arr, k, scope, params, store_only)
                if planned is None:  # the index's path: wait for the index
                    store_only = False
                    continue
                found, report = planned
                ids = relabel(found.ids, self._rows.ids)  # rows -> ids
            return SearchResult(
                ids=ids, distances=found.distances, explain=report if explain else None
            )

    def _validated(self, where: Any) -> Predicate:
        """``where`` checked against the attribute schema (under the shared lock). A caller
        that searches with one predicate object again skips the check (~3 us of a search at
        rest): the same object, not an equal one (``F("y") == 3.0`` is refused on an int
        attribute where an equal ``F("y") == 3`` is not), while the schema stays the same
        (every write that changes it clears these)."""
        checked = self._checked.get(id(where))
        if checked is not None and checked[0] is where:
            return checked[1]
        predicate = validate(where, self._rows.schema)
        if len(self._checked) >= _CHECKED:
            self._checked = {}  # (a new dict: a search reading the old one is unaffected)
        self._checked[id(where)] = (where, predicate)
        return predicate

    @property
    def _store_beside_inserts(self) -> bool:
        """Whether the index's inserts leave its stored vectors in place (it keeps room for
        them: ``reserve``), so reads of the vectors alone need not wait for an insert."""
        return self._shares_store and hasattr(self._index, "reserve")  # KeepsRoom, cheaply

    def _plan(
        self,
        arr: np.ndarray,
        k: int,
        scope: Scope | None,
        params: dict[str, Any],
        store_only: bool,
    ) -> tuple[SearchResult, Explain] | None:
        """The planner's search over the index and the delta (under the shared lock;
        ``store_only``: not the index's, so only a path that reads the vectors alone, else
        None)."""
        # the call's threads; numba and faiss are set where their kernels run (the planner's
        # exact paths, the indexes), not here: a single query needs neither
        n = arr.shape[0]  # one query: its caller's thread, nothing to take
        delta = self._delta
        store: RowStore = self._store
        pending = None
        if delta.end > delta.start:  # the index for the rows it holds, the delta's exactly
            store = self._vectors
            pending = Pending(
                delta.start, delta.vectors(), self._rows.alive[delta.start : delta.end]
            )
        with nullcontext() if n == 1 else self._budget.take(n, kernels=False):
            if store_only:
                assert scope is not None
                return plan_store_search(self._index, store, arr, k, scope, params, pending=pending)
            return plan_search(self._index, store, arr, k, scope, params, pending=pending)

    def explain(
        self,
        queries: ArrayLike,
        k: int = 10,
        *,
        tenant: str | None = None,
        where: Predicate | None = None,
        **search_params: Param,
    ) -> Explain:
        """Run a search and return only its explanation (path, reason, match counts, time)."""
        result = self.search(queries, k, tenant=tenant, where=where, explain=True, **search_params)
        # the planner's (an index's own counters, SearchCounters, come only from its search)
        assert isinstance(result.explain, Explain)
        return result.explain

    def get(self, ids: ArrayLike, *, tenant: str | None = None) -> Records:
        """Stored vectors, tenants and attributes of these ids.

        ``tenant``: one row per id, the tenant's own (its namespace), else a row shared with
        it (the one whose owner comes first by name, the ownerless first); an id it may not
        see is reported exactly like one that does not exist (in the same message, in the
        order given), so the answer does not depend on other tenants' rows. Without
        ``tenant``: every row of each id, one per owner (ids repeat in ``Records.ids`` when
        several owners hold one), in the order asked, an id's rows by owner as above.

        Raises
        ------
        NotFoundError
            Naming the first few ids that do not exist (or ``tenant`` may not see).
        """
        ids = check_ids(ids)
        if tenant is not None:
            check_name("tenant", tenant)
        owner = f"collection {self.name!r}"
        with self._index_rw.read(), self._rw.read():
            self._check_open()
            if tenant is None:
                at, rows = self._rows.find(ids)
                seen = np.zeros(ids.size, dtype=bool)
                seen[at] = True
            else:  # visibility first: its own row, else one shared with it
                rows = self._rows.lookup(ids, tenant)
                others = np.flatnonzero(rows < 0)
                if others.size:
                    at, candidates = self._rows.find(ids[others])
                    if at.size:
                        access = _shared_lists(self._rows.columns(candidates), at.size)
                        for i, row, names in zip(at.tolist(), candidates.tolist(), access):
                            if rows[others[i]] < 0 and tenant in names:
                                rows[others[i]] = row
                seen = rows >= 0
            if not seen.all():
                hidden = ids[~seen]
                shown = ", ".join(str(v) for v in hidden[:5].tolist())
                more = f" and {hidden.size - 5} more" if hidden.size > 5 else ""
                raise NotFoundError(f"{owner} has no ids {shown}{more}")
            if tenant is None:
                ids = ids[at]  # one entry per row: an id once per owner holding it
            columns = self._rows.columns(rows)
            vectors = self._vectors.take(rows)
        tenants = columns.column(TENANT).to_pylist()
        shared = _shared_lists(columns, ids.size)
        attributes = {
            n: columns.column(n).to_pylist()
            for n in columns.column_names
            if n not in (TENANT, SHARED)
        }
        return Records(
            ids=ids, vectors=vectors, tenants=tenants, attributes=attributes, shared_with=shared
        )

    def visible(
        self,
        ids: ArrayLike,
        *,
        tenant: str | None = None,
        where: Predicate | None = None,
        owned: bool = False,
    ) -> NDArray[np.bool_]:
        """Per id, whether a search with this ``tenant`` and ``where`` could return it: the id
        is a live row, the tenant owns it or it is shared with the tenant, and it satisfies
        the predicate. A bool array, one entry per id in the order given (repeats allowed;
        unknown ids are False, not an error). Read-only; the scope masks are the ones
        :meth:`search` builds and caches, so after a search with the same scope this costs
        an id lookup. ``owned=True`` keeps only rows ``tenant`` owns (its namespace, not rows
        merely shared with it), as the server checks before a tenant's deletes.

        Raises
        ------
        InvalidArgumentError
            Bad ids (negative, not integers), tenant name, or filter (as :meth:`search`);
            ``owned`` without a tenant.
        """
        ids = as_ids(ids, what="ids")
        if tenant is not None:
            check_name("tenant", tenant)
        elif owned:
            raise InvalidArgumentError("visible(..., owned=True) needs a tenant")
        with self._rw.read():
            self._check_open()
            predicate = None if where is None else validate(where, self._rows.schema)
            if owned:  # the tenant's own rows only: its namespace
                rows = self._rows.lookup(ids, tenant)
                at = np.flatnonzero(rows >= 0)
                rows = rows[at]
            else:
                at, rows = self._rows.find(ids)  # any owner's row of the id may be in scope
            scope = scope_masks.scope(self, tenant, predicate)
            if scope is not None:
                at = at[scope.allowed[rows]]
            found = np.zeros(ids.size, dtype=bool)
            found[at] = True
        return found

    def scope_size(self, tenant: str | None = None, where: Predicate | None = None) -> int:
        """How many live rows :meth:`visible` would accept for this scope (from the cached
        scope masks): tells a scoped PPR how deep to fetch before filtering
        (:func:`shardwalk.compose.scoped_ppr`)."""
        if tenant is not None:
            check_name("tenant", tenant)
        with self._rw.read():
            self._check_open()
            predicate = None if where is None else validate(where, self._rows.schema)
            scope = scope_masks.scope(self, tenant, predicate)
            return len(self._rows) if scope is None else int(scope.matches.size)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, (int, np.integer)) or isinstance(id_, bool):
            return False
        with self._rw.read():
            return int(id_) in self._rows

    def stats(self) -> Report:
        """Counts, parameters, sizes (JSON-serialisable).

        ``delta``: the rows acknowledged but not yet in the index (searched exactly): how many
        (``rows``, at most ``limit``), their bytes, the write groups that waited for room in it
        (``waits``, ``wait_seconds``), and the rows indexed in the background so far.
        ``compaction``: its dead-row threshold (``threshold``, a share of ``rows``, and
        ``min_dead_rows``), whether one is ``running``, how many ran (``runs``), the last one's
        time from copy to swap and its swap's (the only time searches waited for it), and the
        last background one's error, if one failed."""
        with self._index_rw.read(), self._rw.read():
            return {
                "name": self.name,
                "dim": self.dim,
                "metric": self.metric,
                "index": self.index_kind,
                "params": dict(self.params),
                "count": len(self._rows),
                "rows": self._rows.rows,
                "dead_rows": self._rows.rows - len(self._rows),
                "attributes": {n: str(t) for n, t in self._rows.schema.items()},
                "tenants": len(self._tenants.tenants()),
                "snapshot": self._snapshot,
                "wal_bytes": self._wal.size if self._wal is not None else 0,
                "group_commits": {"groups": self._writes.groups, "writes": self._writes.entries},
                "delta": {
                    "rows": len(self._delta),
                    "limit": self.delta_limit,
                    "bytes": self._delta.nbytes,
                    "waits": self._delta_waits,
                    "wait_seconds": round(self._delta_wait_seconds, 6),
                    "indexed_in_background": self._indexed_in_background,
                },
                "compaction": {
                    "threshold": self.compaction_threshold,
                    "min_dead_rows": self.compaction_min_dead,
                    "running": self._compactor is not None,
                    "runs": self._compactions,
                    "last_seconds": round(self._compaction_seconds, 6),
                    "last_swap_seconds": round(self._compaction_swap_seconds, 6),
                    "last_error": self._compaction_error,
                },
                "index_stats": self._index.stats(),
            }

    # -- maintenance ------------------------------------------------------------------------
    def wait_indexed(self) -> None:
        """Insert every acknowledged row into the index now, in this thread (the delta is
        empty on return). Until the next write, an approximate search then ranks rows as it
        will after any later checkpoint or reopen; :meth:`flush` does this and more."""
        with self._writes.lock:
            self._check_open()
            collection_indexer.drain(self)

    def flush(self) -> None:
        """Checkpoint: write a new immutable snapshot, start an empty log, switch the manifest.

        A no-op in memory, and when nothing changed since the last snapshot. Searches run
        meanwhile; writes wait until the snapshot is written.
        """
        with self._writes.lock:
            self._check_open()
            collection_indexer.drain(self)
            if self._datadir is None or self._wal is None:
                return
            if self._wal.size == 0 and self._snapshot is not None and not self._upgraded:
                return
            self._datadir.check_writable()
            collection_persistence.checkpoint(self)
            self._upgraded = False

    def compact(self) -> None:
        """Rebuild the rows and the index from the live rows only, dropping every deleted or
        replaced row (HNSW tombstones still cost search time), then checkpoint. The new index
        is built beside the old one while searches and writes go on; the writes of the
        meantime are replayed into it, and it is swapped in at once (searches wait only for
        the swap, writes for the last writes' replay and the checkpoint). One compaction runs
        at a time: this one waits for a background one (see ``compaction_threshold``)."""
        self._check_open()
        collection_persistence.compact(self)

    def wait_compacted(self) -> None:
        """Wait for a background compaction under way (if any) to finish."""
        thread = self._compactor
        if thread is not None and thread is not threading.current_thread():
            thread.join()

"""A collection: vectors keyed by int64 ids, with owner tenants, access lists and typed
attributes, an index, and (on disk) a snapshot plus a write-ahead log."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from shardwalk._deadline import check as check_deadline
from shardwalk._sync import Entry, GroupCommit, RWLock
from shardwalk._threads import ThreadBudget, default_budget
from shardwalk.errors import (
    CorruptionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ShardwalkError,
)
from shardwalk.index import IndexHost, SearchResult, make_index
from shardwalk.index.filters import evaluate, validate
from shardwalk.index.planner import Explain, Scope, plan_search
from shardwalk.index.store import RowStore, VectorStore
from shardwalk.index.tenancy import TenantDirectory
from shardwalk.rows import (
    DECLARABLE,
    SHARED,
    TENANT,
    RowTable,
    attribute_table,
    conform,
    merge_schema,
    shared_array,
    tenant_array,
)
from shardwalk.snapshot import (
    State,
    Upsert,
    delete_record,
    read_record,
    read_snapshot,
    upsert_record,
    write_snapshot,
)
from shardwalk.storage import DataDir
from shardwalk.validation import (
    as_ids,
    check_ids,
    check_k,
    check_name,
    check_search_params,
    check_vectors,
)
from shardwalk.wal import WriteAheadLog, encode

log = logging.getLogger(__name__)

__all__ = ["Collection", "Records"]

_SAMPLE = 1024  # rows a selectivity estimate looks at
# After an upsert of this many rows, hand freed memory back to the OS: a batch's transient
# copies are large allocations that glibc, once its mmap threshold has grown, keeps in its heap
# (100K x 128 built in 50K-row upserts: 232 MiB resident, 129 MiB once trimmed).
_LARGE_WRITE = 4096


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


def _release_index(index: Any) -> None:
    """Let go of what an index holds outside this process (a Ray-hosted one's actors)."""
    close = getattr(index, "close", None)
    if close is not None:
        close()


@dataclass
class _Upsert(Upsert):
    record: bytes | None = None  # the encoded log record (None without a log)
    owner: str | None = None  # the write's condition: every id is new or owned by this tenant


@dataclass
class _Delete:
    ids: np.ndarray
    missing_ok: bool
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    owner: str | None = None  # delete only the ids this tenant owns (the others are skipped)


def _coalesce(writes: list[Any]) -> list[Any]:
    """Consecutive upserts of distinct ids as one (one index insert for a group: its rows are
    linked in parallel); anything else as it came, in order."""
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
            if seen.isdisjoint(ids):
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

    ids: np.ndarray
    vectors: np.ndarray
    tenants: list[str | None]
    attributes: dict[str, list[Any]]
    shared_with: list[list[str]]


class Collection:
    """Vectors keyed by int64 ids, searchable by k nearest neighbours.

    Obtain one from :meth:`shardwalk.Engine.create_collection` or
    :meth:`shardwalk.Engine.collection`.

    Methods are thread-safe, and reads run in parallel: any number of threads search, get and
    read statistics at once under a shared lock. Writes are group-committed: concurrent
    upserts and deletes share one log append and one fsync, then apply in memory under a short
    exclusive lock (the index insert), and each call returns once its write is durable and
    visible. A search sees every write acknowledged before it started. A checkpoint
    (``flush``) holds back writes while it writes the snapshot, never reads.
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
        self._hook_index()
        self._version = 0  # bumped by every write: invalidates cached filter masks
        # (tenant, predicate, version) -> (mask, packed mask, matching rows, estimated count)
        self._masks: OrderedDict[Any, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = (
            OrderedDict()
        )
        self._rw = RWLock()  # shared: reads; exclusive: applying writes in memory
        self._writes = GroupCommit(self._commit_group)  # its lock: one commit or checkpoint
        self._cache_lock = threading.Lock()  # the filter mask cache
        self._datadir = datadir
        self._wal: WriteAheadLog | None = None
        # (path, bytes) of the live log whose writes are all applied in memory: set under the
        # exclusive lock (so consistent with what a reader sees), read by _logged_vectors
        self._applied_log: tuple[str, int] | None = None
        self._snapshot: str | None = None
        self._upgraded = False  # the snapshot's index is in an earlier format (see _attach)
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
            self._index.recover_vectors = self._logged_vectors

    def _logged_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of live ``rows`` written since the last checkpoint, read back from the
        write-ahead log (the last upsert of each row's id is that row's).

        A read path (a search restoring a Ray actor, under the shared lock): it reads the live
        log only up to the end of the last applied group, an offset taken under the exclusive
        lock, and writes nothing; a group being appended meanwhile is neither read nor cut."""
        applied = self._applied_log
        if self._wal is None or applied is None:
            raise FailedPreconditionError(
                f"collection {self.name!r} keeps no write-ahead log to recover vectors from"
            )
        path, end = applied
        ids = self._rows.ids[rows]
        order = np.argsort(ids)
        vectors = np.zeros((rows.size, self.dim), dtype=np.float32)
        found = np.zeros(rows.size, dtype=bool)
        for record in WriteAheadLog.replay(path, end=end):
            write = read_record(record, self.dim)
            if not isinstance(write, Upsert):
                continue
            at = np.minimum(np.searchsorted(ids, write.ids, sorter=order), ids.size - 1)
            hit = ids[order[at]] == write.ids
            vectors[order[at[hit]]] = write.vectors[hit]
            found[order[at[hit]]] = True
        if not found.all():
            raise CorruptionError(
                f"collection {self.name!r}: ids {ids[~found][:5].tolist()} are live but not in "
                "the write-ahead log since the last checkpoint; reopen the engine"
            )
        return vectors

    @property
    def declared_types(self) -> dict[str, pa.DataType]:
        """The declared attributes (name -> Arrow type, in declaration order; empty when the
        collection declares none)."""
        return dict(self._declared)

    @property
    def _shares_store(self) -> bool:
        return self._store is getattr(self._index, "store", None)

    @property
    def _index_metric(self) -> str:
        return "ip" if self.metric == "cosine" else self.metric

    def __repr__(self) -> str:
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric!r}, "
            f"index={self.index_kind!r}, count={len(self)})"
        )

    # -- opening ----------------------------------------------------------------------------
    def _attach(self, datadir: DataDir, snapshot: str | None, wal: str) -> None:
        """Load the snapshot (if any) and replay the log (called by the engine)."""
        directory = datadir.collection_dir(self.name)
        self._datadir = datadir
        if snapshot is not None:
            state = read_snapshot(
                directory / snapshot, dim=self.dim, budget=self._budget, host=self._host
            )
            _release_index(self._index)  # the empty one made by the constructor
            self._rows, self._index = state.rows, state.index
            self._rows.declare(self._declared)
            self._store, self._tenants = state.store, state.tenants
            self._hook_index()
        self._snapshot = snapshot
        # an index read from an earlier format was rebuilt: the next checkpoint rewrites it
        self._upgraded = bool(getattr(self._index, "upgraded", False))
        wal_path = str(directory / wal)
        for record in WriteAheadLog.replay(wal_path):
            write = read_record(record, self.dim)
            if isinstance(write, Upsert):
                self._apply_upsert(write)
            else:
                self._apply_delete(write)
        self._wal = WriteAheadLog(wal_path)
        self._applied_log = (wal_path, self._wal.size)
        # files of an interrupted checkpoint (written, never committed to the manifest)
        datadir.remove_unreferenced(self.name, keep={wal} | ({snapshot} if snapshot else set()))

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise FailedPreconditionError(
                f"collection {self.name!r} {self._closed_because}"
            ) from self._closed_cause

    def _close(self, because: str) -> None:
        with self._writes.lock, self._rw.write():
            if self._wal is not None:
                self._wal.close()
                self._wal = None
            if self._closed_because is None:
                _release_index(self._index)
            self._closed_because = because

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
        ids: Any,
        vectors: Any,
        tenants: Any = None,
        attributes: Any = None,
        shared_with: Any = None,
        *,
        owner_must_be: str | None = None,
    ) -> int:
        """Insert vectors, or replace the vectors of ids that exist.

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
        owner_must_be : str, optional
            A condition of the write, checked where it is committed (under the commit lock,
            against the state and the writes committed before it in its group): every id is
            new or a live row this tenant owns. Otherwise the whole write is refused
            (``PermissionDeniedError``) and nothing is written. Two tenants writing the same
            new id at once: the first committed wins, the other is refused.

        Returns
        -------
        int
            The number of vectors written.

        Raises
        ------
        InvalidArgumentError
            Wrong dimension or dtype, NaN/inf, empty input, duplicate ids, mismatched lengths,
            unsupported attribute types, a declared attribute of another type.
        PermissionDeniedError
            ``owner_must_be`` does not hold.
        """
        ids = check_ids(ids)
        arr = self._prepare_vectors(vectors, what="vectors", rows=ids.size)
        owners = tenant_array(tenants, ids.size)
        shared = shared_array(shared_with, ids.size)
        attrs = attribute_table(attributes, ids.size)
        if self._declared:
            attrs = conform(attrs, self._declared)
        if owner_must_be is not None:
            check_name("tenant", owner_must_be)
        write = _Upsert(ids, arr, owners, attrs, shared, owner=owner_must_be)
        if self._datadir is not None:  # encoded here, in the caller's thread
            write.record = encode("upsert", upsert_record(write, self.dim))
        written = self._writes.submit(write)
        if ids.size >= _LARGE_WRITE:
            del write, arr  # the batch's copies (checked, normalised, encoded) are garbage now
            _release_free_memory()
        return written

    def delete(
        self, ids: Any, *, missing_ok: bool = False, owner_must_be: str | None = None
    ) -> int:
        """Delete vectors by id; returns how many were deleted.

        ``owner_must_be``: delete only the ids this tenant owns when the delete is committed
        (the others count as missing).

        Raises
        ------
        NotFoundError
            Some ids do not exist (unless ``missing_ok``, which makes retries idempotent).
        """
        if owner_must_be is not None:
            check_name("tenant", owner_must_be)
        return self._writes.submit(_Delete(check_ids(ids), missing_ok, owner=owner_must_be))

    def _commit_group(self, group: list[Entry]) -> None:
        """Commit queued writes in order (called by the group's leader under the commit lock):
        check each against the state and the writes before it in the group, append every
        accepted record to the log with one fsync, then apply them all under the exclusive
        lock. A rejected write fails alone; the others commit."""
        if self._closed_because is not None:
            error = FailedPreconditionError(f"collection {self.name!r} {self._closed_because}")
            for entry in group:
                entry.error = error
            return
        schema = self._rows.schema
        accepted: list[Entry] = []
        records: list[bytes] = []
        for entry in group:
            write = entry.payload
            try:
                if isinstance(write, _Upsert):
                    if write.owner is not None:
                        self._check_owner(write, accepted)
                    merge_schema(schema, write.attributes)
                    entry.result = int(write.ids.size)
                    if write.record is not None:
                        records.append(write.record)
                else:
                    write.present = self._present(write.ids, accepted, owner=write.owner)
                    if write.present.size < write.ids.size and not write.missing_ok:
                        missing = write.ids[~np.isin(write.ids, write.present)]  # as given
                        shown = ", ".join(str(v) for v in missing[:5].tolist())
                        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
                        raise NotFoundError(
                            f"collection {self.name!r} has no ids {shown}{more}; nothing was "
                            "deleted (pass missing_ok=True to delete the others)"
                        )
                    entry.result = int(write.present.size)
                    if not write.present.size:
                        continue
                    if self._datadir is not None:
                        records.append(encode("delete", delete_record(write.present)))
                accepted.append(entry)
            except ShardwalkError as exc:
                entry.error = exc
        if not accepted:
            return
        logged = False  # the group's records are durable in the log
        try:
            if self._wal is not None and records:
                assert self._datadir is not None
                try:
                    self._datadir.append(self._wal, records, f"a write to {self.name!r}")
                except (ResourceExhaustedError, FailedPreconditionError) as exc:
                    # no space (the log was cut back: nothing written) or read-only after a
                    # failed fsync (reads go on): this group fails, the collection stays open
                    for entry in accepted:
                        entry.error = exc
                    return
                logged = True
            with self._rw.write():
                for write in _coalesce([entry.payload for entry in accepted]):
                    if isinstance(write, Upsert):
                        self._apply_upsert(write)
                    else:
                        self._apply_delete(write.present)
                if self._wal is not None:
                    self._applied_log = (self._wal.path, self._wal.size)
        except BaseException as exc:
            # The log and the memory may now disagree: refuse further use until reopened
            # (replaying the log then gives the state every acknowledged write left).
            # (the cause's text stays out of the message, which a server passes to its
            # clients: it is chained to the errors, and logged)
            self._closed_because = "stopped at a failed write; reopen the engine"
            self._closed_cause = exc
            log.error("collection %r stopped at a failed write", self.name, exc_info=exc)
            for entry in accepted:
                entry.error = (
                    OutcomeUnknownError.logged(
                        f"collection {self.name!r}", "write", "collection", exc
                    )
                    if logged  # durable, so not a failure: it comes back at the next open
                    else FailedPreconditionError(f"collection {self.name!r} {self._closed_because}")
                )
                entry.error.__cause__ = exc

    def _present(
        self, ids: np.ndarray, before: list[Entry], owner: str | None = None
    ) -> np.ndarray:
        """The ids that exist once the writes ``before`` (of this group) are applied (and
        that ``owner`` owns then, if given)."""
        if owner is not None:
            exists, owners = self._owners(ids, before)
            return ids[exists & (owners == owner)]
        exists = self._rows.contains(ids)
        for entry in before:
            write = entry.payload
            if isinstance(write, _Upsert):
                exists |= np.isin(ids, write.ids)
            else:
                exists &= ~np.isin(ids, write.present)
        return ids[exists]

    def _owners(self, ids: np.ndarray, before: list[Entry]) -> tuple[np.ndarray, np.ndarray]:
        """Per id, whether it exists and its owner tenant (an object array, None: no owner)
        once the writes ``before`` (of this group) are applied. Under the commit lock."""
        rows = self._rows.lookup(ids)
        exists = rows >= 0
        owners = np.full(ids.size, None, dtype=object)
        if exists.any():
            owners[exists] = self._rows.owners(rows[exists])
        for entry in before:
            write = entry.payload
            if isinstance(write, _Upsert):
                hit = np.flatnonzero(np.isin(ids, write.ids))
                if hit.size:
                    order = np.argsort(write.ids)
                    at = order[np.searchsorted(write.ids, ids[hit], sorter=order)]
                    tenants = write.tenants.to_pylist()
                    owners[hit] = [tenants[i] for i in at.tolist()]
                    exists[hit] = True
            else:
                gone = np.isin(ids, write.present)
                exists &= ~gone
                owners[gone] = None
        return exists, owners

    def _check_owner(self, write: _Upsert, before: list[Entry]) -> None:
        """Refuse ``write`` unless each of its ids is new or owned by ``write.owner``."""
        exists, owners = self._owners(write.ids, before)
        foreign = exists & (owners != write.owner)
        if foreign.any():
            shown = ", ".join(str(v) for v in write.ids[foreign][:5].tolist())
            more = f" and {int(foreign.sum()) - 5} more" if foreign.sum() > 5 else ""
            raise PermissionDeniedError(
                f"tenant {write.owner!r} cannot write ids {shown}{more} of collection "
                f"{self.name!r}; nothing was written (use other ids)"
            )

    def _apply_upsert(self, write: Upsert) -> None:
        replaced = self._rows.replaced_rows(write.ids)
        rows = self._rows.append(write.ids, write.tenants, write.attributes, write.shared)
        if replaced.size:
            self._index.delete(replaced)
        owners = self._tenants.add(rows, write.tenants, write.shared)
        self._index.add(rows, write.vectors, groups=owners)  # a layout hint: owner tenants
        if not self._shares_store:
            assert isinstance(self._store, VectorStore)
            self._store.extend(write.vectors)
        self._version += 1

    def _apply_delete(self, ids: np.ndarray) -> None:
        self._index.delete(self._rows.kill(ids))
        self._version += 1

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | None = None,
        where: Any = None,
        explain: bool = False,
        **search_params: Any,
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
        with self._rw.read():
            self._check_open()
            predicate = None if where is None else validate(where, self._rows.schema)
            scope = self._scope(tenant, predicate)
            # the call's threads; numba and faiss are set where their kernels run (the planner's
            # exact paths, the indexes), not here: a single query needs neither
            n = arr.shape[0]  # one query: its caller's thread, nothing to take
            with nullcontext() if n == 1 else self._budget.take(n, kernels=False):
                found, report = plan_search(self._index, self._store, arr, k, scope, params)
            row_ids = self._rows.ids
            ids = np.full(found.ids.shape, -1, dtype=np.int64)
            hit = found.ids >= 0
            ids[hit] = row_ids[found.ids[hit]]
        return SearchResult(ids=ids, distances=found.distances, explain=report if explain else None)

    def explain(
        self,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | None = None,
        where: Any = None,
        **search_params: Any,
    ) -> Explain:
        """Run a search and return only its explanation (path, reason, match counts, time)."""
        result = self.search(queries, k, tenant=tenant, where=where, explain=True, **search_params)
        assert result.explain is not None
        return result.explain

    def _scope(self, tenant: str | None, predicate: Any) -> Scope | None:
        """The live rows a search may return (None: every live row, no filtering)."""
        if tenant is None and predicate is None:
            return None
        tenant_rows = None if tenant is None else self._tenants.rows(tenant)
        key = (tenant, predicate, self._version)
        with self._cache_lock:
            cached = self._masks.get(key)
            if cached is not None:
                self._masks.move_to_end(key)
        if cached is None:  # built outside the cache lock (searches run in parallel)
            cached = self._build_scope(tenant_rows, predicate)
            with self._cache_lock:
                self._masks[key] = cached
                while len(self._masks) > 16:
                    self._masks.popitem(last=False)
        allowed, bits, matches, n_visible, estimated = cached
        return Scope(
            matches=matches,
            allowed=allowed,
            allowed_bits=bits,
            tenant_rows=tenant_rows,
            tenant_key=tenant,
            tenant_version=self._tenants.version(tenant) if tenant is not None else 0,
            visible=n_visible,
            estimated=estimated,
        )

    def _build_scope(
        self, tenant_rows: np.ndarray | None, predicate: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(mask, packed mask, matching rows, visible count, estimated matches) of a scope."""
        alive = self._rows.alive
        visible = None if tenant_rows is None else tenant_rows[alive[tenant_rows]]
        n_visible = len(self._rows) if visible is None else int(visible.size)
        estimated = n_visible
        if predicate is None:
            assert visible is not None
            mask = np.zeros(self._rows.rows, dtype=bool)
            mask[visible] = True
            matches = visible
        else:
            if visible is None:
                mask = evaluate(predicate, self._rows.table()) & alive
            else:
                mask = np.zeros(self._rows.rows, dtype=bool)
                mask[visible[evaluate(predicate, self._rows.columns(visible))]] = True
            matches = np.flatnonzero(mask)
            if n_visible:  # what a planner without the exact count would have estimated
                pool = visible if visible is not None else np.flatnonzero(alive)
                sample = pool[:: max(1, pool.size // _SAMPLE)]
                estimated = round(mask[sample].mean() * n_visible)
        return mask, np.packbits(mask, bitorder="little"), matches, n_visible, estimated

    def get(self, ids: Any, *, tenant: str | None = None) -> Records:
        """Stored vectors, tenants and attributes of these ids.

        ``tenant``: only rows this tenant owns or that are shared with it; an id it may not
        see is reported exactly like one that does not exist (in the same message, in the
        order given), so the answer does not depend on other tenants' rows.

        Raises
        ------
        NotFoundError
            Naming the first few ids that do not exist (or ``tenant`` may not see).
        """
        ids = check_ids(ids)
        if tenant is not None:
            check_name("tenant", tenant)
        owner = f"collection {self.name!r}"
        with self._rw.read():
            self._check_open()
            if tenant is None:
                rows = self._rows.rows_of(ids, owner=owner)
                columns = self._rows.columns(rows)
            else:  # visibility first, from the rows' own owner and access list
                rows = self._rows.lookup(ids)
                seen = rows >= 0
                columns = self._rows.columns(rows[seen])
                if columns.num_rows:
                    owners = columns.column(TENANT).to_pylist()
                    access = _shared_lists(columns, columns.num_rows)
                    seen[seen] = [t == tenant or tenant in a for t, a in zip(owners, access)]
                if not seen.all():
                    hidden = ids[~seen]
                    shown = ", ".join(str(v) for v in hidden[:5].tolist())
                    more = f" and {hidden.size - 5} more" if hidden.size > 5 else ""
                    raise NotFoundError(f"{owner} has no ids {shown}{more}")
            vectors = self._store.take(rows)
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
        self, ids: Any, *, tenant: str | None = None, where: Any = None, owned: bool = False
    ) -> np.ndarray:
        """Per id, whether a search with this ``tenant`` and ``where`` could return it: the id
        is a live row, the tenant owns it or it is shared with the tenant, and it satisfies
        the predicate. A bool array, one entry per id in the order given (repeats allowed;
        unknown ids are False, not an error). Read-only; the scope masks are the ones
        :meth:`search` builds and caches, so after a search with the same scope this costs
        an id lookup. ``owned=True`` keeps only rows ``tenant`` owns (not those merely shared
        with it), as the server checks before a tenant's writes.

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
            rows = self._rows.lookup(ids)
            found = rows >= 0
            scope = self._scope(tenant, predicate)
            if scope is not None:
                found[found] = scope.allowed[rows[found]]
            if owned and found.any():
                owners = self._rows.columns(rows[found]).column(TENANT).to_numpy(False)
                found[found] = owners == tenant
        return found

    def _scope_size(self, tenant: str | None = None, where: Any = None) -> int:
        """How many live rows :meth:`visible` would accept for this scope (from the cached
        scope masks): tells a scoped PPR how deep to fetch before filtering."""
        if tenant is not None:
            check_name("tenant", tenant)
        with self._rw.read():
            self._check_open()
            predicate = None if where is None else validate(where, self._rows.schema)
            scope = self._scope(tenant, predicate)
            return len(self._rows) if scope is None else int(scope.matches.size)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, (int, np.integer)) or isinstance(id_, bool):
            return False
        with self._rw.read():
            return int(id_) in self._rows

    def stats(self) -> dict[str, Any]:
        """Counts, parameters, sizes (JSON-serialisable)."""
        with self._rw.read():
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
                "index_stats": self._index.stats(),
            }

    # -- maintenance ------------------------------------------------------------------------
    def flush(self) -> None:
        """Checkpoint: write a new immutable snapshot, start an empty log, switch the manifest.

        A no-op in memory, and when nothing changed since the last snapshot. Searches run
        meanwhile; writes wait until the snapshot is written.
        """
        with self._writes.lock:
            self._check_open()
            if self._datadir is None or self._wal is None:
                return
            if self._wal.size == 0 and self._snapshot is not None and not self._upgraded:
                return
            self._datadir.check_writable()
            self._checkpoint()
            self._upgraded = False

    @contextmanager
    def _checkpointed(self) -> Iterator[tuple[dict[str, Any], int]]:
        """Hold writes back, checkpoint if anything changed, and yield this collection's
        manifest entry and its log's size: a consistent cut for a backup (shardwalk.backup),
        which pins the files the entry names before the block ends. Searches run meanwhile."""
        with self._writes.lock:
            self._check_open()
            if self._datadir is None or self._wal is None:
                raise FailedPreconditionError(f"collection {self.name!r} has no files to back up")
            if self._wal.size or self._snapshot is None or self._upgraded:  # as flush()
                self._checkpoint()
                self._upgraded = False
            yield self._datadir.manifest["collections"][self.name], self._wal.size

    def _checkpoint(self) -> None:
        datadir, old_wal = self._datadir, self._wal
        assert datadir is not None and old_wal is not None
        with datadir.guard(f"a checkpoint of collection {self.name!r}"):
            generation = datadir.next_generation()
            directory = datadir.collection_dir(self.name)
            snapshot = f"snap-{generation:06d}"
            wal = f"wal-{generation:06d}.log"
            state = State(
                rows=self._rows, index=self._index, store=self._store, tenants=self._tenants
            )
            # On a failure the old snapshot and log stay current; the new files are removed by
            # the next checkpoint or open (not now: a spann index already reads its sealed
            # posting files from the new snapshot, see SpannIndex.save).
            write_snapshot(directory / snapshot, state, dim=self.dim, name=self.name)
            WriteAheadLog.create(str(directory / wal))

            def switch(manifest: dict[str, Any]) -> None:
                manifest["collections"][self.name].update(snapshot=snapshot, wal=wal)

            datadir.commit(switch)
            try:
                old_wal.close()
                self._wal = WriteAheadLog(str(directory / wal))
                self._applied_log = (self._wal.path, self._wal.size)
                self._snapshot = snapshot
                datadir.remove_unreferenced(self.name, keep={snapshot, wal})
            except BaseException as exc:  # the manifest names the new log: no way back
                datadir.fail(exc)
                raise

    def compact(self) -> None:
        """Rebuild the index from the live vectors only, dropping every deleted or replaced
        row (HNSW tombstones still cost search time), then checkpoint. The new index is built
        beside the old one (searches go on; writes wait) and swapped in at once."""
        with self._writes.lock:
            self._check_open()
            live = np.flatnonzero(self._rows.alive)
            columns = self._rows.columns(live)
            fresh = Collection(
                name=self.name,
                dim=self.dim,
                metric=self.metric,
                index=self.index_kind,
                params=self.params,
                budget=self._budget,
                host=self._host,
                attributes=self.attributes,
            )
            if live.size:
                fresh._apply_upsert(
                    Upsert(
                        ids=self._rows.ids[live],
                        vectors=self._store.take(live),
                        tenants=columns.column(TENANT).combine_chunks(),
                        attributes=columns.drop_columns(
                            [c for c in (TENANT, SHARED) if c in columns.column_names]
                        ),
                        shared=columns.column(SHARED).combine_chunks()
                        if SHARED in columns.column_names
                        else None,
                    )
                )
            with self._rw.write():
                old = self._index
                self._rows, self._index = fresh._rows, fresh._index
                self._store, self._tenants = fresh._store, fresh._tenants
                self._hook_index()
                self._version += 1
                with self._cache_lock:
                    self._masks.clear()
            _release_index(old)
            if self._datadir is not None and self._wal is not None:
                self._checkpoint()

"""The :class:`SpannIndex`: its state, writes (appends to the lists' tails, published in
one step), searches (pruned probes of the nearest lists) and statistics. Its build, upkeep
and snapshot are in :mod:`.build`, :mod:`.maintenance` and :mod:`.format`."""

from __future__ import annotations

import math
import os
import tempfile
import threading
import weakref
from collections import deque
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
from shardwalk.index._kernels import SPANN_LABEL_BITS, scan_lists
from shardwalk.index.base import SearchResult, empty_result
from shardwalk.index.hnsw import OnHNSW, OnHNSWOptions
from shardwalk.index.hnsw_graph import HNSWGraph, _grow
from shardwalk.index.spann.build import _Build, _pairs, assign_lists
from shardwalk.index.spann.format import (
    _DEAD,
    _GEN_SHIFT,
    _VERSIONS,
    LABEL_MASK,
    _cleanup,
    _Generation,
    _Persistence,
    _PrimaryPlaces,
    _Staged,
    make_records,
    record_words,
)
from shardwalk.index.spann.maintenance import _GARBAGE_MIN, _Maintenance
from shardwalk.index.store import IndexStore, Segment

from shardwalk._sync import RWLock

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions
    from typing_extensions import Unpack

__all__ = ["SpannIndex"]

_NO_SCOPE = np.zeros(0, dtype=np.uint8)


class SpannIndex(_Build, _Maintenance, _Persistence, OnHNSW):
    """Disk-resident approximate nearest neighbours: centroids and their HNSW graph in memory,
    vectors in posting lists on disk (see the docstring of the package, shardwalk.index.spann).

    Parameters
    ----------
    dim, metric
        As for every index.
    max_list_size : int, default 64
        Most records (vectors and replicas) a posting list holds, what one probe reads; the
        clustering makes lists of at most half of it, a list past it splits.
    eps_build : float, default 0.3
        Replication threshold epsilon_1: a vector joins lists within (1 + eps_build) x its
        nearest centroid's distance (RNG rule applied).
    max_replicas : int, default 8
        Most lists one vector joins (SPTAG's ReplicaCount, 8).
    eps_search : float, default 0.6
        Pruning threshold epsilon_2: probe list i only if d(q, c_i) <= (1 + eps_search) x
        d(q, c_1). Also per search.
    max_probes : int, default 64
        Most lists a query probes (SPTAG's SearchInternalResultNum, 64). Also per search.
    m, ef_construction, ef
        The centroid graph's HNSW parameters (:class:`~shardwalk.index.hnsw.HNSWParams`);
        ``ef`` (also per search; raised to the lists fetched) defaults to 0: twice the lists
        fetched, at least 32.
    maintenance : {"background", "inline"}, default "background"
        Where list splits run: a background thread (writes return at once; searches wait only
        for the swap) or inside the write that overfilled the list (deterministic).
    io : {"mmap", "pread"}, default "mmap"
        How a probe reads its list: a memory-mapped range (the page cache, no copy) or one
        positioned read into a buffer.
    train_size : int, default 262144
        Most vectors the clustering of a build sees (a sample of larger builds).
    workdir : str, optional
        Where the open generation and the row map live (default: a new temporary directory,
        ``$SHARDWALK_SPANN_TMPDIR`` or the system's; removed with the index).
    seed, threads, budget
        As for the other indexes.

    Thread safety: searches, gets and stats from many threads at once, also while a write or
    a split runs (each sees the index before or after it: see the package docstring); writes
    wait for each other.
    """

    kind = "spann"
    saved_params = (
        "max_list_size", "eps_build", "max_replicas", "eps_search", "max_probes", "maintenance",
        "io", "train_size",
    )  # fmt: skip
    scoped = True  # filtered and tenant searches score only rows in scope (see search)
    scoped_how = (
        "probe the posting lists nearest the query (more, the smaller the scope), scoring only "
        "the rows in scope"
    )

    def __init__(
        self,
        *,
        max_list_size: int = 64,
        eps_build: float = 0.3,
        max_replicas: int = 8,
        eps_search: float = 0.6,
        max_probes: int = 64,
        maintenance: str = "background",
        io: str = "mmap",
        train_size: int = 262144,
        workdir: str | None = None,
        **options: Unpack[OnHNSWOptions],
    ) -> None:
        options.setdefault("ef", 0)
        super().__init__(**options)
        dim, metric = self.dim, self.metric
        # ip: lists, centroids and probes live in dim + 1 dimensions, where x gets
        # sqrt(M^2 - |x|^2) (M: the largest norm at the build) and a query 0, so that the
        # nearest in l2 is the largest inner product (Bachrach et al. 2014); scans score the
        # first dim coordinates by inner product, exactly.
        self.vdim = dim + (metric == "ip")
        self._norm_cap = 0.0
        self.max_list_size = max(2, int(max_list_size))
        self.eps_build = float(eps_build)
        self.max_replicas = max(1, int(max_replicas))
        self.eps_search = float(eps_search)
        self.max_probes = max(1, int(max_probes))
        self.maintenance = maintenance
        self.io = io
        self.train_size = train_size
        self.words = record_words(self.vdim)
        self.workdir = workdir or tempfile.mkdtemp(
            prefix="shardwalk-spann-", dir=os.environ.get("SHARDWALK_SPANN_TMPDIR")
        )
        os.makedirs(self.workdir, exist_ok=True)
        self._gens: dict[int, _Generation] = {}
        self._files: list[_Generation] = []  # every generation opened, closed with the index
        self._open: _Generation | None = None
        self._next_gen = 0
        self._places = _PrimaryPlaces(os.path.join(self.workdir, f"where-{id(self):x}.i64"))
        self._mutex = threading.RLock()  # one writer: foreground writes, splits, saves
        self._closed = threading.Event()  # set by the finalizer: the worker stops
        weakref.finalize(
            self,
            _cleanup,
            self.workdir if workdir is None else "",
            self._files,
            self._places,
            self._mutex,
            self._closed,
        )
        self._reset_lists()
        # by label: its current version (1..32767; 0: never written), flagged _DEAD if deleted
        self._version = np.zeros(0, dtype=np.uint16)
        self._live = 0
        self._garbage = 0  # records no list references any more (in the files)
        self.garbage_min = _GARBAGE_MIN
        self._counters = {
            "splits": 0,
            "reassigned": 0,
            "relocations": 0,
            "dropped_replicas": 0,
            "searches": 0,
            "lists_probed": 0,
            "bytes_read": 0,
        }
        self._rw = RWLock()  # searches share it; a publication takes it alone
        # the split queue, the worker's running flag and the failure count: under _idle
        self._idle = threading.Condition(threading.Lock())
        self._pending: deque[int] = deque()
        self._queued: set[int] = set()
        self._failed: set[int] = set()  # lists whose split failed: retried by the next run
        self._running = False  # a worker runs (or is starting): it will see what is queued
        self._worker: threading.Thread | None = None  # the last one started
        self._failures = 0
        self._last_failure = ""
        self.store = IndexStore(dim, self._segments)

    def _reset_lists(self) -> None:
        self._graph = self._new_graph()
        # the list table, by list: the generation, first record, record count and capacity of
        # its run (a search reads list i as records [start, start + count) of that generation)
        self._list_gen = np.zeros(0, dtype=np.int32)
        self._list_start = np.zeros(0, dtype=np.int64)
        self._list_count = np.zeros(0, dtype=np.int32)
        self._list_capacity = np.zeros(0, dtype=np.int32)
        self._lists = 0

    def _new_graph(self) -> HNSWGraph:
        return HNSWGraph(dim=self.vdim, metric="l2", params=self.hnsw, seed=self.seed)

    def _augment(self, vectors: np.ndarray, norm_cap: float | None = None) -> np.ndarray:
        """Vectors as the lists hold them (ip: with the extra coordinate)."""
        if self.metric != "ip":
            return vectors
        cap = self._norm_cap if norm_cap is None else norm_cap
        extra = np.sqrt(np.maximum(cap**2 - (vectors**2).sum(axis=1), 0.0))
        return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), dtype=np.float32)

    def _augment_queries(self, queries: np.ndarray) -> np.ndarray:
        if self.metric != "ip":
            return queries
        return np.ascontiguousarray(
            np.hstack([queries, np.zeros((queries.shape[0], 1))]), dtype=np.float32
        )

    @property
    def _centroids(self) -> np.ndarray:
        """Every list's centroid: the graph's storage (no copy; valid until its next add)."""
        return self._graph.vectors()

    # -- generations ------------------------------------------------------------------------
    def _new_gen(self) -> _Generation:
        """A fresh posting file, registered. The dict of generations is replaced, never
        changed in place: a search iterates the one it took."""
        number = self._next_gen
        self._next_gen += 1
        path = os.path.join(self.workdir, f"postings-{number:06d}.bin")
        gen = _Generation(number, path, self.words, 0, sealed=False)
        self._files.append(gen)
        self._gens = {**self._gens, number: gen}
        return gen

    def _open_gen(self) -> _Generation:
        if self._open is None:
            self._open = self._new_gen()
        return self._open

    # -- writes -----------------------------------------------------------------------------
    def _grow_rows(self, end: int) -> None:
        self._version = _grow(self._version, end, 0)
        self._places.reserve(end)

    def _insert(self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None) -> None:
        """Add (or replace) rows: their records are written first, then published in one
        step (a search sees all of them or none; a replaced row its old vector or its new)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._mutex, self.budget.take(self.threads or self.budget.threads):
            versions = self._next_versions(labels)
            live = self._live - self._count_live(labels) + labels.size
            if self._lists == 0 or live <= 4 * self.max_list_size:
                self._rebuild(labels, vectors, versions)
            else:
                vectors = self._augment(vectors)
                staged = self._stage_appends(labels, versions, vectors, self._targets(vectors))
                with self._rw.write():
                    self._write_rows(labels, versions)
                    overfull = self._publish(staged)
                for lst in overfull:
                    self._queue_split(lst)
        if self.maintenance == "inline":
            self._run_splits()

    def _next_versions(self, labels: np.ndarray) -> np.ndarray:
        """The versions ``labels`` get when written again (live; their older copies turn
        stale). After 32767 it wraps to 1 (a copy that old is long gone from a list that ever
        split or was compacted)."""
        current = np.zeros(labels.size, dtype=np.uint16)
        known = labels < self._version.shape[0]
        current[known] = self._version[labels[known]] & np.uint16(_VERSIONS)
        return current % np.uint16(_VERSIONS) + np.uint16(1)

    def _count_live(self, labels: np.ndarray) -> int:
        known = np.unique(labels[(labels >= 0) & (labels < self._version.shape[0])])
        version = self._version[known]
        return int(np.count_nonzero((version != 0) & (version & _DEAD == 0)))

    def _write_rows(self, labels: np.ndarray, versions: np.ndarray) -> None:
        """Publish ``labels`` at ``versions`` (under the write lock, with their records)."""
        self._grow_rows(int(labels.max()) + 1)
        self._delete(labels)  # a label added again: its earlier copies turn stale
        self._version[labels] = versions
        self._live += labels.size

    def _alive(self) -> np.ndarray:
        return (self._version != 0) & (self._version & _DEAD == 0)

    def _live_vectors(self, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        live = np.flatnonzero(self._alive())
        live = live[~np.isin(live, exclude)]
        return live, self._take(live)

    def _targets(self, vectors: np.ndarray) -> np.ndarray:
        return assign_lists(
            vectors,
            self._graph,
            self._centroids,
            eps_build=self.eps_build,
            max_replicas=self.max_replicas,
        )

    def _stage_appends(
        self, labels: np.ndarray, versions: np.ndarray, vectors: np.ndarray, targets: np.ndarray
    ) -> _Staged:
        """Write the records of ``labels`` (at ``versions``) to the tails of their lists
        ``targets`` (primary first, replicas after, padded -1); returns what to publish."""
        staged = _Staged()
        written = np.unique(labels)
        row, flat, rank = _pairs(targets)
        order = np.argsort(flat, kind="stable")
        row, flat, rank = row[order], flat[order], rank[order]
        bounds = np.flatnonzero(np.diff(flat)) + 1
        for rows_at in np.split(np.arange(flat.size), bounds):
            if rows_at.size == 0:
                continue
            lst = int(flat[rows_at[0]])
            rows = row[rows_at]
            records = make_records(labels[rows], versions[rows], vectors[rows])
            place = self._stage_append(staged, lst, records, written)
            primary = rank[rows_at] == 0
            staged.moves.append((labels[rows[primary]], place + np.flatnonzero(primary)))
        return staged

    def _stage_append(
        self, staged: _Staged, lst: int, records: np.ndarray, written: np.ndarray
    ) -> int:
        """Write ``records`` after list ``lst``'s tail; returns the place of the first (gen <<
        40 | record). A list in a sealed generation, or without room, is written anew in the
        open one, less the copies of the labels being ``written`` (sorted; stale once
        published)."""
        gen = self._gens[int(self._list_gen[lst])]
        count, start, cap = (
            int(self._list_count[lst]),
            int(self._list_start[lst]),
            int(self._list_capacity[lst]),
        )
        if gen is self._open and count + records.shape[0] <= cap:
            gen.write(start + count, records)  # past the tail the table names: unseen
            staged.entries.append((lst, gen.number, start, count + records.shape[0], cap))
            return (gen.number << _GEN_SHIFT) | (start + count)
        current = self._read_current(lst)
        keys = current.view(np.int64)[:, 0] & LABEL_MASK
        current = current[
            written[np.minimum(np.searchsorted(written, keys), written.size - 1)] != keys
        ]
        combined = np.concatenate([current, records]) if current.shape[0] else records
        carried = current.shape[0]
        return self._stage_list(staged, lst, combined, carried=carried) + carried

    def _stage_list(
        self,
        staged: _Staged,
        lst: int,
        records: np.ndarray,
        old: tuple[int, int, int] | None = None,
        *,
        carried: int | None = None,
    ) -> int:
        """Write list ``lst`` anew in the open generation with room to grow. Of its first
        ``carried`` records (default: all), those whose primary copy was in the ``old`` run
        (gen, start, cap; default: the list's own, which becomes garbage) have it here once
        published. Returns the place of the first record."""
        if old is None:
            old = (
                int(self._list_gen[lst]),
                int(self._list_start[lst]),
                int(self._list_capacity[lst]),
            )
            staged.garbage += old[2]
        gen = self._open_gen()
        cap = max(records.shape[0] + 8, self.max_list_size + self.max_list_size // 4)
        start = gen.allocate(cap)
        gen.write(start, records)  # a run no table entry names yet: unseen
        staged.relocations += 1
        base = (gen.number << _GEN_SHIFT) | start
        kept = records if carried is None else records[:carried]
        labels = kept.view(np.int64)[:, 0] & LABEL_MASK
        moved = self._places.array[labels]
        old_lo = (old[0] << _GEN_SHIFT) | old[1]
        mine = (moved >= old_lo) & (moved < old_lo + old[2])  # their primary copy was there
        staged.moves.append((labels[mine], base + np.flatnonzero(mine)))
        staged.entries.append((lst, gen.number, start, records.shape[0], cap))
        return base

    def _publish(self, staged: _Staged) -> list[int]:
        """Make staged records visible (the caller holds the write lock): their list-table
        entries, their rows' places, the counts. Returns the lists now past the limit (the
        caller queues them once it has released the lock)."""
        for lst, gen, start, count, cap in staged.entries:
            self._list_gen[lst], self._list_start[lst] = gen, start
            self._list_count[lst], self._list_capacity[lst] = count, cap
        for labels, places in staged.moves:
            self._places.array[labels] = places
        self._garbage += staged.garbage
        self._counters["relocations"] += staged.relocations
        return [lst for lst, _, _, count, _ in staged.entries if count > self.max_list_size]

    def _read_current(self, lst: int) -> np.ndarray:
        """The live, current records of list ``lst`` (stale copies and tombstones dropped)."""
        count = int(self._list_count[lst])
        if count == 0:
            return np.zeros((0, self.words), dtype=np.float32)
        records = self._gens[int(self._list_gen[lst])].read(int(self._list_start[lst]), count)
        keys = records.view(np.int64)[:, 0]
        labels = keys & LABEL_MASK
        ok = labels < self._version.shape[0]
        ok &= self._version[np.where(ok, labels, 0)] == (keys >> SPANN_LABEL_BITS)
        return records[ok]

    def delete(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        with self._mutex, self._rw.write():
            self._delete(labels)

    def _delete(self, labels: np.ndarray) -> None:
        labels = np.unique(labels[(labels >= 0) & (labels < self._version.shape[0])])
        labels = labels[(self._version[labels] != 0) & (self._version[labels] & _DEAD == 0)]
        self._version[labels] |= _DEAD
        self._live -= labels.size

    def _live_lists(self) -> np.ndarray:
        """Lists with a live centroid and records."""
        return np.flatnonzero(
            self._graph.alive()[: self._lists] & (self._list_count[: self._lists] > 0)
        )

    # -- reads ------------------------------------------------------------------------------
    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Approximate top-k: the centroid graph names the closest lists, pruning keeps those
        within (1 + eps_search) of the nearest (at most max_probes), their records are scanned
        and replicas merged. Never fewer than min(k, live) results: a query whose probed lists
        hold too few live vectors probes more, then all of them.

        A scoped search (``allowed``: bool per label, ``allowed_bits`` the same packed; the
        planner's tenant and filter scope) scores only labels in scope, probing more lists the
        fewer are in scope, and returns min(k, labels in scope) results.

        ``result.explain`` is a dict: ``lists_probed`` and ``bytes_read`` per query (mean).

        The whole search holds the index's lock shared: it sees every write and split
        published before it and none of one published after it started."""
        n = queries.shape[0]
        eps_search, max_probes = options.get("eps_search"), options.get("max_probes")
        eps = self.eps_search if eps_search is None else float(eps_search)
        probes = self.max_probes if max_probes is None else int(max_probes)
        allowed, allowed_bits = options.get("allowed"), options.get("allowed_bits")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._rw.read():
            if self._live == 0:
                return empty_result(n, k)
            matches = self._live
            bits = _NO_SCOPE
            if allowed is not None:
                allowed = allowed[: self._version.shape[0]]
                matches = int(np.count_nonzero(allowed & self._alive()[: allowed.shape[0]]))
                if matches == 0:
                    return empty_result(n, k)
                bits = (
                    allowed_bits
                    if allowed_bits is not None
                    else np.packbits(allowed, bitorder="little")
                )
            # one query: the calling thread (faiss starts no team for it, the scan is serial)
            with (
                nullcontext()
                if n == 1
                else self.budget.take(min(n, self.threads or self.budget.threads))
            ):
                ids, distances, probed, read = self._search_lists(
                    queries, k, eps, probes, options.get("ef") or self.ef, bits, matches
                )
        self._counters["searches"] += n
        self._counters["lists_probed"] += probed
        self._counters["bytes_read"] += read
        return SearchResult(
            ids=ids,
            distances=distances,
            explain={"lists_probed": probed / n, "bytes_read": read / n},
        )

    def _probe_lists(
        self, queries: np.ndarray, k: int, eps: float, probes: int, ef: int, selectivity: float
    ) -> np.ndarray:
        """Per query, the lists to probe, closest first (padded -1): those the pruning rule
        keeps among the first ``probes``, then, in order, more while the probed lists hold
        fewer than k records, or (a scoped search, a fraction ``selectivity`` of the rows in
        scope) fewer than the pruned lists' records / selectivity: as many rows in scope as an
        unscoped search scores rows."""
        live_lists = len(self._graph)
        probes = min(probes, live_lists)
        fetch = min(live_lists, max(probes, math.ceil(probes / selectivity)), 8192)
        # the beam: ef if set, else twice the lists fetched (at least 32)
        beam = ef if ef else max(32, 2 * fetch)
        found, raw = self._graph.search(self._augment_queries(queries), fetch, max(beam, fetch))
        d = np.sqrt(np.maximum(raw, 0.0))
        keep = (found >= 0) & (d <= (1.0 + eps) * d[:, :1] + 1e-6)
        keep[:, probes:] = False
        keep[:, 0] = found[:, 0] >= 0
        counts = np.where(found >= 0, self._list_count[np.maximum(found, 0)], 0).astype(np.int64)
        need = np.maximum((counts * keep).sum(axis=1) / selectivity, k / selectivity)
        before = np.cumsum(counts, axis=1) - counts
        keep |= (found >= 0) & (before < need[:, None])
        return np.where(keep, found, -1)

    def _search_lists(
        self,
        queries: np.ndarray,
        k: int,
        eps: float,
        probes: int,
        ef: int,
        bits: np.ndarray,
        matches: int,
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        n = queries.shape[0]
        selectivity = max(matches / max(self._live, 1), 1e-6)
        lists = self._probe_lists(queries, k, eps, probes, ef, min(selectivity, 1.0))
        out_r = np.full((n, k), -1, dtype=np.int64)
        out_d = np.full((n, k), np.inf, dtype=np.float32)
        probed = int(np.count_nonzero(lists >= 0))
        read = int(self._list_count[lists[lists >= 0]].sum()) * self.words * 4
        self._scan(queries, lists, out_r, out_d, bits)
        # a query short of min(k, matches) (tombstones, tiny lists, a sparse scope): every
        # list, exactly
        want = min(k, matches)
        short = np.flatnonzero((out_r >= 0).sum(axis=1) < want)
        if short.size:
            every = self._live_lists()
            full = np.tile(every, (short.size, 1))
            sub_r = np.full((short.size, k), -1, dtype=np.int64)
            sub_d = np.full((short.size, k), np.inf, dtype=np.float32)
            self._scan(queries[short], full, sub_r, sub_d, bits)
            out_r[short], out_d[short] = sub_r, sub_d
            probed += int(full.size)
            read += int(self._list_count[every].sum()) * self.words * 4 * short.size
        return out_r, out_d, probed, read

    def _scan(
        self,
        queries: np.ndarray,
        lists: np.ndarray,
        out_r: np.ndarray,
        out_d: np.ndarray,
        bits: np.ndarray,
    ) -> None:
        """Merge the records of each query's ``lists`` into its top-k, one generation (or,
        with positioned reads, one query's buffer) at a time."""
        ip = self.metric == "ip"
        n = queries.shape[0]
        gens = self._gens  # replaced, never changed in place, by writers
        if self.io == "pread":
            for qi in range(n):
                chosen = lists[qi][lists[qi] >= 0]
                buffers = [
                    gens[int(self._list_gen[c])].read(
                        int(self._list_start[c]), int(self._list_count[c])
                    )
                    for c in chosen.tolist()
                    if self._list_count[c]
                ]
                if not buffers:
                    continue
                buf = np.concatenate(buffers) if len(buffers) > 1 else buffers[0]
                sizes = np.array([b.shape[0] for b in buffers], dtype=np.int64)
                starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
                scan_lists(
                    queries[qi : qi + 1],
                    buf,
                    buf.view(np.int64),
                    np.array([0, sizes.size]),
                    starts,
                    sizes,
                    self.dim,
                    self._version,
                    bits,
                    ip,
                    out_r[qi : qi + 1],
                    out_d[qi : qi + 1],
                )
            return
        numbers = self._list_gen[np.maximum(lists, 0)]
        for number, gen in gens.items():
            mine = (lists >= 0) & (numbers == number)
            if not mine.any():
                continue
            ptr = np.concatenate([[0], np.cumsum(mine.sum(axis=1))]).astype(np.int64)
            chosen = lists[mine]
            starts = self._list_start[chosen]
            counts = self._list_count[chosen]
            scan_lists(
                queries,
                gen.records,
                gen.records_int64,
                ptr,
                starts,
                counts,
                self.dim,
                self._version,
                bits,
                ip,
                out_r,
                out_d,
            )

    def _take(self, labels: np.ndarray, width: int | None = None) -> np.ndarray:
        """The current vectors of ``labels`` (a copy), from their primary records (their
        first ``width`` coordinates: default the vectors as given)."""
        width = width or self.dim
        out = np.zeros((labels.size, width), dtype=np.float32)
        if labels.size == 0:
            return out
        place = self._places.array[labels]
        gen = place >> _GEN_SHIFT
        rec = place & ((1 << _GEN_SHIFT) - 1)
        for number in np.unique(gen).tolist():
            if number < 0:
                continue
            mine = gen == number
            out[mine] = self._gens[number].records[rec[mine], 2 : 2 + width]
        return out

    def _segments(self, rows: np.ndarray) -> list[Segment]:
        with self._rw.read():  # a split may be moving rows
            vectors = self._take(rows)
        return [(vectors, np.arange(rows.size, dtype=np.int64), None)]

    def get(self, labels: np.ndarray) -> np.ndarray:
        with self._rw.read():  # a split may be moving rows
            return self._take(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self._live

    # -- statistics -------------------------------------------------------------------------
    def resident_bytes(self) -> int:
        """What stays in memory: the centroid graph (with its vectors), the list table, and a
        version per row (two bytes)."""
        with self._rw.read():
            return self._resident_bytes()

    def _resident_bytes(self) -> int:
        table = (
            self._list_gen.nbytes
            + self._list_start.nbytes
            + self._list_count.nbytes
            + self._list_capacity.nbytes
        )
        return int(self._graph.memory_bytes() + table + self._version.nbytes)

    def stats(self) -> dict[str, Any]:
        """Sizes, counters, the splits pending and the background failures (the last one's
        step and exception class; its traceback is in the log)."""
        with self._rw.read():  # one consistent state
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        live_lists = np.flatnonzero(
            self._graph.alive()[: self._lists] & (self._list_count[: self._lists] > 0)
        )
        sizes = self._list_count[live_lists]
        records = int(sizes.sum())
        searches = max(self._counters["searches"], 1)
        raw = self._live * self.dim * 4
        resident = self._resident_bytes()
        return {
            "kind": self.kind,
            "live": self._live,
            **self.params(),
            "lists": int(live_lists.size),
            "list_sizes": {
                "min": int(sizes.min()) if sizes.size else 0,
                "median": float(np.median(sizes)) if sizes.size else 0.0,
                "max": int(sizes.max()) if sizes.size else 0,
            },
            "replication_factor": round(records / max(self._live, 1), 3),
            "raw_vector_bytes": raw,
            "resident_bytes": resident,
            "resident_ratio": round(resident / max(raw, 1), 4),
            "memory_bytes": resident,
            "posting_file_bytes": sum(g.used * g.record_bytes for g in self._gens.values()),
            "row_map_bytes_on_disk": int(self._places.size * 8),
            "generations": len(self._gens),
            "garbage_records": int(self._garbage),
            "splits": self._counters["splits"],
            "reassigned": self._counters["reassigned"],
            "relocations": self._counters["relocations"],
            "dropped_replicas": self._counters["dropped_replicas"],
            "pending_splits": len(self._pending),
            "background_failures": self._failures,
            "last_background_failure": self._last_failure,
            "searches": self._counters["searches"],
            "lists_probed_per_query": self._counters["lists_probed"] / searches,
            "bytes_read_per_query": self._counters["bytes_read"] / searches,
        }

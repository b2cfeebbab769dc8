"""SPANN (Chen et al., NeurIPS 2021): posting lists on disk, their centroids in memory.

Only the centroids, their HNSW graph and two bytes per row (a version, with a deleted flag)
stay in memory; the vectors live in posting lists in files, one file per *generation*, each
list one contiguous run of records (an int64 key, label | version << 48, then the vector), read
with one positioned read or one memory-mapped range per probe.

The paper's three ideas, each with its parameter:

1. Hierarchical balanced clustering (:func:`cluster_lists`): balanced k-means
   (:func:`~shardwalk.index.kmeans.balanced_kmeans`), recursively, until every list holds at
   most ``max_list_size // 2`` primary vectors (room for replicas), so there are many small
   lists (on the order of 5-10% of the points become centroids).
2. Boundary replication (:func:`assign_lists`): a vector also joins every list whose centroid
   is within (1 + ``eps_build``) x its nearest centroid's distance, at most ``max_replicas``,
   skipping a centroid closer to one already chosen than to the vector (the RNG rule). A
   list past ``max_list_size`` keeps its closest records (as SPTAG's posting limit does).
3. Query-aware pruning: a query probes list i only if d(q, c_i) <= (1 + ``eps_search``) x
   d(q, c_1), at most ``max_probes`` lists; replicas are merged before the top-k.

Updates follow SPFresh (Xu et al., SOSP 2023): an insert appends to the tails of its lists
(searchable at once); a list past ``max_list_size`` is split in two by 2-means in a background
thread, so a row stays searchable throughout.

Versions make moved and replaced copies stale without rewriting them; deletes are tombstones.
Splits, relocations and :meth:`SpannIndex.compact` drop stale records.

Concurrency: searches hold the readers/writer lock ``_rw`` shared for their whole run; every
change a search can see (the centroid graph, the list table, versions, the row map, the live
count) is *published* under it exclusively, in one step per write. The slow parts run before:
the k-means, the graph searches that place vectors, and the writes of new records (past the
tail a list's table entry ends at, or into a fresh run that no entry names yet), so a search
sees the index before or after a write or a split, never between (a list's new centroid with
its old postings, a row's new version before its new record). A write that fails before its
publication leaves the index as it was. Splits and garbage collection run on one worker
thread, started by whoever queues a split when none is running; it decides to stop under the
same lock a producer queues under, so no queued split is left behind. A failed split is
logged (ERROR) and counted in :meth:`SpannIndex.stats` (``background_failures``); the list
stays as it was, searchable, and is tried again by the next worker run. Writers never see it.

The build streams: it clusters a sample (``train_size``), then assigns and writes the lists a
chunk at a time, so ``add`` on a memory-mapped array builds an index larger than memory (a
cluster job calls :func:`cluster_lists`, :func:`assign_lists` and :func:`write_lists` on its
share of the vectors).

Files: new lists go to the open generation (in ``workdir``, a temporary directory by default);
:meth:`SpannIndex.save` seals it and hard-links (or copies) every generation into the snapshot
directory, so a saved generation is never written again: a list of a sealed generation that
grows is copied to the open one. The label -> primary record map is a memory-mapped file too.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import weakref
from collections import deque
from contextlib import nullcontext
from typing import Any

import numpy as np
from shardwalk.index._kernels import (
    SPANN_LABEL_BITS,
    rng_replicas,
    scan_lists,
    scan_lists_serial,
)
from shardwalk.index.base import IndexMetric, SearchResult, empty_result, read_meta, write_meta
from shardwalk.index.hnsw import HNSWGraph, _grow
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.store import IndexStore, Segment

from shardwalk import _fs
from shardwalk._files import save_npy
from shardwalk._sync import RWLock
from shardwalk._threads import ThreadBudget, default_budget, delegated
from shardwalk.errors import CorruptionError

__all__ = ["SpannIndex", "assign_lists", "cluster_lists", "write_lists"]

log = logging.getLogger(__name__)

LABEL_MASK = (1 << SPANN_LABEL_BITS) - 1
_GEN_SHIFT = 40  # a record's place: generation << 40 | record number
_NOWHERE = -1
_CHUNK = 65536  # vectors per step of a streamed build
# smaller clustering nodes run on one thread: faiss's OpenMP team costs more than it saves
# there (and waits long for its threads on a busy machine)
_PARALLEL_NODE = 200_000
_DEAD = np.uint16(0x8000)  # version flag: deleted (no record's version has it)
_VERSIONS = 0x7FFF  # versions 1..32767, then 1 again
_NO_SCOPE = np.zeros(0, dtype=np.uint8)
_GARBAGE_MIN = 1 << 16  # dead records the files may hold before a split run compacts them


def record_words(dim: int) -> int:
    """float32 slots per record: the key (two), the vector, a pad to keep keys 8-aligned."""
    return 2 + dim + (dim & 1)


def make_records(labels: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Records (n, words) float32 of these labels, versions and vectors."""
    n, dim = vectors.shape
    out = np.zeros((n, record_words(dim)), dtype=np.float32)
    keys = labels.astype(np.int64) | (versions.astype(np.int64) << SPANN_LABEL_BITS)
    out.view(np.int64)[:, 0] = keys
    out[:, 2 : 2 + dim] = vectors
    return out


class _Generation:
    """One posting file: records appended at its end while open, read-only once sealed."""

    def __init__(self, number: int, path: str, words: int, records: int, *, sealed: bool):
        self.number = number
        self.path = path
        self.words = words
        self.sealed = sealed
        self.used = records  # records allocated (the file's content)
        self.fd = os.open(path, os.O_RDONLY if sealed else os.O_RDWR | os.O_CREAT, 0o644)
        self.capacity = 0
        self.f32 = np.zeros((0, words), dtype=np.float32)
        self.i64 = np.zeros((0, words // 2), dtype=np.int64)
        self._map(records)

    @property
    def record_bytes(self) -> int:
        return self.words * 4

    def _map(self, capacity: int) -> None:
        """Map ``capacity`` records (open files grow sparsely first). Old views stay valid."""
        if not self.sealed:
            os.ftruncate(self.fd, capacity * self.record_bytes)
        self.capacity = capacity
        if capacity == 0:
            return
        raw = np.memmap(
            self.path,
            dtype=np.float32,
            mode="r" if self.sealed else "r+",
            shape=(capacity, self.words),
        )
        self.f32 = raw.view(np.ndarray)  # plain arrays for numba (the mapping stays alive)
        self.i64 = self.f32.view(np.int64)

    def allocate(self, records: int) -> int:
        """Room for ``records`` at the end; returns where it starts."""
        assert not self.sealed
        start = self.used
        if start + records > self.capacity:
            self._map(max(start + records, 2 * self.capacity, 4096))
        self.used += records
        return start

    def write(self, start: int, records: np.ndarray) -> None:
        data = np.ascontiguousarray(records, dtype=np.float32)
        _fs.pwrite(self.fd, data.tobytes(), start * self.record_bytes)

    def read(self, start: int, count: int) -> np.ndarray:
        """Records [start, start + count): one positioned read."""
        raw = os.pread(self.fd, count * self.record_bytes, start * self.record_bytes)
        if len(raw) != count * self.record_bytes:
            raise CorruptionError(
                f"posting file {self.path!r} ends inside a list (records {start}-"
                f"{start + count}); it is truncated: restore the data directory from a backup"
            )
        return np.frombuffer(raw, dtype=np.float32).reshape(count, self.words)

    def seal(self) -> None:
        """Cut to the records used, fsync, and reopen read-only."""
        if self.sealed:
            return
        _fs.truncate(self.fd, self.used * self.record_bytes)
        _fs.fsync(self.fd)
        os.close(self.fd)
        self.sealed = True
        self.fd = os.open(self.path, os.O_RDONLY)
        self._map(self.used)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Where:
    """label -> its primary record's place, an int64 memory-mapped file (on disk, not in the
    resident set; the OS caches the pages a workload touches)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = 0
        self.array = np.zeros(0, dtype=np.int64)

    def reserve(self, size: int) -> None:
        if size <= self.size:
            return
        size = max(size, 2 * self.size, 1 << 16)
        os.ftruncate(self.fd, size * 8)
        fresh = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(size,))
        fresh[self.size :] = _NOWHERE
        self.array, self.size = fresh, size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Staged:
    """Records already written for some lists, not yet visible: the list-table entries, row
    places and counts that :meth:`SpannIndex._publish` makes visible in one step."""

    __slots__ = ("entries", "garbage", "moves", "relocations")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, int, int]] = []  # list, gen, start, count, cap
        self.moves: list[tuple[np.ndarray, np.ndarray]] = []  # labels -> their primary's place
        self.garbage = 0  # records of runs the entries leave behind
        self.relocations = 0


def _cleanup(
    workdir: str,
    generations: list[_Generation],
    where: _Where,
    mutex: threading.RLock,
    closed: threading.Event,
) -> None:
    # at interpreter exit the split worker (a daemon) may still run: it stops before its next
    # split, and the files close once it has finished the one it runs, never under it
    closed.set()
    held = mutex.acquire(timeout=60)
    try:
        for gen in generations:
            gen.close()
        where.close()
        _fs.rmtree(workdir)
    finally:
        if held:
            mutex.release()


# -- build steps (plain functions: a cluster job calls them on its share) ---------------------
def cluster_lists(
    vectors: np.ndarray,
    *,
    leaf: int,
    fanout: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Hierarchical balanced k-means: split ``vectors`` recursively (at most ``fanout`` parts
    per level, as many levels as needed) until every part holds at most ``leaf`` vectors;
    returns the parts' centroids (lists, dim) float32 (unit length for ip)."""
    out: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    stack = [np.arange(vectors.shape[0])]
    while stack:
        members = stack.pop()
        size = members.size
        if size == 0:
            continue
        sub = vectors[members]
        if size <= leaf + leaf // 8:  # k-means' 5% balance slack must not halve a part
            centroid = sub.mean(axis=0)
            out.append(centroid.astype(np.float32))
            continue
        leaves = math.ceil(size / leaf)
        levels = max(1, math.ceil(math.log(leaves) / math.log(fanout) - 1e-9))
        parts = min(fanout, max(2, math.ceil(leaves ** (1.0 / levels) - 1e-9)))
        with delegated(1) if size < _PARALLEL_NODE else nullcontext():
            _, assignment = balanced_kmeans(
                sub, parts, seed=int(rng.integers(1 << 31)), iterations=10
            )
        if np.unique(assignment).size == 1:  # identical vectors: cut in equal pieces
            assignment = (np.arange(size) % parts).astype(np.int32)
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(parts + 1))
        for p in range(parts):
            stack.append(members[order[bounds[p] : bounds[p + 1]]])
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def assign_lists(
    vectors: np.ndarray,
    graph: HNSWGraph,
    centroids: np.ndarray,
    *,
    eps_build: float,
    max_replicas: int,
    ef: int = 32,
) -> np.ndarray:
    """Each vector's posting lists, nearest first (n, max_replicas) int32 padded -1: its
    nearest centroid plus the boundary replicas (see :func:`rng_replicas`), candidates from
    the centroid graph."""
    want = min(len(graph), max(2 * max_replicas, 16))
    candidates, _ = graph.search(vectors, want, max(ef, want))
    return rng_replicas(vectors, candidates.astype(np.int64), centroids, eps_build, max_replicas)


def write_lists(
    gen: _Generation,
    labels: np.ndarray,
    versions: np.ndarray,
    vectors: np.ndarray,
    targets: np.ndarray,
    lists: int,
    *,
    max_list_size: int,
    centroids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Write the posting lists of ``targets`` (the lists of each vector, primary first) into
    ``gen``, list after list, a chunk of lists at a time (memory: one chunk of records). A
    list past ``max_list_size`` keeps its primaries and its closest replicas.

    Returns (starts, counts) by list, each vector's primary record number, and the replicas
    dropped by the limit.
    """
    n = targets.shape[0]
    row, flat, rank = _pairs(targets)
    # closest first within each list: primaries (rank 0) before replicas, then by distance
    dist = np.empty(flat.size, dtype=np.float32)
    for a in range(0, flat.size, _CHUNK):
        dist[a : a + _CHUNK] = _sq(vectors[row[a : a + _CHUNK]] - centroids[flat[a : a + _CHUNK]])
    order = np.lexsort((dist, rank > 0, flat))
    row, flat, rank = row[order], flat[order], rank[order]
    counts = np.bincount(flat, minlength=lists).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(flat.size) - np.repeat(first, counts)
    # a list past the limit keeps max(limit, its primaries)
    primaries = np.bincount(flat[rank == 0], minlength=lists)
    limit = np.maximum(primaries, max_list_size)
    kept = position < limit[flat]
    dropped = int(flat.size - kept.sum())
    row, flat, rank = row[kept], flat[kept], rank[kept]
    counts = np.bincount(flat, minlength=lists).astype(np.int64)
    start = gen.allocate(int(flat.size))
    starts = start + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    primary = np.full(n, _NOWHERE, dtype=np.int64)
    at = np.arange(flat.size) + start
    primary[row[rank == 0]] = at[rank == 0]
    for a in range(0, flat.size, _CHUNK):
        rows = row[a : a + _CHUNK]
        gen.write(start + a, make_records(labels[rows], versions[rows], vectors[rows]))
    return starts, counts, primary, dropped


class SpannIndex:
    """Disk-resident approximate nearest neighbours: centroids and their HNSW graph in memory,
    vectors in posting lists on disk (see the module docstring).

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
        The centroid graph's HNSW parameters; ``ef`` (also per search; raised to the lists
        fetched) defaults to twice the lists fetched, at least 32.
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
    a split runs (each sees the index before or after it: see the module docstring); writes
    wait for each other.
    """

    kind = "spann"
    exact = False
    scoped = True  # filtered and tenant searches score only rows in scope (see search)
    applies_scope = False  # see VectorIndex
    scoped_how = (
        "probe the posting lists nearest the query (more, the smaller the scope), scoring only "
        "the rows in scope"
    )

    def __init__(
        self,
        *,
        dim: int,
        metric: IndexMetric,
        max_list_size: int = 64,
        eps_build: float = 0.3,
        max_replicas: int = 8,
        eps_search: float = 0.6,
        max_probes: int = 64,
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 0,
        maintenance: str = "background",
        io: str = "mmap",
        train_size: int = 262144,
        workdir: str | None = None,
        seed: int = 0,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.dim = dim
        self.metric: IndexMetric = metric
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
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self.maintenance = maintenance
        self.io = io
        self.train_size = train_size
        self.seed = seed
        self.threads = threads
        self.budget = budget or default_budget()
        self.words = record_words(self.vdim)
        self.workdir = workdir or tempfile.mkdtemp(
            prefix="shardwalk-spann-", dir=os.environ.get("SHARDWALK_SPANN_TMPDIR")
        )
        os.makedirs(self.workdir, exist_ok=True)
        self._gens: dict[int, _Generation] = {}
        self._files: list[_Generation] = []  # every generation opened, closed with the index
        self._open: _Generation | None = None
        self._next_gen = 0
        self._where = _Where(os.path.join(self.workdir, f"where-{id(self):x}.i64"))
        self._mutex = threading.RLock()  # one writer: foreground writes, splits, saves
        self._closed = threading.Event()  # set by the finalizer: the worker stops
        weakref.finalize(
            self,
            _cleanup,
            self.workdir if workdir is None else "",
            self._files,
            self._where,
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
        self._lgen = np.zeros(0, dtype=np.int32)
        self._lstart = np.zeros(0, dtype=np.int64)
        self._lcount = np.zeros(0, dtype=np.int32)
        self._lcap = np.zeros(0, dtype=np.int32)
        self._lists = 0

    def _new_graph(self) -> HNSWGraph:
        return HNSWGraph(
            dim=self.vdim,
            metric="l2",
            m=self.m,
            ef_construction=self.ef_construction,
            seed=self.seed,
        )

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

    def params(self) -> dict[str, Any]:
        return {
            "max_list_size": self.max_list_size,
            "eps_build": self.eps_build,
            "max_replicas": self.max_replicas,
            "eps_search": self.eps_search,
            "max_probes": self.max_probes,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "maintenance": self.maintenance,
            "io": self.io,
            "train_size": self.train_size,
        }

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

    def _drop_unused_gens(self) -> None:
        """Close and remove the generations no list uses, but the open one (under the write
        lock: searches may read any generation the table names)."""
        used = set(np.unique(self._lgen[self._lcount > 0]).tolist())
        drop = [g for n, g in self._gens.items() if n not in used and g is not self._open]
        self._gens = {n: g for n, g in self._gens.items() if n in used or g is self._open}
        for gen in drop:
            gen.close()
            if os.path.dirname(gen.path) == self.workdir:
                _fs.unlink(gen.path)
            self._garbage = max(0, self._garbage - gen.used)

    # -- writes -----------------------------------------------------------------------------
    def _grow_rows(self, end: int) -> None:
        self._version = _grow(self._version, end, 0)
        self._where.reserve(end)

    def add(
        self, labels: np.ndarray, vectors: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        """Add (or replace) rows: their records are written first, then published in one
        step (a search sees all of them or none; a replaced row its old vector or its new)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
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

    def _rebuild(self, labels: np.ndarray, vectors: np.ndarray, versions: np.ndarray) -> None:
        """Build everything again from the live vectors and these (small indexes only)."""
        old, old_vectors = self._live_vectors(labels)
        self._build(
            np.concatenate([old, labels]),
            np.concatenate([old_vectors, vectors]),
            np.concatenate([self._version[old], versions]),
            fresh=(labels, versions),
        )

    def _build(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        versions: np.ndarray,
        *,
        fresh: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """The streamed build: cluster (a sample), place the centroids in the graph, assign
        and write the lists chunk by chunk into a fresh generation, then publish it all with
        the rows ``fresh`` (labels, versions) at once."""
        n = labels.size
        norm_cap = self._norm_cap
        if self.metric == "ip":
            norm_cap = float(np.sqrt((vectors**2).sum(axis=1).max()))
            vectors = self._augment(vectors, norm_cap)
        rng = np.random.default_rng(self.seed)
        sample = vectors
        if n > self.train_size:
            sample = vectors[np.sort(rng.choice(n, self.train_size, replace=False))]
        leaf = max(1, round(self.max_list_size / 2 * sample.shape[0] / n))
        centroids = cluster_lists(
            np.ascontiguousarray(sample, dtype=np.float32), leaf=leaf, seed=self.seed
        )
        graph = self._new_graph()
        graph.add(centroids)
        targets = np.concatenate(
            [
                assign_lists(
                    vectors[a : a + _CHUNK],
                    graph,
                    centroids,
                    eps_build=self.eps_build,
                    max_replicas=self.max_replicas,
                )
                for a in range(0, n, _CHUNK)
            ]
        )
        old = list(self._gens.values())
        gen = self._new_gen()
        lists = centroids.shape[0]
        starts, counts, primary, dropped = write_lists(
            gen,
            labels,
            versions,
            vectors,
            targets,
            lists,
            max_list_size=self.max_list_size,
            centroids=centroids,
        )
        with self._rw.write():
            self._write_rows(*fresh)
            self._norm_cap = norm_cap
            self._graph, self._lists = graph, lists
            self._open = gen
            self._lgen = np.full(lists, gen.number, dtype=np.int32)
            self._lstart = starts
            self._lcount = counts.astype(np.int32)
            self._lcap = self._lcount.copy()
            self._where.array[labels] = (gen.number << _GEN_SHIFT) | primary
            self._counters["dropped_replicas"] += dropped
            self._gens = {gen.number: gen}
            for g in old:
                g.close()
                if os.path.dirname(g.path) == self.workdir:
                    _fs.unlink(g.path)
            self._garbage = 0
        for lst in np.flatnonzero(counts > self.max_list_size).tolist():
            self._queue_split(lst)

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
        gen = self._gens[int(self._lgen[lst])]
        count, start, cap = int(self._lcount[lst]), int(self._lstart[lst]), int(self._lcap[lst])
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
            old = (int(self._lgen[lst]), int(self._lstart[lst]), int(self._lcap[lst]))
            staged.garbage += old[2]
        gen = self._open_gen()
        cap = max(records.shape[0] + 8, self.max_list_size + self.max_list_size // 4)
        start = gen.allocate(cap)
        gen.write(start, records)  # a run no table entry names yet: unseen
        staged.relocations += 1
        base = (gen.number << _GEN_SHIFT) | start
        kept = records if carried is None else records[:carried]
        labels = kept.view(np.int64)[:, 0] & LABEL_MASK
        moved = self._where.array[labels]
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
            self._lgen[lst], self._lstart[lst] = gen, start
            self._lcount[lst], self._lcap[lst] = count, cap
        for labels, places in staged.moves:
            self._where.array[labels] = places
        self._garbage += staged.garbage
        self._counters["relocations"] += staged.relocations
        return [lst for lst, _, _, count, _ in staged.entries if count > self.max_list_size]

    def _read_current(self, lst: int) -> np.ndarray:
        """The live, current records of list ``lst`` (stale copies and tombstones dropped)."""
        count = int(self._lcount[lst])
        if count == 0:
            return np.zeros((0, self.words), dtype=np.float32)
        records = self._gens[int(self._lgen[lst])].read(int(self._lstart[lst]), count)
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

    # -- splits (SPFresh's local rebuilds) --------------------------------------------------
    def _queue_split(self, lst: int) -> None:
        """Queue list ``lst`` to split; start the worker if none runs. Decided under the lock
        the worker stops under: either the running worker takes the list, or a new one."""
        with self._idle:
            if lst in self._queued:
                return
            self._queued.add(lst)
            self._pending.append(lst)
            if self.maintenance == "background" and self._running:
                return
            # a new run (a worker starts, or a write runs them inline): failed lists again
            for again in sorted(self._failed - self._queued):
                self._queued.add(again)
                self._pending.append(again)
            self._failed.clear()
            if self.maintenance != "background":
                return
            self._running = True
            worker = threading.Thread(target=self._work, name="spann-splits", daemon=True)
            self._worker = worker
        try:
            worker.start()
        except BaseException as exc:  # no thread: the next queued split (or wait_idle) runs it
            with self._idle:
                self._running = False
                self._idle.notify_all()
            self._report_failure("starting the split worker", exc)

    def _work(self) -> None:
        """The worker: splits until the queue is empty, and stops only if it still is under
        the lock that producers queue under."""
        try:
            while True:
                self._run_splits()
                with self._idle:
                    if not self._pending:
                        self._running = False
                        self._idle.notify_all()
                        return
        except BaseException as exc:  # _run_splits reports its own; this is the last resort
            with self._idle:
                self._running = False
                self._idle.notify_all()
            self._report_failure("the split worker", exc)

    def _report_failure(self, what: str, exc: BaseException) -> None:
        """A background step failed: logged at once (ERROR, with its traceback) and counted
        in :meth:`stats`. Nothing was published: the index is as it was before the step."""
        log.error(
            "spann index: %s failed (%s: %s); the index is as before it: a list that did not "
            "split stays searchable and is tried again by the next worker run",
            what,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        with self._idle:
            self._failures += 1
            self._last_failure = f"{what}: {type(exc).__name__}"

    def _run_splits(self) -> None:
        """Split the queued lists that still need it, then collect garbage. A failure is
        reported (see :meth:`_report_failure`), never raised: a writer never sees it."""
        while not self._closed.is_set():
            with self._idle:
                if not self._pending:
                    break
                lst = self._pending.popleft()
                self._queued.discard(lst)
            with self._mutex, delegated(1):  # small k-means and searches: one thread
                if (
                    not self._closed.is_set()
                    and lst < self._lists
                    and self._lcount[lst] > self.max_list_size
                    and self._graph.alive()[lst]
                ):
                    try:
                        self._split(lst)
                    except Exception as exc:
                        self._report_failure(f"splitting list {lst}", exc)
                        with self._idle:
                            self._failed.add(lst)
        if self._closed.is_set():  # the files are closing (the interpreter exits)
            with self._idle:
                self._pending.clear()
                self._queued.clear()
            return
        try:
            self._collect_garbage()
        except Exception as exc:
            self._report_failure("compacting the posting files", exc)

    def _collect_garbage(self) -> None:
        """Compact once relocated and split lists left more dead records in the files than
        twice the live ones (and at least ``garbage_min``): long insert runs keep the files
        within about three times their live size."""
        with self._mutex:
            live = int(self._lcount[self._live_lists()].sum())
            if self._garbage > max(2 * live, self.garbage_min):
                with delegated(1):
                    self._compact()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no split is queued or running; returns whether that happened in time.
        Splits no worker runs (inline maintenance, or no thread could start) run here. A
        failed split raises nothing: ``background_failures`` in :meth:`stats` counts it."""
        if self.maintenance == "background":
            with self._idle:
                if not self._idle.wait_for(lambda: not self._running, timeout):
                    return False
        if self.maintenance == "inline" or self._pending:
            self._run_splits()
        return True

    def _split(self, lst: int) -> None:
        """Split list ``lst`` by balanced 2-means, then reassign the vectors near it whose
        nearest centroid changed (SPFresh's LIRE). Each of the two is written, then published
        in one step: a failure before leaves the list as it was."""
        records = self._read_current(lst)
        staged = _Staged()
        if records.shape[0] <= self.max_list_size:  # garbage made it long: rewrite it short
            self._stage_list(staged, lst, records)
            with self._rw.write():
                self._publish(staged)  # (not past the limit)
            return
        vectors = np.ascontiguousarray(records[:, 2 : 2 + self.vdim])
        centroids, assignment = balanced_kmeans(vectors, 2, seed=self.seed + lst, iterations=10)
        if np.unique(assignment).size == 1:
            assignment = (np.arange(records.shape[0]) % 2).astype(np.int32)
        old_centroid = self._centroids[lst].copy()
        new = np.arange(self._graph.slots, self._graph.slots + 2)  # the halves' lists
        end = int(new[-1]) + 1
        old_place = (int(self._lgen[lst]), int(self._lstart[lst]), int(self._lcap[lst]))
        staged.garbage += old_place[2]
        for side, target in enumerate(new.tolist()):
            self._stage_list(staged, target, records[assignment == side], old_place)
        staged.entries.append((lst, old_place[0], old_place[1], 0, old_place[2]))
        # room for the halves' entries (a grown copy holds what searches see, unchanged)
        self._lgen = _grow(self._lgen, end, 0)
        self._lstart = _grow(self._lstart, end, 0)
        self._lcount = _grow(self._lcount, end, 0)
        self._lcap = _grow(self._lcap, end, 0)
        with self._rw.write():  # the swap: searches wait only for this
            added = self._graph.add(centroids)
            assert added.tolist() == new.tolist(), (added, new)
            self._graph.delete(np.array([lst]))
            overfull = self._publish(staged)
            self._lists = end
            self._counters["splits"] += 1
        try:
            self._reassign(lst, old_centroid, new, records, assignment)
        finally:  # the split is published: its halves split on, whatever the reassignment did
            for target in overfull:
                self._queue_split(target)

    def _reassign(
        self,
        lst: int,
        old_centroid: np.ndarray,
        new: np.ndarray,
        records: np.ndarray,
        assignment: np.ndarray,
    ) -> None:
        """Vectors of the split list closer to the old centroid than to their new one, and
        vectors of the nearby lists closer to a new centroid than to their own: moved when
        their lists (by the replication rule) changed."""
        dim = self.vdim
        own = self._centroids[new[assignment]]
        vectors = records[:, 2 : 2 + dim]
        suspect = _sq(vectors - old_centroid) <= _sq(vectors - own)
        cand_keys = [records.view(np.int64)[suspect, 0]]
        cand_vecs = [vectors[suspect]]
        near, _ = self._graph.search(old_centroid[None, :], min(9, len(self._graph)), 32)
        for other in near[0].tolist():
            if other < 0 or other in new.tolist():
                continue
            theirs = self._read_current(other)
            if theirs.shape[0] == 0:
                continue
            tv = theirs[:, 2 : 2 + dim]
            closer = np.minimum(
                _sq(tv - self._centroids[new[0]]), _sq(tv - self._centroids[new[1]])
            )
            moved = closer < _sq(tv - self._centroids[other])
            cand_keys.append(theirs.view(np.int64)[moved, 0])
            cand_vecs.append(tv[moved])
        keys = np.concatenate(cand_keys)
        if keys.size == 0:
            return
        labels, first = np.unique(keys & LABEL_MASK, return_index=True)
        vectors = np.ascontiguousarray(np.concatenate(cand_vecs)[first], dtype=np.float32)
        targets = self._targets(vectors)
        # a vector moves when its nearest list is not one it is in: compare with its place
        current = self._primary_lists(labels)
        # only strictly closer: with ties (duplicate vectors, whose split halves have equal
        # centroids) a vector stays, or the halves would refill one list and split forever
        here = np.where(
            current >= 0, _sq(vectors - self._centroids[np.maximum(current, 0)]), np.inf
        )
        moving = (targets[:, 0] != current) & (_sq(vectors - self._centroids[targets[:, 0]]) < here)
        if not moving.any():
            return
        labels, vectors, targets = labels[moving], vectors[moving], targets[moving]
        versions = self._next_versions(labels)
        staged = self._stage_appends(labels, versions, vectors, targets)
        with self._rw.write():
            self._version[labels] = versions
            overfull = self._publish(staged)
            self._counters["reassigned"] += int(labels.size)
        for other in overfull:
            self._queue_split(other)

    def _primary_lists(self, labels: np.ndarray) -> np.ndarray:
        """The list holding each label's primary record (-1: unknown)."""
        place = self._where.array[labels]
        live = self._live_lists()
        begin = (self._lgen[live].astype(np.int64) << _GEN_SHIFT) | self._lstart[live]
        order = np.argsort(begin)
        begin, live = begin[order], live[order]
        at = np.searchsorted(begin, place, side="right") - 1
        inside = (at >= 0) & (
            place < begin[np.maximum(at, 0)] + self._lcount[live[np.maximum(at, 0)]]
        )
        return np.where(inside, live[np.maximum(at, 0)], -1)

    def _live_lists(self) -> np.ndarray:
        """Lists with a live centroid and records."""
        return np.flatnonzero(
            self._graph.alive()[: self._lists] & (self._lcount[: self._lists] > 0)
        )

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        eps_search: float | None = None,
        max_probes: int | None = None,
        ef: int | None = None,
        allowed: np.ndarray | None = None,
        allowed_bits: np.ndarray | None = None,
        **_: Any,
    ) -> SearchResult:
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
        eps = self.eps_search if eps_search is None else float(eps_search)
        probes = self.max_probes if max_probes is None else int(max_probes)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._rw.read():
            if n == 0 or self._live == 0:
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
                ids, distances, probed, read = self._search(
                    queries, k, eps, probes, ef or self.ef, bits, matches
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
        counts = np.where(found >= 0, self._lcount[np.maximum(found, 0)], 0).astype(np.int64)
        need = np.maximum((counts * keep).sum(axis=1) / selectivity, k / selectivity)
        before = np.cumsum(counts, axis=1) - counts
        keep |= (found >= 0) & (before < need[:, None])
        return np.where(keep, found, -1)

    def _search(
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
        read = int(self._lcount[lists[lists >= 0]].sum()) * self.words * 4
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
            read += int(self._lcount[every].sum()) * self.words * 4 * short.size
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
                    gens[int(self._lgen[c])].read(int(self._lstart[c]), int(self._lcount[c]))
                    for c in chosen.tolist()
                    if self._lcount[c]
                ]
                if not buffers:
                    continue
                buf = np.concatenate(buffers) if len(buffers) > 1 else buffers[0]
                sizes = np.array([b.shape[0] for b in buffers], dtype=np.int64)
                starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
                scan_lists_serial(
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
        numbers = self._lgen[np.maximum(lists, 0)]
        for number, gen in gens.items():
            mine = (lists >= 0) & (numbers == number)
            if not mine.any():
                continue
            ptr = np.concatenate([[0], np.cumsum(mine.sum(axis=1))]).astype(np.int64)
            chosen = lists[mine]
            starts = self._lstart[chosen]
            counts = self._lcount[chosen]
            kernel = scan_lists_serial if n == 1 else scan_lists
            kernel(
                queries,
                gen.f32,
                gen.i64,
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
        place = self._where.array[labels]
        gen = place >> _GEN_SHIFT
        rec = place & ((1 << _GEN_SHIFT) - 1)
        for number in np.unique(gen).tolist():
            if number < 0:
                continue
            mine = gen == number
            out[mine] = self._gens[number].f32[rec[mine], 2 : 2 + width]
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
        table = self._lgen.nbytes + self._lstart.nbytes + self._lcount.nbytes + self._lcap.nbytes
        return int(self._graph.memory_bytes() + table + self._version.nbytes)

    def stats(self) -> dict[str, Any]:
        """Sizes, counters, the splits pending and the background failures (the last one's
        step and exception class; its traceback is in the log)."""
        with self._rw.read():  # one consistent state
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        live_lists = np.flatnonzero(
            self._graph.alive()[: self._lists] & (self._lcount[: self._lists] > 0)
        )
        sizes = self._lcount[live_lists]
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
            "row_map_bytes_on_disk": int(self._where.size * 8),
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

    # -- maintenance and persistence --------------------------------------------------------
    def compact(self) -> None:
        """Rewrite every list's current records into one new generation (stale copies and
        tombstones dropped, no slack)."""
        self.wait_idle()
        with self._mutex:
            self._compact()

    def _compact(self) -> None:
        live = self._live_lists()
        gen = self._new_gen()  # open once published: a failure before leaves the old one
        starts = np.zeros(self._lists, dtype=np.int64)
        counts = np.zeros(self._lists, dtype=np.int64)
        moves = []
        for lst in live.tolist():
            records = self._read_current(lst)
            if records.shape[0] == 0:
                continue
            start = gen.allocate(records.shape[0])
            gen.write(start, records)
            starts[lst], counts[lst] = start, records.shape[0]
            labels = records.view(np.int64)[:, 0] & LABEL_MASK
            old_lo = (int(self._lgen[lst]) << _GEN_SHIFT) | int(self._lstart[lst])
            moved = self._where.array[labels]
            mine = (moved >= old_lo) & (moved < old_lo + int(self._lcount[lst]))
            moves.append(
                (labels[mine], (gen.number << _GEN_SHIFT) | (start + np.flatnonzero(mine)))
            )
        with self._rw.write():
            self._open = gen
            for labels, places in moves:
                self._where.array[labels] = places
            self._lgen = np.full(self._lists, gen.number, dtype=np.int32)
            self._lstart = starts
            self._lcount, self._lcap = counts.astype(np.int32), counts.astype(np.int32)
            self._garbage = 0
            self._drop_unused_gens()
            self._garbage = 0

    def save(self, directory: str) -> None:
        """Seal the open generation and link (or copy) every generation into ``directory``
        with the centroid graph, the list table and the row arrays."""
        self.wait_idle()
        with self._mutex:
            records = int(self._lcount[self._live_lists()].sum())
            if self._garbage > max(records, 4096):
                self._compact()
            if self._open is not None:
                _fs.fsync(self._open.fd)
            with self._rw.write():  # searches may use the files: switch them alone
                self._drop_unused_gens()
                if self._open is not None:
                    self._open.seal()
                    self._open = None
            gens = []
            for number, gen in sorted(self._gens.items()):
                name = f"postings-{number:06d}.bin"
                target = os.path.join(directory, name)
                _link_or_copy(gen, target)
                if os.path.dirname(gen.path) == self.workdir:
                    _fs.unlink(gen.path)
                gen.path = target  # sealed: the snapshot's copy is the one to link next time
                gens.append({"number": number, "file": name, "records": gen.used})
            graph_dir = os.path.join(directory, "centroids")
            os.makedirs(graph_dir, exist_ok=True)
            self._graph.save(graph_dir)
            end = self._labels_end()
            arrays = {
                "lists.npy": np.stack(
                    [
                        self._lgen[: self._lists].astype(np.int64),
                        self._lstart[: self._lists],
                        self._lcount[: self._lists].astype(np.int64),
                        self._lcap[: self._lists].astype(np.int64),
                    ]
                ),
                "version.npy": self._version[:end],
                "where.npy": np.asarray(self._where.array[:end]),
            }
            for name, array in arrays.items():
                save_npy(os.path.join(directory, name), array)
            write_meta(
                directory,
                {
                    "kind": self.kind,
                    "dim": self.dim,
                    "metric": self.metric,
                    "seed": self.seed,
                    "engine": "faiss",
                    **self.params(),
                    "generations": gens,
                    "next_generation": self._next_gen,
                    "record_words": self.words,
                    "norm_cap": self._norm_cap,
                    "counters": self._counters,
                },
            )

    def _labels_end(self) -> int:
        written = np.flatnonzero(self._version)
        return int(written[-1]) + 1 if written.size else 0

    @classmethod
    def load(
        cls, directory: str, *, threads: int | None = None, budget: ThreadBudget | None = None
    ) -> SpannIndex:
        meta = read_meta(directory, cls.kind)
        params = {
            name: meta[name]
            for name in (
                "max_list_size",
                "eps_build",
                "max_replicas",
                "eps_search",
                "max_probes",
                "m",
                "ef_construction",
                "ef",
                "maintenance",
                "io",
                "train_size",
            )
        }
        index = cls(
            dim=meta["dim"],
            metric=meta["metric"],
            seed=meta["seed"],
            threads=threads,
            budget=budget,
            **params,
        )
        if meta["record_words"] != index.words:
            raise CorruptionError(
                f"spann index in {directory!r}: records of {meta['record_words']} words; "
                f"dimension {index.dim} ({index.metric}) needs {index.words}"
            )
        lists = np.load(os.path.join(directory, "lists.npy"))
        for entry in meta["generations"]:
            path = os.path.join(directory, entry["file"])
            expect = entry["records"] * index.words * 4
            size = os.path.getsize(path) if os.path.exists(path) else -1
            if size != expect:
                raise CorruptionError(
                    f"posting file {path!r} has {max(size, 0)} bytes; the index expects {expect} "
                    f"({entry['records']} records): it is "
                    f"{'missing' if size < 0 else 'truncated' if size < expect else 'too long'}; "
                    "restore the data directory from a backup"
                )
            gen = _Generation(entry["number"], path, index.words, entry["records"], sealed=True)
            index._gens[gen.number] = gen
            index._files.append(gen)
        index._next_gen = meta["next_generation"]
        index._norm_cap = float(meta["norm_cap"])
        index._graph = HNSWGraph.load(
            os.path.join(directory, "centroids"), metric="l2", seed=index.seed
        )
        index._lists = lists.shape[1]
        index._lgen = lists[0].astype(np.int32)
        index._lstart = lists[1]
        index._lcount, index._lcap = lists[2].astype(np.int32), lists[3].astype(np.int32)
        ends = index._lstart + index._lcount
        for number, gen in index._gens.items():
            mine = (index._lgen == number) & (index._lcount > 0)
            if mine.any() and int(ends[mine].max()) > gen.used:
                raise CorruptionError(
                    f"posting file {gen.path!r} holds {gen.used} records; its lists reach "
                    f"{int(ends[mine].max())}: restore the data directory from a backup"
                )
        index._version = np.load(os.path.join(directory, "version.npy"))
        index._live = int(np.count_nonzero(index._alive()))
        where = np.load(os.path.join(directory, "where.npy"))
        index._where.reserve(where.size)
        index._where.array[: where.size] = where
        index._counters.update(meta.get("counters", {}))
        return index


def _pairs(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vector, list, rank) of each of ``targets``' entries (rank 0: the primary list)."""
    n, width = targets.shape
    row = np.repeat(np.arange(n), width)
    flat = targets.reshape(-1).astype(np.int64)
    rank = np.tile(np.arange(width), n)
    keep = flat >= 0
    return row[keep], flat[keep], rank[keep]


def _link_or_copy(gen: _Generation, target: str) -> None:
    if os.path.abspath(gen.path) == os.path.abspath(target):
        return
    try:
        _fs.link(gen.path, target)
    except OSError:  # another file system (the workdir in /dev/shm, say): an fsynced copy
        _fs.copyfile(gen.path, target)


def _sq(diff: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", diff, diff)

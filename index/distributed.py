"""Ray for the index: batch jobs (tasks with thread budgets) and serving (partitions held by
Ray actors behind one index).

With :mod:`shardwalk.walks.distributed`, the only modules of shardwalk that import ray
(``pip install 'shardwalk[ray]'``). :class:`RayExecutor` runs a job's parallel steps as Ray
tasks (``map``: results in order; ``stream``: results as they come, for the scan and assign
passes over Parquet blocks, which each task reads itself), with the same interface as the
thread executor of ``shardwalk.jobs``, so one pipeline serves both and gives the same bytes.
The scans were Ray Data pipelines (``read_parquet`` + ``map_batches``) until issue 27: on 2
cores their fixed costs (a streaming executor, read tasks apart from map tasks) made a pass
over 500K x 128 vectors take 12-40 s where tasks reading their own row groups take 2-5 s.

Every task runs with one CPU and ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS`` set through
``runtime_env`` (numba reads its variable at import, so it must be in the worker's environment
before anything imports numba; Ray sets only ``OMP_NUM_THREADS``). Tasks are retried when their
worker dies (``max_retries``); they write their files atomically and deterministically, so a
retry writes the same bytes. Large inputs go to the object store once (:meth:`put`); a task
reads them there zero-copy (read-only).

Serving (:class:`RayHost`, :class:`RayPartitionedIndex`, used by ``Engine.open(path,
ray=...)``): a partitioned index whose partitions live in Ray actors, a few per actor. The
driver keeps what routes a call (the centroids, each label's partition, the staging index until
the partitions are trained); the actors keep the graphs, and with them the only copy of the
vectors. A search goes to every actor at once; each runs the collection's planner over its own
partitions, with the tenant scope and filter applied there (a packed bitmap of the rows in
scope, put in the object store once and cached by the actors), and the top-k lists are merged
exactly. Writes go to the actors owning the partitions; a checkpoint has each actor write its
partitions' files into the snapshot, so what Ray serves is the format any engine reads.

A local Ray binds to 127.0.0.1 only (``ray.init(_node_ip_address="127.0.0.1")``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from shardwalk.index.base import SearchResult, empty_result, merge_topk, read_meta
from shardwalk.index.bulk import Executor
from shardwalk.index.hnsw import is_hnswlib_dir
from shardwalk.index.hnsw_graph import _grow
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.partitioned import PartitionedIndex, hnswlib_share_error
from shardwalk.index.planner import Scope, plan_search
from shardwalk.index.store import RowStore, Segment

from shardwalk._threads import ThreadBudget, available_cores, rss_bytes, thread_env
from shardwalk.errors import FailedPreconditionError, ShardwalkError, UnavailableError
from shardwalk.validation import check_int

if TYPE_CHECKING:
    from shardwalk.index.base import SearchOptions

__all__ = [
    "RayExecutor",
    "RayHost",
    "RayPartitionedIndex",
    "connect",
    "disconnect",
    "loopback_only",
    "thread_env",
]

MAX_RETRIES = 3  # tasks rerun after their worker or node died (Ray's default, made explicit)
# how long joining a cluster waits for its address to answer (seconds); the variable overrides it
CONNECT_TIMEOUT = 10.0
CONNECT_TIMEOUT_ENV = "SHARDWALK_RAY_CONNECT_TIMEOUT"
_CANCEL_WAIT = 30.0  # seconds a stopped job waits for its cancelled tasks to end
log = logging.getLogger(__name__)


def connect(
    address: str | None = None, num_workers: int | None = None, *, timeout: float | None = None
) -> bool:
    """Join the Ray cluster at ``address``, or start a local one bound to 127.0.0.1 with
    ``num_workers`` CPUs (default: the cores of this process). Returns whether this call started
    (or joined) Ray, so the caller knows to :func:`disconnect`; an initialised Ray is kept.

    Before joining, the address is probed (a TCP connection to it) for up to ``timeout``
    seconds (default: ``$SHARDWALK_RAY_CONNECT_TIMEOUT``, else 10): an address that does not
    answer is a ``FailedPreconditionError`` then, where ``ray.init`` would retry for minutes."""
    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if address is not None and address != "auto" and _host_port(address) != _host_port(joined):
            raise FailedPreconditionError(
                f"this process is connected to the Ray cluster at {joined}, not {address!r}; "
                "a process joins one cluster at a time (ray.shutdown() first, or pass that "
                "address)"
            )
        return False
    if address is not None and address != "auto":
        _probe(address, connect_timeout(timeout))
    try:
        if address is not None:
            if address.split(":")[0] in ("127.0.0.1", "localhost"):
                loopback_only()  # the driver joins as 127.0.0.1 too
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            loopback_only()
            ray.init(
                address="local",  # a new local Ray, never one another process started here
                _node_ip_address="127.0.0.1",
                num_cpus=num_workers or available_cores(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise FailedPreconditionError(
            f"could not start or join {where}: {exc}; check the address (ray status) or run "
            "without Ray"
        ) from exc
    return True


def connect_timeout(timeout: float | None = None) -> float:
    """The probe's wait: ``timeout``, else ``$SHARDWALK_RAY_CONNECT_TIMEOUT``, else 10 s."""
    where = "timeout"
    if timeout is None:
        text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
        if not text:
            return CONNECT_TIMEOUT
        where = f"${CONNECT_TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            timeout = math.nan
    if isinstance(timeout, bool) or not (
        isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0
    ):
        raise FailedPreconditionError(
            f"{where} is how long joining a Ray cluster waits for its address to answer: a "
            f"positive number of seconds; got {timeout!r}"
        )
    return float(timeout)


def _probe(address: str, timeout: float) -> None:
    """A TCP connection to the cluster's address within ``timeout`` seconds, or a clear error
    (``ray.init`` retries an address that does not answer for minutes, printing warnings)."""
    host, port = _host_port(address)
    try:
        number = int(port)
    except ValueError:
        return  # no port: Ray's own default applies and Ray reports what it finds
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise FailedPreconditionError(
            f"the Ray cluster at {address!r} does not answer ({reason} within {timeout:g} s); "
            f"check the address (`ray status` on the head node prints it) and that the cluster "
            f"is up, set {CONNECT_TIMEOUT_ENV} to wait longer, or run without Ray"
        ) from None


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return ("127.0.0.1" if host == "localhost" else host), port


def loopback_only() -> None:
    """Make a Ray started from here bind to 127.0.0.1: ``ray.init`` replaces a loopback
    ``_node_ip_address`` by the machine's outward address unless Ray believes it cannot form
    a cluster, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` tells it (read at import, hence
    the constant too; the processes Ray starts inherit the variable)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def disconnect(started: bool) -> None:
    if started:
        ray.shutdown()


def _unwrap(exc: BaseException) -> BaseException:
    """The shardwalk error a task raised, without Ray's wrapper (it pickles unchanged)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, ShardwalkError) else exc


@ray.remote(max_retries=MAX_RETRIES)
def _call(fn: Callable[..., Any], item: Any, shared: dict[str, Any]) -> Any:
    # values put by RayExecutor.put: read from the object store (zero-copy, read-only)
    resolved = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in shared.items()}
    return fn(item, **resolved)


@ray.remote(max_retries=MAX_RETRIES)
def _warm(fn: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """``fn()`` (what a worker pays once, at its first block), then the worker's pid, the CPU
    seconds its process spent so far (starting Python and Ray's worker, the imports, ``fn``)
    and its node, yielded once. Run with a backpressure of one object, the task stays at its
    ``yield`` (holding its process) until the driver takes that value."""
    fn()
    yield {"pid": os.getpid(), "cpu_seconds": time.process_time(),
           "node": ray.get_runtime_context().get_node_id()}  # fmt: skip


class RayExecutor(Executor):
    """Runs ``fn(item, **shared)`` for each item as Ray tasks, at most ``workers`` at once
    (``map``: results in order; ``stream``: as they end; see
    :class:`~shardwalk.index.bulk.Executor`).

    ``cpus`` per task (default 1) also sets the task's numba and OpenMP threads.
    """

    kind = "ray"

    def __init__(self, workers: int | None = None, *, cpus: int = 1) -> None:
        total = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or total, total))
        self.cpus = cpus
        self.object_store_bytes = 0  # put by the driver, and returned by tasks to it

    def put(self, value: Any) -> Any:
        self.object_store_bytes += _nbytes(value)
        return ray.put(value)

    def warm(self, fn: Callable[[], Any]) -> Callable[[], list[dict[str, Any]]]:
        """Start the job's workers now, while the driver reads the input's footers: a task per
        worker (spread over the nodes) that runs ``fn()``, what a worker pays once (imports,
        first use of the readers); returns the wait for them, which returns each worker's pid,
        node and start-up CPU seconds, one per worker process.

        Each warm task holds its process until every one has started (a Ray generator that
        yields once, with a backpressure of one object: it waits at its ``yield`` until the
        driver takes the value, and the driver takes none before all are there). Without the
        hold a worker done with its warm-up could take another's (Ray reuses an idle worker
        before it starts one), so a process would start only during the scan (issue 27)."""
        # each an ObjectRefGenerator (ray's annotations say an ObjectRef of the iterator)
        gens: list[Any] = [
            _warm.options(
                num_cpus=self.cpus,
                runtime_env=thread_env(self.cpus),
                scheduling_strategy="SPREAD",
                _generator_backpressure_num_objects=1,
            ).remote(fn)
            for _ in range(self.workers)
        ]

        def wait() -> list[dict[str, Any]]:
            # every warm task at its yield at once: each has a process of its own
            ray.wait(gens, num_returns=len(gens))
            try:
                return [ray.get(next(gen)) for gen in gens]
            except ray.exceptions.RayTaskError as exc:
                raise _unwrap(exc) from None

        return wait

    @contextmanager
    def _calls(
        self, fn: Callable[..., Any], name: str, shared: dict[str, Any]
    ) -> Iterator[Callable[[Any], Any]]:
        shared_ref = ray.put(shared)  # once for every task (ObjectRefs inside resolve there)
        remote = _call.options(
            num_cpus=self.cpus, runtime_env=thread_env(self.cpus), name=f"shardwalk-{name}"
        )
        yield lambda item: remote.remote(fn, item, shared_ref)

    def _first_done(self, pending: list[Any]) -> list[Any]:
        return ray.wait(pending, num_returns=1)[0]

    def _result(self, handle: Any) -> Any:
        try:
            value = ray.get(handle)
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None
        self.object_store_bytes += _nbytes(value)
        return value

    def _stop(self, pending: list[Any]) -> None:
        for ref in pending:
            ray.cancel(ref, force=True)
        # ended before the caller cleans up: a task still running could write into a
        # directory the caller is removing
        ray.wait(pending, num_returns=len(pending), timeout=_CANCEL_WAIT)


def _nbytes(value: Any) -> int:
    """Bytes of the arrays and tables in ``value`` (what crosses the object store)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (pa.Table, pa.RecordBatch, pa.Array)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


# -- serving: partitions in actors -----------------------------------------------------------


class RayHost:
    """Keeps partitioned indexes in Ray actors (``Engine.open(path, ray=...)``); the other kinds
    stay in the caller's process.

    Joins the cluster at ``address``, or the Ray this process is connected to, or starts a local
    one bound to 127.0.0.1 (stopped by :meth:`close`). ``actors``: per index (default one per
    CPU of the cluster, at most one per partition).
    """

    kinds = frozenset({"partitioned"})

    def __init__(self, address: str | None = None, *, actors: int | None = None) -> None:
        self.actors = None if actors is None else check_int("ray_actors", actors, minimum=1)
        self._started = connect(address)

    def make(self, kind: str, *, dim: int, metric: Any, budget: Any, **params: Any) -> Any:
        return RayPartitionedIndex(
            dim=dim, metric=metric, budget=budget, actors=self.actors, **params
        )

    def load(self, directory: str, *, budget: Any) -> Any:
        return RayPartitionedIndex.load(directory, budget=budget, actors=self.actors)

    def close(self) -> None:
        disconnect(self._started)
        self._started = False


class _PartitionGroup:
    """A Ray actor's share of a partitioned index: some of its partitions (the others empty),
    searched with the collection's planner over the actor's own rows."""

    def __init__(
        self,
        owned: list[int],
        *,
        directory: str | None = None,
        centroids: np.ndarray | None = None,
        arguments: dict[str, Any] | None = None,
        threads: int = 1,
    ) -> None:
        budget = ThreadBudget(threads)
        if directory is not None:
            self.index = PartitionedIndex.load(directory, budget=budget, only=owned)
        else:
            assert centroids is not None and arguments is not None
            self.index = PartitionedIndex.placed(centroids, budget=budget, **arguments)
        self.owned = owned
        self._scopes: OrderedDict[str, Scope] = OrderedDict()  # by the bitmap's object id
        self._lock = threading.Lock()

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def add(self, labels: np.ndarray, vectors: np.ndarray, partitions: np.ndarray) -> None:
        with self._lock:
            self._scopes.clear()
        self.index.add_placed(labels, vectors, partitions)

    def delete(self, labels: np.ndarray) -> None:
        with self._lock:
            self._scopes.clear()
        self.index.delete(labels)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: dict[str, Any],
        scope: list[Any] | None,
        rows: int,
    ) -> tuple[np.ndarray, np.ndarray, str]:
        local = None if scope is None else self._scope(scope[0], rows)
        found, report = plan_search(self.index, self.index.store, queries, k, local, params)
        return found.ids, found.distances, report.path

    def _scope(self, ref: Any, rows: int) -> Scope:
        """The rows in scope that this actor holds (from the collection's packed bitmap)."""
        key = ref.hex()
        with self._lock:
            scope = self._scopes.get(key)
        if scope is not None:
            return scope
        allowed = np.unpackbits(ray.get(ref), count=rows, bitorder="little").view(bool)
        part_of = self.index._part_of
        mine = np.zeros(rows, dtype=bool)
        end = min(rows, part_of.shape[0])
        mine[:end] = part_of[:end] >= 0
        allowed &= mine
        matches = np.flatnonzero(allowed)
        scope = Scope(
            matches=matches,
            allowed=allowed,
            tenant_rows=None,
            visible=int(matches.size),
            estimated=int(matches.size),
        )
        with self._lock:
            self._scopes[key] = scope
            while len(self._scopes) > 16:
                self._scopes.popitem(last=False)
        return scope

    def get(self, labels: np.ndarray) -> np.ndarray:
        return self.index.store.take(labels)

    def labels(self) -> np.ndarray:
        """The live labels this actor holds."""
        return np.flatnonzero(self.index._part_of >= 0)

    def save(self, directory: str) -> None:
        self.index.save_parts(directory, self.owned)

    def stats(self) -> dict[str, Any]:
        parts = self.index._parts
        return {
            **self.where(),
            "partitions": self.owned,
            "partition_sizes": [len(parts[p]) for p in self.owned],
            "memory_bytes": sum(parts[p].memory_bytes() for p in self.owned),
            "rss_bytes": rss_bytes(),
            "threads": self.index.budget.threads,
        }


_Group = ray.remote(max_restarts=0)(_PartitionGroup)


class _ActorStore(RowStore):
    """Vectors by row, fetched from the actors that hold them."""

    def __init__(self, index: RayPartitionedIndex) -> None:
        self.dim = index.dim
        self._index = index

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._index._take(np.asarray(rows, dtype=np.int64))

    def segments(self, rows: np.ndarray) -> list[Segment]:
        raise FailedPreconditionError(
            "the vectors of this collection live in Ray actors: they are scanned there "
            "(search), or fetched (get), never read in place"
        )


class RayPartitionedIndex(PartitionedIndex):
    """A :class:`PartitionedIndex` whose partitions live in Ray actors (see the module's
    docstring). Same parameters, plus ``actors`` (default: one per CPU of the cluster, at most
    one per partition); each actor runs with ``threads`` = the cluster's CPUs / actors, and
    reserves no CPU in Ray's accounting (it serves, and a compaction builds new actors beside
    the old ones).

    An actor that dies (or whose node is lost) is started again, on another node if there is
    one, from the last checkpoint; the writes since are then replayed into it from
    :attr:`recover_vectors` (the collection's write-ahead log), and the read that found it dead
    runs again. Without that source (or when it fails) calls raise
    :class:`UnavailableError`, and reopening the engine replays the log onto new actors.
    """

    applies_scope = True

    def __init__(self, *, actors: int | None = None, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.store = _ActorStore(self)
        self._want = actors
        self._actors: list[Any] = []
        self._owned: list[list[int]] = []  # by actor: its partitions
        self._group_of = np.zeros(0, dtype=np.int64)  # by partition: its actor
        self._where: list[dict[str, Any]] = []  # by actor: node id, pid
        self._live = 0
        self._saved: str | None = None  # the last index saved or loaded (what restarts read)
        self._dirty = True  # written since then
        # labels -> their vectors, for the writes since the last save (set by the collection)
        self.recover_vectors: Callable[[np.ndarray], np.ndarray] | None = None
        self._refs: OrderedDict[int, tuple[np.ndarray, Any]] = OrderedDict()
        self._refs_lock = threading.Lock()
        self._restart_lock = threading.Lock()

    # -- actors -----------------------------------------------------------------------------
    def _spawn(self, **source: Any) -> None:
        """Start the actors, each loading its partitions from ``source`` (a saved index's
        ``directory``, or the ``centroids`` and ``arguments`` of an empty trained one)."""
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(self.partitions, self._want or cpus))
        self._group_of = np.arange(self.partitions) % count
        self._owned = [np.flatnonzero(self._group_of == a).tolist() for a in range(count)]
        self._threads = max(1, cpus // count)
        self._source_args = source
        self._actors = [self._start(a) for a in range(count)]
        self._where = self._gather([actor.where.remote() for actor in self._actors])

    def _start(self, a: int, avoid: str | None = None) -> Any:
        """Start actor ``a`` on node ``a`` mod the live nodes (not on ``avoid``, a node that
        just lost an actor, while there is another)."""
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        nodes = [n for n in nodes if n != avoid] or nodes
        return _Group.options(
            num_cpus=0,
            max_concurrency=8,
            runtime_env=thread_env(self._threads),
            # actor a on node a mod nodes (a soft affinity put both actors of a two-node
            # cluster on one node here)
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[a % len(nodes)], soft=False),
        ).remote(self._owned[a], threads=self._threads, **self._source_args)

    def _arguments(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "metric": self.metric,
            "train_size": self.train_size,
            "seed": self.seed,
            **self.params(),
        }

    def _gather(self, refs: list[Any], *, retry: Callable[[], list[Any]] | None = None) -> list:
        """``ray.get(refs)``, with the shardwalk error a task raised; an actor that died is
        restarted from the last checkpoint and ``retry`` called once, when nothing was written
        since (else :class:`UnavailableError`)."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            raise _unwrap(exc) from None
        except ray.exceptions.RayActorError as exc:
            with self._restart_lock:  # concurrent searches restart each actor once
                dead = [a for a, actor in enumerate(self._actors) if not _alive(actor)]
                if retry is None or (self._dirty and self.recover_vectors is None):
                    raise self._unavailable(dead, exc) from exc
                if dead:
                    log.warning(
                        "a Ray actor serving partitions %s died (%s); starting it again from %s",
                        [self._owned[a] for a in dead],
                        type(exc).__name__,
                        self._saved or "empty partitions",
                    )
                self._source_args = (
                    {"directory": self._saved}
                    if self._saved is not None
                    else {"centroids": self._centroids, "arguments": self._arguments()}
                )
                for a in dead:
                    self._restart(a)
                    if self._dirty:
                        self._catch_up(a, exc)
            try:
                return ray.get(retry())
            except ray.exceptions.RayActorError as again:
                raise self._unavailable(dead, again) from again

    def _restart(self, a: int) -> None:
        """Start actor ``a`` again, elsewhere than the node it was lost on when there is
        another (Ray may still list a dead node as alive for a while: a few attempts)."""
        lost = self._where[a].get("node")
        for attempt in range(3):
            actor = self._start(a, avoid=lost)
            try:
                self._where[a] = ray.get(actor.where.remote(), timeout=300)
                self._actors[a] = actor
                return
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                ray.kill(actor, no_restart=True)
                if attempt == 2:
                    raise self._unavailable([a], exc) from exc
                time.sleep(1.0)

    def _catch_up(self, a: int, exc: BaseException) -> None:
        """Bring a restarted actor from the last checkpoint to now: drop the labels deleted
        since, add those written since (their vectors from :attr:`recover_vectors`)."""
        actor = self._actors[a]
        want = np.flatnonzero(np.isin(self._part_of, self._owned[a]))
        try:
            have = ray.get(actor.labels.remote())
            gone = np.setdiff1d(have, want, assume_unique=True)
            new = np.setdiff1d(want, have, assume_unique=True)
            if gone.size:
                ray.get(actor.delete.remote(gone))
            if new.size:
                assert self.recover_vectors is not None
                vectors = self.recover_vectors(new)
                ray.get(actor.add.remote(new, vectors, self._part_of[new]))
        except (ShardwalkError, ray.exceptions.RayError) as failed:
            ray.kill(actor, no_restart=True)
            raise self._unavailable([a], exc) from failed

    def _unavailable(self, dead: list[int], exc: BaseException) -> UnavailableError:
        parts = sorted(p for a in dead for p in self._owned[a]) or "?"
        hint = (
            "it is started again on the next call"
            if not self._dirty or self.recover_vectors is not None
            else "writes since the last checkpoint are in the collection's write-ahead log "
            "only: reopen the engine (Engine.open replays the log onto new actors)"
        )
        return UnavailableError(
            f"the Ray actor serving partitions {parts} is gone ({type(exc).__name__}); {hint}"
        )

    def close(self) -> None:
        """Stop the actors (their partitions are wherever the last checkpoint wrote them)."""
        actors, self._actors = self._actors, []
        if ray.is_initialized():
            for actor in actors:
                ray.kill(actor, no_restart=True)

    # -- writes -----------------------------------------------------------------------------
    def _train(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        centroids, assignment = balanced_kmeans(
            vectors, self.partitions, metric=self.metric, seed=self.seed
        )
        self._set_centroids(centroids)
        self._staging = None
        self._spawn(centroids=centroids, arguments=self._arguments())
        self._add_to_parts(labels, vectors, assignment)

    def _add_to_parts(
        self, labels: np.ndarray, vectors: np.ndarray, assignment: np.ndarray
    ) -> None:
        self.delete(labels)  # a label added again: its old vector is a tombstone
        self._dirty = True
        self._part_of = _grow(self._part_of, int(labels.max()) + 1, -1)
        owner = self._group_of[assignment]
        calls = [
            self._actors[a].add.remote(labels[rows], vectors[rows], assignment[rows])
            for a in range(len(self._actors))
            if (rows := np.flatnonzero(owner == a)).size
        ]
        self._gather(calls)
        self._part_of[labels] = assignment
        self._live += labels.size

    def _delete_placed(self, labels: np.ndarray) -> None:
        labels = labels[self._part_of[labels] >= 0]
        if not labels.size:
            return
        self._dirty = True
        owner = self._group_of[self._part_of[labels]]
        self._gather(
            [self._actors[a].delete.remote(labels[owner == a]) for a in np.unique(owner).tolist()]
        )
        self._part_of[labels] = -1
        self._live -= labels.size

    # -- reads ------------------------------------------------------------------------------
    def _search(self, queries: np.ndarray, k: int, options: SearchOptions) -> SearchResult:
        """Top-k over every actor's partitions, merged exactly; ``scope`` (the planner's)
        applied in the actors. ``explain`` counts the paths the actors took."""
        n = queries.shape[0]
        chosen = (("ef", options.get("ef")), ("nprobe", options.get("nprobe")))
        params = {key: v for key, v in chosen if v is not None}
        scope = options.get("scope")
        if self._staging is not None:
            staging = self._staging
            found, report = plan_search(staging, staging.store, queries, k, scope, {})
            return SearchResult(found.ids, found.distances, explain={f"staging {report.path}": 1})
        if self._live == 0:
            return empty_result(n, k)
        bitmap = None if scope is None else [self._bitmap(scope)]
        rows = 0 if scope is None else int(scope.allowed.shape[0])

        def submit() -> list[Any]:
            return [actor.search.remote(queries, k, params, bitmap, rows) for actor in self._actors]

        answers = self._gather(submit(), retry=submit)
        merged = merge_topk(
            np.concatenate([ids for ids, _, _ in answers], axis=1),
            np.concatenate([distances for _, distances, _ in answers], axis=1),
            k,
        )
        paths = Counter(f"actors {path}" for _, _, path in answers)
        return SearchResult(merged.ids, merged.distances, explain=dict(paths))

    def _bitmap(self, scope: Scope) -> Any:
        """The scope's packed bitmap in the object store (put once per scope: the collection
        caches a scope's arrays, so the same array is the same scope)."""
        bits = scope.allowed_bits
        if bits is None:
            bits = np.packbits(scope.allowed, bitorder="little")
        with self._refs_lock:
            found = self._refs.get(id(bits))
            if found is not None and found[0] is bits:
                return found[1]
        ref = ray.put(bits)
        with self._refs_lock:
            self._refs[id(bits)] = (bits, ref)  # the array kept: its id is not reused
            while len(self._refs) > 16:
                self._refs.popitem(last=False)
        return ref

    def _take(self, rows: np.ndarray) -> np.ndarray:
        if self._staging is not None:
            return self._staging.get(rows)
        out = np.zeros((rows.size, self.dim), dtype=np.float32)
        owner = self._group_of[self._part_of[rows]]
        which = [np.flatnonzero(owner == a) for a in range(len(self._actors))]

        def submit() -> list[Any]:
            return [self._actors[a].get.remote(rows[w]) for a, w in enumerate(which) if w.size]

        for w, vectors in zip([w for w in which if w.size], self._gather(submit(), retry=submit)):
            out[w] = vectors
        return out

    def __len__(self) -> int:
        return len(self._staging) if self._staging is not None else self._live

    def stats(self) -> dict[str, Any]:
        if self._staging is not None:
            return {**super().stats(), "ray": {"actors": []}}

        def submit() -> list[Any]:
            return [actor.stats.remote() for actor in self._actors]

        actors = self._gather(submit(), retry=submit)
        sizes = [0] * self.partitions
        for info in actors:
            for p, size in zip(info["partitions"], info["partition_sizes"]):
                sizes[p] = size
        return {
            "kind": self.kind,
            "trained": True,
            "live": self._live,
            **self.params(),
            "partition_sizes": sizes,
            "memory_bytes": sum(info["memory_bytes"] for info in actors) + self._part_of.nbytes,
            "ray": {"actors": actors},
        }

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        if self._staging is not None:
            super().save(directory)
            return
        directory = os.path.abspath(directory)
        self._gather([actor.save.remote(directory) for actor in self._actors])
        self.save_layout(directory, self._centroids, self._part_of[: self._labels_end()])
        self._saved, self._dirty = directory, False

    @classmethod
    def load(  # type: ignore[override]
        cls, directory: str, *, budget: Any = None, actors: int | None = None, **_: Any
    ) -> RayPartitionedIndex:
        """Start the actors of a saved index, each reading its partitions' files itself (the
        driver reads only the centroids and each label's partition)."""
        directory = os.path.abspath(directory)
        meta = read_meta(directory, cls.kind)
        index = cls.from_meta(meta, budget=budget)
        assert isinstance(index, RayPartitionedIndex)
        index._want = actors
        if not meta["trained"]:
            index._staging = PartitionedIndex.load(directory, budget=budget)._staging
            return index
        parts = [os.path.join(directory, f"part-{p:04d}") for p in range(index.partitions)]
        if any(is_hnswlib_dir(d) for d in parts):
            raise hnswlib_share_error(directory)
        index._staging = None
        index._set_centroids(np.load(os.path.join(directory, "centroids.npy")))
        index._part_of = np.load(os.path.join(directory, "part_of.npy")).astype(np.int32)
        index._live = int(np.count_nonzero(index._part_of >= 0))
        index._spawn(directory=directory)
        index._saved, index._dirty = directory, False
        return index


def _alive(actor: Any) -> bool:
    try:
        ray.get(actor.where.remote(), timeout=30)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False

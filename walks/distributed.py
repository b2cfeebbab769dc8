"""Monte Carlo fingerprints on Ray (``shardwalk.jobs.build_fingerprints``).

With :mod:`shardwalk.index.distributed`, the only modules that import ray; the caller has
connected to Ray already.

Replicated mode (:func:`fingerprints_replicated`): the CSR (and alias tables) go to the object
store once; tasks take contiguous ranges of sources and run the embedded builder's kernels on
them (read-only, zero-copy views of the shared arrays). Walk ``w`` of source ``u`` draws from
the counter stream ``(seed, u, w)``, so a row depends on nothing but its source: the rows of
any split, concatenated in order, are byte for byte the embedded store's. Tasks run with
``NUMBA_NUM_THREADS`` set to their CPUs through ``runtime_env`` (numba reads it at import), and
are retried when their worker dies (the retry computes the same rows).

Sharded mode (:func:`fingerprints_sharded`), for graphs one worker cannot hold: shard actors
own node ranges and run a compiled round kernel (``kernels.sharded.shard_round``); walkers that leave
a shard travel to its owner in batches, and the driver merges the shards' rows.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import ray
from shardwalk.walks.fingerprints import BuildParams, FingerprintStore, _Walker
from shardwalk.walks.graph import CSRGraph
from shardwalk.walks.kernels.bitmap import node_bitmap
from shardwalk.walks.kernels.rng import walk_key
from shardwalk.walks.kernels.sharded import (
    count_group_rows,
    merge_rows,
    scatter_group_rows,
    shard_round,
    shard_rows,
)
from shardwalk.walks.kernels.walks import compact_fingerprints

from shardwalk._progress import Progress, Stage, check_progress
from shardwalk._threads import peak_rss_bytes, thread_env
from shardwalk.errors import InvalidArgumentError, ShardwalkError

if TYPE_CHECKING:
    from shardwalk.walks.fingerprints import FingerprintOptions
    from typing_extensions import Unpack

__all__ = ["fingerprints_replicated", "fingerprints_sharded"]

MAX_RETRIES = 3


class _SharedGraph:
    """What :class:`_Walker` reads of a graph, from the object store's (read-only) arrays."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        self.indptr = arrays["indptr"]
        self.indices = arrays["indices"]
        self._alias = (arrays["alias_prob"], arrays["alias_idx"])
        self.weighted = bool(arrays["weighted"])
        self.num_nodes = int(self.indptr.shape[0] - 1)

    def alias(self) -> tuple[np.ndarray, np.ndarray]:
        return self._alias


@ray.remote(max_retries=MAX_RETRIES)
def _rows(
    arrays: dict[str, Any],
    sources: np.ndarray,
    walks: int,
    alpha: float,
    seed: int,
    mode: int,
    top_k: int,
    block: int,
) -> dict[str, Any]:
    """Fingerprint rows of ``sources`` (in order), in blocks of ``block`` sources."""
    t0 = time.perf_counter()
    walker = _Walker(_SharedGraph(arrays), alpha, seed, mode)  # type: ignore[arg-type]
    blocks = (sources[a : a + block] for a in range(0, sources.size, block))
    indptr, nodes, counts, cut, visits = walker.rows(blocks, walks, top_k)
    return {
        "indptr": indptr,
        "nodes": nodes,
        "counts": counts,
        "cut": cut,
        "visits": visits,
        "seconds": time.perf_counter() - t0,
        "threads": numba.get_num_threads(),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _concat(parts: list[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """One CSR from the rows of consecutive source ranges (counts widen as the embedded
    builder's do: uint16 only when every count fits)."""
    offsets, base = [np.zeros(1, np.int64)], 0
    for part in parts:
        offsets.append(part["indptr"][1:] + base)
        base += int(part["indptr"][-1])
    indptr = np.concatenate(offsets)
    nodes = np.concatenate([p["nodes"] for p in parts])
    counts = np.concatenate([p["counts"] for p in parts])
    cut = np.concatenate([p["cut"] for p in parts])
    return indptr, nodes, counts, cut


def _run(
    shared: Any,
    ranges: list[np.ndarray],
    walks: int,
    options: dict[str, Any],
    args: tuple,
    workers: int,
    stage: Stage,
) -> list[dict[str, Any]]:
    """The rows of each range, at most ``workers`` tasks at once, in the order of ``ranges``;
    ``stage`` advances by a range's walks as its task ends."""
    results: list[Any] = [None] * len(ranges)
    pending: dict[Any, int] = {}
    todo = 0
    try:
        while todo < len(ranges) or pending:
            while todo < len(ranges) and len(pending) < workers:
                ref = _rows.options(**options).remote(shared, ranges[todo], walks, *args)
                pending[ref] = todo
                todo += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                results[i] = ray.get(ref)
                stage.advance(ranges[i].size * walks)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, ShardwalkError) else exc) from None
    finally:  # a task failed, or the progress callback raised: the others stop
        for ref in pending:
            ray.cancel(ref, force=True)
    stage.finish()
    return results


def fingerprints_replicated(
    graph: CSRGraph,
    *,
    workers: int = 2,
    cpus_per_task: int = 1,
    tasks_per_worker: int = 4,
    block_size: int = 1 << 16,
    progress: Progress | None = None,
    **options: Unpack[FingerprintOptions],
) -> FingerprintStore:
    """The store :func:`shardwalk.walks.build_fingerprints` builds, built on Ray tasks
    (byte-identical for the same parameters). ``stats`` adds ``tasks``, ``workers``,
    ``object_store_bytes`` and the workers' ``peak_rss_bytes``. ``progress`` as there, as
    each task ends."""
    p = BuildParams.check(graph, **options)
    progress = check_progress(progress)
    t0 = time.perf_counter()
    n = graph.num_nodes
    a_prob, a_idx = graph.alias()
    arrays = {
        "indptr": np.ascontiguousarray(graph.indptr),
        "indices": np.ascontiguousarray(graph.indices),
        "alias_prob": a_prob,
        "alias_idx": a_idx,
        "weighted": graph.weighted,
    }
    shared = ray.put(arrays)  # once: every task maps the same pages
    put_bytes = sum(int(a.nbytes) for a in arrays.values() if isinstance(a, np.ndarray))
    task_options = {
        "num_cpus": cpus_per_task,
        "runtime_env": thread_env(cpus_per_task),
        "name": "shardwalk-fingerprint_rows",
    }
    pieces = max(1, workers * tasks_per_worker)
    bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
    ranges = [np.arange(a, b, dtype=np.int64) for a, b in itertools.pairwise(bounds) if b > a]
    args = (p.alpha, p.seed, p.mode, p.top_k, block_size)
    walked = Stage(progress, "walks", n * p.walks)
    parts = _run(shared, ranges, p.walks, task_options, args, workers, walked)
    fp_indptr, nodes, counts, cut = _concat(parts)
    total_visits = sum(int(part["visits"]) for part in parts)
    hub_rows: dict[str, Any] = {}
    if p.hubs.size:
        hub_ranges = [c for c in np.array_split(p.hubs, min(pieces, p.hubs.size)) if c.size]
        hub_args = (p.alpha, p.seed, p.mode, 0, block_size)  # hub rows are never truncated
        walked = Stage(progress, "hub walks", p.hubs.size * p.hub_walks)
        hub_parts = _run(shared, hub_ranges, p.hub_walks, task_options, hub_args, workers, walked)
        hub_rows = p.hub_rows(*_concat(hub_parts)[:3])
        total_visits += sum(int(part["visits"]) for part in hub_parts)
        parts = parts + hub_parts
    returned = sum(
        int(part[key].nbytes) for part in parts for key in ("indptr", "nodes", "counts", "cut")
    )
    return p.store(
        graph, (fp_indptr, nodes, counts), cut, hub_rows, total_visits,
        time.perf_counter() - t0, threads=workers * cpus_per_task, mode="replicated",
        workers=workers, tasks=len(parts),
        task_seconds=sum(float(part["seconds"]) for part in parts),
        object_store_bytes=put_bytes + returned,
        peak_rss_bytes=max(int(part["peak_rss_bytes"]) for part in parts),
    )  # fmt: skip


# -- sharded mode ---------------------------------------------------------------------------------
def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: what the object store gives for large arrays (small ones arrive as
    writable copies), so a kernel compiles and caches one specialization for both."""
    view = a.view()
    view.flags.writeable = False
    return view


class _ShardState:
    """The out-edges of one range of nodes (and of every split node), and the visits recorded
    by the walkers it moved: one log per round, grouped by source."""

    def __init__(
        self, part: dict[str, Any], hub_part: dict[str, Any], bounds: np.ndarray, shard: int,
        n: int, alpha: float, mode: int, seed: int,
    ) -> None:  # fmt: skip
        self.bounds, self.shard = bounds, shard
        self.lo, self.hi = int(bounds[shard]), int(bounds[shard + 1])
        self.n, self.alpha, self.mode, self.seed = n, alpha, mode, seed
        no_prob, no_idx = np.zeros(0, np.float32), np.zeros(0, np.int32)
        self.hubs = _read_only(hub_part["hubs"])
        self.scratch = np.zeros(self.hi - self.lo + self.hubs.size, np.uint32)
        self.tables = tuple(
            _read_only(a) if isinstance(a, np.ndarray) else a
            for a in (
                part["indptr"], part["indices"], part.get("alias_prob", no_prob),
                part.get("alias_idx", no_idx), self.hubs, node_bitmap(self.hubs, n),
                hub_part["indptr"], hub_part["indices"], hub_part.get("alias_prob", no_prob),
                hub_part.get("alias_idx", no_idx), bool(part["weighted"]),
            )
        )  # fmt: skip
        self.logs: list[tuple[np.ndarray, ...]] = []
        self.visit_total = self.peak_entries = self.peak_log = self.sent = self.sent_bytes = 0
        self.step_seconds = self.rows_seconds = 0.0
        self.graph_bytes = sum(
            int(a.nbytes) for d in (part, hub_part) for a in d.values() if isinstance(a, np.ndarray)
        )

    def step(
        self, round_no: int, inject: np.ndarray, walks: int, *batches: np.ndarray
    ) -> tuple[Any, ...]:
        """One synchronous round: the walkers that arrived (and ``walks`` new walks of each of
        ``inject``'s sources in this range) walk inside the shard until they stop or step onto
        another shard's node (``kernels.sharded.shard_round``); returns one batch of (source, node,
        count) rows per destination shard, sorted by source, and the number of walkers sent."""
        t0 = time.perf_counter()
        shards = self.bounds.shape[0] - 1
        mine = inject[(inject >= self.lo) & (inject < self.hi)]
        runs = [b for b in batches if b.shape[0]]
        if mine.size:
            runs.append(np.stack([mine, mine, np.full(mine.size, walks, np.int64)], 1))
        offsets = np.zeros(len(runs) + 1, np.int64)
        np.cumsum([b.shape[0] for b in runs], out=offsets[1:])
        entries = np.concatenate(runs) if runs else np.zeros((0, 3), np.int64)
        key = np.uint64(walk_key(self.seed, self.shard, round_no))  # a stream a round
        g_src, g_ptr, locs, counts, out, dest, visits = shard_round(
            entries, offsets, self.lo, self.hi, *self.tables, self.bounds, self.alpha,
            self.mode, key, self.scratch,
        )  # fmt: skip
        if g_src.size:
            self.logs.append((g_src, g_ptr, locs, counts))
        sent = int(out[:, 2].sum())
        self.visit_total += int(visits)
        self.sent += sent
        self.sent_bytes += int(out.nbytes)
        self.peak_entries = max(self.peak_entries, int(entries.shape[0]))
        self.peak_log = max(self.peak_log, sum(int(log[2].size) for log in self.logs))
        batches_out = [out[dest == t] for t in range(shards)]  # a few shards: a pass each
        self.step_seconds += time.perf_counter() - t0
        return (*batches_out, sent)

    def visits(self) -> dict[str, Any]:
        """The recorded visits as a CSR over every source (rows of distinct nodes, counts
        summed), and the stats; the logs are consumed."""
        t0 = time.perf_counter()
        sizes = np.zeros(self.n + 1, np.int64)
        for g_src, g_ptr, _, _ in self.logs:
            count_group_rows(g_src, g_ptr, sizes)
        indptr = np.cumsum(sizes)
        fill = indptr[:-1].copy()
        locs = np.empty(int(indptr[-1]), np.int32)
        counts = np.empty(int(indptr[-1]), np.uint32)
        self.logs.reverse()
        while self.logs:  # each round's log freed once placed
            scatter_group_rows(*self.logs.pop(), fill, locs, counts)
        del fill
        wide = self.n - 1 > np.iinfo(np.int32).max
        nodes = np.empty(locs.size, np.int64) if wide else locs  # in place when ids fit int32
        row_ip = shard_rows(
            indptr, locs, counts, self.lo, self.hi - self.lo, self.hubs, nodes, counts
        )
        m = int(row_ip[-1])
        self.rows_seconds += time.perf_counter() - t0
        return {
            "indptr": row_ip,
            "nodes": nodes[:m],
            "counts": counts[:m],
            "visits": self.visit_total,
            "graph_bytes": self.graph_bytes,
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_entries": self.peak_entries,
            "peak_log_entries": self.peak_log,
            "walkers_sent": self.sent,
            "batch_bytes": self.sent_bytes,
            "rows_bytes": int(row_ip.nbytes + nodes[:m].nbytes + counts[:m].nbytes),
            "step_seconds": self.step_seconds,
            "rows_seconds": self.rows_seconds,
        }

    def reset(self) -> None:
        self.logs = []
        self.visit_total = self.sent_bytes = 0


_Shard: Any = ray.remote(max_restarts=0)(_ShardState)  # an actor per shard


def _slice(
    graph: CSRGraph, a_prob: np.ndarray, a_idx: np.ndarray, lo: int, hi: int
) -> dict[str, Any]:
    e0, e1 = int(graph.indptr[lo]), int(graph.indptr[hi])
    part = {
        "indptr": np.ascontiguousarray(graph.indptr[lo : hi + 1] - e0),
        "indices": np.ascontiguousarray(graph.indices[e0:e1]),
        "weighted": graph.weighted,
    }
    if graph.weighted:
        part["alias_prob"], part["alias_idx"] = a_prob[e0:e1].copy(), a_idx[e0:e1].copy()
    return part


def _hub_rows(
    graph: CSRGraph, a_prob: np.ndarray, a_idx: np.ndarray, hubs: np.ndarray
) -> dict[str, Any]:
    deg = graph.indptr[hubs + 1] - graph.indptr[hubs]
    ip = np.zeros(hubs.size + 1, np.int64)
    np.cumsum(deg, out=ip[1:])
    pos = (
        np.concatenate([np.arange(graph.indptr[h], graph.indptr[h + 1]) for h in hubs])
        if hubs.size
        else np.zeros(0, np.int64)
    )
    part = {
        "hubs": hubs,
        "indptr": ip,
        "indices": np.asarray(graph.indices[pos]),
        "weighted": graph.weighted,
    }
    if graph.weighted:
        part["alias_prob"], part["alias_idx"] = a_prob[pos], a_idx[pos]
    return part


def _split_nodes(deg: np.ndarray, workers: int, split_degree: int | None) -> np.ndarray:
    """The nodes whose walkers every shard takes a share of (each shard holds their out-edges):
    degree above ``split_degree`` (default: 8 times the mean times the shards, at least 64),
    highest first, holding at most 5% of all edges together."""
    if workers == 1 or deg.size == 0:
        return np.zeros(0, np.int64)
    limit = split_degree or max(64, int(8 * deg.mean() * workers))
    heavy = np.flatnonzero(deg > limit)
    heavy = heavy[np.argsort(-deg[heavy], kind="stable")]
    fits = np.cumsum(deg[heavy]) <= 0.05 * deg.sum()
    return np.sort(heavy[fits]).astype(np.int64)


def _walk_sharded(
    actors: list[Any], sources: np.ndarray, walks: int, waves: int, first_round: int,
    bounds: np.ndarray, split: np.ndarray, seconds: dict[str, float], stage: Stage,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int, list[dict[str, Any]]]:  # fmt: skip
    """Synchronous rounds (numbered from ``first_round``) until every walk of ``sources``
    (sorted) ended; ``sources`` start in ``waves`` waves, the next one whenever fewer than a
    wave's walkers are in flight (bounded memory). Returns the rows of ``sources`` (indptr,
    nodes, counts uint32), the rounds run and the actors' reports; adds the seconds of the
    rounds, of the shards' grouping of their visits, and of the merge to ``seconds``.
    ``stage`` reaches the walks ended after each round (started less in flight: walkers only
    stop or move, so it never falls)."""
    shards = len(actors)
    # wave k: the k-th of ``waves`` slices of every shard's sources (a wave from one shard's
    # range alone would leave the others idle in the rounds it starts: measured 3 s of 10)
    cuts = np.searchsorted(sources, bounds)
    slices = [np.array_split(sources[a:b], waves) for a, b in itertools.pairwise(cuts)]
    todo = [np.concatenate(parts) for parts in zip(*slices)]
    todo = [w for w in todo if w.size]
    budget = max(1, -(-sources.size // waves)) * walks
    inbox: list[list[Any]] = [[] for _ in range(shards)]
    live, round_no, started = 0, first_round, 0
    t0 = time.perf_counter()
    while todo or live:
        inject = np.zeros(0, np.int64)
        if todo and live < budget:
            inject = todo.pop(0)
            started += inject.size * walks
        outs = [
            actor.step.options(num_returns=shards + 1).remote(round_no, inject, walks, *inbox[s])
            for s, actor in enumerate(actors)
        ]
        inbox = [[outs[s][t] for s in range(shards)] for t in range(shards)]
        live = sum(ray.get([out[shards] for out in outs]))
        round_no += 1
        stage.reach(started - live)
    t1 = time.perf_counter()
    reports = ray.get([actor.visits.remote() for actor in actors])
    ray.get([actor.reset.remote() for actor in actors])
    t2 = time.perf_counter()
    rows = _merge_shard_rows(reports, sources, split, int(bounds[-1]))
    for phase, dt in (("rounds", t1 - t0), ("rows", t2 - t1), ("merge", time.perf_counter() - t2)):
        seconds[phase] = seconds.get(phase, 0.0) + dt
    return rows, round_no - first_round, reports


def _merge_shard_rows(
    parts: list[dict[str, Any]], sources: np.ndarray, split: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``sources`` from the shards' rows (over every source): each row the union
    of the shards' rows, counts summed (shards share only the ``split`` nodes)."""
    first = parts[0]
    ip, nodes, counts, rows = first["indptr"], first["nodes"], first["counts"], sources
    empty = {"indptr": np.zeros(n + 1, np.int64), "nodes": nodes[:0], "counts": counts[:0]}
    for part in parts[1:] or [empty]:
        size = nodes.size + part["nodes"].size
        out_nodes, out_counts = np.empty(size, nodes.dtype), np.empty(size, np.uint32)
        a_side = (rows, ip, nodes, counts)
        b_side = (sources, part["indptr"], part["nodes"], part["counts"])
        ip = merge_rows(*map(_read_only, a_side + b_side), split, n, out_nodes, out_counts)
        nodes, counts = out_nodes[: ip[-1]], out_counts[: ip[-1]]
        rows = np.arange(sources.size, dtype=np.int64)
    return ip, nodes, counts


def _top_rows(
    ip: np.ndarray, nodes: np.ndarray, counts: np.ndarray, top_k: int
) -> tuple[np.ndarray, ...]:
    """Rows keeping their ``top_k`` largest counts (0: all; ties: the earlier entry), the
    dropped counts per row, and the counts as the embedded builder types them (uint16 when
    every count fits)."""
    rows = ip.size - 1
    cut = np.zeros(rows, np.int64)
    nnz = np.diff(ip)
    if top_k and rows and int(nnz.max()) > top_k:
        out_ip = np.zeros(rows + 1, np.int64)
        np.cumsum(np.minimum(nnz, top_k), out=out_ip[1:])
        out_nodes = np.empty(int(out_ip[-1]), nodes.dtype)
        out_counts = np.empty(int(out_ip[-1]), np.uint32)
        compact_fingerprints(ip[:-1], nodes, counts, nnz, top_k, out_ip, out_nodes, out_counts, cut)
        ip, nodes, counts = out_ip, out_nodes, out_counts
    dtype = np.uint16 if counts.size == 0 or counts.max() <= np.iinfo(np.uint16).max else np.uint32
    return ip, nodes, counts.astype(dtype), cut


def fingerprints_sharded(
    graph: CSRGraph,
    *,
    workers: int = 2,
    waves: int = 8,
    split_degree: int | None = None,
    progress: Progress | None = None,
    **options: Unpack[FingerprintOptions],
) -> FingerprintStore:
    """Fingerprints from shard actors that each hold one range of nodes' out-edges (plus a copy
    of the out-edges of the few highest-degree nodes, the split nodes).

    Walks travel as counts per (source, node). Each synchronous round, a shard runs the walkers
    that arrived (and the new walks of the sources it owns) with a compiled kernel: each walks
    inside the shard, recording its visits, until it stops (probability ``alpha`` per visit) or
    steps onto a node of another shard; those are counted per (source, node) and sent, batched
    per destination shard, through the object store. A walker at a split node stays in the
    shard it is in, so every shard takes a share of those nodes' work. Sources start in
    ``waves`` waves, the next one once the walkers in flight fall below a wave's worth, so they
    stay bounded. At the end each shard groups its visits by source, and the driver merges the
    shards' rows.

    The visit counts follow the same distribution as the embedded builder's (not the same
    bytes: the random streams differ, one per (seed, shard, round), so a run is reproducible
    for a given number of workers). ``stats`` adds ``rounds``, ``split_nodes``,
    ``object_store_bytes`` (the graph put once, the walker batches, the shards' rows),
    ``phase_seconds`` (start: the actors' start; rounds; rows: the shards grouping their visits;
    merge: the driver's) and ``actors``: per shard, the graph bytes it holds (and their share
    of the whole graph), its peak RSS, the most walker entries in a round and visit entries
    held, the walkers it sent, and its busy seconds in rounds and in grouping. ``progress``
    as in :func:`shardwalk.walks.build_fingerprints`, after each round (the walks ended).
    """
    p = BuildParams.check(graph, **options)
    progress = check_progress(progress)
    t0 = time.perf_counter()
    n = graph.num_nodes
    owner = graph.shard_assignment(workers, by="range")
    bounds = np.searchsorted(owner, np.arange(workers + 1)).astype(np.int64)
    split = _split_nodes(np.diff(graph.indptr), workers, split_degree)
    if int(np.diff(bounds).max()) + split.size > np.iinfo(np.int32).max:
        raise InvalidArgumentError(
            f"a shard of {workers} holds more than 2**31 - 1 nodes; use more workers"
        )
    a_prob, a_idx = graph.alias()
    hub_part = ray.put(_hub_rows(graph, a_prob, a_idx, split))
    actors: list[Any] = []
    put_bytes = 0
    for s in range(workers):
        part = _slice(graph, a_prob, a_idx, int(bounds[s]), int(bounds[s + 1]))
        put_bytes += sum(int(a.nbytes) for a in part.values() if isinstance(a, np.ndarray))
        actors.append(  # no runtime_env: its kernels are serial, and a worker with the
            # default environment may be started already (measured: 1 s less to start)
            _Shard.options(num_cpus=1).remote(
                ray.put(part), hub_part, bounds, s, n, p.alpha, p.mode, p.seed
            )
        )
    try:
        seconds = {"start": time.perf_counter()}
        ray.get([actor.reset.remote() for actor in actors])  # started: worker, imports
        seconds["start"] = time.perf_counter() - seconds["start"]
        sources = np.arange(n, dtype=np.int64)
        walked = Stage(progress, "walks", n * p.walks)
        rows, rounds, reports = _walk_sharded(
            actors, sources, p.walks, waves, 0, bounds, split, seconds, walked
        )
        walked.finish()
        total_visits = sum(int(rep["visits"]) for rep in reports)
        moved = sum(rep["batch_bytes"] + rep["rows_bytes"] for rep in reports)
        fp_indptr, nodes, fp_counts, cut = _top_rows(*rows, p.top_k)
        del rows
        hub_rows: dict[str, Any] = {}
        if p.hubs.size:
            walked = Stage(progress, "hub walks", p.hubs.size * p.hub_walks)
            h_rows, hub_rounds, reports = _walk_sharded(  # rounds go on: fresh random streams
                actors, p.hubs, p.hub_walks, waves, rounds, bounds, split, seconds, walked
            )
            walked.finish()
            rounds += hub_rounds
            total_visits += sum(int(rep["visits"]) for rep in reports)
            moved += sum(rep["batch_bytes"] + rep["rows_bytes"] for rep in reports)
            hub_rows = p.hub_rows(*_top_rows(*h_rows, 0)[:3])
    finally:
        for actor in actors:
            ray.kill(actor)
    # what walking needs of the graph: indptr, indices and (weighted) the alias tables
    graph_bytes = int(graph.indptr.nbytes + graph.indices.nbytes + a_prob.nbytes + a_idx.nbytes)
    keep = ("peak_rss_bytes", "peak_entries", "peak_log_entries", "walkers_sent",
            "step_seconds", "rows_seconds")  # fmt: skip
    actors_report = [
        {"shard": s, "nodes": int(bounds[s + 1] - bounds[s]), "graph_bytes": rep["graph_bytes"],
         "graph_share": rep["graph_bytes"] / max(graph_bytes, 1), **{k: rep[k] for k in keep}}
        for s, rep in enumerate(reports)
    ]  # fmt: skip
    return p.store(
        graph, (fp_indptr, nodes, fp_counts), cut, hub_rows, total_visits,
        time.perf_counter() - t0, threads=workers, mode="sharded", workers=workers,
        rounds=rounds, split_nodes=int(split.size), object_store_bytes=put_bytes + moved,
        graph_bytes=graph_bytes, actors=actors_report, phase_seconds=seconds,
    )  # fmt: skip

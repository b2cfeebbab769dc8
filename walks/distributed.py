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
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import ray
from shardwalk.walks import _check
from shardwalk.walks.fingerprints import FingerprintStore, _Walker, select_hubs
from shardwalk.walks.graph import CSRGraph

from shardwalk._threads import peak_rss_bytes
from shardwalk.errors import ShardwalkError

__all__ = ["fingerprints_replicated", "fingerprints_sharded"]

MAX_RETRIES = 3


def _env(threads: int) -> dict[str, Any]:
    n = str(max(1, int(threads)))
    return {"env_vars": {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n}}


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
) -> list[dict[str, Any]]:
    """The rows of each range, at most ``workers`` tasks at once, in the order of ``ranges``."""
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
                results[pending.pop(ref)] = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        for ref in pending:
            ray.cancel(ref, force=True)
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, ShardwalkError) else exc) from None
    return results


@dataclass(frozen=True)
class _Params:
    """The checked parameters of a fingerprint build (as the embedded builder checks them)."""

    alpha: float
    walks: int
    seed: int
    rule: str
    top_k: int
    hubs: np.ndarray
    hub_walks: int

    @property
    def mode(self) -> int:
        return _check.DANGLING_MODES[self.rule]

    @classmethod
    def check(cls, graph: CSRGraph, walks_per_node: int, alpha: float, seed: int, dangling: str,
              top_k: int | None, hubs: int | str | None, hub_walks: int) -> _Params:  # fmt: skip
        return cls(
            alpha=_check.check_alpha(alpha),
            walks=_check.check_int("walks_per_node", walks_per_node, minimum=1, maximum=2**31 - 1),
            seed=_check.check_seed(seed),
            rule=_check.check_store_dangling(dangling),
            top_k=0 if top_k is None else _check.check_int("top_k", top_k, minimum=1),
            hubs=select_hubs(graph, hubs),
            hub_walks=_check.check_int("hub_walks", hub_walks, minimum=1, maximum=2**31 - 1),
        )


def _store(
    graph: CSRGraph, p: _Params, rows: tuple, cut: np.ndarray, hub_rows: dict[str, Any],
    total_visits: int, seconds: float, **stats: Any,
) -> FingerprintStore:  # fmt: skip
    """The store and its ``stats``, as the embedded builder makes them (plus ``stats``)."""
    n = graph.num_nodes
    indptr, nodes, counts = rows
    store = FingerprintStore(
        indptr=indptr, nodes=nodes, counts=counts,
        truncated=(cut * (p.alpha / p.walks)).astype(np.float32) if p.top_k else None,
        alpha=p.alpha, walks_per_node=p.walks, dangling=p.rule, seed=p.seed,
        top_k=p.top_k or None, graph_digest=graph.digest(), **hub_rows,
    )  # fmt: skip
    walks = n * p.walks + p.hubs.size * p.hub_walks
    steps = total_visits - walks  # transitions: every visit but each walk's first
    store.stats.update(
        seconds=seconds, walks=walks, hubs=int(p.hubs.size), visits=total_visits, steps=steps,
        steps_per_second=steps / seconds if seconds > 0 else float("nan"),
        nbytes=store.nbytes, entries_per_node=store.num_entries / max(n, 1), **stats,
    )  # fmt: skip
    return store


def _hub_store_rows(p: _Params, indptr: np.ndarray, nodes: np.ndarray, counts: np.ndarray) -> dict:
    return dict(hubs=p.hubs, hub_walks=p.hub_walks, hub_indptr=indptr, hub_nodes=nodes,
                hub_counts=counts)  # fmt: skip


def fingerprints_replicated(
    graph: CSRGraph,
    *,
    walks_per_node: int = 10,
    alpha: float = 0.15,
    seed: int = 0,
    dangling: str = "self_loop",
    top_k: int | None = None,
    hubs: int | str | None = None,
    hub_walks: int = 1000,
    workers: int = 2,
    cpus_per_task: int = 1,
    tasks_per_worker: int = 4,
    block_size: int = 1 << 16,
) -> FingerprintStore:
    """The store :func:`shardwalk.walks.build_fingerprints` builds, built on Ray tasks
    (byte-identical for the same parameters). ``stats`` adds ``tasks``, ``workers``,
    ``object_store_bytes`` and the workers' ``peak_rss_bytes``."""
    p = _Params.check(graph, walks_per_node, alpha, seed, dangling, top_k, hubs, hub_walks)
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
    options = {
        "num_cpus": cpus_per_task,
        "runtime_env": _env(cpus_per_task),
        "name": "shardwalk-fingerprint_rows",
    }
    pieces = max(1, workers * tasks_per_worker)
    bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
    ranges = [np.arange(a, b, dtype=np.int64) for a, b in itertools.pairwise(bounds) if b > a]
    args = (p.alpha, p.seed, p.mode, p.top_k, block_size)
    parts = _run(shared, ranges, p.walks, options, args, workers)
    fp_indptr, nodes, counts, cut = _concat(parts)
    total_visits = sum(int(part["visits"]) for part in parts)
    hub_rows: dict[str, Any] = {}
    if p.hubs.size:
        hub_ranges = [c for c in np.array_split(p.hubs, min(pieces, p.hubs.size)) if c.size]
        hub_args = (p.alpha, p.seed, p.mode, 0, block_size)  # hub rows are never truncated
        hub_parts = _run(shared, hub_ranges, p.hub_walks, options, hub_args, workers)
        hub_rows = _hub_store_rows(p, *_concat(hub_parts)[:3])
        total_visits += sum(int(part["visits"]) for part in hub_parts)
        parts = parts + hub_parts
    returned = sum(
        int(part[key].nbytes) for part in parts for key in ("indptr", "nodes", "counts", "cut")
    )
    return _store(
        graph, p, (fp_indptr, nodes, counts), cut, hub_rows, total_visits,
        time.perf_counter() - t0, threads=workers * cpus_per_task, mode="replicated",
        workers=workers, tasks=len(parts),
        task_seconds=sum(float(part["seconds"]) for part in parts),
        object_store_bytes=put_bytes + returned,
        peak_rss_bytes=max(int(part["peak_rss_bytes"]) for part in parts),
    )  # fmt: skip


# -- sharded mode ---------------------------------------------------------------------------------
def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` by binary search (np.isin compares against each element
    of a small set in turn: a pass over ``values`` per element)."""
    if sorted_set.size == 0:
        return np.zeros(values.shape[0], bool)
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def _route(
    nodes: np.ndarray, sources: np.ndarray, bounds: np.ndarray, hubs: np.ndarray
) -> np.ndarray:
    """The shard that takes walkers at ``nodes``: the owner of the node's range, or for a hub
    (whose out-edges every shard holds) the shard ``source mod S``, which spreads a hub's
    walkers over every shard."""
    shards = bounds.shape[0] - 1
    dest = np.searchsorted(bounds, nodes, side="right") - 1
    if hubs.size:
        at_hub = _member(nodes, hubs)
        dest[at_hub] = sources[at_hub] % shards
    return dest


class _ShardState:
    """The out-edges of one range of nodes (and of every hub), the walkers at those nodes in a
    round, and the visits recorded there."""

    def __init__(
        self, part: dict[str, Any], hub_part: dict[str, Any], bounds: np.ndarray, shard: int,
        n: int, alpha: float, mode: int, seed: int,
    ) -> None:  # fmt: skip
        self.part, self.hub, self.bounds, self.shard = part, hub_part, bounds, shard
        self.lo, self.hi = int(bounds[shard]), int(bounds[shard + 1])
        self.n, self.alpha, self.mode, self.seed = n, alpha, mode, seed
        self.visit_keys: list[np.ndarray] = []
        self.visit_counts: list[np.ndarray] = []
        self.compacted = self.pending = 0  # entries in the sorted run / recorded since
        self.peak_entries = 0
        self.graph_bytes = sum(
            int(a.nbytes) for d in (part, hub_part) for a in d.values() if isinstance(a, np.ndarray)
        )

    def _rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(edge start, degree, which table: 0 own / 1 hubs) of each node."""
        hubs = self.hub["hubs"]
        at_hub = _member(nodes, hubs)
        start = np.zeros(nodes.size, np.int64)
        deg = np.zeros(nodes.size, np.int64)
        own = ~at_hub
        local = nodes[own] - self.lo
        ip = self.part["indptr"]
        start[own], deg[own] = ip[local], ip[local + 1] - ip[local]
        if at_hub.any():
            h = np.searchsorted(hubs, nodes[at_hub])
            hip = self.hub["indptr"]
            start[at_hub], deg[at_hub] = hip[h], hip[h + 1] - hip[h]
        return start, deg, at_hub, own

    def step(
        self, round_no: int, inject: np.ndarray, walks: int, *batches: np.ndarray
    ) -> tuple[Any, ...]:
        """One synchronous round: record the visits of the walkers that arrived (and of the new
        walks of ``inject``'s sources in this range), stop each with probability alpha, move the
        others along out-edges (uniform or by the alias tables: together, a multinomial draw per
        (source, node) over its out-edges); returns one batch per destination shard, and the
        number of walkers sent."""
        shards = self.bounds.shape[0] - 1
        mine = inject[(inject >= self.lo) & (inject < self.hi)]
        parts = [b for b in batches if b.size] + [
            np.stack([mine, mine, np.full(mine.size, walks)], 1)
        ]
        entries = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        rng = np.random.default_rng([self.seed, self.shard, round_no])
        src, node, count = entries[:, 0], entries[:, 1], entries[:, 2]
        self.visit_keys.append(src * self.n + node)
        self.visit_counts.append(count.copy())
        self.peak_entries = max(self.peak_entries, int(src.size))
        self.pending += int(src.size)
        if self.pending > max(self.compacted, 1 << 20):  # geometric: O(total log total) overall
            self._compact()
        alive = rng.binomial(count, 1.0 - self.alpha)
        keep = alive > 0
        src, node, alive = src[keep], node[keep], alive[keep]
        start, deg, at_hub, _ = self._rows(node)
        stay = deg == 0  # dangling: self_loop keeps the walkers there, drop ends them
        out_src, out_node, out_count = [], [], []
        if self.mode != _check.DANGLING_MODES["drop"]:
            out_src.append(src[stay]), out_node.append(node[stay]), out_count.append(alive[stay])
        move = ~stay
        w_entry = np.repeat(np.flatnonzero(move), alive[move])  # one row per moving walker
        if w_entry.size:
            x = rng.random(w_entry.size)
            d = deg[w_entry]
            j = np.minimum((x * d).astype(np.int64), d - 1)
            hub_walker = at_hub[w_entry]
            targets = np.empty(w_entry.size, np.int64)  # global internal ids
            for table, mask in ((self.part, ~hub_walker), (self.hub, hub_walker)):
                if not mask.any():
                    continue
                pos = start[w_entry[mask]] + j[mask]
                if table["weighted"]:
                    coin = rng.random(pos.size)
                    alias = coin >= table["alias_prob"][pos]
                    pos[alias] = start[w_entry[mask]][alias] + table["alias_idx"][pos[alias]]
                targets[mask] = table["indices"][pos]
            keys, counts = np.unique(src[w_entry] * self.n + targets, return_counts=True)
            out_src.append(keys // self.n), out_node.append(keys % self.n), out_count.append(counts)
        if out_src:
            s, v, c = np.concatenate(out_src), np.concatenate(out_node), np.concatenate(out_count)
        else:
            s = v = c = np.zeros(0, np.int64)
        dest = _route(v, s, self.bounds, self.hub["hubs"])
        packed = np.stack([s, v, c], 1)
        out = [packed[dest == t] for t in range(shards)]  # a few shards: a pass each
        return (*out, int(c.sum()))

    def _compact(self) -> None:
        """The visits recorded so far as one sorted run of distinct keys with summed counts."""
        keys = np.concatenate(self.visit_keys)
        counts = np.concatenate(self.visit_counts)
        order = np.argsort(keys)
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        self.visit_keys = [keys[starts]]
        self.visit_counts = [np.add.reduceat(counts, starts) if starts.size else counts]
        self.compacted, self.pending = int(starts.size), 0

    def visits(self) -> dict[str, Any]:
        """The recorded visits as (source * n + node, count), sorted by key, and the stats."""
        self._compact()
        return {
            "keys": self.visit_keys[0],
            "counts": self.visit_counts[0],
            "graph_bytes": self.graph_bytes,
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_entries": self.peak_entries,
        }

    def reset(self) -> None:
        self.visit_keys, self.visit_counts = [], []
        self.compacted = self.pending = 0


_Shard = ray.remote(max_restarts=0)(_ShardState)  # an actor per shard


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
    actors: list[Any], sources: np.ndarray, walks: int, wave: int, live_budget: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Synchronous rounds until every walk of ``sources`` ended; a new wave of ``wave``
    sources starts whenever fewer than ``live_budget`` walkers are alive (bounded memory)."""
    shards = len(actors)
    inbox: list[list[Any]] = [[] for _ in range(shards)]
    next_source, live, round_no = 0, 0, 0
    while next_source < sources.size or live:
        inject = np.zeros(0, np.int64)
        if next_source < sources.size and live < live_budget:
            inject = sources[next_source : next_source + wave]
            next_source += inject.size
        outs = [
            actor.step.options(num_returns=shards + 1).remote(round_no, inject, walks, *inbox[s])
            for s, actor in enumerate(actors)
        ]
        inbox = [[outs[s][t] for s in range(shards)] for t in range(shards)]
        live = sum(ray.get([out[shards] for out in outs]))
        round_no += 1
    results = ray.get([actor.visits.remote() for actor in actors])
    ray.get([actor.reset.remote() for actor in actors])
    keys = np.concatenate([r["keys"] for r in results])
    counts = np.concatenate([r["counts"] for r in results])
    order = np.argsort(keys, kind="stable")
    return keys[order], counts[order], round_no, results  # type: ignore[return-value]


def _rows_of(keys: np.ndarray, counts: np.ndarray, n: int, sources: np.ndarray, top_k: int):
    """A CSR over ``sources`` (sorted) from (source * n + node) keys; rows keep their ``top_k``
    largest counts (0: all; ties: lower node first) and report the dropped counts."""
    src, node = keys // n, keys % n
    row = np.searchsorted(sources, src)
    cut = np.zeros(sources.size, np.int64)
    if top_k:
        order = np.lexsort((node, -counts, row))
        row, node, counts = row[order], node[order], counts[order]
        first = np.searchsorted(row, np.arange(sources.size))
        rank = np.arange(row.size) - first[row]
        dropped = rank >= top_k
        cut = np.bincount(row[dropped], weights=counts[dropped], minlength=sources.size).astype(
            np.int64
        )
        row, node, counts = row[~dropped], node[~dropped], counts[~dropped]
    indptr = np.zeros(sources.size + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=sources.size), out=indptr[1:])
    nodes = node.astype(np.int32 if n - 1 <= np.iinfo(np.int32).max else np.int64)
    dtype = np.uint16 if counts.size == 0 or counts.max() <= np.iinfo(np.uint16).max else np.uint32
    return indptr, nodes, counts.astype(dtype), cut


def fingerprints_sharded(
    graph: CSRGraph,
    *,
    walks_per_node: int = 10,
    alpha: float = 0.15,
    seed: int = 0,
    dangling: str = "self_loop",
    top_k: int | None = None,
    hubs: int | str | None = None,
    hub_walks: int = 1000,
    workers: int = 2,
    waves: int = 8,
    split_degree: int | None = None,
) -> FingerprintStore:
    """Fingerprints from shard actors that each hold one range of nodes' out-edges (plus the
    out-edges of the few highest-degree nodes, whose walkers every shard takes a share of).

    Walks travel as counts per (source, node): each synchronous round, a shard records the
    visits of the walkers at its nodes, stops each with probability ``alpha`` and moves the
    rest (a multinomial draw over the out-edges), then sends them, batched per destination
    shard, through the object store. Sources start in ``waves`` waves, the next one once the
    walkers alive fall below a wave's worth, so the walkers in flight stay bounded.

    The visit counts follow the same distribution as the embedded builder's (not the same
    bytes: the random streams differ). ``stats`` adds ``actors``: per shard, the graph bytes it
    holds (and their share of the whole graph), its peak RSS and most walker entries in a
    round, and the rounds run.
    """
    p = _Params.check(graph, walks_per_node, alpha, seed, dangling, top_k, hubs, hub_walks)
    t0 = time.perf_counter()
    n = graph.num_nodes
    owner = graph.shard_assignment(workers, by="range")
    bounds = np.searchsorted(owner, np.arange(workers + 1)).astype(np.int64)
    split = _split_nodes(np.diff(graph.indptr), workers, split_degree)
    a_prob, a_idx = graph.alias()
    hub_part = ray.put(_hub_rows(graph, a_prob, a_idx, split))
    actors = []
    put_bytes = 0
    for s in range(workers):
        part = _slice(graph, a_prob, a_idx, int(bounds[s]), int(bounds[s + 1]))
        put_bytes += sum(int(a.nbytes) for a in part.values() if isinstance(a, np.ndarray))
        actors.append(
            _Shard.options(num_cpus=1, runtime_env=_env(1)).remote(
                ray.put(part), hub_part, bounds, s, n, p.alpha, p.mode, p.seed
            )
        )
    try:
        wave = max(1, -(-n // waves))
        sources = np.arange(n, dtype=np.int64)
        keys, counts, rounds, reports = _walk_sharded(
            actors, sources, p.walks, wave, wave * p.walks
        )
        total_visits = int(counts.sum())
        fp_indptr, nodes, fp_counts, cut = _rows_of(keys, counts, n, sources, p.top_k)
        del keys, counts
        hub_rows: dict[str, Any] = {}
        if p.hubs.size:
            hub_wave = max(1, -(-p.hubs.size // waves))
            hkeys, hcounts, hub_rounds, _ = _walk_sharded(
                actors, p.hubs, p.hub_walks, hub_wave, hub_wave * p.hub_walks
            )
            rounds += hub_rounds
            total_visits += int(hcounts.sum())
            hub_rows = _hub_store_rows(p, *_rows_of(hkeys, hcounts, n, p.hubs, 0)[:3])
    finally:
        for actor in actors:
            ray.kill(actor)
    # what walking needs of the graph: indptr, indices and (weighted) the alias tables
    graph_bytes = int(graph.indptr.nbytes + graph.indices.nbytes + a_prob.nbytes + a_idx.nbytes)
    actors_report = [
        {"shard": s, "nodes": int(bounds[s + 1] - bounds[s]), "graph_bytes": rep["graph_bytes"],
         "graph_share": rep["graph_bytes"] / max(graph_bytes, 1),
         "peak_rss_bytes": rep["peak_rss_bytes"], "peak_entries": rep["peak_entries"]}
        for s, rep in enumerate(reports)
    ]  # fmt: skip
    return _store(
        graph, p, (fp_indptr, nodes, fp_counts), cut, hub_rows, total_visits,
        time.perf_counter() - t0, threads=workers, mode="sharded", workers=workers,
        rounds=rounds, split_nodes=int(split.size), object_store_bytes=put_bytes,
        graph_bytes=graph_bytes, actors=actors_report,
    )  # fmt: skip

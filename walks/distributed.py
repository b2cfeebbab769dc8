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
import resource
import time
from typing import Any

import numba
import numpy as np
import ray
from shardwalk.walks import _check
from shardwalk.walks.fingerprints import FingerprintStore, _Walker, select_hubs
from shardwalk.walks.graph import CSRGraph

from shardwalk.errors import ShardwalkError

__all__ = ["fingerprints_replicated"]

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
        "peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
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
    alpha = _check.check_alpha(alpha)
    r = _check.check_int("walks_per_node", walks_per_node, minimum=1, maximum=2**31 - 1)
    seed = _check.check_seed(seed)
    rule = _check.check_store_dangling(dangling)
    k = 0 if top_k is None else _check.check_int("top_k", top_k, minimum=1)
    hub_ids = select_hubs(graph, hubs)
    r_hub = _check.check_int("hub_walks", hub_walks, minimum=1, maximum=2**31 - 1)
    mode = _check.DANGLING_MODES[rule]

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
    args = (alpha, seed, mode, k, block_size)
    parts = _run(shared, ranges, r, options, args, workers)
    fp_indptr, nodes, counts, cut = _concat(parts)
    total_visits = sum(int(p["visits"]) for p in parts)
    truncated = (cut * (alpha / r)).astype(np.float32) if k else None
    hub_rows: dict[str, Any] = {}
    if hub_ids.size:
        hub_ranges = [c for c in np.array_split(hub_ids, min(pieces, hub_ids.size)) if c.size]
        hub_args = (alpha, seed, mode, 0, block_size)
        hub_parts = _run(shared, hub_ranges, r_hub, options, hub_args, workers)
        hub_ip, hub_nodes, hub_counts, _ = _concat(hub_parts)
        hub_rows = dict(
            hubs=hub_ids, hub_walks=r_hub, hub_indptr=hub_ip, hub_nodes=hub_nodes,
            hub_counts=hub_counts,
        )  # fmt: skip
        total_visits += sum(int(p["visits"]) for p in hub_parts)
        parts = parts + hub_parts
    seconds = time.perf_counter() - t0
    walks = n * r + hub_ids.size * r_hub
    steps = total_visits - walks
    store = FingerprintStore(
        indptr=fp_indptr,
        nodes=nodes,
        counts=counts,
        truncated=truncated,
        alpha=alpha,
        walks_per_node=r,
        dangling=rule,
        seed=seed,
        top_k=k or None,
        graph_digest=graph.digest(),
        **hub_rows,
    )
    returned = sum(
        int(p[key].nbytes) for p in parts for key in ("indptr", "nodes", "counts", "cut")
    )
    store.stats.update(
        seconds=seconds,
        walks=walks,
        hubs=int(hub_ids.size),
        visits=total_visits,
        steps=steps,
        steps_per_second=steps / seconds if seconds > 0 else float("nan"),
        threads=workers * cpus_per_task,
        nbytes=store.nbytes,
        entries_per_node=store.num_entries / max(n, 1),
        mode="replicated",
        workers=workers,
        tasks=len(parts),
        task_seconds=sum(float(p["seconds"]) for p in parts),
        object_store_bytes=put_bytes + returned,
        peak_rss_bytes=max(int(p["peak_rss_bytes"]) for p in parts),
    )
    return store

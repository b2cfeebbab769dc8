"""Fingerprints counted from kept walks: built with their walk stores (:func:`build_kept`,
:func:`build_hub_walks`) and refreshed from them after repairs (:func:`refresh_fingerprints`).

``build_kept`` gives :func:`~shardwalk.walks.fingerprints.build_fingerprints`'s store, counted
from the same walks, together with the :class:`~shardwalk.walks.walkstore.WalkStore` objects
that keep them; after graph updates repair those walks, ``refresh_fingerprints`` recounts only
the rows of the blocks repaired (and applies the hub rows' logged visits), see
``shardwalk.walks.walkstore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from shardwalk.walks.dynamic import DynamicGraph, _gather
from shardwalk.walks.kernels.repair import splice_rows
from shardwalk.walks.walkstore import WalkStore

from shardwalk._progress import Progress, Stage

if TYPE_CHECKING:
    from shardwalk.walks.fingerprints import FingerprintOptions
    from typing_extensions import Unpack

__all__ = [
    "build_hub_walks",
    "build_kept",
    "dropped_report",
    "rebuild_kept",
    "refresh_fingerprints",
    "repair_kept",
    "reselect_hub_walks",
]

_U16 = np.iinfo(np.uint16).max


def _splice(
    old_ip: np.ndarray, old_nodes: np.ndarray, old_counts: np.ndarray, rows: int,
    dirty: np.ndarray, new: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Rows 0..rows-1 of the old CSR with the ``dirty`` ones (and any past its end) from
    ``new``: (starts, lengths, nodes, counts), row i's entries at ``starts[i]`` (counts past
    the rows' entries, if any, no larger than theirs)."""
    starts_new, lens_new, nodes_new, counts_new = new
    slot = np.full(rows, -1, np.int64)
    slot[dirty] = np.arange(dirty.shape[0])
    lens = np.zeros(rows, np.int64)
    n_old = old_ip.shape[0] - 1
    lens[:n_old] = np.diff(old_ip)
    lens[dirty] = lens_new
    out_ip = np.zeros(rows + 1, np.int64)
    np.cumsum(lens, out=out_ip[1:])
    wide = counts_new.size and counts_new.max() > np.iinfo(old_counts.dtype).max
    dtype = np.uint32 if wide else old_counts.dtype
    out_nodes = np.empty(int(out_ip[-1]), old_nodes.dtype)
    out_counts = np.empty(int(out_ip[-1]), dtype)
    old_ip_ext = np.concatenate([old_ip, np.full(rows - n_old, old_ip[-1], np.int64)])
    splice_rows(
        old_ip_ext, old_nodes, old_counts.astype(dtype, copy=False), slot,
        np.asarray(starts_new, np.int64), np.asarray(lens_new, np.int64),
        nodes_new.astype(old_nodes.dtype, copy=False), counts_new, out_ip, out_nodes,
        out_counts,
    )  # fmt: skip
    return out_ip, out_nodes, out_counts


def refresh_fingerprints(
    fp: Any,
    main: WalkStore,
    hubs: WalkStore | None,
    graph: Any,
    *,
    publish: Callable[[Any], None] | None = None,
) -> Any:
    """``fp`` (a FingerprintStore) with the rows of every block repaired since the last
    refresh recounted from the walks, for ``graph`` (the current CSR).

    ``publish`` (optional) is called with the new store; the dirty marks of the rows recounted
    are cleared only after it returns (and after the store is built), so a refresh that
    raises, or whose publication does, leaves them for the next refresh."""
    from dataclasses import replace

    n = graph.num_nodes
    k = fp.top_k or 0
    dirty = np.flatnonzero(main.dirty)
    new = main.rows(dirty, n, k)
    ip, nodes, counts = _splice(fp.indptr, fp.nodes, fp.counts, n, dirty,
                                (new[0][:-1], np.diff(new[0]), new[1], new[2]))  # fmt: skip
    truncated = None
    if fp.truncated is not None:
        truncated = np.zeros(n, np.float32)
        truncated[: fp.truncated.shape[0]] = fp.truncated
        truncated[dirty] = new[3] * fp.scale
    hub_rows: dict[str, Any] = {}
    hdirty = None
    if hubs is not None and fp.hubs is not None:
        hdirty = np.flatnonzero(hubs.dirty.reshape(-1, hubs.per_row).any(axis=1))
        if hubs.logged and not hubs._recount:  # the rows changed by the visits logged
            changed, rows = hubs.delta_rows(fp.hub_indptr, fp.hub_nodes, fp.hub_counts, n)
        else:
            changed, (h_ip, h_nodes, h_counts, _) = hdirty, hubs.rows(hdirty, n)
            rows = (h_ip[:-1], np.diff(h_ip), h_nodes, h_counts)
        hip, hnodes, hcounts = _splice(
            fp.hub_indptr, fp.hub_nodes, fp.hub_counts, fp.num_hubs, changed, rows
        )
        hub_rows = dict(hub_indptr=hip, hub_nodes=hnodes, hub_counts=hcounts)
    store = replace(
        fp, indptr=ip, nodes=nodes, counts=counts, truncated=truncated,
        graph_digest=graph.digest(), stats=dict(fp.stats), **hub_rows,
    )  # fmt: skip
    if publish is not None:
        publish(store)
    main.dirty[dirty] = False  # recounted and published: only now
    if hubs is not None and hdirty is not None:
        hubs.dirty.reshape(-1, hubs.per_row)[hdirty] = False
        hubs.clear_log()
    return store


def build_kept(
    graph: DynamicGraph, *, progress: Progress | None = None, **options: Unpack[FingerprintOptions]
) -> tuple[Any, WalkStore, WalkStore | None]:
    """(FingerprintStore, walks, hub walks): :func:`build_fingerprints`'s store, counted from
    the same walks kept in walk stores (same arguments, same result, same progress stages)."""
    from shardwalk.walks.fingerprints import BuildParams

    csr = graph.merged()
    # the walk store's own limits on walks per node and per hub row
    p = BuildParams.check(csr, **options, max_walks=2**15, max_hub_walks=2**20)
    r, n = p.walks, graph.num_nodes
    t0 = time.perf_counter()
    walked = Stage(progress, "walks", n * r)
    main = WalkStore.build(graph, np.arange(n, dtype=np.int64), walks_per_node=r, alpha=p.alpha,
                           seed=p.seed, mode=p.mode,
                           done=None if progress is None else walked.advance)  # fmt: skip
    ip, nodes, counts, cut = main.rows(np.arange(n, dtype=np.int64), n, p.top_k)
    walked.finish()
    hub_store, hub_rows = build_hub_walks(
        graph, p.hubs, r, p.hub_walks, p.alpha, p.seed, p.mode, progress=progress
    )
    seconds = time.perf_counter() - t0
    main.dirty[:] = False
    walks = n * r + p.hubs.size * p.hub_walks
    steps = main.total_steps + (hub_store.total_steps if hub_store is not None else 0)
    store = p.store(csr, (ip, nodes, _narrow(counts)), cut, hub_rows, steps + walks, seconds,
                    threads=max(1, numba.get_num_threads()))  # fmt: skip
    return store, main, hub_store


def build_hub_walks(
    graph: DynamicGraph,
    hub_ids: np.ndarray,
    walks_per_node: int,
    hub_walks: int,
    alpha: float,
    seed: int,
    mode: int,
    progress: Progress | None = None,
) -> tuple[WalkStore | None, dict[str, Any]]:
    """The hub walks of :func:`build_kept` (``hub_walks`` walks per hub, kept in blocks of
    about ``walks_per_node``) and the store fields of their rows (``hubs``, ``hub_walks``,
    ``hub_indptr``, ``hub_nodes``, ``hub_counts``); (None, {}) without hubs. Also what a graph
    runs when updates move its hubs (``shardwalk.graph``)."""
    if hub_ids.size == 0:
        return None, {}
    r, r_hub = walks_per_node, hub_walks
    sub = next(d for d in range(min(r, r_hub), 0, -1) if r_hub % d == 0)  # blocks of ~R walks
    walked = Stage(progress, "hub walks", hub_ids.size * r_hub)
    hub_store = WalkStore.build(graph, hub_ids, walks_per_node=sub, alpha=alpha, seed=seed,
                                mode=mode, per_row=r_hub // sub,
                                done=None if progress is None else walked.advance)  # fmt: skip
    hip, hnodes, hcounts, _ = hub_store.rows(
        np.arange(hub_ids.size, dtype=np.int64), graph.num_nodes
    )
    walked.finish()
    hub_store.dirty[:] = False
    from shardwalk.walks.fingerprints import hub_store_rows

    hub_rows = hub_store_rows(hub_ids, r_hub, hip, hnodes, _narrow(hcounts))
    return hub_store, hub_rows


def reselect_hub_walks(
    graph: DynamicGraph, walks: WalkStore, old_ids: np.ndarray, hub_ids: np.ndarray,
    hub_walks: int,
) -> tuple[WalkStore | None, dict[str, Any]]:  # fmt: skip
    """:func:`build_hub_walks`' result for the hubs ``hub_ids`` (sorted), given ``walks``, the
    hub walks of the rows of ``old_ids`` (sorted) on ``graph``: the walks of the hubs that stay
    are kept (they are walks of this graph: repaired), only the hubs new to the set are walked
    (the builder's walks), so selecting the hubs again after updates costs the hubs that
    moved, not every hub row. Then the index and the rows are made as a build makes them."""
    if hub_ids.size == 0:
        return None, {}
    per_row, sub = walks.per_row, walks.R
    stay = np.isin(hub_ids, old_ids)
    new_ids = hub_ids[~stay]
    fresh = WalkStore.build(graph, new_ids, walks_per_node=sub, alpha=walks.alpha,
                            seed=walks.seed, mode=walks.mode, per_row=per_row)  # fmt: skip
    # the two stores' blocks as one: the old ones first, then the fresh ones
    steps = np.concatenate([walks.steps, fresh.steps.astype(walks.steps.dtype, copy=False)])
    starts = np.concatenate([walks.blk_start.astype(np.int64),
                             fresh.blk_start.astype(np.int64) + walks.used])  # fmt: skip
    lens = np.concatenate([walks.walk_len.astype(np.uint32), fresh.walk_len.astype(np.uint32)])
    dropped = np.concatenate([walks.dropped, fresh.dropped])
    # each hub's row: its old row, or its row among the fresh ones (after the old rows)
    row = np.empty(hub_ids.size, np.int64)
    row[stay] = np.searchsorted(old_ids, hub_ids[stay])
    row[~stay] = walks.num_blocks // per_row + np.arange(new_ids.size)
    blocks = (row[:, None] * per_row + np.arange(per_row)).reshape(-1)
    walk_ids = (blocks[:, None] * sub + np.arange(sub)).reshape(-1)
    walk_len = lens[walk_ids]
    block_len = walk_len.reshape(-1, sub).sum(axis=1, dtype=np.int64)
    kept = steps[_gather(starts[blocks], block_len)]
    top = int(walk_len.max(initial=0))
    store = WalkStore(
        block_src=np.repeat(hub_ids, per_row), walks_per_node=sub, alpha=walks.alpha,
        seed=walks.seed, mode=walks.mode, blk_start=np.cumsum(block_len) - block_len,
        walk_len=walk_len.astype(np.uint8 if top <= 255 else np.uint16 if top <= _U16 else np.uint32),
        dropped=dropped[walk_ids] if dropped.size else dropped, steps=kept, used=kept.shape[0],
        num_nodes=graph.num_nodes, per_row=per_row,
    )  # fmt: skip
    hip, hnodes, hcounts, _ = store.rows(np.arange(hub_ids.size, dtype=np.int64), graph.num_nodes)
    store.dirty[:] = False
    from shardwalk.walks.fingerprints import hub_store_rows

    return store, hub_store_rows(hub_ids, hub_walks, hip, hnodes, _narrow(hcounts))


def rebuild_kept(
    old: Any, graph: DynamicGraph
) -> tuple[Any, WalkStore, WalkStore | None, dict[str, Any]]:
    """(FingerprintStore, walks, hub walks, report): the kept walks and fingerprints ``old``
    (a FingerprintStore) built anew on ``graph``'s current edges with the options they were
    built with (hubs selected again by the same rule); accuracy='s choices and the record of
    the edges changed since they were made carry over (see ``Graph.rebuild_ratio``). The
    report is shaped as :meth:`WalkStore.repair`'s, with ``rebuilt`` True."""
    t0 = time.perf_counter()
    hubs_requested = old.stats.get("hubs_requested", "auto" if old.num_hubs else None)
    # walked on the merged CSR (rows sorted), as a build after a compaction walks them:
    # the same walks and fingerprints as a fresh build of this graph
    merged = DynamicGraph(graph.merged(), self_loops=graph.self_loops)
    store, main, hubs = build_kept(
        merged, walks_per_node=old.walks_per_node, alpha=old.alpha, seed=old.seed,
        dangling=old.dangling, top_k=old.top_k, hubs=hubs_requested,
        hub_walks=old.hub_walks or 1000,
    )  # fmt: skip
    store.stats["hubs_requested"] = hubs_requested
    for key in ("accuracy", "calibration"):  # (the same record: a background run sees it)
        if key in old.stats:
            store.stats[key] = old.stats[key]
    walks = main.num_blocks * main.R + (0 if hubs is None else hubs.num_blocks * hubs.R)
    report = {
        "walks": walks, "steps": int(store.stats["steps"]),
        "blocks_scanned": 0, "blocks_rewritten": main.num_blocks,
        "seconds": time.perf_counter() - t0, "stages": {}, "rebuilt": True,
    }  # fmt: skip
    return store, main, hubs, report


def repair_kept(
    walks: tuple[WalkStore, WalkStore | None], graph: DynamicGraph, change: Any, seq: int
) -> dict[str, Any]:
    """Repair the kept walks (main, hubs) after ``change`` (a ``DynamicGraph.apply`` result,
    the ``seq``-th batch): :meth:`WalkStore.repair` on each, their reports summed."""
    main, hubs = walks
    report = main.repair(graph, change, seq, new_sources=True)
    if hubs is not None:
        extra = hubs.repair(graph, change, seq, new_sources=False)
        for key in ("walks", "steps", "blocks_scanned", "blocks_rewritten", "seconds"):
            report[key] += extra[key]
        for key, seconds in extra.get("stages", {}).items():
            report["stages"][key] = report["stages"].get(key, 0.0) + seconds
    return report


def dropped_report(fp: Any, how_to_rebuild: str) -> dict[str, Any]:
    """The report of an update that drops fingerprints ``fp`` kept without their walks: they
    cannot be repaired (``how_to_rebuild``: what builds them again)."""
    why = (
        "built on Ray (shardwalk.jobs), which keeps no walks"
        if fp.stats.get("built_on") == "ray"
        else "built with keep_walks=False"
    )
    return {
        "fingerprints_dropped": True,
        "fingerprints": (
            f"dropped: they were {why}, so this update could not repair "
            f"them; queries use push until they are built again ({how_to_rebuild})"
        ),
    }


def _narrow(counts: np.ndarray) -> np.ndarray:
    if counts.size == 0 or counts.max() <= _U16:
        return counts.astype(np.uint16)
    return counts

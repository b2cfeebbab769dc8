"""The sharded-walk kernels (``shard_round``, the visit rows, their merge) against plain Python
and numpy references, and a whole sharded run (the rounds driven here, without Ray) against
exact PPR."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from shardwalk.walks import build_fingerprints
from shardwalk.walks.kernels.bitmap import node_bitmap
from shardwalk.walks.kernels.rng import (
    MODE_DROP,
    MODE_SELF_LOOP,
    alias_coin,
    pick_slot,
    to_unit,
    walk_key,
)
from shardwalk.walks.kernels.rng import draw as kernel_draw
from shardwalk.walks.kernels.sharded import (
    count_group_rows,
    merge_rows,
    scatter_group_rows,
    shard_round,
    shard_rows,
)

from ..conftest import dense_transition, random_graph


def shard_tables(graph, lo: int, hi: int, hubs: np.ndarray) -> tuple:
    """The arguments of ``shard_round`` after (entries, runs): the out-edges of [lo, hi) and a
    copy of the hubs' out-edges, as walks/distributed.py slices them."""
    ip, ind = graph.indptr, graph.indices
    prob, alias = graph.alias()
    e0, e1 = int(ip[lo]), int(ip[hi])
    pos = np.concatenate([np.arange(ip[h], ip[h + 1]) for h in hubs] + [np.zeros(0, np.int64)])
    h_ip = np.concatenate([[0], np.cumsum(ip[hubs + 1] - ip[hubs])]).astype(np.int64)
    h_prob, h_alias = (prob[pos], alias[pos]) if graph.weighted else (prob, alias)
    own_prob, own_alias = (prob[e0:e1], alias[e0:e1]) if graph.weighted else (prob, alias)
    return (
        lo, hi, ip[lo : hi + 1] - e0, ind[e0:e1], own_prob, own_alias, hubs,
        node_bitmap(hubs, graph.num_nodes), h_ip, ind[pos], h_prob, h_alias,
        graph.weighted,
    )  # fmt: skip


def run_round(tables: tuple, entries, offsets, bounds, alpha: float, mode: int, key) -> tuple:
    """``shard_round`` with fresh scratch, which it must leave zeroed."""
    lo, hi, hubs = tables[0], tables[1], tables[6]
    scratch = np.zeros(hi - lo + hubs.size, np.uint32)
    result = shard_round(entries, offsets, *tables, bounds, alpha, mode, key, scratch)
    assert not scratch.any()
    return result


def reference_round(graph, entries, lo, hi, hubs, alpha, mode, key):
    """``shard_round`` in plain Python on the whole graph's arrays: the same draws in the same
    order (sources ascending; within a source, the runs in order), returning the visits per
    (source, node), the walkers sent per (source, node) and the number of visits."""
    ip, ind = graph.indptr, graph.indices
    prob, alias = graph.alias()
    inv_log = 1.0 / math.log1p(-alpha)
    visits, sent = Counter(), Counter()

    def draw(i: int) -> np.uint64:
        return np.uint64(kernel_draw(key, np.uint64(i)))

    ctr = 0
    for e in np.argsort(entries[:, 0], kind="stable"):
        s, v, c = (int(x) for x in entries[e])
        for _ in range(c):
            cur = v
            while True:
                visits[s, cur] += 1
                ctr += 1
                if to_unit(draw(ctr - 1)) < alpha:
                    break
                start, deg = int(ip[cur]), int(ip[cur + 1] - ip[cur])
                if deg == 0:
                    if mode == MODE_SELF_LOOP:
                        u = 1.0 - float(to_unit(draw(ctr)))
                        ctr += 1
                        visits[s, cur] += 1 + math.floor(math.log(u) * inv_log)
                    break
                x = draw(ctr)
                ctr += 1
                j = int(pick_slot(x, deg))
                if graph.weighted and alias_coin(x) >= prob[start + j]:
                    j = int(alias[start + j])
                nxt = int(ind[start + j])
                if lo <= nxt < hi or nxt in hubs:
                    cur = nxt
                    continue
                sent[s, nxt] += 1
                break
    return visits, sent, sum(visits.values())


def run_entries(rng, n: int, lo: int, hi: int, hubs: np.ndarray, runs: int, size: int):
    """``runs`` runs of entries (each sorted by source) at nodes of [lo, hi) and the hubs."""
    nodes = np.concatenate([np.arange(lo, hi), hubs])
    parts = []
    for _ in range(runs):
        src = np.sort(rng.integers(0, n, size))
        parts.append(np.stack([src, rng.choice(nodes, size), rng.integers(1, 6, size)], 1))
    offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
    return np.concatenate(parts).astype(np.int64), offsets


@pytest.mark.parametrize(("weighted", "mode"), [(False, 0), (True, 0), (True, 1)])
def test_shard_round_matches_a_plain_reference(weighted: bool, mode: int) -> None:
    graph = random_graph(60, 300, seed=5, weighted=weighted, dangling=6, ids="plain")
    n, lo, hi = graph.num_nodes, 20, 40
    bounds = np.array([0, lo, hi, n], np.int64)
    hubs = np.array([3, 25, 51, 58], np.int64)  # in other shards, in this one, dangling (58)
    entries, offsets = run_entries(np.random.default_rng(1), n, lo, hi, hubs, 3, 40)
    key = np.uint64(walk_key(4, 1, 7))
    alpha = 0.2
    tables = shard_tables(graph, lo, hi, hubs)
    g_src, g_ptr, locs, counts, out, dest, visits = run_round(
        tables, entries, offsets, bounds, alpha, mode, key
    )
    want_visits, want_sent, want_total = reference_round(
        graph, entries, lo, hi, set(hubs.tolist()), alpha, mode, key
    )
    # visits: one group per source, ascending; local ids lo + i and (hi - lo) + hub index
    assert np.all(np.diff(g_src) > 0)
    nodes = np.where(locs < hi - lo, lo + locs, hubs[np.maximum(locs - (hi - lo), 0)])
    rows = np.repeat(g_src, np.diff(g_ptr))
    found = Counter()
    for s, v, c in zip(rows.tolist(), nodes.tolist(), counts.tolist()):
        assert (s, v) not in found  # aggregated per (source, node)
        found[s, v] = c
    assert found == want_visits and visits == want_total
    # departures: aggregated per (source, target), sorted by source, to the target's owner
    assert np.all(np.diff(out[:, 0]) >= 0)
    assert Counter({(s, t): c for s, t, c in out.tolist()}) == want_sent
    assert len(want_sent) == out.shape[0] > 0
    np.testing.assert_array_equal(dest, np.searchsorted(bounds, out[:, 1], side="right") - 1)
    assert not np.any(np.isin(out[:, 1], hubs)) and not np.any((out[:, 1] >= lo) & (out[:, 1] < hi))
    # the same key gives the same round; another key another one
    again = run_round(tables, entries, offsets, bounds, alpha, mode, key)
    np.testing.assert_array_equal(again[4], out)
    other = run_round(tables, entries, offsets, bounds, alpha, mode, key + np.uint64(1))
    assert not np.array_equal(other[4], out)


def test_visit_rows_and_merge_match_numpy() -> None:
    """Logs of several rounds grouped into rows (counting sort, then per-row sums) and two
    shards' rows merged, against np.unique over (source, node)."""
    rng = np.random.default_rng(3)
    n, lo, hi = 50, 10, 30
    hubs = np.array([2, 40, 45], np.int64)
    nloc = hi - lo
    logs, want = [], Counter()
    for _ in range(4):
        src = np.unique(rng.integers(0, n, 20))
        sizes = rng.integers(1, 6, src.size)
        ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        locs = rng.integers(0, nloc + hubs.size, int(ptr[-1])).astype(np.int32)
        counts = rng.integers(1, 9, locs.size).astype(np.uint32)
        logs.append((src, ptr, locs, counts))
        nodes = np.where(locs < nloc, lo + locs, hubs[np.maximum(locs - nloc, 0)])
        for s, v, c in zip(np.repeat(src, sizes), nodes, counts):
            want[int(s), int(v)] += int(c)
    sizes = np.zeros(n + 1, np.int64)
    for src, ptr, _, _ in logs:
        count_group_rows(src, ptr, sizes)
    indptr = np.cumsum(sizes)
    fill = indptr[:-1].copy()
    locs = np.empty(int(indptr[-1]), np.int32)
    counts = np.empty(int(indptr[-1]), np.uint32)
    for log in logs:
        scatter_group_rows(*log, fill, locs, counts)
    ip = shard_rows(indptr, locs, counts, lo, nloc, hubs, locs, counts)  # in place
    got = Counter()
    for s in range(n):
        row = locs[ip[s] : ip[s + 1]]
        assert np.unique(row).size == row.size
        for v, c in zip(row, counts[ip[s] : ip[s + 1]]):
            got[s, int(v)] = int(c)
    assert got == want

    # merge with a second shard's rows that share only the hubs' nodes
    other = Counter()
    ip_b = np.zeros(n + 1, np.int64)
    nodes_b, counts_b = [], []
    for s in range(n):
        row = rng.choice(
            np.concatenate([np.arange(30, 40), hubs]), rng.integers(0, 5), replace=False
        )
        nodes_b += row.tolist()
        counts_b += rng.integers(1, 9, row.size).tolist()
        ip_b[s + 1] = len(nodes_b)
        for v, c in zip(row, counts_b[ip_b[s] :]):
            other[s, int(v)] += c
    nodes_b, counts_b = np.array(nodes_b, np.int32), np.array(counts_b, np.uint32)
    sources = np.array([0, 3, 7, 8, 20, 49], np.int64)
    size = int(ip[-1]) + nodes_b.size
    out_nodes, out_counts = np.empty(size, np.int32), np.empty(size, np.uint32)
    m_ip = merge_rows(
        sources, ip, locs, counts, sources, ip_b, nodes_b, counts_b, hubs, n, out_nodes, out_counts
    )
    for r, s in enumerate(sources):
        row = out_nodes[m_ip[r] : m_ip[r + 1]]
        assert np.unique(row).size == row.size
        merged = dict(zip(row.tolist(), out_counts[m_ip[r] : m_ip[r + 1]].tolist()))
        expected = {v: want[s, v] + other[s, v] for (t, v) in want | other if t == s}
        assert merged == expected


def sharded_run(graph, walks: int, alpha: float, mode: int, shards: int, hubs: np.ndarray,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """A whole sharded run driven in-process as walks/distributed.py drives it on Ray: every
    source's walks start in round 0, batches travel between the shards' rounds until none is
    left, then each shard's rows, merged."""
    n = graph.num_nodes
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    tables = [shard_tables(graph, int(bounds[s]), int(bounds[s + 1]), hubs) for s in range(shards)]
    inbox: list[list[np.ndarray]] = [[] for _ in range(shards)]
    logs: list[list[tuple]] = [[] for _ in range(shards)]
    for s in range(shards):
        own = np.arange(bounds[s], bounds[s + 1])
        inbox[s].append(np.stack([own, own, np.full(own.size, walks)], 1).astype(np.int64))
    round_no = 0
    while any(b.shape[0] for box in inbox for b in box):
        sent: list[list[np.ndarray]] = [[] for _ in range(shards)]
        for s in range(shards):
            runs = [b for b in inbox[s] if b.shape[0]]
            offsets = np.concatenate([[0], np.cumsum([b.shape[0] for b in runs])]).astype(np.int64)
            entries = np.concatenate(runs) if runs else np.zeros((0, 3), np.int64)
            key = np.uint64(walk_key(seed, s, round_no))
            g_src, g_ptr, locs, counts, out, dest, _ = run_round(
                tables[s], entries, offsets, bounds, alpha, mode, key
            )
            logs[s].append((g_src, g_ptr, locs, counts))
            for t in range(shards):
                sent[t].append(out[dest == t])
        inbox = sent
        round_no += 1
    ip, nodes, counts, rows = None, None, None, np.arange(n, dtype=np.int64)
    for s in range(shards):
        sizes = np.zeros(n + 1, np.int64)
        for g_src, g_ptr, _, _ in logs[s]:
            count_group_rows(g_src, g_ptr, sizes)
        s_ip = np.cumsum(sizes)
        fill = s_ip[:-1].copy()
        s_nodes = np.empty(int(s_ip[-1]), np.int32)
        s_counts = np.empty(int(s_ip[-1]), np.uint32)
        for log in logs[s]:
            scatter_group_rows(*log, fill, s_nodes, s_counts)
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        s_ip = shard_rows(s_ip, s_nodes, s_counts, lo, hi - lo, hubs, s_nodes, s_counts)
        if ip is None:
            ip, nodes, counts = s_ip, s_nodes, s_counts
            continue
        size = nodes.size + s_nodes.size
        out_nodes, out_counts = np.empty(size, np.int32), np.empty(size, np.uint32)
        ip = merge_rows(
            rows, ip, nodes, counts, rows, s_ip, s_nodes, s_counts, hubs, n, out_nodes, out_counts
        )
        nodes, counts = out_nodes[: ip[-1]], out_counts[: ip[-1]]
    return ip, nodes, counts


@pytest.mark.parametrize("dangling", ["self_loop", "drop"])
def test_sharded_rounds_have_the_embedded_distribution(dangling: str) -> None:
    """Three shards with two hubs, on a graph small enough for exact PPR. (1) Under self_loop a
    row's visits total R geometric(alpha) lengths (mean R/alpha, variance R(1-alpha)/alpha^2):
    the mean row total over n rows is within 4 standard errors of R/alpha. (2) The mean l1
    error of the estimates against exact PPR matches the embedded builder's within 10%."""
    graph = random_graph(120, 600, seed=8, dangling=10, weighted=True, ids="plain")
    n, r, alpha = graph.num_nodes, 300, 0.2
    mode = MODE_SELF_LOOP if dangling == "self_loop" else MODE_DROP
    indeg = np.bincount(graph.indices, minlength=n)
    hubs = np.sort(np.argsort(-indeg)[:2]).astype(np.int64)
    ip, nodes, counts = sharded_run(graph, r, alpha, mode, 3, hubs, seed=11)
    totals = np.add.reduceat(counts.astype(np.float64), ip[:-1])
    if dangling == "self_loop":
        stderr = np.sqrt(r * (1 - alpha)) / alpha / np.sqrt(n)
        assert abs(totals.mean() - r / alpha) < 4 * stderr, (totals.mean(), r / alpha, stderr)
    P = dense_transition(graph, dangling)
    exact = alpha * np.linalg.inv(np.eye(n) - (1 - alpha) * P)
    sharded = np.zeros((n, n))
    for u in range(n):
        sharded[u, nodes[ip[u] : ip[u + 1]]] = counts[ip[u] : ip[u + 1]] * (alpha / r)
    store = build_fingerprints(graph, walks_per_node=r, alpha=alpha, seed=11, dangling=dangling)
    embedded = np.zeros((n, n))
    for u in range(n):
        found, values = store.row(u)
        embedded[u, found] = values
    ratio = np.abs(sharded - exact).sum(1).mean() / np.abs(embedded - exact).sum(1).mean()
    assert 0.9 < ratio < 1.1, ratio

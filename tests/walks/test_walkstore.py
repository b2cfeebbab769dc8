"""The kept walks: the same walks as the fingerprint builder, valid walks of the graph after
every repair, and statistically a fresh sample of the updated graph."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from shardwalk.walks import CSRGraph, build_fingerprints, kept_fingerprints, walkstore
from shardwalk.walks.dynamic import DynamicGraph
from shardwalk.walks.generators import power_law_graph
from shardwalk.walks.kept_fingerprints import build_kept, refresh_fingerprints
from shardwalk.walks.walkstore import WalkStore

ALPHA = 0.15


def weighted_copy(g: CSRGraph, seed: int = 0) -> CSRGraph:
    src = np.repeat(np.arange(g.num_nodes), np.diff(g.indptr))
    w = np.random.default_rng(seed).uniform(0.5, 3.0, src.size)
    return CSRGraph.from_edges(
        g.node_ids[src], g.node_ids[g.indices], w, node_ids=g.node_ids, directed=g.directed
    )


def stream(dg: DynamicGraph, stores: list[WalkStore], rng, batches: int, size: int, seq: int = 0):
    """Random upserts (some to new nodes), deletes of existing edges, one node deletion."""
    for _ in range(batches):
        top = dg.num_nodes + 20
        edges = rng.integers(0, top, size=(size, 2))
        w = rng.uniform(0.5, 3.0, size) if dg.weighted else None
        change = dg.apply(dg.prepare("upsert", edges, w))
        for i, s in enumerate(stores):
            s.repair(dg, change, seq, new_sources=i == 0)
        seq += 1
        m = dg.merged()
        src = np.repeat(np.arange(m.num_nodes), np.diff(m.indptr))
        pick = rng.choice(m.num_edges, size // 2, replace=False)
        pairs = (m.node_ids[src[pick]], m.node_ids[m.indices[pick]])
        change = dg.apply(dg.prepare("delete", pairs))
        for i, s in enumerate(stores):
            s.repair(dg, change, seq, new_sources=i == 0)
        seq += 1
    live = dg.node_ids[dg.node_ids >= 0]
    change = dg.apply(dg.prepare("delete_nodes", rng.choice(live, 2, replace=False)))
    for i, s in enumerate(stores):
        s.repair(dg, change, seq, new_sources=i == 0)
    return seq + 1


def assert_valid_walks(store: WalkStore, g: CSRGraph, drop: bool) -> None:
    """Every move is an edge of ``g`` (or a stay at a dangling node under self_loop); a walk
    marked dropped ends at a dangling node."""
    deg = np.diff(g.indptr)
    edges = set(zip(np.repeat(np.arange(g.num_nodes), deg).tolist(), g.indices.tolist()))
    r = store.R
    steps = store.steps  # (decoded once: node ids)
    for b in range(store.num_blocks):
        at = int(store.blk_start[b])
        for w in range(r):
            prev = int(store.block_src[b])
            length = int(store.walk_len[b * r + w])
            for j in range(length):
                v = int(steps[at + j])
                assert (prev, v) in edges or (not drop and deg[prev] == 0 and v == prev)
                prev = v
            if drop and store.dropped[b * r + w]:
                assert deg[prev] == 0
            at += length


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", ["self_loop", "drop"])
def test_kept_walks_are_the_builders(weighted: bool, rule: str) -> None:
    g = power_law_graph(600, 3000, seed=3)
    if weighted:
        g = weighted_copy(g)
    ref = build_fingerprints(g, walks_per_node=4, dangling=rule, hubs=5, hub_walks=40, seed=7)
    store, _, _ = build_kept(
        DynamicGraph(g), walks_per_node=4, dangling=rule, hubs=5, hub_walks=40, seed=7
    )
    for name in ("indptr", "nodes", "counts", "hubs", "hub_indptr", "hub_nodes", "hub_counts"):
        assert np.array_equal(getattr(store, name), getattr(ref, name)), name
    assert store.stats["visits"] == ref.stats["visits"]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rule", ["self_loop", "drop"])
def test_repaired_walks_are_walks_of_the_new_graph(weighted: bool, rule: str) -> None:
    g = power_law_graph(400, 2000, seed=5)
    if weighted:
        g = weighted_copy(g)
    dg = DynamicGraph(g)
    fp, main, hubs = build_kept(dg, walks_per_node=3, dangling=rule, hubs=4, hub_walks=30)
    assert hubs is not None
    stream(dg, [main, hubs], np.random.default_rng(1), batches=3, size=40)
    m = dg.merged()
    m.validate()
    assert main.num_blocks == m.num_nodes  # new nodes got walks
    for store in (main, hubs):
        assert_valid_walks(store, m, rule == "drop")
        assert store.total_steps == int(store.walk_len.sum())
    main.compact()
    assert_valid_walks(main, m, rule == "drop")
    fresh = refresh_fingerprints(fp, main, hubs, m)
    ip, nodes, counts, _ = main.rows(np.arange(m.num_nodes), m.num_nodes)
    assert np.array_equal(fresh.indptr, ip) and np.array_equal(fresh.nodes, nodes)
    assert np.array_equal(fresh.counts, counts)


def green(g: CSRGraph, drop: bool) -> np.ndarray:
    """G = (I - (1 - alpha) P)^-1: G[s, v] is the expected visits to v of a walk from s."""
    n = g.num_nodes
    p = np.zeros((n, n))
    deg = np.diff(g.indptr)
    src = np.repeat(np.arange(n), deg)
    w = np.ones(src.size) if g.weights is None else g.weights.astype(np.float64)
    np.add.at(p, (src, g.indices), w)
    rows = p.sum(axis=1)
    p[rows > 0] /= rows[rows > 0, None]
    if not drop:
        p[np.flatnonzero(deg == 0), np.flatnonzero(deg == 0)] = 1.0
    return np.linalg.inv(np.eye(n) - (1 - ALPHA) * p), p


def z_scores(counts: np.ndarray, g: CSRGraph, drop: bool, r: int, nodes: np.ndarray):
    """Per node v of ``nodes``: (total visits to v over every walk - its expectation) / its
    standard deviation. A walk's visits X_v to v have E = G[s, v] and
    E[X_v^2] = G[s, v] (1 + 2 H[v, v]), H = (1 - alpha) P G (the visits after one visit), so
    the total over R walks from every source is approximately normal with a known variance."""
    G, p = green(g, drop)
    H = (1 - ALPHA) * p @ G
    mean = r * G[:, nodes].sum(axis=0)
    second = G[:, nodes] * (1 + 2 * H[nodes, nodes])
    var = r * (second - G[:, nodes] ** 2).sum(axis=0)
    return (counts[nodes] - mean) / np.sqrt(var)


def total_visits(store: WalkStore, n: int) -> np.ndarray:
    _ip, nodes, counts, _ = store.rows(np.arange(store.num_blocks), n)
    return np.bincount(nodes, weights=counts, minlength=n)


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
@pytest.mark.parametrize("weighted", [False, True])
def test_repaired_store_is_a_sample_of_the_new_graph(rule: str, weighted: bool) -> None:
    """The visit totals of the repaired store match the new graph's expectations within 4.5
    standard deviations (from the estimator's exact variance) at every node the updates
    moved most; the stale store (not repaired) fails the same test, so it has power."""
    g = power_law_graph(300, 1500, seed=11)
    if weighted:
        g = weighted_copy(g, 2)
    drop = rule == "drop"
    r = 200
    dg = DynamicGraph(g)
    _, main, _ = build_kept(dg, walks_per_node=r, dangling=rule, hubs=None)
    stale = total_visits(main, g.num_nodes)
    stream(dg, [main], np.random.default_rng(4), batches=2, size=60)
    m = dg.merged()
    n = m.num_nodes
    G_old, _ = green(g, drop)
    G_new, _ = green(m, drop)
    moved = (G_new[: g.num_nodes, : g.num_nodes] - G_old).sum(axis=0)
    moved[m.node_ids[: g.num_nodes] < 0] = 0  # deleted: visited only by their own walks
    nodes = np.argsort(-np.abs(moved))[:15]
    z_repaired = z_scores(total_visits(main, n), m, drop, r, nodes)
    assert np.abs(z_repaired).max() < 4.5, z_repaired
    z_stale = z_scores(np.pad(stale, (0, n - stale.size))[: g.num_nodes + 0], m, drop, r, nodes)
    assert np.abs(z_stale).max() > 6, z_stale


def test_repaired_fingerprints_converge_to_exact_ppr() -> None:
    """PPR rows from repaired fingerprints approach the exact PPR of the new graph like
    fingerprints built from scratch: the l1 error falls as 1/sqrt(R) and matches a fresh
    build's (same R) within 15%."""
    g = power_law_graph(300, 1500, seed=8)
    errors = {}
    for r in (25, 400):
        dg = DynamicGraph(g)
        fp, main, _ = build_kept(dg, walks_per_node=r, hubs=None, seed=1)
        stream(dg, [main], np.random.default_rng(9), batches=2, size=60)
        m = dg.merged()
        repaired = refresh_fingerprints(fp, main, None, m)
        fresh = build_fingerprints(m, walks_per_node=r, hubs=None, seed=2)
        exact = ALPHA * green(m, False)[0]
        live = np.flatnonzero(m.node_ids >= 0)
        for name, store in (("repaired", repaired), ("fresh", fresh)):
            err = []
            for s in live:
                nodes, est = store.row(int(s))
                row = np.zeros(m.num_nodes)
                row[nodes] = est
                err.append(np.abs(row - exact[s]).sum())
            errors[name, r] = float(np.mean(err))
    for r in (25, 400):
        assert abs(errors["repaired", r] / errors["fresh", r] - 1) < 0.15, errors
    assert errors["repaired", 400] < errors["repaired", 25] / 3, errors  # sqrt(16) = 4


def test_walk_store_round_trip(tmp_path) -> None:
    g = power_law_graph(200, 900, seed=2)
    dg = DynamicGraph(g)
    _, main, _ = build_kept(dg, walks_per_node=5, dangling="drop", hubs=None)
    stream(dg, [main], np.random.default_rng(3), batches=1, size=30)
    main.save(tmp_path, "walks")
    back = WalkStore.load(tmp_path, "walks", dg.num_nodes)
    n = dg.num_nodes
    a = main.rows(np.arange(n), n)
    b = back.rows(np.arange(n), n)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(main.dropped, back.dropped)


def state_of(store: WalkStore) -> dict[str, object]:
    """Everything the walks of ``store`` and their index are (not the spare room, nor the
    unused ends of the space a repair gives a block)."""
    per_block = store.walk_len.reshape(-1, store.R).sum(axis=1, dtype=np.int64)
    return {
        "blocks": store.num_blocks, "used": store.used, "live": store.live,
        "block_src": store.block_src, "block_w0": store.block_w0, "blk_start": store.blk_start,
        "walk_len": store.walk_len, "dropped": store.dropped, "dirty": store.dirty,
        "walks": store.steps[walkstore._gather(store.blk_start, per_block)],
        "t_indptr": store.t_indptr,
        "t_units": store.t_units, "m_indptr": store.m_indptr, "m_units": store.m_units,
        "overflow_nodes": store.overflow_nodes[: store.overflow_used],
        "overflow_units": store.overflow_units[: store.overflow_used],
    }  # fmt: skip


def assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
@pytest.mark.parametrize("kernel", ["walks_rewrite", "walks_build"])
def test_a_repair_that_fails_midway_leaves_the_store_as_it_was(monkeypatch, kernel, rule):
    """A kernel of the repair runs (its writes land) and then the step raises: rerouting the
    walks (``walks_rewrite``), or walking the new sources after the reroute
    (``walks_build``). The store is as before (same walks, index and dirty marks; its scratch
    reset), and repairing again gives what a clean repair gives."""
    dg = DynamicGraph(power_law_graph(300, 1500, seed=11))
    _, main, _ = build_kept(dg, walks_per_node=4, dangling=rule, hubs=None)
    rng = np.random.default_rng(2)
    seq = stream(dg, [main], rng, batches=1, size=30)  # some history: moved blocks, overflow
    edges = rng.integers(0, dg.num_nodes + 10, size=(60, 2))  # some to new nodes
    change = dg.apply(dg.prepare("upsert", edges))
    assert change.num_nodes_after > change.num_nodes_before
    clean = copy.deepcopy(main)
    before = copy.deepcopy(state_of(main))
    in_use = main.steps[: main.used].copy()
    real = getattr(walkstore, kernel)

    def run_then_fail(*args):
        real(*args)
        raise RuntimeError("injected fault")

    monkeypatch.setattr(walkstore, kernel, run_then_fail)
    with pytest.raises(RuntimeError, match="injected fault"):
        main.repair(dg, change, seq, new_sources=True)
    monkeypatch.undo()
    assert_same_state(state_of(main), before)
    np.testing.assert_array_equal(main.steps[: main.used], in_use)
    assert (main._slot == -1).all()  # the scratch: no node left marked as changed
    a = main.repair(dg, change, seq, new_sources=True)
    b = clean.repair(dg, change, seq, new_sources=True)
    assert a["walks"] == b["walks"] > 0 and a["steps"] == b["steps"]
    assert_same_state(state_of(main), state_of(clean))
    assert_valid_walks(main, dg.merged(), rule == "drop")


def test_a_refresh_that_fails_leaves_the_dirty_marks_for_the_next():
    """Recounting fingerprint rows fails after the main rows (the hub rows' splice raises), or
    the new store's publication does: the dirty marks are as before, and the next refresh
    publishes what a clean one gives and only then clears them."""
    dg = DynamicGraph(power_law_graph(300, 1500, seed=12))
    fp, main, hubs = build_kept(dg, walks_per_node=4, hubs=3, hub_walks=20)
    assert hubs is not None
    stream(dg, [main, hubs], np.random.default_rng(4), batches=1, size=30)
    m = dg.merged()
    marks = main.dirty.copy(), hubs.dirty.copy()
    assert marks[0].any() and marks[1].any()
    clean = refresh_fingerprints(fp, copy.deepcopy(main), copy.deepcopy(hubs), m)
    calls = 0
    real = kept_fingerprints._splice

    def fail_second(*args):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("injected fault")
        return real(*args)

    def fail_publish(store):
        raise RuntimeError("injected fault")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kept_fingerprints, "_splice", fail_second)
        with pytest.raises(RuntimeError, match="injected fault"):
            refresh_fingerprints(fp, main, hubs, m)
    np.testing.assert_array_equal(main.dirty, marks[0])
    np.testing.assert_array_equal(hubs.dirty, marks[1])
    with pytest.raises(RuntimeError, match="injected fault"):
        refresh_fingerprints(fp, main, hubs, m, publish=fail_publish)
    np.testing.assert_array_equal(main.dirty, marks[0])
    np.testing.assert_array_equal(hubs.dirty, marks[1])
    published = []

    def publish(store):
        assert main.dirty.any()  # still marked while it is being published
        published.append(store)

    again = refresh_fingerprints(fp, main, hubs, m, publish=publish)
    assert len(published) == 1 and published[0] is again
    for name in ("indptr", "nodes", "counts", "hub_indptr", "hub_nodes", "hub_counts"):
        np.testing.assert_array_equal(getattr(again, name), getattr(clean, name), err_msg=name)
    assert not main.dirty.any() and not hubs.dirty.any()


def sorted_rows(ip: np.ndarray, nodes: np.ndarray, counts: np.ndarray) -> tuple:
    """CSR rows with each row's entries by node id (rows compared as multisets)."""
    owner = np.repeat(np.arange(ip.shape[0] - 1), np.diff(ip))
    order = np.lexsort((nodes, owner))
    return np.asarray(ip), np.asarray(nodes)[order], np.asarray(counts)[order]


@pytest.mark.parametrize("recount", [False, True])
def test_hub_rows_follow_the_logged_visits(monkeypatch, recount: bool) -> None:
    """Hub rows (1000-walk rows) are refreshed from the visits the repairs moved, not
    recounted (``rows`` is not called for them), and equal a recount of their walks entry for
    entry; when the log outgrows its limit the dirty rows are recounted instead, to the same
    counts. The store stays within a quarter of space left behind after each repair."""
    g = power_law_graph(400, 2000, seed=6)
    dg = DynamicGraph(g)
    fp, main, hubs = build_kept(dg, walks_per_node=3, hubs=6, hub_walks=60)
    assert hubs is not None and hubs.logged
    main.compact_min = hubs.compact_min = 0
    if recount:
        hubs.log_min, hubs.log_share = 0, 1 << 40  # the first entries overflow the log
    stream(dg, [main, hubs], np.random.default_rng(7), batches=2, size=40)
    assert hubs._recount == recount and (hubs.dl_used > 0) != recount
    for store in (main, hubs):
        assert store.live == int(store.walk_len.sum(dtype=np.int64))
        assert store.used <= store.live + store.live // 4
    m = dg.merged()
    real_rows = WalkStore.rows

    def no_hub_recount(self, rows, *args, **kwargs):
        assert self is main or recount, "hub rows recounted"
        return real_rows(self, rows, *args, **kwargs)

    monkeypatch.setattr(WalkStore, "rows", no_hub_recount)
    fresh = refresh_fingerprints(fp, main, hubs, m)
    monkeypatch.undo()
    assert hubs.dl_used == 0 and not hubs._recount and not hubs.dirty.any()
    ip, nodes, counts, _ = hubs.rows(np.arange(fp.num_hubs), m.num_nodes)
    want = sorted_rows(ip, nodes, counts)
    got = sorted_rows(fresh.hub_indptr, fresh.hub_nodes, fresh.hub_counts)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_steps_take_three_bytes_and_keep_ids_past_16_bits() -> None:
    """Steps are stored as 2 + 1 bytes (2 + 2 past 2**24 nodes); walks on a graph of 70,000
    nodes (ids past 2**16) decode to valid walks, before and after a repair and a compaction."""
    ids = np.array([0, 1, 65535, 65536, 70000, 2**24 - 1], np.int64)
    lo, hi = walkstore._split(ids, 2**24)
    assert lo.dtype == np.uint16 and hi.dtype == np.uint8
    assert list(lo.astype(np.int64) | (hi.astype(np.int64) << 16)) == ids.tolist()
    lo, hi = walkstore._split(np.append(ids, 2**24 + 7), 2**24 + 8)
    assert hi.dtype == np.uint16 and int(lo[-1]) | (int(hi[-1]) << 16) == 2**24 + 7
    g = power_law_graph(70_000, 140_000, seed=2)
    dg = DynamicGraph(g)
    fp, main, _ = build_kept(dg, walks_per_node=1, hubs=None)
    assert main._lo.dtype == np.uint16 and main._hi.dtype == np.uint8
    assert int(main.steps.max()) >= 1 << 16
    assert main.nbytes < main.used * 3 + 40 * main.num_blocks + main.t_units.nbytes + (1 << 20)
    rng = np.random.default_rng(3)
    edges = rng.integers(60_000, 70_000, size=(300, 2))
    change = dg.apply(dg.prepare("upsert", g.node_ids[edges]))
    main.repair(dg, change, 0, new_sources=True)
    m = dg.merged()
    assert_valid_walks(main, m, False)
    main.compact()
    assert_valid_walks(main, m, False)
    fresh = refresh_fingerprints(fp, main, None, m)
    _ip, nodes, counts, _ = main.rows(np.arange(m.num_nodes), m.num_nodes)
    assert np.array_equal(fresh.nodes, nodes) and np.array_equal(fresh.counts, counts)


def test_block_starts_take_four_bytes_until_the_steps_outgrow_them(monkeypatch) -> None:
    """Blocks' starts are uint32 while the steps in use fit, and widen to int64 when a repair
    or new sources would pass 2**32 (here a limit set low): the same walks either way."""
    dg = DynamicGraph(power_law_graph(400, 2000, seed=4))
    _, main, _ = build_kept(dg, walks_per_node=4, hubs=None)
    assert main.blk_start.dtype == np.uint32
    edges = np.random.default_rng(5).integers(0, 420, size=(60, 2))
    with monkeypatch.context() as patch:
        patch.setattr(walkstore, "_U32", main.used + 10)
        _, narrow, _ = build_kept(dg, walks_per_node=4, hubs=None)
        assert narrow.blk_start.dtype == np.uint32
        change = dg.apply(dg.prepare("upsert", edges))
        narrow.repair(dg, change, 0, new_sources=True)
        assert narrow.blk_start.dtype == np.int64
    main.repair(dg, change, 0, new_sources=True)
    assert main.blk_start.dtype == np.uint32
    assert_same_state(state_of(narrow), state_of(main))
    assert_valid_walks(narrow, dg.merged(), False)

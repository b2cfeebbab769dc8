"""The per-walk node index of the kept walks (issue 22 item 4): the walks it names for a set of
changed nodes are the walks a brute-force scan of every walk finds (exactly, right after it is
built; a superset, never missing one, as repairs add visits), and a repair that plans from it
rewrites the store exactly as a repair that plans every walk."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardwalk.walks.dynamic import DynamicGraph
from shardwalk.walks.generators import power_law_graph
from shardwalk.walks.kept_fingerprints import build_kept
from shardwalk.walks.walkstore import WalkStore

from tests.walks.test_walkstore import assert_same_state, state_of, stream


def stepping_walks(store: WalkStore, nodes: set[int]) -> set[int]:
    """Brute force over every walk: those that take a step from a node of ``nodes`` (any visit
    but the last, and the last of a walk the drop rule cut) or start at one."""
    steps = store.steps
    found = set()
    for b in range(store.num_blocks):
        at = int(store.blk_start[b])
        src = int(store.block_src[b])
        for w in range(store.R):
            q = b * store.R + w
            length = int(store.walk_len[q])
            visits = [src, *steps[at : at + length].tolist()]
            cut = store.dropped.size and store.dropped[q]
            if src in nodes or nodes & set(visits if cut else visits[:-1]):
                found.add(q)
            at += length
    return found


def units_of(store: WalkStore, walks: set[int]) -> set[int]:
    return {q // store.per_unit for q in walks}


def found_units(store: WalkStore, nodes: np.ndarray, n: int) -> set[int]:
    slot = np.full(n, -1, np.int64)
    slot[nodes] = np.arange(nodes.shape[0])
    return set(store.walks_visiting(nodes, slot).tolist())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.integers(40, 160),
    seed=st.integers(0, 2**16),
    rule=st.sampled_from(["self_loop", "drop"]),
    per_unit=st.sampled_from([1, 2]),
)
def test_the_index_finds_the_walks_a_scan_finds(nodes, seed, rule, per_unit) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WalkStore, "walks_per_unit", per_unit)
        dg = DynamicGraph(power_law_graph(nodes, 4 * nodes, seed=seed))
        _, main, hubs = build_kept(dg, walks_per_node=4, dangling=rule, hubs=3, hub_walks=12)
    assert hubs is not None and main.per_unit == hubs.per_unit == per_unit
    rng = np.random.default_rng(seed)
    for rebuilt in (True, False, True):
        n = dg.num_nodes
        for store in (main, hubs):
            if rebuilt:
                store._index(n)
            for size in (1, 3, max(1, n // 10)):
                changed = np.sort(rng.choice(n, size, replace=False))
                truth = units_of(store, stepping_walks(store, set(changed.tolist())))
                got = found_units(store, changed, n)
                if rebuilt:
                    assert got == truth
                else:  # after repairs: the visits walked since are in the overflow
                    assert truth <= got, sorted(truth - got)[:10]
        stream(dg, [main, hubs], rng, batches=1, size=max(4, nodes // 8))


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
def test_a_repair_planned_from_the_index_is_a_repair_planned_from_every_walk(rule) -> None:
    """Two copies of the same store under the same batches: one finds the walks to plan from
    its index, the other plans every walk of the store. Their walks, lengths, drop marks,
    dirty marks and reports are the same after each batch (each coin belongs to a visit, so
    planning more walks changes nothing)."""
    dg = DynamicGraph(power_law_graph(500, 2500, seed=21))
    _, main, hubs = build_kept(dg, walks_per_node=4, dangling=rule, hubs=4, hub_walks=40)
    assert hubs is not None
    every = [copy.deepcopy(main), copy.deepcopy(hubs)]
    for store in every:
        store.units_to_plan = lambda *args, s=store: np.arange(s.num_units)
    rng = np.random.default_rng(3)
    seq = 0
    scanned = []
    for _ in range(4):
        size = int(rng.integers(1, 80))
        edges = rng.integers(0, dg.num_nodes + 10, size=(size, 2))
        change = dg.apply(dg.prepare("upsert", edges))
        for i, (a, b) in enumerate(zip((main, hubs), every)):
            ra = a.repair(dg, change, seq, new_sources=i == 0)
            rb = b.repair(dg, change, seq, new_sources=i == 0)
            assert (ra["walks"], ra["steps"]) == (rb["walks"], rb["steps"])
            assert_same_state(state_of(a), state_of(b))
            scanned.append((ra["walks_scanned"], rb["walks_scanned"]))
        seq += 1
    assert sum(x for x, _ in scanned) * 3 < sum(y for _, y in scanned), scanned
    assert any(ra > 0 for ra, _ in scanned)


def test_the_index_takes_under_two_bytes_an_entry() -> None:
    """Per node, its walks as varint gaps: under 2 bytes an entry here (int32 ids take 4)."""
    dg = DynamicGraph(power_law_graph(2000, 10000, seed=9))
    _, main, _ = build_kept(dg, walks_per_node=10, hubs=None)
    entries = 0
    steps = main.steps
    for q, at in enumerate(np.cumsum(main.walk_len, dtype=np.int64) - main.walk_len):
        entries += len(set(steps[at : at + max(0, int(main.walk_len[q]) - 1)].tolist()))
    assert main.t_units.dtype == np.uint8 and main.t_units.size < 2 * entries


@pytest.mark.parametrize("rule", ["self_loop", "drop"])
def test_folding_the_overflow_into_the_index_names_the_same_walks(rule) -> None:
    """After repairs, the overflow merged into the coded index (no pass over the walks) names
    exactly the walks the index and overflow named together, for any set of nodes (new nodes
    past the coded ones included), and still every walk a scan finds."""
    dg = DynamicGraph(power_law_graph(300, 1500, seed=5))
    _, main, hubs = build_kept(dg, walks_per_node=4, dangling=rule, hubs=3, hub_walks=12)
    assert hubs is not None
    rng = np.random.default_rng(8)
    seq = stream(dg, [main, hubs], rng, batches=2, size=40)
    n = dg.num_nodes
    for store in (main, hubs):
        assert store.overflow_used > 0 and store.stale > 0
        probes = [np.sort(rng.choice(n, size, replace=False)) for size in (1, 5, 30)]
        probes.append(np.arange(n - 15, n))  # the nodes added by the stream among them
        before = [found_units(store, p, n) for p in probes]
        store._merge_overflow(n)
        assert store.overflow_used == 0 and store.t_indptr.shape[0] == n + 1
        for p, want in zip(probes, before):
            got = found_units(store, p, n)
            assert got == want
            assert units_of(store, stepping_walks(store, set(p.tolist()))) <= got
    stream(dg, [main, hubs], rng, batches=1, size=40, seq=seq)  # repairs go on from it
    for store in (main, hubs):
        changed = np.sort(rng.choice(dg.num_nodes, 20, replace=False))
        truth = units_of(store, stepping_walks(store, set(changed.tolist())))
        assert truth <= found_units(store, changed, dg.num_nodes)


def _stepping_visits(store: WalkStore, u: int) -> np.ndarray:
    """Per walk, its visits to ``u`` that take a step (its source, if u, then every visit but
    the last, and the last too where the drop rule cut the walk)."""
    steps = store.steps
    out = np.zeros(store.num_blocks * store.R, np.int64)
    for b in range(store.num_blocks):
        at = int(store.blk_start[b])
        for w in range(store.R):
            q = b * store.R + w
            length = int(store.walk_len[q])
            visits = [int(store.block_src[b]), *steps[at : at + length].tolist()]
            cut = store.dropped.size and store.dropped[q]
            out[q] = (visits if cut else visits[:-1]).count(u)
            at += length
    return out


def _walks(store: WalkStore) -> list[tuple[int, ...]]:
    steps = store.steps.tolist()
    starts = np.repeat(store.blk_start, store.R) + (
        np.cumsum(store.walk_len.reshape(-1, store.R), axis=1, dtype=np.int64)
        - store.walk_len.reshape(-1, store.R)
    ).reshape(-1)
    return [tuple(steps[s : s + n]) for s, n in zip(starts.tolist(), store.walk_len.tolist())]


def test_a_node_that_gains_edges_reroutes_each_visit_with_the_share_of_its_new_edges() -> None:
    """A node with d out-edges that gains m reroutes each walk's visit with probability
    m / (d + m), independently, the walk at its first rerouted visit: over several batches,
    the walks rerouted, among those that step from the node once and among those that do more
    than once (their chance 1 - (1 - p)^visits: a repair that looked only at a walk's first
    visit would miss the others), are within 4 standard deviations of the binomial
    expectation. And the repair reads only a part of the walks that visit the node."""
    g = power_law_graph(60, 600, seed=5)
    dg = DynamicGraph(g)
    _, main, _ = build_kept(dg, walks_per_node=150, hubs=None, seed=3)
    deg = np.diff(g.indptr)
    rng = np.random.default_rng(0)
    expected = {1: [0.0, 0.0], 2: [0.0, 0.0]}  # visits once / more: [mean, variance]
    got = {1: 0, 2: 0}
    scanned = visiting = 0
    for seq in range(6):
        m = dg.merged()
        d = np.diff(m.indptr)
        u = int(rng.choice(np.flatnonzero(d >= 4)))
        row = set(m.indices[m.indptr[u] : m.indptr[u + 1]].tolist())
        new = [v for v in rng.permutation(m.num_nodes).tolist() if v not in row][:2]
        p = len(new) / (d[u] + len(new))
        c = _stepping_visits(main, u)
        before = _walks(main)
        ids = m.node_ids
        change = dg.apply(dg.prepare("upsert", np.array([[ids[u], ids[v]] for v in new])))
        report = main.repair(dg, change, seq, new_sources=False)
        after = _walks(main)
        moved = np.array([a != b for a, b in zip(before, after)])
        assert not moved[c == 0].any()
        for k, cls in ((1, c == 1), (2, c >= 2)):
            chance = 1 - (1 - p) ** c[cls]
            expected[k][0] += chance.sum()
            expected[k][1] += (chance * (1 - chance)).sum()
            got[k] += int(moved[cls].sum())
        assert report["walks"] == int(moved.sum())
        scanned += report["walks_scanned"]
        visiting += int((c > 0).sum())
    assert deg.min() >= 0 and expected[2][0] > 50, expected  # many walks visit more than once
    for k in (1, 2):
        z = (got[k] - expected[k][0]) / np.sqrt(expected[k][1])
        assert abs(z) < 4, (k, got, expected)
    assert scanned < visiting * 0.6, (scanned, visiting)

"""Graphs that change: durable edge upserts and deletes, replay, compaction, bad input, PPR on
the updated graph, a writer killed mid-stream, and a state machine against a plain model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk.errors import CorruptionError, InvalidArgumentError, NotFoundError

ALPHA = 0.15


def edge_set(graph) -> dict[tuple[int, int], float]:
    csr = graph.csr
    src = np.repeat(np.arange(csr.num_nodes), np.diff(csr.indptr))
    w = np.ones(src.size) if csr.weights is None else csr.weights
    ids = csr.node_ids
    return {
        (int(ids[s]), int(ids[d])): float(x)
        for s, d, x in zip(src.tolist(), csr.indices.tolist(), w.tolist())
    }


def exact_ppr(nodes: list[int], edges: dict[tuple[int, int], float], seed: int) -> dict[int, float]:
    """PPR of a plain model (dense solve), dangling nodes keep their walk (self_loop)."""
    pos = {v: i for i, v in enumerate(nodes)}
    n = len(nodes)
    p = np.zeros((n, n))
    for (u, v), w in edges.items():
        p[pos[u], pos[v]] += w
    rows = p.sum(axis=1)
    p[rows > 0] /= rows[rows > 0, None]
    for i in np.flatnonzero(rows == 0):
        p[i, i] = 1.0
    e = np.zeros(n)
    e[pos[seed]] = 1.0
    pi = ALPHA * np.linalg.solve((np.eye(n) - (1 - ALPHA) * p).T, e)
    return {v: float(pi[pos[v]]) for v in nodes}


def check_ppr(graph, nodes: list[int], edges: dict, seed: int, method: str = "exact") -> None:
    want = exact_ppr(nodes, edges, seed)
    params = {"tol": 1e-12} if method == "exact" else {"r_max": 1e-9}
    got = graph.ppr(seed, k=len(nodes), method=method, **params)
    scores = {int(i): float(s) for i, s in zip(got.ids[0], got.scores[0]) if i >= 0}
    for v, x in want.items():
        assert abs(scores.get(v, 0.0) - x) < 1e-5, (v, scores.get(v), x)


@pytest.fixture
def engine(tmp_path):
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        yield engine


def test_updates_are_durable_and_reads_see_them(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", [[1, 2], [2, 3], [3, 1]], [1.0, 2.0, 3.0])
        out = g.upsert_edges([[3, 4], [4, 1], [1, 2]], [0.5, 1.5, 7.0])  # 4 is new; 1->2 reweighed
        assert out["edges"] == 3 and out["nodes_added"] == 1
        g.delete_edges([[2, 3]])
        g.delete_nodes([4])
        g.upsert_edges(([9], [1]))
        want = {(1, 2): 7.0, (3, 1): 3.0, (9, 1): 1.0}
        assert edge_set(g) == want
        assert sorted(g.node_ids.tolist()) == [1, 2, 3, 9]
        check_ppr(g, [1, 2, 3, 9], want, 9)
        check_ppr(g, [1, 2, 3, 9], want, 9, method="push")
        assert g.stats()["updates"] == 4
    with shardwalk.Engine.open(path) as engine:  # replayed from the log
        g = engine.graph("g")
        assert edge_set(g) == want and g.num_nodes == 4
        g.compact()
        assert g.stats()["wal_bytes"] == 0 and g.stats()["delta_edges"] == 0
        with pytest.raises(NotFoundError):
            g.ppr(4, method="exact")  # deleted
    with shardwalk.Engine.open(path) as engine:  # from the compacted snapshot
        g = engine.graph("g")
        assert edge_set(g) == want
        g.upsert_edges([[4, 9]])  # a deleted id comes back as a new node
        assert edge_set(g)[(4, 9)] == 1.0 and g.num_nodes == 5


def test_undirected_updates_change_both_directions(engine):
    g = engine.create_graph("u", [[1, 2], [2, 3]], directed=False)
    g.upsert_edges([[3, 4]])
    g.delete_edges([[2, 1]])
    assert set(edge_set(g)) == {(2, 3), (3, 2), (3, 4), (4, 3)}
    g.delete_nodes([3])
    assert edge_set(g) == {}


def test_automatic_compaction(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", power_law_graph(500, 2500, seed=1))
        g.compact_ratio = 0.01  # then 1024 delta edges at least
        rng = np.random.default_rng(0)
        for _ in range(12):
            g.upsert_edges(rng.integers(0, 600, size=(100, 2)))
        assert g.stats()["delta_edges"] < 1024  # it compacted on the way
        want = edge_set(g)
    with shardwalk.Engine.open(path) as engine:
        assert edge_set(engine.graph("g")) == want


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda g: g.delete_edges([[1, 2], [7, 1]]), NotFoundError),  # unknown node
        (lambda g: g.delete_edges([[1, 2], [3, 2]]), NotFoundError),  # no such edge
        (lambda g: g.delete_nodes([1, 99]), NotFoundError),
        (lambda g: g.upsert_edges([[1, 5], [5, 6]], [1.0, -2.0]), InvalidArgumentError),
        (lambda g: g.upsert_edges([[1, 5], [5, 6]], [1.0, np.nan]), InvalidArgumentError),
        (lambda g: g.upsert_edges([[1, 5], [5, 6]], [1.0, np.inf]), InvalidArgumentError),
        (lambda g: g.upsert_edges([[1, 5], [5, 6]], [1.0]), InvalidArgumentError),
        (lambda g: g.upsert_edges([[1, 5], [6, 6]]), InvalidArgumentError),  # self-loop: drop rule
        (lambda g: g.upsert_edges([[1, 5, 6]]), InvalidArgumentError),
        (lambda g: g.upsert_edges([1, 5]), InvalidArgumentError),
        (lambda g: g.upsert_edges(([1, 2], [5])), InvalidArgumentError),
        (lambda g: g.upsert_edges([[1.5, 5]]), InvalidArgumentError),
        (lambda g: g.upsert_edges([[-1, 5]]), InvalidArgumentError),
    ],
)
def test_bad_updates_change_nothing(tmp_path, call, error):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", [[1, 2], [2, 3]], [1.0, 1.0], self_loops="drop")
        before = edge_set(g), g.stats()["wal_bytes"], g.num_nodes
        with pytest.raises(error):
            call(g)
        assert (edge_set(g), g.stats()["wal_bytes"], g.num_nodes) == before
    with shardwalk.Engine.open(path) as engine:
        assert edge_set(engine.graph("g")) == before[0]


def test_unweighted_graph_refuses_weights_and_keeps_self_loops_by_default(engine):
    g = engine.create_graph("g", [[1, 2]])
    with pytest.raises(InvalidArgumentError, match="unweighted"):
        g.upsert_edges([[2, 3]], [2.0])
    g.upsert_edges([[3, 3]])
    assert (3, 3) in edge_set(g)


def test_torn_and_corrupt_graph_logs(tmp_path):
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", [[1, 2]])
        g.upsert_edges([[2, 3]])
        g.upsert_edges([[3, 4]])
        wal = path / "graphs" / "g" / engine._datadir.manifest["graphs"]["g"]["wal"]
    data = wal.read_bytes()
    wal.write_bytes(data[:-5])  # a torn last append: never acknowledged, cut
    with shardwalk.Engine.open(path) as engine:
        assert set(edge_set(engine.graph("g"))) == {(1, 2), (2, 3)}
    size = wal.stat().st_size
    damaged = bytearray(wal.read_bytes())
    damaged[size - 3] ^= 0xFF  # a complete record that fails its checksum: corruption
    wal.write_bytes(bytes(damaged))
    with shardwalk.Engine.open(path) as engine:
        with pytest.raises(CorruptionError, match="write-ahead log"):
            engine.graph("g")
    with shardwalk.Engine.open(path, recover=True) as engine:
        assert [r.collection for r in engine.recovered] == ["g"]
        assert set(edge_set(engine.graph("g"))) == {(1, 2)}


def test_fingerprints_follow_updates_and_replay_identically(tmp_path):
    path = tmp_path / "db"
    csr = power_law_graph(800, 4000, seed=2)
    rng = np.random.default_rng(1)
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", csr)
        built = g.build_fingerprints(walks_per_node=20, hubs=8, hub_walks=200)
        assert built["walks_nbytes"] > 0
        for _ in range(3):
            out = g.upsert_edges(rng.integers(0, 850, size=(40, 2)))
            assert out["walks"] > 0 and out["steps"] >= out["walks"] and out["repair_seconds"] >= 0
            # the blocks of the rerouted walks are rewritten: some, at most one a walk rerouted
            assert 0 < out["blocks_rewritten"] <= min(out["walks"], out["blocks_scanned"])
        edges = edge_set(g)
        pairs = np.array(list(edges))[rng.choice(len(edges), 30, replace=False)]
        g.delete_edges(pairs)
        fp = g._current().fingerprints
        assert fp.graph_digest == g.csr.digest()
        seed = int(g.node_ids[np.argmax(np.diff(g.csr.indptr))])
        exact = g.ppr(seed, k=50, method="exact")
        approx = g.ppr(seed, k=50, method="fingerprint")
        assert len(set(exact.ids[0].tolist()) & set(approx.ids[0].tolist())) >= 30
        assert g.ppr(seed, k=50).method in ("fingerprint", "hybrid")
    with shardwalk.Engine.open(path) as engine:  # the log replays the same repairs
        again = engine.graph("g")._current().fingerprints
        for name in ("indptr", "nodes", "counts"):
            assert np.array_equal(getattr(again, name), getattr(fp, name)), name
        # hub rows change by the visits the repairs moved, new nodes after the old ones: the
        # same counts whether refreshed once (the replay) or after each read (the order may not)
        for a, b in zip(sorted_rows(again), sorted_rows(fp)):
            np.testing.assert_array_equal(a, b)


def sorted_rows(fp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hub rows of ``fp`` with each row's entries by node id."""
    ip = fp.hub_indptr
    owner = np.repeat(np.arange(ip.shape[0] - 1), np.diff(ip))
    order = np.lexsort((fp.hub_nodes, owner))
    return ip, np.asarray(fp.hub_nodes)[order], np.asarray(fp.hub_counts)[order]


def test_fingerprints_without_kept_walks_are_dropped_by_an_update(engine):
    g = engine.create_graph("g", power_law_graph(300, 1500, seed=3))
    g.build_fingerprints(walks_per_node=5, keep_walks=False, hubs=None)
    assert g.stats()["fingerprints"]["walks_kept"] is False
    out = g.upsert_edges([[1, 2]])
    assert out["fingerprints_dropped"] and not g.has_fingerprints
    assert "keep_walks=False" in out["fingerprints"] and "build_fingerprints" in out["fingerprints"]
    assert g.ppr(1, k=5).method == "push"


def test_fastrp_embed_and_compose_on_the_updated_graph(engine):
    g = engine.create_graph("kg", power_law_graph(200, 1000, seed=4))
    g.upsert_edges([[1000, 1], [1, 1000], [1001, 1000]])
    g.delete_nodes([5])
    vectors = g.fastrp(dim=16)
    assert vectors.shape == (g.num_nodes, 16) and 5 not in g.node_ids
    col = engine.embed_graph("kg", "emb", dim=16, index="flat")
    assert 1000 in col.get([1000]).ids
    result = engine.compose("emb", "kg", vectors[:2], k=5)
    assert result.ids.shape == (2, 5) and 5 not in result.ids


# ------------------------------------------------------------------------------ SIGKILL

CHILD = r"""
import sys
import numpy as np
import shardwalk
from shardwalk.walks.generators import power_law_graph

path = sys.argv[1]

def ops(i):
    rng = np.random.default_rng(i)
    src = 10_000 + i * 20 + np.arange(20)  # sources of batch i: its own, so ops never collide
    return np.stack([src, rng.integers(0, 300, 20)], axis=1)

with shardwalk.Engine.open(path) as engine:
    if "g" in engine.graphs():
        g = engine.graph("g")
    else:
        g = engine.create_graph("g", power_law_graph(300, 1500, seed=0))
        g.build_fingerprints(walks_per_node=5, hubs=3, hub_walks=50)
    g.compact_ratio = 0.02  # compactions happen mid-stream too
    i = g.stats()["updates"]
    print("ready", flush=True)
    while True:
        if i % 2 == 0:
            g.upsert_edges(ops(i // 2))
        else:
            g.delete_edges(ops(i // 2)[::2])
        print(f"ack {i}", flush=True)
        i += 1
"""


def model_edges(ops_done: int) -> set[tuple[int, int]]:
    edges = {tuple(e) for e in edge_set_of(power_law_graph(300, 1500, seed=0))}
    for i in range(ops_done):
        rng = np.random.default_rng(i // 2)
        batch = np.stack([10_000 + (i // 2) * 20 + np.arange(20), rng.integers(0, 300, 20)], 1)
        if i % 2 == 0:
            edges |= {(int(a), int(b)) for a, b in batch}
        else:
            edges -= {(int(a), int(b)) for a, b in batch[::2]}
    return edges


def edge_set_of(csr) -> list[tuple[int, int]]:
    src = np.repeat(np.arange(csr.num_nodes), np.diff(csr.indptr))
    return list(zip(csr.node_ids[src].tolist(), csr.node_ids[csr.indices].tolist()))


def test_kill_graph_writer_and_reopen(tmp_path):
    path = tmp_path / "db"
    rng = np.random.default_rng(7)
    acked = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        target = int(rng.integers(4, 30))
        seen = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("ack"):
                acked = max(acked, int(line.split()[1]) + 1)
                seen += 1
                if seen >= target:
                    time.sleep(float(rng.uniform(0, 0.02)))
                    break
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
        for line in rest.splitlines():
            if line.startswith("ack"):
                acked = max(acked, int(line.split()[1]) + 1)
        assert seen, f"the child acknowledged nothing: {err[-2000:]}"
        with shardwalk.Engine.open(path) as engine:
            g = engine.graph("g")
            done = g.stats()["updates"]
            assert done in (acked, acked + 1)  # every acknowledged batch, at most one more
            assert set(edge_set(g)) == model_edges(done)
            fp = g._current().fingerprints  # the repaired fingerprints describe this graph
            assert fp is not None and fp.graph_digest == g.csr.digest()
        acked = done


# ------------------------------------------------------------------------------ state machine

NODES = st.integers(min_value=0, max_value=9)


class GraphMachine(RuleBasedStateMachine):
    """Edge upserts, deletes, node deletes, bad deletes, compactions and reopenings against a
    dict model; PPR (exact) checked against a dense solve of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="sw-gsm-")
        self.engine = shardwalk.Engine.open(self.path)
        self.edges: dict[tuple[int, int], float] = {(0, 1): 1.0, (1, 2): 2.0}
        self.nodes: set[int] = {0, 1, 2}
        self.graph = self.engine.create_graph("g", [[0, 1], [1, 2]], [1.0, 2.0])

    @initialize(fingerprints=st.booleans())
    def start(self, fingerprints: bool) -> None:
        if fingerprints:
            self.graph.build_fingerprints(walks_per_node=4, hubs=1, hub_walks=20)

    @rule(
        items=st.lists(
            st.tuples(NODES, NODES, st.floats(0.25, 8.0, allow_nan=False)), min_size=1, max_size=6
        )
    )
    def upsert(self, items) -> None:
        self.graph.upsert_edges([[u, v] for u, v, _ in items], [w for _, _, w in items])
        for u, v, w in items:
            self.edges[u, v] = float(np.float32(w))
            self.nodes |= {u, v}

    @precondition(lambda self: self.edges)
    @rule(data=st.data())
    def delete(self, data) -> None:
        pick = data.draw(st.lists(st.sampled_from(sorted(self.edges)), min_size=1, max_size=3))
        self.graph.delete_edges(pick)
        for e in pick:
            self.edges.pop(e, None)

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(data=st.data())
    def delete_node(self, data) -> None:
        v = data.draw(st.sampled_from(sorted(self.nodes)))
        self.graph.delete_nodes([v])
        self.nodes.discard(v)
        self.edges = {e: w for e, w in self.edges.items() if v not in e}

    @rule(u=NODES, v=NODES)
    def bad_delete(self, u: int, v: int) -> None:
        if (u, v) not in self.edges:
            with pytest.raises(NotFoundError):
                self.graph.delete_edges([[u, v]])

    @rule()
    def compact(self) -> None:
        self.graph.compact()

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = shardwalk.Engine.open(self.path)
        self.graph = self.engine.graph("g")

    @invariant()
    def matches_the_model(self) -> None:
        got = edge_set(self.graph)
        assert set(got) == set(self.edges)
        for e, w in self.edges.items():
            assert abs(got[e] - w) < 1e-6
        assert set(self.graph.node_ids.tolist()) == self.nodes

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def ppr(self, data) -> None:
        seed = data.draw(st.sampled_from(sorted(self.nodes)))
        check_ppr(self.graph, sorted(self.nodes), self.edges, seed)
        if self.graph.has_fingerprints:
            fp = self.graph._current().fingerprints
            assert fp.graph_digest == self.graph.csr.digest()
            assert int(np.asarray(fp.counts).sum()) > 0

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)


TestGraphMachine = GraphMachine.TestCase
TestGraphMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


def test_cli_add_and_delete_edges(tmp_path, capsys):
    from shardwalk.cli import main

    data = str(tmp_path / "db")
    (tmp_path / "g.txt").write_text("1 2\n2 3\n3 1\n")
    (tmp_path / "add.txt").write_text("# new\n3 4\n4 1\n")
    np.save(tmp_path / "del.npy", np.array([[2, 3], [4, 1]]))
    assert main(["graph", "ingest", str(tmp_path / "g.txt"), "--data", data, "--name", "g"]) == 0
    args = ["--data", data, "--name", "g", "--batch-size", "1"]
    assert main(["graph", "add-edges", str(tmp_path / "add.txt"), *args]) == 0
    assert "2 edges added or updated in 2 batch(es), 1 new nodes" in capsys.readouterr().out
    assert main(["graph", "delete-edges", str(tmp_path / "del.npy"), *args]) == 0
    assert "2 edges deleted" in capsys.readouterr().out
    assert main(["graph", "delete-edges", str(tmp_path / "del.npy"), *args]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    with shardwalk.Engine.open(data) as engine:
        assert set(edge_set(engine.graph("g"))) == {(1, 2), (3, 1), (3, 4)}


def test_a_deleted_base_node_comes_back_as_a_new_node(engine):
    g = engine.create_graph("g", [[1, 2], [2, 3], [3, 1]])
    g.delete_nodes([2])
    g.upsert_edges([[2, 1], [5, 2]])
    assert set(edge_set(g)) == {(3, 1), (2, 1), (5, 2)}
    g.delete_edges([[2, 1]])
    g.delete_nodes([2, 5])
    assert set(edge_set(g)) == {(3, 1)} and sorted(g.node_ids.tolist()) == [1, 3]


def test_reads_during_updates_see_whole_batches(engine):
    """Readers on other threads while batches of new edges (appended to the rows' segments)
    and deletes (rewritten rows) go in: every read sees the edges of a prefix of the
    acknowledged batches, never part of one."""
    import threading

    g = engine.create_graph("c", [[i, i + 1] for i in range(200)])
    rng = np.random.default_rng(4)
    states = [frozenset(edge_set(g))]
    seen: list[frozenset] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(frozenset(edge_set(g)))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(30):
            if i % 5 == 4:
                have = sorted(states[-1])
                pick = rng.choice(len(have), 3, replace=False)
                g.delete_edges([list(have[j]) for j in pick])
            else:
                g.upsert_edges(rng.integers(0, 220, size=(20, 2)))
            states.append(frozenset(edge_set(g)))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert seen and set(seen) <= set(states)


def test_undirected_upsert_last_word_wins_both_ways(engine):
    """In one batch, (1, 2) then (2, 1): the last weight holds in both directions."""
    g = engine.create_graph("uw", [[1, 2], [2, 3]], [1.0, 1.0], directed=False)
    g.upsert_edges([[1, 2], [2, 1]], [2.0, 3.0])
    edges = edge_set(g)
    assert edges[(1, 2)] == edges[(2, 1)] == 3.0


def test_a_large_batch_rebuilds_the_walks_and_replays_the_same(tmp_path):
    """A batch past ``rebuild_ratio`` of the edges walks every walk anew (the report says so):
    the fingerprints a fresh build of the new graph gives; a small batch after it is repaired;
    the log replays both to the same walks and fingerprints."""
    from shardwalk.walks import build_fingerprints

    path = tmp_path / "db"
    csr = power_law_graph(800, 4000, seed=2)
    rng = np.random.default_rng(3)
    options = dict(walks_per_node=20, hubs=8, hub_walks=200, seed=5)
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", csr)
        g.build_fingerprints(**options)
        g.recalibrate_ratio = 10.0  # no compaction after a recalibration: the log keeps both
        large = g.upsert_edges(rng.integers(0, 850, size=(800, 2)))  # a fifth of the edges
        assert large["rebuilt"] is True
        fp = g._current().fingerprints
        fresh = build_fingerprints(g.csr, **options)
        for name in ("indptr", "nodes", "counts", "hubs", "hub_indptr", "hub_nodes", "hub_counts"):
            assert np.array_equal(getattr(fp, name), getattr(fresh, name)), name
        small = g.upsert_edges(rng.integers(0, 850, size=(20, 2)))
        assert small["rebuilt"] is False and small["walks"] > 0
        fp = g._current().fingerprints
        walks = [packed(w) for w in g._walks if w is not None]
    with shardwalk.Engine.open(path) as engine:  # the log replays the rebuild and the repair
        again = engine.graph("g")
        replayed = again._current().fingerprints
        for name in ("indptr", "nodes", "counts", "hubs"):
            assert np.array_equal(getattr(replayed, name), getattr(fp, name)), name
        for a, b in zip(sorted_rows(replayed), sorted_rows(fp)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip([packed(w) for w in again._walks if w is not None], walks):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


def packed(store) -> tuple[np.ndarray, ...]:
    """A walk store's walks, packed in block order: (steps, lengths, drop marks)."""
    lens = store.walk_len.reshape(-1, store.R).sum(axis=1, dtype=np.int64)
    steps = store.steps
    blocks = [steps[int(store.blk_start[b]) : int(store.blk_start[b]) + int(lens[b])]
              for b in range(store.num_blocks)]  # fmt: skip
    return np.concatenate(blocks), store.walk_len.copy(), store.dropped.copy()


def test_the_index_overflow_is_folded_by_the_first_read_not_by_the_update(engine):
    """The walk index's overflow past a sixteenth of the steps is folded by the first read
    after the update (off the acknowledgement's path), not by the update."""
    g = engine.create_graph("g", power_law_graph(20_000, 100_000, seed=3))
    g.build_fingerprints(walks_per_node=10, hubs=None, seed=1)
    main = g._walks[0]
    rng = np.random.default_rng(5)
    for _ in range(4):
        g.upsert_edges(rng.integers(0, 20_000, size=(2_000, 2)))
        if main.overflow_used > max(1 << 16, main.total_steps // 16):
            break
    else:
        raise AssertionError(f"the updates folded the overflow ({main.overflow_used} entries)")
    g._current()  # the first read: folded
    assert main.overflow_used == 0

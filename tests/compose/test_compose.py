"""Engine.compose: kNN-seeded PPR with fused ranking, against a brute-force reference (kNN by
numpy, PPR by a dense linear solve, fusion by hand), tenant isolation as a property, batches,
graphs and collections that only partly overlap, and every bad input."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardwalk
import shardwalk.compose as compose_module
from shardwalk import (
    ComposeResult,
    F,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from tests.index.test_filters import PREDICATE, reference

N_ROWS = 400  # collection ids 0..399
GRAPH_NODES = np.arange(20, 450)  # ids 0..19 are rows but no nodes; 400..449 nodes but no rows
DIM = 8
TENANTS = ("a", "b", "c")


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((N_ROWS, DIM)).astype(np.float32)
    owners = [TENANTS[i % 3] for i in range(N_ROWS)]
    shared = [["b"] if i % 7 == 0 else [] for i in range(N_ROWS)]
    years = [2000 + i % 10 for i in range(N_ROWS)]
    src = rng.choice(GRAPH_NODES, 3000)
    dst = rng.choice(GRAPH_NODES, 3000)
    weights = rng.uniform(0.5, 5.0, 3000)  # random weights: no two nodes tie in PPR
    return vectors, owners, shared, years, (src, dst), weights


@pytest.fixture(scope="module")
def world():
    vectors, owners, shared, years, edges, weights = make_data()
    engine = shardwalk.Engine.memory()
    col = engine.create_collection("docs", dim=DIM, index="flat")
    col.upsert(
        np.arange(N_ROWS), vectors, tenants=owners, shared_with=shared, attributes={"year": years}
    )
    graph = engine.create_graph("kg", edges, weights, node_ids=GRAPH_NODES)
    queries = np.random.default_rng(1).standard_normal((6, DIM)).astype(np.float32)
    yield engine, vectors, owners, shared, years, graph, queries
    engine.close()


# -- the reference ------------------------------------------------------------------------------
def exact_ppr(graph, seeds: dict[int, float], alpha: float) -> dict[int, float]:
    """Dense solve of pi = alpha s + (1 - alpha) P^T pi, dangling nodes looping to themselves."""
    csr = graph.csr
    n = csr.num_nodes
    P = np.zeros((n, n))
    for u in range(n):
        lo, hi = csr.indptr[u], csr.indptr[u + 1]
        if hi == lo:
            P[u, u] = 1.0
        else:
            w = csr.weights[lo:hi] if csr.weights is not None else np.ones(hi - lo)
            np.add.at(P[u], csr.indices[lo:hi], w / w.sum())
    s = np.zeros(n)
    position = {int(v): i for i, v in enumerate(csr.node_ids)}
    total = sum(seeds.values())
    for node, w in seeds.items():
        s[position[node]] += w / total
    pi = np.linalg.solve(np.eye(n) - (1 - alpha) * P.T, alpha * s)
    return {int(v): float(p) for v, p in zip(csr.node_ids, pi) if p > 1e-15}


def zscores(values: dict[int, float]) -> dict[int, float]:
    v = np.array(list(values.values()), dtype=np.float64)
    spread = v.std()
    return {n: (x - v.mean()) / spread if spread > 0 else 0.0 for n, x in values.items()}


def brute_force(
    world, query, visible, *, k, knn_k, ppr_k, alpha, fuse, weight, constant, temperature=None
):
    """One query by hand: ids, fused scores, distances, PPR scores, seeds, dropped."""
    _, vectors, *_, graph, _ = world
    candidates = np.flatnonzero(visible)
    d = ((vectors[candidates] - query) ** 2).sum(axis=1)
    order = np.lexsort((candidates, d))[:knn_k]
    hits, dist = candidates[order], d[order]
    span = dist.max() - dist.min() if hits.size else 0.0
    sim = (dist.max() - dist) / span if span > 0 else np.ones(hits.size)
    nodes = set(GRAPH_NODES.tolist())
    if temperature is None:
        seeds = {int(h): 0.5 * (1 + s) for h, s in zip(hits, sim) if int(h) in nodes}
    else:  # softmax (PPR normalises the weights)
        seeds = {int(h): math.exp(s / temperature) for h, s in zip(hits, sim) if int(h) in nodes}
    ppr = exact_ppr(graph, seeds, alpha) if seeds else {}
    ppr_list = sorted((v for v in ppr if v < N_ROWS and visible[v]), key=lambda v: (-ppr[v], v))[
        :ppr_k
    ]
    knn_rank = {int(h): r + 1 for r, h in enumerate(hits)}
    ppr_rank = {v: r + 1 for r, v in enumerate(ppr_list)}
    top = ppr[ppr_list[0]] if ppr_list else 1.0
    knn_z = zscores({int(h): -d for h, d in zip(hits, dist)})
    ppr_z = zscores({v: ppr[v] for v in ppr_list}) if ppr_list else {}
    fused = {}
    for v in set(knn_rank) | set(ppr_rank):
        if fuse == "rrf":
            fused[v] = sum(
                1 / (constant + ranks[v]) for ranks in (knn_rank, ppr_rank) if v in ranks
            )
        elif fuse == "weighted_z":  # absent from a list: the list's lowest z
            s = knn_z.get(v, min(knn_z.values()))
            p = ppr_z.get(v, min(ppr_z.values(), default=0.0))
            fused[v] = weight * s + (1 - weight) * p
        else:
            s = sim[knn_rank[v] - 1] if v in knn_rank else 0.0
            if fuse == "weighted_rank":
                p = 1 - (ppr_rank[v] - 1) / ppr_k if v in ppr_rank else 0.0
            else:
                p = ppr[v] / top if v in ppr_rank else 0.0
            fused[v] = weight * s + (1 - weight) * p

    def tie_break(v):
        return (
            -fused[v],
            dist[knn_rank[v] - 1] if v in knn_rank else math.inf,
            -ppr[v] if v in ppr_rank else math.inf,
            v,
        )

    best = sorted(fused, key=tie_break)[:k]
    return {
        "ids": best,
        "scores": [fused[v] for v in best],
        "distances": [dist[knn_rank[v] - 1] if v in knn_rank else math.nan for v in best],
        "ppr": [ppr[v] if v in ppr_rank else math.nan for v in best],
        "seeds": len(seeds),
        "dropped": hits.size - len(seeds),
    }


def visible_rows(owners, shared, years, tenant, where_fn=None):
    mask = np.ones(N_ROWS, dtype=bool)
    if tenant is not None:
        mask &= np.array([o == tenant or tenant in s for o, s in zip(owners, shared)])
    if where_fn is not None:
        mask &= np.array([where_fn(y) for y in years])
    return mask


# -- against the reference ----------------------------------------------------------------------
SCOPES = {
    "all": (None, None, None),
    "tenant": ("a", None, None),
    "tenant+filter": ("b", F("year") >= 2006, lambda y: y >= 2006),
    "filter": (None, F("year") == 2003, lambda y: y == 2003),
}


@pytest.mark.parametrize("scope", list(SCOPES))
@pytest.mark.parametrize(
    "fuse, weight, constant, temperature",
    [
        ("rrf", None, None, None),
        ("rrf", None, 5.0, 0.25),
        ("weighted", None, None, None),
        ("weighted", 0.8, None, None),
        ("weighted", 0.4, None, 0.1),
        ("weighted_rank", 0.6, None, None),
        ("weighted_rank", None, None, 0.5),
        ("weighted_z", None, None, None),
        ("weighted_z", 0.3, None, 1.0),
    ],
)
def test_matches_the_brute_force_reference(world, scope, fuse, weight, constant, temperature):
    engine, _, owners, shared, years, _, queries = world
    tenant, where, where_fn = SCOPES[scope]
    visible = visible_rows(owners, shared, years, tenant, where_fn)
    k, knn_k, ppr_k, alpha = 12, 8, 15, 0.3
    result = engine.compose(
        "docs",
        "kg",
        queries,
        k=k,
        knn_k=knn_k,
        ppr_k=ppr_k,
        alpha=alpha,
        tenant=tenant,
        where=where,
        fuse=fuse,
        weight=weight,
        rank_constant=constant,
        temperature=temperature,
        ppr_params={"method": "exact", "tol": 1e-13},
    )
    assert isinstance(result, ComposeResult) and result.ppr_method == "exact"
    assert result.fuse == fuse and result.explain["temperature"]["value"] == temperature
    assert result.ids.shape == result.scores.shape == (len(queries), k)
    assert result.distances.shape == result.ppr_scores.shape == (len(queries), k)
    for i, query in enumerate(queries):
        want = brute_force(
            world,
            query,
            visible,
            k=k,
            knn_k=knn_k,
            ppr_k=ppr_k,
            alpha=alpha,
            fuse=fuse,
            weight=0.5 if weight is None else weight,
            constant=60.0 if constant is None else constant,
            temperature=temperature,
        )
        n = len(want["ids"])
        assert result.ids[i, :n].tolist() == want["ids"], f"query {i}"
        assert (result.ids[i, n:] == -1).all()
        # z-scores are O(1) sums of float32 distances and scores: absolute error ~1e-6
        atol = 1e-5 if fuse == "weighted_z" else 1e-7
        np.testing.assert_allclose(result.scores[i, :n], want["scores"], rtol=1e-5, atol=atol)
        np.testing.assert_allclose(result.distances[i, :n], want["distances"], rtol=1e-4)
        np.testing.assert_allclose(result.ppr_scores[i, :n], want["ppr"], rtol=1e-4, atol=1e-7)
        assert (result.seeds[i], result.seeds_dropped[i]) == (want["seeds"], want["dropped"])


@pytest.mark.parametrize("first_depth", ["by share", "ppr_k"])
def test_a_selective_scope_still_fills_the_ppr_list(world, monkeypatch, first_depth):
    """The PPR list holds ppr_k visible nodes even when most top PPR nodes are invisible: the
    first fetch is as deep as the scope's share of the graph predicts, and a list that still
    comes back short is fetched again deeper (forced here by a first fetch of ppr_k). Results
    equal the reference, which ranks every node."""
    engine, _, owners, shared, years, graph, queries = world
    visible = visible_rows(owners, shared, years, "c", lambda y: y in (1, 2, 2001, 2002))
    assert visible.sum() < N_ROWS // 10
    depths = []
    ppr_batch = graph.ppr_batch

    def counted(seeds, k, **params):
        depths.append(k)
        return ppr_batch(seeds, k, **params)

    monkeypatch.setattr(graph, "ppr_batch", counted)
    if first_depth == "ppr_k":
        monkeypatch.setattr(compose_module, "scoped_depth", lambda k, in_scope, nodes: k)
    result = engine.compose(
        "docs",
        "kg",
        queries,
        k=20,
        knn_k=3,
        ppr_k=20,
        tenant="c",
        where=F("year").isin([2001, 2002]),
        ppr_params={"method": "exact", "tol": 1e-13},
    )
    for i, query in enumerate(queries):
        want = brute_force(
            world, query, visible, k=20, knn_k=3, ppr_k=20, alpha=0.5, fuse="rrf", weight=0.5,
            constant=60.0,
        )  # fmt: skip
        assert result.ids[i, : len(want["ids"])].tolist() == want["ids"]
        assert np.isnan(result.distances[i]).sum() > 0  # PPR-only nodes made it in
    if first_depth == "ppr_k":
        assert depths[:2] == [20, 80]  # fetched again, 4x deeper
    else:  # 20 in a scope of a few % of the graph's nodes: one fetch of the whole graph
        assert depths == [graph.num_nodes]


# -- tenant isolation ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 80),
    seed=st.integers(0, 2**16),
    predicate=st.none() | PREDICATE,
    tenant=st.none() | st.sampled_from(["a", "b", "c", "zz"]),
    k=st.integers(1, 15),
    knn_k=st.integers(1, 10),
    fuse=st.sampled_from(["rrf", "weighted"]),
    kind=st.sampled_from(["flat", "hnsw", "partitioned", "multitenant"]),
)
def test_no_output_ever_leaves_the_tenants_rows(n, seed, predicate, tenant, k, knn_k, fuse, kind):
    rng = np.random.default_rng(seed)
    owners = [str(x) for x in rng.choice(["a", "b", "c"], n)]
    shared = [[str(t) for t in rng.choice(["a", "b", "c"], rng.integers(0, 2))] for _ in range(n)]
    rows = [
        {
            "year": int(rng.integers(2000, 2006)) if rng.random() < 0.9 else None,
            "score": float(rng.random()),
            "lang": str(rng.choice(["en", "de", "fr"])),
            "tags": [str(t) for t in rng.choice(["a", "b", "c"], rng.integers(0, 3))],
            "ok": bool(rng.random() < 0.5),
        }
        for _ in range(n)
    ]
    with shardwalk.Engine.memory() as engine:
        params = {
            "partitioned": {"partitions": 2, "train_size": 16},
            "multitenant": {"train_size": 16, "leaves": 4},
        }.get(kind, {})
        col = engine.create_collection("c", dim=4, index=kind, **params)
        col.upsert(
            np.arange(n),
            rng.random((n, 4), dtype=np.float32),
            tenants=owners,
            shared_with=shared,
            attributes=rows,
        )
        dead = rng.choice(n, size=n // 5, replace=False)
        if dead.size:
            col.delete(dead)
        # the graph covers every row and as many nodes again that are no rows
        edges = rng.integers(0, 2 * n + 1, size=(6 * n, 2))
        engine.create_graph("g", edges, node_ids=np.arange(2 * n + 1))
        result = engine.compose(
            "c",
            "g",
            rng.random((3, 4), dtype=np.float32),
            k=k,
            knn_k=knn_k,
            tenant=tenant,
            where=predicate,
            fuse=fuse,
        )
    allowed = np.ones(n, dtype=bool)
    allowed[dead] = False
    if tenant is not None:
        allowed &= np.array([o == tenant or tenant in s for o, s in zip(owners, shared)])
    if predicate is not None:
        allowed &= np.array([reference(predicate, r) for r in rows])
    got = result.ids[result.ids >= 0]
    assert (got < n).all() and allowed[got].all()
    # rows are packed left and never repeat an id
    for row in result.ids:
        kept = row[row >= 0]
        assert (row[kept.size :] == -1).all() and np.unique(kept).size == kept.size
    # the kNN stage returns min(knn_k, visible rows) hits, all of which come back when k allows
    assert ((result.ids >= 0).sum(axis=1) >= min(k, knn_k, int(allowed.sum()))).all()


# -- batches ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fuse", ["rrf", "weighted"])
def test_a_batch_equals_its_queries_one_by_one(fuse):
    vectors, owners, shared, _, edges, weights = make_data(3)
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("docs", dim=DIM, index="hnsw")
        col.upsert(np.arange(N_ROWS), vectors, tenants=owners, shared_with=shared)
        graph = engine.create_graph("kg", edges, weights, node_ids=GRAPH_NODES)
        graph.build_fingerprints(walks_per_node=20, alpha=0.5, seed=0)
        queries = np.random.default_rng(5).standard_normal((7, DIM)).astype(np.float32)
        queries[3] = vectors[5]  # a query whose hits are mostly no nodes
        args = {"k": 10, "knn_k": 6, "tenant": "b", "fuse": fuse, "knn_params": {"ef": 50}}
        args["ppr_params"] = {"accuracy": "fast"}  # the graph's own choice: its fingerprints
        batch = engine.compose("docs", "kg", queries, **args)
        assert batch.ppr_method in ("hybrid", "fingerprint") and len(batch) == 7
        for i, query in enumerate(queries):
            one = engine.compose("docs", "kg", query, **args)  # a 1-D query is one row
            assert len(one) == 1
            np.testing.assert_array_equal(one.ids[0], batch.ids[i])
            np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-6)
            np.testing.assert_allclose(one.distances[0], batch.distances[i], rtol=1e-6)
            np.testing.assert_allclose(one.ppr_scores[0], batch.ppr_scores[i], rtol=1e-6)
            assert one.seeds[0] == batch.seeds[i]
            assert one.seeds_dropped[0] == batch.seeds_dropped[i]
    assert batch.knn_seconds > 0 and batch.ppr_seconds > 0 and batch.fuse_seconds > 0
    assert batch.seconds >= batch.knn_seconds + batch.ppr_seconds + batch.fuse_seconds


def test_compose_runs_its_own_push_unless_a_ppr_method_is_named():
    vectors, *_, edges, weights = make_data(4)
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("docs", dim=DIM, index="flat")
        col.upsert(np.arange(N_ROWS), vectors)
        graph = engine.create_graph("kg", edges, weights, node_ids=GRAPH_NODES)
        graph.build_fingerprints(walks_per_node=20, alpha=0.2, seed=0)  # they serve alpha 0.2
        queries = vectors[:5] + 0.01
        args = {"k": 10, "knn_k": 8, "alpha": 0.2}
        own = engine.compose("docs", "kg", queries, **args)
        assert own.ppr_method == "push"  # not the fingerprints: compose's default_ppr
        named = compose_module.default_ppr(0.2)
        assert named == {"method": "push", "r_max": compose_module.PUSH_WORK / 0.2}
        same = engine.compose("docs", "kg", queries, **args, ppr_params=named)
        np.testing.assert_array_equal(own.ids, same.ids)
        np.testing.assert_array_equal(own.scores, same.scores)
        # a dangling rule alone names no method; accuracy= runs the graph's own choice
        ruled = engine.compose("docs", "kg", queries, **args, ppr_params={"dangling": "self_loop"})
        assert ruled.ppr_method == "push"
        graphs = engine.compose("docs", "kg", queries, **args, ppr_params={"accuracy": "fast"})
        assert graphs.ppr_method in ("hybrid", "fingerprint")
        # r_max never exceeds MAX_R_MAX, however small alpha
        assert compose_module.default_ppr(1e-3)["r_max"] == compose_module.MAX_R_MAX


def test_concurrent_calls_answer_as_sequential_ones(world):
    engine, *_, queries = world
    args = {"k": 10, "knn_k": 5, "tenant": "a", "fuse": "weighted"}
    want = engine.compose("docs", "kg", queries, **args).ids
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: engine.compose("docs", "kg", queries, **args).ids, range(16)))
    for ids in got:
        np.testing.assert_array_equal(ids, want)


# -- graphs and collections that only partly overlap --------------------------------------------
def test_graph_nodes_without_rows_never_come_back(world):
    engine, *_, queries = world
    result = engine.compose("docs", "kg", queries, k=50, knn_k=10, ppr_k=200)
    got = result.ids[result.ids >= 0]
    assert got.size and (got < N_ROWS).all()  # nodes 400..449 have no rows
    assert np.isnan(result.distances[result.ids >= 0]).any()  # PPR-only rows came in


def test_hits_that_are_no_nodes_cannot_seed(world):
    engine, vectors, *_ = world
    # each query is a stored vector of a row that is no node (ids 0..19): knn_k=1 -> no seed
    result = engine.compose("docs", "kg", vectors[:3], k=5, knn_k=1)
    assert result.seeds.tolist() == [0, 0, 0] and result.seeds_dropped.tolist() == [1, 1, 1]
    assert result.ppr_method is None and np.isnan(result.ppr_error).all()
    assert result.ids[:, 0].tolist() == [0, 1, 2] and (result.ids[:, 1:] == -1).all()
    np.testing.assert_allclose(result.scores[:, 0], 1 / 61)
    assert np.isnan(result.ppr_scores[:, 0]).all()
    # padding is each field's worst value
    assert np.isneginf(result.scores[:, 1:]).all() and np.isposinf(result.distances[:, 1:]).all()
    assert (result.ppr_scores[:, 1:] == 0).all()
    # mixed: some hits seed, the others are counted
    mixed = engine.compose("docs", "kg", vectors[:20], k=5, knn_k=10)
    assert (mixed.seeds + mixed.seeds_dropped == 10).all() and mixed.seeds_dropped.sum() > 0
    assert mixed.ppr_method == "push"  # compose's own PPR (default_ppr)


def test_weight_one_is_knn_order_and_weight_zero_is_ppr_order(world):
    engine, *_, queries = world
    knn = engine.compose("docs", "kg", queries, k=8, knn_k=8, fuse="weighted", weight=1.0)
    hits = engine.collection("docs").search(queries, k=8)
    np.testing.assert_array_equal(knn.ids, hits.ids)
    ppr = engine.compose("docs", "kg", queries, k=8, knn_k=8, fuse="weighted", weight=0.0)
    listed = ~np.isnan(ppr.ppr_scores)
    assert listed[:, 0].all()
    for row, scores in zip(ppr.ppr_scores, listed):
        kept = row[scores]
        assert (np.diff(kept) <= 0).all()  # decreasing PPR


def test_deleted_rows_never_come_back_though_the_graph_has_them():
    vectors, *_, edges, weights = make_data(2)
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("docs", dim=DIM, index="hnsw")
        col.upsert(np.arange(N_ROWS), vectors)
        engine.create_graph("kg", edges, weights, node_ids=GRAPH_NODES)
        before = engine.compose("docs", "kg", vectors[100:110], k=30)
        gone = np.unique(before.ids[before.ids >= 0])[::2]
        col.delete(gone)
        after = engine.compose("docs", "kg", vectors[100:110], k=30)
        assert not np.isin(after.ids, gone).any()


def test_collection_visible(world):
    engine, _, owners, shared, years, *_ = world
    col = engine.collection("docs")
    ids = np.array([0, 1, 2, 7, 399, 400, 10**12, 7])
    assert col.visible(ids).tolist() == [True] * 5 + [False, False, True]
    want = [o == "b" or "b" in s for o, s in zip(owners, shared)]
    got = col.visible(np.arange(N_ROWS), tenant="b")
    assert got.tolist() == want
    got = col.visible(np.arange(N_ROWS), tenant="b", where=F("year") < 2002)
    assert got.tolist() == [w and y < 2002 for w, y in zip(want, years)]
    assert not col.visible(ids, tenant="nobody").any()
    assert col.visible([]).shape == (0,)
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        col.visible([-1])
    with pytest.raises(InvalidArgumentError, match="unknown"):
        col.visible([1], where=F("nope") == 1)


# -- bad input ----------------------------------------------------------------------------------
GOOD = np.zeros((2, DIM), dtype=np.float32)
NAN = np.full((1, DIM), np.nan, dtype=np.float32)
BAD = [
    ({"collection": "nope"}, NotFoundError, r"no collection 'nope'; collections: 'docs'"),
    ({"graph": "nope"}, NotFoundError, r"no graph 'nope'; graphs: 'kg'"),
    ({"collection": 3}, InvalidArgumentError, r"collection must be a collection name \(str\)"),
    (
        {"queries": np.zeros((2, 7))},
        InvalidArgumentError,
        r"dimension 7; collection 'docs' expects 8",
    ),
    ({"queries": NAN}, InvalidArgumentError, r"NaN or infinite values .* rows 0"),
    ({"queries": np.zeros((0, DIM))}, InvalidArgumentError, r"queries is empty"),
    ({"queries": [["x"] * DIM]}, InvalidArgumentError, r"queries must be numeric"),
    ({"queries": "text"}, InvalidArgumentError, r"queries must be a 2-D array \(n, 8\)"),
    ({"k": 0}, InvalidArgumentError, r"^k must be a positive integer; got 0"),
    ({"k": 2.5}, InvalidArgumentError, r"^k must be a positive integer; got 2.5"),
    ({"k": 10**6}, ResourceExhaustedError, r"k=1000000 is above the limit of 100000"),
    ({"knn_k": 0}, InvalidArgumentError, r"knn_k must be a positive integer; got 0"),
    ({"knn_k": True}, InvalidArgumentError, r"knn_k must be a positive integer; got True"),
    ({"knn_k": 10**6}, ResourceExhaustedError, r"knn_k=1000000 is above the limit"),
    ({"ppr_k": -3}, InvalidArgumentError, r"ppr_k must be a positive integer; got -3"),
    (
        {"fuse": "sum"},
        InvalidArgumentError,
        r"fuse must be one of 'rrf', 'weighted', 'weighted_rank', 'weighted_z'; got 'sum'",
    ),
    ({"fuse": "weighted_z", "weight": 2}, InvalidArgumentError, r"in \[0, 1\].*got 2"),
    ({"temperature": 0}, InvalidArgumentError, r"temperature must be finite and > 0.*got 0"),
    ({"temperature": math.inf}, InvalidArgumentError, r"temperature must be finite and > 0"),
    ({"temperature": "warm"}, InvalidArgumentError, r"temperature must be a number"),
    ({"fuse": "weighted", "weight": 1.5}, InvalidArgumentError, r"weight .* in \[0, 1\].*got 1.5"),
    ({"fuse": "weighted", "weight": -0.1}, InvalidArgumentError, r"in \[0, 1\]"),
    ({"fuse": "weighted", "weight": math.nan}, InvalidArgumentError, r"in \[0, 1\]"),
    ({"fuse": "weighted", "weight": "0.5"}, InvalidArgumentError, r"weight must be a number"),
    (
        {"weight": 0.3},
        InvalidArgumentError,
        r"weight applies to the weighted fusions \(weighted, weighted_rank, weighted_z\) only",
    ),
    ({"rank_constant": -1}, InvalidArgumentError, r"rank_constant must be finite and >= 0"),
    (
        {"fuse": "weighted", "rank_constant": 10},
        InvalidArgumentError,
        r"rank_constant applies to fuse='rrf' only",
    ),
    ({"alpha": 0}, InvalidArgumentError, r"alpha is the stop .* must be in \(0, 1\); got 0"),
    ({"alpha": 1.0}, InvalidArgumentError, r"must be in \(0, 1\); got 1.0"),
    ({"alpha": math.nan}, InvalidArgumentError, r"must be in \(0, 1\); got nan"),
    ({"ef": 128}, InvalidArgumentError, r"unexpected parameter\(s\) ef; .*knn_params"),
    ({"knn_params": {"nprobe": 3}}, InvalidArgumentError, r"unknown parameter 'nprobe'"),
    ({"knn_params": [("ef", 3)]}, InvalidArgumentError, r"knn_params must be a dict"),
    ({"ppr_params": {"method": "magic"}}, InvalidArgumentError, r"method must be one of"),
    ({"ppr_params": {"method": "fingerprint"}}, InvalidArgumentError, r"needs fingerprints"),
    ({"ppr_params": {"r_max": 0}}, InvalidArgumentError, r"r_max must be finite and > 0"),
    ({"ppr_params": {"tol": 1e-9}}, InvalidArgumentError, r"method 'push' takes parameters"),
    ({"ppr_params": {"alpha": 0.2}}, InvalidArgumentError, r"ppr_params may not hold 'alpha'"),
    ({"ppr_params": {"k": 5}}, InvalidArgumentError, r"may not hold 'k'; pass it as .*ppr_k"),
    ({"ppr_params": {"dangling": "up"}}, InvalidArgumentError, r"dangling must be one of"),
    ({"tenant": "no spaces"}, InvalidArgumentError, r"tenant name must be"),
    ({"where": F("nope") == 1}, InvalidArgumentError, r"unknown attribute 'nope'"),
    ({"where": F("year") == "x"}, InvalidArgumentError, r"year"),
]


@pytest.mark.parametrize("change, error, message", BAD, ids=[str(c) for c, _, _ in BAD])
def test_bad_input_names_what_was_expected(world, change, error, message):
    engine, vectors, *_ = world
    # queries that seed nothing: every check must run before (and whatever) the stages do
    args = {"collection": "docs", "graph": "kg", "queries": vectors[:1], **change}
    positional = [args.pop(name) for name in ("collection", "graph", "queries")]
    with pytest.raises(error, match=message):
        engine.compose(*positional, knn_k=args.pop("knn_k", 1), **args)


def test_errors_pickle_and_carry_status_codes(world):
    import pickle

    engine, *_ = world
    with pytest.raises(InvalidArgumentError) as caught:
        engine.compose("docs", "kg", GOOD, fuse="max")
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is InvalidArgumentError and again.code == "INVALID_ARGUMENT"
    assert str(again) == str(caught.value)


def test_graph_ppr_method_and_contains():
    with shardwalk.Engine.memory() as engine:
        graph = engine.create_graph("g", np.array([[5, 7], [7, 9], [9, 5]]))
        assert graph.ppr_method() == "push"
        assert graph.ppr_method(method="exact", tol=1e-8) == "exact"
        graph.build_fingerprints(walks_per_node=5, alpha=0.5)
        assert graph.ppr_method(alpha=0.5) in ("hybrid", "fingerprint")
        assert graph.ppr_method(alpha=0.2) == "push"
        with pytest.raises(InvalidArgumentError, match=r"alpha=0\.2"):
            graph.ppr_method(method="fingerprint", alpha=0.2)
        assert graph.csr.contains(np.array([5, 6, 9, -1, 2**40])).tolist() == [
            True,
            False,
            True,
            False,
            False,
        ]

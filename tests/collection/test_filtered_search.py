"""Tenant-scoped, attribute-filtered search: never outside the scope, exactly min(k, matches)
results, recall >= 0.95 against exact filtered search in every selectivity bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardwalk.index import exact_search
from shardwalk.index.tenancy import TREE_MIN_LEAVES

import shardwalk
from shardwalk import F, InvalidArgumentError
from shardwalk.datasets import clustered_vectors
from tests.conftest import INDEX_PARAMS
from tests.index.test_filters import PREDICATE, reference

N, DIM, K = 20_000, 16, 10
KINDS = ["flat", "hnsw", "partitioned", "multitenant", "spann"]
BUCKETS = {"0.1%": 1, "1%": 10, "10%": 100, "50%": 500, "100%": 1000}  # u < value


@pytest.fixture(scope="module")
def world():
    data = clustered_vectors(N, DIM, queries=60, tenants=40, seed=11)
    rng = np.random.default_rng(5)
    u = rng.integers(0, 1000, N)
    shared = [[f"t{rng.integers(40):04d}"] if rng.random() < 0.02 else [] for _ in range(N)]
    engine = shardwalk.Engine.memory()
    cols = {}
    for kind in KINDS:
        params = {**INDEX_PARAMS[kind]}
        if kind == "multitenant":  # more leaves than the default, so the tree has top nodes
            params = {"leaves": TREE_MIN_LEAVES + 44}
        col = engine.create_collection(kind, dim=DIM, index=kind, **params)
        col.upsert(
            data.ids,
            data.vectors,
            tenants=data.tenants,
            shared_with=shared,
            attributes={"u": u, "lang": data.attributes["lang"]},
        )
        col.wait_indexed()  # recall is the index's: no row left in the exactly scored delta
        cols[kind] = col
    owners = np.array(data.tenants)
    yield data, u, owners, shared, cols
    engine.close()


def exact(data, allowed: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    rows = np.flatnonzero(allowed)
    d = ((queries[:, None, :] - data.vectors[None, rows, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1)[:, :k]
    return [set(rows[o].tolist()) for o in order]


def visible_to(owners, shared, tenant) -> np.ndarray:
    return (owners == tenant) | np.array([tenant in s for s in shared])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bucket", list(BUCKETS))
def test_recall_and_exact_count_per_selectivity_bucket(world, kind, bucket):
    data, u, _, _, cols = world
    col = cols[kind]
    allowed = u < BUCKETS[bucket]
    where = F("u") < BUCKETS[bucket]
    res = col.search(data.queries, k=K, where=where, explain=True)
    truth = exact(data, allowed, data.queries, K)
    want = min(K, int(allowed.sum()))
    assert (res.ids[:, :want] >= 0).all() and (res.ids[:, want:] == -1).all()
    assert allowed[res.ids[res.ids >= 0]].all()  # nothing outside the predicate
    recall = np.mean([len(set(r[:want].tolist()) & t) / want for r, t in zip(res.ids, truth)])
    # observed: 1.0 on exact paths; tenant-index, graph-filter and graph-postfilter >= 0.98
    assert recall >= 0.95, (kind, bucket, recall, res.explain)
    assert res.explain.matches == int(allowed.sum())
    if kind == "multitenant":
        assert col.stats()["index_stats"]["top_nodes"] > 0  # the two-level tree is in use
    if res.explain.path == "tenant-index":  # the index says how it found the rows in scope
        assert ("leaves" if kind == "multitenant" else "posting lists") in res.explain.reason


@pytest.mark.parametrize("kind", KINDS)
def test_tenant_scope_with_sharing_and_predicates(world, kind):
    data, u, owners, shared, cols = world
    col = cols[kind]
    sizes = {t: int((owners == t).sum()) for t in set(owners.tolist())}
    for tenant in [max(sizes, key=sizes.get), min(sizes, key=sizes.get), "t0007"]:
        visible = visible_to(owners, shared, tenant)
        for where, mask in [(None, visible), (F("u") < 300, visible & (u < 300))]:
            res = col.search(data.queries, k=K, tenant=tenant, where=where, explain=True)
            want = min(K, int(mask.sum()))
            assert (res.ids[:, :want] >= 0).all() and (res.ids[:, want:] == -1).all()
            assert mask[res.ids[res.ids >= 0]].all(), "a result outside the tenant's scope"
            truth = exact(data, mask, data.queries, K)
            recall = np.mean(
                [len(set(r[:want].tolist()) & t) / want for r, t in zip(res.ids, truth)]
            )
            assert recall >= 0.95, (kind, tenant, where, recall, res.explain)
            assert res.explain.visible == int(visible.sum())


def test_shared_vectors_are_visible_to_the_shared_tenant_only(world):
    data, _, owners, shared, cols = world
    idx = next(i for i, s in enumerate(shared) if s and s[0] != owners[i])
    guest = shared[idx][0]
    for col in cols.values():
        got = col.search(data.vectors[idx], k=1, tenant=guest).ids[0, 0]
        assert got == idx
        others = [t for t in set(owners.tolist()) if t not in (guest, owners[idx])][:3]
        for other in others:
            assert col.search(data.vectors[idx], k=1, tenant=other).ids[0, 0] != idx
    rec = cols["hnsw"].get([idx])
    assert rec.shared_with == [shared[idx]] and rec.tenants == [owners[idx]]


def test_unknown_tenant_and_empty_matches_give_empty_results(world):
    data, _, _, _, cols = world
    for col in cols.values():
        res = col.search(data.queries[:3], k=5, tenant="nobody", explain=True)
        assert (res.ids == -1).all() and np.isinf(res.distances).all()
        assert res.explain.path == "empty" and res.explain.visible == 0
        res = col.search(data.queries[:3], k=5, where=F("u") > 5000, explain=True)
        assert (res.ids == -1).all() and res.explain.matches == 0


def test_bad_filters_and_tenants_are_clear_errors(world):
    data, _, _, _, cols = world
    col = cols["hnsw"]
    with pytest.raises(
        InvalidArgumentError,
        match=r"filter on unknown attribute 'year'; this collection's attributes: lang, u",
    ):
        col.search(data.queries[:1], where=F("year") > 3)
    with pytest.raises(
        InvalidArgumentError, match=r"attribute 'u' holds int64; the filter compares it with 'x'"
    ):
        col.search(data.queries[:1], where=F("u") == "x")
    with pytest.raises(InvalidArgumentError, match="tenant name must be"):
        col.search(data.queries[:1], tenant="../x")
    with pytest.raises(InvalidArgumentError, match="a filter must be built from F"):
        col.search(data.queries[:1], where="u < 3")


def test_the_planner_picks_the_cheaper_of_an_exact_scan_and_a_filtered_graph_search(world):
    """At 15% of 20,000 rows (3,000 matches) a graph search for k of them needs a beam of
    ~110, dearer than scoring the 3,000 (EXACT_ROWS_PER_EF x beam rows): exact. At 25%
    (5,000 matches, beam 70) and wider, the graph with the scope as its filter; either way
    exactly min(k, matches) results, all in scope, recall >= 0.95."""
    from shardwalk.index.planner import EXACT_ROWS_PER_EF, filter_ef

    data, u, _, _, cols = world
    col = cols["hnsw"]
    for bound, path in [(150, "exact"), (250, "graph-filter"), (700, "graph-filter")]:
        allowed = u < bound
        count = int(allowed.sum())
        beam = filter_ef(col._index, {}, K, count / N)
        assert (count <= EXACT_ROWS_PER_EF * beam) == (path == "exact"), (bound, count, beam)
        res = col.search(data.queries, k=K, where=F("u") < bound, explain=True)
        assert res.explain.path == path, (bound, res.explain)
        assert (res.ids >= 0).all() and allowed[res.ids].all()
        truth = exact(data, allowed, data.queries, K)
        recall = np.mean([len(set(r.tolist()) & t) / K for r, t in zip(res.ids, truth)])
        assert recall >= 0.95, (bound, recall)  # observed: 1.0 exact, 0.99+ graph-filter


def test_a_filtered_graph_search_the_graph_leaves_short_is_completed_exactly():
    """A filter admitting a few rows far apart in the graph (the beam meets fewer than k):
    searched deeper, then exactly over the admitted rows; never a shortfall, and exactly the
    admitted rows in order of distance."""
    from shardwalk.index.hnsw import HNSWIndex

    rng = np.random.default_rng(4)
    index = HNSWIndex(dim=DIM, metric="l2", m=4, ef_construction=16, ef=8)
    vectors = rng.normal(size=(3000, DIM)).astype(np.float32)
    index.add(np.arange(3000), vectors)
    rows = np.sort(rng.choice(3000, size=7, replace=False))
    bits = np.packbits(np.isin(np.arange(3000), rows), bitorder="little")
    found = index.search(vectors[:3], 10, ef=8, admitted=(index.admit(bits), rows))
    assert (np.sort(found.ids[:, :7], axis=1) == rows).all()
    assert (found.ids[:, 7:] == -1).all() and np.isinf(found.distances[:, 7:]).all()
    d = ((vectors[:3, None, :] - vectors[None, rows, :]) ** 2).sum(-1)
    assert (found.ids[:, :7] == rows[np.argsort(d, axis=1)]).all()


def test_a_graph_filter_admits_no_tombstone_and_no_row_outside_its_bits():
    """A graph filter stands in for the graph's own filter of tombstones: the collection's
    scope masks hold live rows only, so a filtered graph search after deletes returns only
    live matches, k of them."""
    rng = np.random.default_rng(9)
    engine = shardwalk.Engine.memory()
    col = engine.create_collection("g", dim=DIM, index="hnsw", attributes={"u": "int64"})
    n = 12_000
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    u = rng.integers(0, 4, n)
    col.upsert(np.arange(n), vectors, attributes={"u": u})
    col.wait_indexed()
    where = F("u") < 2
    assert col.explain(vectors[:1], where=where).path == "graph-filter"
    dead = np.flatnonzero(u < 2)[::4]  # a quarter of the matches: ~4,500 stay (> 2,048)
    col.delete(dead)
    live = (u < 2) & ~np.isin(np.arange(n), dead)
    res = col.search(vectors[:20], k=K, where=where, explain=True)
    assert res.explain.path == "graph-filter", res.explain
    assert (res.ids >= 0).all() and live[res.ids].all()
    engine.close()


def test_explain_names_the_path(world):
    data, _, _, _, cols = world
    assert cols["hnsw"].explain(data.queries[:2], where=F("u") < 1).path == "exact"
    assert cols["hnsw"].explain(data.queries[:2], where=F("u") < 500).path == "graph-filter"
    e = cols["partitioned"].explain(data.queries[:2], where=F("u") < 500)
    assert e.path == "graph-postfilter"
    assert cols["multitenant"].explain(data.queries[:2], where=F("u") < 500).path == "tenant-index"
    assert cols["hnsw"].explain(data.queries[:2]).path == "index"
    e = cols["partitioned"].explain(data.queries[:2], where=F("u") < 100)
    assert e.matches > 0 and abs(e.estimated_matches - e.matches) < 0.5 * e.matches
    assert e.seconds > 0 and "matches" in e.reason
    assert set(e.to_dict()) >= {
        "path",
        "reason",
        "visible",
        "estimated_matches",
        "matches",
        "seconds",
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 120),
    seed=st.integers(0, 2**16),
    predicate=st.none() | PREDICATE,
    tenant=st.none() | st.sampled_from(["a", "b", "c", "zz"]),
    kind=st.sampled_from(KINDS),
    k=st.integers(1, 15),
)
def test_no_result_ever_leaves_the_scope(n, seed, predicate, tenant, kind, k):
    rng = np.random.default_rng(seed)
    vectors = rng.random((n, 4), dtype=np.float32)
    owners = [str(x) for x in rng.choice(["a", "b", "c"], n)]
    shared = [list(rng.choice(["a", "b", "c"], rng.integers(0, 2))) for _ in range(n)]
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
    engine = shardwalk.Engine.memory()
    params = {
        "partitioned": {"partitions": 2, "train_size": 16},
        "multitenant": {"train_size": 16, "leaves": 4},
    }.get(kind, {})
    col = engine.create_collection("c", dim=4, index=kind, **params)
    col.upsert(np.arange(n), vectors, tenants=owners, shared_with=shared, attributes=rows)
    dead = rng.choice(n, size=n // 5, replace=False)
    if dead.size:
        col.delete(dead)
    res = col.search(rng.random((3, 4), dtype=np.float32), k=k, tenant=tenant, where=predicate)
    allowed = np.ones(n, dtype=bool)
    allowed[dead] = False
    if tenant is not None:
        allowed &= np.array([o == tenant or tenant in s for o, s in zip(owners, shared)])
    if predicate is not None:
        allowed &= np.array([reference(predicate, r) for r in rows])
    want = min(k, int(allowed.sum()))
    assert (res.ids[:, :want] >= 0).all() and (res.ids[:, want:] == -1).all()
    assert allowed[res.ids[res.ids >= 0]].all()
    engine.close()


@pytest.mark.parametrize("kind", ["hnsw", "multitenant"])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_tenants_sharing_and_attributes_survive_reopen(tmp_path, kind, checkpoint):
    data = clustered_vectors(3000, 8, queries=20, tenants=6, seed=3)
    shared = [["t0005"] if i % 50 == 0 else [] for i in range(3000)]
    eng = shardwalk.Engine.open(tmp_path / "db")
    col = eng.create_collection("c", dim=8, index=kind)
    col.upsert(
        data.ids, data.vectors, tenants=data.tenants, shared_with=shared, attributes=data.attributes
    )
    col.delete(data.ids[:10])
    where = (F("year") >= 2000) & F("lang").isin(["en", "de"])
    before = [
        col.search(data.queries, k=5, tenant=t, where=w).ids
        for t in ("t0000", "t0005")
        for w in (None, where)
    ]
    if checkpoint:
        eng.close()
    else:
        eng._datadir.close()  # crash: the log carries tenants, access lists and attributes
    with shardwalk.Engine.open(tmp_path / "db") as eng2:
        col2 = eng2.collection("c")
        after = [
            col2.search(data.queries, k=5, tenant=t, where=w).ids
            for t in ("t0000", "t0005")
            for w in (None, where)
        ]
        for a, b in zip(before, after):
            overlap = np.mean(
                [len(set(x) & set(y)) / max(1, len(set(x) - {-1})) for x, y in zip(a, b)]
            )
            assert overlap >= (1.0 if checkpoint else 0.95)
        assert col2.get([50]).shared_with == [["t0005"]]


def test_sq8_first_pass_keeps_recall_and_survives_reopen(tmp_path):
    data = clustered_vectors(6000, 16, queries=40, tenants=4, seed=9)
    with shardwalk.Engine.open(tmp_path / "db") as eng:
        col = eng.create_collection(
            "c", dim=16, index="multitenant", quantization="sq8", train_size=2000
        )
        col.upsert(data.ids[:4000], data.vectors[:4000], tenants=data.tenants[:4000])
        col.upsert(
            data.ids[4000:], data.vectors[4000:], tenants=data.tenants[4000:]
        )  # appended codes
        col.wait_indexed()  # rankings compared below: every row in the index, none in the delta
        assert col.stats()["index_stats"]["quantization"] == "sq8"
        for tenant in (None, "t0000"):
            res = col.search(data.queries, k=K, tenant=tenant, explain=True)
            mask = np.ones(6000, bool) if tenant is None else np.array(data.tenants) == tenant
            truth = exact(data, mask, data.queries, K)
            recall = np.mean([len(set(r.tolist()) & t) / K for r, t in zip(res.ids, truth)])
            assert recall >= 0.95, (tenant, recall)  # observed 1.0
        before = col.search(data.queries, k=K, tenant="t0000").ids
    with shardwalk.Engine.open(tmp_path / "db") as eng:
        np.testing.assert_array_equal(
            eng.collection("c").search(data.queries, k=K, tenant="t0000").ids, before
        )
    with pytest.raises(
        InvalidArgumentError, match="quantization must be one of 'none', 'sq8'; got 'pq'"
    ):
        shardwalk.Engine.memory().create_collection(
            "x", dim=4, index="multitenant", quantization="pq"
        )


@pytest.mark.parametrize("kind", ["hnsw", "partitioned", "multitenant", "spann"])
def test_a_scope_matching_every_row_keeps_unfiltered_recall(kind):
    """Regression: a predicate or tenant matching every row went through the graph's post-filter
    with ef lowered to the over-fetch (25 for k=10), below the index's ef: hnsw recall 0.71
    unfiltered fell to 0.46 on 10K x 128 uniform vectors."""
    rng = np.random.default_rng(3)
    n, dim = 10_000, 128
    vectors = rng.random((n, dim), dtype=np.float32)
    queries = rng.random((100, dim), dtype=np.float32)
    d = ((queries**2).sum(1)[:, None] - 2 * queries @ vectors.T) + (vectors**2).sum(1)[None, :]
    truth = np.argsort(d, axis=1)[:, :K]
    params = {**INDEX_PARAMS[kind]}
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("u", dim=dim, index=kind, **params)
        col.upsert(np.arange(n), vectors, tenants=["all"] * n, attributes={"u": np.zeros(n)})

        def recall(result) -> float:
            return np.mean(
                [len(set(r.tolist()) & set(t.tolist())) / K for r, t in zip(result.ids, truth)]
            )

        plain = recall(col.search(queries, k=K))
        by_filter = recall(col.search(queries, k=K, where=F("u") >= 0))
        by_tenant = recall(col.search(queries, k=K, tenant="all"))
    # observed: hnsw 0.69, partitioned 0.95 both ways (before the fix the scoped searches lost
    # 0.18-0.25: partitioned 0.949 -> 0.769)
    assert by_filter >= plain and by_tenant >= plain, (plain, by_filter, by_tenant)


MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-784-euclidean-test10k"


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]))


def test_multitenant_visits_more_leaves_where_neighbourhoods_are_wide():
    """Regression: nprobe=8 is plenty on clustered data but not where leaves are poorly
    separated (mnist: 0.981). Uniform 64-dimensional vectors are the extreme case."""
    rng = np.random.default_rng(0)
    vectors = rng.random((20_000, 64), dtype=np.float32)
    queries = rng.random((100, 64), dtype=np.float32)
    truth = exact_search(vectors, queries, K, "l2").ids
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("u", dim=64, index="multitenant")
        col.upsert(np.arange(vectors.shape[0]), vectors)
        fixed = _recall(col.search(queries, k=K, probe_ratio=0).ids, truth) / K
        adaptive = _recall(col.search(queries, k=K).ids, truth) / K
    # observed: 0.32 with the fixed minimum, 0.89 with the default probe_ratio
    assert adaptive >= fixed + 0.3, (fixed, adaptive)


@pytest.mark.data
@pytest.mark.skipif(not MNIST.exists(), reason="needs ../shared/data")
def test_multitenant_defaults_reach_099_on_mnist():
    base, queries = np.load(MNIST / "base.npy"), np.load(MNIST / "query.npy")
    truth = np.load(MNIST / "gt.npy")[:, :K]
    with shardwalk.Engine.memory() as engine:
        col = engine.create_collection("mnist", dim=base.shape[1], index="multitenant")
        col.upsert(np.arange(base.shape[0]), base)
        recall = _recall(col.search(queries, k=K).ids, truth) / K
    assert recall >= 0.99, recall  # observed 0.992 (0.981 before probe_ratio)

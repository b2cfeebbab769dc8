"""Every RPC end to end on a real server (127.0.0.1, port 0): results equal the embedded
library's, errors are the library's classes, tenants only ever see their own rows, and no
malformed request gets INTERNAL or wedges the server."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardwalk
from shardwalk import F
from shardwalk.v1 import shardwalk_pb2 as pb
from shardwalk.v1 import shardwalk_pb2_grpc as pb_grpc

from .conftest import ADMIN, TENANTS, Running, key_of, seeded_rows, visible_to

DIM = 16
N = 600


@pytest.fixture(scope="module")
def docs(running: Running) -> dict:
    """A collection of N rows over four tenants and a chain-plus-random graph over its ids.
    Set up with a long deadline: on a fresh checkout the first fingerprint build compiles its
    kernels, which on a loaded machine took longer than the client's default 30 s (every test
    of the module then errored in set-up)."""
    admin = running.client(timeout=600)
    rows = seeded_rows(N, DIM)
    admin.create_collection(
        "docs", dim=DIM, index="hnsw", attributes={"year": "int64", "lang": "string"}
    )
    assert admin.collection("docs").upsert(**rows) == N
    rng = np.random.default_rng(1)
    src = np.concatenate([np.arange(N - 1), rng.integers(0, N, 3 * N)])
    dst = np.concatenate([np.arange(1, N), rng.integers(0, N, 3 * N)])
    admin.create_graph("links", np.stack([src, dst], 1), fingerprints=True, walks_per_node=8)
    return rows


def test_every_rpc_end_to_end(running: Running, docs: dict) -> None:
    admin = running.client()
    assert "docs" in admin.collections() and "links" in admin.graphs()
    docs_remote = admin.collection("docs")
    hits = docs_remote.search(docs["vectors"][:3], 5)
    assert hits.ids.shape == (3, 5) and (hits.ids[:, 0] == [0, 1, 2]).all()
    scoped = docs_remote.search(docs["vectors"][:3], 5, where=F("year") >= 2010, explain=True)
    assert scoped.explain is not None and scoped.explain.path
    got = docs_remote.get([5, 7])
    assert got.ids.tolist() == [5, 7] and got.tenants == [docs["tenants"][5], docs["tenants"][7]]
    assert got.attributes["year"] == [docs["attributes"]["year"][i] for i in (5, 7)]
    np.testing.assert_array_equal(got.vectors, docs["vectors"][[5, 7]])
    assert docs_remote.stats()["count"] == N
    ppr = admin.graph("links").ppr([0, 1], 10)
    assert ppr.ids.shape == (1, 10) and ppr.method in ("hybrid", "fingerprint")
    assert admin.graph("links").stats()["nodes"] == N

    admin.create_collection("scratch", dim=4, index="flat")
    scratch = admin.collection("scratch")
    assert scratch.upsert([1, 2, 3], np.eye(3, 4), tenants="t0") == 3
    assert scratch.delete([2]) == 1 and scratch.delete([2], missing_ok=True) == 0
    admin.flush()
    admin.drop_collection("scratch")
    assert "scratch" not in admin.collections()
    admin.create_graph("tiny", [[1, 2], [2, 3]])
    admin.drop_graph("tiny")
    assert "tiny" not in admin.graphs()


def test_embedded_and_remote_agree(running: Running, docs: dict) -> None:
    admin = running.client()
    embedded = running.engine.collection("docs")
    queries = docs["vectors"][10:20] + 0.01
    for options in ({}, {"tenant": "t1"}, {"where": F("lang") == "de"}, {"ef": 100}):
        here = embedded.search(queries, 7, **options)
        there = admin.collection("docs").search(queries, 7, **options)
        np.testing.assert_array_equal(here.ids, there.ids)
        np.testing.assert_array_equal(here.distances, there.distances)
    a, b = embedded.get([3, 1]), admin.collection("docs").get([3, 1])
    assert a.tenants == b.tenants and a.shared_with == b.shared_with
    assert a.attributes == b.attributes
    here = running.engine.graph("links").ppr_batch([[4], {5: 1.0, 6: 3.0}], 20, method="push")
    there = admin.graph("links").ppr_batch([[4], {5: 1.0, 6: 3.0}], 20, method="push")
    np.testing.assert_array_equal(here.ids, there.ids)
    np.testing.assert_allclose(here.scores, there.scores)
    assert there.method == "push" and there.error_is_bound == here.error_is_bound
    here = running.engine.graph("links").ppr_batch([[4], [9, 10]], 20, accuracy="high")
    there = admin.graph("links").ppr_batch([[4], [9, 10]], 20, accuracy="high")
    np.testing.assert_array_equal(here.ids, there.ids)
    assert (there.method, there.params) == (here.method, here.params)
    assert there.params  # the engine's choice travels back
    with_accuracy = admin.compose("docs", "links", queries[:2], ppr_params={"accuracy": "high"})
    assert with_accuracy.ppr_method == "push"  # alpha 0.5: the fingerprints (0.15) do not serve
    for options in ({}, {"tenant": "t3", "where": F("year") >= 2010}, {"fuse": "weighted"}):
        here = running.engine.compose("docs", "links", queries[:4], k=8, **options)
        there = admin.compose("docs", "links", queries[:4], k=8, **options)
        np.testing.assert_array_equal(here.ids, there.ids)
        np.testing.assert_array_equal(here.scores, there.scores)
        np.testing.assert_array_equal(here.distances, there.distances)
        np.testing.assert_array_equal(here.seeds, there.seeds)
        assert (here.ppr_method, here.fuse, here.alpha) == (
            there.ppr_method,
            there.fuse,
            there.alpha,
        )


EDGE_CALLS = {
    "search k=1": lambda c: c.collection("docs").search(np.ones((2, DIM)), 1),
    "ppr alpha near 0": lambda c: c.graph("links").ppr([4], 5, method="push", alpha=0.01),
    "ppr alpha near 1": lambda c: c.graph("links").ppr([4], 5, method="push", alpha=0.99),
    "compose ones": lambda c: c.compose("docs", "links", np.ones((1, DIM)), k=1, knn_k=1, ppr_k=1),
    "compose weight 0": lambda c: c.compose(
        "docs", "links", np.ones((1, DIM)), fuse="weighted", weight=0.0
    ),
    "compose weight 1": lambda c: c.compose(
        "docs", "links", np.ones((1, DIM)), fuse="weighted", weight=1.0
    ),
    "compose rank_constant 0": lambda c: c.compose(
        "docs", "links", np.ones((1, DIM)), rank_constant=0.0, alpha=0.99
    ),
}


@pytest.mark.parametrize("name", sorted(EDGE_CALLS))
def test_embedded_and_remote_agree_at_edge_values(running: Running, docs: dict, name: str) -> None:
    here, there = EDGE_CALLS[name](running.engine), EDGE_CALLS[name](running.client())
    np.testing.assert_array_equal(here.ids, there.ids)
    assert getattr(here, "alpha", None) == getattr(there, "alpha", None)


def test_a_zero_on_the_wire_is_not_unset(running: Running, docs: dict) -> None:
    """proto3 optional fields: an unset k or alpha means the library's default, a zero that
    is set reaches the library (which refuses it), also from a client other than ours."""
    channel = grpc.insecure_channel(running.address)
    stub = pb_grpc.ShardwalkStub(channel)
    metadata = (("authorization", f"Bearer {ADMIN}"),)
    queries = pb.Vectors(dim=DIM, data=np.zeros((1, DIM), "<f4").tobytes())
    assert (
        stub.Search(pb.SearchRequest(collection="docs", queries=queries), metadata=metadata).k == 10
    )
    ppr = stub.PersonalizedPageRank(
        pb.PersonalizedPageRankRequest(graph="links", queries=[pb.Seeds(nodes=[1])]),
        metadata=metadata,
    )
    assert ppr.k == 100 and ppr.alpha == running.engine.graph("links").ppr([1]).alpha
    for rpc, request in [
        ("Search", pb.SearchRequest(collection="docs", queries=queries, k=0)),
        ("PersonalizedPageRank", pb.PersonalizedPageRankRequest(
            graph="links", queries=[pb.Seeds(nodes=[1])], k=0)),
        ("PersonalizedPageRank", pb.PersonalizedPageRankRequest(
            graph="links", queries=[pb.Seeds(nodes=[1])], alpha=0.0)),
        ("Compose", pb.ComposeRequest(collection="docs", graph="links", queries=queries, k=0)),
        ("Compose", pb.ComposeRequest(
            collection="docs", graph="links", queries=queries, knn_k=0)),
        ("Compose", pb.ComposeRequest(
            collection="docs", graph="links", queries=queries, ppr_k=0)),
        ("Compose", pb.ComposeRequest(
            collection="docs", graph="links", queries=queries, alpha=0.0)),
    ]:  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, rpc)(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, request)
        assert "got 0" in err.value.details(), err.value.details()
    channel.close()


BAD_CALLS = {
    "wrong dimension": lambda c: c.collection("docs").search(np.zeros((1, DIM + 1))),
    "NaN query": lambda c: c.collection("docs").search(np.full((1, DIM), np.nan)),
    "empty queries": lambda c: c.collection("docs").search(np.zeros((0, DIM))),
    "zero k": lambda c: c.collection("docs").search(np.zeros((1, DIM)), 0),
    "unknown collection": lambda c: c.collection("nope").search(np.zeros((1, DIM))),
    "unknown field": lambda c: c.collection("docs").search(np.zeros((1, DIM)), where=F("x") == 1),
    "wrong field type": lambda c: c.collection("docs").search(
        np.zeros((1, DIM)), where=F("year") == "x"
    ),
    "unknown search parameter": lambda c: c.collection("docs").search(np.zeros((1, DIM)), nope=1),
    "unknown id": lambda c: c.collection("docs").get([10**9]),
    "duplicate ids": lambda c: c.collection("docs").upsert([1, 1], np.zeros((2, DIM))),
    "NaN vector": lambda c: c.collection("docs").upsert([1], np.full((1, DIM), np.nan)),
    "vectors for more ids": lambda c: c.collection("docs").upsert([1, 2], np.zeros((3, DIM))),
    "vectors of strings": lambda c: c.collection("docs").upsert([1], [["a"] * DIM]),
    "tenants for more ids": lambda c: c.collection("docs").upsert(
        [1, 2], np.zeros((2, DIM)), tenants=["t0", "t1", "t2"]
    ),
    "one tenant in a list for two ids": lambda c: c.collection("docs").upsert(
        [1, 2], np.zeros((2, DIM)), tenants=["t0"]
    ),
    "bad tenant name": lambda c: c.collection("docs").upsert([1], np.zeros((1, DIM)), "a b"),
    "shared_with for fewer ids": lambda c: c.collection("docs").upsert(
        [1, 2], np.zeros((2, DIM)), shared_with=[["t1"]]
    ),
    "graph: three columns of edges": lambda c: c.create_graph("g", np.zeros((2, 3), int)),
    "graph: float edges": lambda c: c.create_graph("g", np.array([[0.5, 1.0]])),
    "graph: negative node": lambda c: c.create_graph("g", np.array([[-1, 2]])),
    "graph: src and dst of two lengths": lambda c: c.create_graph("g", ([0, 1], [1])),
    "edges update: three columns": lambda c: c.graph("links").upsert_edges(np.zeros((1, 3), int)),
    "edges update: float ids": lambda c: c.graph("links").upsert_edges(np.array([[0.5, 1.0]])),
    "edges delete: negative id": lambda c: c.graph("links").delete_edges(np.array([[-3, 1]])),
    "nodes delete: float ids": lambda c: c.graph("links").delete_nodes([0.5]),
    "existing collection": lambda c: c.create_collection("docs", dim=DIM),
    "bad metric": lambda c: c.create_collection("other", dim=DIM, metric="l3"),
    "unknown graph": lambda c: c.graph("nope").ppr([1]),
    "unknown seed": lambda c: c.graph("links").ppr([10**9]),
    "bad alpha": lambda c: c.graph("links").ppr([1], alpha=1.5),
    "bad method": lambda c: c.graph("links").ppr([1], method="magic"),
    "compose: unknown graph": lambda c: c.compose("docs", "nope", np.zeros((1, DIM))),
    "compose: wrong dimension": lambda c: c.compose("docs", "links", np.zeros((1, 3))),
    "compose: bad fuse": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), fuse="max"),
    "compose: bad weight": lambda c: c.compose(
        "docs", "links", np.zeros((1, DIM)), fuse="weighted", weight=2.0
    ),
    "compose: bad alpha": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), alpha=1.0),
    "compose: bad ppr parameter": lambda c: c.compose(
        "docs", "links", np.zeros((1, DIM)), ppr_params={"nope": 1}
    ),
    # zeros and edge values: a zero that is set is not "unset" (proto3 optional fields)
    "negative k": lambda c: c.collection("docs").search(np.zeros((1, DIM)), -1),
    "huge k": lambda c: c.collection("docs").search(np.zeros((1, DIM)), 2**40),
    "ppr: zero k": lambda c: c.graph("links").ppr([1], 0),
    "ppr: zero alpha": lambda c: c.graph("links").ppr([1], alpha=0.0),
    "ppr: integer zero alpha": lambda c: c.graph("links").ppr([1], alpha=0),
    "ppr: alpha 1": lambda c: c.graph("links").ppr([1], alpha=1.0),
    "ppr: negative alpha": lambda c: c.graph("links").ppr([1], alpha=-0.25),
    "ppr: NaN alpha": lambda c: c.graph("links").ppr([1], alpha=float("nan")),
    "ppr: string alpha": lambda c: c.graph("links").ppr([1], alpha="0.5"),
    "compose: zero k": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), k=0),
    "compose: zero knn_k": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), knn_k=0),
    "compose: zero ppr_k": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), ppr_k=0),
    "compose: zero alpha": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), alpha=0.0),
    "compose: integer alpha": lambda c: c.compose("docs", "links", np.zeros((1, DIM)), alpha=0),
    "compose: zero weight": lambda c: c.compose(
        "docs", "links", np.zeros((1, DIM)), fuse="weighted", weight=-0.0, rank_constant=0.0
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_same_error_class_embedded_and_remote(running: Running, docs: dict, name: str) -> None:
    call = BAD_CALLS[name]
    with pytest.raises(shardwalk.ShardwalkError) as embedded:
        call(running.engine)
    with pytest.raises(shardwalk.ShardwalkError) as remote:
        call(running.client())
    assert type(remote.value) is type(embedded.value)
    assert str(remote.value) == str(embedded.value)


def test_authentication_and_roles(running: Running, docs: dict) -> None:
    query = docs["vectors"][:1]
    for key in (None, "not-a-key-at-all"):
        with pytest.raises(shardwalk.UnauthenticatedError):
            running.client(key).collection("docs").search(query)
    t0 = running.client(key_of("t0"))
    with pytest.raises(shardwalk.PermissionDeniedError, match="acts for tenant 't0'"):
        t0.collection("docs").search(query, tenant="t1")
    for admin_only in (
        lambda: t0.create_collection("mine", dim=4),
        lambda: t0.drop_collection("docs"),
        lambda: t0.drop_graph("links"),
        lambda: t0.flush(),
    ):
        with pytest.raises(shardwalk.PermissionDeniedError, match="admin"):
            admin_only()
    with pytest.raises(shardwalk.PermissionDeniedError, match="collection"):
        t0.graph("links").ppr([0])
    assert set(t0.collection("docs").stats()) == {"name", "dim", "metric", "index", "attributes"}


def test_tenant_writes_touch_only_their_rows(running: Running, docs: dict) -> None:
    admin = running.client()
    admin.create_collection("notes", dim=4, index="flat")
    admin.collection("notes").upsert(
        [1, 2, 3], np.eye(3, 4), tenants=["t0", "t1", "t1"], shared_with=[[], ["t0"], []]
    )
    t0 = running.client(key_of("t0")).collection("notes")
    assert t0.upsert([1, 10], np.ones((2, 4))) == 2  # its own row and a new one
    assert running.engine.collection("notes").get([10]).tenants == ["t0"]
    # t1's row 2, shared with t0: readable, not writable; t0's upsert of 2 writes its own row 2
    assert t0.upsert([2], np.full((1, 4), 5.0)) == 1
    assert t0.get([2]).tenants == ["t0"] and t0.get([2]).vectors[0, 0] == 5.0  # its own first
    assert running.engine.collection("notes").get([2]).tenants == ["t0", "t1"]
    assert running.engine.collection("notes").get([2], tenant="t1").vectors[0, 1] == 1.0
    with pytest.raises(shardwalk.PermissionDeniedError, match="writes rows of tenant 't0'"):
        t0.upsert([11], np.ones((1, 4)), tenants="t1")
    assert t0.delete([2]) == 1  # its own row 2; t1's shared row stays
    assert t0.get([2]).tenants == ["t1"]
    with pytest.raises(shardwalk.PermissionDeniedError, match="shared with tenant 't0'"):
        t0.delete([2])
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 3"):
        t0.delete([3])  # t1's row, invisible to t0: reported like a missing id
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 3"):
        t0.get([1, 3])
    assert t0.delete([3, 10], missing_ok=True) == 1
    assert running.engine.collection("notes").get([3]).tenants == ["t1"]


filters = st.one_of(
    st.none(),
    st.builds(lambda y: F("year") >= y, st.integers(1995, 2030)),
    st.builds(lambda lang: F("lang") == lang, st.sampled_from(["en", "de", "fr", "xx"])),
    st.builds(
        lambda y, lang: (F("year") < y) | ~(F("lang") == lang),
        st.integers(1995, 2030),
        st.sampled_from(["en", "de"]),
    ),
)


def _matches(rows: dict, i: int, where: object) -> bool:
    if where is None:
        return True
    engine = shardwalk.Engine.memory()  # evaluate the predicate the library's way, on one row
    c = engine.create_collection("one", dim=DIM, index="flat")
    c.upsert(
        [0],
        rows["vectors"][i : i + 1],
        attributes={n: [v[i]] for n, v in rows["attributes"].items()},
    )
    return bool(c.visible([0], where=where)[0])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    tenant=st.sampled_from(TENANTS),
    where=filters,
    k=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    asked=st.lists(st.integers(0, N + 5), min_size=1, max_size=8, unique=True),
)
def test_tenant_isolation(
    running: Running, docs: dict, tenant: str, where, k: int, seed: int, asked: list[int]
) -> None:
    client = running.client(key_of(tenant))
    mine = visible_to(docs, tenant)
    query = np.random.default_rng(seed).standard_normal((2, DIM)).astype(np.float32)
    found = client.collection("docs").search(query, k, where=where).ids
    for i in found[found >= 0].tolist():
        assert i in mine and _matches(docs, i, where)
    try:
        got = client.collection("docs").get(asked).ids.tolist()
        assert set(got) <= mine
    except shardwalk.NotFoundError:
        assert not set(asked) <= mine
    seeds = [i for i in asked if i in mine] or sorted(mine)[:1]
    ppr = client.graph("links").ppr(seeds, k, collection="docs").ids
    assert set(ppr[ppr >= 0].tolist()) <= mine
    composed = client.compose("docs", "links", query, k=k, where=where).ids
    for i in composed[composed >= 0].tolist():
        assert i in mine and _matches(docs, i, where)


def test_tenant_ppr_from_a_seed_that_reaches_few_nodes(running: Running, docs: dict) -> None:
    """A PPR answer padded with -1 (the seed reaches fewer nodes than were fetched) is scoped
    like any other, not refused (bench/server.py found it on a power-law graph)."""
    admin = running.client()
    edges = np.array([[0, 1], [1, 0]] + [[i, i + 1] for i in range(2, N - 1)])
    admin.create_graph("islands", edges, node_ids=np.arange(N))
    tenant = docs["tenants"][0]
    ppr = running.client(key_of(tenant)).graph("islands").ppr([0], 10, collection="docs").ids
    assert ppr.shape == (1, 10) and ppr[0, 0] == 0
    assert set(ppr[ppr >= 0].tolist()) <= visible_to(docs, tenant) & {0, 1}
    assert (ppr[0, 2:] == -1).all()


def test_tenant_ppr_on_a_graph_larger_than_one_ppr_call(running: Running, docs: dict) -> None:
    """A small scope on a graph of more than MAX_K nodes: the first fetch is as deep as the
    scope's share predicts, capped at MAX_K (what one PPR call returns), as compose caps it;
    the server's copy of the rule once asked for every node and got RESOURCE_EXHAUSTED. The
    server's answer is the library's (shardwalk.compose.scoped_ppr)."""
    from shardwalk.compose import scoped_ppr
    from shardwalk.validation import MAX_K

    nodes = MAX_K + 20_000
    running.engine.create_graph(
        "wide", np.array([[0, 1], [1, 2], [2, 0]]), node_ids=np.arange(nodes)
    )
    tenant = docs["tenants"][0]
    k = 400  # 2k over the tenant's share of the graph: more than every node
    remote = running.client(key_of(tenant)).graph("wide").ppr([0], k, collection="docs")
    mine = visible_to(docs, tenant)
    found = remote.ids[remote.ids >= 0].tolist()
    assert found and set(found) <= mine & {0, 1, 2}
    assert (remote.ids[0, len(found) :] == -1).all()
    graph, collection = running.engine.graph("wide"), running.engine.collection("docs")
    embedded = scoped_ppr(graph, collection, [[0]], k, tenant=tenant)
    np.testing.assert_array_equal(remote.ids, embedded.ids)
    np.testing.assert_allclose(remote.scores, embedded.scores)
    running.engine.drop_graph("wide")


def test_limits(running: Running, docs: dict) -> None:
    docs_remote = running.client().collection("docs")
    with pytest.raises(shardwalk.ResourceExhaustedError, match="max_k"):
        docs_remote.search(docs["vectors"][:1], 501)
    with pytest.raises(shardwalk.ResourceExhaustedError, match="max_batch"):
        docs_remote.search(docs["vectors"][:65], 5)
    with pytest.raises(shardwalk.ResourceExhaustedError):  # above max_message_bytes (1 MiB)
        docs_remote.search(np.zeros((20_000, DIM), dtype=np.float32), 5)


def _raw(running: Running, method: str) -> grpc.UnaryUnaryMultiCallable:
    channel = grpc.insecure_channel(running.address)
    return channel.unary_unary(f"/shardwalk.v1.Shardwalk/{method}")


vectors_msgs = st.builds(pb.Vectors, dim=st.integers(0, 2**32 - 1), data=st.binary(max_size=256))
values = (
    st.builds(pb.Value, int_value=st.integers(-(2**63), 2**63 - 1))
    | st.builds(pb.Value, string_value=st.text(max_size=5))
    | st.just(pb.Value())
)
filter_msgs = st.recursive(
    st.builds(
        pb.Filter,
        eq=st.builds(pb.FieldValue, field=st.sampled_from(["", "year", "x"]), value=values),
    )
    | st.builds(pb.Filter, exists=st.sampled_from(["", "lang"]))
    | st.builds(pb.Filter, range=st.builds(pb.Range, field=st.just("year"), low=values))
    | st.just(pb.Filter()),
    lambda inner: (
        st.builds(pb.Filter, negate=inner)
        | st.builds(lambda ts: pb.Filter(all=pb.Filters(terms=ts)), st.lists(inner, max_size=3))
    ),
    max_leaves=40,
)
search_msgs = st.builds(
    pb.SearchRequest,
    collection=st.sampled_from(["docs", "", "nope", "x" * 300]),
    queries=vectors_msgs,
    k=st.integers(0, 2**32 - 1),
    tenant=st.sampled_from(["", "t0", "t9", "\x00"]),
    filter=filter_msgs,
    params=st.dictionaries(st.sampled_from(["ef", "k", "nope", "probe_ratio"]), values, max_size=2),
)
ppr_msgs = st.builds(
    pb.PersonalizedPageRankRequest,
    graph=st.sampled_from(["links", "", "nope"]),
    queries=st.lists(
        st.builds(
            pb.Seeds,
            nodes=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
            weights=st.lists(st.floats(allow_nan=True), max_size=3),
        ),
        max_size=3,
    ),
    k=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["", "push", "exact", "fingerprint", "magic"]),
    alpha=st.floats(allow_nan=True),
    dangling=st.sampled_from(["", "drop", "bad"]),
    collection=st.sampled_from(["", "docs", "nope"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    message=st.one_of(
        st.tuples(st.just("Search"), search_msgs.map(lambda m: m.SerializeToString())),
        st.tuples(st.just("PersonalizedPageRank"), ppr_msgs.map(lambda m: m.SerializeToString())),
        st.tuples(
            st.sampled_from(["Search", "Get", "Delete", "CreateCollection", "Stats"]),
            st.binary(max_size=64),
        ),
    ),
    key=st.sampled_from([ADMIN, key_of("t0")]),
)
def test_malformed_requests_never_internal(running: Running, docs: dict, message, key) -> None:
    method, data = message
    call = _raw(running, method)
    try:
        call(data, timeout=10, metadata=(("authorization", f"Bearer {key}"),))
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_deep_filters_are_invalid_not_internal(running: Running, docs: dict) -> None:
    call = _raw(running, "Search")
    metadata = (("authorization", f"Bearer {ADMIN}"),)
    deep = pb.Filter(exists="year")
    for _ in range(60):  # deeper than the library takes (32), shallower than protobuf's 100
        deep = pb.Filter(negate=deep)
    request = pb.SearchRequest(
        collection="docs", queries=pb.Vectors(dim=DIM, data=bytes(4 * DIM)), k=3, filter=deep
    )
    with pytest.raises(grpc.RpcError) as err:
        call(request.SerializeToString(), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested more than 32" in err.value.details()
    # 500 levels, encoded by hand: protobuf itself refuses to parse it
    node = pb.Filter(exists="year").SerializeToString()
    for _ in range(500):
        node = b"\x42" + _encode_varint(len(node)) + node  # field 8 (negate), length-delimited
    data = request.SerializeToString().split(b"\x2a", 1)[0]  # everything before field 5
    data += b"\x2a" + _encode_varint(len(node)) + node
    with pytest.raises(grpc.RpcError) as err:
        call(data, metadata=metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


def test_health_reflection_and_metrics(running: Running, docs: dict) -> None:
    channel = grpc.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="shardwalk.v1.Shardwalk"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"shardwalk.v1.Shardwalk", "grpc.health.v1.Health"} <= names
    running.client().collection("docs").search(docs["vectors"][:1])
    count = running.server.registry.get_sample_value(
        "shardwalk_requests_total", {"rpc": "Search", "tenant": "admin", "code": "OK"}
    )
    assert count is not None and count >= 1


def test_concurrent_load_without_errors(running: Running, docs: dict) -> None:
    """32 clients for 20 s (bounded): searches, gets, PPR and upserts, no error."""
    errors: list[BaseException] = []
    calls = [0] * 32
    stop = time.monotonic() + 20

    def client_loop(c: int) -> None:
        tenant = TENANTS[c % len(TENANTS)]
        client = running.client(ADMIN if c % 8 == 0 else key_of(tenant))
        rng = np.random.default_rng(c)
        try:
            while time.monotonic() < stop:
                q = docs["vectors"][rng.integers(0, N, 2)]
                client.collection("docs").search(q, 10, where=F("year") >= 2005)
                if c % 8 == 0:
                    i = int(rng.integers(N, N + 50))
                    client.collection("docs").upsert([i], q[:1], tenants=tenant)
                elif c % 4 == 1:
                    client.graph("links").ppr(
                        sorted(visible_to(docs, tenant))[:2], 10, collection="docs"
                    )
                calls[c] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert all(calls), calls  # every client got answers


def test_async_client_has_the_same_shape(running: Running, docs: dict) -> None:
    import asyncio

    async def main() -> None:
        async with shardwalk.AsyncClient(running.address, api_key=key_of("t2")) as client:
            docs_remote = client.collection("docs")
            hits, sync_hits = (
                await docs_remote.search(docs["vectors"][:4], 5),
                (running.client(key_of("t2")).collection("docs").search(docs["vectors"][:4], 5)),
            )
            np.testing.assert_array_equal(hits.ids, sync_hits.ids)
            assert set(hits.ids[hits.ids >= 0].tolist()) <= visible_to(docs, "t2")
            assert await docs_remote.upsert([N + 100], docs["vectors"][:1]) == 1
            assert (await docs_remote.get([N + 100])).tenants == ["t2"]
            assert await docs_remote.delete([N + 100]) == 1
            mine = sorted(visible_to(docs, "t2"))[:3]
            ppr = await client.graph("links").ppr(mine, 10, collection="docs")
            assert set(ppr.ids[ppr.ids >= 0].tolist()) <= visible_to(docs, "t2")
            assert "docs" in await client.collections()
            with pytest.raises(shardwalk.InvalidArgumentError, match="dimension"):
                await docs_remote.search(np.zeros((1, DIM + 1)))
            with pytest.raises(shardwalk.PermissionDeniedError):
                await client.create_collection("x", dim=4)

    asyncio.run(main())


def test_unreachable_server_is_retried_then_unavailable() -> None:
    client = shardwalk.Client(
        "127.0.0.1:1", api_key=ADMIN, timeout=2, retries=2, connect_timeout=0.2
    )
    start = time.monotonic()
    with pytest.raises(shardwalk.ShardwalkError, match="unavailable"):
        client.collections()
    assert time.monotonic() - start >= 0.1  # backed off at least once


def test_deadlines_reach_the_engine(running: Running, docs: dict) -> None:
    """A client deadline shorter than an exact PPR solve: the client gets
    DeadlineExceededError and the server's solve stops at the deadline too."""
    from shardwalk.walks.generators import power_law_graph

    if "big" not in running.engine.graphs():
        csr = power_law_graph(50_000, 250_000, directed=False, seed=0)
        running.engine.create_graph("big", csr)
    slow = {"method": "exact", "tol": 1e-15}  # about 0.2 s
    running.client().graph("big").ppr([0], 10, **slow)  # warm
    hurried = running.client(timeout=0.05)
    with pytest.raises(shardwalk.DeadlineExceededError):
        hurried.graph("big").ppr([0], 10, **slow)
    sample = {"rpc": "PersonalizedPageRank", "tenant": "admin", "code": "DEADLINE_EXCEEDED"}
    for _ in range(100):  # the server's side ends within a poll of the stop flag
        if running.server.registry.get_sample_value("shardwalk_requests_total", sample):
            break
        time.sleep(0.02)
    assert running.server.registry.get_sample_value("shardwalk_requests_total", sample) >= 1


def test_tls(tmp_path) -> None:
    """A server with [tls] answers a client that trusts its certificate, and refuses
    plaintext."""
    import shutil
    import subprocess

    from shardwalk.server.app import Server
    from shardwalk.server.config import load_config

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "server.toml").write_text(
        f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n\n'
        '[tls]\ncert = "server.crt"\nkey = "server.key"\n'
    )
    engine = shardwalk.Engine.memory()
    server = Server(engine, load_config(tmp_path / "server.toml")).start()
    try:
        address = f"127.0.0.1:{server.port}"
        trusted = shardwalk.Client(
            address, api_key=ADMIN, tls=(tmp_path / "server.crt").read_bytes()
        )
        assert trusted.collections() == []
        plain = shardwalk.Client(address, api_key=ADMIN, timeout=2, retries=0)
        with pytest.raises(shardwalk.ShardwalkError):
            plain.collections()
    finally:
        server.stop(grace=1)

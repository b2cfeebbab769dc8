"""Non-interference, as a property: whatever other tenants hold, every answer tenant a gets is
the same.

Hypothesis generates two worlds that differ only in other tenants' rows (owned by b, by c and
shared with b, by nobody; with attributes a collection does not declare), in collections and
graphs outside tenant a's key, and a sequence of tenant-a calls (Search with and without
filters and explain, Get, Delete, Upsert, Stats, ListCollections, ListGraphs, PPR scoped to a
collection, Compose). Every call goes through the server's dispatcher (authentication, parsing,
the handler, error mapping) on each world in turn; status code, message and the decoded
response (timings aside) must be equal.

Ids are namespaced by owner, so the other tenants' rows use the very ids tenant a holds,
writes, reads and deletes: their rows of those ids change nothing tenant a is told.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardwalk.server.app import Dispatcher
from shardwalk.server.config import parse_config

import shardwalk
from shardwalk import F
from shardwalk._wire import attributes_to_pb, filter_to_pb, vectors_to_pb
from shardwalk.v1 import shardwalk_pb2 as pb

DIM = 4
MINE = np.arange(0, 30)  # tenant a's rows, in both worlds
UPSERTABLE = (0, 60)  # ids tenant a upserts (other tenants may hold them too)
OTHERS = (0, 160)  # ids of other tenants' rows: a's own ids among them
NODES = 160  # the graph's nodes: 0..159, a's ids and others'
KEY = "key-of-a-0000"
CONFIG = parse_config(
    {
        "api_keys": [
            {"key": "admin-key-0000", "role": "admin"},
            {"key": KEY, "tenant": "a", "collections": ["docs", "vec"], "graphs": ["links"]},
        ]
    }
)
METADATA = [("authorization", f"Bearer {KEY}")]
RESPONSES = {
    "Search": pb.SearchResponse,
    "Get": pb.GetResponse,
    "Upsert": pb.UpsertResponse,
    "Delete": pb.DeleteResponse,
    "PersonalizedPageRank": pb.PersonalizedPageRankResponse,
    "Stats": pb.StatsResponse,
    "ListCollections": pb.ListResponse,
    "ListGraphs": pb.ListResponse,
    "Compose": pb.ComposeResponse,
}
TIMINGS = ("seconds", "knn_seconds", "ppr_seconds", "fuse_seconds")


def _vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def build(others: dict) -> shardwalk.Engine:
    """The shared part (tenant a's rows, the graph) plus ``others``."""
    engine = shardwalk.Engine.memory()
    mine = _vectors(0, MINE.size)
    years = (2000 + MINE % 7).tolist()
    for name, index in (("docs", "flat"), ("vec", "hnsw")):
        collection = engine.create_collection(
            name, dim=DIM, index=index, attributes={"year": "int64", "tag": "string"}
        )
        # tenant a's rows, with other rows interleaved between its writes
        for part in np.array_split(np.arange(MINE.size), 3):
            collection.upsert(
                MINE[part],
                mine[part],
                tenant="a",
                attributes={
                    "year": [years[i] for i in part],
                    "tag": [["x", "y", None][i % 3] for i in part],
                },
            )
            _write_others(collection, others, part[0])
    rng = np.random.default_rng(1)
    edges = rng.integers(0, NODES, (4 * NODES, 2))
    engine.create_graph("links", np.concatenate([edges, [[i, i + 1] for i in range(NODES - 1)]]))
    if others["extra"]:
        engine.create_collection("other", dim=DIM, index="flat")
        engine.create_graph("other_graph", np.array([[0, 1]]))
    return engine


def _write_others(collection: shardwalk.Collection, others: dict, step: int) -> None:
    ids = [i for i in others["ids"] if i % 3 == step % 3]
    if not ids:
        return
    vectors = _vectors(others["seed"], len(ids))
    # other tenants' rows, each written in its owner's namespace (as their keys write them);
    # c shares its rows with b
    for owner in ("b", "c"):
        at = [j for j, i in enumerate(ids) if ("b", "c")[i % 2] == owner]
        if not at:
            continue
        mine = [ids[j] for j in at]
        collection.upsert(
            mine,
            vectors[at],
            attributes={"year": [1990 + i % 40 for i in mine], "secret": [f"s{i}" for i in mine]},
            shared_with=[["b"] if owner == "c" else [] for _ in mine],
            tenant=owner,
        )


def worlds(min_size: int) -> st.SearchStrategy[dict]:
    """Other tenants' rows: any ids (a's own among them); the second world (``min_size``
    > 0) also holds every id tenant a holds or upserts, so each of a's writes meets another
    owner's row of its id in one world and maybe not in the other."""
    ids = st.lists(st.integers(*OTHERS), min_size=min_size, max_size=40, unique=True)
    if min_size:
        ids = ids.map(lambda drawn: sorted(set(drawn) | set(range(*UPSERTABLE))))
    return st.fixed_dictionaries(
        {
            "ids": ids,
            "seed": st.integers(0, 100),
            "extra": st.booleans() if min_size == 0 else st.just(True),
        }
    )


# ids of a's rows, absent ones and other tenants' (which a world may hold or not)
any_ids = st.lists(
    st.one_of(st.integers(0, 40), st.integers(100, OTHERS[1] + 5)), min_size=1, max_size=6
)
# mostly a's collections: calls that get past the name check say more
collections = st.sampled_from(["docs", "vec", "docs", "vec", "docs", "other", "nope"])
filters = st.one_of(
    st.none(),
    st.builds(lambda y: F("year") >= y, st.integers(1995, 2010)),
    st.builds(lambda t: F("tag") == t, st.sampled_from(["x", "y", "z"])),
    st.builds(lambda y: ~(F("year") < y) | F("tag").isin(["y"]), st.integers(1995, 2010)),
    st.just(F("secret") == "s100"),  # an attribute only other writers used
)
queries = st.builds(
    lambda seed, n: vectors_to_pb(_vectors(seed, n)), st.integers(0, 10**6), st.integers(1, 3)
)


def _filter(message: pb.Message, where) -> pb.Message:
    if where is not None:
        message.filter.CopyFrom(filter_to_pb(where))
    return message


search = st.builds(
    lambda c, q, k, where, explain: (
        "Search",
        _filter(pb.SearchRequest(collection=c, queries=q, k=k, explain=explain), where),
    ),
    collections,
    queries,
    st.integers(1, 8),
    filters,
    st.booleans(),
)
get = st.builds(lambda c, ids: ("Get", pb.GetRequest(collection=c, ids=ids)), collections, any_ids)
delete = st.builds(
    lambda c, ids, ok: ("Delete", pb.DeleteRequest(collection=c, ids=ids, missing_ok=ok)),
    collections,
    any_ids,
    st.booleans(),
)


def _upsert(c: str, ids: list[int], seed: int, year: bool, undeclared: bool) -> tuple:
    attributes = {"year": [2001] * len(ids)} if year else {}
    if undeclared:
        attributes["secret"] = ["mine"] * len(ids)
    request = pb.UpsertRequest(
        collection=c,
        ids=ids,
        vectors=vectors_to_pb(_vectors(seed, len(ids))),
        attributes=attributes_to_pb(attributes or None, len(ids)),
    )
    return "Upsert", request


upsert = st.builds(
    _upsert,
    collections,
    st.lists(st.integers(*UPSERTABLE), min_size=1, max_size=4, unique=True),
    st.integers(0, 100),
    st.booleans(),
    st.sampled_from([False, False, True]),  # an undeclared attribute: refused
)
stats = st.one_of(
    st.builds(lambda c: ("Stats", pb.StatsRequest(collection=c)), collections),
    st.builds(
        lambda g: ("Stats", pb.StatsRequest(graph=g)), st.sampled_from(["links", "other_graph"])
    ),
)
lists = st.sampled_from([("ListCollections", pb.ListRequest()), ("ListGraphs", pb.ListRequest())])
ppr = st.builds(
    lambda g, c, seeds, k: (
        "PersonalizedPageRank",
        pb.PersonalizedPageRankRequest(
            graph=g, collection=c, queries=[pb.Seeds(nodes=seeds)], k=k, method="push"
        ),
    ),
    st.sampled_from(["links", "links", "links", "other_graph"]),
    collections,
    st.one_of(  # seeds of a's own rows, or any node
        st.lists(st.integers(0, MINE.size - 1), min_size=1, max_size=3, unique=True),
        st.lists(st.integers(0, NODES - 1), min_size=1, max_size=3, unique=True),
    ),
    st.integers(1, 10),
)
compose = st.builds(
    lambda c, q, k, where: (
        "Compose",
        _filter(
            pb.ComposeRequest(
                collection=c,
                graph="links",
                queries=q,
                k=k,
                knn_k=5,
                ppr_params={"method": pb.Value(string_value="push")},
            ),
            where,
        ),
    ),
    st.sampled_from(["docs", "vec", "docs", "vec", "other"]),
    queries,
    st.integers(1, 6),
    filters,
)
calls = st.lists(
    st.one_of(search, get, delete, upsert, stats, lists, ppr, compose), min_size=1, max_size=8
)


def _answer(dispatcher: Dispatcher, rpc: str, request: pb.Message) -> tuple:
    data = request.SerializeToString()
    code, message, out = dispatcher.call(rpc, [data] if rpc == "Upsert" else data, METADATA, None)
    if code.name != "OK":
        return code.name, message
    response = RESPONSES[rpc].FromString(out)
    for name in TIMINGS:
        if name in response.DESCRIPTOR.fields_by_name:
            response.ClearField(name)
    decoded = json.loads(response.explain_json) if rpc == "Search" and response.explain_json else {}
    decoded.pop("seconds", None)
    if rpc == "Search":
        response.ClearField("explain_json")
    return code.name, response.SerializeToString(deterministic=True), decoded


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(one=worlds(0), other=worlds(10), calls=calls)
def test_tenant_answers_do_not_depend_on_other_tenants(one: dict, other: dict, calls) -> None:
    engines = [build(one), build(other)]
    try:
        dispatchers = [Dispatcher(engine, CONFIG) for engine in engines]
        for rpc, request in calls:
            first, second = (_answer(d, rpc, request) for d in dispatchers)
            assert first == second, (rpc, request)
    finally:
        for engine in engines:
            engine.close()

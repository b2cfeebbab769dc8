"""Tenant isolation on a real server (127.0.0.1, port 0): a tenant key cannot share rows, is
told nothing about ids, collections, graphs or attributes it may not see, writes only declared
attributes, and writes in its own namespace of ids: another tenant's row of the same id is
neither replaced nor revealed, even when two tenants race for one new id."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from shardwalk.server.app import Dispatcher, Server
from shardwalk.server.config import parse_config

import shardwalk
from shardwalk.v1 import shardwalk_pb2 as pb

ADMIN = "admin-key-0000"
KEYS = {"a": "key-of-a-0000", "b": "key-of-b-0000"}
CONFIG = {
    "api_keys": [
        {"key": ADMIN, "role": "admin"},
        {"key": KEYS["a"], "tenant": "a", "collections": ["docs", "plain"], "graphs": ["links"]},
        {"key": KEYS["b"], "tenant": "b"},  # no lists: every collection and graph
    ]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = shardwalk.Engine.open(tmp_path_factory.mktemp("iso"))
    engine.create_collection("docs", dim=4, index="flat", attributes={"year": "int64"})
    engine.create_collection("plain", dim=4, index="flat")
    engine.create_collection("secret", dim=4, index="flat")
    engine.create_graph("links", np.array([[0, 1], [1, 2], [2, 0]]))
    engine.create_graph("hidden", np.array([[0, 1]]))
    running = Server(engine, parse_config(CONFIG), host="127.0.0.1", port=0).start()
    yield f"127.0.0.1:{running.port}"
    running.stop(grace=1)
    engine.close()


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Keys without collection lists and a collection without declared attributes (what a
    server before issue 20 could be configured with)."""
    engine = shardwalk.Engine.open(tmp_path_factory.mktemp("basic"))
    engine.create_collection("docs", dim=4, index="flat")
    keys = [{"key": ADMIN, "role": "admin"}] + [{"key": KEYS[t], "tenant": t} for t in "ab"]
    running = Server(engine, parse_config({"api_keys": keys}), host="127.0.0.1", port=0).start()
    yield f"127.0.0.1:{running.port}"
    running.stop(grace=1)
    engine.close()


def client(address: str, who: str) -> shardwalk.Client:
    return shardwalk.Client(address, api_key=ADMIN if who == "admin" else KEYS[who])


def test_a_tenant_cannot_share_its_rows(basic: str) -> None:
    server = basic
    """Issue 20, item 1: tenant a's row shared with b would poison b's results."""
    a, b = client(server, "a"), client(server, "b")
    with pytest.raises(shardwalk.PermissionDeniedError, match=r"sharing rows .* admin act"):
        a.collection("docs").upsert([99], np.ones((1, 4)), shared_with=[["b"]])
    with pytest.raises(shardwalk.NotFoundError):
        a.collection("docs").get([99])  # nothing was written
    assert 99 not in b.collection("docs").search(np.ones((1, 4)), 10).ids
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 99"):
        b.collection("docs").get([99])
    # an admin still shares
    client(server, "admin").collection("docs").upsert(
        [98], np.ones((1, 4)), tenants="a", shared_with=[["b"]]
    )
    assert b.collection("docs").get([98]).tenants == ["a"]


def test_get_names_hidden_ids_exactly_like_absent_ones(basic: str) -> None:
    server = basic
    client(server, "admin").collection("docs").upsert([500], np.ones((1, 4)), tenants="b")
    docs = client(server, "a").collection("docs")
    with pytest.raises(shardwalk.NotFoundError) as both:
        docs.get([500, 501])  # 500: b's row; 501: nothing
    assert str(both.value).endswith("collection 'docs' has no ids 500, 501")
    with pytest.raises(shardwalk.NotFoundError) as reversed_:
        docs.get([501, 500])
    assert str(reversed_.value).endswith("collection 'docs' has no ids 501, 500")


def test_scoped_keys_see_and_name_only_their_collections_and_graphs(server: str) -> None:
    a, b = client(server, "a"), client(server, "b")
    assert a.collections() == ["docs", "plain"] and a.graphs() == ["links"]
    assert b.collections() == ["docs", "plain", "secret"] and b.graphs() == ["hidden", "links"]
    messages = {}
    for name in ("secret", "nope"):  # exists (not a's) / does not exist
        with pytest.raises(shardwalk.NotFoundError) as caught:
            a.collection(name).search(np.ones((1, 4)))
        messages[name] = str(caught.value)
    assert messages["secret"].replace("secret", "X") == messages["nope"].replace("nope", "X")
    for name in ("hidden", "nope"):
        with pytest.raises(shardwalk.NotFoundError) as caught:
            a.graph(name).ppr([0], collection="docs")
        assert f"graph {name!r} does not exist" in str(caught.value)
        assert "links" not in str(caught.value)
    with pytest.raises(shardwalk.NotFoundError) as caught:
        a.compose("secret", "links", np.ones((1, 4)))
    assert "does not exist" in str(caught.value) and "docs" not in str(caught.value)
    with pytest.raises(shardwalk.NotFoundError) as caught:
        b.collection("nope").search(np.ones((1, 4)))  # unscoped, still no list of names
    assert "secret" not in str(caught.value) and "docs" not in str(caught.value)


def test_tenant_keys_write_only_declared_attributes(server: str) -> None:
    admin, a = client(server, "admin"), client(server, "a")
    with pytest.raises(shardwalk.InvalidArgumentError, match=r"'color' is not declared.*: year"):
        a.collection("docs").upsert([1], np.ones((1, 4)), attributes={"color": ["red"]})
    with pytest.raises(shardwalk.InvalidArgumentError, match="'plain' declares no attributes"):
        a.collection("plain").upsert([1], np.ones((1, 4)), attributes={"color": ["red"]})
    # no type to claim: a declared attribute has its type from the start
    with pytest.raises(shardwalk.InvalidArgumentError, match="'year' is declared int64"):
        a.collection("docs").upsert([1], np.ones((1, 4)), attributes={"year": ["x"]})
    assert a.collection("docs").upsert([1], np.ones((1, 4)), attributes={"year": [2020]}) == 1
    # admins write undeclared attributes as before; tenants do not see them
    admin.collection("docs").upsert([2], np.ones((1, 4)), tenants="b", attributes={"color": ["x"]})
    assert a.collection("docs").stats()["attributes"] == {"year": "int64"}
    assert a.collection("docs").get([1]).attributes == {"year": [2020]}
    with pytest.raises(shardwalk.InvalidArgumentError, match="unknown attribute 'color'"):
        a.collection("docs").search(np.ones((1, 4)), where=shardwalk.F("color") == "x")
    created = admin.create_collection(
        "declared", dim=4, index="flat", attributes={"tags": "list<string>"}
    )
    assert created.stats()["attributes"] == {"tags": "list<item: string>"}


def test_upsert_of_another_tenants_id_writes_its_own_row(basic: str) -> None:
    """Ids are namespaced by owner: tenant a's upsert of an id tenant b holds writes a's own
    row (it used to be refused, which told a the id was taken), and a's delete deletes only
    a's row."""
    server = basic
    admin = client(server, "admin").collection("docs")
    admin.upsert([700], np.full((1, 4), 2.0), tenants="b")
    a, b = (client(server, t).collection("docs") for t in "ab")
    assert a.upsert([700], np.full((1, 4), 1.0)) == 1
    assert a.get([700]).tenants == ["a"] and a.get([700]).vectors[0, 0] == 1.0
    assert b.get([700]).tenants == ["b"] and b.get([700]).vectors[0, 0] == 2.0
    assert admin.get([700]).tenants == ["a", "b"]  # an admin sees every owner's row
    assert a.search(np.full((1, 4), 2.0), 10).ids[0].tolist().count(700) == 1
    # an admin naming a tenant acts in its namespace; a tenant key may name only its own
    assert admin.get([700], tenant="b").vectors[0, 0] == 2.0
    assert a.get([700], tenant="a").tenants == ["a"]
    with pytest.raises(shardwalk.PermissionDeniedError, match="acts for tenant 'a'"):
        a.get([700], tenant="b")
    with pytest.raises(shardwalk.PermissionDeniedError, match="acts for tenant 'a'"):
        a.delete([700], tenant="b")
    assert a.delete([700]) == 1
    assert b.get([700]).vectors[0, 0] == 2.0 and admin.get([700]).tenants == ["b"]
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 700"):
        a.delete([700])
    a.upsert([700], np.full((1, 4), 1.0))  # a's row again, beside b's
    assert admin.delete([700], tenant="b") == 1 and admin.get([700]).tenants == ["a"]
    b.upsert([700], np.full((1, 4), 2.0))
    # an admin's upsert names no namespace: it replaces every owner's row of the id
    admin.upsert([700], np.full((1, 4), 3.0), tenants="a")
    assert admin.get([700]).tenants == ["a"]
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 700"):
        b.get([700])
    b.upsert([700], np.full((1, 4), 2.0))
    assert admin.delete([700]) == 1  # without a tenant: every owner's row
    with pytest.raises(shardwalk.NotFoundError, match="has no ids 700"):
        admin.get([700])


def _race(docs: dict, id_: int) -> dict[str, str]:
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def write(tenant: str) -> None:
        barrier.wait()
        try:
            docs[tenant].upsert([id_], np.full((1, 4), 1.0 if tenant == "a" else 2.0))
            outcome[tenant] = "written"
        except shardwalk.ShardwalkError as exc:
            outcome[tenant] = repr(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def test_tenants_racing_for_one_new_id(basic: str) -> None:
    server = basic
    """Issue 20, item 4: the service checked ownership, then wrote: both writers of a new id
    passed the check and the later replaced the other's row. With ids namespaced by owner,
    both writes succeed, each in its own namespace, neither touching the other's row."""
    docs = {t: client(server, t).collection("docs") for t in ("a", "b")}
    admin = client(server, "admin").collection("docs")
    for round_ in range(40):
        id_ = 10_000 + round_
        outcome = _race(docs, id_)
        assert outcome == {"a": "written", "b": "written"}, outcome
        for tenant, value in (("a", 1.0), ("b", 2.0)):
            record = docs[tenant].get([id_])
            assert record.tenants == [tenant] and record.vectors[0, 0] == value
        assert admin.get([id_]).tenants == ["a", "b"]


def _explain(engine: shardwalk.Engine) -> dict:
    import json

    config = parse_config(CONFIG)
    request = pb.SearchRequest(
        collection="docs", queries=pb.Vectors(dim=4, data=bytes(16)), k=5, explain=True
    )
    metadata = [("authorization", f"Bearer {KEYS['a']}")]
    code, message, out = Dispatcher(engine, config).call(
        "Search", request.SerializeToString(), metadata, None
    )
    assert (code.name, message) == ("OK", "")
    explain = json.loads(pb.SearchResponse.FromString(out).explain_json)
    return {n: explain[n] for n in ("path", "reason", "visible", "estimated_matches", "matches")}


def test_explain_of_a_tenant_search_depends_only_on_its_rows() -> None:
    """Issue 20, item 2: "3000 matches > 2048 (15.0% of the index)" told tenant a how big the
    other tenants are; the path chosen for it depended on it too."""
    rng = np.random.default_rng(0)
    mine = rng.standard_normal((2100, 4)).astype(np.float32)
    explains = []
    for others in (0, 3000):
        engine = shardwalk.Engine.memory()
        docs = engine.create_collection("docs", dim=4, index="hnsw", m=8, ef_construction=100)
        docs.upsert(np.arange(2100), mine, tenants="a")
        if others:
            ids = np.arange(10**6, 10**6 + others)
            docs.upsert(ids, rng.standard_normal((others, 4)), tenants="b")
        explains.append(_explain(engine))
    assert explains[0] == explains[1]
    assert "index" not in explains[0]["reason"] and explains[0]["visible"] == 2100


def test_config_scopes(tmp_path) -> None:
    base = {"key": "k" * 8, "tenant": "a"}
    for bad in ({"collections": "docs"}, {"graphs": [1]}, {"collections": [""]}):
        with pytest.raises(shardwalk.InvalidArgumentError, match="must be a list of names"):
            parse_config({"api_keys": [{**base, **bad}]})
    with pytest.raises(shardwalk.InvalidArgumentError, match="scope tenant keys"):
        parse_config({"api_keys": [{"key": "k" * 8, "role": "admin", "graphs": ["g"]}]})
    (who,) = parse_config({"api_keys": [{**base, "collections": ["x"]}]}).keys.values()
    assert who.collections == frozenset({"x"}) and who.graphs is None

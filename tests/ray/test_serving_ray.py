"""A data directory served from Ray actors (``Engine.open(path, ray=True)``): the partitions
live in actors on the session's local Ray, and every answer is the in-process engine's (same
files, same graphs: the same ids); tenant scopes and filters are applied in the actors; writes,
checkpoints and a killed actor; and the gRPC server on top of it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import shardwalk
from shardwalk import F
from shardwalk.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from tests.server.conftest import TENANTS, key_of, seeded_rows, start, visible_to

pytestmark = pytest.mark.usefixtures("local_ray")

N, DIM, K = 4000, 16, 10
SCOPES = [
    {},
    {"nprobe": 2},
    {"ef": 16},
    {"tenant": "t1"},
    {"where": F("year") >= 2005},  # ~80% of the rows: large in every actor
    {"where": F("lang") == "de"},
    {"tenant": "t2", "where": F("year") < 2004},  # a few matches: exact everywhere
    {"tenant": "nobody"},
]


def write_data(path: Path, rows: dict) -> None:
    with shardwalk.Engine.open(path) as engine:
        docs = engine.create_collection("docs", DIM, index="partitioned", partitions=4)
        docs.upsert(**rows)
        engine.create_collection("flat", DIM, index="flat").upsert(rows["ids"], rows["vectors"])
        edges = np.random.default_rng(1).integers(0, len(rows["ids"]), size=(8 * N, 2))
        engine.create_graph("links", edges, node_ids=rows["ids"])


@pytest.fixture(scope="module")
def rows() -> dict:
    return seeded_rows(N, DIM, seed=11)


@pytest.fixture(scope="module")
def data(rows: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served-data")
    write_data(path, rows)
    return path


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((25, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def in_process(data: Path, queries: np.ndarray) -> list[shardwalk.SearchResult]:
    """The in-process engine's answers (the last item: its partition sizes)."""
    with shardwalk.Engine.open(data) as engine:
        docs = engine.collection("docs")
        found = [docs.search(queries, K, **scope) for scope in SCOPES]
        composed = engine.compose(
            "docs", "links", queries[:5], tenant="t1", ppr_params={"method": "exact"}
        )
        return [*found, composed, docs.stats()["index_stats"]["partition_sizes"]]


@pytest.fixture(scope="module")
def on_ray(data: Path, in_process: list) -> Iterator[shardwalk.Engine]:
    engine = shardwalk.Engine.open(data, ray=True)
    yield engine
    engine.close()


def brute_force(rows: dict, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    x = rows["vectors"][allowed]
    d = ((queries[:, None, :] - x[None]) ** 2).sum(-1)
    return rows["ids"][allowed][np.argsort(d, axis=1)[:, :k]]


def test_searches_are_the_in_process_engines(on_ray, in_process, queries, rows) -> None:
    docs = on_ray.collection("docs")
    for scope, expected in zip(SCOPES, in_process):
        batch = docs.search(queries, K, explain=True, **scope)
        assert np.array_equal(batch.ids, expected.ids), scope
        np.testing.assert_allclose(batch.distances, expected.distances, rtol=1e-5)
        one = docs.search(queries[3], K, **scope)  # a single query takes the same path
        assert np.array_equal(one.ids[0], expected.ids[3]), scope
        if "tenant" in scope or "where" in scope:
            if scope.get("tenant") != "nobody":
                assert batch.explain.path == "partition-actors"
                assert sum(batch.explain.details.values()) == 2  # both actors answered
        # never a row out of scope
        if "tenant" in scope:
            allowed = visible_to(rows, scope["tenant"])
            assert set(batch.ids[batch.ids >= 0].tolist()) <= allowed


def test_compose_over_a_served_collection(on_ray, in_process, queries) -> None:
    composed = on_ray.compose(
        "docs", "links", queries[:5], tenant="t1", ppr_params={"method": "exact"}
    )
    assert np.array_equal(composed.ids, in_process[-2].ids)


def test_scoped_searches_are_exact_enough(on_ray, queries, rows) -> None:
    docs = on_ray.collection("docs")
    years = np.array(rows["attributes"]["year"])
    t0, t1 = (np.isin(rows["ids"], sorted(visible_to(rows, t))) for t in ("t0", "t1"))
    cases = [
        ({"where": F("year") >= 2005}, years >= 2005),
        ({"tenant": "t1"}, t1),
        ({"tenant": "t0", "where": F("year") < 2004}, t0 & (years < 2004)),
    ]
    for scope, mask in cases:
        found = docs.search(queries, K, **scope).ids
        truth = brute_force(rows, queries, mask, K)
        recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
        assert recall >= 0.95, (scope, recall)


def test_vectors_and_stats_come_from_the_actors(on_ray, in_process, rows) -> None:
    docs = on_ray.collection("docs")
    ids = np.array([7, 3999, 1200, 0])
    np.testing.assert_array_equal(docs.get(ids).vectors, rows["vectors"][ids])
    index = docs.stats()["index_stats"]
    actors = index["ray"]["actors"]
    assert len(actors) == 2  # one per CPU of the session's Ray
    assert sorted(p for a in actors for p in a["partitions"]) == [0, 1, 2, 3]
    assert len({a["pid"] for a in actors}) == 2 and all(a["pid"] != os.getpid() for a in actors)
    assert index["partition_sizes"] == in_process[-1]  # the in-process engine's
    assert index["live"] == N
    # other index kinds stay in this process
    assert "ray" not in on_ray.collection("flat").stats()["index_stats"]


def test_bad_input_gets_the_same_errors(on_ray, tmp_path) -> None:
    docs = on_ray.collection("docs")
    with pytest.raises(InvalidArgumentError, match="dimension"):
        docs.search(np.zeros((2, DIM + 1), np.float32), K)
    with pytest.raises(InvalidArgumentError):
        docs.search(np.full(DIM, np.nan, np.float32), K)
    with pytest.raises(InvalidArgumentError, match="unknown attribute"):
        docs.search(np.zeros(DIM, np.float32), K, where=F("nope") == 1)
    for bad in ("", 1, 0.5):
        with pytest.raises(InvalidArgumentError, match="ray must be"):
            shardwalk.Engine.open(tmp_path / "never", ray=bad)
    with pytest.raises(FailedPreconditionError, match="connected to the Ray cluster at"):
        shardwalk.Engine.open(tmp_path / "other", ray="127.0.0.1:1")
    with shardwalk.Engine.open(tmp_path / "other"):  # the directory was let go
        pass
    with pytest.raises(InvalidArgumentError, match="ray_actors needs ray"):
        shardwalk.Engine.open(tmp_path / "never", ray_actors=2)
    assert not (tmp_path / "never").exists()
    with pytest.raises(InvalidArgumentError, match="ray_actors"):
        shardwalk.Engine.open(tmp_path / "never", ray=True, ray_actors=0)


def test_writes_checkpoint_to_files_any_engine_reads(data, rows, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    rng = np.random.default_rng(3)
    fresh = rng.standard_normal((300, DIM)).astype(np.float32)
    probe = np.concatenate([fresh[:5], rows["vectors"][:5]])
    with shardwalk.Engine.open(copy, ray=True) as engine:
        docs = engine.collection("docs")
        docs.upsert(np.arange(N, N + 300), fresh, tenants="t3", attributes={"year": [2030] * 300})
        docs.delete(np.arange(0, 4000, 2))
        docs.upsert([1], rows["vectors"][1] + 1.0, tenants="t0")  # replaced in place
        assert docs.search(fresh[:5], 1).ids[:, 0].tolist() == list(range(N, N + 5))
        assert docs.search(fresh[:5], 1, tenant="t0").ids[:, 0].tolist() != list(range(N, N + 5))
        served = docs.search(probe, K)
        served_scoped = docs.search(probe, K, where=F("year") == 2030)
        assert set(served_scoped.ids.ravel().tolist()) <= set(range(N, N + 300))
        engine.flush()  # the actors write their partitions into the snapshot
        after = docs.search(probe, K)
        assert np.array_equal(after.ids, served.ids)
        docs.upsert([N + 1000], fresh[:1] * 2, tenants="t1")  # in the log only
    with shardwalk.Engine.open(copy) as engine:  # in process: the snapshot plus the log
        docs = engine.collection("docs")
        assert len(docs) == N - 2000 + 300 + 1
        again = docs.search(probe, K)
        assert np.array_equal(again.ids[:, :3], served.ids[:, :3])
        assert N + 1000 in docs


def test_a_new_collection_trains_and_spreads_over_actors(tmp_path, rows) -> None:
    vectors = rows["vectors"]
    with shardwalk.Engine.open(tmp_path / "new", ray=True) as engine:
        docs = engine.create_collection("docs", DIM, index="partitioned", partitions=3)
        docs.upsert(np.arange(500), vectors[:500], tenants=rows["tenants"][:500])
        assert "ray" in docs.stats()["index_stats"] and not docs.stats()["index_stats"]["trained"]
        first = docs.search(vectors[:3], 5, tenant="t1").ids  # the staging index, exactly
        assert set(first.ravel().tolist()) <= visible_to(rows, "t1") | {-1}
        docs.upsert(np.arange(500, N), vectors[500:N], tenants=rows["tenants"][500:])  # trains
        stats = docs.stats()["index_stats"]
        assert stats["trained"] and sum(stats["partition_sizes"]) == N
        assert len(stats["ray"]["actors"]) == 2
        found = docs.search(vectors[:50], 1).ids[:, 0]
        assert np.mean(found == np.arange(50)) >= 0.98
        # never checkpointed: a killed actor starts empty and takes every write from the log
        _kill(stats["ray"]["actors"][0]["pid"])
        assert np.array_equal(docs.search(vectors[:50], 1).ids[:, 0], found)
        docs.compact()  # a new index on new actors, swapped in; the old actors stop
        assert np.mean(docs.search(vectors[:50], 1).ids[:, 0] == np.arange(50)) >= 0.98
    with shardwalk.Engine.open(tmp_path / "new") as engine:
        assert (
            np.mean(engine.collection("docs").search(vectors[:50], 1).ids[:, 0] == np.arange(50))
            >= 0.98
        )


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # until the process is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_a_killed_actor_comes_back_with_every_write(data, queries, in_process, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with shardwalk.Engine.open(copy, ray=True) as engine:
        docs = engine.collection("docs")
        _kill(docs.stats()["index_stats"]["ray"]["actors"][0]["pid"])
        # nothing written since the checkpoint: started again from it, the answer unchanged
        assert np.array_equal(docs.search(queries, K).ids, in_process[0].ids)
        scoped = docs.search(queries, K, **SCOPES[3])
        assert np.array_equal(scoped.ids, in_process[3].ids)
        # writes since the checkpoint: replayed from the log into the restarted actors
        docs.upsert([N + 7, N + 8], queries[:2], tenant="t0")
        # the same id for another owner, another vector: each row is replayed with its own
        docs.upsert([N + 7], queries[2:3], tenant="t1")
        docs.delete(np.arange(0, 300))
        expected = docs.search(queries, K).ids
        assert expected[0, 0] == N + 7 and not np.isin(expected, np.arange(300)).any()
        for actor in docs.stats()["index_stats"]["ray"]["actors"]:
            _kill(actor["pid"])
        assert np.array_equal(docs.search(queries, K).ids, expected)
        assert docs.search(queries[2:3], 1, tenant="t1").ids[0, 0] == N + 7
        assert docs.search(queries[0:1], 1, tenant="t0").ids[0, 0] == N + 7
        assert docs.search(queries[2:3], 1, tenant="t1").distances[0, 0] < 1e-4
        assert len(docs) == N - 300 + 3
        assert docs.stats()["index_stats"]["live"] == N - 300 + 3
    with shardwalk.Engine.open(copy) as engine:  # and what the actors checkpointed at close
        assert np.array_equal(engine.collection("docs").search(queries, K).ids, expected)


def test_a_failed_recovery_is_unavailable_until_reopened(data, queries, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    engine = shardwalk.Engine.open(copy, ray=True)
    try:
        docs = engine.collection("docs")
        docs.upsert([N + 7], queries[:1], tenants="t0")
        docs._index.recover_vectors = None  # as for an index with no log to replay
        _kill(docs.stats()["index_stats"]["ray"]["actors"][1]["pid"])
        with pytest.raises(UnavailableError, match="reopen the engine"):
            docs.search(queries, K)
    finally:
        with pytest.raises(UnavailableError):  # its checkpoint needs the lost actor
            engine.close()
    with shardwalk.Engine.open(copy, ray=True) as engine:  # the log has the write
        assert engine.collection("docs").search(queries[:1], 1).ids[0, 0] == N + 7


def test_grpc_server_serves_from_ray(on_ray, in_process, queries, rows) -> None:
    server = start(on_ray)
    try:
        address = f"127.0.0.1:{server.port}"
        with shardwalk.Client(address, api_key="admin-key-0000") as client:
            found = client.collection("docs").search(queries, K)
            assert np.array_equal(found.ids, in_process[0].ids)
        for tenant in TENANTS[:2]:
            with shardwalk.Client(address, api_key=key_of(tenant)) as client:
                ids = client.collection("docs").search(queries, K).ids
                assert set(ids[ids >= 0].tolist()) <= visible_to(rows, tenant)
    finally:
        server.stop(grace=1)


def test_serve_command_joins_a_ray_cluster(data, in_process, queries, tmp_path) -> None:
    """`shardwalk serve --address` as a process, joining the session's Ray as a driver."""
    import ray

    from tests.server.test_process import CONFIG, Served

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    config = tmp_path / "server.toml"
    config.write_text(CONFIG)
    address = ray.get_runtime_context().gcs_address
    served = Served(copy, config, "--address", address, "--ray-actors", "1")
    try:
        with served.client() as client:
            docs = client.collection("docs")
            assert np.array_equal(docs.search(queries, K).ids, in_process[0].ids)
            actors = docs.stats()["index_stats"]["ray"]["actors"]
        assert len(actors) == 1 and actors[0]["partitions"] == [0, 1, 2, 3]
        assert actors[0]["pid"] != served.process.pid
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=120) == 0, served.process.stderr.read()

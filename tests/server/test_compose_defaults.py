"""Compose through the server with calibrated defaults: parameters a request leaves out take
the pair's calibration, the response's explain says which ran and from where, a tenant's
compose stays scoped exactly as embedded."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import shardwalk
from shardwalk.datasets import planted_partition

from .conftest import ADMIN, TENANTS, Running, key_of, start

GRID = {"knn_k": (5, 20), "alpha": (0.2, 0.5), "temperature": (None, 0.35)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, dict]]:
    engine = shardwalk.Engine.open(tmp_path_factory.mktemp("calibrated"))
    data = planted_partition(600, dim=16, noise=3.0, seed=4)
    owners = [TENANTS[i % len(TENANTS)] for i in range(600)]
    col = engine.create_collection("docs", dim=16, metric="cosine", index="flat")
    col.upsert(data.ids, data.vectors, tenants=owners)
    engine.create_graph("kg", data.edges, directed=False, node_ids=data.ids)
    engine.create_graph("plain", data.edges, directed=False, node_ids=data.ids)
    record = engine.calibrate_compose("docs", "kg", queries=100, grid=GRID)
    server = start(engine)
    yield Running(engine, server, f"127.0.0.1:{server.port}"), record
    server.stop(grace=1)
    engine.close()


# generous deadlines: the first compose of a process compiles kernels, on a shared machine
QUERIES = np.random.default_rng(9).standard_normal((3, 16)).astype(np.float32)
TUNED = ("knn_k", "alpha", "fuse", "weight", "temperature")


def test_unset_parameters_take_the_calibrated_ones(served) -> None:
    running, record = served
    admin = running.client(ADMIN, timeout=120)
    there = admin.compose("docs", "kg", QUERIES)
    here = running.engine.compose("docs", "kg", QUERIES)
    np.testing.assert_array_equal(there.ids, here.ids)
    np.testing.assert_array_equal(there.scores, here.scores)
    assert there.explain == here.explain
    for name in ("knn_k", "alpha", "fuse", "temperature"):
        assert there.explain[name] == {"value": record[name], "source": "calibrated"}
    assert there.alpha == record["alpha"] and there.fuse == record["fuse"]
    # given ones win, the rest stay calibrated; a graph never calibrated: library defaults
    given = admin.compose("docs", "kg", QUERIES, knn_k=7, alpha=0.25, temperature=0.5)
    assert given.explain["knn_k"] == {"value": 7, "source": "request"}
    assert given.explain["temperature"] == {"value": 0.5, "source": "request"}
    assert given.explain["fuse"]["source"] == "calibrated"
    np.testing.assert_array_equal(
        given.ids,
        running.engine.compose("docs", "kg", QUERIES, knn_k=7, alpha=0.25, temperature=0.5).ids,
    )
    plain = admin.compose("docs", "plain", QUERIES)
    assert {v["source"] for v in plain.explain.values()} == {"default"}
    assert plain.explain["knn_k"]["value"] == 10 and plain.explain["fuse"]["value"] == "rrf"
    stats = admin.graph("kg").stats()
    assert stats["compose"]["docs"]["recall"] == record["recall"]


@pytest.mark.parametrize("tenant", TENANTS[:2])
def test_a_tenant_gets_its_rows_only_with_calibrated_defaults(served, tenant) -> None:
    running, _ = served
    client = running.client(key_of(tenant), timeout=120)
    there = client.compose("docs", "kg", QUERIES, k=15)
    here = running.engine.compose("docs", "kg", QUERIES, k=15, tenant=tenant)
    np.testing.assert_array_equal(there.ids, here.ids)
    assert there.explain == here.explain
    ids = np.unique(there.ids[there.ids >= 0])
    owners = running.engine.collection("docs").get(ids).tenants
    assert set(owners) == {tenant}
    for name in TUNED:  # the same settings explained as to the admin
        assert (
            there.explain[name]
            == running.client(ADMIN, timeout=120).compose("docs", "kg", QUERIES).explain[name]
        )


def test_bad_temperature_is_refused_as_embedded(served) -> None:
    running, _ = served
    admin = running.client(ADMIN, timeout=120)
    for bad, message in ((0.0, "temperature must be finite and > 0"), ("hot", "must be a number")):
        with pytest.raises(shardwalk.InvalidArgumentError, match=message):
            running.engine.compose("docs", "kg", QUERIES, temperature=bad)
        with pytest.raises(shardwalk.InvalidArgumentError, match=message):
            admin.compose("docs", "kg", QUERIES, temperature=bad)

"""The dispatcher's per-call work (server/app.py): what it remembers between calls (the
principal of a key string, the bound metric series) must never change an answer."""

from __future__ import annotations

import numpy as np
import pytest
from shardwalk.server.app import Dispatcher
from shardwalk.server.config import Config, parse_config

import shardwalk
from shardwalk.v1 import shardwalk_pb2 as pb

from .conftest import ADMIN, key_of


@pytest.fixture
def dispatcher() -> Dispatcher:
    engine = shardwalk.Engine.memory()
    docs = engine.create_collection("docs", dim=4, index="flat")
    docs.upsert(np.arange(6), np.eye(6, 4, dtype=np.float32), tenants=["t0"] * 3 + ["t1"] * 3)
    config = parse_config(
        {
            "api_keys": [
                {"key": ADMIN, "role": "admin"},
                {"key": key_of("t0"), "tenant": "t0", "max_concurrent": 1},
            ]
        }
    )
    return Dispatcher(engine, config)


def search(d: Dispatcher, key: str | None) -> tuple[str, str, bytes]:
    request = pb.SearchRequest(
        collection="docs", queries=pb.Vectors(dim=4, data=np.ones(4, "<f4").tobytes()), k=6
    )
    metadata = () if key is None else (("authorization", f"Bearer {key}"),)
    code, message, out = d.call("Search", request.SerializeToString(), metadata, 5.0)
    return code.name, message, out


def test_each_key_string_is_authenticated_once(dispatcher, monkeypatch) -> None:
    checked: list[str | None] = []
    principal = Config.principal

    def counting(self, key):
        checked.append(key)
        return principal(self, key)

    monkeypatch.setattr(Config, "principal", counting)
    for _ in range(3):
        assert search(dispatcher, ADMIN)[0] == "OK"
        assert search(dispatcher, key_of("t0"))[0] == "OK"
        # unknown and missing keys are checked (and refused) on every call: never remembered
        assert search(dispatcher, "not-a-key")[0] == "UNAUTHENTICATED"
        assert search(dispatcher, ADMIN + "x")[0] == "UNAUTHENTICATED"
        assert search(dispatcher, None)[0] == "UNAUTHENTICATED"
    assert sorted(checked, key=str) == sorted(
        [ADMIN, key_of("t0")] + 3 * ["not-a-key", ADMIN + "x", None], key=str
    )
    # a tenant's remembered principal is still its own: its scope holds
    response = pb.SearchResponse.FromString(search(dispatcher, key_of("t0"))[2])
    assert set(np.frombuffer(response.ids, "<i8").tolist()) == {0, 1, 2, -1}


def test_metrics_count_every_call_by_tenant_and_code(dispatcher) -> None:
    for key in (ADMIN, ADMIN, key_of("t0"), "not-a-key"):
        search(dispatcher, key)
    value = dispatcher.registry.get_sample_value
    assert (
        value("shardwalk_requests_total", {"rpc": "Search", "tenant": "admin", "code": "OK"}) == 2
    )
    assert value("shardwalk_requests_total", {"rpc": "Search", "tenant": "t0", "code": "OK"}) == 1
    assert (
        value(
            "shardwalk_requests_total", {"rpc": "Search", "tenant": "-", "code": "UNAUTHENTICATED"}
        )
        == 1
    )
    latency = {"rpc": "Search", "tenant": "admin", "code": "OK"}
    assert value("shardwalk_request_seconds_count", latency) == 2


def test_quotas_still_apply_to_a_remembered_key(dispatcher) -> None:
    """t0's key allows one call in flight: a call entering while one holds the gate is refused."""
    assert search(dispatcher, key_of("t0"))[0] == "OK"  # remembered from now on
    gate = dispatcher.limiter.admit(dispatcher._principal(key_of("t0")))
    try:
        code, message, _ = search(dispatcher, key_of("t0"))
        assert code == "RESOURCE_EXHAUSTED" and "max_concurrent" in message
    finally:
        gate.leave()
    assert search(dispatcher, key_of("t0"))[0] == "OK"

"""A real server on 127.0.0.1 (port 0) per test module, with an admin key and tenant keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from shardwalk.server.app import AioServer, Server
from shardwalk.server.config import parse_config

import shardwalk

ADMIN = "admin-key-0000"
TENANTS = ["t0", "t1", "t2", "t3"]


def key_of(tenant: str) -> str:
    return f"key-of-{tenant}"


@dataclass
class Running:
    engine: shardwalk.Engine
    server: Server
    address: str

    def client(self, key: str | None = ADMIN, **options) -> shardwalk.Client:
        return shardwalk.Client(self.address, api_key=key, **options)


def start(engine: shardwalk.Engine, limits: dict | None = None, model: str = "sync") -> Server:
    config = parse_config(
        {
            "api_keys": [{"key": ADMIN, "role": "admin"}]
            + [{"key": key_of(t), "tenant": t} for t in TENANTS],
            "limits": limits or {},
            "server": {"reflection": True},  # off by default; test_service checks it answers
        }
    )
    kind = AioServer if model == "aio" else Server
    return kind(engine, config, host="127.0.0.1", port=0).start()


@pytest.fixture(scope="module", params=["sync", "aio"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """Both server models (the same dispatcher behind grpc's sync server and grpc.aio)."""
    engine = shardwalk.Engine.open(tmp_path_factory.mktemp("served"))
    limits = {"max_k": 500, "max_batch": 64, "max_message_bytes": 1 << 20}
    server = start(engine, limits, request.param)
    yield Running(engine, server, f"127.0.0.1:{server.port}")
    server.stop(grace=1)
    engine.close()


def seeded_rows(n: int, dim: int, seed: int = 0) -> dict:
    """Rows with owners over TENANTS, shares and attributes."""
    rng = np.random.default_rng(seed)
    owners = [TENANTS[i] for i in rng.integers(0, len(TENANTS), n)]
    shared = [[t for t in TENANTS if t != o and rng.random() < 0.15] for o in owners]
    return {
        "ids": np.arange(n, dtype=np.int64),
        "vectors": rng.standard_normal((n, dim)).astype(np.float32),
        "tenants": owners,
        "shared_with": shared,
        "attributes": {
            "year": rng.integers(2000, 2025, n).tolist(),
            "lang": [["en", "de", "fr"][i] for i in rng.integers(0, 3, n)],
        },
    }


def visible_to(rows: dict, tenant: str) -> set[int]:
    return {
        int(i)
        for i, o, s in zip(rows["ids"], rows["tenants"], rows["shared_with"])
        if o == tenant or tenant in s
    }

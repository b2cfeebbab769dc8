"""`shardwalk serve` as a real process: acknowledged writes survive kill -9, SIGTERM drains
in-flight calls and checkpoints."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import shardwalk

from .conftest import ADMIN

CONFIG = f"""
[[api_keys]]
key = "{ADMIN}"
role = "admin"
"""


class Served:
    def __init__(self, data: Path, config: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shardwalk.cli",
                "serve",
                "--data",
                str(data),
                "--create",
                "--config",
                str(config),
                "--port",
                "0",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert found, line + self.process.stderr.read()
        self.address = f"127.0.0.1:{found.group(1)}"

    def client(self) -> shardwalk.Client:
        return shardwalk.Client(self.address, api_key=ADMIN, timeout=30)


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    config = tmp_path / "server.toml"
    config.write_text(CONFIG)
    yield tmp_path / "data", config


def test_acknowledged_upsert_survives_kill_9(paths: tuple[Path, Path]) -> None:
    data, config = paths
    served = Served(data, config)
    client = served.client()
    client.create_collection("docs", dim=8, index="hnsw")
    vectors = np.random.default_rng(0).random((300, 8), dtype=np.float32)
    for lo in range(0, 300, 100):  # every acknowledged chunk must survive
        client.collection("docs").upsert(np.arange(lo, lo + 100), vectors[lo : lo + 100])
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=30)
    client.close()

    served = Served(data, config)
    client = served.client()
    got = client.collection("docs").get(np.arange(300))
    np.testing.assert_array_equal(got.vectors, vectors)
    assert (client.collection("docs").search(vectors[:5], 1).ids[:, 0] == np.arange(5)).all()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0


def test_sigterm_drains_in_flight_calls(paths: tuple[Path, Path]) -> None:
    data, config = paths
    served = Served(data, config)
    client = served.client()
    client.create_collection("docs", dim=8, index="flat")
    vectors = np.random.default_rng(1).random((4000, 8), dtype=np.float32)
    result: dict[str, object] = {}
    started = threading.Event()

    def slow_upsert() -> None:
        def chunks() -> Iterator[int]:  # a stream that takes about 1.5 s to send
            for lo in range(0, 4000, 200):
                if lo == 400:
                    started.set()
                time.sleep(0.075)
                yield lo

        from shardwalk._wire import vectors_to_pb
        from shardwalk.v1 import shardwalk_pb2 as pb

        requests = (
            pb.UpsertRequest(
                collection="docs",
                ids=list(range(lo, lo + 200)),
                vectors=vectors_to_pb(vectors[lo : lo + 200]),
            )
            for lo in chunks()
        )
        try:
            result["ok"] = client._run("Upsert", requests, lambda r: r.upserted, False)
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    caller = threading.Thread(target=slow_upsert)
    caller.start()
    assert started.wait(30)
    served.process.send_signal(signal.SIGTERM)  # while the stream is still being sent
    caller.join(60)
    assert result.get("ok") == 4000, result
    assert served.process.wait(timeout=60) == 0
    # the drained writes were checkpointed: the log is empty after a clean shutdown
    with shardwalk.Engine.open(data) as engine:
        docs = engine.collection("docs")
        assert len(docs) == 4000 and docs.stats()["wal_bytes"] == 0

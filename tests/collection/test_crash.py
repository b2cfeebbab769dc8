"""Kill a writer process mid-stream and mid-checkpoint; reopening loses nothing acknowledged
and never opens a torn state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

import shardwalk

DIM = 16
BATCH = 50

CHILD = r"""
import sys
import numpy as np
import shardwalk

path, mode, kind = sys.argv[1], sys.argv[2], sys.argv[3]
DIM, BATCH = 16, 50

def vectors(i):
    return np.random.default_rng(i).random((BATCH, DIM), dtype=np.float32)

with shardwalk.Engine.open(path) as engine:
    if "c" in engine.collections():
        col = engine.collection("c")
    else:
        params = {"partitions": 2, "train_size": 200} if kind == "partitioned" else {}
        col = engine.create_collection("c", dim=DIM, index=kind, **params)
    i = len(col) // BATCH
    print("ready", flush=True)
    while True:
        col.upsert(np.arange(i * BATCH, (i + 1) * BATCH), vectors(i))
        print(f"ack {i}", flush=True)
        if mode == "saves":
            print("saving", flush=True)
            col.flush()
            print("saved", flush=True)
        i += 1
"""


def expected_vectors(i: int) -> np.ndarray:
    return np.random.default_rng(i).random((BATCH, DIM), dtype=np.float32)


def run_and_kill(path, mode: str, kind: str, acks_before_kill: int, delay: float) -> list[int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[int] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ack"):
            acked.append(int(line.split()[1]))
        if len(acked) >= acks_before_kill and (mode != "saves" or line.startswith("saving")):
            time.sleep(delay)
            break
    proc.send_signal(signal.SIGKILL)
    # read through the same buffered reader: communicate() reads the pipe directly and would
    # drop lines readline() already buffered (acknowledged writes the check would then miss)
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=30)
    acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack")]
    assert acked, f"child never acknowledged a write: {err[-2000:]}"
    return acked


def check(path, acked: list[int]) -> None:
    with shardwalk.Engine.open(path) as engine:
        col = engine.collection("c")
        for i in acked:
            ids = np.arange(i * BATCH, (i + 1) * BATCH)
            got = col.get(ids)  # raises NotFoundError if an acknowledged id were lost
            np.testing.assert_array_equal(got.vectors, expected_vectors(i))
        # at most the one batch in flight beyond the acknowledged ones
        assert len(col) in (len(acked) * BATCH, (len(acked) + 1) * BATCH), (len(col), len(acked))
        res = col.search(expected_vectors(acked[-1])[:3], k=1)
        assert (res.distances[:, 0] < 1e-4).all()


@pytest.mark.parametrize("kind", ["hnsw", "partitioned"])
@pytest.mark.parametrize("mode", ["upserts", "saves"])
def test_kill_writer_and_reopen(tmp_path, mode, kind):
    path = tmp_path / "db"
    rng = np.random.default_rng(zlib.crc32(f"{mode}-{kind}".encode()))
    acked: list[int] = []
    for _ in range(3):  # kill, check, resume from where it stopped, kill again
        acked_now = run_and_kill(
            path,
            mode,
            kind,
            acks_before_kill=int(rng.integers(3, 30)),
            delay=float(rng.uniform(0, 0.05)),
        )
        acked = sorted(set(acked) | set(acked_now))
        check(path, acked)
        # the next run resumes at len(col) // BATCH, which may include the in-flight batch
        with shardwalk.Engine.open(path) as engine:
            n = len(engine.collection("c"))
        acked = list(range(n // BATCH))

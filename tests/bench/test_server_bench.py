"""bench/server.py's modules (bench/_server_*.py) import together, and its py-spy frame counter
counts a frame anywhere in a stack, or only as the innermost frame when written ``leaf:``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_the_server_benchmark_imports():
    server = _bench_module("server")
    # every workload the report renders is one the benchmark can run
    assert set(server.SCOPES) >= {"search", "search-tenant-2%", "search-batch"}
    assert callable(server.main) and callable(server.run)


def test_frame_shares_counts_inclusive_and_leaf_frames():
    cpu = _bench_module("_server_cpu")
    text = "\n".join(
        [
            "main (a.py:1);Dispatcher.call (d.py:2);Condition.wait (t.py:3) 3",
            "main (a.py:1);Condition.wait (t.py:3);poll (p.py:4) 1",  # not the leaf here
            "a line without a count",
        ]
    )
    frames = {"dispatch": "Dispatcher.call (", "waiting": "leaf:Condition.wait ("}
    total, shares = cpu.frame_shares(text, frames)
    assert total == 4
    assert shares == {"dispatch": 0.75, "waiting": 0.75}
    milvus = cpu.milvus_shares("x;execute_search_with_index (m.py:1) 2\ny 2")
    assert milvus["samples"] == 4
    assert milvus["whole search (execute_search_with_index)"] == 0.5

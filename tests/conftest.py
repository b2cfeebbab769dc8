"""Shared fixtures: seeded data and engines (in memory and on disk)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import shardwalk
from shardwalk.datasets import ClusteredData, clustered_vectors
from tests.faultfs import fault_fs  # noqa: F401  (the fault-injecting file system fixture)

INDEX_KINDS = ["flat", "hnsw", "partitioned", "multitenant", "spann"]
# Small partitions so the partitioned index trains on the test data.
INDEX_PARAMS: dict[str, dict] = {
    "flat": {},
    "hnsw": {},
    "partitioned": {"partitions": 4},
    "multitenant": {"train_size": 1000},
    # splits inline: the reopen test compares results before and after exactly, which a split
    # finishing in the background between the two would change (tests/index/test_spann.py
    # covers the background splits)
    "spann": {"maintenance": "inline"},
}


@pytest.fixture(scope="session")
def data() -> ClusteredData:
    return clustered_vectors(4000, 32, queries=200, tenants=5, seed=7)


@pytest.fixture(params=["memory", "disk"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[shardwalk.Engine]:
    eng = (
        shardwalk.Engine.memory()
        if request.param == "memory"
        else shardwalk.Engine.open(tmp_path / "db")
    )
    yield eng
    eng.close()


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return (
        sum(len(set(f[:k].tolist()) & set(t.tolist()) - {-1}) for f, t in zip(found, truth))
        / truth.size
    )

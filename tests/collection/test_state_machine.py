"""Hypothesis state machine: upserts, deletes, searches, checkpoints and crashes against a plain
model that answers with exact search."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shardwalk

DIM = 4
IDS = st.integers(min_value=0, max_value=2**62)
COORD = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)
VECTOR = st.lists(COORD, min_size=DIM, max_size=DIM)


class CollectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="sw-sm-")
        self.model: dict[int, np.ndarray] = {}
        self.engine: shardwalk.Engine | None = None

    @initialize(
        kind=st.sampled_from(["flat", "hnsw", "partitioned", "multitenant", "spann"]),
        disk=st.booleans(),
    )
    def open(self, kind: str, disk: bool) -> None:
        self.kind, self.disk = kind, disk
        self.engine = shardwalk.Engine.open(self.path) if disk else shardwalk.Engine.memory()
        params = {
            "partitioned": {"partitions": 2, "train_size": 8},
            "multitenant": {"train_size": 8, "leaves": 3},
            # tiny lists (inserts, splits and reassignments from a few dozen rows), every list
            # probed (tiny collections must be exact)
            "spann": {"max_list_size": 4, "eps_search": 1000.0, "maintenance": "inline"},
        }.get(kind, {})
        self.col = self.engine.create_collection("c", dim=DIM, index=kind, **params)

    @rule(items=st.dictionaries(IDS, VECTOR, min_size=1, max_size=12))
    def upsert(self, items: dict[int, list[float]]) -> None:
        ids = list(items)
        vectors = np.array([items[i] for i in ids], dtype=np.float32)
        self.col.upsert(ids, vectors)
        for i, v in zip(ids, vectors):
            self.model[i] = v

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(
            st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=5, unique=True)
        )
        assert self.col.delete(ids) == len(ids)
        for i in ids:
            del self.model[i]

    @rule(query=VECTOR, k=st.integers(min_value=1, max_value=20))
    def search(self, query: list[float], k: int) -> None:
        res = self.col.search(np.array(query, dtype=np.float32), k=k)
        ids, distances = res.ids[0], res.distances[0]
        expect = min(k, len(self.model))
        assert (ids[:expect] >= 0).all() and (ids[expect:] == -1).all()
        assert len(set(ids[:expect].tolist())) == expect
        q = np.array(query, dtype=np.float32)
        for i, d in zip(ids[:expect].tolist(), distances[:expect]):
            assert i in self.model, f"returned deleted or unknown id {i}"
            true = float(np.sum((self.model[i].astype(np.float64) - q) ** 2))
            assert abs(true - d) <= 1e-3 * max(1.0, true)
        if self.model:
            exact = np.sort(
                [float(np.sum((v.astype(np.float64) - q) ** 2)) for v in self.model.values()]
            )[:expect]
            # tiny collections: every index must be exact up to float32 rounding
            np.testing.assert_allclose(distances[:expect], exact, rtol=1e-3, atol=1e-2)

    @precondition(lambda self: self.disk)
    @rule(checkpoint=st.booleans())
    def reopen(self, checkpoint: bool) -> None:
        assert self.engine is not None
        if checkpoint:
            self.engine.close()
        else:
            self.engine._datadir.close()  # crash: no checkpoint, the log must carry everything
        self.engine = shardwalk.Engine.open(self.path)
        self.col = self.engine.collection("c")

    @invariant()
    def same_contents(self) -> None:
        if self.engine is None:
            return
        assert len(self.col) == len(self.model)
        if self.model:
            ids = sorted(self.model)
            np.testing.assert_array_equal(
                self.col.get(ids).vectors, np.array([self.model[i] for i in ids])
            )

    def teardown(self) -> None:
        if self.engine is not None:
            try:
                self.engine.close()
            except Exception:
                self.engine._datadir and self.engine._datadir.close()
        shutil.rmtree(self.path, ignore_errors=True)


CollectionMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SHARDWALK_SM_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
)
TestCollectionMachine = CollectionMachine.TestCase

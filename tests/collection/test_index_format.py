"""A data directory written before HNSW moved to faiss still opens (issue 13, part 4).

``tests/fixtures/hnswlib-format/`` was written by commit c5a4c9b (hnswlib's ``graph.bin`` in
every hnsw and partitioned index, ``vectors.arrow`` in every snapshot) with
``tests/fixtures/make_hnswlib_format.py``. Opening it rebuilds each graph on faiss from the
vectors hnswlib stored (logging a notice); the next checkpoint writes the new format, with the
vectors once.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from shardwalk.index import exact_search

import shardwalk
from tests.fixtures.make_hnswlib_format import DELETED, fixture_data

FIXTURE = Path(__file__).parents[1] / "fixtures" / "hnswlib-format"
COLLECTIONS = {"h": "l2", "c": "cosine", "p": "l2"}


def expected() -> tuple[np.ndarray, np.ndarray]:
    """The live ids and their vectors, as the fixture's writes left them."""
    ids, vectors, replaced = fixture_data()
    vectors = vectors.copy()
    vectors[-5:] = replaced
    keep = ~np.isin(ids, DELETED)
    return ids[keep], vectors[keep]


def check(engine: shardwalk.Engine) -> None:
    ids, vectors = expected()
    for name, metric in COLLECTIONS.items():
        col = engine.collection(name)
        assert len(col) == ids.size
        want = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        want = want if metric == "cosine" else vectors
        got = col.get(ids)
        np.testing.assert_allclose(got.vectors, want, rtol=1e-6, atol=1e-6)
        assert got.tenants[-1] == "moved" and got.tenants[0] == "t2"  # id 1020: 20 % 3
        assert not any(i in col for i in DELETED)
        # searches: every stored vector finds itself, deleted ids never come back, and recall
        # against exact search over the live vectors
        res = col.search(want, k=10)
        assert (res.ids[:, 0] == ids).mean() >= 0.99
        assert not np.isin(res.ids, DELETED).any()
        truth = exact_search(want, want, 10, "l2" if metric == "l2" else "ip")
        hits = [len(set(a) & set(b)) for a, b in zip(res.ids.tolist(), ids[truth.ids].tolist())]
        assert np.mean(hits) / 10 >= 0.95, f"{name}: recall@10 {np.mean(hits) / 10:.3f}"
        # a filtered exact scan reads the vectors where the index keeps them
        scoped = col.search(want[:3], k=5, tenant="t1", explain=True)
        assert scoped.explain.path == "exact"
        t1 = ids[[t == "t1" for t in col.get(ids).tenants]]
        assert np.isin(scoped.ids, t1).all()


def snapshot_dir(path: Path, name: str) -> Path:
    import json

    manifest = json.loads((path / "manifest.json").read_text())
    return path / "collections" / name / manifest["collections"][name]["snapshot"]


def test_a_directory_of_the_hnswlib_format_opens_and_is_rewritten(tmp_path, caplog):
    path = tmp_path / "db"
    shutil.copytree(FIXTURE, path)
    with caplog.at_level(logging.WARNING, logger="shardwalk.index.hnsw"):
        with shardwalk.Engine.open(path) as engine:
            check(engine)
    notices = [r.getMessage() for r in caplog.records if "hnswlib format" in r.getMessage()]
    assert len(notices) == 3, notices  # one per collection: h, c, p
    for name in COLLECTIONS:  # closing checkpointed: the new format, vectors written once
        snap = snapshot_dir(path, name)
        assert not (snap / "vectors.arrow").exists()
        assert not list(snap.rglob("graph.bin"))
        assert list(snap.rglob("graph.faiss"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shardwalk.index.hnsw"):
        with shardwalk.Engine.open(path) as engine:
            check(engine)
            engine.collection("h").upsert([5], np.ones((1, 8)))  # writes go on as usual
            assert engine.collection("h").search(np.ones(8), k=1).ids[0, 0] == 5
    assert not [r for r in caplog.records if "hnswlib format" in r.getMessage()]


@pytest.mark.parametrize("kind", ["hnsw", "partitioned", "flat"])
def test_snapshots_hold_the_vectors_once(tmp_path, kind):
    ids = np.arange(400)
    vectors = np.random.default_rng(2).standard_normal((400, 128)).astype(np.float32)
    params = {"partitions": 2, "train_size": 100} if kind == "partitioned" else {}
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        engine.create_collection("x", dim=128, index=kind, **params).upsert(ids, vectors)
    snap = snapshot_dir(tmp_path / "db", "x")
    assert not (snap / "vectors.arrow").exists()
    total = sum(f.stat().st_size for f in snap.rglob("*") if f.is_file())
    # one copy plus the graph's links (M=16: 32 ids a row on layer 0, 0.25x the vectors)
    assert total < 1.5 * vectors.nbytes, total / vectors.nbytes
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        np.testing.assert_array_equal(engine.collection("x").get(ids).vectors, vectors)


def test_without_hnswlib_the_error_names_the_extra(tmp_path, monkeypatch):
    """hnswlib is an optional extra (issue 23, item 2): without it, the engine works, and a
    directory of the old format says which extra reads it."""
    import sys

    monkeypatch.setitem(sys.modules, "hnswlib", None)  # `import hnswlib` raises ImportError
    with shardwalk.Engine.memory() as engine:  # the current format needs no hnswlib
        col = engine.create_collection("x", dim=4, index="hnsw")
        col.upsert(np.arange(20), np.random.default_rng(0).random((20, 4), dtype=np.float32))
        assert col.search(col.get([3]).vectors, k=1).ids.tolist() == [[3]]
    path = tmp_path / "db"
    shutil.copytree(FIXTURE, path)
    with pytest.raises(shardwalk.FailedPreconditionError) as raised:
        with shardwalk.Engine.open(path) as engine:
            engine.collection("h")
    message = str(raised.value)
    assert "hnswlib format of earlier versions" in message
    assert "pip install 'shardwalk[hnswlib]'" in message and "-e '.[hnswlib]'" in message
    monkeypatch.delitem(sys.modules, "hnswlib")
    with shardwalk.Engine.open(path) as engine:  # installed again: it opens, nothing was lost
        check(engine)

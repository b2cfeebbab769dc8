"""Progress callbacks of the long library calls (issue 23): ``shardwalk.jobs.build_collection``
on threads, ``Graph.build_fingerprints`` (walks kept or not) and
``shardwalk.walks.build_fingerprints``. Each stage reports 0 first, never falls, and ends at
its total; the stages come in order; a callback that raises stops the job with nothing
committed; building in chunks to report progress builds the same store.
(tests/ray/test_progress_ray.py: the Ray paths; tests/cli/test_cli_progress.py: the bars.)"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from shardwalk.walks import build_fingerprints, walkstore
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk import jobs
from shardwalk.errors import InvalidArgumentError
from shardwalk.storage import MANIFEST
from tests.parquet_data import write_dataset

N, DIM = 3000, 16
PARAMS = {"partitions": 4, "ef_construction": 32, "m": 8}


class Recorder:
    """A progress callback that keeps every call; raises ``Stop`` at the first call of stage
    ``stop_at`` with ``done > 0`` when asked."""

    class Stop(Exception):
        pass

    def __init__(self, stop_at: str | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.stop_at = stop_at

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.calls.append((stage, done, total))
        if stage == self.stop_at and done > 0:
            raise Recorder.Stop(stage)

    def stages(self) -> dict[str, list[int]]:
        """done per stage, checking the contract: stages in one run each, a fixed total, the
        first report 0, never falling, the last one the total."""
        order = [stage for i, (stage, _, _) in enumerate(self.calls)
                 if i == 0 or self.calls[i - 1][0] != stage]  # fmt: skip
        assert len(order) == len(set(order)), f"a stage came back: {order}"
        found: dict[str, list[int]] = {}
        for stage in order:
            calls = [(d, t) for s, d, t in self.calls if s == stage]
            totals = {t for _, t in calls}
            assert len(totals) == 1, (stage, totals)
            done = [d for d, _ in calls]
            assert done[0] == 0, (stage, done)
            assert all(b > a for a, b in itertools.pairwise(done)), (stage, done)
            assert done[-1] == totals.pop(), (stage, done)
            found[stage] = done
        return found


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet") / "in"
    write_dataset(root, N, DIM, files=3, seed=3)
    return root


def tree(path: Path) -> dict[str, object]:
    """Every file under ``path`` with its bytes; the manifest without its generation counter
    (a job reserves a generation number before it writes anything, committed or not)."""
    files: dict[str, object] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(path))] = p.read_bytes()
    manifest = json.loads(files.pop(MANIFEST))  # type: ignore[arg-type]
    manifest.pop("generation")
    files[MANIFEST] = manifest
    return files


@pytest.mark.parametrize("workers", [1, 2])
def test_build_reports_each_stage_to_its_total(source: Path, tmp_path: Path, workers: int) -> None:
    seen = Recorder()
    report = jobs.build_collection(
        tmp_path / "db", "c", source, num_workers=workers, progress=seen, **PARAMS
    )
    stages = seen.stages()
    assert list(stages) == ["scan", "assign", "build"]
    assert stages["scan"][-1] == stages["assign"][-1] == N
    assert len(stages["scan"]) == 1 + 3  # 0, then a block (a file here) at a time
    assert stages["build"] == list(range(PARAMS["partitions"] + 1))  # a partition at a time
    assert report["rows"] == N


def test_build_of_one_index_reports_one_build(source: Path, tmp_path: Path) -> None:
    seen = Recorder()
    jobs.build_collection(tmp_path / "db", "c", source, index="flat", progress=seen)
    assert seen.stages()["build"] == [0, 1]


@pytest.mark.parametrize("stage", ["scan", "assign", "build"])
def test_a_callback_that_raises_stops_the_build_with_nothing_committed(
    source: Path, tmp_path: Path, stage: str
) -> None:
    db = tmp_path / "db"
    jobs.build_collection(db, "c", source, **PARAMS)
    before = tree(db)
    with pytest.raises(Recorder.Stop):
        jobs.build_collection(db, "c", source, progress=Recorder(stage), **PARAMS)
    with pytest.raises(Recorder.Stop):
        jobs.build_collection(db, "fresh", source, progress=Recorder(stage), **PARAMS)
    # the previous version untouched, no files of either attempt left (spills, snapshots)
    assert tree(db) == before
    with shardwalk.Engine.open(db) as engine:
        assert engine.collections() == ["c"] and len(engine.collection("c")) == N


def test_progress_must_be_callable(source: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="progress must be a callable"):
        jobs.build_collection(tmp_path / "db", "c", source, progress="yes")
    with shardwalk.Engine.memory() as engine:
        graph = engine.create_graph("g", np.array([[1, 2], [2, 3]]))
        with pytest.raises(InvalidArgumentError, match="progress must be a callable"):
            graph.build_fingerprints(progress=1)
    assert not (tmp_path / "db").exists()  # refused before any work


@pytest.fixture(scope="module")
def graph():
    return power_law_graph(3000, 15_000, seed=4)


ARRAYS = ("indptr", "nodes", "counts", "truncated", "hubs", "hub_indptr", "hub_nodes", "hub_counts")


def assert_same_store(a, b) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_fingerprints_report_walks_then_hub_walks_and_build_the_same_store(graph) -> None:
    params = dict(walks_per_node=8, seed=3, hubs=20, hub_walks=100, top_k=16)
    plain = build_fingerprints(graph, **params)
    seen = Recorder()
    # blocks of 500 sources: the rows in 6 blocks, the hub rows in blocks of 40 hubs
    chunked = build_fingerprints(graph, block_size=500, progress=seen, **params)
    assert_same_store(chunked, plain)
    stages = seen.stages()
    assert list(stages) == ["walks", "hub walks"]
    assert stages["walks"] == [0, *range(500 * 8, 3000 * 8 + 1, 500 * 8)]
    assert stages["hub walks"] == [0, 20 * 100]  # 40 hubs a block: one block


@pytest.mark.parametrize("keep_walks", [True, False])
def test_graph_fingerprints_report_progress_and_keep_the_same_result(
    graph, keep_walks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = dict(walks_per_node=10, seed=5, hubs=30, hub_walks=200, keep_walks=keep_walks)
    with shardwalk.Engine.memory() as engine:
        plain = engine.create_graph("g", graph)
        plain.build_fingerprints(**params)
        # kept walks: walked in chunks of 4,000 walks when the build reports its progress
        monkeypatch.setattr(walkstore, "_CHUNK_WALKS", 4000)
        seen = Recorder()
        reported = engine.create_graph("h", graph)
        stats = reported.build_fingerprints(progress=seen, **params)
        assert_same_store(reported._fingerprints, plain._fingerprints)
        if keep_walks:  # the same walks kept
            for ours, theirs in zip(reported._walks, plain._walks):
                assert np.array_equal(ours.steps, theirs.steps)
                assert np.array_equal(ours.walk_len, theirs.walk_len)
    stages = seen.stages()
    assert list(stages) == ["walks", "hub walks"]
    assert stages["walks"][-1] == 3000 * 10 and stages["hub walks"][-1] == 30 * 200
    assert stats["walks"] == 3000 * 10 + 30 * 200
    if keep_walks:  # 3000 x 10 walks in chunks of 400 sources
        assert stages["walks"][:3] == [0, 4000, 8000]
        assert len(stages["hub walks"]) > 2


@pytest.mark.parametrize(("stage", "keep_walks"), [("walks", True), ("hub walks", False)])
def test_a_callback_that_raises_keeps_the_previous_fingerprints(
    graph, tmp_path: Path, stage: str, keep_walks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walkstore, "_CHUNK_WALKS", 4000)
    path = tmp_path / "db"
    with shardwalk.Engine.open(path) as engine:
        g = engine.create_graph("g", graph)
        g.build_fingerprints(walks_per_node=5, seed=1, hubs=10, hub_walks=50)
        before = g.ppr(graph.to_external(np.array([7]))[0], k=10)
        files = tree(path)
        with pytest.raises(Recorder.Stop):
            g.build_fingerprints(
                walks_per_node=20, seed=2, hubs=10, progress=Recorder(stage), keep_walks=keep_walks
            )
        assert tree(path) == files  # nothing written
        after = g.ppr(graph.to_external(np.array([7]))[0], k=10)
        np.testing.assert_array_equal(after.ids, before.ids)
        assert g.stats()["fingerprints"]["walks_per_node"] == 5

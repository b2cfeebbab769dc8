"""Progress callbacks on Ray (issue 23): ``build_collection(ray=True)`` and
``jobs.build_fingerprints`` (replicated, sharded) report each stage from 0 to its total in the
driver; a callback that raises stops the job with nothing committed and no task left running."""

from __future__ import annotations

from pathlib import Path

import pytest
from shardwalk.walks.distributed import fingerprints_sharded
from shardwalk.walks.generators import power_law_graph

import shardwalk
from shardwalk import jobs
from tests.engine.test_progress import Recorder, tree
from tests.parquet_data import write_dataset

pytestmark = pytest.mark.usefixtures("local_ray")

N = 4000
PARAMS = {"partitions": 4, "ef_construction": 32, "m": 8}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet") / "in"
    write_dataset(root, N, 16, files=4, seed=5)
    return root


def test_build_on_ray_reports_each_stage(source: Path, tmp_path: Path) -> None:
    seen = Recorder()
    jobs.build_collection(tmp_path / "db", "c", source, ray=True, num_workers=2, progress=seen,
                          **PARAMS)  # fmt: skip
    stages = seen.stages()
    assert list(stages) == ["scan", "assign", "build"]
    assert len(stages["scan"]) == 1 + 4 and stages["assign"][-1] == N  # a block (file) a time
    assert stages["build"] == [0, 1, 2, 3, 4]


def test_a_callback_that_raises_on_ray_leaves_nothing(source: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    jobs.build_collection(db, "c", source, ray=True, num_workers=2, **PARAMS)
    before = tree(db)
    for stage in ("assign", "build"):  # while other tasks are writing spills, partitions
        with pytest.raises(Recorder.Stop):
            jobs.build_collection(db, "c", source, ray=True, num_workers=2,
                                  progress=Recorder(stage), **PARAMS)  # fmt: skip
        assert tree(db) == before, stage


@pytest.fixture(scope="module")
def graph():
    return power_law_graph(3000, 15_000, seed=4)


def test_fingerprint_job_reports_walks_and_hub_walks(graph, tmp_path: Path) -> None:
    db = tmp_path / "db"
    with shardwalk.Engine.open(db) as engine:
        engine.create_graph("g", graph)
    params = dict(walks_per_node=6, seed=5, hubs=20, hub_walks=100)
    seen = Recorder()
    stats = jobs.build_fingerprints(db, "g", num_workers=2, progress=seen, **params)
    stages = seen.stages()
    assert list(stages) == ["walks", "hub walks"]
    assert len(stages["walks"]) == 1 + 2 * 4  # a task (tasks_per_worker=4) at a time
    assert stages["walks"][-1] == 3000 * 6 and stages["hub walks"][-1] == 20 * 100
    assert stats["walks"] == 3000 * 6 + 20 * 100
    # a callback that raises: the graph keeps its fingerprints, nothing is written
    files = tree(db)
    with pytest.raises(Recorder.Stop):
        jobs.build_fingerprints(db, "g", num_workers=2, progress=Recorder("walks"),
                                walks_per_node=9)  # fmt: skip
    assert tree(db) == files
    with shardwalk.Engine.open(db) as engine:
        assert engine.graph("g").stats()["fingerprints"]["walks_per_node"] == 6


def test_sharded_reports_the_walks_ended_after_each_round(graph) -> None:
    params = dict(walks_per_node=6, seed=5, hubs=20, hub_walks=100, workers=2)
    seen = Recorder()
    fingerprints_sharded(graph, progress=seen, **params)
    stages = seen.stages()
    assert list(stages) == ["walks", "hub walks"]
    assert stages["walks"][-1] == 3000 * 6 and stages["hub walks"][-1] == 20 * 100
    assert len(stages["walks"]) > 3  # rounds end walks a few at a time

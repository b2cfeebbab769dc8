"""Power cuts, failed fsyncs and full disks, through the fault-injecting file system
(tests/faultfs.py): every acknowledged write survives, nothing unacknowledged is half-applied,
the open never fails, a failed fsync turns the engine read-only until reopened, and a full
disk fails the call alone."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import shardwalk
from shardwalk import _fs
from shardwalk.errors import (
    FailedPreconditionError,
)
from tests.faultfs import FaultFS, abandon

DIM = 4
SPANN = {"max_list_size": 4, "eps_search": 1000.0, "maintenance": "inline"}


def vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


class World:
    """An engine on a FaultFS-tracked directory and a plain-Python model of what was
    acknowledged: per collection id -> vector, the graph's edge set. ``pending`` holds the
    write whose call failed (its outcome is unknown: after a reopen it is all there or not
    at all)."""

    def __init__(self, fs: FaultFS) -> None:
        self.fs = fs
        self.path = fs.root
        self.engine = shardwalk.Engine.open(self.path)
        self.model: dict[str, dict[int, np.ndarray]] = {"h": {}, "s": {}}
        self.edges: set[tuple[int, int]] = {(0, 1), (1, 2)}
        self.pending: list[tuple[str, object]] = []
        self.engine.create_collection("h", dim=DIM, index="hnsw")
        self.engine.create_collection("s", dim=DIM, index="spann", **SPANN)
        self.engine.create_graph("g", np.array(sorted(self.edges)))

    # -- writes: applied to the model only once acknowledged --------------------------------
    def upsert(self, name: str, ids: list[int], seed: int) -> None:
        vecs = vectors(seed, len(ids))
        self.pending.append(("upsert", (name, ids, vecs)))
        self.engine.collection(name).upsert(ids, vecs)
        if name == "s":  # into the index now: spann splits as the rows arrive, whatever the load
            self.engine.collection(name).wait_indexed()
        self.pending.pop()
        self.model[name].update(zip(ids, vecs))

    def delete(self, name: str, ids: list[int]) -> None:
        self.pending.append(("delete", (name, ids)))
        self.engine.collection(name).delete(ids, missing_ok=True)
        self.pending.pop()
        for i in ids:
            self.model[name].pop(i, None)

    def add_edges(self, pairs: list[tuple[int, int]]) -> None:
        self.pending.append(("edges", pairs))
        self.engine.graph("g").upsert_edges(np.array(pairs, dtype=np.int64))
        self.pending.pop()
        self.edges.update(pairs)

    def flush(self) -> None:
        self.engine.flush()

    def compact(self, name: str) -> None:
        self.engine.collection(name).compact()

    def compact_graph(self) -> None:
        self.engine.graph("g").compact()

    # -- power cut and reopen ---------------------------------------------------------------
    def crash_and_reopen(self, *, crash: bool = True) -> None:
        abandon(self.engine)
        if crash:
            self.fs.crash()
        self.engine = shardwalk.Engine.open(self.path)  # must never fail
        self.check()

    def check(self) -> None:
        """Every acknowledged write is there; the one whose call failed, whole or not at all."""
        pending = self.pending[-1] if self.pending else None
        self.pending = []
        for name, model in self.model.items():
            col = self.engine.collection(name)
            expect = dict(model)
            if pending is not None and pending[0] in ("upsert", "delete") and pending[1][0] == name:
                expect = self._settle(col, expect, pending)
                model.clear()
                model.update(expect)
            stored = set(_ids_of(col))
            assert stored == set(expect), (name, sorted(stored ^ set(expect)))
            if expect:
                ids = sorted(expect)
                got = col.get(ids).vectors
                np.testing.assert_array_equal(got, np.stack([expect[i] for i in ids]))
        edges = _edges_of(self.engine.graph("g"))
        if pending is not None and pending[0] == "edges":
            new = set(pending[1])  # type: ignore[arg-type]
            assert edges in (self.edges, self.edges | new), "a graph batch was half applied"
            self.edges = edges
        assert edges == self.edges

    def _settle(self, col, expect, pending):
        """The model after the failed write: applied whole, or not at all."""
        op, args = pending
        if op == "upsert":
            _, ids, vecs = args
            present = [i in col for i in ids]
            if all(present) and all(
                np.array_equal(v, w) for v, w in zip(col.get(ids).vectors, vecs)
            ):
                return {**expect, **dict(zip(ids, vecs))}
        else:
            _, ids = args
            if not any(i in col for i in ids):
                return {k: v for k, v in expect.items() if k not in ids}
        return expect  # not applied: the check below finds any half-applied batch


def _ids_of(col) -> list[int]:
    # every id a collection holds (small collections: probe the whole id range used here)
    return [i for i in range(200) if i in col]


def _edges_of(graph) -> set[tuple[int, int]]:
    csr = graph.csr
    ids = csr.node_ids
    src = np.repeat(np.arange(ids.size), np.diff(csr.indptr))
    return {(int(ids[s]), int(ids[d])) for s, d in zip(src, csr.indices)}


def _spann_workdir(request, monkeypatch, fs: FaultFS, where: str) -> None:
    if where == "shm":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        shm = tempfile.mkdtemp(prefix="sw-spann-", dir="/dev/shm")
        request.addfinalizer(lambda: _fs.FileSystem().rmtree(shm))
        monkeypatch.setenv("SHARDWALK_SPANN_TMPDIR", shm)
    else:  # the same directory tree, but every link fails as across file systems
        fs.cross_device = True


# -- item 12: every file a manifest names is fsynced, every directory after its entries ----
@pytest.mark.parametrize("workdir", ["shm", "exdev"])
def test_checkpointed_state_survives_a_power_cut(fault_fs, request, monkeypatch, workdir):
    """Built, checkpointed and closed (an hnsw and a spann collection, a graph with
    fingerprints and edge updates; spann's working directory on another file system): a
    power cut after the close loses nothing and the open succeeds. Before: the posting files
    copied into a snapshot, the collection and graph directories were never fsynced."""
    _spann_workdir(request, monkeypatch, fault_fs, workdir)
    world = World(fault_fs)
    world.upsert("h", list(range(40)), 1)
    world.upsert("s", list(range(40)), 2)
    world.engine.graph("g").build_fingerprints(walks_per_node=4)
    world.add_edges([(2, 3), (3, 4)])
    world.flush()
    world.compact_graph()
    world.upsert("s", list(range(30, 60)), 3)  # splits; the old snapshot goes at the checkpoint
    world.add_edges([(4, 5)])
    world.flush()
    world.compact_graph()
    world.engine.close()
    fault_fs.crash()
    world.engine = shardwalk.Engine.open(world.path)
    world.check()
    assert world.engine.graph("g").has_fingerprints
    world.engine.close()


# -- item 13: a failed fsync is fatal -------------------------------------------------------
def _read_only(world: World, cause: str) -> None:
    """Writes refused with a clear error naming the reopen and the cause; reads go on."""
    for write in (
        lambda: world.engine.collection("h").upsert([150], vectors(9, 1)),
        lambda: world.engine.collection("h").delete([5]),
        lambda: world.engine.graph("g").upsert_edges(np.array([[7, 8]])),
        lambda: world.engine.collection("h").flush(),
        lambda: world.engine.create_collection("x", dim=DIM),
    ):
        with pytest.raises(FailedPreconditionError, match="reopen") as info:
            write()
        assert cause in str(info.value) or cause in str(info.value.__cause__)
    world.engine.collection("h").search(vectors(5, 1), k=3)  # reads go on
    world.engine.graph("g").ppr(0, k=2)
    world.check()


@pytest.mark.parametrize("target", ["wal", "snapshot", "manifest"])
def test_a_failed_fsync_makes_the_engine_read_only_until_reopened(fault_fs, target):
    world = World(fault_fs)
    world.upsert("h", list(range(20)), 1)
    world.upsert("s", list(range(20)), 2)
    suffix = {"wal": ".log", "snapshot": ".parquet", "manifest": "manifest.json"}[target]
    fault_fs.fail_when(lambda kind, path: errno.EIO if kind == "fsync" and suffix in path else None)
    with pytest.raises(FailedPreconditionError, match="reopen"):
        if target == "wal":
            world.upsert("h", [100, 101], 3)
        else:
            world.flush()
    fault_fs.fail_when(None)
    _read_only(world, "Input/output error")
    if target == "manifest":  # a close writes nothing more (no checkpoint) and does not fail
        world.engine.close()
        world.engine = shardwalk.Engine.open(world.path)
        world.check()
    world.crash_and_reopen()
    world.upsert("h", [120], 4)  # writable again
    world.crash_and_reopen()


@pytest.mark.parametrize("crash", [True, False])
def test_a_failed_directory_fsync_after_the_manifest_rename(fault_fs, crash):
    """The rename happened, its directory fsync failed: the new manifest may or may not
    survive. The engine turns read-only (no write is acknowledged against either log), and
    reopening is right whichever manifest survived (crash: the old one; no crash: the new)."""
    world = World(fault_fs)
    world.upsert("h", list(range(20)), 1)
    world.flush()
    world.upsert("h", list(range(20, 30)), 2)
    world.delete("h", [0, 1])
    root_fsyncs = []

    def rule(kind: str, path: str) -> int | None:
        # the data root's first fsync in the checkpoint follows the generation's manifest
        # update, the second the rename of the manifest that names the new snapshot and log
        if kind == "fsync" and path == str(fault_fs.root):
            root_fsyncs.append(path)
            if len(root_fsyncs) == 2:
                return errno.EIO
        return None

    fault_fs.fail_when(rule)
    with pytest.raises(FailedPreconditionError, match="reopen"):
        world.flush()
    fault_fs.fail_when(None)
    _read_only(world, "Input/output error")
    manifest = json.loads((fault_fs.root / "manifest.json").read_text())
    # the rename happened: the file names the new log (the checkpoint stopped before using it)
    assert manifest["collections"]["h"]["wal"] != os.path.basename(
        world.engine.collection("h")._wal.path
    )
    assert world.engine._datadir.manifest == manifest  # memory took what the file holds
    world.crash_and_reopen(crash=crash)
    world.upsert("h", [40], 3)
    world.crash_and_reopen()


# -- the power-loss state machine ---------------------------------------------------------
class PowerLossMachine(RuleBasedStateMachine):
    """Random upserts, deletes, checkpoints, compactions, graph updates and spann splits,
    with power cuts between operations and inside them (at a random write or fsync)."""

    seen: ClassVar[Counter[str]] = Counter()  # what the runs exercised (checked after them)

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="sw-power-")
        self.fs = FaultFS(Path(self.tmp) / "data")
        self.use = _fs.use(self.fs)
        self.use.__enter__()
        self.world = World(self.fs)
        self.seed = 100

    def teardown(self) -> None:
        try:
            abandon(self.world.engine)
        finally:
            self.use.__exit__(None, None, None)
            _fs.FileSystem().rmtree(self.tmp)

    def _run(self, op, *args) -> None:
        try:
            op(*args)
        except BaseException:
            if not self.fs.dead:  # only a power cut may stop an operation here
                raise
            PowerLossMachine.seen["cut inside an operation"] += 1
            self.world.crash_and_reopen()
        splits = self.world.engine.collection("s").stats()["index_stats"].get("splits", 0)
        if splits:
            PowerLossMachine.seen["spann splits"] += 1

    @rule(
        name=st.sampled_from(["h", "s"]),
        ids=st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True),
    )
    def upsert(self, name, ids) -> None:
        self.seed += 1
        self._run(self.world.upsert, name, ids, self.seed)

    @rule(
        name=st.sampled_from(["h", "s"]),
        ids=st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True),
    )
    def delete(self, name, ids) -> None:
        self._run(self.world.delete, name, ids)

    @rule(src=st.integers(0, 12), dst=st.integers(0, 12))
    def add_edge(self, src, dst) -> None:
        self._run(self.world.add_edges, [(src, dst)])

    @rule()
    def checkpoint(self) -> None:
        self._run(self.world.flush)

    @rule(name=st.sampled_from(["h", "s"]))
    def compact(self, name) -> None:
        self._run(self.world.compact, name)

    @rule()
    def compact_graph(self) -> None:
        self._run(self.world.compact_graph)

    @rule()
    def power_cut(self) -> None:
        self.world.crash_and_reopen()

    @rule(kind=st.sampled_from(["write", "fsync"]), n=st.integers(1, 12))
    def power_cut_soon(self, kind, n) -> None:
        """The power goes out at the n-th write or fsync from now (inside a later operation,
        or never if there are fewer)."""
        self.fs.power_cut_at(kind, n)

    @invariant()
    def nothing_in_flight(self) -> None:
        assert not self.world.pending


def test_power_loss_state_machine():
    settings_ = settings(
        max_examples=15,
        stateful_step_count=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    PowerLossMachine.TestCase.settings = settings_
    PowerLossMachine.seen.clear()
    PowerLossMachine.TestCase().runTest()
    assert PowerLossMachine.seen["cut inside an operation"] > 0, PowerLossMachine.seen
    assert PowerLossMachine.seen["spann splits"] > 0, PowerLossMachine.seen


def test_a_power_cut_during_a_backup_leaves_both_directories_usable(tmp_path: Path) -> None:
    """A power cut at fsyncs spread over a backup: the source reopens with everything, and the
    copy either opens with everything (its manifest, written last, survived) or is refused as
    incomplete (no manifest), never a half-valid data directory."""
    from tests.collection.test_write_failures import edges_of
    from tests.faultfs import PowerLoss

    fs = FaultFS(tmp_path / "root")
    source, dest = fs.root / "db", fs.root / "copy"
    ids, vecs = list(range(30)), vectors(7, 30)
    edges = {(0, 1), (1, 2), (2, 5)}

    def same(engine: shardwalk.Engine) -> None:
        np.testing.assert_array_equal(engine.collection("h").get(ids).vectors, vecs)
        assert len(engine.collection("s")) == len(ids)
        assert edges_of(engine.graph("g")) == edges

    with _fs.use(fs):
        engine = shardwalk.Engine.open(source)
        engine.create_collection("h", dim=DIM, index="hnsw").upsert(ids, vecs)
        engine.create_collection("s", dim=DIM, index="spann", **SPANN).upsert(ids, vecs)
        engine.create_graph("g", np.array(sorted(edges)))
        engine.flush()
        before = fs.ops["fsync"]
        engine.backup(fs.root / "reference")
        fsyncs = fs.ops["fsync"] - before
        assert fsyncs > 5
        outcomes = Counter()
        for cut in sorted({1, 2, fsyncs // 2, fsyncs - 1, fsyncs}):
            fs.power_cut_at("fsync", cut)
            with pytest.raises(PowerLoss):
                engine.backup(dest)
            abandon(engine)
            fs.crash()
            engine = shardwalk.Engine.open(source)  # the source is intact
            same(engine)
            if (dest / "manifest.json").exists():
                with shardwalk.Engine.open(dest) as copy:
                    same(copy)
                outcomes["complete"] += 1
            elif dest.exists() and any(dest.iterdir()):
                with pytest.raises(FailedPreconditionError):
                    shardwalk.Engine.open(dest)
                outcomes["refused"] += 1
            else:
                outcomes["absent"] += 1
            _fs.rmtree(dest)
        engine.close()
    assert outcomes["refused"] > 0, outcomes

"""Engine.backup: an online, consistent copy that opens as a data directory (the restore), taken
while writers and searches go on; an interrupted backup is recognisably incomplete and never
opens; and `shardwalk backup`."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import shardwalk
import shardwalk.backup
from shardwalk.cli import main
from tests.conftest import INDEX_KINDS, INDEX_PARAMS

DIM = 16
BATCH = 20
TENANTS = ["a", "b", "c"]


def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch i of the writers: ids i*BATCH.. and their seeded vectors."""
    ids = np.arange(i * BATCH, (i + 1) * BATCH, dtype=np.int64)
    return ids, np.random.default_rng(i).standard_normal((BATCH, DIM)).astype(np.float32)


def rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "ids": np.arange(n, dtype=np.int64),
        "vectors": rng.standard_normal((n, DIM)).astype(np.float32),
        "tenants": [TENANTS[i % 3] for i in range(n)],
        "attributes": {"year": (2000 + np.arange(n) % 20).tolist()},
    }


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def no_hook():
    yield
    shardwalk.backup.after_file = None


# -- consistency under concurrent writes and searches -----------------------------------------
@pytest.mark.parametrize("link", [True, False], ids=["link", "copy"])
def test_backup_during_writes_holds_every_write_acknowledged_before_it(tmp_path, link, no_hook):
    """Writers upsert batches and searchers search throughout; the copy holds every batch
    acknowledged before backup() began, and each batch whole or not at all. While files are
    copied (no lock held) writes are acknowledged and searches answered: the hook waits for
    one of each, which would never come if the backup held them back."""
    engine = shardwalk.Engine.open(tmp_path / "src")
    col = engine.create_collection("v", dim=DIM, index="flat")  # exact: the searchers check
    for i in range(5):  # a snapshot and a non-empty log before the writers start
        col.upsert(*batch(i))
        if i == 2:
            col.flush()
    acked: set[int] = set(range(5))
    acked_lock = threading.Lock()
    stop = threading.Event()
    progress = threading.Condition()
    counts = {"writes": 0, "searches": 0}
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        i = first
        try:
            while not stop.is_set():
                col.upsert(*batch(i))
                with acked_lock:
                    acked.add(i)
                with progress:
                    counts["writes"] += 1
                    progress.notify_all()
                i += 2
        except BaseException as exc:
            errors.append(exc)

    def searcher() -> None:
        query = batch(0)[1][:2]
        try:
            while not stop.is_set():
                found = col.search(query, k=3)
                assert found.ids[0, 0] == 0 and found.ids[1, 0] == 1
                with progress:
                    counts["searches"] += 1
                    progress.notify_all()
        except BaseException as exc:
            errors.append(exc)

    def one_more_of_each(path: str) -> None:
        with progress:
            start = dict(counts)
            assert progress.wait_for(
                lambda: (
                    errors or all(counts[what] > start[what] for what in ("writes", "searches"))
                ),
                timeout=120,
            ), f"writes or searches stood still while the backup copied {path}"

    threads = [threading.Thread(target=writer, args=(f,)) for f in (5, 6)]
    threads.append(threading.Thread(target=searcher))
    for t in threads:
        t.start()
    try:
        with progress:  # the writers are going
            progress.wait_for(lambda: errors or counts["writes"] >= 6, timeout=120)
        with acked_lock:
            before = set(acked)
        shardwalk.backup.after_file = one_more_of_each
        report = engine.backup(tmp_path / "copy", link=link)
        shardwalk.backup.after_file = None
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert report["collections"] == ["v"] and report["graphs"] == []
    assert (report["linked"] > 0) == link and report["copied"] > 0  # the log is always copied
    with acked_lock:
        after = set(acked)
    engine.close()

    with shardwalk.Engine.open(tmp_path / "copy") as copy:
        restored = copy.collection("v")
        tried = range(max(after) + 3)  # every batch a writer may have started
        present = {i for i in tried if int(batch(i)[0][0]) in restored}
        assert len(restored) == len(present) * BATCH  # whole batches only
        assert before <= present, sorted(before - present)
        assert present <= after, sorted(present - after)
        for i in sorted(before):
            ids, vectors = batch(i)
            np.testing.assert_array_equal(restored.get(ids).vectors, vectors)
        found = restored.search(batch(3)[1], k=1)
        np.testing.assert_array_equal(found.ids[:, 0], batch(3)[0])


def test_searches_run_while_the_backup_holds_the_write_lock(tmp_path, monkeypatch):
    """Pinning runs under the collection's write lock; a search from the same thread then
    still answers (a search never takes that lock), and a write waits for the pinning."""
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        col = engine.create_collection("v", dim=DIM, index="flat")
        col.upsert(*batch(0))
        pin = shardwalk.backup._Writer.pin
        seen = {}

        def searching_pin(self, kind, name, entry, log_size):
            seen["found"] = col.search(batch(0)[1][:1], k=1).ids[0, 0]
            seen["locked"] = col._writes.lock.locked()
            return pin(self, kind, name, entry, log_size)

        monkeypatch.setattr(shardwalk.backup._Writer, "pin", searching_pin)
        engine.backup(tmp_path / "copy")
    assert seen == {"found": 0, "locked": True}


@pytest.mark.parametrize("link", [True, False], ids=["link", "copy"])
def test_a_checkpoint_during_the_copy_does_not_touch_the_backup(tmp_path, link, no_hook):
    """Once pinned, the snapshot and log may be deleted by the source's next checkpoint while
    the backup still copies them: links and open descriptors keep their data."""
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        col = engine.create_collection("v", dim=DIM, index="hnsw")
        col.upsert(*batch(0))
        col.flush()
        col.upsert(*batch(1))
        pinned_snapshot = {}

        def checkpoint_meanwhile(path: str) -> None:
            if not pinned_snapshot:
                pinned_snapshot["name"] = col.stats()["snapshot"]
                col.upsert(*batch(2))
                col.flush()  # a new snapshot; the pinned one and its log are removed
                assert not (
                    tmp_path / "src" / "collections" / "v" / pinned_snapshot["name"]
                ).exists()

        shardwalk.backup.after_file = checkpoint_meanwhile
        engine.backup(tmp_path / "copy", link=link)
    with shardwalk.Engine.open(tmp_path / "copy") as copy:
        restored = copy.collection("v")
        assert len(restored) == 2 * BATCH and int(batch(2)[0][0]) not in restored
        np.testing.assert_array_equal(restored.get(batch(1)[0]).vectors, batch(1)[1])


# -- every kind of persisted object survives the round trip ------------------------------------
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_every_index_kind_round_trips(tmp_path, kind):
    """Snapshot plus log (upserts, replacements, deletes since the last checkpoint), tenants and
    attributes: the copy answers searches exactly as the source did when the backup ran, also
    after the source moved on and a checkpoint there removed the files the backup pinned."""
    data = rows(1200, seed=1)
    queries = np.random.default_rng(9).standard_normal((20, DIM)).astype(np.float32)
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        col = engine.create_collection("v", dim=DIM, index=kind, **INDEX_PARAMS[kind])
        col.upsert(
            data["ids"][:1100],
            data["vectors"][:1100],
            tenants=data["tenants"][:1100],
            attributes={"year": data["attributes"]["year"][:1100]},
        )
        col.flush()
        col.upsert(  # 900-1099 replaced, 1100-1199 new: in the log
            data["ids"][900:],
            data["vectors"][900:] + 0.5,
            tenants=data["tenants"][900:],
            attributes={"year": data["attributes"]["year"][900:]},
        )
        col.delete(np.arange(0, 300, 7))
        col.wait_indexed()  # as the copy's open indexes the log's rows: ranked the same
        expect = [
            col.search(queries, k=10),
            col.search(queries, k=10, tenant="b", where=shardwalk.F("year") >= 2010),
        ]
        count = len(col)
        engine.backup(tmp_path / "copy")
        later = np.random.default_rng(5).standard_normal((100, DIM)).astype(np.float32)
        col.upsert(np.arange(5000, 5100), later)  # after the backup
        col.flush()  # removes the snapshot the backup took
    with shardwalk.Engine.open(tmp_path / "copy") as copy:
        restored = copy.collection("v")
        assert len(restored) == count and 5000 not in restored
        got = [
            restored.search(queries, k=10),
            restored.search(queries, k=10, tenant="b", where=shardwalk.F("year") >= 2010),
        ]
        for want, have in zip(expect, got):
            np.testing.assert_array_equal(have.ids, want.ids)
            np.testing.assert_allclose(have.distances, want.distances, rtol=1e-5, atol=1e-5)
        assert restored.get([950]).tenants == [data["tenants"][950]]
        np.testing.assert_allclose(restored.get([950]).vectors[0], data["vectors"][950] + 0.5)


def test_graph_with_fingerprints_and_updates_round_trips(tmp_path):
    """A graph with kept walks and fingerprints, then edge updates and deletions (compacted by
    the backup's checkpoint) and a collection: the same PPR answers from the copy (copied
    byte by byte: the linking path is the same for every kind of file)."""
    rng = np.random.default_rng(4)
    edges = rng.integers(0, 300, size=(1500, 2))
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        graph = engine.create_graph("g", edges)
        graph.build_fingerprints(walks_per_node=8, seed=1)
        graph.upsert_edges([[400, 1], [1, 400], [2, 3]])
        graph.delete_edges([[400, 1]])
        graph.delete_nodes([7])
        other = engine.create_graph("plain", np.array([[0, 1], [1, 2]]))  # never updated
        col = engine.create_collection("v", dim=DIM, index="hnsw")
        col.upsert(*batch(0))
        seeds = [1, 400, 12]
        expect = {
            method: graph.ppr_batch(seeds, k=20, method=method)
            for method in ("fingerprint", "exact")
        }
        stats = graph.stats()
        plain = other.ppr(0, k=3, method="exact")
        engine.backup(tmp_path / "copy", link=False)
        graph.upsert_edges([[1, 2]])  # after the backup
        graph.compact()
    with shardwalk.Engine.open(tmp_path / "copy") as copy:
        restored = copy.graph("g")
        for method, want in expect.items():
            have = restored.ppr_batch(seeds, k=20, method=method)
            np.testing.assert_array_equal(have.ids, want.ids)
            np.testing.assert_allclose(have.scores, want.scores, rtol=1e-6)
        have_stats = restored.stats()
        for key in ("nodes", "edges", "updates"):
            assert have_stats[key] == stats[key], key
        assert have_stats["fingerprints"]["walks_bytes"]  # the walks came along: repairs work
        np.testing.assert_array_equal(
            copy.graph("plain").ppr(0, k=3, method="exact").ids, plain.ids
        )
        assert len(copy.collection("v")) == BATCH
        # the copy is a data directory of its own: it takes updates like the source
        assert restored.upsert_edges([[5, 6]])["walks"] >= 0 and restored.has_fingerprints


def test_links_fall_back_to_copies_across_filesystems(tmp_path, monkeypatch):
    """os.link fails with EXDEV when the destination is on another filesystem: the backup
    copies instead (as link=False does)."""

    def no_link(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    with shardwalk.Engine.open(tmp_path / "src") as engine:
        col = engine.create_collection("v", dim=DIM, index="flat")
        col.upsert(*batch(0))
        col.flush()
        monkeypatch.setattr(os, "link", no_link)
        report = engine.backup(tmp_path / "copy")
        monkeypatch.undo()
    assert report["linked"] == 0 and report["copied"] == report["files"] > 1
    assert report["bytes_copied"] > 0
    with shardwalk.Engine.open(tmp_path / "copy") as copy:
        np.testing.assert_array_equal(copy.collection("v").get(batch(0)[0]).vectors, batch(0)[1])


# -- destinations -------------------------------------------------------------------------------
def test_bad_destinations_are_refused_and_nothing_is_written(tmp_path):
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        engine.create_collection("v", dim=DIM).upsert(*batch(0))
        full = tmp_path / "full"
        full.mkdir()
        (full / "notes.txt").write_text("mine")
        with pytest.raises(shardwalk.AlreadyExistsError, match=r"is not empty \('notes\.txt'\)"):
            engine.backup(full)
        assert listing(full) == ["notes.txt"]
        (tmp_path / "file").write_text("x")
        with pytest.raises(shardwalk.AlreadyExistsError, match="is not a directory"):
            engine.backup(tmp_path / "file")
        with pytest.raises(shardwalk.InvalidArgumentError, match="inside the data directory"):
            engine.backup(tmp_path / "src" / "collections" / "copy")
        with pytest.raises(shardwalk.InvalidArgumentError, match="directory path"):
            engine.backup("")
        empty = tmp_path / "empty"  # an empty directory is fine, and a new nested one
        empty.mkdir()
        engine.backup(empty)
        engine.backup(tmp_path / "new" / "nested")
        with pytest.raises(shardwalk.AlreadyExistsError, match="not empty"):
            engine.backup(empty)  # now a backup: never overwritten
    for path in (empty, tmp_path / "new" / "nested"):
        assert sorted(os.listdir(path)) == ["collections", "graphs", "manifest.json"]
        with shardwalk.Engine.open(path) as copy:
            assert len(copy.collection("v")) == BATCH
    with pytest.raises(shardwalk.FailedPreconditionError, match="in-memory engine"):
        shardwalk.Engine.memory().backup(tmp_path / "mem")


def test_a_failed_backup_removes_what_it_wrote(tmp_path, no_hook):
    def fail(path: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with shardwalk.Engine.open(tmp_path / "src") as engine:
        engine.create_collection("v", dim=DIM).upsert(*batch(0))
        shardwalk.backup.after_file = fail
        with pytest.raises(OSError, match="No space"):
            engine.backup(tmp_path / "parent" / "copy")
        assert not (tmp_path / "parent").exists()
        (tmp_path / "empty").mkdir()
        with pytest.raises(OSError, match="No space"):
            engine.backup(tmp_path / "empty")
        assert os.listdir(tmp_path / "empty") == []
        shardwalk.backup.after_file = None
        with shardwalk.deadline(1e-9), pytest.raises(shardwalk.DeadlineExceededError):
            engine.backup(tmp_path / "late")  # an RPC's deadline passed
        assert not (tmp_path / "late").exists()
        engine.backup(tmp_path / "empty")  # and the engine is none the worse
        col = engine.collection("v")
        col.upsert(*batch(1))
    with shardwalk.Engine.open(tmp_path / "empty") as copy:
        assert len(copy.collection("v")) == BATCH


# -- kill -9 mid-backup -------------------------------------------------------------------------
CHILD = r"""
import sys, time
import shardwalk, shardwalk.backup

source, dest, link = sys.argv[1], sys.argv[2], sys.argv[3] == "link"
files = []

def stall(path):
    files.append(path)
    print("file", path, flush=True)
    if len(files) == 3:
        print("stalled", flush=True)
        time.sleep(600)  # killed here

shardwalk.backup.after_file = stall
with shardwalk.Engine.open(source) as engine:
    engine.backup(dest, link=link)
print("finished", flush=True)
"""


@pytest.mark.parametrize("link", [True, False], ids=["link", "copy"])
def test_kill_during_a_backup_leaves_the_source_intact_and_the_copy_refused(tmp_path, link):
    source, dest = tmp_path / "src", tmp_path / "copy"
    queries = np.random.default_rng(2).standard_normal((5, DIM)).astype(np.float32)
    with shardwalk.Engine.open(source) as engine:
        col = engine.create_collection("v", dim=DIM, index="hnsw")
        for i in range(4):
            col.upsert(*batch(i))
        col.flush()
        col.upsert(*batch(4))  # in the log: the child's backup checkpoints it
        engine.create_graph("g", np.array([[0, 1], [1, 2], [2, 0]]))
        expect = col.search(queries, k=5)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(source), str(dest), "link" if link else "copy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the child stalls after its third file, before the manifest
        lines.append(line)
        if line.startswith("stalled"):
            break
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert lines and lines[-1].startswith("stalled"), (lines, err[-2000:])

    assert (dest / "BACKUP-INCOMPLETE").is_file() and not (dest / "manifest.json").exists()
    before = listing(dest)
    with pytest.raises(shardwalk.FailedPreconditionError, match="is an incomplete backup"):
        shardwalk.Engine.open(dest)
    assert listing(dest) == before  # the refused open changed nothing
    with shardwalk.Engine.open(source) as engine:  # the source: intact, same answers
        restored = engine.collection("v")
        assert len(restored) == 5 * BATCH
        np.testing.assert_array_equal(restored.search(queries, k=5).ids, expect.ids)
        assert engine.graphs() == ["g"]
        engine.backup(tmp_path / "again")  # and a new backup completes
    with shardwalk.Engine.open(tmp_path / "again") as copy:
        np.testing.assert_array_equal(copy.collection("v").search(queries, k=5).ids, expect.ids)


def test_open_refuses_a_non_empty_directory_without_a_manifest(tmp_path):
    """Before: Engine.open made such a directory an empty data directory (and removed the
    collections of one that had lost its manifest)."""
    with shardwalk.Engine.open(tmp_path / "db") as engine:
        engine.create_collection("v", dim=DIM).upsert(*batch(0))
    (tmp_path / "db" / "manifest.json").unlink()
    before = listing(tmp_path / "db")
    with pytest.raises(shardwalk.FailedPreconditionError, match=r"has no manifest\.json"):
        shardwalk.Engine.open(tmp_path / "db")
    assert listing(tmp_path / "db") == before
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(shardwalk.FailedPreconditionError, match="not a shardwalk data directory"):
        shardwalk.Engine.open(plain)
    assert listing(plain) == ["notes.txt"]
    # what a first open that crashed before its manifest leaves is still a new directory
    crashed = tmp_path / "crashed"
    for sub in ("collections", "graphs"):
        (crashed / sub).mkdir(parents=True)
    (crashed / "LOCK").write_text("123\n")
    (crashed / ".manifest.json.tmp-123").write_text("{")
    with shardwalk.Engine.open(crashed) as engine:
        assert engine.collections() == []


# -- the command line ---------------------------------------------------------------------------
def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_backup(tmp_path, capsys):
    with shardwalk.Engine.open(tmp_path / "src") as engine:
        engine.create_collection("v", dim=DIM).upsert(*batch(0))
        # a server (here: this engine) holds the directory: the command says what to do
        code, _, err = run(capsys, "backup", "--data", tmp_path / "src", tmp_path / "copy")
        assert code == 2 and "already open" in err and "Backup RPC" in err
        assert "client.backup(dest)" in err and not (tmp_path / "copy").exists()
    code, out, err = run(capsys, "backup", "--data", tmp_path / "src", tmp_path / "copy", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["collections"] == ["v"] and report["destination"] == str(tmp_path / "copy")
    code, out, _ = run(capsys, "backup", "--data", tmp_path / "src", tmp_path / "copy2", "--copy")
    assert code == 0 and "0 files linked" in out and "restore" in out
    for copy in ("copy", "copy2"):
        code, out, _ = run(capsys, "info", "--data", tmp_path / copy)
        assert code == 0 and json.loads(out)["collections"][0]["count"] == BATCH
    code, _, err = run(capsys, "backup", "--data", tmp_path / "src", tmp_path / "copy")
    assert code == 2 and "is not empty" in err and "(ALREADY_EXISTS)" in err
    code, _, err = run(capsys, "backup", "--data", tmp_path / "nothing", tmp_path / "copy3")
    assert code == 2 and "no shardwalk data directory" in err


def test_cli_help_says_a_served_directory_is_backed_up_through_the_server(capsys):
    with pytest.raises(SystemExit):
        main(["backup", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a running server holds its lock" in text and "Backup RPC" in text

"""The SPANN index's files: records (key and vector), the posting files of each generation
(appended while open, read-only once sealed), the label -> place map, and the snapshot layout
that :meth:`SpannIndex.save` writes and :meth:`SpannIndex.load` reads (``meta.json``,
``postings-NNNNNN.bin``, ``centroids/``, ``lists.npy``, ``version.npy``, ``where.npy``)."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from shardwalk.index._kernels import SPANN_LABEL_BITS
from shardwalk.index.base import read_meta, save_index
from shardwalk.index.hnsw_graph import HNSWGraph

from shardwalk import _fs
from shardwalk._threads import ThreadBudget
from shardwalk.errors import CorruptionError

if TYPE_CHECKING:
    from shardwalk.index.spann.parts import SpannParts

LABEL_MASK = (1 << SPANN_LABEL_BITS) - 1
_GEN_SHIFT = 40  # a record's place: generation << 40 | record number
_NOWHERE = -1
_DEAD = np.uint16(0x8000)  # version flag: deleted (no record's version has it)
_VERSIONS = 0x7FFF  # versions 1..32767, then 1 again


def record_words(dim: int) -> int:
    """float32 slots per record: the key (two), the vector, a pad to keep keys 8-aligned."""
    return 2 + dim + (dim & 1)


def make_records(labels: np.ndarray, versions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Records (n, words) float32 of these labels, versions and vectors."""
    n, dim = vectors.shape
    out = np.zeros((n, record_words(dim)), dtype=np.float32)
    keys = labels.astype(np.int64) | (versions.astype(np.int64) << SPANN_LABEL_BITS)
    out.view(np.int64)[:, 0] = keys
    out[:, 2 : 2 + dim] = vectors
    return out


class _Generation:
    """One posting file: records appended at its end while open, read-only once sealed."""

    def __init__(self, number: int, path: str, words: int, records: int, *, sealed: bool):
        self.number = number
        self.path = path
        self.words = words
        self.sealed = sealed
        self.used = records  # records allocated (the file's content)
        self.fd = os.open(path, os.O_RDONLY if sealed else os.O_RDWR | os.O_CREAT, 0o644)
        self.capacity = 0
        # the mapped records (capacity, words) float32, and the same bytes as int64 (column 0:
        # each record's key), plain arrays for numba's scans
        self.records = np.zeros((0, words), dtype=np.float32)
        self.records_int64 = np.zeros((0, words // 2), dtype=np.int64)
        self._map(records)

    @property
    def record_bytes(self) -> int:
        return self.words * 4

    def _map(self, capacity: int) -> None:
        """Map ``capacity`` records (open files grow sparsely first). Old views stay valid."""
        if not self.sealed:
            os.ftruncate(self.fd, capacity * self.record_bytes)
        self.capacity = capacity
        if capacity == 0:
            return
        raw = np.memmap(
            self.path,
            dtype=np.float32,
            mode="r" if self.sealed else "r+",
            shape=(capacity, self.words),
        )
        self.records = raw.view(np.ndarray)  # the mapping stays alive behind the view
        self.records_int64 = self.records.view(np.int64)

    def allocate(self, records: int) -> int:
        """Room for ``records`` at the end; returns where it starts."""
        assert not self.sealed
        start = self.used
        if start + records > self.capacity:
            self._map(max(start + records, 2 * self.capacity, 4096))
        self.used += records
        return start

    def write(self, start: int, records: np.ndarray) -> None:
        data = np.ascontiguousarray(records, dtype=np.float32)
        _fs.pwrite(self.fd, data.tobytes(), start * self.record_bytes)

    def read(self, start: int, count: int) -> np.ndarray:
        """Records [start, start + count): one positioned read."""
        raw = os.pread(self.fd, count * self.record_bytes, start * self.record_bytes)
        if len(raw) != count * self.record_bytes:
            raise CorruptionError(
                f"posting file {self.path!r} ends inside a list (records {start}-"
                f"{start + count}); it is truncated: restore the data directory from a backup"
            )
        return np.frombuffer(raw, dtype=np.float32).reshape(count, self.words)

    def seal(self) -> None:
        """Cut to the records used, fsync, and reopen read-only."""
        if self.sealed:
            return
        _fs.truncate(self.fd, self.used * self.record_bytes)
        _fs.fsync(self.fd)
        os.close(self.fd)
        self.sealed = True
        self.fd = os.open(self.path, os.O_RDONLY)
        self._map(self.used)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _PrimaryPlaces:
    """label -> its primary record's place, an int64 memory-mapped file (on disk, not in the
    resident set; the OS caches the pages a workload touches)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = 0
        self.array = np.zeros(0, dtype=np.int64)

    def reserve(self, size: int) -> None:
        if size <= self.size:
            return
        size = max(size, 2 * self.size, 1 << 16)
        os.ftruncate(self.fd, size * 8)
        fresh = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(size,))
        fresh[self.size :] = _NOWHERE
        self.array, self.size = fresh, size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Staged:
    """Records already written for some lists, not yet visible: the list-table entries, row
    places and counts that :meth:`SpannIndex._publish` makes visible in one step."""

    __slots__ = ("entries", "garbage", "moves", "relocations")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, int, int]] = []  # list, gen, start, count, cap
        self.moves: list[tuple[np.ndarray, np.ndarray]] = []  # labels -> their primary's place
        self.garbage = 0  # records of runs the entries leave behind
        self.relocations = 0


def _cleanup(
    workdir: str,
    generations: list[_Generation],
    places: _PrimaryPlaces,
    mutex: threading.RLock,
    closed: threading.Event,
) -> None:
    # at interpreter exit the split worker (a daemon) may still run: it stops before its next
    # split, and the files close once it has finished the one it runs, never under it
    closed.set()
    held = mutex.acquire(timeout=60)
    try:
        for gen in generations:
            gen.close()
        places.close()
        _fs.rmtree(workdir)
    finally:
        if held:
            mutex.release()


def _link_or_copy(gen: _Generation, target: str) -> None:
    if os.path.abspath(gen.path) == os.path.abspath(target):
        return
    try:
        _fs.link(gen.path, target)
    except OSError:  # another file system (the workdir in /dev/shm, say): an fsynced copy
        _fs.copyfile(gen.path, target)


_Loaded = TypeVar("_Loaded", bound="SpannParts")  # the class load is called on (SpannIndex)


class _Persistence:
    """The snapshot of a :class:`SpannIndex` (a part of the class)."""

    def save(self: SpannParts, directory: str) -> None:
        """Seal the open generation and link (or copy) every generation into ``directory``
        with the centroid graph, the list table and the row arrays."""
        self.wait_idle()
        with self._mutex:
            records = int(self._list_count[self._live_lists()].sum())
            if self._garbage > max(records, 4096):
                self._compact()
            if self._open is not None:
                _fs.fsync(self._open.fd)
            with self._rw.write():  # searches may use the files: switch them alone
                self._drop_unused_gens()
                if self._open is not None:
                    self._open.seal()
                    self._open: _Generation | None = None  # (see parts.py)
            gens = []
            for number, gen in sorted(self._gens.items()):
                name = f"postings-{number:06d}.bin"
                target = os.path.join(directory, name)
                _link_or_copy(gen, target)
                if os.path.dirname(gen.path) == self.workdir:
                    _fs.unlink(gen.path)
                gen.path = target  # sealed: the snapshot's copy is the one to link next time
                gens.append({"number": number, "file": name, "records": gen.used})
            graph_dir = os.path.join(directory, "centroids")
            os.makedirs(graph_dir, exist_ok=True)
            self._graph.save(graph_dir)
            end = self._labels_end()
            arrays = {
                "lists.npy": np.stack(
                    [
                        self._list_gen[: self._lists].astype(np.int64),
                        self._list_start[: self._lists],
                        self._list_count[: self._lists].astype(np.int64),
                        self._list_capacity[: self._lists].astype(np.int64),
                    ]
                ),
                "version.npy": self._version[:end],
                "where.npy": np.asarray(self._places.array[:end]),
            }
            save_index(
                directory,
                self,
                {
                    "engine": "faiss",
                    **self.params(),
                    "generations": gens,
                    "next_generation": self._next_gen,
                    "record_words": self.words,
                    "norm_cap": self._norm_cap,
                    "counters": self._counters,
                },
                arrays,
            )

    def _labels_end(self: SpannParts) -> int:
        written = np.flatnonzero(self._version)
        return int(written[-1]) + 1 if written.size else 0

    @classmethod
    def load(
        cls: type[_Loaded],
        directory: str,
        *,
        threads: int | None = None,
        budget: ThreadBudget | None = None,
    ) -> _Loaded:
        meta = read_meta(directory, cls.kind)
        index = cls.from_meta(meta, threads=threads, budget=budget)
        if meta["record_words"] != index.words:
            raise CorruptionError(
                f"spann index in {directory!r}: records of {meta['record_words']} words; "
                f"dimension {index.dim} ({index.metric}) needs {index.words}"
            )
        lists = np.load(os.path.join(directory, "lists.npy"))
        for entry in meta["generations"]:
            path = os.path.join(directory, entry["file"])
            expect = entry["records"] * index.words * 4
            size = os.path.getsize(path) if os.path.exists(path) else -1
            if size != expect:
                raise CorruptionError(
                    f"posting file {path!r} has {max(size, 0)} bytes; the index expects {expect} "
                    f"({entry['records']} records): it is "
                    f"{'missing' if size < 0 else 'truncated' if size < expect else 'too long'}; "
                    "restore the data directory from a backup"
                )
            gen = _Generation(entry["number"], path, index.words, entry["records"], sealed=True)
            index._gens[gen.number] = gen
            index._files.append(gen)
        index._next_gen = meta["next_generation"]
        index._norm_cap = float(meta["norm_cap"])
        index._graph = HNSWGraph.load(
            os.path.join(directory, "centroids"), metric="l2", seed=index.seed
        )
        index._lists = lists.shape[1]
        index._list_gen = lists[0].astype(np.int32)
        index._list_start = lists[1]
        index._list_count, index._list_capacity = (
            lists[2].astype(np.int32),
            lists[3].astype(np.int32),
        )
        ends = index._list_start + index._list_count
        for number, gen in index._gens.items():
            mine = (index._list_gen == number) & (index._list_count > 0)
            if mine.any() and int(ends[mine].max()) > gen.used:
                raise CorruptionError(
                    f"posting file {gen.path!r} holds {gen.used} records; its lists reach "
                    f"{int(ends[mine].max())}: restore the data directory from a backup"
                )
        index._version = np.load(os.path.join(directory, "version.npy"))
        index._live = int(np.count_nonzero(index._alive()))
        where = np.load(os.path.join(directory, "where.npy"))
        index._places.reserve(where.size)
        index._places.array[: where.size] = where
        index._counters.update(meta.get("counters", {}))
        return index

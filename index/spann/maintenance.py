"""The SPANN index's upkeep (SPFresh): a list past ``max_list_size`` splits in two by 2-means
on a background worker (or inline), the vectors near it move to their new nearest lists, and
the posting files are compacted once they hold more garbage than live records."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import numpy as np
from shardwalk.index.hnsw_graph import _grow
from shardwalk.index.kmeans import balanced_kmeans
from shardwalk.index.spann.build import _sq
from shardwalk.index.spann.format import _GEN_SHIFT, LABEL_MASK, _Generation, _Staged

from shardwalk import _fs
from shardwalk._threads import delegated

if TYPE_CHECKING:
    from shardwalk.index.spann.parts import SpannParts

# the module's records go to the package's logger, as before the package was split
log = logging.getLogger(__package__)

_GARBAGE_MIN = 1 << 16  # dead records the files may hold before a split run compacts them


class _Maintenance:
    """Splits, their worker, garbage collection and compaction of a :class:`SpannIndex` (a
    part of the class)."""

    def _queue_split(self: SpannParts, lst: int) -> None:
        """Queue list ``lst`` to split; start the worker if none runs. Decided under the lock
        the worker stops under: either the running worker takes the list, or a new one."""
        with self._idle:
            if lst in self._queued:
                return
            self._queued.add(lst)
            self._pending.append(lst)
            if self.maintenance == "background" and self._running:
                return
            # a new run (a worker starts, or a write runs them inline): failed lists again
            for again in sorted(self._failed - self._queued):
                self._queued.add(again)
                self._pending.append(again)
            self._failed.clear()
            if self.maintenance != "background":
                return
            self._running = True
            worker = threading.Thread(target=self._work, name="spann-splits", daemon=True)
            self._worker: threading.Thread | None = worker  # (see parts.py)
        try:
            worker.start()
        except BaseException as exc:  # no thread: the next queued split (or wait_idle) runs it
            with self._idle:
                self._running = False
                self._idle.notify_all()
            self._report_failure("starting the split worker", exc)

    def _work(self: SpannParts) -> None:
        """The worker: splits until the queue is empty, and stops only if it still is under
        the lock that producers queue under."""
        try:
            while True:
                self._run_splits()
                with self._idle:
                    if not self._pending:
                        self._running = False
                        self._idle.notify_all()
                        return
        except BaseException as exc:  # _run_splits reports its own; this is the last resort
            with self._idle:
                self._running = False
                self._idle.notify_all()
            self._report_failure("the split worker", exc)

    def _report_failure(self: SpannParts, what: str, exc: BaseException) -> None:
        """A background step failed: logged at once (ERROR, with its traceback) and counted
        in :meth:`stats`. Nothing was published: the index is as it was before the step."""
        log.error(
            "spann index: %s failed (%s: %s); the index is as before it: a list that did not "
            "split stays searchable and is tried again by the next worker run",
            what,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        with self._idle:
            self._failures += 1
            self._last_failure = f"{what}: {type(exc).__name__}"

    def _run_splits(self: SpannParts) -> None:
        """Split the queued lists that still need it, then collect garbage. A failure is
        reported (see :meth:`_report_failure`), never raised: a writer never sees it."""
        while not self._closed.is_set():
            with self._idle:
                if not self._pending:
                    break
                lst = self._pending.popleft()
                self._queued.discard(lst)
            with self._mutex, delegated(1):  # small k-means and searches: one thread
                if (
                    not self._closed.is_set()
                    and lst < self._lists
                    and self._list_count[lst] > self.max_list_size
                    and self._graph.alive()[lst]
                ):
                    try:
                        self._split(lst)
                    except Exception as exc:
                        self._report_failure(f"splitting list {lst}", exc)
                        with self._idle:
                            self._failed.add(lst)
        if self._closed.is_set():  # the files are closing (the interpreter exits)
            with self._idle:
                self._pending.clear()
                self._queued.clear()
            return
        try:
            self._collect_garbage()
        except Exception as exc:
            self._report_failure("compacting the posting files", exc)

    def _collect_garbage(self: SpannParts) -> None:
        """Compact once relocated and split lists left more dead records in the files than
        twice the live ones (and at least ``garbage_min``): long insert runs keep the files
        within about three times their live size."""
        with self._mutex:
            live = int(self._list_count[self._live_lists()].sum())
            if self._garbage > max(2 * live, self.garbage_min):
                with delegated(1):
                    self._compact()

    def wait_idle(self: SpannParts, timeout: float | None = None) -> bool:
        """Block until no split is queued or running; returns whether that happened in time.
        Splits no worker runs (inline maintenance, or no thread could start) run here. A
        failed split raises nothing: ``background_failures`` in :meth:`stats` counts it."""
        if self.maintenance == "background":
            with self._idle:
                if not self._idle.wait_for(lambda: not self._running, timeout):
                    return False
        if self.maintenance == "inline" or self._pending:
            self._run_splits()
        return True

    def _split(self: SpannParts, lst: int) -> None:
        """Split list ``lst`` by balanced 2-means, then reassign the vectors near it whose
        nearest centroid changed (SPFresh's LIRE). Each of the two is written, then published
        in one step: a failure before leaves the list as it was."""
        records = self._read_current(lst)
        staged = _Staged()
        if records.shape[0] <= self.max_list_size:  # garbage made it long: rewrite it short
            self._stage_list(staged, lst, records)
            with self._rw.write():
                self._publish(staged)  # (not past the limit)
            return
        vectors = np.ascontiguousarray(records[:, 2 : 2 + self.vdim])
        centroids, assignment = balanced_kmeans(vectors, 2, seed=self.seed + lst, iterations=10)
        if np.unique(assignment).size == 1:
            assignment = (np.arange(records.shape[0]) % 2).astype(np.int32)
        old_centroid = self._centroids[lst].copy()
        new = np.arange(self._graph.slots, self._graph.slots + 2)  # the halves' lists
        end = int(new[-1]) + 1
        old_place = (
            int(self._list_gen[lst]),
            int(self._list_start[lst]),
            int(self._list_capacity[lst]),
        )
        staged.garbage += old_place[2]
        for side, target in enumerate(new.tolist()):
            self._stage_list(staged, target, records[assignment == side], old_place)
        staged.entries.append((lst, old_place[0], old_place[1], 0, old_place[2]))
        # room for the halves' entries (a grown copy holds what searches see, unchanged)
        self._list_gen = _grow(self._list_gen, end, 0)
        self._list_start = _grow(self._list_start, end, 0)
        self._list_count = _grow(self._list_count, end, 0)
        self._list_capacity = _grow(self._list_capacity, end, 0)
        with self._rw.write():  # the swap: searches wait only for this
            added = self._graph.add(centroids)
            assert added.tolist() == new.tolist(), (added, new)
            self._graph.delete(np.array([lst]))
            overfull = self._publish(staged)
            self._lists = end
            self._counters["splits"] += 1
        try:
            self._reassign(lst, old_centroid, new, records, assignment)
        finally:  # the split is published: its halves split on, whatever the reassignment did
            for target in overfull:
                self._queue_split(target)

    def _reassign(
        self: SpannParts,
        lst: int,
        old_centroid: np.ndarray,
        new: np.ndarray,
        records: np.ndarray,
        assignment: np.ndarray,
    ) -> None:
        """Vectors of the split list closer to the old centroid than to their new one, and
        vectors of the nearby lists closer to a new centroid than to their own: moved when
        their lists (by the replication rule) changed."""
        dim = self.vdim
        own = self._centroids[new[assignment]]
        vectors = records[:, 2 : 2 + dim]
        suspect = _sq(vectors - old_centroid) <= _sq(vectors - own)
        cand_keys = [records.view(np.int64)[suspect, 0]]
        cand_vecs = [vectors[suspect]]
        near, _ = self._graph.search(old_centroid[None, :], min(9, len(self._graph)), 32)
        for other in near[0].tolist():
            if other < 0 or other in new.tolist():
                continue
            theirs = self._read_current(other)
            if theirs.shape[0] == 0:
                continue
            tv = theirs[:, 2 : 2 + dim]
            closer = np.minimum(
                _sq(tv - self._centroids[new[0]]), _sq(tv - self._centroids[new[1]])
            )
            moved = closer < _sq(tv - self._centroids[other])
            cand_keys.append(theirs.view(np.int64)[moved, 0])
            cand_vecs.append(tv[moved])
        keys = np.concatenate(cand_keys)
        if keys.size == 0:
            return
        labels, first = np.unique(keys & LABEL_MASK, return_index=True)
        vectors = np.ascontiguousarray(np.concatenate(cand_vecs)[first], dtype=np.float32)
        targets = self._targets(vectors)
        # a vector moves when its nearest list is not one it is in: compare with its place
        current = self._primary_lists(labels)
        # only strictly closer: with ties (duplicate vectors, whose split halves have equal
        # centroids) a vector stays, or the halves would refill one list and split forever
        here = np.where(
            current >= 0, _sq(vectors - self._centroids[np.maximum(current, 0)]), np.inf
        )
        moving = (targets[:, 0] != current) & (_sq(vectors - self._centroids[targets[:, 0]]) < here)
        if not moving.any():
            return
        labels, vectors, targets = labels[moving], vectors[moving], targets[moving]
        versions = self._next_versions(labels)
        staged = self._stage_appends(labels, versions, vectors, targets)
        with self._rw.write():
            self._version[labels] = versions
            overfull = self._publish(staged)
            self._counters["reassigned"] += int(labels.size)
        for other in overfull:
            self._queue_split(other)

    def _primary_lists(self: SpannParts, labels: np.ndarray) -> np.ndarray:
        """The list holding each label's primary record (-1: unknown)."""
        place = self._places.array[labels]
        live = self._live_lists()
        begin = (self._list_gen[live].astype(np.int64) << _GEN_SHIFT) | self._list_start[live]
        order = np.argsort(begin)
        begin, live = begin[order], live[order]
        at = np.searchsorted(begin, place, side="right") - 1
        inside = (at >= 0) & (
            place < begin[np.maximum(at, 0)] + self._list_count[live[np.maximum(at, 0)]]
        )
        return np.where(inside, live[np.maximum(at, 0)], -1)

    def compact(self: SpannParts) -> None:
        """Rewrite every list's current records into one new generation (stale copies and
        tombstones dropped, no slack)."""
        self.wait_idle()
        with self._mutex:
            self._compact()

    def _compact(self: SpannParts) -> None:
        live = self._live_lists()
        gen = self._new_gen()  # open once published: a failure before leaves the old one
        starts = np.zeros(self._lists, dtype=np.int64)
        counts = np.zeros(self._lists, dtype=np.int64)
        moves = []
        for lst in live.tolist():
            records = self._read_current(lst)
            if records.shape[0] == 0:
                continue
            start = gen.allocate(records.shape[0])
            gen.write(start, records)
            starts[lst], counts[lst] = start, records.shape[0]
            labels = records.view(np.int64)[:, 0] & LABEL_MASK
            old_lo = (int(self._list_gen[lst]) << _GEN_SHIFT) | int(self._list_start[lst])
            moved = self._places.array[labels]
            mine = (moved >= old_lo) & (moved < old_lo + int(self._list_count[lst]))
            moves.append(
                (labels[mine], (gen.number << _GEN_SHIFT) | (start + np.flatnonzero(mine)))
            )
        with self._rw.write():
            self._open: _Generation | None = gen  # (see parts.py: declared types)
            for labels, places in moves:
                self._places.array[labels] = places
            self._list_gen = np.full(self._lists, gen.number, dtype=np.int32)
            self._list_start = starts
            self._list_count, self._list_capacity = counts.astype(np.int32), counts.astype(np.int32)
            self._garbage = 0
            self._drop_unused_gens()
            self._garbage = 0

    def _drop_unused_gens(self: SpannParts) -> None:
        """Close and remove the generations no list uses, but the open one (under the write
        lock: searches may read any generation the table names)."""
        used = set(np.unique(self._list_gen[self._list_count > 0]).tolist())
        drop = [g for n, g in self._gens.items() if n not in used and g is not self._open]
        self._gens = {n: g for n, g in self._gens.items() if n in used or g is self._open}
        for gen in drop:
            gen.close()
            if os.path.dirname(gen.path) == self.workdir:
                _fs.unlink(gen.path)
            self._garbage = max(0, self._garbage - gen.used)

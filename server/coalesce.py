"""Coalescing concurrent single-query searches into one batch call (``[server]
coalesce_window_us``; off by default: bench/server.py measures whether it wins).

A batch search costs the library's per-call work once (validation, planning, the scope, the id
mapping) and runs faiss's batch search, which releases the GIL and spreads the queries over the
engine's threads. Calls are grouped by a key that makes the batch exact for every member: the
same collection object, query dimension, k, tenant scope, filter (its serialized bytes, so that
``1`` and ``True`` or ``64`` and ``64.0`` never share a batch) and search parameters; the
server builds it (:meth:`shardwalk.server.service.Service.search`).

How a call runs, per key:

* nothing of its key is running: it runs at once, alone (a lone call never waits);
* a batch of its key is running: it joins the pending batch (the first to join leads it), which
  runs as soon as the running one ends, its ``window`` passes, or it holds ``max_queries``
  queries, whichever comes first. So a call waits at most ``window`` before its search starts.

Every member gets its own row of the batch result. If the batch raises (one member's bad query,
a deadline), every member runs its own query alone, so each gets exactly the result or the error
it would have had without coalescing. A member whose own deadline passes while it waits raises
``DeadlineExceededError`` (the batch still runs for the others).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from shardwalk._deadline import remaining
from shardwalk.errors import DeadlineExceededError

__all__ = ["Coalescer"]

Run = Callable[[np.ndarray], Any]  # queries (n, dim) -> a SearchResult of n rows


class _Batch:
    """Queries waiting to run together, and their result once run."""

    __slots__ = ("done", "error", "go", "queries", "result")

    def __init__(self, query: np.ndarray) -> None:
        self.queries = [query]
        self.go = threading.Event()  # the leader may start (the running batch ended, or full)
        self.done = threading.Event()  # the result (or the error) is there
        self.result: Any = None
        self.error: BaseException | None = None


class _Key:
    """The batches of one key: how many are running, and the one filling up."""

    __slots__ = ("pending", "running")

    def __init__(self) -> None:
        self.running = 0
        self.pending: _Batch | None = None


class Coalescer:
    """Single-query searches of the same key that arrive while one runs share one batch call.

    Parameters
    ----------
    window : float
        Seconds a call may wait for its batch to start (> 0).
    max_queries : int
        Queries per batch at most; a full batch starts at once.
    """

    def __init__(self, window: float, max_queries: int) -> None:
        self.window = float(window)
        self.max_queries = max(2, int(max_queries))
        self._lock = threading.Lock()
        self._keys: dict[Hashable, _Key] = {}  # only keys with a batch running or pending
        self.batches = 0  # batches of two queries or more run (for tests and stats)
        self.coalesced = 0  # queries answered in those batches

    def search(self, key: Hashable, query: np.ndarray, run: Run) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances), each (1, k), of one query (a (1, dim) array); ``run`` searches a
        batch of queries of this key (any member's ``run`` is equivalent)."""
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Key()
            batch = state.pending
            if batch is None:
                if state.running == 0:  # nothing to wait for: run now, alone
                    state.running = 1
                    batch = None
                else:  # lead a new batch
                    batch = state.pending = _Batch(query)
                    slot, lead = 0, True
            else:
                slot, lead = len(batch.queries), False
                batch.queries.append(query)
                if len(batch.queries) >= self.max_queries:
                    state.pending = None  # full: it goes now, beside the running one
                    state.running += 1
                    batch.go.set()
        if batch is None:
            try:
                result = run(query)
            finally:
                self._finished(key, state)
            return result.ids, result.distances
        if lead:
            return self._lead(key, state, batch, run)
        return self._follow(batch, slot, query, run)

    def _finished(self, key: Hashable, state: _Key) -> None:
        """A batch (or a lone call) of ``key`` ended: start the pending batch, if any."""
        with self._lock:
            state.running -= 1
            pending = state.pending
            if pending is not None and state.running == 0:
                state.pending = None
                state.running = 1
                pending.go.set()
            elif pending is None and state.running == 0:
                del self._keys[key]

    def _lead(
        self, key: Hashable, state: _Key, batch: _Batch, run: Run
    ) -> tuple[np.ndarray, np.ndarray]:
        batch.go.wait(self.window)
        with self._lock:
            if state.pending is batch:  # the window passed first: go beside the running one
                state.pending = None
                state.running += 1
            queries = batch.queries  # closed: nobody joins it any more
            if len(queries) > 1:
                self.batches += 1
                self.coalesced += len(queries)
        try:
            if len(queries) > 1:
                batch.result = run(np.concatenate(queries))
            else:
                batch.result = run(queries[0])
        except BaseException as exc:  # every member runs alone (its own result or error)
            batch.error = exc
        finally:
            self._finished(key, state)
            batch.done.set()
        if batch.error is not None:
            if len(queries) == 1:
                raise batch.error
            result = run(queries[0])
            return result.ids, result.distances
        return batch.result.ids[:1], batch.result.distances[:1]

    @staticmethod
    def _follow(
        batch: _Batch, slot: int, query: np.ndarray, run: Run
    ) -> tuple[np.ndarray, np.ndarray]:
        left = remaining()
        if not batch.done.wait(None if left is None else max(0.0, left)):
            raise DeadlineExceededError("the deadline passed before search")
        if batch.error is not None:
            result = run(query)
            return result.ids, result.distances
        result = batch.result
        return result.ids[slot : slot + 1], result.distances[slot : slot + 1]

"""Synchronisation for a collection served to many threads.

``RWLock``: any number of readers at once, or one writer. Writers are preferred (a waiting
writer holds back new readers), so a stream of searches cannot starve an upsert; a writer holds
it only for the in-memory part of a write (the index insert), never for an fsync or a
checkpoint. Not re-entrant: a reader must not take it again while it holds it.

``GroupCommit``: concurrent writers share one log append and one fsync. Each writer queues its
entry and takes the commit lock; whoever holds it (the leader) takes every queued entry, runs
them through ``commit`` in queue order, and marks them done, so a writer that gets the lock
after a leader committed its entry returns at once. A writer returns only when its entry has
been committed (durable and applied) or has failed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Entry", "GroupCommit", "RWLock"]


class RWLock:
    """Many readers or one writer; writers preferred."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Entry:
    """One queued write: what to do, and (once committed) its result or its error."""

    __slots__ = ("done", "error", "payload", "result")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """A queue of writes committed in groups by whichever writer holds the commit lock."""

    def __init__(self, commit: Callable[[list[Entry]], None]) -> None:
        self._commit = commit
        self._queue: list[Entry] = []
        self._queue_lock = threading.Lock()
        self.lock = threading.Lock()  # held while a group commits (and by checkpoints)
        self.groups = 0  # groups committed, for statistics
        self.entries = 0

    def submit(self, payload: Any) -> Any:
        """Queue a write and return its result once it is committed (or raise its error)."""
        entry = Entry(payload)
        with self._queue_lock:
            self._queue.append(entry)
        with self.lock:
            if not entry.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                try:
                    self._commit(group)
                except BaseException as exc:  # every write of the group fails with it
                    for queued in group:
                        if queued.error is None:
                            queued.error = exc
                finally:
                    for queued in group:
                        queued.done = True
                    self.groups += 1
                    self.entries += len(group)
        if entry.error is not None:
            raise entry.error
        return entry.result

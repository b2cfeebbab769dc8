"""Synchronisation for a collection served to many threads.

``RWLock``: any number of readers at once, or one writer. Writers are preferred (a waiting
writer holds back new readers), so a stream of searches cannot starve an upsert; a writer holds
it only for the in-memory part of a write (the index insert), never for an fsync or a
checkpoint. Not re-entrant: a thread must not take it again while it holds it.

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
    """Many readers or one writer; writers preferred.

    A reader takes no lock when no writer is active or waiting: it adds its thread to a set,
    then checks the writer flag (a writer sets the flag, then waits for the set to empty), so
    under the GIL, where each set operation and flag read is atomic and runs in program order,
    either the writer sees the reader or the reader sees the flag (Dekker's handshake). Eight
    threads searching at once took a mutex twice per search before and spent more time
    handing it over than searching.
    """

    def __init__(self) -> None:
        self._readers: set[int] = set()
        self._writing = False  # a writer is active or waiting
        self._writer = threading.Lock()  # one writer at a time
        self._cond = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        while True:
            self._readers.add(me)
            if not self._writing:
                break
            self._readers.discard(me)  # a writer is there: step aside until it is done
            with self._cond:
                self._cond.notify_all()
                while self._writing:
                    self._cond.wait()
        try:
            yield
        finally:
            self._readers.discard(me)
            if self._writing:
                with self._cond:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._writer:
            self._writing = True
            try:
                with self._cond:
                    while self._readers:
                        self._cond.wait()
                yield
            finally:
                self._writing = False
                with self._cond:
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

"""Synchronisation for a collection served to many threads.

``RWLock``: any number of readers at once, or one writer. Writers are preferred (a waiting
writer holds back new readers), so a stream of searches cannot starve an upsert; a writer holds
it only for the in-memory part of a write (the index insert), never for an fsync or a
checkpoint. Not re-entrant: a thread must not take it again while it holds it.

``GroupCommit``: concurrent writers share one log append and one fsync (and concurrent
searches one batch search). Each caller queues its entry; one that finds no group running
leads the next: it takes every queued entry and runs them through ``commit`` in queue order.
A caller returns only when its entry's group has run (for a write: durable and applied) or
failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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

    def read(self) -> _Reading:
        """Hold the lock shared for a block (a class, not a generator: it runs on every read)."""
        return _Reading(self)

    def _enter_read(self) -> int:
        me = threading.get_ident()
        while True:
            self._readers.add(me)
            if not self._writing:
                return me
            self._readers.discard(me)  # a writer is there: step aside until it is done
            with self._cond:
                self._cond.notify_all()
                while self._writing:
                    self._cond.wait()

    def _exit_read(self, me: int) -> None:
        self._readers.discard(me)
        if self._writing:
            with self._cond:
                self._cond.notify_all()

    def write(self) -> _Writing:
        """Hold the lock exclusively for a block (a class, not a generator: it runs on every
        write, up to three times)."""
        return _Writing(self)

    def _enter_write(self) -> None:
        self._writer.acquire()
        self._writing = True
        try:
            with self._cond:
                while self._readers:
                    self._cond.wait()
        except BaseException:
            self._exit_write()
            raise

    def _exit_write(self) -> None:
        self._writing = False
        with self._cond:
            self._cond.notify_all()
        self._writer.release()


class _Writing:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_write()

    def __exit__(self, *exc: object) -> None:
        self._lock._exit_write()


class _Reading:
    __slots__ = ("_lock", "_me")

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._me = self._lock._enter_read()

    def __exit__(self, *exc: object) -> None:
        self._lock._exit_read(self._me)


class Entry:
    """One queued write: what to do, and (once committed) its result or its error."""

    __slots__ = ("done", "error", "payload", "result")

    def __init__(self, payload: Any) -> None:
        self.payload = payload
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """A queue of operations run in groups by whichever caller finds no group running.

    A caller queues its entry; if no group is running it becomes the leader: it takes every
    queued entry and runs them through ``commit`` (holding :attr:`lock`, which a checkpoint
    also takes to hold writes back), then wakes the callers whose entries that group
    finished. A caller whose entry a group finished returns its result (or raises its error)
    without ever taking :attr:`lock`; one whose entry came too late leads the next group.
    """

    def __init__(self, commit: Callable[[list[Entry]], None]) -> None:
        self._commit = commit
        self._queue: list[Entry] = []
        self._cond = threading.Condition(threading.Lock())
        self._leading = False
        self.lock = threading.Lock()  # held while a group runs (and by checkpoints)
        self.groups = 0  # groups run, for statistics
        self.entries = 0

    def submit(self, payload: Any) -> Any:
        """Queue an operation and return its result once its group ran (or raise its error)."""
        entry = Entry(payload)
        with self._cond:
            self._queue.append(entry)
            while self._leading and not entry.done:
                self._cond.wait()
            if not entry.done:
                self._leading = True
                group, self._queue = self._queue, []
        if not entry.done:
            try:
                with self.lock:
                    self._commit(group)
            except BaseException as exc:  # every operation of the group fails with it
                for queued in group:
                    if queued.error is None:
                        queued.error = exc
            finally:
                with self._cond:
                    for queued in group:
                        queued.done = True
                    self.groups += 1
                    self.entries += len(group)
                    self._leading = False
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.result

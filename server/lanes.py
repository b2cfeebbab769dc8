"""The background lane: long calls (graph solves, maintenance) run on threads at a lower CPU
priority, so that they take the cores only when short calls leave them idle.

A per-key quota bounds how many calls a tenant has in flight; it cannot stop one call from
taking a core for its whole solve. On a machine with few cores that core is what another
tenant's searches wait for: each step of a search (the client's send, grpc's completion queue,
the handler, the reply) wakes a thread that the scheduler may put behind the solve. Run at a
higher nice value, the solve yields at each of those wake-ups, and costs the searches little
more than the core it keeps busy when they are idle (bench and test figures:
tests/server/test_limits.py, the flooding test).

Linux only: there ``setpriority(PRIO_PROCESS, tid, nice)`` sets the nice value of one thread
(and the OpenMP team a kernel starts from it inherits it). Elsewhere that call would lower the
whole process, so the lane runs calls on the caller's thread. A thread cannot lower its nice
value again without privileges, hence a pool of threads that keep theirs.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

__all__ = ["Lane"]

T = TypeVar("T")


class Lane:
    """Runs calls on up to ``threads`` threads whose nice value is ``nice`` above the
    process's (0: on the caller's thread). The caller waits for its call; the call sees the caller's context variables (its
    deadline among them), and its exceptions are raised to the caller."""

    def __init__(self, threads: int, nice: int) -> None:
        self.nice = nice if sys.platform.startswith("linux") else 0
        self._pool = (
            futures.ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="background", initializer=self._lower
            )
            if self.nice
            else None
        )

    def _lower(self) -> None:
        tid = threading.get_native_id()  # raised from the thread's own value, as nice(1) does
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
        )

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            return fn(*args)
        return self._pool.submit(contextvars.copy_context().run, fn, *args).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

"""How calls are scheduled onto threads: a fair pool for the handlers, and a background lane.

**The fair pool** (:class:`FairPool`): the threads that run calls take them round-robin across
callers (one queue per API key that authenticated, one shared by every other call), not in
arrival order. grpc hands each call to the pool as it arrives; with a first-in-first-out pool,
a tenant that floods puts a burst of calls (its quota's refusals among them: each refusal still
takes a handler thread for a moment) ahead of every other tenant's next call, which then waits
for the whole burst. Round-robin, another tenant's call waits at most for the calls already
running. The caller of a call is marked (:data:`CALLER`) by the server's generic handler,
which grpc runs in the call's own context before it submits the call.

**The background lane** (:class:`Lane`): long calls (graph solves, maintenance) run on threads
at a lower CPU priority, so that they take the cores only when short calls leave them idle.

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

import collections
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Hashable
from concurrent import futures
from typing import Any, TypeVar

__all__ = ["CALLER", "FairPool", "Lane"]

T = TypeVar("T")

# the caller a call is queued under (an API key's principal; None: the queue of everyone else)
CALLER: contextvars.ContextVar[Hashable] = contextvars.ContextVar("shardwalk_caller", default=None)


class FairPool(futures.ThreadPoolExecutor):
    """``threads`` threads that run submitted calls round-robin across callers: a call waits
    behind other callers' calls only one at a time each, never behind a burst of one caller.

    A call's caller is ``submit_as``'s argument, or, for ``submit(context.run, fn, ...)`` (how
    grpc's synchronous server submits a call, in the call's own context), the value of
    :data:`CALLER` in that context. A ``futures.ThreadPoolExecutor`` for grpc's sake: it
    shares none of that class's machinery but the interface."""

    def __init__(self, threads: int, name: str = "rpc") -> None:
        # not super().__init__(): the queues and threads here are this class's own
        self._lock = threading.Condition(threading.Lock())
        self._queues: dict[Hashable, collections.deque] = {}
        self._turns: collections.deque[Hashable] = collections.deque()  # callers with calls
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        context = getattr(fn, "__self__", None)
        caller = context.get(CALLER) if isinstance(context, contextvars.Context) else None
        return self.submit_as(caller, fn, *args, **kwargs)

    def submit_as(
        self, caller: Hashable, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> futures.Future[T]:
        future: futures.Future[T] = futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            queue = self._queues.get(caller)
            if queue is None:
                queue = self._queues[caller] = collections.deque()
                self._turns.append(caller)
            queue.append((future, fn, args, kwargs))
            self._lock.notify()
        return future

    def _next(self) -> tuple[Any, ...] | None:
        with self._lock:
            while not self._turns:
                if self._closed:
                    return None
                self._lock.wait()
            caller = self._turns.popleft()
            queue = self._queues[caller]
            item = queue.popleft()
            if queue:
                self._turns.append(caller)  # its next call after every other caller's
            else:
                del self._queues[caller]
            return item

    def _work(self) -> None:
        while (item := self._next()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the future carries it to whoever waits
                future.set_exception(exc)
            else:
                future.set_result(result)
            del item, future  # no reference kept to a finished call while waiting

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                for queue in self._queues.values():
                    for future, *_ in queue:
                        future.cancel()
                self._queues.clear()
                self._turns.clear()
            self._lock.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


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

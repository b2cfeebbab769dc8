"""How calls are scheduled onto threads: a fair pool for the handlers, and a background lane.

**The fair pool** (:class:`FairPool`): the threads that run calls take them round-robin across
callers (one line per API key that authenticated, one shared by every other call), not in
arrival order, and run at most a key's ``max_concurrent`` calls at once while up to its
``max_queued`` more wait in its line without a thread. grpc hands each call to the pool as it arrives; with a first-in-first-out pool,
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
    :data:`CALLER` in that context. A caller with a ``max_concurrent`` attribute (an API key's
    :class:`~shardwalk.server.limits.Gate`) has at most that many calls running; up to its
    ``max_queued`` more wait in its line, holding no thread; calls past that are run at once,
    in a line of their own, for the key's quota to refuse them. A ``futures.ThreadPoolExecutor``
    for grpc's sake: it shares none of that class's machinery but the interface."""

    def __init__(self, threads: int, name: str = "rpc") -> None:
        # not super().__init__(): the queues and threads here are this class's own
        self._lock = threading.Condition(threading.Lock())
        self._queues: dict[Hashable, collections.deque] = {}  # callers' waiting calls
        self._running: dict[Hashable, int] = {}
        self._turns: collections.deque[Hashable] = collections.deque()  # callers that may run
        self._ready: set[Hashable] = set()  # the callers in _turns
        self._current = threading.local()  # a worker's running call's caller (release)
        self._closed = False
        self._threads = {
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        }
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
            limit = getattr(caller, "max_concurrent", None)
            if limit is not None:  # its calls running and waiting, against its quota
                line = self._queues.get(caller)
                held = self._running.get(caller, 0) + (len(line) if line else 0)
                if held >= limit + caller.max_queued:  # type: ignore[attr-defined]
                    caller = (_PAST, caller)  # for the quota to refuse: no wait for that
            line = self._queues.get(caller)
            if line is None:
                line = self._queues[caller] = collections.deque()
            line.append((future, fn, args, kwargs))
            self._offer(caller)
        return future

    def _may_run(self, caller: Hashable) -> bool:
        limit = getattr(caller, "max_concurrent", None)
        return limit is None or self._running.get(caller, 0) < limit

    def _offer(self, caller: Hashable) -> None:
        """Give ``caller`` a turn if it has a call waiting and may run one (under the lock)."""
        if caller not in self._ready and caller in self._queues and self._may_run(caller):
            self._ready.add(caller)
            self._turns.append(caller)  # after every other caller's turn
            self._lock.notify()

    def _next(self) -> tuple[Hashable, tuple[Any, ...]] | None:
        with self._lock:
            while not self._turns:
                if self._closed and not self._running:
                    return None
                self._lock.wait()
            caller = self._turns.popleft()
            self._ready.discard(caller)
            line = self._queues[caller]
            item = line.popleft()
            if not line:
                del self._queues[caller]
            self._running[caller] = self._running.get(caller, 0) + 1
            self._offer(caller)
            return caller, item

    def release(self) -> None:
        """Called by a running call once its answer is ready, before it is sent: its slot is
        free, and its caller's next call may start (a client that sends its next call as soon
        as it has an answer must find the slot free). Once per call; the pool calls it when
        the call returns, if the call did not."""
        caller = getattr(self._current, "caller", _NONE)
        if caller is _NONE:
            return
        self._current.caller = _NONE
        with self._lock:
            left = self._running[caller] - 1
            if left:
                self._running[caller] = left
            else:
                del self._running[caller]
            self._offer(caller)
            if self._closed:
                self._lock.notify_all()

    def _work(self) -> None:
        while (got := self._next()) is not None:
            caller, (future, fn, args, kwargs) = got
            self._current.caller = caller
            ok, outcome = False, None
            if future.set_running_or_notify_cancel():
                try:
                    outcome, ok = fn(*args, **kwargs), True
                except BaseException as exc:  # the future carries it to whoever waits
                    outcome = exc
            self.release()  # before the future's waiter hears (and sends the answer)
            if future.running():
                if ok:
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)  # type: ignore[arg-type]
            del got, future, fn, args, kwargs, outcome  # no reference kept to a finished call

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                for line in self._queues.values():
                    for future, *_ in line:
                        future.cancel()
                self._queues.clear()
                self._turns.clear()
                self._ready.clear()
            self._lock.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


_PAST = object()  # the line of a caller's calls past its max_concurrent + max_queued
_NONE = object()  # no running call to release


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

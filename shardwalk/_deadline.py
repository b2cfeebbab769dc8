"""Deadlines: ``with deadline(seconds):`` bounds the engine calls made inside the block.

The engine checks the deadline between the stages of a call and inside long solves (the exact
and push PPR kernels poll a stop flag that a timer raises), and raises
:class:`DeadlineExceededError` once it has passed. The gRPC server runs every call under the
client's deadline; embedded callers use ``shardwalk.deadline`` the same way.

The deadline is a context variable: it belongs to the thread (or task) that set it. This
module imports nothing from the package but its errors (a leaf, like ``errors``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from shardwalk.errors import DeadlineExceededError, InvalidArgumentError

__all__ = ["check", "deadline", "remaining", "stop_flag"]

_AT: ContextVar[float | None] = ContextVar("shardwalk_deadline", default=None)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Calls inside the block must finish within ``seconds`` (None: no deadline; a deadline
    already set outside stays in force if it is sooner)."""
    if seconds is not None and (isinstance(seconds, bool) or not seconds == seconds):
        raise InvalidArgumentError(f"a deadline is a number of seconds; got {seconds!r}")
    at = None if seconds is None else time.monotonic() + float(seconds)
    outer = _AT.get()
    if outer is not None and (at is None or outer < at):
        at = outer
    token = _AT.set(at)
    try:
        yield
    finally:
        _AT.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (None: no deadline)."""
    at = _AT.get()
    return None if at is None else at - time.monotonic()


def check(what: str) -> None:
    """Raise ``DeadlineExceededError`` if the current deadline has passed (before ``what``)."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceededError(f"the deadline passed before {what}")


@contextmanager
def stop_flag(what: str) -> Iterator[np.ndarray]:
    """A one-byte array that kernels poll (``stop[0] != 0``: return now), raised by a timer at
    the current deadline; raises ``DeadlineExceededError`` after the block if it was raised."""
    check(what)
    stop = np.zeros(1, dtype=np.uint8)
    left = remaining()
    timer = None
    if left is not None:
        timer = threading.Timer(left, stop.fill, (1,))
        timer.daemon = True
        timer.start()
    try:
        yield stop
    finally:
        if timer is not None:
            timer.cancel()
    if stop[0]:
        raise DeadlineExceededError(f"{what} stopped at its deadline")

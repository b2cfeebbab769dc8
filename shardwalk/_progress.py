"""Progress of the library calls a person waits for (collection builds, fingerprints).

A caller passes ``progress=``, a callable ``progress(stage, done, total)`` (:data:`Progress`).
Each stage of the job reports ``(stage, 0, total)`` first, then ``done`` growing, and ends
with ``(stage, total, total)`` when the stage is complete; stages come one after the other
(the next stage starts once the previous one ended). The calls come from the thread that
called the job (the driver, on Ray too), never two at once, and only when ``done`` grew, a
few times per block of work: a callback may draw a progress bar (``shardwalk build`` drives
tqdm with it). A callback that raises stops the job: nothing is committed and the exception
reaches the caller as it was raised (raise to cancel).

This module is a leaf: it imports nothing of the package but ``errors``.
"""

from __future__ import annotations

from collections.abc import Callable

from shardwalk.errors import InvalidArgumentError

__all__ = ["Progress", "Stage", "check_progress"]

#: ``progress(stage, done, total)``: see the module docstring.
Progress = Callable[[str, int, int], None]


def check_progress(progress: object) -> Progress | None:
    """``progress`` itself when it is None or callable; else InvalidArgumentError."""
    if progress is not None and not callable(progress):
        raise InvalidArgumentError(
            f"progress must be a callable progress(stage, done, total) or None; got "
            f"{type(progress).__name__}"
        )
    return progress  # type: ignore[return-value]


class Stage:
    """One stage of a job, reported to a :data:`Progress` callback (or to nobody when it is
    None): ``(name, 0, total)`` when made, then each growth of ``done`` (kept within
    ``total``), and ``(name, total, total)`` at :meth:`finish`."""

    __slots__ = ("_progress", "done", "name", "total")

    def __init__(self, progress: Progress | None, name: str, total: int) -> None:
        self._progress, self.name = progress, name
        self.total, self.done = max(0, int(total)), 0
        if progress is not None:
            progress(name, 0, self.total)

    def advance(self, count: int) -> None:
        """``count`` more units done."""
        self.reach(self.done + int(count))

    def reach(self, done: int) -> None:
        """``done`` units done in all (a smaller figure than reported before changes nothing)."""
        done = min(int(done), self.total)
        if done > self.done:
            self.done = done
            if self._progress is not None:
                self._progress(self.name, done, self.total)

    def finish(self) -> None:
        """The stage is complete: ``done`` reaches ``total``."""
        self.reach(self.total)

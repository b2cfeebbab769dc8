"""How a failure reaches the person at the terminal: one line on stderr (what was wrong, with
which file or port, what to do) and an exit code; ``--debug`` or ``SHARDWALK_DEBUG=1`` adds the
traceback."""

from __future__ import annotations

import argparse
import errno
import os

from shardwalk.errors import ShardwalkError

DEBUG_ENV = "SHARDWALK_DEBUG"


def debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> tuple[str, int]:
    """The message and exit code of a failure: what went wrong, with which file or port, what
    to do. Errors shardwalk raises on purpose carry all that; the I/O errors a command line
    meets (a missing file, a permission, a full disk) are named with their file."""
    if isinstance(exc, ShardwalkError):
        return f"{exc} ({exc.code})", 2
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, OSError):
        if (
            exc.errno in (errno.EEXIST, errno.ENOTDIR)
            and exc.filename
            and os.path.lexists(exc.filename)
            and not os.path.isdir(exc.filename)
        ):  # os.makedirs under a file
            return f"{exc.filename!r} is a file where a directory is needed; check the path", 1
        where = f" {exc.filename!r}" if exc.filename else ""
        if exc.filename2:
            where += f" -> {exc.filename2!r}"
        reason = exc.strerror or str(exc)
        hints = {
            errno.ENOENT: "check the path",
            errno.EACCES: "check its permissions",
            errno.EPERM: "check its permissions",
            errno.ENOSPC: "free some space or use another --data",
            errno.EROFS: "use a writable directory",
            errno.EADDRINUSE: "choose another port",
        }
        hint = hints.get(exc.errno or 0, "")
        return f"{reason}{':' if where else ''}{where}{'; ' + hint if hint else ''}", 1
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller --batch or --limit", 1
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in shardwalk: please report it with "
        f"the traceback that --debug or {DEBUG_ENV}=1 prints)",
        1,
    )


def quiet_ray_notices() -> None:
    """Ray logs "Token authentication is enabled for this Ray cluster..." at every local
    start; a command that starts Ray every run repeats it every run (--debug shows it)."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("Token authentication is enabled for")

    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_Drop())

"""The one exception hierarchy of shardwalk.

Every class knows the gRPC status code it maps to (``code``, a ``grpc.StatusCode`` member
name), so the server translates them in one interceptor and the client re-raises the same
class. Every exception takes a single message and pickles, so Ray re-raises it unchanged.

This module imports nothing from the package: every subpackage imports it.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CorruptionError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ShardwalkError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_for_code",
]


class ShardwalkError(Exception):
    """Base class of every error shardwalk raises on purpose."""

    code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[ShardwalkError], tuple[str]]:
        return (type(self), (self.message,))


class InvalidArgumentError(ShardwalkError, ValueError):
    """The caller passed something malformed: wrong dimension, dtype, NaN, bad parameter."""

    code = "INVALID_ARGUMENT"


class NotFoundError(ShardwalkError, KeyError):
    """A named collection, graph, id or tenant does not exist."""

    code = "NOT_FOUND"


class AlreadyExistsError(ShardwalkError):
    """Creating something whose name is taken."""

    code = "ALREADY_EXISTS"


class PermissionDeniedError(ShardwalkError):
    """The caller is authenticated but may not touch this data (another tenant's)."""

    code = "PERMISSION_DENIED"


class UnauthenticatedError(ShardwalkError):
    """No or unknown credentials."""

    code = "UNAUTHENTICATED"


class ResourceExhaustedError(ShardwalkError):
    """A limit was hit: batch size, k, message size, concurrent requests."""

    code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(ShardwalkError):
    """The system is not in a state to do this: closed engine, locked data directory."""

    code = "FAILED_PRECONDITION"


class DeadlineExceededError(ShardwalkError):
    """The request's deadline passed before it finished."""

    code = "DEADLINE_EXCEEDED"


class UnavailableError(ShardwalkError):
    """A part of the system that holds data is down (a Ray actor serving partitions died);
    the call may succeed once it is back."""

    code = "UNAVAILABLE"


class OutcomeUnknownError(ShardwalkError):
    """A write whose outcome the caller cannot be told: it is durable in the write-ahead log
    (it will be applied when the collection or graph is reopened), but applying it in memory
    failed, so the collection or graph closed itself. Not a failure: do not assume the write
    is lost (nor retry a non-idempotent one blindly); reopen, then read to see the state.

    gRPC ``UNKNOWN``, as a Cloud Spanner commit whose outcome is lost: ``ABORTED`` would say
    the operation did not happen and invite a retry at a higher level. The server sends
    ``UNKNOWN`` for nothing else (an unexpected exception is ``INTERNAL``)."""

    code = "UNKNOWN"

    @classmethod
    def logged(cls, what: str, write: str, kind: str, cause: BaseException) -> OutcomeUnknownError:
        """The error of a ``write`` (e.g. "write", "upsert_edges batch") to ``what`` (e.g.
        "graph 'g'", a ``kind`` of store) appended to its log, whose apply failed with
        ``cause`` (the caller chains it: the message leaves its text out, so that the server
        can pass the message to a client as it is)."""
        return cls(
            f"{what}: outcome unknown: this {write} is durable in the write-ahead log and will "
            f"be applied when the {kind} is reopened, but applying it now failed (the "
            f"exception's cause says why); the {kind} refuses further calls until the engine "
            "is reopened"
        )


class CorruptionError(ShardwalkError):
    """Stored data failed a checksum or does not match its manifest."""

    code = "DATA_LOSS"


def _all_subclasses(cls: type[ShardwalkError]) -> list[type[ShardwalkError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_for_code(code: str) -> type[ShardwalkError]:
    """The exception class for a status code name (the client uses this to re-raise).

    Derived from the classes themselves, so it never drifts out of sync with them.
    """
    for cls in _all_subclasses(ShardwalkError):
        if cls.code == code and cls.__module__ == __name__:
            return cls
    return ShardwalkError

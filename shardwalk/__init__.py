"""shardwalk: graph-indexing and vector-search engine."""

from shardwalk.errors import (
    AlreadyExistsError,
    CorruptionError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ShardwalkError,
    UnauthenticatedError,
)

__version__ = "0.1.0"

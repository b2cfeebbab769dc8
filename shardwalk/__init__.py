"""shardwalk: graph-indexing and vector-search engine."""

from shardwalk.errors import (
    AlreadyExistsError,
    CorruptionError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ShardwalkError,
    UnauthenticatedError,
)

__version__ = "0.1.0"

from shardwalk._deadline import deadline
from shardwalk.collection import Collection, Records
from shardwalk.compose import ComposeResult
from shardwalk.engine import Engine
from shardwalk.graph import Graph
from shardwalk.index.base import SearchResult
from shardwalk.index.filters import F


def __getattr__(name: str) -> object:
    """``shardwalk.Client`` and ``AsyncClient``: loaded on first use, so that ``import shardwalk`` never imports
    grpc."""
    if name in ("AsyncClient", "Client", "RemoteCollection", "RemoteGraph"):
        from shardwalk import client

        return getattr(client, name)
    raise AttributeError(f"module 'shardwalk' has no attribute {name!r}")


__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "Client",
    "Collection",
    "ComposeResult",
    "CorruptionError",
    "DeadlineExceededError",
    "Engine",
    "F",
    "FailedPreconditionError",
    "Graph",
    "InvalidArgumentError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "Records",
    "ResourceExhaustedError",
    "SearchResult",
    "ShardwalkError",
    "UnauthenticatedError",
    "deadline",
]

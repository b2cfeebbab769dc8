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

from shardwalk.collection import Collection, Records
from shardwalk.compose import ComposeResult
from shardwalk.engine import Engine
from shardwalk.graph import Graph
from shardwalk.index.base import SearchResult
from shardwalk.index.filters import F

__all__ = [
    "AlreadyExistsError",
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
    "PermissionDeniedError",
    "Records",
    "ResourceExhaustedError",
    "SearchResult",
    "ShardwalkError",
    "UnauthenticatedError",
]

"""shardwalk: graph-indexing and vector-search engine."""

# ruff: noqa: E402 (the package's path is settled before its modules are imported)
import os as _os

# In a checkout, shardwalk.index, .walks and .server live in the top-level folders index/,
# walks/ and server/ beside this one (pyproject.toml's package-dir; an installed copy has them
# inside the package): their parent folder joins the package's path, so that the package
# imported from the checkout is whole however it was found (the editable install's .pth puts
# the checkout on sys.path; pytest puts it first; `python -c "import shardwalk"` from the
# folder that holds the clone finds it after the clone's own folder).
_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "index")) and _os.path.isfile(
    _os.path.join(_checkout, "index", "__init__.py")
):
    __path__.append(_checkout)
del _os, _here, _checkout

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

"""The public API is typed: no ``Any`` in the signatures of Engine, Collection, Graph and the
clients (arrays are numpy.typing's ArrayLike in, NDArray out; the rest is named in
shardwalk.types). mypy checks the types themselves (.ci/run, strict on these modules)."""

from __future__ import annotations

import inspect
import re

import pytest

import shardwalk
import shardwalk.types
from shardwalk import client

PUBLIC = [
    shardwalk.Engine,
    shardwalk.Collection,
    shardwalk.Graph,
    client.Client,
    client.AsyncClient,
    client.RemoteCollection,
    client.RemoteGraph,
    client.AsyncRemoteCollection,
    client.AsyncRemoteGraph,
]
ANY = re.compile(r"\bAny\b")


def _methods(cls: type) -> list[tuple[str, object]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    ]


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_no_any_in_public_signatures(cls: type) -> None:
    found = []
    for name, member in _methods(cls):
        function = member.fget if isinstance(member, property) else member
        annotations = getattr(function, "__annotations__", {})
        found += [f"{name}({arg}: {a})" for arg, a in annotations.items() if ANY.search(str(a))]
    assert not found, found


def test_every_method_is_annotated() -> None:
    bare = [
        f"{cls.__name__}.{name}.{p.name}"
        for cls in PUBLIC
        for name, member in _methods(cls)
        if inspect.isfunction(member)
        for p in list(inspect.signature(member).parameters.values())[1:]
        if p.annotation is inspect.Parameter.empty
    ]
    assert not bare, bare


def test_the_aliases_hold_no_any() -> None:
    source = inspect.getsource(shardwalk.types)
    assert not ANY.search(source.split('"""', 2)[2])


def test_async_handles_have_the_sync_ones_methods() -> None:
    """AsyncClient takes Client's methods (awaited): none is left out."""
    for sync, awaited in [
        (client.Client, client.AsyncClient),
        (client.RemoteCollection, client.AsyncRemoteCollection),
        (client.RemoteGraph, client.AsyncRemoteGraph),
    ]:
        wanted = {n for n, _ in _methods(sync)} - {"close"}
        assert wanted <= {n for n, _ in _methods(awaited)}

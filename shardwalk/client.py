"""The Python client of a shardwalk server, with the library's shape.

    client = shardwalk.Client("127.0.0.1:50051", api_key="...")
    hits = client.collection("docs").search(queries, k=10, where=F("year") >= 2020)
    top = client.graph("links").ppr([1, 2, 3], k=20, collection="docs")

Calls return the library's result types (``SearchResult``, ``Records``, ``PPRResult``) and
raise the library's exception classes, chosen by the status code the server sent (the server
puts the library's message in it). Reads (search, get, PPR, stats, listings) are retried with
exponential backoff while the server is UNAVAILABLE; writes are not retried. Every call has a
deadline (``timeout``, default 30 s). The first call waits up to ``connect_timeout`` (default
10 s) for the server to accept connections, so a client started together with its server (a
script that runs ``shardwalk serve ... &`` and then queries) does not fail while the server
starts; nothing is sent before the connection is ready, so writes wait safely too.

This module is the only one of ``shardwalk/`` that imports grpc, and ``import shardwalk``
does not import it: ``shardwalk.Client`` loads it when first used.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import grpc
import numpy as np
from numpy.typing import ArrayLike

from shardwalk._wire import (
    attributes_from_pb,
    compose_result_from_pb,
    filter_to_pb,
    matrix_from_pb,
    params_to_pb,
    ppr_result_from_pb,
    table_to_pb,
    vectors_from_pb,
    vectors_to_pb,
)
from shardwalk.attributes import attribute_table, shared_array, tenant_array
from shardwalk.collection import Records
from shardwalk.compose import ComposeResult, check_temperature
from shardwalk.errors import InvalidArgumentError, ShardwalkError, error_for_code
from shardwalk.index.base import SearchResult
from shardwalk.index.filters import Predicate
from shardwalk.index.planner import Explain
from shardwalk.types import (
    Attributes,
    BackupReport,
    Edges,
    Param,
    Report,
    Seeds,
    SharedWith,
    Tenants,
)
from shardwalk.v1 import shardwalk_pb2 as pb
from shardwalk.v1 import shardwalk_pb2_grpc as pb_grpc
from shardwalk.validation import as_ids, check_ids, check_k, check_vectors, edge_pairs
from shardwalk.walks._check import check_alpha
from shardwalk.walks.ppr import PPRResult

__all__ = [
    "AsyncClient",
    "AsyncRemoteCollection",
    "AsyncRemoteGraph",
    "Client",
    "RemoteCollection",
    "RemoteGraph",
]

_RETRIES = 4  # attempts after the first, for idempotent calls on UNAVAILABLE
# how long the first call waits for the server to accept connections: `shardwalk serve` opens
# its data directory (and loads every collection and graph) before it listens, ~1.3 s for the
# quickstart data and longer for large directories
_CONNECT_TIMEOUT = 10.0
# grpc retries a refused connection after 1 s, then 1.6x longer each time (up to 120 s): a
# server that starts 1.3 s after the client would be found only at ~2.6 s, and one restarted
# after minutes only minutes later
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_CHUNK_BYTES = 4 * 2**20  # an upsert stream sends chunks of about this size


_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")
_Response = TypeVar("_Response")  # a response message of the stub
_Client = TypeVar("_Client")  # the client a handle calls through


@overload
def _awaited(
    method: Callable[Concatenate[Any, _P], _T],
) -> Callable[Concatenate[Any, _P], Coroutine[object, object, _T]]: ...
@overload
def _awaited(
    method: Callable[Concatenate[Any, _P], object], returns: type[_R]
) -> Callable[Concatenate[Any, _P], Coroutine[object, object, _R]]: ...
def _awaited(method: Callable[..., object], returns: type | None = None) -> Callable[..., object]:
    """A method of :class:`Client` (or its handles) as :class:`AsyncClient` runs it: the very
    same function (its ``_run`` makes it return a coroutine), typed with its result awaited
    (``returns``: a result of another type, the async handle of a collection or graph)."""
    return method


class _Channel:
    """The connection of a client: its settings, channel and stub."""

    _transport: ModuleType = grpc  # grpc or grpc.aio: the channel's module

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        tls: bool | bytes = False,
        retries: int = _RETRIES,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        connect_timeout: float = _CONNECT_TIMEOUT,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        if not isinstance(connect_timeout, int | float) or not connect_timeout >= 0:
            raise InvalidArgumentError(
                f"connect_timeout is the seconds the first call waits for the server to accept "
                f"connections (>= 0; 0 does not wait); got {connect_timeout!r}"
            )
        self.connect_timeout = float(connect_timeout)
        self._connected = False  # set once a connection was ready: later calls do not wait
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        options = [("grpc.max_receive_message_length", 256 * 2**20), *_CHANNEL_OPTIONS]
        if (client_cert is None) != (client_key is None):
            raise InvalidArgumentError(
                "a client certificate needs its key: pass both client_cert and client_key (PEM "
                "bytes) or neither"
            )
        if client_cert is not None and not tls:
            raise InvalidArgumentError(
                "client_cert and client_key are for mutual TLS; pass tls=True (the system's "
                "roots) or tls=<the server's CA certificate, PEM bytes>"
            )
        if tls:
            roots = tls if isinstance(tls, bytes) else None
            credentials = grpc.ssl_channel_credentials(
                root_certificates=roots, private_key=client_key, certificate_chain=client_cert
            )
            self._channel = self._transport.secure_channel(address, credentials, options=options)
        else:
            self._channel = self._transport.insecure_channel(address, options=options)
        self._stub = pb_grpc.ShardwalkStub(self._channel)

    def _waited(self) -> str:
        """What an UNAVAILABLE error adds when the connection never became ready."""
        if self._connected:
            return ""
        return (
            f" (waited {self.connect_timeout:g} s for it to accept connections: is it running "
            "and listening there? connect_timeout= waits longer)"
        )


class _Shape(_Channel):
    """The engine-shaped methods, written once: each builds a request and names how to read
    the response; ``_run`` (the transport's) makes the call. :class:`Client` runs them as they
    are; :class:`AsyncClient`'s ``_run`` returns a coroutine, so it takes the same methods with
    their results awaited (:func:`_awaited`)."""

    def _run(
        self,
        method: str,
        request: object,
        parse: Callable[[_Response], _T],
        idempotent: bool = True,
    ) -> _T:
        raise NotImplementedError

    def collection(self, name: str) -> RemoteCollection:
        """A handle on a collection (no call is made until it is used)."""
        return RemoteCollection(self, name)

    def graph(self, name: str) -> RemoteGraph:
        return RemoteGraph(self, name)

    def collections(self) -> list[str]:
        return self._run("ListCollections", pb.ListRequest(), _names)

    def graphs(self) -> list[str]:
        return self._run("ListGraphs", pb.ListRequest(), _names)

    def create_collection(
        self,
        /,
        name: str,
        dim: int,
        metric: str = "l2",
        index: str = "hnsw",
        *,
        attributes: Mapping[str, str] | None = None,
        **index_params: Param,
    ) -> RemoteCollection:
        """As :meth:`shardwalk.Engine.create_collection` (admin keys only)."""
        request = pb.CreateCollectionRequest(
            name=name,
            dim=dim,
            metric=metric,
            index=index,
            params=params_to_pb(index_params),
            attributes=attributes or {},
        )
        return self._run(
            "CreateCollection", request, lambda _: self.collection(name), idempotent=False
        )

    def drop_collection(self, name: str) -> None:
        return self._run("DropCollection", pb.DropRequest(name=name), _none, idempotent=False)

    def create_graph(
        self,
        /,
        name: str,
        edges: Edges,
        weights: ArrayLike | None = None,
        *,
        directed: bool = True,
        node_ids: ArrayLike | None = None,
        fingerprints: bool = False,
        **fingerprint_params: Param,
    ) -> RemoteGraph:
        """As :meth:`shardwalk.Engine.create_graph` from an (E, 2) array of node ids or a
        (src, dst) pair of arrays, then optionally ``build_fingerprints(**fingerprint_params)``
        (admin keys only)."""
        request = pb.CreateGraphRequest(
            name=name,
            edges=_packed_edges(edges, ("src", "dst")),
            weights=_packed_weights(weights),
            undirected=not directed,
            node_ids=[] if node_ids is None else np.asarray(node_ids, dtype=np.int64).tolist(),
            fingerprints=fingerprints,
            fingerprint_params=params_to_pb(fingerprint_params),
        )
        return self._run("CreateGraph", request, lambda _: self.graph(name), idempotent=False)

    def drop_graph(self, name: str) -> None:
        return self._run("DropGraph", pb.DropRequest(name=name), _none, idempotent=False)

    def compose(
        self,
        collection: str,
        graph: str,
        queries: ArrayLike,
        *,
        k: int = 10,
        tenant: str | None = None,
        where: Predicate | None = None,
        knn_k: int | None = None,
        ppr_k: int | None = None,
        alpha: float | None = None,
        fuse: str | None = None,
        weight: float | None = None,
        temperature: float | None = None,
        rank_constant: float | None = None,
        knn_params: Mapping[str, Param] | None = None,
        ppr_params: Mapping[str, Param] | None = None,
    ) -> ComposeResult:
        """As :meth:`shardwalk.Engine.compose` (a tenant key's calls are scoped to its tenant;
        parameters left out take the pair's calibrated values on the server)."""
        request = pb.ComposeRequest(
            collection=collection,
            graph=graph,
            queries=vectors_to_pb(queries, what="queries"),
            k=_count(k, "k"),
            tenant=tenant or "",
            filter=None if where is None else filter_to_pb(where),
            knn_k=_count(knn_k, "knn_k"),
            ppr_k=_count(ppr_k, "ppr_k"),
            alpha=_alpha(alpha),
            fuse=fuse or "",
            weight=weight,
            temperature=temperature if temperature is None else check_temperature(temperature),
            rank_constant=rank_constant,
            knn_params=params_to_pb(knn_params or {}),
            ppr_params=params_to_pb(ppr_params or {}),
        )
        return self._run("Compose", request, compose_result_from_pb)

    def flush(self) -> None:
        """Checkpoint every collection now (admin keys only)."""
        return self._run("Flush", pb.FlushRequest(), _none, idempotent=False)

    def backup(self, dest: str, *, link: bool = True) -> BackupReport:
        """As :meth:`shardwalk.Engine.backup`, on the server: ``dest`` is an absolute path on
        the server's machine (admin keys only). The call's deadline is the client's
        ``timeout``: give a large directory a client with a longer one."""
        request = pb.BackupRequest(destination=dest, copy=not link)
        return self._run("Backup", request, _backup_report, idempotent=False)


class Client(_Shape):
    """A connection to a shardwalk server.

    Parameters
    ----------
    address : str
        ``host:port`` of the server.
    api_key : str, optional
        Sent as ``authorization: Bearer <key>``; the server maps it to a tenant or to admin.
    timeout : float
        Deadline of each call in seconds (default 30).
    tls : bool or bytes
        False: plaintext; True: TLS with the system's roots; bytes: TLS trusting these PEM roots.
    retries : int
        Attempts after the first for reads that find the server UNAVAILABLE (default 4;
        backoff 0.1 s doubling, with jitter).
    connect_timeout : float
        Seconds the first call waits for the server to accept connections (default 10; 0
        does not wait). Nothing is sent before the connection is ready, so a write waits as
        safely as a read. A server that does not answer within it raises
        :class:`~shardwalk.errors.UnavailableError` naming the address and gRPC's reason
        (connection refused, a TLS failure...).
    client_cert, client_key : bytes, optional
        PEM certificate chain and private key of this client, for a server that requires
        client certificates (mutual TLS: ``[tls] client_ca``); need ``tls``.
    """

    # -- plumbing ---------------------------------------------------------------------------
    def _run(
        self,
        method: str,
        request: object,
        parse: Callable[[_Response], _T],
        idempotent: bool = True,
    ) -> _T:
        """One RPC, retried on UNAVAILABLE when idempotent; errors as the library's classes."""
        rpc = getattr(self._stub, method)
        if not self._connected:
            self._wait_until_connected()
        backoff = _Backoff(self, idempotent)
        while True:
            try:
                return parse(rpc(request, timeout=self.timeout, metadata=self._metadata))
            except grpc.RpcError as exc:
                time.sleep(backoff.pause(exc))

    def _wait_until_connected(self) -> None:
        """Wait up to ``connect_timeout`` for the channel to connect. If it does not, the call
        goes ahead anyway and fails with gRPC's own reason (UNAVAILABLE: connection refused,
        a TLS handshake failure...), which the error then names with the time waited."""
        if self.connect_timeout > 0:
            try:
                grpc.channel_ready_future(self._channel).result(timeout=self.connect_timeout)
            except grpc.FutureTimeoutError:
                return
        self._connected = True

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handle(Generic[_Client]):
    """A named collection or graph on the server, seen through a client (no call is made
    until a method is used)."""

    def __init__(self, client: _Client, name: str) -> None:
        self._client = client
        self.name = name


class RemoteCollection(_Handle[_Shape]):
    """A collection on the server, with :class:`shardwalk.Collection`'s methods."""

    def search(
        self,
        /,
        queries: ArrayLike,
        k: int = 10,
        *,
        tenant: str | None = None,
        where: Predicate | None = None,
        explain: bool = False,
        **search_params: Param,
    ) -> SearchResult:
        """As :meth:`shardwalk.Collection.search`; a tenant key's searches are always scoped to
        its tenant (``tenant`` may only repeat it)."""
        # fields set in place (a message passed to the constructor is copied into it); the
        # queries' values and dimension are the server's to check, as in process
        request = pb.SearchRequest(collection=self.name, k=_count(k, "k"))
        _pack(request.queries, queries, "queries")
        if tenant:
            request.tenant = tenant
        if where is not None:
            request.filter.CopyFrom(filter_to_pb(where))
        if search_params:
            for name, value in params_to_pb(search_params).items():
                request.params[name].CopyFrom(value)
        if explain:
            request.explain = True
        return self._client._run("Search", request, _search_result)

    def get(self, ids: ArrayLike, *, tenant: str | None = None) -> Records:
        """As :meth:`shardwalk.Collection.get` (ids a tenant may not see are not found; a
        tenant key's calls are in its own tenant's namespace, ``tenant`` may name only it)."""
        ids = check_ids(ids)
        request = pb.GetRequest(collection=self.name, ids=ids.tolist(), tenant=tenant or "")
        return self._client._run("Get", request, _records)

    def upsert(
        self,
        ids: ArrayLike,
        vectors: ArrayLike,
        tenants: Tenants | None = None,
        attributes: Attributes | None = None,
        shared_with: SharedWith | None = None,
    ) -> int:
        """As :meth:`shardwalk.Collection.upsert`, streamed in chunks of about 4 MiB, each
        durable once the server has applied it; a tenant key writes its own rows only."""
        # the library's checks (the server's dimension aside), for its messages
        ids = check_ids(ids)
        n = ids.size
        vectors = check_vectors(vectors, dim=None, rows=n)
        owners = tenant_array(tenants, n).to_pylist() if tenants is not None else []
        if isinstance(tenants, str):
            owners = owners[:1]
        access = None if shared_with is None else shared_array(shared_with, n)
        shared = [] if access is None else [s or [] for s in access.to_pylist()]
        table = None if attributes is None else attribute_table(attributes, n)
        step = max(1, _CHUNK_BYTES // (4 * max(1, vectors.shape[1]) + 64))

        def chunks() -> Iterator[pb.UpsertRequest]:
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                yield pb.UpsertRequest(
                    collection=self.name,
                    ids=ids[lo:hi].tolist(),
                    vectors=vectors_to_pb(vectors[lo:hi]),
                    tenants=owners if len(owners) <= 1 else owners[lo:hi],
                    shared_with=[pb.StringList(values=s) for s in shared[lo:hi]],
                    attributes=_slice_attributes(table, lo, hi),
                )

        return self._client._run("Upsert", chunks(), _upserted, idempotent=False)

    def delete(self, ids: ArrayLike, *, missing_ok: bool = False, tenant: str | None = None) -> int:
        """As :meth:`shardwalk.Collection.delete` (a tenant key deletes in its own namespace)."""
        ids = check_ids(ids, allow_empty=True)
        request = pb.DeleteRequest(
            collection=self.name, ids=ids.tolist(), missing_ok=missing_ok, tenant=tenant or ""
        )
        return self._client._run("Delete", request, _deleted, idempotent=False)

    def stats(self) -> Report:
        """The collection's statistics (tenant keys see its shape only)."""
        return self._client._run("Stats", pb.StatsRequest(collection=self.name), _json)


class RemoteGraph(_Handle[_Shape]):
    """A graph on the server, with :class:`shardwalk.Graph`'s query methods."""

    def ppr(self, /, seeds: Seeds, k: int = 100, **options: Param) -> PPRResult:
        """As :meth:`shardwalk.Graph.ppr`, plus ``collection=`` (the collection whose rows
        scope seeds and results: required for tenant keys) and ``tenant=``."""
        arguments: dict[str, Any] = dict(options)  # checked by ppr_batch
        return self.ppr_batch([seeds], k, **arguments)

    def ppr_batch(
        self,
        /,
        queries: Sequence[Seeds],
        k: int = 100,
        *,
        method: str | None = None,
        accuracy: str | None = None,
        alpha: float | None = None,
        dangling: str | None = None,
        collection: str | None = None,
        tenant: str | None = None,
        **params: Param,
    ) -> PPRResult:
        request = pb.PersonalizedPageRankRequest(
            graph=self.name,
            queries=[_seeds(q) for q in queries],
            k=_count(k, "k"),
            method=method or "",
            accuracy=accuracy or "",
            alpha=_alpha(alpha),
            dangling=dangling or "",
            params=params_to_pb(params),
            collection=collection or "",
            tenant=tenant or "",
        )
        return self._client._run("PersonalizedPageRank", request, ppr_result_from_pb)

    def stats(self) -> Report:
        return self._client._run("Stats", pb.StatsRequest(graph=self.name), _json)

    def upsert_edges(self, edges: Edges, weights: ArrayLike | None = None) -> Report:
        """As :meth:`shardwalk.Graph.upsert_edges` (admin keys only); returns its report."""
        request = pb.UpsertEdgesRequest(
            graph=self.name,
            edges=_packed_edges(edges),
            weights=_packed_weights(weights),
        )
        return self._client._run("UpsertEdges", request, _json, idempotent=False)

    def delete_edges(self, edges: Edges) -> Report:
        """As :meth:`shardwalk.Graph.delete_edges` (admin keys only); returns its report."""
        request = pb.DeleteEdgesRequest(graph=self.name, edges=_packed_edges(edges))
        return self._client._run("DeleteEdges", request, _json, idempotent=False)

    def delete_nodes(self, ids: ArrayLike) -> Report:
        """As :meth:`shardwalk.Graph.delete_nodes` (admin keys only); returns its report."""
        nodes = as_ids(ids, what="node ids")
        request = pb.DeleteEdgesRequest(graph=self.name, nodes=nodes.tolist())
        return self._client._run("DeleteEdges", request, _json, idempotent=False)


class AsyncRemoteCollection(_Handle["AsyncClient"]):
    """:class:`RemoteCollection` of an :class:`AsyncClient`: the same methods, each awaited."""

    search = _awaited(RemoteCollection.search)
    get = _awaited(RemoteCollection.get)
    upsert = _awaited(RemoteCollection.upsert)
    delete = _awaited(RemoteCollection.delete)
    stats = _awaited(RemoteCollection.stats)


class AsyncRemoteGraph(_Handle["AsyncClient"]):
    """:class:`RemoteGraph` of an :class:`AsyncClient`: the same methods, each awaited."""

    ppr = _awaited(RemoteGraph.ppr)
    ppr_batch = _awaited(RemoteGraph.ppr_batch)
    stats = _awaited(RemoteGraph.stats)
    upsert_edges = _awaited(RemoteGraph.upsert_edges)
    delete_edges = _awaited(RemoteGraph.delete_edges)
    delete_nodes = _awaited(RemoteGraph.delete_nodes)


class AsyncClient(_Channel):
    """:class:`Client` for asyncio: the same constructor and methods, each awaited
    (``await client.collection("docs").search(q)``); reads retried on UNAVAILABLE with
    ``asyncio.sleep`` backoff. Close with ``await client.close()`` or ``async with``."""

    _transport = grpc.aio

    def collection(self, name: str) -> AsyncRemoteCollection:
        """A handle on a collection (no call is made until it is used)."""
        return AsyncRemoteCollection(self, name)

    def graph(self, name: str) -> AsyncRemoteGraph:
        return AsyncRemoteGraph(self, name)

    # Client's methods, their results awaited (they call this class's _run)
    collections = _awaited(_Shape.collections)
    graphs = _awaited(_Shape.graphs)
    create_collection = _awaited(_Shape.create_collection, AsyncRemoteCollection)
    drop_collection = _awaited(_Shape.drop_collection)
    create_graph = _awaited(_Shape.create_graph, AsyncRemoteGraph)
    drop_graph = _awaited(_Shape.drop_graph)
    compose = _awaited(_Shape.compose)
    flush = _awaited(_Shape.flush)
    backup = _awaited(_Shape.backup)

    def _run(
        self,
        method: str,
        request: object,
        parse: Callable[[_Response], _T],
        idempotent: bool = True,
    ) -> Coroutine[object, object, _T]:
        rpc = getattr(self._stub, method)

        async def call() -> _T:
            if not self._connected:
                await self._wait_until_connected()
            backoff = _Backoff(self, idempotent)
            while True:
                try:
                    return parse(await rpc(request, timeout=self.timeout, metadata=self._metadata))
                except grpc.RpcError as exc:
                    await asyncio.sleep(backoff.pause(exc))

        return call()

    async def _wait_until_connected(self) -> None:
        """:meth:`Client._wait_until_connected`, awaited."""
        if self.connect_timeout > 0:
            try:
                await asyncio.wait_for(self._channel.channel_ready(), self.connect_timeout)
            except asyncio.TimeoutError:
                return
        self._connected = True

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _packed_edges(
    edges: ArrayLike | tuple[ArrayLike, ArrayLike],
    what: tuple[str, str] = ("edge sources", "edge targets"),
) -> bytes:
    """An (E, 2) integer array (or a (src, dst) pair of arrays) as packed int64 pairs, checked
    as the library checks them (its messages: ``what`` names the columns as the library does
    for graph creation, ``src``/``dst``, and for updates)."""
    src, dst = edge_pairs(edges, what=what)
    return np.stack([src, dst], axis=1).astype("<i8", copy=False).tobytes()


def _packed_weights(weights: ArrayLike | None) -> bytes:
    """Edge weights as packed float32 (none: empty; the server checks one per edge)."""
    return b"" if weights is None else np.asarray(weights, dtype="<f4").tobytes()


# -- reading responses (shared by both transports) ---------------------------------------------
def _none(response: Any) -> None:
    return None


def _names(response: pb.ListResponse) -> list[str]:
    return list(response.names)


def _json(response: pb.StatsResponse | pb.UpdateGraphResponse) -> Report:
    report: Report = json.loads(response.json)
    return report


def _backup_report(response: pb.BackupResponse) -> BackupReport:
    report: BackupReport = json.loads(response.json)
    return report


def _upserted(response: pb.UpsertResponse) -> int:
    return int(response.upserted)


def _deleted(response: pb.DeleteResponse) -> int:
    return int(response.deleted)


def _search_result(response: pb.SearchResponse) -> SearchResult:
    rows, k = response.rows, response.k
    explain = response.explain_json
    return SearchResult(
        ids=matrix_from_pb(response.ids, "<i8", rows, k, "ids"),
        distances=matrix_from_pb(response.distances, "<f4", rows, k, "distances"),
        explain=Explain(**json.loads(explain)) if explain else None,
    )


def _pack(message: pb.Vectors, vectors: Any, what: str) -> None:
    """Fill a ``Vectors`` message in place: a C-contiguous little-endian float32 array (the
    usual query) is packed as it is, anything else through :func:`vectors_to_pb`."""
    if (
        type(vectors) is np.ndarray
        and (vectors.dtype is _F4 or vectors.dtype == _F4)
        and vectors.ndim in (1, 2)
        and vectors.flags.c_contiguous
    ):
        message.dim = vectors.shape[-1]
        message.data = vectors.tobytes()
    else:
        message.CopyFrom(vectors_to_pb(vectors, what=what))


_F4 = np.dtype("<f4")


def _records(response: pb.GetResponse) -> Records:
    table = attributes_from_pb(response.attributes)
    return Records(
        ids=np.array(response.ids, dtype=np.int64),
        vectors=vectors_from_pb(response.vectors),
        tenants=[t or None for t in response.tenants],
        attributes={} if table is None else table.to_pydict(),
        shared_with=[list(s.values) for s in response.shared_with],
    )


class _Backoff:
    """The retry rule of one call, for both transports: an idempotent call that finds the
    server UNAVAILABLE is tried again up to ``retries`` times, after pauses of 0.1 s doubling
    each time (with jitter, 0.5-1.5x); any other failure, or the last, raises the library's
    exception."""

    def __init__(self, channel: _Channel, idempotent: bool) -> None:
        self._channel = channel
        self._left = channel.retries if idempotent else 0
        self._delay = 0.1

    def pause(self, exc: grpc.RpcError) -> float:
        """The seconds to wait before trying again after ``exc``; raises the library's error
        for it when the call is not to be tried again."""
        if self._left > 0 and exc.code() == grpc.StatusCode.UNAVAILABLE:
            self._left -= 1
            pause = self._delay * (0.5 + random.random())
            self._delay *= 2
            return pause
        channel = self._channel
        raise _translate(exc, channel.address, channel._waited()) from None


def _translate(exc: grpc.RpcError, address: str, waited: str = "") -> ShardwalkError:
    """The library's exception for a failed call (the server's message, the class of its
    status code)."""
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"server {address} unavailable: {details}{waited}"
    cls = error_for_code(code.name)
    return cls(details)


def _count(value: Any, what: str) -> int | None:
    """A count as the request carries it (an optional uint32; None leaves it unset, for the
    server's default). Zero travels, and the library refuses it there; what the field cannot
    carry (not an integer, negative, 2**32 or more) gets the library's error here."""
    if type(value) is int and 0 <= value < 2**32:  # the usual k: no further checks
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        check_k(value, what=what)  # raises: the library's class and message
        raise InvalidArgumentError(f"{what}={value} is out of range")  # pragma: no cover
    return int(value)


def _alpha(value: Any) -> float | None:
    """alpha as the request carries it (an optional double; None leaves it unset). A float
    travels as it is (0.0 too: the library refuses it there); any other type would change on
    the way (an int's message would say 1.0 for 1), so it is checked here, as the library does."""
    if value is None:
        return None
    if not isinstance(value, float | np.floating):
        check_alpha(value)  # raises unless a valid number (a Fraction, a Decimal)
    return float(value)


def _seeds(query: Any) -> pb.Seeds:
    if isinstance(query, dict):
        return pb.Seeds(nodes=[int(n) for n in query], weights=[float(w) for w in query.values()])
    if isinstance(query, int | np.integer):
        return pb.Seeds(nodes=[int(query)])
    return pb.Seeds(nodes=check_ids(query, what="seeds", allow_empty=True).tolist())


def _slice_attributes(table: Any, lo: int, hi: int) -> bytes:
    return b"" if table is None else table_to_pb(table.slice(lo, hi - lo))

"""The RPCs as plain functions: convert the request, call the library, convert the result.

Every handler takes the caller (a :class:`Principal`) and a parsed request and returns a
response message; it raises the library's exceptions, which the app maps to status codes in
one place. Tenant isolation lives here: the tenant of a call is the API key's, every read is
scoped to it, and a write by a tenant goes to its own namespace of ids (a row's key is (owner,
id): its upsert of id 99 writes its own row 99 whoever else holds a 99, its delete deletes only
its own rows; the collection applies the namespace where the write commits). An admin's Get and
Delete name no tenant: they see every row of an id, one per owner. What a tenant key is told depends only on what it may
see: ids it may not see are reported like absent ones, collections and graphs outside its
``collections``/``graphs`` like ones that do not exist, and it sees and writes only a
collection's declared attributes (README, "Tenant isolation").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from shardwalk.index.filters import validate
from shardwalk.index.planner import Explain
from shardwalk.server.coalesce import Coalescer
from shardwalk.server.config import Limits, Principal

from shardwalk._deadline import check
from shardwalk._wire import (
    attributes_from_pb,
    compose_result_to_pb,
    filter_from_pb,
    params_from_pb,
    ppr_result_to_pb,
    table_to_pb,
    to_json,
    vectors_from_pb,
    vectors_to_pb,
)
from shardwalk.collection import Collection
from shardwalk.compose import scoped_ppr
from shardwalk.engine import Engine
from shardwalk.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from shardwalk.v1 import shardwalk_pb2 as pb

__all__ = ["Service"]

# Keyword arguments of the library calls that request parameters must not shadow.
_RESERVED = {
    "queries",
    "k",
    "tenant",
    "where",
    "explain",
    "seeds",
    "method",
    "accuracy",
    "alpha",
    "dangling",
}


def _missing(owner: str, ids: np.ndarray) -> NotFoundError:
    """The library's message for ids that do not exist (an id a tenant may not see is
    reported exactly like one that does not exist)."""
    shown = ", ".join(str(v) for v in ids[:5].tolist())
    more = f" and {ids.size - 5} more" if ids.size > 5 else ""
    return NotFoundError(f"{owner} has no ids {shown}{more}")


class Service:
    """The handlers of ``shardwalk.v1.Shardwalk`` over one engine."""

    def __init__(self, engine: Engine, limits: Limits, coalescer: Coalescer | None = None) -> None:
        self.engine = engine
        self.limits = limits
        self.coalescer = coalescer  # concurrent single-query searches share batch calls

    # -- checks shared by the handlers ------------------------------------------------------
    def _tenant(self, who: Principal, requested: str) -> str | None:
        """The tenant a read is scoped to: the key's own; admins may name any or none."""
        if who.admin:
            return requested or None
        if requested and requested != who.tenant:
            raise PermissionDeniedError(
                f"this API key acts for tenant {who.tenant!r}; the request names {requested!r}"
            )
        return who.tenant

    def _admin(self, who: Principal, what: str) -> None:
        if not who.admin:
            raise PermissionDeniedError(f"{what} needs an admin API key")

    def _k(self, request: Any, field: str, default: int) -> int:
        """A count field of the request (``k``, ``knn_k``, ``ppr_k``): its value when set (0
        too: the library refuses it with its own message), else the library's default."""
        k = getattr(request, field) if request.HasField(field) else default
        if k > self.limits.max_k:
            raise ResourceExhaustedError(
                f"{field}={k} is above this server's limit of {self.limits.max_k} ([limits] max_k)"
            )
        return k

    @staticmethod
    def _params(message: Any) -> dict[str, Any]:
        params = params_from_pb(message)
        clash = sorted(set(params) & _RESERVED)
        if clash:
            raise InvalidArgumentError(
                f"parameter(s) {', '.join(clash)} have fields of their own in the request; "
                "set those fields instead"
            )
        return params

    def _collection(self, who: Principal, name: str) -> Collection:
        """The named collection; to a tenant key, one outside its ``collections`` is reported
        like one that does not exist, and the message names no other collection."""
        return self._named(who, "collection", name, who.may_see_collection, self.engine.collection)

    def _graph(self, who: Principal, name: str) -> Any:
        """The named graph, as :meth:`_collection` for collections."""
        return self._named(who, "graph", name, who.may_see_graph, self.engine.graph)

    @staticmethod
    def _named(
        who: Principal,
        kind: str,
        name: str,
        may_see: Callable[[str], bool],
        get: Callable[[str], Any],
    ) -> Any:
        if not name:
            raise InvalidArgumentError(f"the request names no {kind}; set {kind}")
        if who.admin:
            return get(name)
        if may_see(name):
            try:
                return get(name)
            except NotFoundError:
                pass
        raise NotFoundError(f"{kind} {name!r} does not exist")

    @staticmethod
    def _where(who: Principal, collection: Collection, request: Any) -> Any:
        """The request's filter; a tenant's is checked against the declared attributes only
        (which attributes other writers used is not the tenant's to learn)."""
        if not request.HasField("filter"):
            return None
        where = filter_from_pb(request.filter)
        if not who.admin:
            validate(where, collection.declared_types)
        return where

    # -- collections --------------------------------------------------------------------------
    def search(self, who: Principal, request: pb.SearchRequest) -> pb.SearchResponse:
        collection = self._collection(who, request.collection)
        queries = vectors_from_pb(request.queries, what="queries")
        k = self._k(request, "k", 10)
        where = self._where(who, collection, request)
        tenant = self._tenant(who, request.tenant)
        params = self._params(request.params) if request.params else {}
        explain = None
        if self.coalescer is not None and queries.shape[0] == 1 and not request.explain:
            # one query: it may share a batch call with others of the same key (server/coalesce.py)
            key = (collection, queries.shape[1], k, tenant, _filter_key(request), _key(params))
            ids, distances = self.coalescer.search(
                key,
                queries,
                lambda q: collection.search(q, k, tenant=tenant, where=where, **params),
            )
        else:
            result = collection.search(
                queries, k, tenant=tenant, where=where, explain=request.explain, **params
            )
            ids, distances, explain = result.ids, result.distances, result.explain
        return pb.SearchResponse(
            rows=ids.shape[0],
            k=k,
            ids=ids.astype("<i8", copy=False).tobytes(),
            distances=distances.astype("<f4", copy=False).tobytes(),
            explain_json=to_json(explain.to_dict()) if isinstance(explain, Explain) else "",
        )

    def get(self, who: Principal, request: pb.GetRequest) -> pb.GetResponse:
        collection = self._collection(who, request.collection)
        ids = np.array(request.ids, dtype=np.int64)
        tenant = self._tenant(who, request.tenant)
        if who.admin:  # without a tenant: every owner's row of each id
            records = collection.get(ids, tenant=tenant)
            attributes = records.attributes
        else:
            # an id the tenant may not see is named exactly like an absent one
            records = collection.get(ids, tenant=who.tenant)
            # the declared attributes only: other writers' attribute names are not its to see
            attributes = {
                name: records.attributes.get(name, [None] * ids.size)
                for name in collection.declared_types
            }
        return pb.GetResponse(
            ids=records.ids.tolist(),
            vectors=vectors_to_pb(records.vectors),
            tenants=[t or "" for t in records.tenants],
            shared_with=[pb.StringList(values=s) for s in records.shared_with],
            attributes=table_to_pb(pa.table(attributes)) if attributes else b"",
        )

    def upsert(self, who: Principal, chunks: Any) -> pb.UpsertResponse:
        """Chunks of one client stream, each applied (and durable) before the next is read."""
        written = 0
        name = None
        for number, request in enumerate(chunks, 1):
            if name is None:
                name = request.collection
            elif request.collection != name:
                raise InvalidArgumentError(
                    f"an Upsert stream writes one collection; chunk after {written} rows names "
                    f"{request.collection!r}, the first named {name!r}"
                )
            try:
                check(f"chunk {number} of the upsert stream")
                written += self._upsert_chunk(who, request)
            except Exception as exc:
                if written and hasattr(exc, "message"):
                    exc.message = f"{exc.message} (the {written} rows before it were written)"
                    exc.args = (exc.message,)
                raise
        if name is None:
            raise InvalidArgumentError("the Upsert stream carried no chunk; send at least one")
        return pb.UpsertResponse(upserted=written)

    def _upsert_chunk(self, who: Principal, request: pb.UpsertRequest) -> int:
        collection = self._collection(who, request.collection)
        ids = np.array(request.ids, dtype=np.int64)
        vectors = vectors_from_pb(request.vectors)
        tenants: Any = list(request.tenants)
        attributes = attributes_from_pb(request.attributes)
        if not who.admin:
            if any(t != who.tenant for t in tenants):
                raise PermissionDeniedError(
                    f"this API key writes rows of tenant {who.tenant!r} only; leave tenants "
                    "empty or set them to it"
                )
            if any(s.values for s in request.shared_with):
                raise PermissionDeniedError(
                    "sharing rows with other tenants is an admin act; a tenant key leaves "
                    "shared_with empty"
                )
            if attributes is not None:
                _declared_only(collection, attributes.column_names)
            # the tenant's own namespace: a row of another owner with one of these ids is
            # neither replaced nor consulted (so nothing about it is told)
            return collection.upsert(
                ids, vectors, None, attributes, None, tenant=who.tenant
            )  # (shared_with is refused above for tenant keys)
        if not tenants:
            tenants = None
        elif len(tenants) == 1:
            tenants = tenants[0]
        shared = [list(s.values) for s in request.shared_with] or None
        return collection.upsert(ids, vectors, tenants, attributes, shared)

    def delete(self, who: Principal, request: pb.DeleteRequest) -> pb.DeleteResponse:
        collection = self._collection(who, request.collection)
        ids = np.array(request.ids, dtype=np.int64)
        tenant = self._tenant(who, request.tenant)  # refuses a tenant key naming another
        if not who.admin and ids.size:
            seen = collection.visible(ids, tenant=who.tenant)
            mine = collection.visible(ids, tenant=who.tenant, owned=True)
            if (seen & ~mine).any():
                raise PermissionDeniedError(
                    f"ids {ids[seen & ~mine][:5].tolist()} are shared with tenant "
                    f"{who.tenant!r}, not owned by it; only their owner or an admin deletes them"
                )
            if not request.missing_ok and not seen.all():
                raise _missing(f"collection {collection.name!r}", ids[~seen])
            ids = ids[mine]
            if ids.size == 0:
                return pb.DeleteResponse(deleted=0)
            # in its namespace when committed, too (the check above ran before the write queued)
            deleted = collection.delete(ids, missing_ok=True, tenant=who.tenant)
            return pb.DeleteResponse(deleted=deleted)
        deleted = collection.delete(ids, missing_ok=request.missing_ok, tenant=tenant)
        return pb.DeleteResponse(deleted=deleted)

    # -- graphs -------------------------------------------------------------------------------
    def ppr(
        self, who: Principal, request: pb.PersonalizedPageRankRequest
    ) -> pb.PersonalizedPageRankResponse:
        graph = self._graph(who, request.graph)
        if not request.queries:
            raise InvalidArgumentError("no queries: send at least one Seeds")
        k = self._k(request, "k", 100)
        tenant = self._tenant(who, request.tenant)
        scope = None
        if request.collection:
            scope = self._collection(who, request.collection)
        elif tenant is not None:
            raise PermissionDeniedError(
                "PPR for a tenant names the collection whose rows scope its seeds and results; "
                "set collection"
            )
        queries: list[Any] = []
        for i, seeds in enumerate(request.queries):
            nodes = np.array(seeds.nodes, dtype=np.int64)
            if seeds.weights and len(seeds.weights) != nodes.size:
                raise InvalidArgumentError(
                    f"query {i} has {nodes.size} seed nodes and {len(seeds.weights)} weights; "
                    "give one weight per node or none"
                )
            if seeds.weights and np.unique(nodes).size != nodes.size:
                raise InvalidArgumentError(
                    f"query {i} names a seed node twice; give each node once with its weight"
                )
            if scope is not None and nodes.size:
                seen = scope.visible(nodes, tenant=tenant)
                if not seen.all():  # reported like nodes that do not exist
                    raise _missing(f"graph {graph.name!r}", nodes[~seen])
            queries.append(
                dict(zip(nodes.tolist(), seeds.weights)) if seeds.weights else nodes.tolist()
            )
        options = dict(
            method=request.method or None,
            accuracy=request.accuracy or None,
            alpha=request.alpha if request.HasField("alpha") else None,
            dangling=request.dangling or None,
            **self._params(request.params),
        )
        if scope is None:
            result = graph.ppr_batch(queries, k, **options)
        else:  # the top-k nodes that are rows of the collection the tenant may see
            result = scoped_ppr(graph, scope, queries, k, tenant=tenant, **options)
        return ppr_result_to_pb(result, k)

    def compose(self, who: Principal, request: pb.ComposeRequest) -> pb.ComposeResponse:
        if not request.collection or not request.graph:
            raise InvalidArgumentError("Compose names a collection and a graph; set both")
        collection = self._collection(who, request.collection)
        self._graph(who, request.graph)
        queries = vectors_from_pb(request.queries, what="queries")
        k = self._k(request, "k", 10)
        result = self.engine.compose(
            request.collection,
            request.graph,
            queries,
            k=k,
            tenant=self._tenant(who, request.tenant),
            where=self._where(who, collection, request),
            # unset: the pair's calibrated value, else the library's default (the engine decides)
            knn_k=self._k(request, "knn_k", 0) if request.HasField("knn_k") else None,
            ppr_k=self._k(request, "ppr_k", 0) if request.HasField("ppr_k") else None,
            alpha=request.alpha if request.HasField("alpha") else None,
            fuse=request.fuse or None,
            weight=request.weight if request.HasField("weight") else None,
            temperature=request.temperature if request.HasField("temperature") else None,
            rank_constant=request.rank_constant if request.HasField("rank_constant") else None,
            knn_params=params_from_pb(request.knn_params),
            ppr_params=params_from_pb(request.ppr_params),
        )
        return compose_result_to_pb(result, k)

    # -- listing, statistics, administration ------------------------------------------------
    def stats(self, who: Principal, request: pb.StatsRequest) -> pb.StatsResponse:
        if bool(request.collection) == bool(request.graph):
            raise InvalidArgumentError("Stats takes one of collection, graph")
        if request.graph:
            stats = self._graph(who, request.graph).stats()
            if not who.admin:
                stats = {n: stats[n] for n in ("name", "nodes", "edges", "directed") if n in stats}
        else:
            collection = self._collection(who, request.collection)
            stats = collection.stats()
            if not who.admin:  # what a tenant may know: the shape, not other tenants' sizes
                stats = {n: stats[n] for n in ("name", "dim", "metric", "index")}
                stats["attributes"] = {n: str(t) for n, t in collection.declared_types.items()}
        return pb.StatsResponse(json=to_json(stats))

    def list_collections(self, who: Principal, request: pb.ListRequest) -> pb.ListResponse:
        names = self.engine.collections()
        return pb.ListResponse(names=[n for n in names if who.may_see_collection(n)])

    def list_graphs(self, who: Principal, request: pb.ListRequest) -> pb.ListResponse:
        return pb.ListResponse(names=[n for n in self.engine.graphs() if who.may_see_graph(n)])

    def create_collection(
        self, who: Principal, request: pb.CreateCollectionRequest
    ) -> pb.CreateResponse:
        self._admin(who, "CreateCollection")
        collection = self.engine.create_collection(
            request.name,
            dim=request.dim,
            metric=request.metric or "l2",
            index=request.index or "hnsw",
            attributes=dict(request.attributes) or None,
            **params_from_pb(request.params),
        )
        return pb.CreateResponse(json=to_json(collection.stats()))

    def drop_collection(self, who: Principal, request: pb.DropRequest) -> pb.DropResponse:
        return self._drop(who, "DropCollection", self.engine.drop_collection, request.name)

    def create_graph(self, who: Principal, request: pb.CreateGraphRequest) -> pb.CreateResponse:
        self._admin(who, "CreateGraph")
        edges, weights = _edges_from_pb(request.edges, request.weights)
        graph = self.engine.create_graph(
            request.name,
            edges,
            weights,
            directed=not request.undirected,
            node_ids=np.array(request.node_ids, dtype=np.int64) if request.node_ids else None,
        )
        if request.fingerprints:
            graph.build_fingerprints(**params_from_pb(request.fingerprint_params))
        return pb.CreateResponse(json=to_json(graph.stats()))

    def drop_graph(self, who: Principal, request: pb.DropRequest) -> pb.DropResponse:
        return self._drop(who, "DropGraph", self.engine.drop_graph, request.name)

    def _drop(
        self, who: Principal, rpc: str, drop: Callable[[str], None], name: str
    ) -> pb.DropResponse:
        """DropCollection and DropGraph: admin keys only, as the engine drops."""
        self._admin(who, rpc)
        drop(name)
        return pb.DropResponse()

    def flush(self, who: Principal, request: pb.FlushRequest) -> pb.FlushResponse:
        self._admin(who, "Flush")
        self.engine.flush()
        return pb.FlushResponse()

    def backup(self, who: Principal, request: pb.BackupRequest) -> pb.BackupResponse:
        self._admin(who, "Backup")
        dest = request.destination
        if not dest or not os.path.isabs(dest):
            raise InvalidArgumentError(
                "Backup's destination must be an absolute path of a new or empty directory on "
                f"the server's machine; got {dest!r}"
            )
        report = self.engine.backup(dest, link=not request.copy)
        return pb.BackupResponse(json=to_json(report))

    def upsert_edges(
        self, who: Principal, request: pb.UpsertEdgesRequest
    ) -> pb.UpdateGraphResponse:
        self._admin(who, "UpsertEdges")
        edges, weights = _edges_from_pb(request.edges, request.weights)  # bounded by message size
        report = self._graph(who, request.graph).upsert_edges(edges, weights)
        return pb.UpdateGraphResponse(json=to_json(report))

    def delete_edges(
        self, who: Principal, request: pb.DeleteEdgesRequest
    ) -> pb.UpdateGraphResponse:
        self._admin(who, "DeleteEdges")
        edges, _ = _edges_from_pb(request.edges, b"")
        if edges.shape[0] and request.nodes:
            raise InvalidArgumentError("DeleteEdges takes edges or nodes, not both")
        graph = self._graph(who, request.graph)
        if request.nodes:
            report = graph.delete_nodes(np.array(request.nodes, dtype=np.int64))
        else:
            report = graph.delete_edges(edges)
        return pb.UpdateGraphResponse(json=to_json(report))


def _filter_key(request: Any) -> bytes | None:
    """A request's filter as exact bytes (predicates compare ``1`` and ``True`` equal; the
    collection's type check does not)."""
    return (
        request.filter.SerializeToString(deterministic=True) if request.HasField("filter") else None
    )


def _key(params: dict[str, Any]) -> tuple:
    """Search parameters as a key, their types included (``ef=64`` and ``ef=64.0`` differ)."""
    return tuple(sorted((name, type(value), value) for name, value in params.items()))


def _declared_only(collection: Collection, names: list[str]) -> None:
    """A tenant key writes only the collection's declared attributes."""
    declared = collection.declared_types
    extra = [n for n in names if n not in declared]
    if not extra:
        return
    if not declared:
        raise InvalidArgumentError(
            f"attribute {extra[0]!r}: collection {collection.name!r} declares no attributes, "
            "and tenant keys write only declared ones; an admin declares them when creating "
            "the collection (attributes={name: type})"
        )
    raise InvalidArgumentError(
        f"attribute {extra[0]!r} is not declared by collection {collection.name!r}; tenant keys "
        f"write only its declared attributes: {', '.join(declared)}"
    )


def _edges_from_pb(edges: bytes, weights: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """(E, 2) int64 edges and float32 weights (or None) from their packed bytes."""
    if len(edges) % 16:
        raise InvalidArgumentError(
            f"edges carry {len(edges)} bytes; expected int64 (src, dst) pairs, 16 bytes per edge"
        )
    pairs = np.frombuffer(edges, dtype="<i8").reshape(-1, 2).astype(np.int64)
    if not weights:
        return pairs, None
    if len(weights) != 4 * pairs.shape[0]:
        raise InvalidArgumentError(
            f"weights carry {len(weights)} bytes; expected one float32 per edge "
            f"({4 * pairs.shape[0]} bytes)"
        )
    return pairs, np.frombuffer(weights, dtype="<f4").astype(np.float32)

"""Request limits and per-key quotas: what the dispatcher (:meth:`Dispatcher.call` in
:mod:`shardwalk.server.app`) checks after it has authenticated and parsed a call and before the
handler does any work.

* **Quotas** (``[[api_keys]] max_concurrent``, ``max_queued``, ``requests_per_second`` and
  ``burst``): a :class:`Gate` per key that has any, with a lock of its own (no lock is shared
  between keys, and keys without quotas take none). ``requests_per_second`` is a
  :class:`TokenBucket`: it holds up to ``burst`` tokens (default: one second's worth), refills
  continuously at the rate, and every call takes one; a call that finds it empty is refused at
  once. Past ``max_concurrent`` calls in flight, up to ``max_queued`` more wait in the key's
  line of the handler pool (server/lanes.py's :class:`FairPool`, which holds no thread for a
  waiting call and starts the key's next call when one of its calls ends); past that, a call is
  refused. A refusal is cheap for the server, but not free (grpc's Python layers cost about as
  much as a small search), so a client that retries refusals at once spends the server's CPU:
  a line lets a burst wait instead.
* **Request dimensions** (``[limits]``): a check per RPC (:data:`_CHECKS`) reading only the
  message's counts and scalars: queries and k, ids per Get/Delete and rows per Upsert chunk
  (each chunk as the handler reaches it: :meth:`Limiter.stream`), index search parameters
  (``ef``, ``candidates``, ``max_probes``/``nprobe``), PPR ``r_max`` (a floor: smaller is more
  work) and ``rounds`` (the "fingerprint" kernel polls no deadline), fingerprint walks, and the
  size of a filter tree (counted with an early exit, before it is converted: an ``any`` of
  100,000 terms took 3-7 s to convert and evaluate).
* **Deadline** (``[limits] max_deadline_s``): a call runs under the client's deadline or the
  server's maximum, whichever is sooner: the maximum applies when the client sends no deadline
  and caps a longer one (as Envoy's ``max_grpc_timeout`` does; a call that needs longer, such
  as a very long upload, is split or the setting raised).

Everything refused here is ``ResourceExhaustedError`` (RESOURCE_EXHAUSTED) naming the setting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from shardwalk.server.config import Config, Limits, Principal, Quota

from shardwalk.errors import ResourceExhaustedError
from shardwalk.v1 import shardwalk_pb2 as pb

__all__ = ["Gate", "Limiter", "TokenBucket"]


# -- quotas -----------------------------------------------------------------------------------
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held (full at the start). Not locked:
    its :class:`Gate` holds the key's lock around :meth:`take`. ``clock`` is injectable for
    tests."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens = self.burst
        self.stamp = clock()

    def take(self) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one will be (and
        nothing is taken)."""
        now = self.clock()
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Gate:
    """The quotas of one API key: calls in flight and a token bucket, under one lock."""

    __slots__ = ("bucket", "in_flight", "label", "lock", "max_concurrent", "max_queued")

    def __init__(
        self, label: str, quota: Quota, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.label = label
        # read by FairPool, which queues this key's calls by its Gate (server/lanes.py)
        self.max_concurrent, self.max_queued = quota.max_concurrent, quota.max_queued
        rate = quota.requests_per_second
        burst = quota.burst if quota.burst is not None else max(1.0, rate or 0.0)
        self.bucket = None if rate is None else TokenBucket(rate, burst, clock)
        self.in_flight = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        """Admit a call (pair with :meth:`leave`) or raise ``ResourceExhaustedError``."""
        with self.lock:
            if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
                waiting = (
                    f" and {self.max_queued} waiting (max_queued = {self.max_queued})"
                    if self.max_queued
                    else ""
                )
                raise ResourceExhaustedError(
                    f"the API key of {self.label} has {self.in_flight} calls in flight, its "
                    f"limit ([[api_keys]] max_concurrent = {self.max_concurrent}){waiting}; "
                    "wait for one to finish"
                )
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait:
                    raise ResourceExhaustedError(
                        f"the API key of {self.label} is past its rate of "
                        f"{self.bucket.rate:g} calls per second (burst {self.bucket.burst:g}; "
                        "[[api_keys]] requests_per_second, burst); retry in "
                        f"{max(1, round(wait * 1e3))} ms"
                    )
            self.in_flight += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


# -- request dimensions -----------------------------------------------------------------------
def _exhausted(what: str, value: Any, setting: str, limit: Any, hint: str = "") -> None:
    raise ResourceExhaustedError(
        f"{what} {value} is above this server's limit of {limit} ([limits] {setting})"
        + (f"; {hint}" if hint else "")
    )


def _count(
    n: int, what: str, setting: str, limits: Limits, hint: str = "split the request"
) -> None:
    limit = getattr(limits, setting)
    if n > limit:
        _exhausted(what, n, setting, limit, hint)


def _rows(vectors: pb.Vectors) -> int:
    """Rows of a packed matrix (malformed ones are the handler's to refuse)."""
    return len(vectors.data) // (4 * vectors.dim) if vectors.dim else 0


def _batch(n: int, limits: Limits) -> None:
    if n > limits.max_batch:
        raise ResourceExhaustedError(
            f"{n} queries in one request is above this server's limit of "
            f"{limits.max_batch} ([limits] max_batch); split the batch"
        )


def _k(k: int, limits: Limits) -> None:
    if k > limits.max_k:  # the message of Service._k
        raise ResourceExhaustedError(
            f"k={k} is above this server's limit of {limits.max_k} ([limits] max_k)"
        )


def _number(value: pb.Value) -> float | None:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind in ("int_value", "float_value") else None


# request parameter -> the [limits] setting that caps it (or, for floors, bounds it below)
_INDEX_PARAMS = {
    "ef": "max_ef",
    "candidates": "max_candidates",
    "max_probes": "max_probes",
    "nprobe": "max_probes",
}
_PPR_PARAMS = {"rounds": "max_rounds"}
_PPR_FLOORS = {"r_max": "min_r_max"}
_WALK_PARAMS = {"walks_per_node": "max_walks", "hub_walks": "max_walks"}


def _params(
    params: Mapping[str, pb.Value],
    limits: Limits,
    caps: Mapping[str, str],
    floors: Mapping[str, str] | None = None,
) -> None:
    if not params:
        return
    for name, setting in caps.items():
        if name in params:
            value, limit = _number(params[name]), getattr(limits, setting)
            if value is not None and value > limit:
                raise ResourceExhaustedError(
                    f"{name}={value:g} is above this server's limit of {limit} ([limits] {setting})"
                )
    for name, setting in (floors or {}).items():
        if name in params:
            value, floor = _number(params[name]), getattr(limits, setting)
            # 0 and negative values are invalid, not expensive: the library says so
            if value is not None and 0 < value < floor:
                raise ResourceExhaustedError(
                    f"{name}={value:g} is below this server's floor of {floor:g} "
                    f"([limits] {setting}): a smaller {name} is more work"
                )


def _filter(root: pb.Filter, limits: Limits) -> None:
    """Count the nodes and in-list values of a filter tree, stopping as soon as either is
    over its limit (nothing is converted; no recursion)."""
    max_terms, max_values = limits.max_filter_terms, limits.max_filter_values
    # every node but the root, and every value, takes 2 bytes or more of the root's encoding:
    # a smaller filter is within both limits (the size is computed in C: 1 us against 7 for
    # walking a 5-node filter in Python)
    if root.ByteSize() < 2 * min(max_terms, max_values + 1):
        return
    terms, values, stack = 1, 0, [root]
    while stack:
        node = stack.pop()
        which = node.WhichOneof("node")
        if which == "all" or which == "any":
            children = getattr(node, which).terms
            terms += len(children)
            if terms > max_terms:
                break
            stack.extend(children)
        elif which == "negate":
            terms += 1
            if terms > max_terms:
                break
            stack.append(node.negate)
        elif which == "in":
            values += len(getattr(node, "in").values)
            if values > max_values:
                raise ResourceExhaustedError(
                    f"the filter's in-lists hold more than {max_values} values, this server's "
                    "limit ([limits] max_filter_values)"
                )
    if terms > max_terms:
        raise ResourceExhaustedError(
            f"the filter has more than {max_terms} terms, this server's limit ([limits] "
            "max_filter_terms); one in-list of many values is much cheaper than an any of "
            "many eq terms"
        )


def _search(r: pb.SearchRequest, limits: Limits) -> None:
    _batch(_rows(r.queries), limits)
    _k(r.k, limits)
    _params(r.params, limits, _INDEX_PARAMS)
    if r.HasField("filter"):
        _filter(r.filter, limits)


def _ids(rpc: str) -> Callable[[Any, Limits], None]:
    def check(r: Any, limits: Limits) -> None:
        _count(len(r.ids), f"the number of ids in one {rpc} request,", "max_ids", limits)

    return check


def _upsert_chunk(r: pb.UpsertRequest, limits: Limits) -> None:
    rows = max(len(r.ids), _rows(r.vectors), len(r.tenants), len(r.shared_with))
    _count(rows, "the number of rows in one Upsert chunk,", "max_ids", limits,
           "send smaller chunks")  # fmt: skip


def _ppr(r: pb.PersonalizedPageRankRequest, limits: Limits) -> None:
    _batch(len(r.queries), limits)
    _k(r.k, limits)
    _count(sum(len(s.nodes) for s in r.queries), "the number of seed nodes in one request,",
           "max_ids", limits)  # fmt: skip
    _params(r.params, limits, _PPR_PARAMS, _PPR_FLOORS)


def _compose(r: pb.ComposeRequest, limits: Limits) -> None:
    _batch(_rows(r.queries), limits)
    for k in (r.k, r.knn_k, r.ppr_k):
        _k(k, limits)
    _params(r.knn_params, limits, _INDEX_PARAMS)
    _params(r.ppr_params, limits, _PPR_PARAMS, _PPR_FLOORS)
    if r.HasField("filter"):
        _filter(r.filter, limits)


def _create_collection(r: pb.CreateCollectionRequest, limits: Limits) -> None:
    _params(r.params, limits, _INDEX_PARAMS)  # a collection's default search parameters


def _create_graph(r: pb.CreateGraphRequest, limits: Limits) -> None:
    _params(r.fingerprint_params, limits, _WALK_PARAMS)


def _delete_edges(r: pb.DeleteEdgesRequest, limits: Limits) -> None:
    _count(len(r.nodes), "the number of nodes in one DeleteEdges request,", "max_ids", limits)


_CHECKS: dict[str, Callable[[Any, Limits], None]] = {
    "Search": _search,
    "Get": _ids("Get"),
    "Delete": _ids("Delete"),
    "Upsert": _upsert_chunk,
    "PersonalizedPageRank": _ppr,
    "Compose": _compose,
    "CreateCollection": _create_collection,
    "CreateGraph": _create_graph,
    "DeleteEdges": _delete_edges,
}


class Limiter:
    """The limits and quotas of one server configuration (the dispatcher holds one)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = config.limits
        # keyed by the principal's identity: one gate per [[api_keys]] entry, even if two
        # entries act for the same tenant
        self._gates = {
            id(p): Gate(p.label, p.quota, clock)
            for p in config.keys.values()
            if p.quota is not None
        }

    def gate(self, who: Principal) -> Gate | None:
        """The quotas of ``who``'s key (None: it has none)."""
        return None if who.quota is None else self._gates[id(who)]

    def admit(self, who: Principal) -> Gate | None:
        """Admit a call of ``who`` under its key's quotas (``gate.leave()`` when it ends);
        None for a key without quotas."""
        if who.quota is None:
            return None
        gate = self._gates[id(who)]
        gate.enter()
        return gate

    def check(self, rpc: str, request: Any) -> None:
        """Refuse a parsed (unary) request above a ``[limits]`` setting."""
        check = _CHECKS.get(rpc)
        if check is not None:
            check(request, self.limits)

    def stream(self, rpc: str, chunks: Iterable[Any]) -> Iterator[Any]:
        """The chunks of a client stream, each checked as the handler reaches it (the handler
        applies a chunk before it asks for the next)."""
        check = _CHECKS.get(rpc)
        rows = 0
        for number, chunk in enumerate(chunks, 1):
            if check is not None:
                try:
                    check(chunk, self.limits)
                except ResourceExhaustedError as exc:
                    done = f" (the {rows} rows before it were written)" if rows else ""
                    raise ResourceExhaustedError(
                        f"chunk {number} of the {rpc} stream: {exc.message}{done}"
                    ) from None
            yield chunk
            rows += len(getattr(chunk, "ids", ()))

    def deadline(self, remaining: float | None) -> tuple[float, bool]:
        """(the seconds a call may run, whether that is the server's ``max_deadline_s`` rather
        than the client's deadline)."""
        cap = self.limits.max_deadline_s
        if remaining is None or remaining > cap:
            return cap, True
        return remaining, False

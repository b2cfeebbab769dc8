"""The gRPC server: authentication, error mapping, limits, metrics and logs around the handlers
of :mod:`shardwalk.server.service`, plus the standard health and reflection services.

Every RPC passes through one wrapper (:meth:`Dispatcher.call`): it authenticates the caller from
the ``authorization`` metadata, parses the request (a message that does not parse is
INVALID_ARGUMENT, never INTERNAL), checks the deadline, runs the handler, maps the library's
exceptions to their status codes with the library's message (anything unexpected is INTERNAL
with a generic message and a logged traceback; a library message that would show a tenant the
server's insides, such as a corruption report, a path, a pid or an exception's text, is replaced
by a generic one with a reference, the detail logged under it), and records the metrics and one
log line (at INFO for a failed call, at most one a second for the same RPC, tenant and status;
at DEBUG for a successful one: ``serve --log-level DEBUG`` logs every call; at INFO the line
costs more than the dispatcher's other work together, measured).

Two server models share it: :class:`Server`, grpc's synchronous server with a thread pool,
and :class:`AioServer` on grpc.aio (``shardwalk serve --aio``); handlers call the engine,
whose reads run in parallel. bench/server.py compares the two.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from shardwalk.server.coalesce import Coalescer
from shardwalk.server.config import Config, Principal, load_config
from shardwalk.server.lanes import CALLER, FairPool, Lane
from shardwalk.server.limits import Limiter
from shardwalk.server.service import Service

from shardwalk._deadline import deadline
from shardwalk.engine import Engine
from shardwalk.errors import (
    CorruptionError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    ShardwalkError,
)
from shardwalk.v1 import shardwalk_pb2 as pb

__all__ = ["SERVICE", "AioServer", "Dispatcher", "Server", "serve"]

SERVICE = "shardwalk.v1.Shardwalk"
log = logging.getLogger("shardwalk.server")

# name -> (request type, handler, client-streaming?)
_RPCS: dict[str, tuple[Any, Callable[..., Any], bool]] = {
    "Search": (pb.SearchRequest, Service.search, False),
    "Get": (pb.GetRequest, Service.get, False),
    "Upsert": (pb.UpsertRequest, Service.upsert, True),
    "Delete": (pb.DeleteRequest, Service.delete, False),
    "PersonalizedPageRank": (pb.PersonalizedPageRankRequest, Service.ppr, False),
    "Stats": (pb.StatsRequest, Service.stats, False),
    "ListCollections": (pb.ListRequest, Service.list_collections, False),
    "ListGraphs": (pb.ListRequest, Service.list_graphs, False),
    "CreateCollection": (pb.CreateCollectionRequest, Service.create_collection, False),
    "DropCollection": (pb.DropRequest, Service.drop_collection, False),
    "CreateGraph": (pb.CreateGraphRequest, Service.create_graph, False),
    "DropGraph": (pb.DropRequest, Service.drop_graph, False),
    "Flush": (pb.FlushRequest, Service.flush, False),
    "Compose": (pb.ComposeRequest, Service.compose, False),
    "UpsertEdges": (pb.UpsertEdgesRequest, Service.upsert_edges, False),
    "DeleteEdges": (pb.DeleteEdgesRequest, Service.delete_edges, False),
    "Backup": (pb.BackupRequest, Service.backup, False),
}
# long calls: graph solves and maintenance, run in the background lane (server/lanes.py)
_BACKGROUND = frozenset(
    {"PersonalizedPageRank", "Compose", "CreateGraph", "UpsertEdges", "DeleteEdges", "Flush",
     "Backup"}
)  # fmt: skip
# grpcio-reflection serves v1alpha only; grpcurl and newer tools ask for v1 first
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_SERVICES = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
_OK = grpc.StatusCode.OK


class Dispatcher:
    """The one wrapper around every RPC, shared by both server models: authenticate, parse,
    check the deadline, run the handler, map errors to status codes, log and count."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.config = config
        coalescer = None
        if config.coalesce_window_s > 0:
            coalescer = Coalescer(
                config.coalesce_window_s, min(config.coalesce_max_queries, config.limits.max_batch)
            )
        self.service = Service(engine, config.limits, coalescer)
        self._paths = _server_paths(engine.path)
        self.limiter = Limiter(config)
        self.background = Lane(config.limits.rpc_threads, config.limits.background_nice)
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "shardwalk_requests",
            "RPCs handled, by method, tenant and status code",
            ["rpc", "tenant", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "shardwalk_request_seconds",
            "RPC latency, by method, tenant and status code",
            ["rpc", "tenant", "code"],
            registry=self.registry,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )
        if coalescer is not None:
            self.registry.register(_CoalescerMetrics(coalescer))
        # bounded: one entry per configured key, and per (rpc, tenant label, status code)
        self._known: dict[str, Principal] = {}
        self._bound: dict[tuple[str, str, grpc.StatusCode], tuple[Any, Any]] = {}
        # (rpc, tenant label, status) -> (when its last failure was logged, how many since)
        self._logged: dict[tuple[str, str, grpc.StatusCode], tuple[float, int]] = {}
        self._log_lock = threading.Lock()

    def call(
        self, rpc: str, data: Any, metadata: Any, remaining: float | None
    ) -> tuple[grpc.StatusCode, str, bytes]:
        """(status, message, serialized response) of one call; ``data`` is the request's
        bytes, or an iterable of them for a client stream."""
        request_type, handler, streaming = _RPCS[rpc]
        start = time.perf_counter()
        who: Principal | None = None
        code, message, out = _OK, "", b""
        detail = ""  # the failure, for the operator's log line (the whole library message)
        gate, capped = None, False
        try:
            who = self._principal(_api_key(metadata))
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(f"the deadline of {rpc} passed before it ran")
            gate = self.limiter.admit(who)  # the key's quotas (server/limits.py)
            if streaming:
                request = self.limiter.stream(rpc, (_parse(rpc, request_type, d) for d in data))
            else:
                request = _parse(rpc, request_type, data)
                self.limiter.check(rpc, request)  # [limits], before any work
            remaining, capped = self.limiter.deadline(remaining)
            with deadline(remaining):  # the engine checks it between stages and in solves
                if rpc in _BACKGROUND:
                    response = self.background.run(handler, self.service, who, request)
                else:
                    response = handler(self.service, who, request)
                out = response.SerializeToString()
        except ShardwalkError as exc:
            code, message = grpc.StatusCode[exc.code], self._client_message(rpc, exc, who)
            detail = exc.message
            if capped and code is grpc.StatusCode.DEADLINE_EXCEEDED:
                message += (
                    f" (this server ends a call after {remaining:g} s: [limits] max_deadline_s)"
                )
        except RecursionError:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"{rpc}: request nested too deeply"
        except grpc.RpcError:  # the client went away mid-stream: nobody to answer
            code, message = grpc.StatusCode.CANCELLED, "the call was cancelled"
        except Exception:
            log.exception("%s failed unexpectedly (tenant %s)", rpc, _label(who))
            code = grpc.StatusCode.INTERNAL
            message = f"internal error in {rpc}; the server logged the details"
        finally:
            if gate is not None:
                gate.leave()
        seconds = time.perf_counter() - start
        tenant = "-" if who is None else who.label
        counter, latency = self._series(rpc, tenant, code)
        counter.inc()
        latency.observe(seconds)
        if code is _OK:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rpc=%s tenant=%s status=OK ms=%.2f", rpc, tenant, seconds * 1e3)
        elif log.isEnabledFor(logging.INFO):
            self._log_failure(rpc, tenant, code, seconds, detail or message)
        return code, message, out

    def _log_failure(
        self, rpc: str, tenant: str, code: grpc.StatusCode, seconds: float, error: str
    ) -> None:
        """One line per failed call, but at most one a second per (rpc, tenant, status): a
        tenant that keeps failing (a flood refused by its quota: thousands of calls a second)
        must not flood the log. The next line logged for the same three says how many were
        left out."""
        key = (rpc, tenant, code)
        now = time.monotonic()
        with self._log_lock:
            last, skipped = self._logged.get(key, (-1.0, 0))
            if now - last < 1.0:
                self._logged[key] = (last, skipped + 1)
                return
            self._logged[key] = (now, 0)
        log.info(
            "rpc=%s tenant=%s status=%s ms=%.2f error=%s%s",
            rpc,
            tenant,
            code.name,
            seconds * 1e3,
            json.dumps(error),  # one line, quoted, whatever it holds
            f" (and {skipped} more like it, not logged)" if skipped else "",
        )

    def caller(self, metadata: Any) -> Any:
        """The line a call waits in for a handler thread (server/lanes.py's FairPool): its API
        key's quotas (:class:`~shardwalk.server.limits.Gate`: the pool runs at most
        ``max_concurrent`` of its calls and lets ``max_queued`` more wait), or the key itself
        if it has none; a key that does not authenticate waits in the line of all such calls
        (so that made-up keys cannot claim a line each)."""
        key = _api_key(metadata)
        try:
            who = self._principal(key)
        except ShardwalkError:  # the dispatcher refuses it, in its turn
            return None
        return self.limiter.gate(who) or key

    def _principal(self, key: str | None) -> Principal:
        """The caller of an API key, remembered per key string once it authenticated (the
        digest and the constant-time comparison with every configured key run once per key,
        not per call; the keys cannot change while the server runs). Unknown keys are never
        remembered: the cache holds at most one entry per string that authenticated."""
        who = self._known.get(key)  # type: ignore[arg-type]
        if who is None:
            who = self.config.principal(key)
            self._known[key] = who  # type: ignore[index]
        return who

    def _series(self, rpc: str, tenant: str, code: grpc.StatusCode) -> tuple[Any, Any]:
        """The counter and histogram children of (rpc, tenant, code), bound once (a
        ``labels()`` lookup checks and joins the label values under the metric's lock on
        every call)."""
        key = (rpc, tenant, code)
        bound = self._bound.get(key)
        if bound is None:
            bound = (
                self._requests.labels(rpc, tenant, code.name),
                self._latency.labels(rpc, tenant, code.name),
            )
            self._bound[key] = bound
        return bound

    def _client_message(self, rpc: str, exc: ShardwalkError, who: Principal | None) -> str:
        """What a caller is told: the library's message, unless the caller is not an admin
        and it may carry what only the server's operator should see (a corruption report, a file path, a pid, an exception
        raised inside the engine); then a message naming the RPC, the kind of failure and a
        reference, while the detail goes to the log under that reference."""
        text = exc.message
        if who is not None and who.admin:  # the operator's own key: the detail is theirs
            return text
        if not isinstance(exc, CorruptionError) and not _internal(text, self._paths):
            return text
        ref = secrets.token_hex(4)
        log.log(
            logging.ERROR if isinstance(exc, CorruptionError) else logging.WARNING,
            "%s failed (tenant %s, ref %s): %s: %s",
            rpc,
            _label(who),
            ref,
            type(exc).__name__,
            text,
            exc_info=isinstance(exc, CorruptionError),
        )
        what = _GENERIC.get(exc.code, "the server could not complete it")
        return f"{rpc} failed: {what}; the server logged the details (ref {ref})"


class _CoalescerMetrics:
    """The coalescer's counts as metrics, read when scraped (server/coalesce.py)."""

    def __init__(self, coalescer: Coalescer) -> None:
        self._coalescer = coalescer

    def collect(self) -> Any:
        batches = CounterMetricFamily(
            "shardwalk_search_batches", "coalesced Search batches run (two queries or more)"
        )
        batches.add_metric([], self._coalescer.batches)
        queries = CounterMetricFamily(
            "shardwalk_search_coalesced_queries", "single-query Searches answered in those batches"
        )
        queries.add_metric([], self._coalescer.coalesced)
        return [batches, queries]


# the client-safe messages of the failures whose library messages are not (see _internal)
_GENERIC = {
    "DATA_LOSS": "stored data on the server failed an integrity check (an operator must "
    "restore or recover it)",
    "FAILED_PRECONDITION": "the server is not in a state to do this",
    "UNAVAILABLE": "a part of the server that holds data is unavailable; retry later",
}
# an absolute path of two parts or more, a pid, an exception's text ("OSError: [Errno 28] ...")
_INTERNAL = re.compile(
    r"(?<![\w.~-])/[^\s/'\"]+/|\bpid \d+|\b[A-Z]\w*(?:Error|Exception)\b: |\[Errno \d+\]"
)


def _server_paths(root: str | None) -> tuple[str, ...]:
    """How the data directory can appear in a message (it may be relative)."""
    if root is None:
        return ()
    return tuple({os.path.realpath(root), os.path.abspath(root), root + os.sep, repr(root)})


def _internal(message: str, paths: tuple[str, ...]) -> bool:
    return _INTERNAL.search(message) is not None or any(p in message for p in paths)


def _parse(rpc: str, request_type: Any, data: bytes) -> Any:
    try:
        return request_type.FromString(data)
    except Exception as exc:  # DecodeError, depth limits: the client's fault
        raise InvalidArgumentError(
            f"the {rpc} request is not a valid {request_type.DESCRIPTOR.full_name} message "
            f"({type(exc).__name__})"
        ) from None


def _options(limits: Any) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        # grpc sets SO_REUSEPORT by default: a second server on the same port would bind too
        # and take half of the new connections (to another data directory)
        ("grpc.so_reuseport", 0),
    ]


def check_port(port: Any, what: str = "port") -> int:
    """A TCP port number, 0 (a free one) to 65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(
            f"{what} must be an integer from 0 to 65535 (0 picks a free port); got {port!r}"
        )
    return port


def _install(
    server: Any,
    behavior_of: Callable[[str], Callable[..., Any]],
    health_servicer: Any,
    config: Config,
    host: str,
    port: int,
    caller: Callable[[Any], Any] | None,
) -> int:
    """Add every RPC (raw bytes in and out: parsing is the dispatcher's), the health and
    reflection services to a sync or aio server, and bind it; returns the port. With
    ``caller``, the service's calls are marked with their caller (:class:`_ByCaller`)."""
    handlers = {
        rpc: (
            grpc.stream_unary_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )(behavior_of(rpc))
        for rpc, (_, _, streaming) in _RPCS.items()
    }
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    server.add_generic_rpc_handlers((generic if caller is None else _ByCaller(generic, caller),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        _enable_reflection(server)
    return _listen(server, config, host, port)


class _ByCaller(grpc.GenericRpcHandler):
    """Marks each call with its caller (:data:`~shardwalk.server.lanes.CALLER`) as grpc's
    synchronous server looks up its handler: grpc does that in the call's own context, just
    before it hands the call to the pool, whose :class:`FairPool` queues it by that mark."""

    def __init__(self, handler: grpc.GenericRpcHandler, caller: Callable[[Any], Any]) -> None:
        self._handler, self._caller = handler, caller

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        CALLER.set(self._caller(details.invocation_metadata))  # type: ignore[attr-defined]
        return self._handler.service(details)


def _enable_reflection(server: Any) -> None:
    """Server reflection, v1alpha and v1. The two protocols have the same messages, field for
    field, under another package name (grpc/reflection/v1/reflection.proto), so one servicer
    answers both: v1 is the same handler registered under the v1 service name."""
    kind = reflection.aio.ReflectionServicer
    if not isinstance(server, grpc.aio.Server):
        kind = reflection.ReflectionServicer
    servicer = kind(_SERVICES)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


def _listen(server: Any, config: Config, host: str, port: int) -> int:
    address = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
    taken = _probe_bind(host, port) if port else None
    if taken is not None:  # said before grpc tries (it logs a C-level error line of its own)
        raise FailedPreconditionError(f"cannot listen on {address}: {taken}")
    try:
        if config.tls_cert is not None:
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key, config.tls_cert)],
                root_certificates=config.tls_client_ca,
                require_client_auth=config.tls_client_ca is not None,
            )
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc: "Failed to bind to address ..."
        bound = 0
    if bound == 0:
        raise FailedPreconditionError(f"cannot listen on {address}: {_bind_failure(host, port)}")
    warning = plaintext_warning(config, host, int(bound))
    if warning is not None:
        log.warning("%s", warning)
    return int(bound)


def plaintext_warning(config: Config, host: str, port: int) -> str | None:
    """The warning a plaintext listener on an address other than loopback deserves."""
    if config.tls_cert is not None or _loopback(host):
        return None
    return (
        f"serving plaintext on {host}:{port}, which is not a loopback address: API keys and "
        "data cross the network unencrypted; configure [tls] (cert and key; client_ca for "
        "client certificates)"
    )


def _bind_failure(host: str, port: int) -> str:
    """Why grpc could not bind (it does not say): try the same bind with a plain socket."""
    reason = _probe_bind(host, port)
    if reason is not None:
        return reason
    # the port is free now (its holder just stopped?): grpc alone knows why it failed
    return "grpc could not bind it (GRPC_VERBOSITY=debug shows its reason); try again"


def _probe_bind(host: str, port: int) -> str | None:
    """Why binding ``host:port`` fails, tried with a plain socket as grpc binds (address
    reuse on, so a port left in TIME_WAIT counts as free); None when it binds."""
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        family, kind, proto, _, where = found[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {port} is in use (another shardwalk serve or another program listens "
                "on it); stop that one or choose another --port (0 picks a free one)"
            )
        return f"{exc.strerror or exc}; check --host"
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Serving:
    """What both servers set up alike: the engine, served through one dispatcher (API keys,
    limits, handlers) on ``host:port``, with a pool of ``[limits] rpc_threads`` for the calls."""

    def __init__(
        self, engine: Engine, config: Config, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        check_port(port)
        self.engine = engine
        self.host = host
        self.dispatcher = Dispatcher(engine, config)
        self.registry = self.dispatcher.registry
        self._pool = FairPool(config.limits.rpc_threads)

    def stop(self, grace: float | None = 10.0) -> None:
        raise NotImplementedError

    def _stopped(self) -> None:
        """Once the server takes no more calls: end the background work, then checkpoint
        every collection (the engine stays open: its owner closes it)."""
        self.dispatcher.background.close()
        _checkpoint(self.engine)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Server(_Serving):
    """A running shardwalk gRPC server over an engine: grpc's synchronous server, a thread
    per call from a pool of ``[limits] rpc_threads``.

    Parameters
    ----------
    engine : Engine
    config : Config
        API keys, limits, TLS (see :mod:`shardwalk.server.config`).
    host, port
        Where to listen; port 0 picks a free port (``server.port`` says which).
    """

    def __init__(
        self, engine: Engine, config: Config, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(engine, config, host=host, port=port)
        limits = config.limits
        self._server = grpc.server(
            self._pool, maximum_concurrent_rpcs=limits.max_concurrent_requests,
            options=_options(limits),
        )  # fmt: skip
        call, release = self.dispatcher.call, self._pool.release

        def behavior_of(rpc: str) -> Callable[[Any, grpc.ServicerContext], bytes]:
            def behavior(data: Any, context: grpc.ServicerContext) -> bytes:
                code, message, out = call(
                    rpc, data, context.invocation_metadata(), context.time_remaining()
                )
                release()  # grpc sends the answer after this returns: the slot is free now
                if code is not grpc.StatusCode.OK:
                    context.abort(code, message)
                return out

            return behavior

        self.health = health.HealthServicer()
        self.port = _install(
            self._server, behavior_of, self.health, config, host, port, self.dispatcher.caller
        )

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> Server:
        self._server.start()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening on %s:%d", self.host, self.port)
        return self

    def stop(self, grace: float | None = 10.0) -> None:
        """Stop taking calls, let in-flight calls finish (up to ``grace`` seconds), then
        checkpoint every collection. The engine stays open (its owner closes it)."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=False)
        self._stopped()

    def __enter__(self) -> Server:
        return self.start()


class AioServer(_Serving):
    """The same service on grpc.aio: one event loop (in a thread of its own) takes the calls
    and runs each handler in a pool of ``[limits] rpc_threads`` (the engine is synchronous). A
    client stream reaches its handler chunk by chunk, as the handler asks for them
    (:class:`_Stream`). Same interface as :class:`Server`;
    bench/server.py compares the two."""

    def __init__(
        self, engine: Engine, config: Config, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(engine, config, host=host, port=port)
        self._config, self._port = config, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._server, self.port = self._run(self._build())
        except BaseException:  # nothing left running: the loop's thread, the pool
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._pool.shutdown()
            raise

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _build(self) -> tuple[Any, int]:
        from grpc_health.v1 import _async as health_aio

        limits = self._config.limits
        server = grpc.aio.server(
            maximum_concurrent_rpcs=limits.max_concurrent_requests, options=_options(limits)
        )
        call, caller, pool = self.dispatcher.call, self.dispatcher.caller, self._pool

        def behavior_of(rpc: str) -> Callable[..., Any]:
            streaming = _RPCS[rpc][2]

            async def behavior(data: Any, context: grpc.aio.ServicerContext) -> bytes:
                loop = asyncio.get_running_loop()
                stream = _Stream(data, loop) if streaming else None
                metadata = context.invocation_metadata()
                remaining = context.time_remaining()
                expiry = None if remaining is None else time.monotonic() + remaining

                def run() -> tuple[grpc.StatusCode, str, bytes]:  # its deadline as it starts
                    left = None if expiry is None else expiry - time.monotonic()
                    return call(rpc, data if stream is None else stream, metadata, left)

                try:
                    code, message, out = await asyncio.wrap_future(
                        pool.submit_as(caller(metadata), run), loop=loop
                    )
                finally:
                    if stream is not None:  # cancelled: unblock a handler waiting for a chunk
                        stream.close()
                if code is not grpc.StatusCode.OK:
                    await context.abort(code, message)
                return out

            return behavior

        self.health = health_aio.HealthServicer()
        return server, _install(
            server, behavior_of, self.health, self._config, self.host, self._port, None
        )

    def start(self) -> AioServer:
        async def start() -> None:
            await self._server.start()
            for name in ("", SERVICE):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._run(start())
        log.info("listening on %s:%d (grpc.aio)", self.host, self.port)
        return self

    def stop(self, grace: float | None = 10.0) -> None:
        async def stop() -> None:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(grace)

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._pool.shutdown()
        self._stopped()

    def __enter__(self) -> AioServer:
        return self.start()


class _StreamCancelled(grpc.RpcError):
    """The call ended while its handler waited for the next chunk (the dispatcher answers
    CANCELLED, as for a client that went away under the sync server)."""


class _Stream:
    """A grpc.aio client stream read by the synchronous handler in the pool thread, one chunk
    at a time: each ``next`` asks the event loop for the next chunk and waits for it. Nothing
    is read ahead, so at most one chunk is held (beyond grpc's flow-control window) and a
    client that sends faster than the handler applies is held back by HTTP/2 flow control."""

    def __init__(self, chunks: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks.__aiter__()
        self._loop = loop
        self._pending: futures.Future[Any] | None = None
        self._closed = False

    async def _next(self) -> Any:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            # (grpc.aio also ends the stream of a call the client cancelled: the handler then
            # answers a client that is gone, having applied the chunks it received, as the
            # sync server does)
            return _END

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise _StreamCancelled()
        self._pending = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        if self._closed:  # closed while it was being scheduled
            self._pending.cancel()
        try:
            chunk = self._pending.result()
        except futures.CancelledError:
            raise _StreamCancelled() from None
        if chunk is _END:
            raise StopIteration
        return chunk

    def close(self) -> None:
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()


_END = object()


def _checkpoint(engine: Engine) -> None:
    try:
        engine.flush()
    except ShardwalkError as exc:  # a closed engine: nothing left to checkpoint
        log.warning("no checkpoint at shutdown: %s", exc)


def _api_key(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            value = value.decode() if isinstance(value, bytes) else value
            return value[7:].strip() if value[:7].lower() == "bearer " else value.strip()
    return None


def _label(who: Principal | None) -> str:
    return "-" if who is None else who.label


def serve(
    data: str,
    config_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    threads: int | None = None,
    grace: float = 30.0,
    aio: bool = False,
    ray: bool | str = False,
    ray_actors: int | None = None,
    announce: Callable[[str], None] = print,
) -> int:
    """``shardwalk serve``: open the data directory, serve until SIGTERM or SIGINT, then
    finish in-flight calls (up to ``grace`` seconds), checkpoint and close. ``ray``: serve the
    partitioned collections from Ray actors (see ``Engine.open``). The metrics endpoint
    (``metrics_port``) listens on ``metrics_host``, 127.0.0.1 unless given."""
    check_port(port)
    if metrics_port is not None:
        check_port(metrics_port, "metrics_port")
    config = load_config(config_path)
    stop = threading.Event()
    with Engine.open(data, threads=threads, ray=ray, ray_actors=ray_actors) as engine:
        # after the engine opened: ray.init installs a SIGTERM handler that exits at once
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        for name in engine.collections():  # loaded now, not by the first call that needs them
            engine.collection(name)
        for name in engine.graphs():
            engine.graph(name)
        # bound but not started: a metrics port in use fails before anything was served
        server = (AioServer if aio else Server)(engine, config, host=host, port=port)
        if metrics_port is not None:
            try:
                httpd, _ = start_http_server(
                    metrics_port, addr=metrics_host, registry=server.registry
                )
                metrics_port = httpd.server_port  # the one picked, for --metrics-port 0
            except OSError as exc:
                server.stop(0)
                raise FailedPreconditionError(
                    f"cannot serve metrics on {metrics_host}:{metrics_port}: "
                    f"{exc.strerror or exc}; choose another --metrics-port"
                ) from None
        server.start()
        scheme = "plaintext"
        if config.tls_cert is not None:
            scheme = "TLS" if config.tls_client_ca is None else "mutual TLS"
        metrics = (
            f"; Prometheus metrics on http://{metrics_host}:{metrics_port}/metrics"
            if metrics_port is not None
            else "; no metrics endpoint (--metrics-port PORT serves one)"
        )
        announce(f"shardwalk serving {data} on {host}:{server.port} ({scheme}){metrics}")
        stop.wait()
        announce("shutting down: finishing in-flight calls, then a checkpoint")
        server.stop(grace)
    return 0

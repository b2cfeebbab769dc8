"""The gRPC server: authentication, error mapping, limits, metrics and logs around the handlers
of :mod:`shardwalk.server.service`, plus the standard health and reflection services.

Every RPC passes through one wrapper (:meth:`Server._wrap`): it authenticates the caller from
the ``authorization`` metadata, parses the request (a message that does not parse is
INVALID_ARGUMENT, never INTERNAL), checks the deadline, runs the handler, maps the library's
exceptions to their status codes with the library's message (anything unexpected is INTERNAL
with a generic message and a logged traceback), and records one log line and the metrics.

The server is synchronous with a thread pool: handlers call the engine, whose reads run in
parallel (bench/server.py compares it with grpc.aio).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from shardwalk.server.config import Config, Principal, load_config
from shardwalk.server.service import Service

from shardwalk.engine import Engine
from shardwalk.errors import DeadlineExceededError, InvalidArgumentError, ShardwalkError
from shardwalk.v1 import shardwalk_pb2 as pb

__all__ = ["SERVICE", "Server", "serve"]

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
}
if hasattr(Service, "compose"):
    _RPCS["Compose"] = (pb.ComposeRequest, Service.compose, False)


class Server:
    """A running shardwalk gRPC server over an engine.

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
        self.engine = engine
        self.config = config
        self.service = Service(engine, config.limits)
        limits = config.limits
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "shardwalk_requests",
            "RPCs handled, by method, tenant and status code",
            ["rpc", "tenant", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "shardwalk_request_seconds",
            "RPC latency, by method and tenant",
            ["rpc", "tenant"],
            registry=self.registry,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.threads, thread_name_prefix="rpc"),
            maximum_concurrent_rpcs=limits.max_concurrent_requests,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
            ],
        )
        handlers = {}
        for name, (request_type, handler, streaming) in _RPCS.items():
            behavior = self._wrap(name, request_type, handler, streaming)
            make = (
                grpc.stream_unary_rpc_method_handler
                if streaming
                else grpc.unary_unary_rpc_method_handler
            )
            handlers[name] = make(behavior)  # raw bytes in and out: parsing is ours
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        address = f"{host}:{port}"
        if config.tls_cert is not None:
            credentials = grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)])
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise InvalidArgumentError(f"cannot listen on {address}: the address is in use")
        self.host = host

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
        try:
            self.engine.flush()
        except ShardwalkError as exc:  # a closed engine: nothing left to checkpoint
            log.warning("no checkpoint at shutdown: %s", exc)

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the one wrapper around every RPC ---------------------------------------------------
    def _wrap(
        self, rpc: str, request_type: Any, handler: Callable[..., Any], streaming: bool
    ) -> Callable[[Any, grpc.ServicerContext], bytes]:
        service = self.service

        def parse(data: bytes) -> Any:
            try:
                return request_type.FromString(data)
            except Exception as exc:  # DecodeError, recursion limits: the client's fault
                raise InvalidArgumentError(
                    f"the {rpc} request is not a valid {request_type.DESCRIPTOR.full_name} "
                    f"message ({type(exc).__name__})"
                ) from None

        def behavior(data: Any, context: grpc.ServicerContext) -> bytes:
            start = time.perf_counter()
            who: Principal | None = None
            code, message, out = grpc.StatusCode.OK, "", b""
            try:
                who = self.config.principal(_api_key(context.invocation_metadata()))
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceededError(f"the deadline of {rpc} passed before it ran")
                request = (parse(d) for d in data) if streaming else parse(data)
                out = handler(service, who, request).SerializeToString()
            except ShardwalkError as exc:
                code, message = grpc.StatusCode[exc.code], exc.message
            except RecursionError:
                code, message = (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{rpc}: request nested too deeply",
                )
            except grpc.RpcError:  # the client went away mid-stream: nobody to answer
                code, message = grpc.StatusCode.CANCELLED, "the call was cancelled"
            except Exception:
                log.exception("%s failed unexpectedly (tenant %s)", rpc, _label(who))
                code = grpc.StatusCode.INTERNAL
                message = f"internal error in {rpc}; the server logged the details"
            self._record(rpc, who, code.name, start)
            if code is not grpc.StatusCode.OK:
                context.abort(code, message)
            return out

        return behavior

    def _record(self, rpc: str, who: Principal | None, code: str, start: float) -> None:
        seconds = time.perf_counter() - start
        tenant = _label(who)
        self._requests.labels(rpc, tenant, code).inc()
        self._latency.labels(rpc, tenant).observe(seconds)
        log.info("rpc=%s tenant=%s status=%s ms=%.2f", rpc, tenant, code, seconds * 1e3)


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
    threads: int | None = None,
    grace: float = 30.0,
    announce: Callable[[str], None] = print,
) -> int:
    """``shardwalk serve``: open the data directory, serve until SIGTERM or SIGINT, then
    finish in-flight calls (up to ``grace`` seconds), checkpoint and close."""
    config = load_config(config_path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Engine.open(data, threads=threads) as engine:
        server = Server(engine, config, host=host, port=port).start()
        if metrics_port is not None:
            start_http_server(metrics_port, addr=host, registry=server.registry)
        scheme = "TLS" if config.tls_cert is not None else "plaintext"
        announce(f"shardwalk serving {data} on {host}:{server.port} ({scheme})")
        stop.wait()
        announce("shutting down: finishing in-flight calls, then a checkpoint")
        server.stop(grace)
    return 0

"""``shardwalk serve``: a data directory over gRPC until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shardwalk.cli.common import add_command, count_type, data_flag, flag_values, require_data_dir
from shardwalk.errors import InvalidArgumentError

__all__ = ["add_serve", "cmd_serve"]


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from shardwalk.server.app import serve

    if args.ray_actors is not None and not (args.ray or args.address):
        raise InvalidArgumentError(
            "--ray-actors sets the actors of each partitioned collection served from Ray: add "
            "--ray (a local Ray) or --address ADDR (a cluster)"
        )
    if args.old_threads is not None:
        if args.engine_threads is not None:
            raise InvalidArgumentError("--threads is the old name of --engine-threads; give one")
        print(
            "shardwalk: note: --threads is deprecated: it is now --engine-threads (the threads "
            "the engine's searches share; the threads running calls are [limits] rpc_threads)",
            file=sys.stderr,
        )
        args.engine_threads = args.old_threads
    if not args.create:
        require_data_dir(args.data, "pass --create to serve a new, empty data directory there")

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return serve(
        args.data,
        args.config,
        threads=args.engine_threads,
        ray=args.address or args.ray,
        announce=lambda line: print(line, flush=True),
        # the flags named as serve()'s parameters
        **flag_values(args, "host", "port", "metrics_port", "metrics_host", "aio", "ray_actors"),
    )


def port_type(text: str) -> int:
    """argparse type of a TCP port (0 picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port from 0 to 65535 (0 picks a free one); got {text!r}"
        )
    return value


def add_serve(sub: Any) -> None:
    p = add_command(
        sub,
        "serve",
        "serve a data directory over gRPC",
        "Serve a data directory over gRPC until SIGTERM/SIGINT (then in-flight calls finish "
        "and every collection is checkpointed). The TOML config maps API keys to tenants or "
        "admin and sets limits and TLS (see shardwalk.server.config). With --ray or --address, "
        "the partitioned collections' partitions live in Ray actors (every node must see the "
        "data directory).",
        run=cmd_serve,
    )
    data_flag(p, "data directory (must exist: made by ingest, build or graph ingest; see --create)")
    p.add_argument(
        "--create",
        action="store_true",
        help="create --data as a new, empty data directory if nothing is there",
    )
    p.add_argument(
        "--config", required=True, help="TOML file: [[api_keys]], [limits], [tls], [server]"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=port_type, default=50051, help="port (0 picks a free one)")
    p.add_argument(
        "--metrics-port",
        type=port_type,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default: no metrics endpoint)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics endpoint listens on (it has no authentication)",
    )
    p.add_argument(
        "--engine-threads",
        type=count_type,
        metavar="N",
        help="threads the engine's searches and builds share (default: the cores); the "
        "threads that run calls are [limits] rpc_threads in --config",
    )
    # the old spelling, read like [limits] threads: still accepted, with a note
    p.add_argument("--threads", type=count_type, dest="old_threads", help=argparse.SUPPRESS)
    p.add_argument("--aio", action="store_true", help="serve with grpc.aio (default: sync)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--ray",
        action="store_true",
        help="serve partitioned collections from Ray actors on a local Ray (127.0.0.1)",
    )
    where.add_argument("--address", default=None, help="... from actors on the Ray cluster at ADDR")
    p.add_argument(
        "--ray-actors",
        type=count_type,
        default=None,
        help="actors per partitioned collection (default: one per CPU, at most one per partition)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="INFO logs failed calls, DEBUG every call",
    )

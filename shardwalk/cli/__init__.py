"""The ``shardwalk`` command: quickstart, ingest, build, search, info, backup, serve, graph
ingest/fingerprints/add-edges/delete-edges/drop, collection drop, ppr, keys new.

A failure prints one line on stderr (what was wrong, with which file or port, what to do) and
exits non-zero; ``--debug`` or ``SHARDWALK_DEBUG=1`` adds the traceback.

One module per command group: :mod:`~shardwalk.cli.quickstart`,
:mod:`~shardwalk.cli.collection` (ingest, search, info, backup, drop),
:mod:`~shardwalk.cli.graph` (graph ingest, fingerprints, edge updates, ppr),
:mod:`~shardwalk.cli.serve`, :mod:`~shardwalk.cli.build`, :mod:`~shardwalk.cli.keys`; what
they share in :mod:`~shardwalk.cli.common` and :mod:`~shardwalk.cli.progress`, failures in
:mod:`~shardwalk.cli.errors`."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import traceback
from collections.abc import Sequence

from shardwalk.cli import build, collection, graph, keys, quickstart, serve
from shardwalk.cli.common import DEBUG_HELP, HelpFormatter, add_group
from shardwalk.cli.errors import debugging, one_line, quiet_ray_notices

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Every command, in the order ``shardwalk --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="shardwalk",
        description="Vector search and graph retrieval engine.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shardwalk {_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    quickstart.add_quickstart(sub)
    collection.add_ingest(sub)
    collection.add_search(sub)
    graph_sub = add_group(
        sub, "graph", "graphs: ingest, fingerprints, add-edges, delete-edges, drop"
    )
    graph.add_graph_commands(graph_sub)
    collection_sub = add_group(sub, "collection", "collections: drop")
    collection.add_drop(graph_sub, "graph", "a graph, its fingerprints and its files")
    collection.add_drop(collection_sub, "collection", "a collection and its files")
    keys.add_keys(sub)
    graph.add_ppr(sub)
    serve.add_serve(sub)
    build.add_build(sub)
    collection.add_backup(sub)
    collection.add_info(sub)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("shardwalk")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        from shardwalk import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure prints one line on stderr and returns a non-zero exit code
    (2 for errors shardwalk raises on purpose, 1 otherwise, 130 on Ctrl-C); ``--debug`` or
    SHARDWALK_DEBUG=1 also prints the traceback."""
    args = build_parser().parse_args(argv)
    debug = debugging(args)
    if not debug:
        quiet_ray_notices()
    try:
        return int(args.run(args))
    except (Exception, KeyboardInterrupt) as exc:
        message, code = one_line(exc)
        if debug:
            traceback.print_exc()
        print(f"shardwalk: error: {message}", file=sys.stderr)
        return code

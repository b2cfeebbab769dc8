"""Commands on graphs: ``graph ingest`` (text edge lists, Parquet, .npy), ``graph
fingerprints`` (in this process or on Ray), ``graph add-edges`` / ``delete-edges`` and
``ppr``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from shardwalk.cli.common import (
    CREATED_IF_MISSING,
    add_command,
    count_type,
    engine_for_writing,
    flag_values,
    input_flags,
    open_existing,
    ray_flags,
    target_flags,
)
from shardwalk.cli.progress import stage_bars, waiting
from shardwalk.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

__all__ = [
    "add_graph_commands",
    "add_ppr",
    "cmd_graph_fingerprints",
    "cmd_graph_ingest",
    "cmd_graph_update",
    "cmd_ppr",
]

_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"


def _graph_format(path: str, fmt: str) -> str:
    """'snap', 'parquet', 'npy-dir' or 'npy-file': the extension or the file's first bytes."""
    if os.path.isdir(path):
        if fmt not in ("auto", "npy"):
            raise InvalidArgumentError(
                f"{path!r} is a directory; --format {fmt} reads a file (a directory holds "
                "edges.npy [+ ids.npy, weights.npy]: --format npy or auto)"
            )
        return "npy-dir"
    with open(path, "rb") as f:
        head = f.read(8)
    if fmt == "npy" or (fmt == "auto" and head.startswith(_NPY_MAGIC)):
        if not head.startswith(_NPY_MAGIC):
            raise InvalidArgumentError(
                f"{path!r} is not a .npy file (no NumPy header); --format npy reads an (E, 2) "
                "or (E, 3) .npy file or a directory of edges.npy [+ ids.npy, weights.npy]"
            )
        return "npy-file"
    if fmt == "parquet" or (
        fmt == "auto" and (path.endswith((".parquet", ".pq")) or head.startswith(_PARQUET_MAGIC))
    ):
        return "parquet"
    return "snap"


def _text_columns(args: argparse.Namespace, *, weighted: bool, verb: str) -> None:
    """A text edge list is 'src dst [weight]': refuse a wider first data line (its other
    columns would be dropped silently) and note a weight column that is not read."""
    from shardwalk.walks.loaders import edge_list_columns

    found = edge_list_columns(
        args.path,
        comment=getattr(args, "comment", "#%"),
        delimiter=args.delimiter,
        skip_rows=args.skip_rows,
    )
    if found is None:
        return
    line, columns = found
    if columns > 3:
        raise InvalidArgumentError(
            f"{args.path!r}: line {line} has {columns} columns; an edge line is 'src dst' or "
            "'src dst weight', so the others would be dropped: keep only those columns (e.g. "
            "cut -f1-3), or if the line is a header, skip it with --skip-rows 1"
        )
    if columns == 3 and not weighted and verb != "delete-edges":
        print(
            f"shardwalk: note: {args.path!r} has a third column (line {line}); it was not read: "
            "pass --weighted to use it as edge weights",
            file=sys.stderr,
        )


def _edges_in_file(args: argparse.Namespace, kind: str) -> int:
    """How many edges the file lists (without reading them all, except text); refuses an
    empty file and notes a weight column or weights.npy that --weighted would read."""
    unused = None
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(args.path, format="parquet")
            count = dataset.count_rows()
        except (pa.ArrowException, OSError) as exc:
            raise InvalidArgumentError(
                f"{args.path!r} is not a Parquet edge table that can be read "
                f"({str(exc).split('. ')[0]}); check the file or give its real --format"
            ) from None
        if "weight" in dataset.schema.names and not args.weighted:
            unused = "a 'weight' column"
    elif kind == "npy-file":
        shape = np.load(args.path, mmap_mode="r", allow_pickle=False).shape
        if len(shape) != 2 or shape[1] not in (2, 3):
            raise InvalidArgumentError(
                f"{args.path!r}: an edge array has shape (E, 2) or (E, 3) (src, dst[, weight]); "
                f"got {shape}"
            )
        count = shape[0]
        if shape[1] == 3 and not args.weighted:
            unused = "a third column (weights)"
    elif kind == "npy-dir":
        edges = os.path.join(args.path, "edges.npy")
        if not os.path.isfile(edges):
            raise NotFoundError(
                f"{args.path!r} has no edges.npy; a graph directory holds edges.npy [+ ids.npy, "
                "weights.npy]"
            )
        count = int(np.load(edges, mmap_mode="r", allow_pickle=False).shape[0])
        if os.path.isfile(os.path.join(args.path, "weights.npy")) and not args.weighted:
            unused = "weights.npy"
    else:
        raise AssertionError(kind)
    if count == 0:
        raise InvalidArgumentError(f"{args.path!r} lists no edges; a graph needs at least one")
    if unused is not None:
        print(
            f"shardwalk: note: {args.path!r} has {unused}; it was not read: pass --weighted to "
            "use it as edge weights",
            file=sys.stderr,
        )
    return count


def _merged(graph: Any, read: int) -> str:
    """What became of the edges read: duplicates merged (for an undirected graph (v, u)
    repeats (u, v)) and self-loops kept, counted from the stored graph."""
    csr = graph.csr
    rows = np.repeat(np.arange(csr.indptr.size - 1), np.diff(csr.indptr))
    loops = int(np.count_nonzero(csr.indices == rows))
    distinct = graph.num_edges if graph.directed else (graph.num_edges + loops) // 2
    weights = " (their weights summed)" if csr.weights is not None else ""
    both = "" if graph.directed else " ((v, u) repeats (u, v) in an undirected graph)"
    return (
        f"read {read:,} edges: {read - distinct:,} duplicates merged{weights}{both}, "
        f"{loops:,} self-loops kept"
    )


def cmd_graph_ingest(args: argparse.Namespace) -> int:
    from shardwalk.walks import load_numpy
    from shardwalk.walks.graph import CSRGraph
    from shardwalk.walks.loaders import read_edge_list

    if not os.path.exists(args.path):
        raise NotFoundError(f"no such file or directory: {args.path!r}")
    kind = _graph_format(args.path, args.format)
    text_options = {
        "--delimiter": args.delimiter is not None,
        "--skip-rows": args.skip_rows != 0,
        "--comment": args.comment != "#%",
    }
    given = [option for option, set_ in text_options.items() if set_]
    if given and kind != "snap":
        raise InvalidArgumentError(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to text edge "
            f"lists; {args.path!r} is read as "
            f"{kind.replace('-', ' ')}"
        )
    options: dict[str, Any] = {"directed": not args.undirected}
    if kind == "parquet":
        if args.weighted:
            options["weight"] = "weight"
    elif kind == "npy-dir":
        options["use_weights"] = args.weighted  # weights.npy, when present and asked for
    if kind == "snap":
        _text_columns(args, weighted=args.weighted, verb="ingest")
        read = 0  # counted once the text is parsed, below
    else:
        read = _edges_in_file(args, kind)
    t0 = time.perf_counter()
    with engine_for_writing(args.data) as engine:
        if args.name in engine.graphs():  # before reading a large file
            raise AlreadyExistsError(
                f"graph {args.name!r} already exists in {args.data!r}; drop it first ('shardwalk "
                f"graph drop --data {args.data} --name {args.name}') or choose another --name"
            )
        with waiting(f"graph {args.name!r}"):
            if kind == "snap":
                src, dst, weights = read_edge_list(
                    args.path,
                    weighted=args.weighted,
                    comment=args.comment,
                    delimiter=args.delimiter,
                    skip_rows=args.skip_rows,
                )
                if src.size == 0:
                    raise InvalidArgumentError(
                        f"{args.path!r} lists no edges (only comments, blank lines or skipped "
                        "rows); a graph needs at least one"
                    )
                read = int(src.size)
                csr = CSRGraph.from_edges(src, dst, weights, directed=not args.undirected)
                del src, dst, weights
                graph = engine.create_graph(args.name, csr)
            elif kind == "npy-file":
                csr = load_numpy(args.path, use_weights=args.weighted, directed=not args.undirected)
                graph = engine.create_graph(args.name, csr)
            else:
                fmt = {"npy-dir": "npy"}.get(kind, kind)
                graph = engine.load_graph(args.name, args.path, format=fmt, **options)
        print(
            f"graph {args.name!r}: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges "
            f"({'directed' if graph.directed else 'undirected, stored both ways'}"
            f"{', weighted' if graph.csr.weights is not None else ''}) "
            f"in {time.perf_counter() - t0:.1f}s; {_merged(graph, read)}"
        )
    return 0


def _hubs(value: str) -> int | str:
    """--hubs: "auto" or a count."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected auto or a count >= 0; got {value!r}")
    return count


def _walk_options(args: argparse.Namespace, hubs: Any) -> dict[str, Any]:
    """The fingerprints' settings, the same in this process and on Ray."""
    given = flag_values(args, "walks_per_node", "alpha", "seed", "dangling", "top_k", "hub_walks")
    return {**given, "hubs": hubs}


def _fingerprints_on_ray(args: argparse.Namespace, hubs: Any) -> int:
    from shardwalk.jobs import build_fingerprints

    with stage_bars(f"fingerprints of {args.name!r} on Ray") as progress:
        stats = build_fingerprints(
            args.data,
            args.name,
            **_walk_options(args, hubs),
            mode=args.mode,
            num_workers=args.num_workers,
            address=args.address,
            progress=progress,
        )
    print(
        f"fingerprints of {args.name!r} on Ray ({args.mode}, {stats['workers']} workers): "
        f"R={args.walks_per_node}, alpha={args.alpha}, {stats['seconds']:.2f}s, "
        f"{stats['nbytes'] / 2**20:.1f} MiB"
    )
    return 0


def cmd_graph_fingerprints(args: argparse.Namespace) -> int:
    on_ray = bool(args.ray or args.address)
    ignored = [f for f, v in (("--mode", args.mode), ("--num-workers", args.num_workers)) if v]
    if ignored and not on_ray:
        raise InvalidArgumentError(
            f"{' and '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} to a build "
            "on Ray: add --ray (a local Ray) or --address ADDR (a cluster); without them the "
            "fingerprints are built in this process on every core"
        )
    args.mode = args.mode or "replicated"
    hubs = None if args.hubs in ("0", "none") else "auto" if args.hubs == "auto" else int(args.hubs)
    with open_existing(args.data) as engine:  # a mistyped --data creates nothing
        graph = engine.graph(args.name)
        if graph.num_nodes == 0:
            raise FailedPreconditionError(
                f"graph {args.name!r} has no nodes, so there is nothing to fingerprint; add "
                "edges first ('shardwalk graph add-edges')"
            )
        if not on_ray:
            with stage_bars(f"fingerprints of {args.name!r}") as progress:
                stats = graph.build_fingerprints(**_walk_options(args, hubs), progress=progress)
    if on_ray:  # the job opens the data directory itself
        return _fingerprints_on_ray(args, hubs)
    print(
        f"fingerprints of {args.name!r}: R={args.walks_per_node}, alpha={args.alpha}, "
        f"{stats['seconds']:.2f}s, {stats['steps_per_second'] / 1e6:.1f}M steps/s, "
        f"{stats['nbytes'] / 2**20:.1f} MiB"
    )
    return 0


def _read_edges(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The edges of an add-edges / delete-edges file: (src, dst, weights or None)."""
    from shardwalk.walks.loaders import read_edge_list

    weighted = bool(getattr(args, "weighted", False))
    if not os.path.isfile(args.path):
        raise NotFoundError(f"no such file: {args.path!r}")
    with open(args.path, "rb") as f:
        head = f.read(8)
    if head.startswith(_NPY_MAGIC):
        arr = np.load(args.path, allow_pickle=False)
        if arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise InvalidArgumentError(
                f"{args.path}: an edge array has shape (E, 2) or (E, 3) (src, dst[, weight]); "
                f"got {arr.shape}"
            )
        ids = arr[:, :2]
        if ids.dtype.kind == "f":
            if not np.all(np.isfinite(ids) & (ids == np.round(ids))):
                raise InvalidArgumentError(f"{args.path}: node ids must be whole numbers")
            ids = ids.astype(np.int64)
        weights = arr[:, 2].astype(np.float64) if weighted and arr.shape[1] == 3 else None
        if weighted and weights is None:
            raise InvalidArgumentError(f"{args.path}: --weighted needs an (E, 3) array")
        return ids[:, 0], ids[:, 1], weights
    _text_columns(args, weighted=weighted, verb=args.graph_command)
    src, dst, weights = read_edge_list(
        args.path, weighted=weighted, delimiter=args.delimiter, skip_rows=args.skip_rows
    )
    if src.size == 0:
        raise InvalidArgumentError(f"{args.path!r} lists no edges; nothing to do")
    return src, dst, weights


def cmd_graph_update(args: argparse.Namespace) -> int:
    """add-edges / delete-edges: apply a file of edges in batches, each one durable."""
    src, dst, weights = _read_edges(args)
    batch = args.batch_size
    if batch < 1:
        raise InvalidArgumentError(f"--batch-size must be >= 1; got {batch}")
    t0 = time.perf_counter()
    totals = {"edges": 0, "nodes_added": 0, "walks": 0, "steps": 0, "batches": 0}
    dropped = ""  # what the update that dropped fingerprints without walks said
    with open_existing(args.data) as engine:
        graph = engine.graph(args.name)
        for lo in range(0, src.shape[0], batch):
            edges = (src[lo : lo + batch], dst[lo : lo + batch])
            if args.graph_command == "add-edges":
                w = None if weights is None else weights[lo : lo + batch]
                out = graph.upsert_edges(edges, w)
            else:
                out = graph.delete_edges(edges)
            totals["batches"] += 1
            if out.get("fingerprints_dropped"):
                dropped = out["fingerprints"]
            for key in ("edges", "nodes_added", "walks", "steps"):
                totals[key] += int(out.get(key, 0))
        nodes, edges_now = graph.num_nodes, graph.num_edges
    seconds = time.perf_counter() - t0
    verb = "added or updated" if args.graph_command == "add-edges" else "deleted"
    repair = (
        f"fingerprints {dropped}"
        if dropped
        else f"fingerprint repair: {totals['walks']:,} walks re-simulated, "
        f"{totals['steps']:,} steps"
    )
    print(
        f"graph {args.name!r}: {totals['edges']:,} edges {verb} in {totals['batches']} "
        f"batch(es), {totals['nodes_added']:,} new nodes, {seconds:.2f}s; {repair}; now "
        f"{nodes:,} nodes, {edges_now:,} edges"
    )
    return 0


def cmd_ppr(args: argparse.Namespace) -> int:
    if args.method is not None and args.accuracy is not None:
        raise InvalidArgumentError(
            f"give --method or --accuracy, not both (--accuracy {args.accuracy} lets the engine "
            f"pick the method and its parameters; --method {args.method} names one)"
        )
    seeds: Any = args.seed[0] if len(args.seed) == 1 else list(args.seed)
    # only what was given: None means the graph's own default (its fingerprints' alpha and rule)
    rules = {"alpha": args.alpha, "dangling": args.dangling}
    rules = {key: value for key, value in rules.items() if value is not None}
    with open_existing(args.data) as engine:
        result = engine.graph(args.graph).ppr(
            seeds, k=args.k, method=args.method, accuracy=args.accuracy, **rules
        )
    # the alpha and rule that were used (results carry them once Graph.ppr takes them)
    used = {key: getattr(result, key) for key in ("alpha", "dangling") if hasattr(result, key)}
    if args.json:
        print(
            json.dumps(
                {
                    "ids": result.ids[0].tolist(),
                    "scores": [float(x) for x in result.scores[0]],
                    "error": float(result.error[0]),
                    "method": result.method,
                    **used,
                    "seconds": result.seconds,
                }
            )
        )
    else:
        for node, score in zip(result.ids[0].tolist(), result.scores[0].tolist()):
            if node >= 0:
                print(f"{node}\t{score:.6g}")
        settings = "".join(f", {key} {value}" for key, value in used.items())
        print(
            f"{result.method}{settings}: error estimate {float(result.error[0]):.3g}, "
            f"{result.seconds * 1e3:.2f} ms",
            file=sys.stderr,
        )
    return 0


# -- parsers ------------------------------------------------------------------------------------
# the walks' rules when none is given: a build's defaults (Graph.build_fingerprints'), and what a
# query falls back on when its graph has no fingerprints
_ALPHA = 0.15
_DANGLING = "self_loop"
_GRAPHS_OWN = "default: the graph's, that of its fingerprints or"


def _alpha_flag(p: argparse.ArgumentParser, *, query: bool) -> None:
    """--alpha, the walks' stop probability: a build's, or a query's (None: the graph's own)."""
    help = f"stop probability ({_GRAPHS_OWN} {_ALPHA})" if query else "stop probability"
    p.add_argument("--alpha", type=float, default=None if query else _ALPHA, help=help)


def _dangling_flag(p: argparse.ArgumentParser, *, query: bool) -> None:
    """--dangling, the walks' rule at a node without out-edges: a build's, or a query's (None:
    the graph's own), which may also restart from the seeds of a graph built with 'drop'."""
    if query:
        rules = [_DANGLING, "drop", "restart"]
        help = f"dangling-node rule ({_GRAPHS_OWN} {_DANGLING})"
    else:
        rules = [_DANGLING, "drop"]
        help = "dangling-node rule ('drop' also serves restart queries)"
    p.add_argument("--dangling", default=None if query else _DANGLING, choices=rules, help=help)


def _text_flags(p: argparse.ArgumentParser, delimiter: str, skip_rows: str) -> None:
    """--delimiter and --skip-rows of a text edge list, as :func:`_text_columns` and
    ``read_edge_list`` take them (``delimiter``, ``skip_rows``: their help)."""
    p.add_argument("--delimiter", default=None, help=delimiter)
    p.add_argument("--skip-rows", type=int, default=0, metavar="N", help=skip_rows)


def add_graph_commands(graph_sub: Any) -> None:
    """``graph ingest``, ``fingerprints``, ``add-edges`` and ``delete-edges`` (``graph_sub``:
    the subparsers of ``shardwalk graph``)."""
    g = add_command(
        graph_sub,
        "ingest",
        "load a SNAP/CSV edge list, Parquet, an edges .npy file or an edges.npy directory",
        "Load a graph: a text edge list 'src dst [weight]' (SNAP, CSV; plain, gzip, bz2 or "
        "zstd; '#' and '%' comment lines), Parquet with src, dst [, weight] columns, an (E, 2) "
        "or (E, 3) .npy file of (src, dst [, weight]) rows, or a directory of edges.npy "
        "[+ ids.npy, weights.npy]. A failed ingest leaves nothing behind.",
        run=cmd_graph_ingest,
    )
    input_flags(
        g,
        "edge file or directory",
        "--name",
        "graph name",
        CREATED_IF_MISSING,
        formats=["snap", "parquet", "npy"],
        format_help="auto: directory -> npy, .npy header -> npy, .parquet/.pq -> parquet, else snap",
    )
    g.add_argument("--undirected", action="store_true", help="store every edge both ways")
    g.add_argument(
        "--weighted",
        action="store_true",
        help="read edge weights (third column, 'weight' column or weights.npy; > 0)",
    )
    _text_flags(
        g,
        "text column separator (default: any whitespace)",
        "text: data lines to skip after the comments (headers such as 'src,dst')",
    )
    g.add_argument(
        "--comment", default="#%", help="text: lines starting with one of these are skipped"
    )
    g = add_command(
        graph_sub, "fingerprints", "build Monte Carlo PPR fingerprints", run=cmd_graph_fingerprints
    )
    target_flags(g, "--name", "graph name")
    g.add_argument("--walks-per-node", type=count_type, default=10, help="R, walks from every node")
    _alpha_flag(g, query=False)
    g.add_argument("--seed", type=int, default=0, help="random seed of the walks")
    _dangling_flag(g, query=False)
    g.add_argument(
        "--top-k",
        type=count_type,
        default=None,
        metavar="K",
        help="keep only each node's K largest visit counts (default: keep them all)",
    )
    g.add_argument(
        "--hubs",
        default="auto",
        type=_hubs,
        help="hubs with rows of their own: a number, auto (20%% of in-links, <= 1%% of nodes) or 0",
    )
    g.add_argument("--hub-walks", type=count_type, default=1000, help="walks per hub row")
    ray_flags(g, "tasks at once on Ray (default: one per CPU of the Ray cluster)")
    g.add_argument(
        "--mode",
        default=None,
        choices=["replicated", "sharded"],
        help="on Ray: every task holds the graph (replicated) or shard actors each hold a part "
        "(default: replicated)",
    )

    for verb, what in (("add-edges", "add edges (or new weights) from a file"),
                       ("delete-edges", "delete the edges listed in a file")):  # fmt: skip
        g = add_command(
            graph_sub,
            verb,
            what,
            f"{what[0].upper()}{what[1:]}: a text edge list 'src dst"
            f"{' [weight]' if verb == 'add-edges' else ''}' (SNAP, CSV; plain or compressed) or "
            "an (E, 2) / (E, 3) .npy array. Each batch is durable (write-ahead log) before the "
            "next; a bad batch changes nothing and stops the command.",
            run=cmd_graph_update,
        )
        input_flags(g, "edge file", "--name", "graph name")
        if verb == "add-edges":
            g.add_argument("--weighted", action="store_true", help="read weights (third column)")
        g.add_argument(
            "--batch-size", type=count_type, default=100_000, help="edges per durable batch"
        )
        _text_flags(g, "text column separator", "header lines")


def add_ppr(sub: Any) -> None:
    p = add_command(sub, "ppr", "personalized PageRank from seed nodes", run=cmd_ppr)
    target_flags(p, "--graph", "graph name")
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        required=True,
        help="seed node id (repeat for several, equally weighted)",
    )
    p.add_argument("--k", type=count_type, default=20, help="top nodes to print")
    p.add_argument(
        "--method",
        default=None,
        choices=["hybrid", "fingerprint", "push", "exact"],
        help="default: chosen by --accuracy",
    )
    p.add_argument(
        "--accuracy",
        default=None,
        choices=["fast", "high"],
        help="let the engine pick method and parameters (default fast; not with --method)",
    )
    _alpha_flag(p, query=True)
    _dangling_flag(p, query=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")

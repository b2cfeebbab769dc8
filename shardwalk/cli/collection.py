"""Commands on collections: ``ingest`` (check every row of a file, then write it), ``search``,
``info``, ``backup`` of a whole data directory, and ``collection drop`` / ``graph drop``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from shardwalk.cli.common import (
    CREATED_IF_MISSING,
    INDEXES,
    METRICS,
    add_command,
    column_args,
    count_type,
    data_flag,
    engine_for_writing,
    flag_values,
    input_flags,
    open_existing,
    param_errors,
    param_flag,
    parse_params,
    target_flags,
)
from shardwalk.cli.progress import progress_bar, waiting
from shardwalk.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError

__all__ = [
    "add_backup",
    "add_drop",
    "add_info",
    "add_ingest",
    "add_search",
    "cmd_backup",
    "cmd_drop",
    "cmd_info",
    "cmd_ingest",
    "cmd_search",
]


def _preview(values: Sequence[int] | np.ndarray) -> str:
    """The first five values, and how many there are when more."""
    shown = ", ".join(str(v) for v in list(values[:5]))
    return shown + (f", ... ({len(values):,} in all)" if len(values) > 5 else "")


def _rows(rows: np.ndarray, one: str, many: str) -> str:
    """ "row 2 holds" or "rows 2, 5 hold": the rows and the verb that agrees with them."""
    return f"row {rows[0]} {one}" if rows.size == 1 else f"rows {_preview(rows)} {many}"


def _check_source(source: Any, path: str, *, name: str, dim: int, metric: str, known: Any) -> Any:
    """Read the whole file once and check every row as an upsert would, before anything is
    written: dimension, finite values, non-zero vectors for cosine, ids (non-negative, distinct
    in the file), tenant names, attribute types (against each other and the collection's).
    Returns every id, in file order."""
    from shardwalk.attributes import attribute_table, tenant_array
    from shardwalk.validation import check_ids

    label = os.path.basename(path)
    types: dict[str, str] = dict(known.stats()["attributes"]) if known is not None else {}
    id_chunks = []
    bar = progress_bar(source.count, f"check {label}")
    try:
        start = 0
        for batch in source.batches:
            n = batch.vectors.shape[0]
            if batch.vectors.shape[1] != dim:
                target = f"collection {name!r} expects" if known is not None else "expected"
                raise InvalidArgumentError(
                    f"{path!r} has vectors of dimension {batch.vectors.shape[1]}; {target} {dim}"
                )
            finite = np.isfinite(batch.vectors).all(axis=1)
            if not finite.all():
                bad = start + np.flatnonzero(~finite)
                raise InvalidArgumentError(
                    f"{path!r}: {_rows(bad, 'holds', 'hold')} NaN or infinite values (or values "
                    "beyond float32 range); clean or drop them (rows count from 0); nothing was "
                    "written"
                )
            if metric == "cosine":
                zero = start + np.flatnonzero(~batch.vectors.any(axis=1))
                if zero.size:
                    raise InvalidArgumentError(
                        f"{path!r}: {_rows(zero, 'is', 'are')} all zeros; cosine distance needs "
                        "non-zero vectors (rows count from 0); nothing was written"
                    )
            id_chunks.append(check_ids(batch.ids, what=f"ids ({source.describe_ids()})"))
            if batch.tenants is not None:
                tenant_array(batch.tenants, n)
            for field in attribute_table(batch.attributes or None, n).schema:
                kind, seen = str(field.type), types.get(field.name)
                if seen is None or seen == "null":  # all values missing so far: any type fits
                    types[field.name] = kind
                elif kind not in (seen, "null"):
                    where = f"collection {name!r}" if known is not None else "the rows before"
                    raise InvalidArgumentError(
                        f"{path!r}: attribute {field.name!r} holds {kind} in the rows from {start}; "
                        f"it holds {seen} in {where}"
                    )
            start += n
            bar.update(n)
    finally:
        bar.close()
    ids = np.concatenate(id_chunks) if id_chunks else np.zeros(0, np.int64)
    ordered = np.sort(ids)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated.size:
        raise InvalidArgumentError(
            f"{path!r}: ids ({source.describe_ids()}) repeat: {_preview(repeated)}; each id may "
            "appear once in a file"
        )
    return ids


def _resolve_creation(args: argparse.Namespace, params: dict[str, Any], existing: Any) -> None:
    """--metric, --index and --param apply when creating; refuse ones an existing collection
    contradicts instead of ignoring them."""
    if existing is None:
        return
    given = {"metric": args.metric, "index": args.index}
    actual = {"metric": existing.metric, "index": existing.index_kind}
    for option, value in given.items():
        if value is not None and value != actual[option]:
            raise InvalidArgumentError(
                f"collection {args.collection!r} exists with {option} {actual[option]!r}; "
                f"--{option} {value} applies only when creating a collection (drop it first: "
                f"'shardwalk collection drop --data {args.data} --name {args.collection}', or "
                "use another --collection)"
            )
    for key, value in params.items():
        if existing.params.get(key) != value:
            raise InvalidArgumentError(
                f"collection {args.collection!r} exists with index parameters "
                f"{existing.params}; --param {key}={value} applies only when creating a "
                "collection"
            )


def cmd_ingest(args: argparse.Namespace) -> int:
    from shardwalk.formats import open_vectors
    from shardwalk.validation import check_index_params

    params = parse_params(args.param)
    source = open_vectors(
        args.path,
        batch_size=args.batch,
        **flag_values(args, "format", "limit", "id_offset", "hdf5_dataset"),
        **column_args(args),
    )
    if source.count == 0:
        raise InvalidArgumentError(f"{args.path!r} has no rows; nothing to ingest")
    name = args.collection
    with engine_for_writing(args.data) as engine:
        existing = engine.collection(name) if name in engine.collections() else None
        _resolve_creation(args, params, existing)
        if existing is None:
            with param_errors(args.param):
                check_index_params(args.index or "hnsw", params)
        dim = existing.dim if existing is not None else source.dim
        metric = existing.metric if existing is not None else (args.metric or "l2")
        ids = _check_source(source, args.path, name=name, dim=dim, metric=metric, known=existing)
        replaced = 0
        if existing is not None and len(existing):
            clashes = [i for i in ids.tolist() if i in existing]
            if clashes and not args.upsert:
                if source.id_column is None:
                    hint = (
                        "pass --id-offset N to number this file's rows from N (ids N.."
                        f"N+{source.count - 1}), or --upsert to replace the stored vectors of "
                        "those ids"
                    )
                else:
                    hint = (
                        "pass --upsert to replace the stored vectors of those ids, or give the "
                        f"rows other ids in column {source.id_column!r} (--id-offset numbers "
                        "only files without an id column)"
                    )
                raise AlreadyExistsError(
                    f"collection {name!r} already has {len(clashes):,} of the {ids.size:,} ids "
                    f"of {args.path!r} ({_preview(clashes)}; ids from "
                    f"{source.describe_ids()}); nothing was written: {hint}"
                )
            replaced = len(clashes)
        if existing is None:
            collection = engine.create_collection(
                name, dim=dim, metric=metric, index=args.index or "hnsw", **params
            )
        else:
            collection = existing
        written = 0
        bar = progress_bar(source.count, f"ingest {os.path.basename(args.path)}")
        t0 = time.perf_counter()
        try:
            for batch in source.batches:
                collection.upsert(
                    batch.ids,
                    batch.vectors,
                    tenants=batch.tenants,
                    attributes=batch.attributes or None,
                )
                written += batch.ids.size
                bar.update(batch.ids.size)
            bar.close()
            with waiting(f"checkpoint {name!r}"):
                collection.flush()
        except BaseException:
            bar.close()  # before the messages below (closing twice is harmless)
            if existing is None:  # a collection this command created goes too
                try:
                    engine.drop_collection(name)
                except Exception as exc:
                    print(f"shardwalk: could not drop {name!r}: {exc}", file=sys.stderr)
            elif written:
                print(
                    f"shardwalk: {written:,} of {source.count:,} vectors were written to "
                    f"{name!r} before the failure below",
                    file=sys.stderr,
                )
            raise
        seconds = time.perf_counter() - t0
        note = f", {replaced:,} replaced" if replaced else ""
        print(
            f"ingested {source.count:,} vectors of dimension {dim} into {name!r} "
            f"({len(collection):,} in all; ids from {source.describe_ids()}{note}) "
            f"in {seconds:.1f}s"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from shardwalk.validation import check_search_params

    params = parse_params(args.param)
    if args.queries and args.id is not None:
        raise InvalidArgumentError(
            "give --queries FILE or --id ID, not both (--queries searches with the file's "
            "vectors, --id with the stored vector of one id)"
        )
    if args.limit is not None and not args.queries:
        raise InvalidArgumentError("--limit counts the queries of a --queries file; give one")
    with open_existing(args.data) as engine:
        collection = engine.collection(args.collection)
        with param_errors(args.param):
            check_search_params(collection.index_kind, params)
        if args.queries:
            from shardwalk.formats import open_vectors

            source = open_vectors(args.queries, limit=args.limit)
            queries = np.concatenate([b.vectors for b in source.batches])
        elif args.id is not None:
            queries = collection.get(args.id).vectors
        else:
            raise InvalidArgumentError("give --queries FILE or --id ID (search by a stored vector)")
        t0 = time.perf_counter()
        result = collection.search(queries, k=args.k, **params)
        seconds = time.perf_counter() - t0
        if args.json:
            for i in range(queries.shape[0]):
                print(
                    json.dumps(
                        {
                            "query": i,
                            "ids": result.ids[i].tolist(),
                            "distances": [float(d) for d in result.distances[i]],
                        }
                    )
                )
        else:
            for i in range(queries.shape[0]):
                pairs = ", ".join(
                    f"{id_}:{d:.4g}"
                    for id_, d in zip(result.ids[i].tolist(), result.distances[i])
                    if id_ >= 0
                )
                print(f"query {i}: {pairs}")
            print(f"{queries.shape[0]} queries in {seconds * 1e3:.1f} ms", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_existing(args.data) as engine:
        names = [args.collection] if args.collection else engine.collections()
        info = {
            "path": engine.path,
            "collections": [engine.collection(n).stats() for n in names],
            "graphs": [] if args.collection else [engine.graph(n).stats() for n in engine.graphs()],
        }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        engine = open_existing(args.data)
    except FailedPreconditionError as exc:  # held by a server (or another process)
        raise FailedPreconditionError(
            f"{exc} ('shardwalk backup' opens the data directory itself, so no other process "
            "may have it open; to back up a directory a server serves, use the server's Backup "
            "RPC with an admin key: client.backup(dest) in Python)"
        ) from exc
    with engine:
        report = engine.backup(args.dest, link=not args.copy)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"backed up {len(report['collections'])} collections and {len(report['graphs'])} "
            f"graphs into {report['destination']} ({report['linked']} files linked, "
            f"{report['copied']} copied, {report['bytes_copied']:,} bytes) in "
            f"{report['seconds']:.2f} s; restore: open it as a data directory (--data "
            f"{report['destination']})"
        )
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    """collection drop / graph drop: delete one collection or graph and its files."""
    kind = "graph" if args.command == "graph" else "collection"
    with open_existing(args.data) as engine:
        if kind == "collection":
            names = engine.collections()
            size = f"{len(engine.collection(args.name)):,} vectors" if args.name in names else ""
            engine.drop_collection(args.name)
        else:
            names = engine.graphs()
            if args.name in names:
                graph = engine.graph(args.name)
                size = f"{graph.num_nodes:,} nodes, {graph.num_edges:,} edges"
            engine.drop_graph(args.name)
    print(f"dropped {kind} {args.name!r} ({size}) from {args.data}")
    return 0


# -- parsers ------------------------------------------------------------------------------------
def add_ingest(sub: Any) -> None:
    p = add_command(
        sub,
        "ingest",
        "load vectors from .npy, Parquet, HDF5, .fvecs/.bvecs/.ivecs",
        "Load vectors into a collection (created if missing). Ids come from the Parquet id "
        "column, or are row numbers plus --id-offset. Every row is checked before anything is "
        "written; ids the collection already has are refused unless --upsert is given. A "
        "failed ingest leaves nothing behind.",
        run=cmd_ingest,
    )
    input_flags(
        p,
        "file of vectors",
        "--collection",
        "collection name (created if missing)",
        CREATED_IF_MISSING,
        formats=["npy", "parquet", "hdf5", "fvecs", "ivecs", "bvecs"],
        format_help="file format (auto: from the extension)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=METRICS,
        help="distance of a new collection (default: l2)",
    )
    p.add_argument(
        "--index", default=None, choices=INDEXES, help="index of a new collection (default: hnsw)"
    )
    param_flag(
        p,
        "index parameter of a new collection, read as int, float, true/false or string, "
        "e.g. --param m=16 --param ef_construction=200, --param quantization=sq8",
    )
    p.add_argument(
        "--id-column",
        default=None,
        help="Parquet column of the int64 ids (default: 'id' when the file has it)",
    )
    p.add_argument(
        "--id-offset",
        type=int,
        default=None,
        metavar="N",
        help="files without ids: row r gets id N + r (default: 0)",
    )
    p.add_argument(
        "--upsert",
        action="store_true",
        help="replace the stored vectors of ids the collection already has (refused otherwise)",
    )
    p.add_argument("--batch", type=count_type, default=10_000, help="vectors per write")
    p.add_argument("--limit", type=count_type, default=None, help="ingest only the first N vectors")
    p.add_argument("--vector-column", default="vector", help="Parquet column of the vectors")
    p.add_argument("--tenant-column", default=None, help="Parquet column of the owner tenants")
    p.add_argument("--hdf5-dataset", default="train", help="HDF5 dataset to read")


def add_search(sub: Any) -> None:
    p = add_command(sub, "search", "k nearest neighbours of query vectors", run=cmd_search)
    target_flags(p, "--collection", "collection name")
    p.add_argument("--queries", help="file of query vectors (any ingest format)")
    p.add_argument("--id", type=int, help="search with the stored vector of this id")
    p.add_argument("--limit", type=count_type, default=None, help="only the first N queries")
    p.add_argument("--k", type=count_type, default=10, help="neighbours per query")
    param_flag(
        p,
        "search parameter, read as int, float, true/false or string, e.g. --param ef=128",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per query")


def add_drop(parent: Any, kind: str, what: str) -> None:
    """``collection drop`` or ``graph drop`` (``parent``: the group's subparsers)."""
    d = add_command(
        parent,
        "drop",
        f"delete {what}",
        f"Delete {what} from a data directory no server has open (a server drops one with "
        f"Drop{kind.title()}, admin key).",
        run=cmd_drop,
    )
    target_flags(d, "--name", f"{kind} name")


def add_backup(sub: Any) -> None:
    p = add_command(
        sub,
        "backup",
        "copy a data directory no server has open into a new directory",
        "Copy a data directory into DEST (a new or empty directory): every collection and graph "
        "is checkpointed, its immutable files are hard-linked (same filesystem) or copied and "
        "fsynced, and the manifest is written last; restore by using DEST as the data "
        "directory. This command opens the data directory itself, so no other process may "
        "have it open: a running server holds its lock. To back up a served directory online, "
        "use the server's Backup RPC (admin key; client.backup(dest) in Python). An "
        "interrupted backup leaves DEST with BACKUP-INCOMPLETE and no manifest.json, which "
        "opening refuses.",
        run=cmd_backup,
    )
    p.add_argument("dest", help="new or empty directory to copy into")
    data_flag(p, "data directory (must exist, not open elsewhere)")
    p.add_argument(
        "--copy",
        action="store_true",
        help="copy every byte even on the same filesystem (default: hard-link immutable files)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_info(sub: Any) -> None:
    p = add_command(sub, "info", "collections, graphs and their statistics", run=cmd_info)
    data_flag(p)
    p.add_argument("--collection", help="only this collection")

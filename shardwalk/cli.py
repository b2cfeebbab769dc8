"""The ``shardwalk`` command: quickstart, ingest, build, search, info, backup, serve, graph
ingest/fingerprints/add-edges/delete-edges/drop, collection drop, ppr, keys new.

A failure prints one line on stderr (what was wrong, with which file or port, what to do) and
exits non-zero; ``--debug`` or ``SHARDWALK_DEBUG=1`` adds the traceback."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.metadata
import json
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from shardwalk.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ShardwalkError,
)
from shardwalk.storage import MANIFEST

__all__ = ["main"]


def _progress(total: int | None, label: str, unit: str = "vectors") -> Any:
    """A tqdm progress bar on stderr, drawn only when stderr is a terminal (piped or
    redirected output gets none). Close it (or use it as a context manager) when done."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=not _on_terminal(),
        leave=False,
        dynamic_ncols=True,
    )


def _on_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


@contextlib.contextmanager
def _waiting(label: str) -> Iterator[None]:
    """Seconds elapsed on stderr while one long library call runs (a build, fingerprints),
    on a terminal only: the call reports no fractions, so this shows it is alive and how long
    it has taken."""
    if not _on_terminal():
        yield
        return
    import threading

    bar = _progress(None, label, unit="s")
    bar.bar_format = "{desc}: {elapsed}"
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()


# what the stages of the library's progress callbacks count (shardwalk.jobs, Graph)
_STAGE_UNITS = {"scan": "rows", "assign": "rows", "build": "indexes", "walks": "walks",
                "hub walks": "walks"}  # fmt: skip


@contextlib.contextmanager
def _stage_bars(label: str) -> Iterator[Any]:
    """A progress callback for a library call (``progress(stage, done, total)``) that draws
    one tqdm bar per stage on stderr, on a terminal only; None when stderr is not one (the
    library then reports nothing). The bar of a stage closes when the next stage starts, and
    the last one when the call returns or fails."""
    if not _on_terminal():
        yield None
        return
    current: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if current.get("stage") != stage:
            if current:
                current["bar"].close()
            current["stage"] = stage
            current["bar"] = _progress(total, f"{label}: {stage}", _STAGE_UNITS.get(stage, "it"))
        current["bar"].update(done - current["bar"].n)

    try:
        yield progress
    finally:
        if current:
            current["bar"].close()


# -- parameters ---------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    """An int, else a finite float, else true/false, else the string itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):  # "nan", "inf" stay strings: no parameter takes them
            return number
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InvalidArgumentError(
                f"--param takes NAME=VALUE (e.g. m=16, quantization=sq8); got {item!r}"
            )
        if name in params:
            raise InvalidArgumentError(f"--param {name} is given twice")
        params[name] = _parse_value(value)
    return params


def _with_param_types(exc: InvalidArgumentError, items: Sequence[str]) -> InvalidArgumentError:
    """The engine's error about a --param, plus how the command line read that value."""
    message = str(exc)
    notes = []
    for item in items:
        name, _, raw = item.partition("=")
        if f"parameter {name} " in message or f"parameter {name!r}" in message:
            value = _parse_value(raw)
            notes.append(f"--param {item} was read as {type(value).__name__} {value!r}")
    if not notes:
        return exc
    return InvalidArgumentError(f"{message} ({'; '.join(notes)})")


# -- data directories ---------------------------------------------------------------------------
def _open_existing(path: str) -> Any:
    """Open a data directory that must exist already (a mistyped --data creates nothing)."""
    from shardwalk import Engine

    if not os.path.isfile(os.path.join(path, MANIFEST)):
        there = _what_is_there(path)
        raise NotFoundError(
            f"no shardwalk data directory at {path!r} (no {MANIFEST}; {there}); check --data, "
            "or create one with 'shardwalk ingest' or 'shardwalk graph ingest'"
        )
    return Engine.open(path)


def _what_is_there(path: str) -> str:
    if os.path.isdir(path):
        return "the directory exists"
    return "a file is there" if os.path.lexists(path) else "nothing is there"


@contextlib.contextmanager
def _engine_for_writing(path: str) -> Iterator[Any]:
    """Open (or create) a data directory; if the body fails, remove what opening created."""
    from shardwalk import Engine

    root = os.path.abspath(path)
    created = None  # the topmost directory this call creates (parents included)
    probe = root
    while not os.path.lexists(probe):
        created, probe = probe, os.path.dirname(probe)
    had_manifest = os.path.isfile(os.path.join(root, MANIFEST))
    engine = None
    try:
        engine = Engine.open(path)
        yield engine
    except BaseException:
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif not had_manifest and os.path.isdir(root):
            # an existing directory that was not a data directory: take back only our files
            for name in (MANIFEST, "LOCK"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))
            for name in ("collections", "graphs"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(root, name))
        raise
    engine.close()


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


# -- quickstart ---------------------------------------------------------------------------------
def cmd_quickstart(args: argparse.Namespace) -> int:
    from shardwalk import Engine
    from shardwalk.datasets import clustered_vectors
    from shardwalk.index import exact_search

    out = sys.stdout
    t0 = time.perf_counter()
    data = clustered_vectors(args.n, args.dim, queries=args.queries, tenants=20, seed=args.seed)
    print(
        f"generated {args.n:,} clustered vectors of dimension {args.dim} with 20 tenants and "
        f"attributes (year, score, lang, tags), {args.queries:,} queries, seed {args.seed} "
        f"[{time.perf_counter() - t0:.1f}s]",
        file=out,
    )
    path = os.path.abspath(args.data)
    with Engine.open(path) as engine:
        if "quickstart" in engine.collections():
            engine.drop_collection("quickstart")
        collection = engine.create_collection(
            "quickstart", dim=args.dim, metric="l2", index=args.index
        )
        bar = _progress(args.n, "upsert")
        try:
            t0 = time.perf_counter()
            for start in range(0, args.n, args.batch):
                stop = min(args.n, start + args.batch)
                collection.upsert(
                    data.ids[start:stop],
                    data.vectors[start:stop],
                    tenants=data.tenants[start:stop],
                    attributes={n: v[start:stop] for n, v in data.attributes.items()},
                )
                bar.update(stop - start)
        finally:
            bar.close()
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        with _waiting("snapshot"):
            collection.flush()
        flush = time.perf_counter() - t0
    print(
        f"built a {args.index!r} collection in {path} in {build:.1f}s "
        f"({args.n / build:,.0f} vectors/s, durable in the write-ahead log); "
        f"snapshot written in {flush:.1f}s",
        file=out,
    )

    t0 = time.perf_counter()
    engine = Engine.open(path)
    collection = engine.collection("quickstart")
    opened = time.perf_counter() - t0
    try:
        k = 10
        t0 = time.perf_counter()
        result = collection.search(data.queries, k=k)
        batch_seconds = time.perf_counter() - t0
        singles = []
        for q in data.queries[: min(200, args.queries)]:
            s0 = time.perf_counter()
            collection.search(q, k=k)
            singles.append(time.perf_counter() - s0)
        truth = exact_search(data.vectors, data.queries, k, "l2").ids
        recall = _recall(result.ids, truth)
        records = collection.get(result.ids[0, :3])
        summary = {
            "vectors": args.n,
            "dim": args.dim,
            "index": args.index,
            "build_seconds": round(build, 2),
            "snapshot_seconds": round(flush, 2),
            "reopen_seconds": round(opened, 2),
            "recall_at_10": round(recall, 4),
            "batch_qps": round(args.queries / batch_seconds, 1),
            "single_query_p50_ms": round(float(np.percentile(singles, 50)) * 1e3, 3),
            "single_query_p99_ms": round(float(np.percentile(singles, 99)) * 1e3, 3),
        }
        print(f"reopened in {opened:.2f}s; {len(collection):,} vectors", file=out)
        print(
            f"query 0: top-3 ids {result.ids[0, :3].tolist()} distances "
            f"{[round(float(d), 3) for d in result.distances[0, :3]]}",
            file=out,
        )
        for i, id_ in enumerate(records.ids.tolist()):
            attrs = {n: v[i] for n, v in records.attributes.items()}
            print(f"  id {id_}: tenant {records.tenants[i]} {attrs}", file=out)
        print(f"recall@10 against exact search: {recall:.4f}", file=out)
        print(
            f"batch of {args.queries:,} queries: {summary['batch_qps']:,.0f} queries/s; "
            f"single query p50 {summary['single_query_p50_ms']} ms, "
            f"p99 {summary['single_query_p99_ms']} ms",
            file=out,
        )
        # tenant-scoped, attribute-filtered search, checked against exact filtered search
        from shardwalk import F

        tenant = "t0003"
        where = (F("year") >= 2010) & F("lang").isin(["en", "de"])
        q = data.queries[:100]
        filtered = collection.search(q, k=k, tenant=tenant, where=where, explain=True)
        allowed = np.flatnonzero(
            (np.array(data.tenants) == tenant)
            & (np.array(data.attributes["year"]) >= 2010)
            & np.isin(np.array(data.attributes["lang"]), ["en", "de"])
        )
        local = exact_search(data.vectors[allowed], q, k, "l2").ids
        filtered_recall = _recall(filtered.ids, allowed[local])
        report = filtered.explain
        summary["filtered_recall_at_10"] = round(filtered_recall, 4)
        summary["filtered_path"] = report.path
        print(
            f"tenant {tenant!r} where year >= 2010 and lang in (en, de): {report.matches:,} of "
            f"{report.visible:,} visible vectors match; path {report.path!r} ({report.reason}); "
            f"recall@10 against exact filtered search {filtered_recall:.4f}; "
            f"{len(q) / report.seconds:,.0f} queries/s",
            file=out,
        )
        if args.edges_per_node > 0:
            summary.update(_quickstart_ppr(engine, collection, data, args, result, out))
        if args.serve:
            summary.update(_quickstart_serve(engine, data, args, where, out))
        if args.json:
            print(json.dumps(summary), file=out)
    finally:
        engine.close()
    return 0


def _quickstart_serve(
    engine: Any, data: Any, args: argparse.Namespace, where: Any, out: Any
) -> dict:
    """Serve the engine on 127.0.0.1 (a free port) and query it through shardwalk.Client: the
    same answers as in process, tenant-scoped by the API key."""
    import secrets

    from shardwalk import Client
    from shardwalk.server.app import Server
    from shardwalk.server.config import parse_config

    admin_key, tenant_key = secrets.token_hex(16), secrets.token_hex(16)
    config = parse_config(
        {
            "api_keys": [
                {"key": admin_key, "role": "admin"},
                {"key": tenant_key, "tenant": "t0003"},
            ]
        }
    )
    server = Server(engine, config, host="127.0.0.1", port=0).start()
    address = f"127.0.0.1:{server.port}"
    try:
        with (
            Client(address, api_key=admin_key) as admin,
            Client(address, api_key=tenant_key) as tenant,
        ):
            queries = data.queries[: min(200, args.queries)]
            remote = admin.collection("quickstart").search(queries, k=10)
            local = engine.collection("quickstart").search(queries, k=10)
            same = bool((remote.ids == local.ids).all())
            singles = []
            for q in queries:
                s0 = time.perf_counter()
                admin.collection("quickstart").search(q, k=10)
                singles.append(time.perf_counter() - s0)
            scoped = tenant.collection("quickstart").search(queries[:20], k=10, where=where)
            owners = set(
                engine.collection("quickstart").get(np.unique(scoped.ids[scoped.ids >= 0])).tenants
            )
            p50 = float(np.percentile(singles, 50)) * 1e3
            print(
                f"served on {address}: {len(queries)} searches through shardwalk.Client equal "
                f"the in-process results: {same}; single query p50 {p50:.3f} ms over gRPC; a "
                f"tenant key's filtered search returns only tenant {sorted(owners)} rows",
                file=out,
            )
            summary: dict[str, Any] = {"served_same_results": same, "served_p50_ms": round(p50, 3)}
            if "quickstart" in engine.graphs():
                hits = tenant.graph("quickstart").ppr(
                    scoped.ids[0, :3].tolist(), 10, collection="quickstart"
                )
                print(
                    f"PPR through the server, scoped to the tenant: top-3 {hits.ids[0, :3].tolist()} "
                    f"({hits.method})",
                    file=out,
                )
    finally:
        server.stop(grace=1)
    return summary


def _quickstart_ppr(
    engine: Any, collection: Any, data: Any, args: argparse.Namespace, knn: Any, out: Any
) -> dict[str, Any]:
    """A power-law graph over the same ids: fingerprints, PPR against exact, kNN-seeded PPR."""
    from shardwalk.walks.evaluate import query_metrics
    from shardwalk.walks.generators import power_law_graph

    t0 = time.perf_counter()
    csr = power_law_graph(args.n, args.edges_per_node * args.n, seed=args.seed)
    if "quickstart" in engine.graphs():
        engine.drop_graph("quickstart")
    graph = engine.create_graph("quickstart", csr)
    made = time.perf_counter() - t0
    with _stage_bars("fingerprints") as progress:
        built = graph.build_fingerprints(
            walks_per_node=10, alpha=0.15, seed=args.seed, progress=progress
        )
    print(
        f"graph: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges (power law, seed "
        f"{args.seed}) in {made:.1f}s; fingerprints R=10 in {built['seconds']:.2f}s "
        f"({built['steps_per_second'] / 1e6:.1f}M walk steps/s, "
        f"{built['nbytes'] / 2**20:.0f} MiB)",
        file=out,
    )
    sources = np.random.default_rng(args.seed).choice(graph.node_ids, size=10, replace=False)
    precisions, latencies, exact_seconds = [], [], []
    for s in sources.tolist():
        t0 = time.perf_counter()
        fast = graph.ppr(s, k=100)
        latencies.append(time.perf_counter() - t0)
        exact = graph.ppr(s, k=100, method="exact")
        exact_seconds.append(exact.seconds)
        keep = fast.ids[0] >= 0
        m = query_metrics(
            exact.ids[0],
            exact.scores[0],
            fast.ids[0][keep],
            fast.scores[0][keep],
            k=100,
            n=graph.num_nodes,
        )
        precisions.append(m["precision"])
    p50 = float(np.median(latencies)) * 1e3
    print(
        f"PPR (alpha 0.15) from 10 random nodes: fingerprint p50 {p50:.2f} ms, precision@100 "
        f"{np.mean(precisions):.3f} against exact power iteration "
        f"({np.median(exact_seconds) * 1e3:.0f} ms per query)",
        file=out,
    )
    # kNN-seeded PPR: the first query's neighbours, weighted by similarity, personalise PPR
    hits = knn.ids[0][knn.ids[0] >= 0]
    weights = 1.0 / (1.0 + knn.distances[0][: hits.size])
    seeded = graph.ppr({int(h): float(w) for h, w in zip(hits.tolist(), weights)}, k=5)
    print(
        f"kNN-seeded PPR for query 0: seeds {hits[:5].tolist()}... -> top nodes "
        f"{seeded.ids[0].tolist()}",
        file=out,
    )
    return {
        "graph_nodes": graph.num_nodes,
        "graph_edges": graph.num_edges,
        "fingerprint_seconds": round(built["seconds"], 2),
        "ppr_p50_ms": round(p50, 3),
        "ppr_precision_at_100": round(float(np.mean(precisions)), 4),
    }


# -- ingest / search / info ---------------------------------------------------------------------
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
    from shardwalk.rows import attribute_table, tenant_array
    from shardwalk.validation import check_ids

    label = os.path.basename(path)
    types: dict[str, str] = dict(known.stats()["attributes"]) if known is not None else {}
    id_chunks = []
    bar = _progress(source.count, f"check {label}")
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

    params = _parse_params(args.param)
    source = open_vectors(
        args.path,
        format=args.format,
        batch_size=args.batch,
        limit=args.limit,
        id_column=args.id_column,
        id_offset=args.id_offset,
        vector_column=args.vector_column,
        tenant_column=args.tenant_column,
        hdf5_dataset=args.hdf5_dataset,
    )
    if source.count == 0:
        raise InvalidArgumentError(f"{args.path!r} has no rows; nothing to ingest")
    name = args.collection
    with _engine_for_writing(args.data) as engine:
        existing = engine.collection(name) if name in engine.collections() else None
        _resolve_creation(args, params, existing)
        if existing is None:
            try:
                check_index_params(args.index or "hnsw", params)
            except InvalidArgumentError as exc:
                raise _with_param_types(exc, args.param) from exc
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
        bar = _progress(source.count, f"ingest {os.path.basename(args.path)}")
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
            with _waiting(f"checkpoint {name!r}"):
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

    params = _parse_params(args.param)
    if args.queries and args.id is not None:
        raise InvalidArgumentError(
            "give --queries FILE or --id ID, not both (--queries searches with the file's "
            "vectors, --id with the stored vector of one id)"
        )
    if args.limit is not None and not args.queries:
        raise InvalidArgumentError("--limit counts the queries of a --queries file; give one")
    with _open_existing(args.data) as engine:
        collection = engine.collection(args.collection)
        try:
            check_search_params(collection.index_kind, params)
        except InvalidArgumentError as exc:
            raise _with_param_types(exc, args.param) from exc
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


def _count(text: str) -> int:
    """argparse type of a count: an integer >= 1 (said with the flag the user typed)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def _port(text: str) -> int:
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
    if not args.create and not os.path.isfile(os.path.join(args.data, MANIFEST)):
        there = _what_is_there(args.data)
        raise NotFoundError(
            f"no shardwalk data directory at {args.data!r} (no {MANIFEST}; {there}); check "
            "--data, or pass --create to serve a new, empty data directory there"
        )

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return serve(
        args.data,
        args.config,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        threads=args.engine_threads,
        aio=args.aio,
        ray=args.address or args.ray,
        ray_actors=args.ray_actors,
        announce=lambda line: print(line, flush=True),
    )


def cmd_info(args: argparse.Namespace) -> int:
    with _open_existing(args.data) as engine:
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
        engine = _open_existing(args.data)
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
    read = None
    if kind == "snap":
        _text_columns(args, weighted=args.weighted, verb="ingest")
    else:
        read = _edges_in_file(args, kind)
    t0 = time.perf_counter()
    with _engine_for_writing(args.data) as engine:
        if args.name in engine.graphs():  # before reading a large file
            raise AlreadyExistsError(
                f"graph {args.name!r} already exists in {args.data!r}; drop it first ('shardwalk "
                f"graph drop --data {args.data} --name {args.name}') or choose another --name"
            )
        with _waiting(f"graph {args.name!r}"):
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


def cmd_build(args: argparse.Namespace) -> int:
    from shardwalk.jobs import build_collection

    params = _parse_params(args.param)
    try:
        with _stage_bars(f"build {args.collection!r}") as progress:
            report = build_collection(
                args.data,
                args.collection,
                args.input,
                index=args.index,
                metric=args.metric,
                id_column=args.id_column,
                vector_column=args.vector_column,
                tenant_column=args.tenant_column,
                shared_with_column=args.shared_with_column,
                attribute_columns=args.attribute_column or None,
                num_workers=args.num_workers,
                address=args.address,
                ray=args.ray,
                progress=progress,
                **params,
            )
    except InvalidArgumentError as exc:
        raise _with_param_types(exc, args.param) from None
    report.pop("tasks", None)
    if args.json:
        print(json.dumps(report))
    else:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in report["seconds"].items() if k != "total")
        print(
            f"built {args.collection!r}: {report['rows']} rows x {report['dim']}, "
            f"{report['partitions']} partitions, {report['seconds']['total']:.2f}s on "
            f"{report['workers']} {report['executor']} workers ({stages})"
        )
    return 0


def _fingerprints_on_ray(args: argparse.Namespace, hubs: Any) -> int:
    from shardwalk.jobs import build_fingerprints

    with _stage_bars(f"fingerprints of {args.name!r} on Ray") as progress:
        stats = build_fingerprints(
            args.data,
            args.name,
            walks_per_node=args.walks_per_node,
            alpha=args.alpha,
            seed=args.seed,
            dangling=args.dangling,
            top_k=args.top_k,
            hubs=hubs,
            hub_walks=args.hub_walks,
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
    with _open_existing(args.data) as engine:  # a mistyped --data creates nothing
        graph = engine.graph(args.name)
        if graph.num_nodes == 0:
            raise FailedPreconditionError(
                f"graph {args.name!r} has no nodes, so there is nothing to fingerprint; add "
                "edges first ('shardwalk graph add-edges')"
            )
        if not on_ray:
            with _stage_bars(f"fingerprints of {args.name!r}") as progress:
                stats = graph.build_fingerprints(
                    walks_per_node=args.walks_per_node,
                    alpha=args.alpha,
                    seed=args.seed,
                    dangling=args.dangling,
                    top_k=args.top_k,
                    hubs=hubs,
                    hub_walks=args.hub_walks,
                    progress=progress,
                )
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
    with _open_existing(args.data) as engine:
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
    with _open_existing(args.data) as engine:
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


def cmd_drop(args: argparse.Namespace) -> int:
    """collection drop / graph drop: delete one collection or graph and its files."""
    kind = "graph" if args.command == "graph" else "collection"
    with _open_existing(args.data) as engine:
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


def cmd_keys_new(args: argparse.Namespace) -> int:
    """A new random API key and its SHA-256, with the [[api_keys]] entry that admits it."""
    import hashlib
    import secrets

    key = secrets.token_urlsafe(32)  # 256 random bits
    digest = hashlib.sha256(key.encode()).hexdigest()
    if args.json:
        print(json.dumps({"key": key, "key_sha256": digest}))
        return 0
    who = 'role = "admin"' if args.admin else f"tenant = {json.dumps(args.tenant or 'TENANT')}"
    print(f"key        {key}")
    print(f"key_sha256 {digest}")
    print()
    print("# the server's config (--config) keeps only the hash; the client sends the key")
    print("[[api_keys]]")
    print(f'key_sha256 = "{digest}"')
    print(who + ("" if args.admin or args.tenant else '  # or role = "admin"'))
    return 0


# -- parser -------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is none to show (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or action.required:
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    try:
        return importlib.metadata.version("shardwalk")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        from shardwalk import __version__

        return __version__


INDEXES = ["flat", "hnsw", "partitioned", "multitenant", "spann"]


def _ray_flags(p: argparse.ArgumentParser, workers: str) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--ray", action="store_true", help="run on a local Ray (127.0.0.1)")
    where.add_argument("--address", default=None, help="run on the Ray cluster at ADDR")
    p.add_argument("--num-workers", type=_count, default=None, metavar="N", help=workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardwalk",
        description="Vector search and graph retrieval engine.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shardwalk {_version()}")
    debug_help = f"on a failure, also print the Python traceback (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(group: Any, name: str, help: str, description: str | None = None) -> Any:
        p = group.add_parser(
            name, help=help, description=description or help, formatter_class=_HelpFormatter
        )
        # also after the command; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        return p

    def group(name: str, help: str) -> Any:
        """A command of subcommands (``shardwalk graph ingest``)."""
        return command(sub, name, help).add_subparsers(dest=f"{name}_command", required=True)

    p = command(sub, "quickstart", "generate seeded data, build, query, report recall")
    p.add_argument("--data", default="shardwalk-quickstart", help="data directory")
    p.add_argument("--n", type=_count, default=200_000, help="vectors to generate")
    p.add_argument("--dim", type=_count, default=96, help="vector dimension")
    p.add_argument("--queries", type=_count, default=1_000, help="queries to generate")
    p.add_argument("--index", default="hnsw", choices=INDEXES, help="index kind")
    p.add_argument("--batch", type=_count, default=10_000, help="vectors per upsert")
    p.add_argument("--seed", type=int, default=0, help="random seed of the data")
    p.add_argument(
        "--edges-per-node",
        type=int,
        default=5,
        help="edges per node of the PPR demo graph (0 skips it)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="also serve the data on 127.0.0.1 (a free port) and query it through the client",
    )
    p.add_argument("--json", action="store_true", help="also print a JSON summary line")
    p.set_defaults(run=cmd_quickstart)

    p = command(
        sub,
        "ingest",
        "load vectors from .npy, Parquet, HDF5, .fvecs/.bvecs/.ivecs",
        "Load vectors into a collection (created if missing). Ids come from the Parquet id "
        "column, or are row numbers plus --id-offset. Every row is checked before anything is "
        "written; ids the collection already has are refused unless --upsert is given. A "
        "failed ingest leaves nothing behind.",
    )
    p.add_argument("path", help="file of vectors")
    p.add_argument("--data", required=True, help="data directory (created if missing)")
    p.add_argument("--collection", required=True, help="collection name (created if missing)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "npy", "parquet", "hdf5", "fvecs", "ivecs", "bvecs"],
        help="file format (auto: from the extension)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=["l2", "ip", "cosine"],
        help="distance of a new collection (default: l2)",
    )
    p.add_argument(
        "--index", default=None, choices=INDEXES, help="index of a new collection (default: hnsw)"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="index parameter of a new collection, read as int, float, true/false or string, "
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
    p.add_argument("--batch", type=_count, default=10_000, help="vectors per write")
    p.add_argument("--limit", type=_count, default=None, help="ingest only the first N vectors")
    p.add_argument("--vector-column", default="vector", help="Parquet column of the vectors")
    p.add_argument("--tenant-column", default=None, help="Parquet column of the owner tenants")
    p.add_argument("--hdf5-dataset", default="train", help="HDF5 dataset to read")
    p.set_defaults(run=cmd_ingest)

    p = command(sub, "search", "k nearest neighbours of query vectors")
    p.add_argument("--data", required=True, help="data directory (must exist)")
    p.add_argument("--collection", required=True, help="collection name")
    p.add_argument("--queries", help="file of query vectors (any ingest format)")
    p.add_argument("--id", type=int, help="search with the stored vector of this id")
    p.add_argument("--limit", type=_count, default=None, help="only the first N queries")
    p.add_argument("--k", type=_count, default=10, help="neighbours per query")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="search parameter, read as int, float, true/false or string, e.g. --param ef=128",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per query")
    p.set_defaults(run=cmd_search)

    graph_sub = group("graph", "graphs: ingest, fingerprints, add-edges, delete-edges, drop")
    g = command(
        graph_sub,
        "ingest",
        "load a SNAP/CSV edge list, Parquet, an edges .npy file or an edges.npy directory",
        "Load a graph: a text edge list 'src dst [weight]' (SNAP, CSV; plain, gzip, bz2 or "
        "zstd; '#' and '%' comment lines), Parquet with src, dst [, weight] columns, an (E, 2) "
        "or (E, 3) .npy file of (src, dst [, weight]) rows, or a directory of edges.npy "
        "[+ ids.npy, weights.npy]. A failed ingest leaves nothing behind.",
    )
    g.add_argument("path", help="edge file or directory")
    g.add_argument("--data", required=True, help="data directory (created if missing)")
    g.add_argument("--name", required=True, help="graph name")
    g.add_argument(
        "--format",
        default="auto",
        choices=["auto", "snap", "parquet", "npy"],
        help="auto: directory -> npy, .npy header -> npy, .parquet/.pq -> parquet, else snap",
    )
    g.add_argument("--undirected", action="store_true", help="store every edge both ways")
    g.add_argument(
        "--weighted",
        action="store_true",
        help="read edge weights (third column, 'weight' column or weights.npy; > 0)",
    )
    g.add_argument(
        "--delimiter", default=None, help="text column separator (default: any whitespace)"
    )
    g.add_argument(
        "--skip-rows",
        type=int,
        default=0,
        metavar="N",
        help="text: data lines to skip after the comments (headers such as 'src,dst')",
    )
    g.add_argument(
        "--comment", default="#%", help="text: lines starting with one of these are skipped"
    )
    g.set_defaults(run=cmd_graph_ingest)
    g = command(graph_sub, "fingerprints", "build Monte Carlo PPR fingerprints")
    g.add_argument("--data", required=True, help="data directory (must exist)")
    g.add_argument("--name", required=True, help="graph name")
    g.add_argument("--walks-per-node", type=_count, default=10, help="R, walks from every node")
    g.add_argument("--alpha", type=float, default=0.15, help="stop probability")
    g.add_argument("--seed", type=int, default=0, help="random seed of the walks")
    g.add_argument(
        "--dangling",
        default="self_loop",
        choices=["self_loop", "drop"],
        help="dangling-node rule ('drop' also serves restart queries)",
    )
    g.add_argument(
        "--top-k",
        type=_count,
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
    g.add_argument("--hub-walks", type=_count, default=1000, help="walks per hub row")
    _ray_flags(g, "tasks at once on Ray (default: one per CPU of the Ray cluster)")
    g.add_argument(
        "--mode",
        default=None,
        choices=["replicated", "sharded"],
        help="on Ray: every task holds the graph (replicated) or shard actors each hold a part "
        "(default: replicated)",
    )
    g.set_defaults(run=cmd_graph_fingerprints)

    for verb, what in (("add-edges", "add edges (or new weights) from a file"),
                       ("delete-edges", "delete the edges listed in a file")):  # fmt: skip
        g = command(
            graph_sub,
            verb,
            what,
            f"{what[0].upper()}{what[1:]}: a text edge list 'src dst"
            f"{' [weight]' if verb == 'add-edges' else ''}' (SNAP, CSV; plain or compressed) or "
            "an (E, 2) / (E, 3) .npy array. Each batch is durable (write-ahead log) before the "
            "next; a bad batch changes nothing and stops the command.",
        )
        g.add_argument("path", help="edge file")
        g.add_argument("--data", required=True, help="data directory (must exist)")
        g.add_argument("--name", required=True, help="graph name")
        if verb == "add-edges":
            g.add_argument("--weighted", action="store_true", help="read weights (third column)")
        g.add_argument("--batch-size", type=_count, default=100_000, help="edges per durable batch")
        g.add_argument("--delimiter", default=None, help="text column separator")
        g.add_argument("--skip-rows", type=int, default=0, metavar="N", help="header lines")
        g.set_defaults(run=cmd_graph_update)

    collection_sub = group("collection", "collections: drop")
    for parent, kind, what in (
        (graph_sub, "graph", "a graph, its fingerprints and its files"),
        (collection_sub, "collection", "a collection and its files"),
    ):
        d = command(
            parent,
            "drop",
            f"delete {what}",
            f"Delete {what} from a data directory no server has open (a server drops one with "
            f"Drop{kind.title()}, admin key).",
        )
        d.add_argument("--data", required=True, help="data directory (must exist)")
        d.add_argument("--name", required=True, help=f"{kind} name")
        d.set_defaults(run=cmd_drop)

    k = command(
        group("keys", "API keys: new"),
        "new",
        "make a random API key and its key_sha256",
        "Print a new random API key (256 bits) and its SHA-256, with the [[api_keys]] entry for "
        "the server's config: the config keeps only key_sha256, the client sends the key.",
    )
    who = k.add_mutually_exclusive_group()
    who.add_argument("--tenant", help="the tenant the key's calls are scoped to")
    who.add_argument("--admin", action="store_true", help="an admin key")
    k.add_argument("--json", action="store_true", help='print {"key": ..., "key_sha256": ...}')
    k.set_defaults(run=cmd_keys_new)

    p = command(sub, "ppr", "personalized PageRank from seed nodes")
    p.add_argument("--data", required=True, help="data directory (must exist)")
    p.add_argument("--graph", required=True, help="graph name")
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        required=True,
        help="seed node id (repeat for several, equally weighted)",
    )
    p.add_argument("--k", type=_count, default=20, help="top nodes to print")
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
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="stop probability (default: the graph's, that of its fingerprints or 0.15)",
    )
    p.add_argument(
        "--dangling",
        default=None,
        choices=["self_loop", "drop", "restart"],
        help="dangling-node rule (default: the graph's, that of its fingerprints or self_loop)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_ppr)

    p = command(
        sub,
        "serve",
        "serve a data directory over gRPC",
        "Serve a data directory over gRPC until SIGTERM/SIGINT (then in-flight calls finish "
        "and every collection is checkpointed). The TOML config maps API keys to tenants or "
        "admin and sets limits and TLS (see shardwalk.server.config). With --ray or --address, "
        "the partitioned collections' partitions live in Ray actors (every node must see the "
        "data directory).",
    )
    p.add_argument(
        "--data",
        required=True,
        help="data directory (must exist: made by ingest, build or graph ingest; see --create)",
    )
    p.add_argument(
        "--create",
        action="store_true",
        help="create --data as a new, empty data directory if nothing is there",
    )
    p.add_argument(
        "--config", required=True, help="TOML file: [[api_keys]], [limits], [tls], [server]"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=_port, default=50051, help="port (0 picks a free one)")
    p.add_argument(
        "--metrics-port",
        type=_port,
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
        type=_count,
        metavar="N",
        help="threads the engine's searches and builds share (default: the cores); the "
        "threads that run calls are [limits] rpc_threads in --config",
    )
    # the old spelling, read like [limits] threads: still accepted, with a note
    p.add_argument("--threads", type=_count, dest="old_threads", help=argparse.SUPPRESS)
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
        type=_count,
        default=None,
        help="actors per partitioned collection (default: one per CPU, at most one per partition)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="INFO logs failed calls, DEBUG every call",
    )
    p.set_defaults(run=cmd_serve)

    p = command(
        sub,
        "build",
        "build a collection from a Parquet dataset, on threads or on Ray",
        "Build a collection from Parquet files as a batch job: every row is checked (a bad row "
        "stops the job naming its file and row), the partitions are trained on a sample and "
        "built in parallel, and one manifest commit makes the collection (or its new version, "
        "replacing the old) visible. --ray runs it on a local Ray, --address on a cluster.",
    )
    p.add_argument("--data", required=True, help="data directory (created if missing)")
    p.add_argument("--collection", required=True, help="collection name (replaced if it exists)")
    p.add_argument("--input", required=True, help="Parquet file or directory of them")
    p.add_argument(
        "--index",
        default="partitioned",
        choices=["partitioned", "hnsw", "flat", "multitenant", "spann"],
        help="index kind",
    )
    p.add_argument("--metric", default="l2", choices=["l2", "ip", "cosine"], help="distance")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="index parameter, e.g. --param partitions=16 --param ef_construction=200",
    )
    p.add_argument("--id-column", default="id", help="column of the int64 ids")
    p.add_argument("--vector-column", default="vector", help="column of the vectors")
    p.add_argument("--tenant-column", default=None, help="column of the owner tenants")
    p.add_argument("--shared-with-column", default=None, help="column of further tenants")
    p.add_argument(
        "--attribute-column",
        action="append",
        default=[],
        metavar="NAME",
        help="attribute column (repeatable; default: every other column)",
    )
    _ray_flags(
        p,
        "tasks at once on Ray, or threads without it (default: one per CPU of the Ray cluster, "
        "or per core here)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_build)

    p = command(
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
    )
    p.add_argument("dest", help="new or empty directory to copy into")
    p.add_argument("--data", required=True, help="data directory (must exist, not open elsewhere)")
    p.add_argument(
        "--copy",
        action="store_true",
        help="copy every byte even on the same filesystem (default: hard-link immutable files)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_backup)

    p = command(sub, "info", "collections, graphs and their statistics")
    p.add_argument("--data", required=True, help="data directory (must exist)")
    p.add_argument("--collection", help="only this collection")
    p.set_defaults(run=cmd_info)
    return parser


DEBUG_ENV = "SHARDWALK_DEBUG"


def _debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(exc: BaseException) -> tuple[str, int]:
    """The message and exit code of a failure: what went wrong, with which file or port, what
    to do. Errors shardwalk raises on purpose carry all that; the I/O errors a command line
    meets (a missing file, a permission, a full disk) are named with their file."""
    if isinstance(exc, ShardwalkError):
        return f"{exc} ({exc.code})", 2
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, OSError):
        if (
            exc.errno in (errno.EEXIST, errno.ENOTDIR)
            and exc.filename
            and os.path.lexists(exc.filename)
            and not os.path.isdir(exc.filename)
        ):  # os.makedirs under a file
            return f"{exc.filename!r} is a file where a directory is needed; check the path", 1
        where = f" {exc.filename!r}" if exc.filename else ""
        if exc.filename2:
            where += f" -> {exc.filename2!r}"
        reason = exc.strerror or str(exc)
        hints = {
            errno.ENOENT: "check the path",
            errno.EACCES: "check its permissions",
            errno.EPERM: "check its permissions",
            errno.ENOSPC: "free some space or use another --data",
            errno.EROFS: "use a writable directory",
            errno.EADDRINUSE: "choose another port",
        }
        hint = hints.get(exc.errno or 0, "")
        return f"{reason}{':' if where else ''}{where}{'; ' + hint if hint else ''}", 1
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller --batch or --limit", 1
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in shardwalk: please report it with "
        f"the traceback that --debug or {DEBUG_ENV}=1 prints)",
        1,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure prints one line on stderr and returns a non-zero exit code
    (2 for errors shardwalk raises on purpose, 1 otherwise, 130 on Ctrl-C); ``--debug`` or
    SHARDWALK_DEBUG=1 also prints the traceback."""
    args = build_parser().parse_args(argv)
    debug = _debugging(args)
    if not debug:
        _quiet_ray_notices()
    try:
        return int(args.run(args))
    except (Exception, KeyboardInterrupt) as exc:
        message, code = _one_line(exc)
        if debug:
            traceback.print_exc()
        print(f"shardwalk: error: {message}", file=sys.stderr)
        return code


def _quiet_ray_notices() -> None:
    """Ray logs "Token authentication is enabled for this Ray cluster..." at every local
    start; a command that starts Ray every run repeats it every run (--debug shows it)."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("Token authentication is enabled for")

    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_Drop())


if __name__ == "__main__":
    sys.exit(main())

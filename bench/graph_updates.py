"""Graph updates benchmark: durable edge upserts streamed into a graph with fingerprints,
against rebuilding the fingerprints from scratch.

For each graph, a share (1%, 10%) of its edges is held out (the latest by time where the graph
has timestamps: soc-sign-bitcoinalpha; else a seeded random sample), the graph is created on
disk from the rest, fingerprints are built (R=10, hubs auto, walks kept), and the held-out
edges are streamed back with ``Graph.upsert_edges`` in batches of 1, 100 and 10,000. Reported:

* acknowledged edges/s (each batch fsynced to the graph's log, applied, fingerprints repaired)
  and the same without fingerprints (log and delta only);
* repair cost per batch (walks re-simulated, steps, seconds) and, for the whole share in one
  batch, its ratio to a full fingerprint rebuild (seconds and steps): the repair alone (the
  walks, in ``upsert_edges``) and with the recount of the fingerprint rows that the first read
  after it does, in wall-clock and in CPU seconds of the process (less sensitive to the load
  of a shared machine);
* precision@100 after the stream of the repaired fingerprints and of fingerprints built from
  scratch on the final graph (same R), against push to r_max 1e-7 on sampled sources, for the
  "fingerprint" method and the engine's default (accuracy="fast");
* the walk store's memory against the fingerprints'.

Batches of 1 and 100 are timed on a prefix of the stream (``--max-batches`` each), then the
rest goes in batches of 10,000, so every setting ends on the same final graph.

    python bench/graph_updates.py                        # the real graphs of ../shared/data
    python bench/graph_updates.py --large --real         # only the 1M-node / 5M-edge graph
    python bench/graph_updates.py --large                # both
    python bench/graph_updates.py --large --real --nodes 200000 --edges 1000000  # moderate

Old vs new in one run: ``--baseline PYTHON`` runs this script with the same arguments under an
old checkout's interpreter (the script uses only the public API, ``Graph._current`` and
``Graph._dyn.merged``), then under this one, back to back, and writes both reports and the
new/old ratios into one file (``bench/report.py`` renders it), e.g.

    python bench/graph_updates.py --large --real --nodes 200000 --edges 1000000 \
        --batch-sizes 100 10000 --max-batches 20 --sources 50 \
        --baseline /path/to/main/.venv/bin/python --tag moderate-compare

Writes ``bench/results/graph-updates-<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import REAL_GRAPHS, UNDIRECTED
from shardwalk.walks import CSRGraph, PPRIndex, build_fingerprints
from shardwalk.walks.generators import power_law_graph

import shardwalk

ROOT = Path(__file__).resolve().parent
LOAD_START = os.getloadavg()  # when this process started: the results record it with the end's
DATA = ROOT.parents[1] / "shared" / "data"
TARGETS = {
    "repair_speedup_1pct": 20.0,  # a 1% batch repaired >= 20x faster than a full rebuild
    "precision_gap": 0.01,  # precision@100 within 0.01 of a fresh build
    "edges_per_second_10000": 50_000.0,  # acknowledged upserts/s in batches of 10,000
    "walk_store_ratio": 2.0,  # walk store <= 2x the fingerprints' memory
}
FINGERPRINTS = {"walks_per_node": 10, "hubs": "auto", "hub_walks": 1000}


def load(name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, bool]:
    """(edges (E, 2) external ids, weights or None, times or None, directed)."""
    d = DATA / name
    edges = np.load(d / "edges.npy")
    ids = np.load(d / "ids.npy")
    edges = ids[edges]
    weights = None
    if (d / "weights.npy").exists():
        w = np.load(d / "weights.npy").astype(np.float64)
        weights = w - w.min() + 1.0  # signed trust ratings -10..10 -> 1..21 (weights > 0)
    times = np.load(d / "times.npy") if (d / "times.npy").exists() else None
    return edges, weights, times, name not in UNDIRECTED


def split(edges, weights, times, share: float, seed: int):
    """(kept edges, kept weights, streamed edges, streamed weights): the latest ``share`` by
    time, or a seeded random sample; repeated (src, dst) pairs go with their last copy."""
    m = edges.shape[0]
    count = max(1, round(share * m))
    if times is not None:
        order = np.argsort(times, kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(m)
    keep, stream = order[: m - count], order[m - count :]
    pick = (lambda idx: None) if weights is None else (lambda idx: weights[idx])
    return edges[keep], pick(keep), edges[stream], pick(stream)


def precision(index: Any, sources: list[int], reference: np.ndarray, **query) -> float:
    """precision@100 of a Graph's or a PPRIndex's answers against ``reference``."""
    run = index.ppr_batch if hasattr(index, "ppr_batch") else index.query_batch
    found = run(sources, k=100, **query).ids
    hits = []
    for f, r in zip(found, reference):
        ref = set(r[r >= 0].tolist())
        hits.append(len(set(f[f >= 0].tolist()) & ref) / max(1, len(ref)))
    return float(np.mean(hits))


def run_graph(
    label: str, edges, weights, times, directed: bool, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {"graph": label, "edges": int(edges.shape[0]), "shares": {}}
    for share in args.shares:
        kept, kept_w, streamed, streamed_w = split(edges, weights, times, share, args.seed)
        res: dict[str, Any] = {"streamed_edges": int(streamed.shape[0]), "batches": {}}
        tmp = tempfile.mkdtemp(prefix="sw-bench-gu-", dir=args.tmp)
        try:
            with shardwalk.Engine.open(tmp) as engine:
                warm_up(engine, kept, kept_w, streamed, streamed_w, directed, args.seed)
                g = engine.create_graph("g", kept, kept_w, directed=directed)
                bare = engine.create_graph("bare", kept, kept_w, directed=directed)
                built = g.build_fingerprints(**FINGERPRINTS, seed=args.seed)
                res["build"] = {
                    "seconds": built["seconds"],
                    "steps": built["steps"],
                    "fingerprint_bytes": built["nbytes"],
                    "walk_store_bytes": built["walks_nbytes"],
                    "walk_store_ratio": built["walks_nbytes"] / built["nbytes"],
                }
                g.compact_ratio = bare.compact_ratio = 10.0  # measure the delta, not snapshots
                at = 0
                for size in args.batch_sizes:
                    limit = streamed.shape[0] if size >= 10_000 else args.max_batches * size
                    stop = min(streamed.shape[0], at + limit)
                    if size >= 10_000:
                        stop = streamed.shape[0]
                    if stop <= at:
                        continue
                    stats = stream(g, bare, streamed, streamed_w, at, stop, size)
                    res["batches"][str(size)] = stats
                    at = stop
                    print(f"  {label} {share:.0%} batch {size}: {json.dumps(stats)}", flush=True)
                res["after_stream"] = {
                    "walk_store_bytes": g.stats()["fingerprints"]["walks_bytes"],
                    "fingerprint_bytes": g.stats()["fingerprints"]["bytes"],
                }
                res["after_stream"]["walk_store_ratio"] = (
                    res["after_stream"]["walk_store_bytes"]
                    / res["after_stream"]["fingerprint_bytes"]
                )
                res["accuracy"] = accuracy(g, args)
                print(f"  {label} {share:.0%} accuracy: {json.dumps(res['accuracy'])}", flush=True)
            res["one_batch"] = one_batch(kept, kept_w, streamed, streamed_w, directed, args)
            print(f"  {label} {share:.0%} one batch: {json.dumps(res['one_batch'])}", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["shares"][f"{share:.0%}"] = res
    return out


def warm_up(engine, kept, kept_w, streamed, streamed_w, directed: bool, seed: int) -> None:
    """Untimed: a small graph of the first kept edges through everything the timed part runs
    (build with walks kept, updates with repair, reads, a rebuild), so that loading (or, with
    a cold cache, compiling) numba's kernels is paid here, alike by both sides of a
    comparison, not by the first timed batches. Every repair kernel is reached: the walks
    planned, rewritten and walked (``walk_tails``' lanes), the hub rows' visit log (edges out
    of the nodes with the most in-links, the hubs, so that hub walks are rerouted), the
    index's overflow folded in, the walk store compacted, the logged rows applied."""
    m = min(20_000, kept.shape[0])
    w = None if kept_w is None else kept_w[:m]
    g = engine.create_graph("warm-up", kept[:m], w, directed=directed)
    g.build_fingerprints(**FINGERPRINTS, seed=seed)
    g.compact_ratio = 10.0
    u = min(100, streamed.shape[0])
    g.upsert_edges(streamed[:u], None if streamed_w is None else streamed_w[:u])
    g._current()  # the recount of the repaired rows
    ids, counts = np.unique(kept[:m, 1], return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:8]]  # (among them the hubs)
    extra = np.stack([np.repeat(top, 4), np.resize(kept[:m, 0], top.size * 4)], axis=1)
    g.upsert_edges(extra, None if kept_w is None else np.ones(extra.shape[0]))
    for store in g._walks or ():  # (main walks, hub walks): what thresholds trigger rarely
        if store is None:
            continue
        if getattr(store, "overflow_used", 0) and hasattr(store, "_merge_overflow"):
            store._merge_overflow(g._dyn.num_nodes)
        if hasattr(store, "compact"):
            store.compact()
    g._current()  # (the hub rows' logged visits applied)
    g.ppr_batch([int(kept[0, 0])], k=10, method="fingerprint")
    build_fingerprints(g.csr, **FINGERPRINTS, seed=seed)
    engine.drop_graph("warm-up")


def settled(g) -> float:
    """Wait for the calibration of accuracy= that an update past ``recalibrate_ratio`` starts
    in the background (``Graph.wait_calibrated``; older checkouts run it inside the update):
    the seconds waited."""
    wait = getattr(g, "wait_calibrated", None)
    t0 = time.perf_counter()
    if wait is not None:
        wait()
    return time.perf_counter() - t0


def stream(g, bare, streamed, weights, lo: int, hi: int, size: int) -> dict[str, Any]:
    """Stream edges [lo, hi) in batches of ``size`` into ``g`` (with fingerprints) and
    ``bare`` (without)."""
    t_fp = t_bare = t_read = c_fp = c_bare = 0.0
    walks = steps = repair = batches = 0
    per_batch, acks = [], []  # acks: each upsert's own latency (without the wait after it)
    stages: dict[str, float] = {}  # the repair's parts, seconds (where the library reports them)
    causes: dict[str, float] = {}  # every batch's seconds by cause, summed (see ``causes_of``)
    records = []  # per batch: ack seconds, its causes, the wait and read after it
    for a in range(lo, hi, size):
        b = min(hi, a + size)
        w = None if weights is None else weights[a:b]
        t0, c0 = time.perf_counter(), time.process_time()
        report = g.upsert_edges(streamed[a:b], w)
        ack, ack_cpu = time.perf_counter() - t0, time.process_time() - c0
        acks.append(ack)
        wait = settled(g)  # a background calibration's work counts here, not in the next window
        t_fp += time.perf_counter() - t0
        c_fp += time.process_time() - c0
        read = 0.0
        if size >= 10_000:  # the first read after: the repaired fingerprint rows recounted
            t0 = time.perf_counter()
            g._current()
            read = time.perf_counter() - t0
            t_read += read
        record = {"ack": ack, "ack_cpu": ack_cpu, **causes_of(report, ack),
                  "calibration_wait": wait, "read": read}  # fmt: skip
        if size >= 10_000:
            records.append(record)
        for key in record:
            if key not in ("ack", "ack_cpu", "rebuilt"):
                causes[key] = causes.get(key, 0.0) + record[key]
        t0, c0 = time.perf_counter(), time.process_time()
        bare.upsert_edges(streamed[a:b], w)
        t_bare += time.perf_counter() - t0
        c_bare += time.process_time() - c0
        walks += report["walks"]
        steps += report["steps"]
        repair += report["repair_seconds"]
        batches += 1
        per_batch.append(report["repair_seconds"])
        for key, seconds in report.get("repair_stages", {}).items():
            stages[key] = stages.get(key, 0.0) + seconds
    edges = hi - lo
    return {
        "edges": edges,
        "batches": batches,
        "edges_per_second": edges / t_fp,
        "edges_per_second_without_fingerprints": edges / t_bare,
        # the acknowledgements alone (edges_per_second adds the background calibration waited
        # for after each batch)
        "edges_per_second_acknowledged": edges / sum(acks),
        # per CPU second of the process (all its threads): steadier on a loaded machine
        "edges_per_cpu_second": edges / c_fp if c_fp else None,
        "edges_per_cpu_second_without_fingerprints": edges / c_bare if c_bare else None,
        # acknowledged and then read once (fingerprints recounted): what a reader waits for
        "edges_per_second_with_first_read": edges / (t_fp + t_read) if t_read else None,
        "walks_per_batch": walks / batches,
        "steps_per_batch": steps / batches,
        "repair_seconds_per_batch": repair / batches,
        "repair_seconds_p50": float(np.median(per_batch)),
        "ack_seconds_p50": float(np.median(acks)),
        "ack_seconds_p90": float(np.quantile(acks, 0.9)),
        "ack_seconds_max": max(acks),
        "ack_seconds_sum": float(sum(acks)),
        # CPU seconds of the process (all its threads) during the acknowledgements
        "ack_cpu_seconds_sum": float(sum(r["ack_cpu"] for r in records)) if records else None,
        # the acknowledgements' seconds (and the waits and reads after them) by cause, summed
        # over the batches: repair stages, accuracy= recalibration in the write path, the
        # rest of the ack (log fsync, delta, graph compaction), the background calibration
        # waited for, the first read's recount
        "seconds_by_cause": causes,
        "rebuilds": sum(1 for r in records if r.get("rebuilt")),
        "per_batch": records,
        "repair_stages_per_batch": {k: v / batches for k, v in stages.items()},
        "load": os.getloadavg()[0],
    }


def causes_of(report: dict[str, Any], ack: float) -> dict[str, float]:
    """An upsert's acknowledgement seconds by cause: each repair stage (``repair_<stage>``,
    and ``repair_rest`` for what the repair's seconds hold beyond its stages), a rebuild of
    the walks instead (``rebuild``), the recalibration in the write path (``recalibrate``),
    and the rest (``log_delta_other``: the log's fsync, the delta, automatic compaction)."""
    out: dict[str, float] = {}
    repair = float(report.get("repair_seconds", 0.0))
    stages = report.get("repair_stages") or {}
    for key, seconds in stages.items():
        out[f"repair_{key}"] = float(seconds)
    if report.get("rebuilt"):  # (a checkout that decides between repair and rebuild)
        out["rebuild"] = repair
    else:
        out["repair_rest"] = max(0.0, repair - sum(stages.values()))
    recal = report.get("recalibrated") or {}
    out["recalibrate"] = float(recal.get("seconds", 0.0))
    out["log_delta_other"] = max(0.0, ack - repair - out["recalibrate"])
    if report.get("rebuilt"):
        out["rebuilt"] = 1.0
    return out


def one_batch(kept, kept_w, streamed, streamed_w, directed, args) -> dict[str, Any]:
    """The whole share as one batch: repair cost against rebuilding the fingerprints."""
    tmp = tempfile.mkdtemp(prefix="sw-bench-gu1-", dir=args.tmp)
    try:
        with shardwalk.Engine.open(tmp) as engine:
            g = engine.create_graph("g", kept, kept_w, directed=directed)
            built = g.build_fingerprints(**FINGERPRINTS, seed=args.seed)
            g.compact_ratio = 10.0
            t0, c0 = time.perf_counter(), time.process_time()
            report = g.upsert_edges(streamed, streamed_w)
            ack, ack_cpu = time.perf_counter() - t0, time.process_time() - c0
            calibration = settled(g)  # before anything else is timed
            t0 = time.perf_counter()
            g._dyn.merged()  # the delta merged into a CSR: any read after an update does it
            merge = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            g._current()  # the rest of the first read: the repaired fingerprint rows recounted
            read, read_cpu = time.perf_counter() - t0, time.process_time() - c0
            csr = g.csr
            t0, c0 = time.perf_counter(), time.process_time()
            fresh = build_fingerprints(csr, **FINGERPRINTS, seed=args.seed)
            rebuild, rebuild_cpu = time.perf_counter() - t0, time.process_time() - c0
            return {
                "edges": int(streamed.shape[0]),
                "repair_seconds": report["repair_seconds"],
                # the walks rebuilt instead of repaired (a checkout that decides by the work)
                "rebuilt": bool(report.get("rebuilt", False)),
                "repair_walks": report["walks"],
                "repair_steps": report["steps"],
                "repair_stages": report.get("repair_stages"),
                "upsert_seconds": ack,
                # waited after it for accuracy= calibrated again in the background (0 when the
                # batch stays under recalibrate_ratio, or the checkout calibrates in the upsert)
                "calibration_wait_seconds": calibration,
                # the rebuild: build_fingerprints on the final graph, same R, hubs and hub
                # walks (equal precision), walks not kept (the cheapest full rebuild)
                "rebuild_seconds": rebuild,
                # the build with walks kept (Graph.build_fingerprints' walks and rows, without
                # its calibration and save), on the graph before the batch
                "build_kept_seconds": built["seconds"],
                "rebuild_steps": fresh.stats["steps"],
                "merge_seconds": merge,
                "first_read_seconds": read,
                "upsert_cpu_seconds": ack_cpu,
                "first_read_cpu_seconds": read_cpu,
                "rebuild_cpu_seconds": rebuild_cpu,
                "speedup_seconds": rebuild / report["repair_seconds"],
                # the walk repair and the recount of the rows it changed (the first read after
                # the merge, which any read after an update does) against the rebuild
                "speedup_with_first_read": rebuild / (report["repair_seconds"] + read),
                # CPU: the whole upsert (log, delta, repair) and the recount
                "speedup_cpu_with_first_read": rebuild_cpu / (ack_cpu + read_cpu),
                "speedup_steps": fresh.stats["steps"] / max(1, report["steps"]),
                "load": os.getloadavg()[0],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def accuracy(g, args: argparse.Namespace) -> dict[str, Any]:
    """precision@100 of repaired vs freshly built fingerprints on the final graph."""
    csr: CSRGraph = g.csr
    fresh = build_fingerprints(csr, **FINGERPRINTS, seed=args.seed + 1)
    fresh_index = PPRIndex(csr, fresh)
    live = np.flatnonzero((np.diff(csr.indptr) > 0) & (csr.node_ids >= 0))
    rng = np.random.default_rng(args.seed)
    sources = [
        int(s) for s in csr.node_ids[rng.choice(live, min(args.sources, live.size), replace=False)]
    ]
    reference = g.ppr_batch(sources, k=100, method="push", r_max=1e-7).ids
    out: dict[str, Any] = {"sources": len(sources), "reference": "push r_max=1e-7"}
    for name, query in (
        ("fingerprint", {"method": "fingerprint"}),
        ("hybrid", {"method": "hybrid", "r_max": 5e-5}),
    ):
        out[f"{name}_repaired"] = precision(g, sources, reference, **query)
        out[f"{name}_fresh"] = precision(fresh_index, sources, reference, **query)
        out[f"{name}_gap"] = out[f"{name}_fresh"] - out[f"{name}_repaired"]
    return out


def _short(x: int) -> str:
    return f"{x // 1_000_000}M" if x % 1_000_000 == 0 else f"{x // 1000}K"


def _commit() -> str | None:
    """The commit of the shardwalk checkout that ran (the interpreter's, not this file's)."""
    import subprocess

    where = Path(shardwalk.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", nargs="*", default=None, help="real graphs (default: all)")
    ap.add_argument("--large", action="store_true", help="add the generated power-law graph")
    ap.add_argument("--nodes", type=int, default=1_000_000, help="its nodes (--large)")
    ap.add_argument("--edges", type=int, default=5_000_000, help="its edges (--large)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.10])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 10_000])
    ap.add_argument("--max-batches", type=int, default=300, help="timed batches of 1 and 100")
    ap.add_argument("--sources", type=int, default=100, help="PPR sources for precision@100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="where the data directories go")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--baseline", default=None, help="an old checkout's python: run both")
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)  # (a part of --baseline)
    ap.add_argument("--small-batches", nargs="+", default=None, metavar="PYTHON",
                    help="only batches of 100 on the 10%% share's stream, under each python")  # fmt: skip
    ap.add_argument("--one-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.small_batches:
        small_batches(args)
        return
    if args.baseline:
        compare(args)
        return
    names = REAL_GRAPHS if args.real is None or (args.real == [] and not args.large) else args.real
    if args.large and args.real == []:
        names = []
    results = []
    for name in names:
        edges, weights, times, directed = load(name)
        print(f"{name}: {edges.shape[0]:,} edges", flush=True)
        results.append(run_graph(name, edges, weights, times, directed, args))
    if args.large:
        g = power_law_graph(args.nodes, args.edges, seed=args.seed)
        src = np.repeat(g.node_ids, np.diff(g.indptr))
        edges = np.stack([src, g.node_ids[g.indices]], axis=1)
        del g
        label = f"powerlaw-{_short(args.nodes)}-{_short(args.edges)}"
        print(f"{label}: {edges.shape[0]:,} edges", flush=True)
        results.append(run_graph(label, edges, None, None, True, args))
    tag = args.tag or ("large" if args.large and not names else "real" if not args.large else "all")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": sys.executable,
        "commit": _commit(),
        "load": os.getloadavg(),
        "load_start": LOAD_START,
        "load_end": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "fingerprints": FINGERPRINTS,
        "targets": TARGETS,
        "results": results,
    }
    path = Path(args.out) if args.out else ROOT / "results" / f"graph-updates-{tag}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


def compare(args: argparse.Namespace) -> None:
    """Run the benchmark under ``--baseline``'s interpreter, then this one, back to back;
    write both reports and the ratios (new / old) of the headline figures."""
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:  # the same arguments without --baseline, --tag, --out
        if skip:
            skip = False
            continue
        if a in ("--baseline", "--tag", "--out"):
            skip = True
            continue
        if a.startswith(("--baseline=", "--tag=", "--out=")):
            continue
        argv.append(a)
    tag = args.tag or "compare"
    reports = {}
    with tempfile.TemporaryDirectory(prefix="sw-bench-gu-cmp-") as tmp:
        for side, python in (("baseline", args.baseline), ("current", sys.executable)):
            out = Path(tmp) / f"{side}.json"
            print(f"== {side}: {python}", flush=True)
            subprocess.run([python, __file__, *argv, "--tag", f"{tag}-{side}", "--out", str(out)],
                           check=True)  # fmt: skip
            reports[side] = json.loads(out.read_text())
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "load": os.getloadavg(),
        "load_start": LOAD_START,
        "load_end": os.getloadavg(),
        "baseline": reports["baseline"],
        "current": reports["current"],
        "ratios": ratios(reports["baseline"], reports["current"]),
    }
    path = ROOT / "results" / f"graph-updates-{tag}.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["ratios"], indent=1))
    print(f"wrote {path}")


def small_batches(args: argparse.Namespace) -> None:
    """Batches of 100 alone (the first ``--max-batches`` of the 10% share's stream of the
    generated graph, after the build and one untimed batch), with and without fingerprints,
    under each interpreter of ``--small-batches`` in turn (``--one-side``: this one, printing a
    JSON line)."""
    import subprocess

    if not args.one_side:
        runs = []
        for python in args.small_batches:
            cmd = [python, __file__, "--small-batches", python, "--one-side", "--nodes",
                   str(args.nodes), "--edges", str(args.edges), "--max-batches",
                   str(args.max_batches), "--seed", str(args.seed)]  # fmt: skip
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        report = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "commit": _commit(), "load": os.getloadavg(), "load_start": LOAD_START,
                  "load_end": os.getloadavg(), "runs": runs}  # fmt: skip
        path = ROOT / "results" / f"graph-updates-{args.tag or 'small-batches'}.json"
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")
        return
    g0 = power_law_graph(args.nodes, args.edges, seed=args.seed)
    src = np.repeat(g0.node_ids, np.diff(g0.indptr))
    edges = np.stack([src, g0.node_ids[g0.indices]], axis=1)
    kept, _, streamed, _ = split(edges, None, None, 0.10, args.seed)
    out: dict[str, Any] = {"python": sys.executable, "commit": _commit(),
                           "load_start": os.getloadavg()[0]}  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="sw-bench-gu-small-", dir=args.tmp)
    try:
        with shardwalk.Engine.open(tmp) as engine:
            g = engine.create_graph("g", kept, None)
            bare = engine.create_graph("bare", kept, None)
            g.build_fingerprints(**FINGERPRINTS, seed=args.seed)
            g.compact_ratio = bare.compact_ratio = 10.0
            for name, graph in (("fingerprints", g), ("bare", bare)):
                # untimed: the first update after a build loads the repair kernels from numba's
                # cache (0.1-0.3 s, once per process), more than 20 batches' steady work
                graph.upsert_edges(streamed[-100:])
                t0, c0 = time.perf_counter(), time.process_time()
                blocks = 0
                for i in range(args.max_batches):
                    report = graph.upsert_edges(streamed[i * 100 : (i + 1) * 100])
                    blocks += report.get("blocks_scanned", 0)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                n = 100 * args.max_batches
                out[name] = {"edges_per_second": n / wall, "edges_per_cpu_second": n / cpu,
                             "blocks_scanned_per_batch": blocks / args.max_batches}  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_end"] = os.getloadavg()[0]
    print(json.dumps(out))


def ratios(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """new / old of the headline figures, per graph and share (> 1: new is faster, or for
    the memory ratio and CPU seconds, < 1: new is smaller)."""
    out: dict[str, Any] = {}
    for g_old, g_new in zip(old["results"], new["results"]):
        for share, a in g_old["shares"].items():
            b = g_new["shares"][share]
            r: dict[str, Any] = {}
            for size in a["batches"]:
                for key in ("edges_per_second", "edges_per_second_acknowledged",
                            "edges_per_second_without_fingerprints",
                            "edges_per_second_with_first_read", "edges_per_cpu_second",
                            "edges_per_cpu_second_without_fingerprints"):  # fmt: skip
                    x, y = a["batches"][size].get(key), b["batches"].get(size, {}).get(key)
                    if x and y:
                        r[f"{key}_{size}"] = y / x
            for key in ("upsert_cpu_seconds", "first_read_cpu_seconds", "rebuild_cpu_seconds",
                        "speedup_cpu_with_first_read", "speedup_seconds"):  # fmt: skip
                x, y = a["one_batch"].get(key), b["one_batch"].get(key)
                if x and y:
                    r[f"one_batch_{key}"] = y / x
            for when in ("build", "after_stream"):
                r[f"walk_store_ratio_{when}"] = (
                    b[when]["walk_store_ratio"] / a[when]["walk_store_ratio"]
                )
            out[f"{g_old['graph']} {share}"] = r
    return out


if __name__ == "__main__":
    main()

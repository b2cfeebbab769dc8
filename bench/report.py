"""Render the benchmark JSON in bench/results/ as the markdown tables of bench/README.md.

python bench/report.py ann-clustered-1000000 ann-mnist filtered-clustered-1000000 server-clustered-100000 ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def ann(r: dict) -> str:
    out = [
        f"**{r['dataset']}** (n={r['n']:,}, dim={r['dim']}, {r['queries']} queries, k={r['k']}, "
        f"M={r['params']['m']}, efConstruction={r['params']['ef_construction']}, "
        f"{r['params']['threads']} threads, best of {r['params'].get('rounds', 1)} interleaved rounds)",
        "",
        "| system | build s | build peak MiB | setting | recall@10 | batch QPS | single p50 us | single p99 us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["systems"].items():
        for i, p in enumerate(s["points"] or [{}]):
            setting = next((f"{k}={p[k]}" for k in ("ef", "nprobe") if k in p), "-")
            head = (
                f"| {name} | {s['build_seconds']} | {s['build_peak_mib']:.0f} |"
                if i == 0
                else "| | | |"
            )
            if not p:
                out.append(head + " - | - | - | - | - |")
                continue
            out.append(
                f"{head} {setting} | {p['recall']:.4f} | {p['batch_qps']:,.0f} | "
                f"{p['single_p50_us']:.0f} | {p['single_p99_us']:.0f} |"
            )
    ratios = r["ratios"]
    out.append("")
    if "hnsw_batch_qps_vs_hnswlib" in ratios:
        rows = ratios["hnsw_batch_qps_vs_hnswlib"]
        out.append(
            "shardwalk hnsw / raw hnswlib batch QPS per ef: "
            + ", ".join(f"{x['ef']}: {x['ratio']:.3f}" for x in rows)
        )
        lat = ratios["hnsw_added_single_latency_us"]
        out.append(
            "; added single-query latency (p50, us) per ef: "
            + ", ".join(f"{x['ef']}: {x['p50']:+.1f}" for x in lat)
        )
    if "partitioned_minus_hnsw_recall" in ratios:
        out.append(
            "; partitioned minus hnsw recall at equal ef: "
            + ", ".join(
                f"{x['ef']}: {x['delta']:+.4f}" for x in ratios["partitioned_minus_hnsw_recall"]
            )
        )
    for key, value in ratios.items():
        if key.startswith("partitioned_build_speedup"):
            out.append(f"; partitioned build speedup, 2 threads vs 1: {value:.2f}x")
    return "\n".join(out) + "\n"


def filtered(r: dict) -> str:
    out = [
        f"**{r['dataset']}** (n={r['n']:,}, dim={r['dim']}, {r['tenants']} tenants, "
        f"{r['queries_per_scope']} queries per scope, HNSW M={r['params']['m']} "
        f"efConstruction={r['params']['ef_construction']} ef={r['params']['ef']})",
        "",
        "| bucket | system | recall@10 | QPS | shardwalk / per-tenant | shardwalk / shared filter |",
        "|---|---|---|---|---|---|",
    ]
    for bucket, systems in r["buckets"].items():
        for i, (name, v) in enumerate(sorted(systems.items(), key=lambda x: x[0] != "shardwalk")):
            extra = ""
            if name == "shardwalk":
                extra = (
                    f" {v.get('qps_vs_per_tenant', '-')} | {v.get('qps_vs_shared_filter', '-')} |"
                )
            else:
                extra = " | |"
            out.append(
                f"| {bucket if i == 0 else ''} | {name} | {v['recall']:.4f} | {v['qps']:,.0f} |{extra}"
            )
    paths = sorted({(s["bucket"], s["shardwalk_path"]) for s in r["scopes"]})
    out += [
        "",
        "shardwalk paths per bucket: " + ", ".join(f"{b}: {p}" for b, p in paths),
        "",
        "memory (MiB above the process before the build): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in r["memory_mib"].items()),
        f"; shardwalk / shared hnswlib: {r['memory_ratio_shardwalk_vs_shared_hnswlib']}x",
    ]
    return "\n".join(out) + "\n"


def server(r: dict) -> str:
    p = r["params"]
    cs = p["concurrency"]
    out = [
        f"**{r['dataset']}** (n={r['n']:,}, dim={r['dim']}, k={r['k']}, HNSW M={p['m']} "
        f"efConstruction={p['ef_construction']} ef={p['ef']}; 2% tenant {r['tenant']['name']} "
        f"({r['tenant']['rows']:,} rows); {p['warmup_seconds']}s warm-up + "
        f"{p['duration_seconds']}s per point, best of {p['rounds']} interleaved rounds)",
        "",
        "| workload | system | recall@10 | "
        + " | ".join(f"c={c} QPS | c={c} p50 ms | c={c} p99 ms" for c in cs)
        + " | CPU us/call client + server (c=8) |",
        "|---|---|---|" + "---|---|---|" * len(cs) + "---|",
    ]
    scopes: list[str] = []
    for per in r["search"].values():
        scopes += [s for s in per if s not in scopes]
    for scope in scopes:
        first = True
        for system, per in r["search"].items():
            if scope not in per:
                continue
            pts = {q["threads"]: q for q in per[scope]}
            cells = []
            for c in cs:
                q = pts.get(c)
                cells.append(
                    "- | - | -"
                    if q is None
                    else f"{q['qps']:,.0f} | {q['p50_us'] / 1e3:.2f} | {q['p99_us'] / 1e3:.1f}"
                )
            q8 = pts.get(8) or pts[cs[-1]]
            cpu = f"{q8['client_cpu_us_per_call']:.0f}"
            if "server_cpu_us_per_call" in q8:
                cpu += f" + {q8['server_cpu_us_per_call']:.0f}"
            rec = "-" if system == "grpc-floor" else f"{pts[cs[0]]['recall']:.3f}"
            out.append(
                f"| {scope if first else ''} | {system} | {rec} | "
                + " | ".join(cells)
                + f" | {cpu} |"
            )
            first = False
    buckets = r.get("bucket_recall")
    if buckets:
        labels = list(buckets["tenants"])
        out += [
            "",
            "Tenant-scoped recall@10 per tenant size bucket (lowest tenant of the bucket; "
            + "; ".join(
                f"{b}: " + ", ".join(f"{t['tenant']} {t['share']:.2%}" for t in ts)
                for b, ts in buckets["tenants"].items()
            )
            + ")",
            "",
            "| system | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for system, per in buckets["recall"].items():
            out.append(
                f"| {system} | "
                + " | ".join(f"{per[b]['min']:.3f}" if b in per else "-" for b in labels)
                + " |"
            )
    built = r["built"]
    keys = ("build_seconds", "insert_seconds", "start_seconds")
    out += [
        "",
        "Build (s): "
        + "; ".join(
            f"{k} " + ", ".join(f"{n.split('_')[0]} {v[n]}" for n in keys if n in v)
            for k, v in built.items()
            if k != "shardwalk"
        ),
    ]
    sw = built["shardwalk"]
    out.append(
        f"; shardwalk collection {sw['collection_seconds']}s, graph + fingerprints "
        f"{sw['graph_seconds']}s"
    )
    return "\n".join(out) + "\n"


def graph_updates(r: dict) -> str:
    """bench/graph_updates.py: per graph and share, the stream, the one-batch repair against a
    rebuild, accuracy and memory."""
    load = r.get("load")
    out = [
        f"`{r['command']}` (commit {r.get('commit') or '?'}"
        + (f", load at the end {load[0]:.1f}" if load else "")
        + ")",
        "",
        "| graph | share | edges/s b=100 / 10k (10k with first read; without fp) "
        "| one batch: repair s + first read s vs rebuild s | x repair only / with read "
        "(CPU) | p@100 fp repaired/fresh | walk store / fp: build, after stream | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in r["results"]:
        for share, x in g["shares"].items():
            b = x["batches"]
            small = b.get("100", {}).get("edges_per_second")
            big = b.get("10000", {})
            read = big.get("edges_per_second_with_first_read")
            read_s = f"{read:,.0f}" if read else "-"
            edges = (
                f"{small:,.0f} / {big.get('edges_per_second', 0):,.0f} "
                f"({read_s}; {big.get('edges_per_second_without_fingerprints', 0):,.0f})"
                if big and small is not None
                else "-"
            )
            o = x["one_batch"]
            first = o.get("first_read_seconds")
            cost = f"{o['repair_seconds']:.2f}" + (f" + {first:.2f}" if first is not None else "")
            with_read = o.get("speedup_with_first_read")
            times = f"{o['speedup_seconds']:.1f}x" + (
                f" / {with_read:.1f}x ({o['speedup_cpu_with_first_read']:.1f}x)"
                if with_read is not None
                else ""
            )
            a = x["accuracy"]
            mem = f"{x['build']['walk_store_ratio']:.2f}x, {x['after_stream']['walk_store_ratio']:.2f}x"
            out.append(
                f"| {g['graph']} | {share} ({x['streamed_edges']:,}) | {edges} | {cost} vs "
                f"{o['rebuild_seconds']:.2f} | {times} | {a['fingerprint_repaired']:.3f}/"
                f"{a['fingerprint_fresh']:.3f} | {mem} | {o['load']:.1f} |"
            )
    return "\n".join(out)


def main() -> None:
    for stem in sys.argv[1:]:
        r = json.loads((RESULTS / f"{stem}.json").read_text())
        if stem.startswith("ann"):
            print(ann(r))
        elif stem.startswith("server"):
            print(server(r))
        elif stem.startswith("graph-updates"):
            print(graph_updates(r))
        else:
            print(filtered(r))


if __name__ == "__main__":
    main()

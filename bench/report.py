"""Render the benchmark JSON in bench/results/ as the markdown tables of bench/README.md.

python bench/report.py ann-clustered-1000000 ann-mnist filtered-clustered-1000000 server-clustered-100000 ...
"""

from __future__ import annotations

import json
import re
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
                if q is None:
                    cells.append("- | - | -")
                    continue
                qps = f"{q['qps']:,.0f}"
                if "queries_per_second" in q:  # requests of several queries
                    qps += f" ({q['queries_per_second']:,.0f} queries/s)"
                cells.append(f"{qps} | {q['p50_us'] / 1e3:.2f} | {q['p99_us'] / 1e3:.1f}")
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
    plans = r.get("pgvector_plans") or {}
    if plans:
        out += [
            "",
            "Plans PostgreSQL ran (`EXPLAIN` of the prepared statement, costs dropped):",
            "",
        ]
        for name, plan in plans.items():
            nodes = [re.sub(r"\s+\(cost=[^)]*\)", "", line).rstrip() for line in plan.splitlines()]
            out.append(f"- {name}: " + " / ".join(n.strip() for n in nodes if n.strip()))
    targets = {k: v for k, v in (r.get("targets") or {}).items() if "pgvector" in k or "CPU" in k}
    if targets:
        out += ["", "| target (same run) | observed | met |", "|---|---|---|"]
        for name, v in targets.items():
            seen = ", ".join(f"{k} {x}" for k, x in v.items() if k != "met")
            out.append(f"| {name} | {seen} | {'yes' if v['met'] else '**no**'} |")
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


def ray_build(stem: str, r: dict) -> str:
    """bench/ray_build.py's tables (its own renderer), then the issue-27 ratios of the run."""
    from ray_build import table  # bench/ is this script's directory, first on sys.path

    out = [f"commit {r.get('commit', '?')}, load {r.get('load_start', '?')} -> "
           f"{r.get('load_end', '?')}", "", table([str(RESULTS / f"{stem}.json")]).rstrip()]  # fmt: skip
    build = r.get("ratios", {}).get("build", {})
    shown = {k: v for k, v in build.items() if v is not None and not isinstance(v, dict)}
    if shown:
        out.append("")
        out.append("; ".join(f"{k}: {v:.2f}" for k, v in shown.items()))
    return "\n".join(out) + "\n"


def ppr(r: dict) -> str:
    """bench/ppr.py: accuracy="fast"/"high" as calibrated per graph, against what they ran
    before, the exact solver and igraph, in one run."""
    meta = r["meta"]
    head = (
        "| graph | nodes | edges | fast: calibrated method | p@100 | p50 ms (CPU ms) | work p50 "
        "| fast before: p@100, p50 ms (CPU ms) | fast speed-up | high: calibrated method | p@100 "
        "| p50 ms (CPU ms) | high before: p@100, p50 ms (CPU ms) | exact p50 ms | igraph ms/query "
        "| load 1-min |"
    )
    out = [
        f"commit {meta.get('engine', {}).get('commit', '?')[:10]}, {meta['threads']} threads, "
        f"latency: the fastest of {r['graphs'][0]['methods'][0]['latency'].get('repeat', 1)} "
        "runs per query, p50 over the queries; precision@100 against power iteration "
        "(l1 <= 1e-10) over each source's reached nodes; work = pushed out-edges + "
        "fingerprint entries composed + nodes touched",
        "",
        head,
        "|" + "---|" * head.count(" | ") + "---|",
    ]
    met: dict[str, list[bool]] = {"fast": [], "high": []}
    cpu: dict[str, list[bool]] = {"fast": [], "high": []}
    for g in r["graphs"]:
        by = {m["label"]: m for m in g["methods"]}

        def cell(label: str, by: dict = by) -> tuple[str, float, float, float, str]:
            m = by[label]
            params = ", ".join(f"{k}={v}" for k, v in m["params"].items())
            lat = m["latency"]
            cpu = f" ({lat['cpu_p50_ms']:.2f})" if "cpu_p50_ms" in lat else ""
            return (
                f"{m['method']} ({params})",
                m["accuracy"]["all"]["precision"],
                lat["p50_ms"],
                lat.get("work_p50", float("nan")),
                f"{lat['p50_ms']:.2f}{cpu}",
            )

        fm, fp, fms, fw, fs = cell("accuracy=fast")
        _, bp, bms, _, bs = cell("hybrid r_max=5e-5 (fast before)")
        hm, hp, _, _, hs = cell("accuracy=high")
        _, hbp, _, _, hbs = cell("hybrid r_max=3e-6 via hubs (high before)")
        exact = by["exact l1<=1e-10"]["latency"]["p50_ms"]
        ig = g.get("competitors", {}).get("igraph")
        ig_ms = f"{ig['per_query_seconds_median'] * 1e3:.1f}" if isinstance(ig, dict) else "-"
        load = g.get("load_before_methods", [float("nan")])[0]
        t = g["accuracy_targets"]
        for name in ("fast", "high"):
            met[name].append(t[name]["met"])
            cpu[name].append(t[name].get("met_by_cpu_time", False))
        out.append(
            f"| {g['graph']} | {g['nodes']:,} | {g['edges']:,} | {fm} | **{fp:.3f}** | "
            f"**{fs}** | {fw:,.0f} | {bp:.3f}, {bs} | {bms / fms:.1f}x | {hm} | "
            f"**{hp:.3f}** | **{hs}** | {hbp:.3f}, {hbs} | {exact:.1f} | {ig_ms} | "
            f"{load:.1f} |"
        )
    out += [
        "",
        "Targets (p@100 >= 0.8 at p50 <= 2 ms; >= 0.95 at <= 25 ms) met on "
        f"{sum(met['fast'])}/{len(met['fast'])} graphs (fast), "
        f"{sum(met['high'])}/{len(met['high'])} (high) by wall-clock p50; by CPU time "
        f"{sum(cpu['fast'])}/{len(cpu['fast'])} and {sum(cpu['high'])}/{len(cpu['high'])}.",
        "",
        "Calibration (counted work; precision against power iteration to l1 <= 1e-5 on the "
        "sampled sources; met = the bar reached within the work budget):",
        "",
        "| graph | fast: precision, work, met | high: precision, work, met | calibration s |",
        "|---|---|---|---|",
    ]
    for g in r["graphs"]:
        c = g["fingerprints"]["accuracy_calibration"]
        cells = [
            f"{c[s]['precision']:.3f}, {c[s]['work_p50']:,}, {'yes' if c[s]['met'] else 'NO'}"
            for s in ("fast", "high")
        ]
        secs = g["fingerprints"].get("calibration_seconds", float("nan"))
        out.append(f"| {g['graph']} | {cells[0]} | {cells[1]} | {secs:.1f} |")
    return "\n".join(out) + "\n"


def _setting(s: dict) -> str:
    parts = [s["fuse"], f"knn_k {s['knn_k']}", f"alpha {s['alpha']}"]
    if s.get("weight") is not None:
        parts.append(f"weight {s['weight']}")
    if s.get("temperature") is not None:
        parts.append(f"T {s['temperature']}")
    return ", ".join(parts)


def compose_quality(r: dict) -> str:
    """bench/compose_quality.py: recall@k per method and graph, the variants, latency."""
    graphs = r["graphs"]
    names = list(graphs)
    if not graphs:
        return _large(r["large"]) + "\n"
    sizes = ", ".join(
        f"{n}: {g['queries']} queries, {g['nodes']:,} nodes" for n, g in graphs.items()
    )
    out = [
        f"Held-out neighbours, recall@{r['k']} ({sizes}; commit {r['commit'][:8]}, load "
        f"{r['load_start']} at start, {r['load_end']} at end)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    rows = [
        ("kNN alone", "knn"),
        ("compose at library defaults (rrf, knn_k 10, alpha 0.5)", "compose_defaults"),
        ("best of the issue's grid (scored by shardwalk.evaluate)", "grid_best"),
        ("the same setting through Engine.compose", "grid_best_compose"),
        ("compose at defaults after calibrate_compose", "compose_calibrated"),
        ("HippoRAG recipe (faiss + igraph PPR), calibrated alpha", "hipporag_calibrated_alpha"),
        ("HippoRAG recipe, its damping 0.5 (small graphs only)", "hipporag_damping_0.5"),
    ]
    for label, key in rows:
        cells = []
        for g in graphs.values():
            v, knn = g["recall"].get(key), g["recall"]["knn"]
            cells.append("-" if v is None else f"{v:.3f} ({v / knn:.2f}x)")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append(
        "| grid's best setting | "
        + " | ".join(_setting(g["grid_best_setting"]) for g in graphs.values())
        + " |"
    )
    out.append(
        "| calibrated setting (its own held-out recall, seconds) | "
        + " | ".join(
            f"{_setting(g['calibrated'])} ({g['calibrated']['recall']:.3f}, "
            f"{g['calibration_seconds']:.1f}s)"
            for g in graphs.values()
        )
        + " |"
    )
    out.append(
        "| calibrated minus grid's best | "
        + " | ".join(f"{g['ratios']['calibrated_minus_grid_best']:+.3f}" for g in graphs.values())
        + " |"
    )
    out += [
        "",
        "Single-query p50 latency, ms (back to back per query; the peer's stages in process):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key in (
        ("kNN alone (flat)", "knn"),
        ("compose, calibrated defaults", "compose_calibrated"),
        ("compose adds to kNN", "added"),
        ("kNN alone, one thread per call", "knn_1t"),
        ("compose, one thread per call", "compose_calibrated_1t"),
        ("compose adds to kNN, one thread per call", "added_1t"),
        ("kNN alone, CPU ms per call (one thread)", "knn_cpu"),
        ("compose, CPU ms per call (one thread)", "compose_calibrated_cpu"),
        ("compose adds to kNN, CPU ms per call", "added_cpu"),
        ("HippoRAG recipe: faiss kNN + igraph PPR", "hipporag_total"),
    ):
        out.append(
            f"| {label} | "
            + " | ".join(f"{g['latency_p50_ms'][key]:.2f}" for g in graphs.values())
            + " |"
        )
    out += [
        "",
        "Fused variants (each at its best knn_k 10/20/40 x alpha 0.1/0.2/0.3 x weight "
        "0.2/0.5/0.8), recall@10:",
        "",
        "| seeds | fusion | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    first = graphs[names[0]]["variants"]
    for i, v in enumerate(first):
        cells = [f"{g['variants'][i]['recall']:.3f}" for g in graphs.values()]
        out.append(f"| {v['seeds']} | {v['fuse']} | " + " | ".join(cells) + " |")
    if r.get("large"):
        out += ["", _large(r["large"])]
    return "\n".join(out) + "\n"


def _large(large: dict) -> str:
    lat = large["latency_p50_ms"]
    return (
        f"Generated graph of {large['nodes']:,} nodes (HNSW): calibration "
        f"{large['calibration_seconds']:.1f}s; kNN p50 {lat['knn']:.2f} ms, compose p50 "
        f"{lat['compose_calibrated']:.2f} ms (adds {lat['added']:+.2f} ms; one thread per "
        f"call: kNN {lat['knn_1t']:.2f}, compose {lat['compose_calibrated_1t']:.2f}, adds "
        f"{lat['added_1t']:+.2f} ms; CPU per call adds {lat['added_cpu']:+.2f} ms); "
        f"calibrated {_setting(large['calibrated'])}: recall {large['calibrated']['recall']:.3f} "
        f"vs kNN {large['calibrated']['knn_recall']:.3f}; load {large['load']}"
    )


def _run_line(r: dict, note: str = "") -> str:
    """The command, commit and load at the end of a run."""
    load = r.get("load")
    return (
        f"`{r['command']}` (commit {r.get('commit') or '?'}"
        + (f", load at the end {load[0]:.1f}" if load else "")
        + f"){note}"
    )


def graph_updates(r: dict) -> str:
    """bench/graph_updates.py: per graph and share, the stream, the one-batch repair against a
    rebuild, accuracy and memory."""
    out = [
        _run_line(r),
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


def graph_updates_small(r: dict) -> str:
    """bench/graph_updates.py --small-batches: batches of 100 under each checkout in turn."""
    out = [
        _run_line(r, "; one checkout after the other"),
        "",
        "| checkout (python) | edges/s with fp (per CPU s) | without fp (per CPU s) "
        "| blocks scanned a batch | load start -> end |",
        "|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        fp, bare = x["fingerprints"], x["bare"]
        out.append(
            f"| {x.get('commit') or '?'} ({x['python']}) | {fp['edges_per_second']:,.0f} "
            f"({fp['edges_per_cpu_second']:,.0f}) | {bare['edges_per_second']:,.0f} "
            f"({bare['edges_per_cpu_second']:,.0f}) | {fp['blocks_scanned_per_batch']:,.0f} "
            f"| {x['load_start']:.1f} -> {x['load_end']:.1f} |"
        )
    return "\n".join(out)


def graph_updates_compare(r: dict) -> str:
    """bench/graph_updates.py --baseline: both sides' tables, then new / old per figure."""
    out = [
        _run_line(r, "; baseline first, then this checkout, back to back"),
        "",
        f"Baseline (commit {r['baseline'].get('commit') or '?'}):",
        "",
        graph_updates(r["baseline"]),
        "",
        f"This checkout (commit {r['current'].get('commit') or '?'}):",
        "",
        graph_updates(r["current"]),
        "",
        "| graph, share | new / old |",
        "|---|---|",
    ]
    for where, ratios in r["ratios"].items():
        shown = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
        out.append(f"| {where} | {shown} |")
    return "\n".join(out)


def flood(r: dict) -> str:
    """bench/flood.py: tenant b's search latency alone and under tenant a's flood, per
    [limits] background_nice, in the order run."""
    out = [
        f"`{r['command']}` (commit {r['commit'][:8]}, load {r['load_start']:.2f} -> "
        f"{r['load_end']:.2f}, {r['cores']} cores)",
        "",
        "| a's callers | jitter | background_nice | b p50 alone ms | b p99 alone ms "
        "| b p50 flooded ms | b p99 flooded ms | p99 flooded / alone | a's solves | refused |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        out.append(
            f"| {x.get('callers', 32)} | {'yes' if x.get('jitter') else 'no'} | "
            f"{x['background_nice']} | {x['alone_p50_ms']:.2f} | {x['alone_p99_ms']:.2f} | "
            f"{x['flooded_p50_ms']:.2f} | {x['flooded_p99_ms']:.2f} | {x['p99_ratio']:.1f}x | "
            f"{x['a_solves']} | {x['a_refused']} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    for stem in sys.argv[1:]:
        r = json.loads((RESULTS / f"{stem}.json").read_text())
        if stem.startswith("flood"):
            print(flood(r))
        elif stem.startswith("compose_quality"):
            print(compose_quality(r))
        elif stem.startswith("ray_build"):
            print(ray_build(stem, r))
        elif stem.startswith("ann"):
            print(ann(r))
        elif stem.startswith("server"):
            print(server(r))
        elif stem.startswith("ppr"):
            print(ppr(r))
        elif stem.startswith("graph-updates"):
            if "runs" in r:
                print(graph_updates_small(r))
            else:
                print(graph_updates_compare(r) if "ratios" in r else graph_updates(r))
        else:
            print(filtered(r))


if __name__ == "__main__":
    main()

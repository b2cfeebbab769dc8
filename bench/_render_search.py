"""The tables of the vector-search benchmarks in bench/README.md (bench/report.py renders them):
ann, filtered, spann, concurrency and server; :func:`run_line`, the run a results JSON of
bench/runinfo.py records."""

from __future__ import annotations

import re


def run_line(r: dict) -> str:
    """The command, commit and load a results JSON written with bench/runinfo.py records."""
    run = r["run"]
    files = [line.split()[-1] for line in run.get("uncommitted_files", [])]
    dirty = f" with uncommitted changes to {', '.join(files)}" if files else ""
    return (
        f"`{run['command']}` (commit {run['commit'][:8]}{dirty}, load {run['load_start'][0]:.2f} "
        f"-> {run['load_end'][0]:.2f} on {run['cores']} cores)"
    )


def _head(r: dict, details: str) -> list[str]:
    """The first lines of a rendering: the run, then the dataset with its size and ``details``."""
    return [run_line(r), "", f"**{r['dataset']}** (n={r['n']:,}, dim={r['dim']}, {details})", ""]


def ann(r: dict) -> str:
    p = r["params"]
    out = [
        *_head(
            r,
            f"{r['queries']} queries, k={r['k']}, M={p['m']}, efConstruction="
            f"{p['ef_construction']}, {p['threads']} threads, {p['singles']} single queries, "
            f"best of {p.get('rounds', 1)} interleaved rounds",
        ),
        "| system | build s | build peak MiB | resident MiB | setting | recall@10 | batch QPS "
        "| single p50 us | single p99 us |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["systems"].items():
        for i, pt in enumerate(s["points"] or [{}]):
            setting = next((f"{k}={pt[k]}" for k in ("ef", "nprobe") if k in pt), "-")
            head = (
                f"| {name} | {s['build_seconds']} | {s['build_peak_mib']:.0f} | "
                f"{s['resident_mib']:.0f} |"
                if i == 0
                else "| | | | |"
            )
            if not pt:
                out.append(head + " - | - | - | - | - |")
                continue
            out.append(
                f"{head} {setting} | {pt['recall']:.4f} | {pt['batch_qps']:,.0f} | "
                f"{pt['single_p50_us']:.0f} | {pt['single_p99_us']:.0f} |"
            )
    ratios = r["ratios"]
    lines = []
    if "hnsw_vs_faiss_hnsw" in ratios:
        lines.append(
            "shardwalk hnsw / raw faiss IndexHNSWFlat (the index it wraps), batch QPS per ef: "
            + ", ".join(
                f"{x['ef']}: {x['batch_qps_ratio']:.2f}" for x in ratios["hnsw_vs_faiss_hnsw"]
            )
            + "; added single-query p50, us: "
            + ", ".join(
                f"{x['ef']}: {x['added_p50_us']:+.0f}" for x in ratios["hnsw_vs_faiss_hnsw"]
            )
        )
    if "hnsw_batch_qps_vs_hnswlib" in ratios:
        lines.append(
            "shardwalk hnsw / raw hnswlib batch QPS per ef: "
            + ", ".join(f"{x['ef']}: {x['ratio']:.2f}" for x in ratios["hnsw_batch_qps_vs_hnswlib"])
            + "; added single-query p50, us: "
            + ", ".join(
                f"{x['ef']}: {x['p50']:+.0f}" for x in ratios["hnsw_added_single_latency_us"]
            )
        )
    for key, label in (
        ("partitioned_minus_hnsw_recall", "partitioned minus shardwalk hnsw recall at equal ef"),
        ("partitioned_minus_hnswlib_recall", "partitioned minus raw hnswlib recall at equal ef"),
        ("hnswlib_rebuild_minus_hnswlib_recall", "a second raw hnswlib build minus the first"),
    ):
        if key in ratios:
            lines.append(
                f"{label}: " + ", ".join(f"{x['ef']}: {x['delta']:+.4f}" for x in ratios[key])
            )
    for key, value in ratios.items():
        if key.startswith("partitioned_build_speedup"):
            lines.append(f"partitioned build, {p['threads']} threads vs 1: {value:.2f}x")
    if lines:
        out += ["", *(f"- {line}" for line in lines)]
    return "\n".join(out) + "\n"


def _times(x: float | None) -> str:
    """A ratio as '3.47x' (or '8,691x' when large; '-' when absent)."""
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x"


def filtered(r: dict) -> str:
    p = r["params"]
    out = [
        *_head(
            r,
            f"{r['tenants']} tenants, {r['queries_per_scope']} queries per scope in one call "
            f"({p['filtered_queries']} for hnswlib's Python filter), HNSW M={p['m']} "
            f"efConstruction={p['ef_construction']} ef={p['ef']}, {p['threads']} threads, "
            f"shardwalk quantization {p['quantization']}",
        ),
        "| bucket | system | recall@10 | QPS | shardwalk / per-tenant | shardwalk / faiss bitmap "
        "at matched recall | shardwalk / exact scan | shardwalk / hnswlib filter |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = ["shardwalk", "hnswlib-per-tenant", "faiss-hnsw-bitmap-matched", "faiss-hnsw-bitmap",
             "hnswlib-shared-filter", "exact-scan"]  # fmt: skip
    for bucket, systems in r["buckets"].items():
        names = sorted(systems, key=lambda x: order.index(x) if x in order else len(order))
        for i, name in enumerate(names):
            v = systems[name]
            label = name
            if name == "faiss-hnsw-bitmap-matched":
                ef = "/".join(str(e) for e in v["ef"])
                label = f"faiss-hnsw-bitmap, recall-matched: efSearch {ef}" + (
                    "" if v["reached"] else " (short of shardwalk's recall at the largest)"
                )
            elif name == "faiss-hnsw-bitmap":
                label = f"faiss-hnsw-bitmap, efSearch {p['ef']}"
            extra = " | | | |"
            if name == "shardwalk":
                matched = systems["faiss-hnsw-bitmap-matched"]
                vs_faiss = _times(v["qps_vs_faiss_bitmap_matched"]) + (
                    "" if matched["reached"] else f" (faiss at recall {matched['recall']:.3f})"
                )
                extra = (
                    f" {_times(v.get('qps_vs_per_tenant'))} | {vs_faiss} | "
                    f"{_times(v['qps'] / systems['exact-scan']['qps'])} | "
                    f"{_times(v['qps_vs_shared_filter'])} |"
                )
            out.append(
                f"| {bucket if i == 0 else ''} | {label} | {v['recall']:.4f} | {v['qps']:,.0f} |"
                f"{extra}"
            )
    paths = sorted({(s["bucket"], s["shardwalk_path"]) for s in r["scopes"]})
    scoped = all(x["in_scope"] for s in r["scopes"] for x in s["systems"].values())
    out += [
        "",
        "- shardwalk's path per bucket: " + ", ".join(f"{b}: {path}" for b, path in paths),
        f"- every result of every system inside its scope: {'yes' if scoped else '**no**'}",
        "- resident memory growth over each build, MiB: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in r["memory_mib"].items())
        + f"; shardwalk / shared hnswlib {r['memory_ratio_shardwalk_vs_shared_hnswlib']}x",
        "- build s: " + ", ".join(f"{k} {v}" for k, v in r["build_seconds"].items()),
    ]
    return "\n".join(out) + "\n"


def spann(r: dict) -> str:
    """bench/spann.py: the collection's measured memory and latency, the index's sweep warm
    and cold, the baselines' sweeps, the inserts."""
    c, sw, sm = r["collection"], r["spann"], r["summary"]
    st = sw["stats_after_build"]
    ins = sw["inserts"]
    at = sm["spann_warm_mmap"]

    def setting(x: dict) -> str:
        if "eps_search" not in x:
            return "defaults"
        return f"eps {x['eps_search']}, max_probes {x['max_probes']}"

    searched = "; ".join(
        f"{setting(x)}: recall {x['recall']:.3f}, p50 {x['p50_us']:.0f} us" for x in c["search"]
    )
    out = [
        *_head(
            r,
            f"{r['queries']} single queries back to back; spann max_list_size "
            f"{sw['params']['max_list_size']}",
        ),
        f"- **Resident memory of a spann collection, measured: {c['resident_mib']:.1f} MiB = "
        f"{c['resident_over_raw']:.3f} of the {c['raw_vectors_mib']:.1f} MiB of raw vectors** "
        f"(a fresh process's growth over opening the checkpointed collection and searching all "
        f"the queries; of it {c.get('anon_mib', '?')} MiB anonymous and {c.get('file_mib', '?')} "
        "MiB the posting files' mapped pages; "
        f"{c['resident_mib_after_open']:.1f} MiB right after the open; the process's first "
        f"open and close of it, before: +{c.get('first_open_and_close_mib', '?')} MiB; the index's "
        f"own estimate of its part: {c['index_resident_bytes_estimate_mib']:.1f} MiB). Built by "
        f"upserts and a checkpoint in {c['build_seconds']:.1f} s.",
        f"- Through `Collection.search` in that process: {searched}.",
        f"- The index alone (`SpannIndex`, below): built in {sw['build_seconds']:.1f} s (peak "
        f"+{sw['build_peak_mib']:.0f} MiB); {st['lists']:,} lists, replication "
        f"{st['replication_factor']}.",
    ]
    if at:
        cmp = ", ".join(
            f"{name} {sm[name]['p50_us']:.0f} us ({sm[f'spann_warm_over_{name}_p50_us']:.2f}x)"
            for name in r["baselines"]
            if sm.get(name) and f"spann_warm_over_{name}_p50_us" in sm
        )
        out.append(
            f"- Cheapest setting reaching recall@10 {sm['target_recall']}, p50: spann warm "
            f"{at['p50_us']:.0f} us (eps {'off' if at['eps_search'] >= 1000 else at['eps_search']}, "
            f"max_probes {at['max_probes']}, "
            f"recall {at['recall']:.3f}); {cmp}."
        )
    out.append(
        f"- +{ins['inserted']:,} rows on {ins['built_on']:,} in 10 batches: recall@10 at "
        f"defaults {ins['recall_before']:.4f} -> {ins['recall_after']:.4f}; acknowledged in "
        f"{ins['insert_seconds_acknowledged']:.1f} s, splits done at "
        f"{ins['insert_seconds_with_splits']:.1f} s ({ins['stats_after']['splits']} splits)."
    )
    out += [
        "",
        "| eps_search | max_probes | recall@10 | lists probed | KiB read | warm mmap p50 / mean us "
        "| warm pread p50 / mean us | cold pread p50 / mean us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sw["sweep"]:
        w = row["warm_mmap"]
        eps = "off" if row["eps_search"] >= 1000 else row["eps_search"]
        cells = " | ".join(
            f"{row[m]['p50_us']:.0f} / {row[m]['mean_us']:.0f}"
            for m in ("warm_mmap", "warm_pread", "cold_pread")
        )
        out.append(
            f"| {eps} | {row['max_probes']} | {w['recall']:.4f} | {w['lists_probed']} | "
            f"{w['bytes_read'] / 1024:.0f} | {cells} |"
        )
    out += [
        "",
        "| system | build s | resident MiB | setting | recall@10 | p50 us | mean us | p99 us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in r["baselines"].items():
        for i, row in enumerate(b["sweep"]):
            knob = next(k for k in ("nprobe", "ef") if k in row)
            head = (
                f"| {name} | {b['build_seconds']:.1f} | {b['resident_mib']:.0f} |"
                if i == 0
                else "| | | |"
            )
            out.append(
                f"{head} {knob}={row[knob]} | {row['recall']:.4f} | {row['p50_us']:.0f} | "
                f"{row['mean_us']:.0f} | {row['p99_us']:.0f} |"
            )
    return "\n".join(out) + "\n"


def concurrency(r: dict) -> str:
    """bench/concurrency.py: search QPS per thread count, p99 during a checkpoint, single-row
    upserts per writer count, resident memory in fresh processes."""
    m, p = r["machine"], r["params"]
    src = r["shardwalk_source"]
    dirty = " (with uncommitted changes)" if src.get("uncommitted_engine_files") else ""
    out = [
        (f"`{r['command']}` " if "command" in r else "The command above ")
        + f"(commit {src['commit'][:8]}{dirty}, load {m['loadavg_before'][0]:.2f} -> "
        f"{m['loadavg_after'][0]:.2f} on {m['cpus']} cores)",
        "",
        f"**{r['dataset']}**, index {r['index']} (HNSW M={p['m']} efConstruction="
        f"{p['ef_construction']} ef={p['ef']}, k={r['k']}; 2% tenant {r['tenant']['name']}, "
        f"{r['tenant']['rows']:,} rows; {p['warmup_seconds']}s warm-up + "
        f"{p['duration_seconds']}s per point, best of {p['search_rounds']} interleaved rounds)",
    ]
    search = r.get("search")
    if search:
        cols = [(sys_, scope) for scope in ("unfiltered", "tenant-2%") for sys_ in search]
        out += [
            "",
            "| threads | " + " | ".join(f"{s} {scope} QPS (p99)" for s, scope in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for t in p["threads"]:
            cells = []
            for s, scope in cols:
                q = next((x for x in search[s][scope] if x["threads"] == t), None)
                cells.append("-" if q is None else f"{q['qps']:,.0f} ({q['p99_us'] / 1e3:.2f} ms)")
            out.append(f"| {t} | " + " | ".join(cells) + " |")
        out += [
            "",
            "recall@10: "
            + ", ".join(f"{s} {scope} {search[s][scope][0]['recall']:.3f}" for s, scope in cols),
        ]
    if r.get("checkpoint"):
        out += ["", "| system | search p99 idle us | during a checkpoint us | ratio |",
                "|---|---|---|---|"]  # fmt: skip
        for s, c in r["checkpoint"].items():
            out.append(
                f"| {s} | {c['idle']['p99_us']:.0f} | {c['during']['p99_us']:.0f} | "
                f"{c.get('p99_ratio_during_vs_idle', '-')}x |"
            )
    if r.get("writes"):
        writers = p["writers"]
        out += ["", "| system | " + " | ".join(f"{w} writers: upserts/s (p50 ms)" for w in writers)
                + " |", "|---|" + "---|" * len(writers)]  # fmt: skip
        for s, pts in r["writes"].items():
            by = {x["threads"]: x for x in pts}
            out.append(
                f"| {s} | "
                + " | ".join(
                    f"{by[w]['upserts_per_second']:,.0f} ({by[w]['p50_us'] / 1e3:.2f})"
                    if w in by
                    else "-"
                    for w in writers
                )
                + " |"
            )
    if r.get("memory"):
        mem = r["memory"]
        raw = mem.get("hnswlib", {}).get("resident_mib")
        out += [
            "",
            "| system (a fresh process each) | resident growth MiB | after malloc_trim MiB | "
            "build s | / raw hnswlib |",
            "|---|---|---|---|---|",
        ]
        for s, x in mem.items():
            if "error" in x:
                out.append(f"| {s} | failed: {x['error']} | | | |")
                continue
            ratio = f"{x['resident_mib'] / raw:.2f}x" if raw else "-"
            out.append(
                f"| {s} | {x['resident_mib']:.1f} | {x.get('resident_after_trim_mib')} | "
                f"{x['build_seconds']} | {ratio} |"
            )
    shown = {k: v for k, v in r.get("ratios", {}).items() if not k.startswith("memory")}
    if shown:
        out += ["", "Ratios: " + "; ".join(f"{k} {v}" for k, v in shown.items())]
    return "\n".join(out) + "\n"


def server(r: dict) -> str:
    p = r["params"]
    cs = p["concurrency"]
    m = r["machine"]
    out = [
        (f"`{r['command']}` " if "command" in r else "The command above ")
        + f"(commit {r['shardwalk_commit'][:8]}, load {m['loadavg_before'][0]:.2f} -> "
        f"{m['loadavg_after'][0]:.2f} on {m['cpus']} cores)",
        "",
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
    out += thread_profile(r.get("profile") or {})
    targets = {k: v for k, v in (r.get("targets") or {}).items() if "pgvector" in k or "CPU" in k}
    if targets:
        out += ["", "| target (same run) | observed | met |", "|---|---|---|"]
        for name, v in targets.items():
            seen = ", ".join(f"{k} {x}" for k, x in v.items() if k != "met")
            out.append(f"| {name} | {seen} | {'yes' if v['met'] else '**no**'} |")
    check = r["built"].get("milvus-lite", {}).get("path_check")
    if check:
        idx = check["index"]
        prof = check["profile"]
        out += [
            "",
            f"Milvus Lite's search path: index {idx.get('index_type')} over "
            f"{idx.get('indexed_rows'):,} of {idx.get('total_rows'):,} rows; unfiltered single "
            "queries by ef: "
            + ", ".join(
                f"ef {x['ef']}: recall {x['recall']:.3f}, p50 {x['p50_ms']:.1f} ms"
                for x in check["unfiltered_by_ef"]
            )
            + (
                "; its server's samples (py-spy, one client): "
                + ", ".join(f"{k} {v:.0%}" for k, v in prof.items() if k != "samples")
                + f" ({prof['samples']} samples)"
                if isinstance(prof, dict)
                else f"; {prof}"
            ),
        ]
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


def thread_profile(profile: dict) -> list[str]:
    """The server's CPU per call by thread role (bench/server.py's --profile), one row per
    server, and the py-spy shares of this checkout's servers."""
    rows = {n: p for n, p in profile.items() if "server_cpu_us_per_call_by_thread" in p}
    if not rows:
        return []
    roles: list[str] = []
    for p in rows.values():
        roles += [k for k in p["server_cpu_us_per_call_by_thread"] if k not in roles]
    out = [
        "",
        "Server CPU per call by thread (us; 8 client threads of single-query Search, measured "
        "alone after the runs, no profiler attached):",
        "",
        "| server | QPS | " + " | ".join(roles) + " | total |",
        "|---|---|" + "---|" * (len(roles) + 1),
    ]
    for name, p in rows.items():
        by = p["server_cpu_us_per_call_by_thread"]
        out.append(
            f"| {name} | {p['qps']:,.0f} | "
            + " | ".join(f"{by[k]:.0f}" if k in by else "-" for k in roles)
            + f" | {sum(by.values()):.0f} |"
        )
    for name, p in rows.items():
        shares = p.get("inclusive_share")
        if shares:
            out += [
                "",
                f"{name}, share of py-spy's samples (inclusive; `{p['svg']}`): "
                + "; ".join(f"{k} {v:.0%}" for k, v in shares.items()),
            ]
    return out

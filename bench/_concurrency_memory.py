"""bench/concurrency.py's resident memory: each system (the shardwalk collection, raw hnswlib,
faiss IndexHNSWFlat, Qdrant Edge) built in a fresh process of its own (``concurrency.py
--memory-child``), its resident growth after the build and one search, its peak, and what stays
once freed memory is handed back."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _concurrency_systems import UNFILTERED, K, QdrantEdge, Shardwalk, load
from _memory import PeakRSS, arrow_bytes, release_free_memory, rss_parts

import shardwalk

SCRIPT = Path(__file__).resolve().parent / "concurrency.py"  # runs memory_child in --memory-child
MEMORY_SYSTEMS = ("shardwalk", "hnswlib", "faiss-hnsw", "qdrant-edge")


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """Build one system in this (fresh) process; resident growth after the build and one search."""
    data = load(args)
    base, q = data.base, data.queries[:1]
    n, dim = base.shape
    which = args.memory_child
    proc = psutil.Process()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if which == "shardwalk":
            # numba's runtime (~50 MiB, once per process whatever the data) and the imports load
            # before the baseline, as in bench/filtered.py
            warm = shardwalk.Engine.memory().create_collection("warm", dim=dim, index=args.index)
            warm.upsert(np.arange(256), base[:256], tenants=["w"] * 256)
            warm.search(q, k=K)
            warm.search(q, k=K, tenant="w")
            del warm
        elif which == "qdrant-edge":
            import qdrant_edge  # noqa: F401
        elif which == "faiss-hnsw":
            import faiss

            faiss.omp_set_num_threads(args.build_threads)
        elif which == "hnswlib":
            import hnswlib
        gc.collect()
        before, parts_before = proc.memory_info().rss, rss_parts()
        arrow_before = arrow_bytes()
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            if which == "shardwalk":
                system: Any = Shardwalk(
                    data, args, os.path.join(tmp, "sw"), checkpoint=not args.memory_no_flush
                )
                system.search(0, UNFILTERED)
            elif which == "qdrant-edge":
                system = QdrantEdge(data, args, os.path.join(tmp, "qe"))
                system.search(0, UNFILTERED)
            elif which == "hnswlib":
                import hnswlib

                system = hnswlib.Index(space="l2", dim=dim)
                system.init_index(
                    max_elements=n, M=args.m, ef_construction=args.ef_construction, random_seed=0
                )
                system.add_items(base, np.arange(n), num_threads=args.build_threads)
                system.set_ef(args.ef)
                system.knn_query(q, k=K, num_threads=1)
            else:
                import faiss

                system = faiss.IndexHNSWFlat(dim, args.m)
                system.hnsw.efConstruction = args.ef_construction
                system.add(base)
                system.hnsw.efSearch = args.ef
                system.search(q, K)
        seconds = time.perf_counter() - t0
        gc.collect()
        after, parts_after = proc.memory_info().rss, rss_parts()
        arrow_after = arrow_bytes()
        trimmed = release_free_memory()
        after_trim = proc.memory_info().rss
        if hasattr(system, "close"):
            system.close()
    return {
        "system": which,
        "flushed": which == "shardwalk" and not args.memory_no_flush,
        "resident_mib": round((after - before) / 2**20, 1),
        "peak_mib": round((max(peak.peak, after) - before) / 2**20, 1),
        "build_seconds": round(seconds, 1),
        "vectors_mib": round(base.nbytes / 2**20, 1),
        "arrow_pool_mib": round((arrow_after - arrow_before) / 2**20, 1),
        # what stays once the allocators hand freed memory back (Arrow's pool, glibc's heap):
        # the live data; the difference is memory the process holds but does not use
        "resident_after_trim_mib": round((after_trim - before) / 2**20, 1) if trimmed else None,
        **{
            f"{key[3:].lower()}_mib": round((parts_after[key] - parts_before[key]) / 2**20, 1)
            for key in parts_after
            if key in parts_before
        },
    }


def measure_memory(args: argparse.Namespace, log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in args.memory:
        cmd = [sys.executable, str(SCRIPT), "--memory-child", which]
        cmd += [f"--n={args.n}", f"--dim={args.dim}", f"--tenants={args.tenants}"]
        cmd += [f"--queries={args.queries}", f"--seed={args.seed}", f"--index={args.index}"]
        cmd += [f"--m={args.m}", f"--ef-construction={args.ef_construction}", f"--ef={args.ef}"]
        cmd += [f"--build-threads={args.build_threads}", f"--build-batch={args.build_batch}"]
        cmd += [f"--qdrant-segments={args.qdrant_segments}"]
        cmd += [f"--tmp={args.tmp}"] if args.tmp else []
        cmd += [f"--qdrant-full-scan-kb={args.qdrant_full_scan_kb}"]
        cmd += ["--memory-no-flush"] if args.memory_no_flush else []
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.memory_timeout)
        if done.returncode != 0:
            out[which] = {"error": done.stderr.strip().splitlines()[-1:]}
            log(f"memory {which}: FAILED {done.stderr.strip()[-500:]}")
            continue
        out[which] = json.loads(done.stdout.strip().splitlines()[-1])
        log(
            f"memory {which:>11}: +{out[which]['resident_mib']:.0f} MiB resident "
            f"(anonymous +{out[which].get('anon_mib')}, mapped files +{out[which].get('file_mib')}; "
            f"peak +{out[which]['peak_mib']:.0f}; +{out[which]['resident_after_trim_mib']} once "
            f"freed memory is trimmed), built in {out[which]['build_seconds']}s"
        )
    return out

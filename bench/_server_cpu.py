"""Where bench/server.py's calls spend CPU: the client's and the server's CPU seconds and
context switches (every thread, from /proc), the server's CPU per call by thread role, py-spy
flame graphs and the share of samples in the frames that matter."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import _common as common
import psutil
from _server_systems import SYNC, UNFILTERED, GrpcFloor, Served, System, beside_python


def cpu_seconds(system: System) -> tuple[float, ...]:
    """(client CPU s, server CPU s, server kernel CPU s, client context switches, server
    context switches): the kernel share and the switches say how much of a call's cost is
    threads handing it over to each other rather than work."""
    me = psutil.Process()
    mine = me.cpu_times()
    server = kernel = 0.0
    server_switches = 0
    if system.server is not None:
        try:
            for p in (system.server, *system.server.children(recursive=True)):
                t = p.cpu_times()
                server += t.user + t.system
                kernel += t.system
                server_switches += context_switches(p.pid)
        except psutil.Error:
            pass
    return mine.user + mine.system, server, kernel, context_switches(me.pid), server_switches


def context_switches(pid: int) -> int:
    """Context switches of every thread of a process so far (psutil's count is the main
    thread's only, on Linux); 0 where /proc is not there."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def profile(systems: list[System], args, log) -> dict[str, Any]:
    """Where a served Search's CPU goes, under 8 client threads of single-query Search, for
    each served sync server (``@baseline`` too) and the grpc floor: the server's CPU per call
    by thread role (:func:`thread_roles`: the handler threads, grpc's completion-queue thread,
    grpc's C-core I/O threads), measured alone; then, for this checkout's servers, py-spy
    flame graphs (SVG, committed under bench/results/) and the share of the samples spent in
    the frames that matter (inclusive), for the results JSON."""
    exe = beside_python("py-spy")
    if exe is None:
        log("profile skipped: py-spy not installed (pip install py-spy)")
        return {"skipped": "py-spy not installed"}
    out: dict[str, Any] = {}
    for system in systems:
        served = isinstance(system, Served) and system.name.startswith(SYNC)
        if not (served or isinstance(system, GrpcFloor)) or "threads" in system.name:
            continue
        call = lambda i, s=system: s.call(UNFILTERED, i % len(s.queries))  # noqa: E731
        pid = system.process.pid
        before = thread_cpu(pid)
        run = common.hammer(call, 8, 0.0, args.profile)
        after = thread_cpu(pid)
        roles = thread_roles(exe, pid)
        calls = max(1, run.latencies.size)
        by_role: dict[str, float] = {}
        for tid, (comm, seconds) in after.items():
            role = roles.get(tid) or f"native: {comm}"
            used = seconds - before.get(tid, (comm, 0.0))[1]
            by_role[role] = by_role.get(role, 0.0) + used
        entry: dict[str, Any] = {
            "qps": round(calls / args.profile, 1),
            "server_cpu_us_per_call_by_thread": {
                role: round(s / calls * 1e6, 1)
                for role, s in sorted(by_role.items(), key=lambda x: -x[1])
                if s > 0
            },
        }
        out[system.name] = entry
        log(f"profile {system.name}: CPU us/call by thread " + json.dumps(entry))
        if not served or "@baseline" in system.name:
            continue
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tag = f"-{args.tag}" if args.tag else ""
        svg = Path(args.out) / f"server-clustered-{args.n}{tag}-profile-{system.name}.svg"
        raw = svg.with_suffix(".txt")
        for path, fmt in ((svg, "flamegraph"), (raw, "raw")):
            spy = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--rate", "200",
                 "--duration", str(int(args.profile)), "--nonblocking", "--format", fmt,
                 "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            common.hammer(call, 8, 0.5, args.profile)
            _, err = spy.communicate(timeout=60)
            if spy.returncode:
                log(f"py-spy on {system.name} failed: {err.strip()[-300:]}")
        if raw.exists():
            entry["inclusive_share"] = frame_shares(raw.read_text(), SEARCH_FRAMES)[1]
            raw.unlink()
        entry["svg"] = svg.name
        log(f"profile {system.name}: {svg} " + json.dumps(entry.get("inclusive_share")))
    return out


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (its name in the kernel, user + system CPU seconds so far)} of a process
    (Linux /proc; empty elsewhere)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_roles(exe: str, pid: int) -> dict[int, str]:
    """{thread id: role} of a server's Python threads, from ``py-spy dump --json``: grpc's
    completion-queue thread (it runs ``_serve``), the threads that run handlers (the fair
    pool's ``rpc_N`` or a ThreadPoolExecutor's), the rest by name. Threads py-spy does not
    list are native ones (grpc's C-core I/O threads: ``event_engine``)."""
    try:
        dump = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        threads = json.loads(dump.stdout)
    except (subprocess.SubprocessError, json.JSONDecodeError):
        return {}
    roles = {}
    for t in threads:
        frames = {f.get("name") for f in t.get("frames", [])}
        name = t.get("thread_name") or ""
        if "_serve" in frames:
            role = "grpc completion-queue thread (Python)"
        elif name.startswith(("rpc_", "ThreadPoolExecutor")) or frames & {"_work", "_worker"}:
            role = "handler threads (Python: grpc's call handling, dispatcher, search)"
        else:
            role = f"python: {re.sub(r'[0-9_]+$', '', name) or 'unnamed'}"
        roles[int(t["os_thread_id"])] = role
    return roles


# the frames a served Search spends its samples in (py-spy raw: "frame;frame;... count")
SEARCH_FRAMES = {
    "dispatcher (auth, parse, limits, handler, metrics)": "Dispatcher.call (",
    "Service.search (conversions + library)": "Service.search (",
    "Collection.search (library)": "Collection.search (",
    "faiss HNSW search (C, GIL released)": "HNSWGraph._search (",
    "grpc: receive the request (wait + C)": "unary_request (",
    "grpc: send the response (C)": "_status (",
    "grpc: completion queue poll thread (C)": "_serve (",
    "fair pool: a call queued (grpc's thread)": "FairPool.submit_as (",
    "fair pool: a slot freed": "FairPool.release (",
    "a thread waiting on a condition (leaf frame)": "leaf:Condition.wait (",
}

# where Milvus Lite's server spends a search (py-spy raw frames: "function (file:line)")
MILVUS_FRAMES = {
    "whole search (execute_search_with_index)": "execute_search_with_index (",
    "newest sequence number per primary key, every row (Python)": "_update_max_seqs (",
    "live-row mask, every row (Python)": "_build_local_mask (",
    "faiss HNSW index search": "index/faiss_hnsw.py",
    "brute-force index search": "index/brute_force.py",
}


def frame_shares(text: str, frames: dict[str, str]) -> tuple[int, dict[str, float]]:
    """The samples of a py-spy raw profile (``frame;frame;... count`` lines; idle threads are
    not sampled), and the share of them whose stack holds each of ``frames`` (inclusive; a
    frame written ``leaf:...`` counts only where it is the innermost frame)."""
    total, hits = 0, dict.fromkeys(frames, 0)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        leaf = stack.rpartition(";")[2]
        for name, frame in frames.items():
            if (frame.startswith("leaf:") and leaf.startswith(frame[5:])) or frame in stack:
                hits[name] += int(count)
    return total, {name: round(v / max(total, 1), 3) for name, v in hits.items()}


def milvus_shares(text: str) -> dict[str, float]:
    """The samples of Milvus Lite's server and their share in each of :data:`MILVUS_FRAMES`."""
    total, shares = frame_shares(text, MILVUS_FRAMES)
    return {"samples": total, **shares}

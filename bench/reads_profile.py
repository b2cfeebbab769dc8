"""Where a search under writes loses time against one at rest (issue 26, item 1).

One in-memory HNSW collection (clustered 64-d rows, 100 Zipf tenants, ``y`` uniform in 0-29,
as bench/streaming.py), one caller looping single-query searches per scope (plain, tenant t5,
filter ``y < 3``), in slices with a writer thread at ``--rate`` rows/s in calls of ``--batch``
(upserts of new rows and deletes of as many old ones: a sliding window) alternated with slices
at rest (the delta indexed, then 0.1 s). Per scope and state: QPS, p50/p99, and the share of
the searching thread's wall time spent waiting to enter the collection's reader-writer locks
(``shardwalk._sync.RWLock`` read entries, timed by wrapping them; a reader that finds no
writer passes without waiting), and the searching thread's CPU time per search and the share of the
wall time it ran (the rest it waited: for a lock, for the GIL or for a core); where the slowest
1% of the searches (the p99 tail) spent their time (lock waits, CPU, the rest); and how long and
how often the index's lock (``Collection._index_rw``) was held exclusively, by thread (the
background indexer's inserts, the writer's groups), timed by wrapping ``RWLock.write``. Everything else a search does under writes shows in a py-spy
profile of the same run (``py-spy record --idle -f raw -- python bench/reads_profile.py``).

``--gil-burst 25,50,100,250``: instead of the writer, a stand-in that writes nothing and holds
the GIL in a pure-Python busy loop for that many microseconds, ``--bursts`` times a second (the
values alternate cycle by cycle in one run, each against its own at-rest slices): how short a
writer's bursts must be for a search's p99 to stay within 2x of its p99 at rest (a real 10-row
write holds the GIL for its whole call, a few hundred microseconds).

``--modes writer,writer-noindex,indexer,caller,gil,sleeper``: which part of a write stream
holds up the searches (MODES: the real writer; the writer with the background indexer paused;
the indexer alone, paced at the writer's rate over a delta filled beforehand; the writer's
calls up to their commit; a GIL burst as long as a call's CPU; wake-ups only), each alternated
with at-rest slices in one run. Per mode and scope: QPS and p99 against at rest; each search's
CPU time (``time.thread_time``) against its wall time; the searching thread's blocking waits
(voluntary context switches: the GIL or a lock) and preemptions (a core taken by other work)
a second, from /proc/thread-self; the searches held up (waiting > 30 us beyond their CPU) a
second, and per writer call and per indexer turn overlapping them
(bench/results/reads-diagnose-<label>.json). These hooks reach private functions of the
library (the indexer's turns and kick): a diagnostic, not a benchmark.

The rest uses only the public API and ``RWLock``, so it runs against whichever shardwalk the
interpreter imports: two checkouts (each with its own venv) measure back to back, and
``--label`` names the results, bench/results/reads-profile-<label>.json.

    python bench/reads_profile.py --label branch
    /path/to/main/.venv/bin/python bench/reads_profile.py --label main
    python bench/report.py reads-profile-main reads-profile-branch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SlidingWriter
from filtered import zipf_tenants

import shardwalk
from shardwalk import F
from shardwalk._sync import RWLock
from shardwalk.datasets import clustered_vectors

HERE = Path(__file__).resolve().parent
SCOPES = ("plain", "tenant", "filter")

_waited = threading.local()  # the calling thread's lock waits, in seconds
_enter = RWLock._enter_read


def _timed_enter(self: RWLock) -> int:
    t0 = time.perf_counter()
    me = _enter(self)
    _waited.seconds = getattr(_waited, "seconds", 0.0) + time.perf_counter() - t0
    return me


def source_commit() -> str:
    """The commit of the shardwalk this interpreter imports (its checkout's HEAD), else the
    SHARDWALK_COMMIT environment variable (a source tree without git)."""
    where = Path(shardwalk.__file__).resolve().parent.parent
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=where
    ).stdout.strip()
    return out or os.environ.get("SHARDWALK_COMMIT", "unknown")


# The exclusive holds of the index's lock (``Collection._index_rw``): (thread name, start,
# seconds held), by wrapping ``RWLock.write`` (a generator or a class: either checkout).
_holds: list[tuple[str, float, float]] = []
_write = RWLock.write
_watched: set[int] = set()  # id() of the locks whose holds are recorded


class _TimedWrite:
    def __init__(self, lock: RWLock) -> None:
        self._cm, self._lock = _write(lock), lock

    def __enter__(self) -> None:
        self._cm.__enter__()
        self._t = time.perf_counter()

    def __exit__(self, *exc: object) -> Any:
        held = time.perf_counter() - self._t
        out = self._cm.__exit__(*exc)
        if id(self._lock) in _watched:
            _holds.append((threading.current_thread().name, self._t, held))
        return out


class GilBurst:
    """The stand-in writer's "upsert" (``--gil-burst``; SlidingWriter paces it, one a call):
    holds the GIL for ``micros`` microseconds in a pure-Python busy loop, as a writer's Python
    holds it, and writes nothing. ``bursts`` and ``held`` (seconds) give what it did."""

    def __init__(self) -> None:
        self.micros, self.bursts, self.held = 0.0, 0, 0.0

    def __call__(self, ids: np.ndarray) -> None:
        t0 = time.perf_counter()
        end = t0 + self.micros * 1e-6
        while time.perf_counter() < end:
            pass
        self.held += time.perf_counter() - t0
        self.bursts += 1


def loop(search, queries: np.ndarray, seconds: float) -> tuple[np.ndarray, float, float]:
    """Searches for ``seconds``: per search (rows) its latency, its lock waits and the
    searching thread's CPU time (the rest of its wall time it waited for the GIL or a
    core), all in seconds; and the slice's (start, end)."""
    _waited.seconds = 0.0
    out = []
    end = time.perf_counter() + seconds
    i = 0
    start = time.perf_counter()
    while (t0 := time.perf_counter()) < end:
        w0, c0 = _waited.seconds, time.thread_time()
        search(queries[i % len(queries)])
        c1 = time.thread_time()
        out.append((time.perf_counter() - t0, _waited.seconds - w0, c1 - c0))
        i += 1
    return np.array(out).reshape(-1, 3), start, time.perf_counter()


def summary(
    per_search: list[np.ndarray], slices: list[tuple[float, float]], seconds: float
) -> dict[str, Any]:
    """QPS and latencies; where the p99 searches' time went (the slowest 1%: lock waits,
    the thread's CPU, the rest waiting for the GIL or a core); and the index lock's
    exclusive holds inside the slices, by thread (share of the wall time, mean, p99, max)."""
    runs = np.concatenate(per_search)
    lat, waited, cpu = runs[:, 0], runs[:, 1], runs[:, 2]
    p99 = float(np.percentile(lat, 99))
    tail = lat >= p99
    holds: dict[str, Any] = {}
    for name in sorted({h[0] for h in _holds}):
        held = np.array(
            [h[2] for h in _holds if h[0] == name and any(a <= h[1] < b for a, b in slices)]
        )
        if held.size:
            key = "indexer" if name.startswith("shardwalk-index") else name
            holds[key] = {
                "per_s": round(held.size / seconds, 1),
                "share": round(float(held.sum()) / seconds, 4),
                "mean_us": round(float(held.mean()) * 1e6, 1),
                "p99_us": round(float(np.percentile(held, 99)) * 1e6, 1),
                "max_us": round(float(held.max()) * 1e6, 1),
            }
    return {
        "qps": round(lat.size / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "p99_ms": round(p99 * 1e3, 3),
        "lock_wait_share": round(float(waited.sum()) / seconds, 4),
        # the searching thread's CPU time per search, and the share of the wall time it ran
        "cpu_us_per_search": round(float(cpu.mean()) * 1e6, 1),
        "running_share": round(float(cpu.sum()) / seconds, 4),
        "calls": int(lat.size),
        # the slowest 1%: mean microseconds of lock wait, CPU and the rest (GIL or a core)
        "p99_tail_us": {
            "latency": round(float(lat[tail].mean()) * 1e6, 1),
            "lock_wait": round(float(waited[tail].mean()) * 1e6, 1),
            "cpu": round(float(cpu[tail].mean()) * 1e6, 1),
            "gil_or_core": round(float((lat - waited - cpu)[tail].mean()) * 1e6, 1),
        },
        "index_lock_holds": holds,
    }


def scope_searches(col: Any) -> dict[str, Any]:
    """One single-query search per scope (plain, tenant t5, filter y < 3)."""
    return {
        "plain": lambda q: col.search(q, k=10),
        "tenant": lambda q: col.search(q, k=10, tenant="t5"),
        "filter": lambda q: col.search(q, k=10, where=F("y") < 3),
    }


def upserter(col: Any, vectors: np.ndarray, tenants: np.ndarray, y: np.ndarray) -> Any:
    """An upsert of ids (the pool's rows, wrapping around) with their tenants and ``y``."""

    def upsert(ids: np.ndarray) -> None:
        at = ids % len(vectors)
        col.upsert(
            ids,
            vectors[at],
            tenants=[f"t{t}" for t in tenants[at].tolist()],
            attributes={"y": y[at].tolist()},
        )

    return upsert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="names the results file")
    parser.add_argument("--n", type=int, default=60_000, help="rows in the pool (60,000)")
    parser.add_argument("--window", type=int, default=30_000, help="live rows (30,000)")
    parser.add_argument("--rate", type=int, default=1000, help="writer rows/s (1,000)")
    parser.add_argument("--batch", type=int, default=10, help="rows a call (10)")
    parser.add_argument("--cycles", type=int, default=3, help="writer/rest slices (3)")
    parser.add_argument("--slice", type=float, default=1.0, help="seconds a slice (1.0)")
    parser.add_argument(
        "--switch-interval",
        default="0.0005",
        help="sys.setswitchinterval (s) in this process only (a diagnostic, not a library "
        "setting); several, comma-separated (e.g. 0.005,0.0005,0.0001), alternate cycle by "
        "cycle in one run (the GIL-convoy test: a search that gives up the GIL in a nogil "
        "kernel waits up to one interval to get it back from a writer thread running Python), "
        "each reported on its own",
    )
    parser.add_argument(
        "--gil-burst",
        default="",
        help="microseconds, comma-separated (e.g. 25,50,100,250): a stand-in writer that holds "
        "the GIL that long --bursts times a second and writes nothing, in place of the writer; "
        "the values alternate cycle by cycle, each reported on its own (with the first switch "
        "interval)",
    )
    parser.add_argument("--bursts", type=int, default=100, help="GIL bursts a second (100)")
    parser.add_argument(
        "--modes",
        default="",
        help="comma-separated, alternated cycle by cycle with at-rest slices in one run: "
        + "; ".join(f"{k}: {v}" for k, v in MODES.items())
        + " (writes bench/results/reads-diagnose-<label>.json)",
    )
    parser.add_argument(
        "--gil-micros", type=float, default=550.0, help="--modes gil: microseconds a call (550)"
    )
    args = parser.parse_args()
    intervals = [float(v) for v in args.switch_interval.split(",")]
    bursts = [float(v) for v in args.gil_burst.split(",") if v]
    if bursts:  # one switch interval; the variants are the burst lengths
        intervals = intervals[:1]
    sys.setswitchinterval(intervals[0])
    RWLock._enter_read = _timed_enter
    RWLock.write = lambda self: _TimedWrite(self)  # type: ignore[method-assign]
    load_start = os.getloadavg()[0]
    data = clustered_vectors(args.n, 64, queries=200, seed=0, metadata=False)
    rng = np.random.default_rng(0)
    tenants, y = zipf_tenants(args.n, 100, rng), rng.integers(0, 30, args.n)
    col = shardwalk.Engine.memory().create_collection(
        "p", dim=64, index="hnsw", m=16, ef_construction=100, ef=64, attributes={"y": "int64"}
    )
    lo = args.n - args.window
    for a in range(lo, args.n, 10_000):
        ids = np.arange(a, min(a + 10_000, args.n))
        col.upsert(
            ids,
            data.vectors[ids],
            tenants=[f"t{t}" for t in tenants[ids].tolist()],
            attributes={"y": y[ids].tolist()},
        )
    col.wait_indexed()
    if args.modes:
        diagnose(args, col, data, tenants, y)
        return
    _watched.add(id(col._index_rw))  # (a private attribute: the bench's diagnostic only)
    searches = scope_searches(col)
    upsert = upserter(col, data.vectors, tenants, y)

    stand_in = GilBurst()
    if bursts:  # one burst a call, nothing deleted
        writer = SlidingWriter(stand_in, lambda ids: None, args.bursts, 1, 0, 0)
    else:
        writer = SlidingWriter(upsert, col.delete, args.rate, args.batch, lo, args.n)
    writer.start()
    out: dict[str, Any] = {"writing": {}, "rest": {}, "paths": {}}
    variants = bursts or intervals  # alternated cycle by cycle
    by_interval: dict[float, dict[str, Any]] = {v: {"writing": {}, "rest": {}} for v in variants}
    # bursts, seconds they held the GIL, seconds the stand-in ran
    held: dict[float, list[float]] = {v: [0, 0.0, 0.0] for v in variants}
    for scope in SCOPES:
        loop(searches[scope], data.queries, 0.2)  # warm: masks, kernels
        hot: dict[float, tuple[list, list]] = {v: ([], []) for v in variants}
        rest: dict[float, tuple[list, list]] = {v: ([], []) for v in variants}
        for _ in range(args.cycles):
            for v in variants:
                if bursts:
                    stand_in.micros = v
                    before = stand_in.bursts, stand_in.held, time.perf_counter()
                else:
                    sys.setswitchinterval(v)
                writer.active.set()
                loop(searches[scope], data.queries, 0.05)
                runs, a, b = loop(searches[scope], data.queries, args.slice)
                hot[v][0].append(runs)
                hot[v][1].append((a, b))
                writer.active.clear()
                if bursts:
                    held[v][0] += stand_in.bursts - before[0]
                    held[v][1] += stand_in.held - before[1]
                    held[v][2] += time.perf_counter() - before[2]
                end = time.perf_counter() + 10
                while col.stats()["delta"]["rows"] and time.perf_counter() < end:
                    time.sleep(0.01)
                time.sleep(0.1)
                runs, a, b = loop(searches[scope], data.queries, args.slice)
                rest[v][0].append(runs)
                rest[v][1].append((a, b))
        seconds = args.cycles * args.slice
        for v in variants:
            by_interval[v]["writing"][scope] = summary(*hot[v], seconds)
            by_interval[v]["rest"][scope] = summary(*rest[v], seconds)
            print(
                scope,
                f"GIL burst {v:g} us:" if bursts else "",
                f"switch interval {v}:" if len(variants) > 1 and not bursts else "",
                "writing",
                by_interval[v]["writing"][scope],
                "rest",
                by_interval[v]["rest"][scope],
                flush=True,
            )
        out["writing"][scope] = by_interval[variants[0]]["writing"][scope]
        out["rest"][scope] = by_interval[variants[0]]["rest"][scope]
        out["paths"][scope] = col.explain(data.queries[0], **_scope_kwargs(scope)).path
    if bursts:  # the first burst's figures are also the top-level ones
        out["by_gil_burst"] = {
            f"{v:g}": {
                **figures,
                "bursts_per_s": round(held[v][0] / max(held[v][2], 1e-9), 1),
                "mean_burst_us": round(1e6 * held[v][1] / max(held[v][0], 1), 1),
            }
            for v, figures in by_interval.items()
        }
        print(burst_table(out["by_gil_burst"]))
    elif len(intervals) > 1:  # the first interval's figures are also the top-level ones
        out["by_switch_interval"] = {str(v): figures for v, figures in by_interval.items()}
    writer.halt.set()
    writer.join()
    result = {
        "command": "python bench/reads_profile.py " + " ".join(sys.argv[1:]),
        "commit": source_commit(),
        "cores": os.cpu_count(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "params": vars(args),
        "achieved_rows_per_s": (
            0.0 if bursts else round(writer.rows / max(writer.seconds, 1e-9), 1)
        ),
        **out,
    }
    path = HERE / "results" / f"reads-profile-{args.label}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def burst_table(by_burst: dict[str, Any]) -> str:
    """--gil-burst's figures as a markdown table: per burst length and scope, QPS and p99
    with the stand-in writer and at rest, and their ratios."""
    lines = [
        "| GIL burst us (held, per s) | scope | q/s bursts (at rest) | ratio "
        "| p99 ms bursts (at rest) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for micros, figures in by_burst.items():
        for scope, hot in figures["writing"].items():
            rest = figures["rest"][scope]
            lines.append(
                f"| {micros} ({figures['mean_burst_us']:.0f}, {figures['bursts_per_s']:.0f}) "
                f"| {scope} | {hot['qps']:,.0f} ({rest['qps']:,.0f}) | "
                f"{hot['qps'] / rest['qps']:.2f} | {hot['p99_ms']:.3f} ({rest['p99_ms']:.3f}) | "
                f"{hot['p99_ms'] / rest['p99_ms']:.2f} |"
            )
    return "\n".join(lines)


# --- --modes: which part of a write slows a search (issue 26, item 1) ----------------------
# The stand-ins, each alternated with at-rest slices in one run: what a search loses beside
# each part of a real write stream on its own.
MODES = {
    "writer": "the real writer (upserts of new rows, deletes of as many old ones), indexer on",
    "writer-noindex": "the real writer with the background indexer paused (rows stay in the "
    "delta; drained before each at-rest slice)",
    "indexer": "the background indexer alone, paced at the writer's rate over a delta filled "
    "beforehand (no writer)",
    "caller": "the writer's calls up to the commit (validation, Arrow tables), no commit",
    "sleeper": "a thread that only wakes at the writer's call rate and sleeps again",
    "gil": "a thread holding the GIL in a pure-Python loop, once a call, as long as a real "
    "call's CPU (--gil-micros)",
}


class _Pace:
    """Paces the background indexer (``--modes indexer``): ``rate`` rows/s from ``start``,
    released ``batch`` at a time, as a writer's calls would release them; 0: unpaced.
    ``paused``: the writers' kicks start no indexer (rows stay in the delta)."""

    def __init__(self) -> None:
        self.rate, self.batch, self.start, self.done = 0, 10, 0.0, 0
        self.paused = False


_pace = _Pace()
_spans: list[tuple[str, float, float, float]] = []  # (kind, start, end, thread CPU seconds)


def _patch_indexer() -> None:
    """Wrap the background indexer's turns (spans and CPU recorded; paced by ``_pace``) and
    its kick (``_pace.paused``: none). Private functions: a diagnostic only."""
    from shardwalk import collection_indexer as ci

    some, kick = ci.index_some, ci.kick

    def index_some(collection: Any, count: int, threads: int | None = None) -> int:
        if threading.current_thread().name.startswith("shardwalk-index") and _pace.rate:
            while True:
                allowed = int((time.perf_counter() - _pace.start) * _pace.rate)
                allowed -= allowed % _pace.batch
                if allowed > _pace.done or not _pace.rate:
                    break
                time.sleep(
                    _pace.batch / _pace.rate
                    - (time.perf_counter() - _pace.start) % (_pace.batch / _pace.rate)
                )
            if _pace.rate:
                count = min(count, allowed - _pace.done)
        t0, c0 = time.perf_counter(), time.thread_time()
        done = some(collection, count, threads)
        _spans.append(("turn", t0, time.perf_counter(), time.thread_time() - c0))
        _pace.done += done
        return done

    def paused_kick(collection: Any) -> None:
        if not _pace.paused:
            kick(collection)

    ci.index_some = index_some
    ci.kick = paused_kick


class _Caller(threading.Thread):
    """Calls ``call`` ``rate`` times a second while ``active`` is set (spans recorded, kind
    "call"); ``idle`` is set between active stretches."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.call: Any = lambda: None
        self.active, self.halt, self.idle = threading.Event(), threading.Event(), threading.Event()
        self.idle.set()

    def run(self) -> None:
        while not self.halt.is_set():
            if not self.active.wait(0.05):
                continue
            self.idle.clear()
            due = time.perf_counter()
            while self.active.is_set():
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t0, c0 = time.perf_counter(), time.thread_time()
                self.call()
                _spans.append(("call", t0, time.perf_counter(), time.thread_time() - c0))
                due = max(due + 1 / self.rate, time.perf_counter() - 1.0)
            self.idle.set()

    def stop(self) -> None:
        self.active.clear()
        self.idle.wait()


def _sched() -> np.ndarray:
    """The calling thread's blocking waits so far (voluntary context switches: for a thread
    that only searches, waits for the GIL or a lock), its preemptions (involuntary ones: a
    core taken by other work), its seconds on a core and its seconds runnable but waiting
    for one (Linux's /proc/thread-self; zeros elsewhere)."""
    try:
        with open("/proc/thread-self/status") as f:
            counts = {
                k: int(v) for k, v in (line.split(":") for line in f if "ctxt_switches" in line)
            }
        with open("/proc/thread-self/schedstat") as f:
            run_ns, wait_ns = (int(v) for v in f.read().split()[:2])
    except OSError:
        return np.zeros(4)
    return np.array(
        [
            counts["voluntary_ctxt_switches"],
            counts["nonvoluntary_ctxt_switches"],
            run_ns * 1e-9,
            wait_ns * 1e-9,
        ]
    )


_slices: list[np.ndarray] = []  # per timed_loop: _sched()'s change over it, and its seconds


def timed_loop(search: Any, queries: np.ndarray, seconds: float) -> np.ndarray:
    """Searches for ``seconds``: per search its start, latency, lock waits and CPU time
    (and the thread's scheduling over the slice appended to ``_slices``)."""
    _waited.seconds = 0.0
    before, t_start = _sched(), time.perf_counter()
    out = []
    end = time.perf_counter() + seconds
    i = 0
    while (t0 := time.perf_counter()) < end:
        w0, c0 = _waited.seconds, time.thread_time()
        search(queries[i % len(queries)])
        c1 = time.thread_time()
        out.append((t0, time.perf_counter() - t0, _waited.seconds - w0, c1 - c0))
        i += 1
    _slices.append(np.append(_sched() - before, time.perf_counter() - t_start))
    return np.array(out).reshape(-1, 4)


def sched_summary(slices: list[np.ndarray]) -> dict[str, float]:
    """The searching thread's blocking waits (GIL or lock) and preemptions a second, and the
    shares of the wall time it was blocked and runnable without a core, over ``slices``."""
    vol, invol, run, wait, wall = np.sum(slices, axis=0)
    return {
        "blocked_per_s": round(vol / wall, 1),
        "preempted_per_s": round(invol / wall, 1),
        "blocked_share": round(1 - (run + wait) / wall, 4),
        "runqueue_share": round(wait / wall, 4),
    }


def _overlaps(runs: np.ndarray, kind: str) -> np.ndarray:
    """Per search, whether a span of ``kind`` overlapped it."""
    spans = np.array([(a, b) for k, a, b, _ in _spans if k == kind]).reshape(-1, 2)
    if not spans.size:
        return np.zeros(len(runs), dtype=bool)
    spans = spans[np.argsort(spans[:, 0])]
    start, end = runs[:, 0], runs[:, 0] + runs[:, 1]
    # the last span starting before the search ends: does it end after the search starts?
    at = np.searchsorted(spans[:, 0], end) - 1
    ok = at >= 0
    hit = np.zeros(len(runs), dtype=bool)
    hit[ok] = spans[at[ok], 1] > start[ok]
    # a long span that started earlier and is still running (spans may overlap: turns nest
    # in no call, but calls and turns are separate kinds)
    return hit


_JOLT = 30e-6  # a search that waited this much longer than it ran (off its CPU) was held up


def mode_summary(
    runs: np.ndarray, seconds: float, slices: list[tuple[float, float]]
) -> dict[str, Any]:
    """QPS, p50/p99; CPU vs wall per search; the slowest 1% (lock waits, CPU, the rest:
    descheduled or waiting for the GIL) and the share of them a writer call or an indexer turn
    overlapped, against that share over all searches; the other threads' spans a second."""
    lat, waited, cpu = runs[:, 1], runs[:, 2], runs[:, 3]
    p99 = float(np.percentile(lat, 99))
    tail = lat >= p99
    held = (lat - cpu) > _JOLT  # held up: descheduled, or waiting for the GIL or a lock
    out: dict[str, Any] = {
        "qps": round(lat.size / seconds, 1),
        "held_per_s": round(float(held.sum()) / seconds, 1),
        "held_share": round(float(held.mean()), 4),
        "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
        "p99_us": round(p99 * 1e6, 1),
        "cpu_us": round(float(cpu.mean()) * 1e6, 1),
        "cpu_p99_us": round(float(np.percentile(cpu, 99)) * 1e6, 1),
        "off_cpu_share": round(float(1 - cpu.sum() / lat.sum()), 3),
        "tail": {
            "wall_us": round(float(lat[tail].mean()) * 1e6, 1),
            "cpu_us": round(float(cpu[tail].mean()) * 1e6, 1),
            "lock_us": round(float(waited[tail].mean()) * 1e6, 1),
            "off_cpu_us": round(float((lat - waited - cpu)[tail].mean()) * 1e6, 1),
        },
    }
    for kind in ("call", "turn"):
        spans = [
            (s, e, c) for k, s, e, c in _spans if k == kind and any(a <= s < b for a, b in slices)
        ]
        hit = _overlaps(runs, kind)
        out[kind] = {
            "per_s": round(len(spans) / seconds, 1),
            "cpu_us": round(float(np.mean([c for _, _, c in spans])) * 1e6, 1) if spans else 0,
            "wall_us": round(float(np.mean([e - s for s, e, _ in spans])) * 1e6, 1) if spans else 0,
            "overlap_all": round(float(hit.mean()), 4),
            # searches held up beside one, per span of this kind
            "held_per_span": round(float((hit & held).sum()) / max(len(spans), 1), 2),
            "overlap_tail": round(float(hit[tail].mean()), 4),
            # p99 of the searches no span of this kind overlapped
            "p99_us_without": round(float(np.percentile(lat[~hit], 99)) * 1e6, 1)
            if (~hit).sum() > 100
            else None,
        }
    return out


def diagnose(args: argparse.Namespace, col: Any, data: Any, tenants: Any, y: Any) -> None:
    """``--modes``: per scope, each stand-in's slices alternated with at-rest slices (see
    MODES); prints and writes per mode and scope the ratios to at rest and where the
    slowest 1% spent their time."""
    from shardwalk.attributes import attribute_table, tenant_array
    from shardwalk.validation import check_ids

    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"--modes: unknown {m!r}; choices: {', '.join(MODES)}")
    _patch_indexer()
    col.delta_limit = 1 << 20  # the paused indexer: writers never wait for room
    searches = scope_searches(col)
    upsert = upserter(col, data.vectors, tenants, y)
    window = [args.n - args.window, args.n]

    def write() -> None:
        hi, lo, b = window[1], window[0], args.batch
        upsert(np.arange(hi, hi + b))
        col.delete(np.arange(lo, lo + b))
        window[0], window[1] = lo + b, hi + b

    fixed = np.arange(args.batch)

    def caller() -> None:  # an upsert's and a delete's work before their commit
        ids = check_ids(fixed)
        col._prepare_vectors(data.vectors[ids], what="vectors", rows=ids.size)
        tenant_array([f"t{t}" for t in tenants[ids].tolist()], ids.size)
        attribute_table({"y": y[ids].tolist()}, ids.size)
        check_ids(fixed)

    def burst() -> None:
        end = time.perf_counter() + args.gil_micros * 1e-6
        while time.perf_counter() < end:
            pass

    def settle() -> None:
        _pace.paused, _pace.rate = False, 0
        col.wait_indexed()
        end = time.perf_counter() + 10
        while col.stats()["delta"]["rows"] and time.perf_counter() < end:
            time.sleep(0.01)
        time.sleep(0.1)

    for scope in SCOPES:
        print(scope, "path:", col.explain(data.queries[0], **_scope_kwargs(scope)).path)
    thread = _Caller(args.rate / args.batch)
    thread.start()
    calls = {"writer": write, "writer-noindex": write, "caller": caller, "burst": burst,
             "gil": burst, "sleeper": lambda: None}  # fmt: skip
    results: dict[str, Any] = {m: {} for m in modes}
    for scope in SCOPES:
        timed_loop(searches[scope], data.queries, 0.2)  # warm
        hot: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        rest: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        spans_of: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        hot_sched: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        rest_sched: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        for _ in range(args.cycles):
            for m in modes:
                settle()
                if m == "indexer":  # a delta filled beforehand, indexed at the writer's pace
                    _pace.paused = True
                    for _ in range(int(args.rate * (args.slice + 0.2)) // args.batch):
                        write()
                    _pace.batch, _pace.done, _pace.start = args.batch, 0, time.perf_counter()
                    _pace.rate, _pace.paused = args.rate, False
                    from shardwalk import collection_indexer

                    collection_indexer.kick(col)
                else:
                    _pace.paused = m == "writer-noindex"
                    thread.call = calls[m]
                    thread.active.set()
                timed_loop(searches[scope], data.queries, 0.05)
                t0 = time.perf_counter()
                hot[m].append(timed_loop(searches[scope], data.queries, args.slice))
                hot_sched[m].append(_slices[-1])
                spans_of[m].append((t0, time.perf_counter()))
                thread.stop()
                settle()
                rest[m].append(timed_loop(searches[scope], data.queries, args.slice))
                rest_sched[m].append(_slices[-1])
        seconds = args.cycles * args.slice
        for m in modes:
            runs = np.concatenate(hot[m])
            at_rest = np.concatenate(rest[m])
            h = mode_summary(runs, seconds, spans_of[m])
            r = mode_summary(at_rest, seconds, [])
            h["sched"], r["sched"] = sched_summary(hot_sched[m]), sched_summary(rest_sched[m])
            hs, rs = h["sched"], r["sched"]
            print(
                f"{scope:6} {m:15} blocked {hs['blocked_per_s']:.0f}/s vs {rs['blocked_per_s']:.0f}"
                f" ({hs['blocked_share']:.3f} vs {rs['blocked_share']:.3f} of the time); "
                f"preempted {hs['preempted_per_s']:.0f}/s vs {rs['preempted_per_s']:.0f} "
                f"(runqueue {hs['runqueue_share']:.3f} vs {rs['runqueue_share']:.3f})"
            )
            results[m][scope] = {"load": os.getloadavg()[0], "writing": h, "rest": r}
            print(
                f"{scope:6} {m:15} qps x{h['qps'] / r['qps']:.2f} p99 x{h['p99_us'] / r['p99_us']:.2f}"
                f" held/s {h['held_per_s']:.0f} vs {r['held_per_s']:.0f} ({h['held_share']:.3f})"
                f" ({h['p99_us']:.0f} vs {r['p99_us']:.0f} us) cpu/search {h['cpu_us']:.1f} vs "
                f"{r['cpu_us']:.1f} us; tail: wall {h['tail']['wall_us']:.0f} cpu "
                f"{h['tail']['cpu_us']:.0f} lock {h['tail']['lock_us']:.0f} off-cpu "
                f"{h['tail']['off_cpu_us']:.0f} (rest: {r['tail']['wall_us']:.0f}/"
                f"{r['tail']['cpu_us']:.0f}/{r['tail']['off_cpu_us']:.0f}); calls "
                f"{h['call']['per_s']:.0f}/s cpu {h['call']['cpu_us']:.0f} us, overlap "
                f"tail {h['call']['overlap_tail']:.2f} held/call {h['call']['held_per_span']} all {h['call']['overlap_all']:.3f} "
                f"p99 w/o {h['call']['p99_us_without']}; turns {h['turn']['per_s']:.0f}/s cpu "
                f"{h['turn']['cpu_us']:.0f} us, overlap tail {h['turn']['overlap_tail']:.2f} "
                f"held/turn {h['turn']['held_per_span']} "
                f"all {h['turn']['overlap_all']:.3f} p99 w/o {h['turn']['p99_us_without']}",
                flush=True,
            )
        _spans.clear()
    thread.halt.set()
    path = HERE / "results" / f"reads-diagnose-{args.label}.json"
    path.write_text(
        json.dumps(
            {
                "command": "python bench/reads_profile.py " + " ".join(sys.argv[1:]),
                "commit": source_commit(),
                "params": vars(args),
                "modes": {m: MODES[m] for m in modes},
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {path}")


def _scope_kwargs(scope: str) -> dict[str, Any]:
    return (
        {"tenant": "t5"}
        if scope == "tenant"
        else {"where": F("y") < 3}
        if scope == "filter"
        else {}
    )


if __name__ == "__main__":
    main()

"""What the benchmarks share: the load loops (:func:`hammer`: N threads looping one call with
a warm-up and a measured window; :func:`search_around`: latencies while an action runs), recall
of the calls that ran and the best of several rounds, what a results file records about its
run (the engine's commit, package versions, the machine and its load before and after), the
flags several benchmarks take, the shared data (MNIST, the real graphs) and figure saving.
(Memory measurement: bench/_memory.py.)

bench/concurrency.py and bench/server.py measure with these; bench/runinfo.py is the record
the other benchmarks keep (``runinfo.start()`` / ``runinfo.finish()``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import shardwalk

__all__ = [
    "DATA",
    "MNIST",
    "REAL_GRAPHS",
    "UNDIRECTED",
    "Run",
    "SlidingWriter",
    "commit_of",
    "engine_source",
    "hnsw_flags",
    "hnsw_params",
    "int_flags",
    "mnist",
    "parser",
    "point_at",
    "pool_flags",
    "qps_ratio",
    "pyplot",
    "exact_truths",
    "hammer",
    "keep_best",
    "loadavg",
    "machine",
    "package_version",
    "recall",
    "recorder",
    "save_figure",
    "search_around",
    "two_percent_tenant",
    "window_flags",
    "write_results",
]


HERE = Path(__file__).resolve().parent
# ../shared/data beside the checkout (a worktree sits one level deeper: look further up)
DATA = next(
    (p / "shared" / "data" for p in HERE.parents if (p / "shared" / "data").is_dir()),
    HERE.parent.parent / "shared" / "data",
)
MNIST = "mnist-784-euclidean-test10k"
# the real graphs of ../shared/data (MANIFEST.md) that bench/ppr.py and bench/graph_updates.py
# run, small to large; the undirected ones list each edge once
REAL_GRAPHS = [
    "soc-sign-bitcoinalpha",
    "email-Eu-core",
    "facebook_combined",
    "wiki-Vote",
    "p2p-Gnutella04",
    "ca-HepPh",
    "soc-Epinions1-schaeffer",
]
UNDIRECTED = {"facebook_combined", "ca-HepPh", "soc-Epinions1-schaeffer"}


# --- the command line ---------------------------------------------------------------------------
def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring as the description, as written."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def int_flags(parser: argparse.ArgumentParser, **defaults: int | tuple[int, str]) -> None:
    """Integer flags, in order, each a default or a (default, help) pair:
    ``int_flags(p, n=1000, ef_construction=(200, "HNSW's efConstruction"))`` adds ``--n``
    (no help) and ``--ef-construction``."""
    for name, spec in defaults.items():
        default, help = spec if isinstance(spec, tuple) else (spec, None)
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, help=help)


def pool_flags(parser: argparse.ArgumentParser) -> None:
    """--dim, --tenants, --queries: the data both server.py and concurrency.py generate."""
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--queries", type=int, default=1000, help="query pool, cycled")


def hnsw_flags(parser: argparse.ArgumentParser) -> None:
    """--m, --ef-construction, --ef: HNSW's parameters on every side of a comparison."""
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef", type=int, default=64)


def window_flags(parser: argparse.ArgumentParser, per: str, rounds: str) -> None:
    """--duration, --warmup, --rounds: the measured window of :func:`hammer` (seconds ``per``
    point or run) and the rounds of which each point keeps its best (``rounds``: the help)."""
    parser.add_argument("--duration", type=float, default=3.0, help=f"measured seconds per {per}")
    parser.add_argument("--warmup", type=float, default=1.0, help=f"warm-up seconds per {per}")
    parser.add_argument("--rounds", type=int, default=2, help=rounds)


def hnsw_params(args: argparse.Namespace) -> dict[str, Any]:
    """The results' first ``params``: HNSW's and the data's."""
    return {
        "m": args.m,
        "ef_construction": args.ef_construction,
        "ef": args.ef,
        "tenants": args.tenants,
        "queries": args.queries,
    }


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files (the Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, title: str | None, dpi: int = 110) -> None:
    """A finished figure to ``path``, under ``title``."""
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


# --- data -----------------------------------------------------------------------------------
def mnist(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from ../shared/data: the base and query vectors (float32, C-contiguous) and each
    query's exact top-``k`` ids."""
    root = DATA / MNIST
    if not root.is_dir():
        sys.exit(f"dataset not found: {root} (see ../shared/data/MANIFEST.md)")
    return (
        np.ascontiguousarray(np.load(root / "base.npy"), dtype=np.float32),
        np.ascontiguousarray(np.load(root / "query.npy"), dtype=np.float32),
        np.load(root / "gt.npy")[:, :k].astype(np.int64),
    )


def two_percent_tenant(owner: np.ndarray, tenants: int, n: int) -> tuple[int, np.ndarray]:
    """The tenant whose size is closest to 2% of the ``n`` rows (the "2% tenant" of the
    results), and every tenant's size."""
    sizes = np.bincount(owner, minlength=tenants)
    return int(np.argmin(np.abs(sizes - 0.02 * n))), sizes


def exact_truths(
    base: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ids of ``queries`` over every row, and over the rows of ``mask`` (l2)."""
    from shardwalk.index import exact_search

    return (
        exact_search(base, queries, k, "l2").ids,
        exact_search(base, queries, k, "l2", mask=mask).ids,
    )


# --- recall and rounds ------------------------------------------------------------------------
def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Mean recall@k over the queries that ran (rows of ``found`` not all -2), and their count."""
    ran = np.flatnonzero(found[:, 0] != -2)
    hits = [
        len(set(found[i].tolist()) & set(truth[i][truth[i] >= 0].tolist()))
        / max(int((truth[i] >= 0).sum()), 1)
        for i in ran
    ]
    return (float(np.mean(hits)) if hits else float("nan")), int(ran.size)


def recorder(pool: int, k: int, width: int = 1) -> tuple[np.ndarray, Callable[[int, Any], None]]:
    """Where the ids of the calls that ran go, for :func:`recall`: ``found`` (pool, k), rows
    -2 until a call of them ran, and ``keep(i, ids)``, the ``record`` of :func:`hammer`: call
    ``i`` asked for the ``width`` consecutive queries of block ``i % (pool // width)``."""
    found = np.full((pool, k), -2, dtype=np.int64)
    calls = pool // width

    def keep(i: int, ids: Any) -> None:
        rows = found[(i % calls) * width : (i % calls + 1) * width]
        ids = np.asarray(ids).reshape(width, -1)
        rows[:] = -1
        rows[:, : min(k, ids.shape[1])] = ids[:, :k]

    return found, keep


def point_at(
    search: dict[str, Any], system: str, scope: str, threads: int
) -> dict[str, Any] | None:
    """The point of ``system`` on ``scope`` at ``threads`` client threads in a results file's
    ``search`` ({system: {scope: [point, ...]}}), or None."""
    return next((p for p in search.get(system, {}).get(scope, []) if p["threads"] == threads), None)


def qps_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, digits: int = 3) -> float | None:
    """Point ``a``'s QPS over point ``b``'s, rounded; None where either is missing or b's is 0."""
    if a and b and b["qps"]:
        return round(a["qps"] / b["qps"], digits)
    return None


def keep_best(best: dict[Any, dict[str, Any]], key: Any, point: dict[str, Any]) -> None:
    """Keep under ``key`` the point with the highest QPS of the rounds so far (the machine is
    shared: a slower round is interference, not the engine), with every round's QPS in
    ``qps_rounds``."""
    rounds = [*best.get(key, {}).get("qps_rounds", []), point["qps"]]
    if key not in best or point["qps"] > best[key]["qps"]:
        best[key] = point
    best[key]["qps_rounds"] = rounds


# --- load generators ------------------------------------------------------------------------
@dataclass
class Run:
    """What N threads looping one call observed in the measured window."""

    threads: int
    seconds: float
    completed: int  # calls completed inside the window: the throughput
    latencies: np.ndarray  # seconds, every call overlapping the window, waited for to its end
    per_thread: np.ndarray  # calls each thread completed inside the window
    errors: list[str] = field(default_factory=list)
    stuck: int = 0  # threads still in a call long after the end (a deadlock, or a very slow call)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies * 1e6

        def pct(p: float) -> float | None:
            return round(float(np.percentile(lat, p)), 1) if lat.size else None

        out: dict[str, Any] = {
            "threads": self.threads,
            "calls": self.completed,
            "per_second": round(self.completed / self.seconds, 1),
            "p50_us": pct(50),
            "p99_us": pct(99),
            "max_us": round(float(lat.max()), 1) if lat.size else None,
            # fairness: a thread that completes nothing in the window waited all of it
            "calls_per_thread_min": int(self.per_thread.min()),
            "calls_per_thread_max": int(self.per_thread.max()),
            "threads_without_a_call": int((self.per_thread == 0).sum()),
        }
        if self.errors:
            out["errors"] = len(self.errors)
            out["first_errors"] = sorted(set(self.errors))[:3]
        if self.stuck:
            out["stuck_threads"] = self.stuck
        return out


def hammer(
    call: Callable[[int], Any],
    threads: int,
    warmup: float,
    duration: float,
    record: Callable[[int, Any], None] | None = None,
    grace: float = 60.0,
) -> Run:
    """``threads`` threads call ``call(i)`` (i = thread, thread + threads, ...) back to back for
    ``warmup + duration`` seconds. Throughput counts the calls completed in the last
    ``duration`` seconds (the load never pauses between warm-up and measurement); latency takes
    every call overlapping that window, including calls still running at its end (waited for):
    a thread kept waiting through the whole window counts with its whole wait."""
    clock = time.perf_counter
    barrier = threading.Barrier(threads + 1)
    window: dict[str, float] = {}
    calls: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def worker(w: int) -> None:
        barrier.wait()
        begin, end = window["begin"], window["end"]
        mine = calls[w]
        i = w
        while True:
            t0 = clock()
            if t0 >= end or len(errors) > 100:
                return
            try:
                out = call(i)
            except Exception as exc:  # recorded and reported: a benchmark keeps going
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                i += threads
                continue
            t1 = clock()
            mine.append((t0, t1))
            if record is not None and t1 >= begin:
                record(i, out)
            i += threads

    pool = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for t in pool:
        t.start()
    now = clock()
    begin, end = now + warmup, now + warmup + duration
    window["begin"], window["end"] = begin, end
    barrier.wait()
    for t in pool:
        t.join(timeout=max(0.0, end + grace - clock()))
    spans = [np.array(c, dtype=np.float64).reshape(-1, 2) for c in calls]
    every = np.concatenate(spans)
    inside = (every[:, 1] >= begin) & (every[:, 1] <= end)
    overlapping = (every[:, 1] >= begin) & (every[:, 0] < end)
    return Run(
        threads=threads,
        seconds=duration,
        completed=int(inside.sum()),
        latencies=every[overlapping, 1] - every[overlapping, 0],
        per_thread=np.array([int(((s[:, 1] >= begin) & (s[:, 1] <= end)).sum()) for s in spans]),
        errors=errors,
        stuck=sum(t.is_alive() for t in pool),
    )


def search_around(
    call: Callable[[int], Any],
    threads: int,
    warmup: float,
    idle: float,
    action: Callable[[], None],
    limit: float = 900.0,
) -> dict[str, Any]:
    """Search continuously: ``warmup``, then ``idle`` seconds measured, then ``action`` in its
    own thread; latencies of searches overlapping the action against those of the idle window."""
    clock = time.perf_counter
    stop = threading.Event()
    calls: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def worker(w: int) -> None:
        mine, i = calls[w], w
        while not stop.is_set():
            t0 = clock()
            try:
                call(i)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            mine.append((t0, clock()))
            i += threads

    span: dict[str, float] = {}

    def act() -> None:
        span["start"] = clock()
        try:
            action()
        finally:
            span["end"] = clock()

    pool = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for t in pool:
        t.start()
    time.sleep(warmup)
    idle_from = clock()
    time.sleep(idle)
    doer = threading.Thread(target=act, daemon=True)
    doer.start()
    doer.join(timeout=limit)
    time.sleep(0.2)
    stop.set()
    for t in pool:
        t.join(timeout=60)
    start, end = span["start"], span.get("end", clock())
    every = np.array([c for per in calls for c in per]).reshape(-1, 2)
    lat = every[:, 1] - every[:, 0]
    before = lat[(every[:, 0] >= idle_from) & (every[:, 1] <= start)] * 1e6
    during = lat[(every[:, 1] > start) & (every[:, 0] < end)] * 1e6

    def pct(x: np.ndarray, p: float) -> float | None:
        return round(float(np.percentile(x, p)), 1) if x.size else None

    out = {
        "search_threads": threads,
        "action_seconds": round(end - start, 3),
        "action_finished": "end" in span,
        "idle": {
            "searches": int(before.size),
            "p50_us": pct(before, 50),
            "p99_us": pct(before, 99),
        },
        "during": {
            "searches": int(during.size),
            "p50_us": pct(during, 50),
            "p99_us": pct(during, 99),
            "max_us": round(float(during.max()), 1) if during.size else None,
            "per_second": round(during.size / max(end - start, 1e-9), 1),
        },
    }
    out["idle"]["per_second"] = round(before.size / idle, 1)
    if before.size and during.size:
        out["p99_ratio_during_vs_idle"] = round(out["during"]["p99_us"] / out["idle"]["p99_us"], 2)
    if errors:
        out["errors"] = len(errors)
        out["first_errors"] = sorted(set(errors))[:3]
    return out


# --- what a results file records ----------------------------------------------------------------
def loadavg() -> list[float]:
    """The load averages (1, 5, 15 minutes) now, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(
    load_before: tuple[float, ...], versions: dict[str, str | None], note: str | None = None
) -> dict[str, Any]:
    """The results' ``machine``: cores, Python, numpy, ``versions`` (name -> version), the load
    averages before the measurements and now."""
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    if note is not None:
        out["note"] = note
    out.update({"python": sys.version.split()[0], "numpy": np.__version__, **versions})
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = loadavg()
    return out


def engine_source() -> dict[str, Any]:
    """The commit the engine was imported from, and whether its sources had local edits."""
    root = Path(shardwalk.__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip()

    dirty = git("status", "--porcelain", "--", "shardwalk", "index", "walks")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_engine_files": dirty.splitlines()}


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def commit_of(folder: str | Path) -> str:
    """The commit checked out in the git work tree that holds ``folder`` ('' if none)."""
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True
    ).stdout.strip()


def write_results(out: str | Path, stem: str, result: dict[str, Any]) -> Path:
    """``result`` as ``<out>/<stem>.json`` (the folder made if missing); returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1))
    return folder


class SlidingWriter(threading.Thread):
    """A writer at a fixed rate beside searches: while ``active`` is set, upserts the next
    ``batch`` new ids (from ``hi`` on) and deletes as many of the oldest (from ``lo`` on), so
    a window of live ids slides, at ``rate`` rows/s; catches up without sleeping when behind
    (never by more than one second's worth). ``rows`` written and ``seconds`` spent active
    give the rate it achieved; ``halt`` ends the thread. bench/streaming.py and
    bench/reads_profile.py measure searches under it."""

    def __init__(
        self,
        upsert: Callable[[np.ndarray], Any],
        delete: Callable[[np.ndarray], Any],
        rate: int,
        batch: int,
        lo: int,
        hi: int,
    ) -> None:
        super().__init__(daemon=True)
        self.upsert, self.delete = upsert, delete
        self.rate, self.batch, self.lo, self.hi = rate, batch, lo, hi
        self.active, self.halt = threading.Event(), threading.Event()
        self.rows, self.seconds = 0, 0.0

    def run(self) -> None:
        while not self.halt.is_set():
            if not self.active.wait(0.05):
                continue
            t0 = due = time.perf_counter()
            while self.active.is_set() and not self.halt.is_set():
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                b = self.batch
                self.upsert(np.arange(self.hi, self.hi + b))
                self.delete(np.arange(self.lo, self.lo + b))
                self.hi, self.lo, self.rows = self.hi + b, self.lo + b, self.rows + b
                due = max(due + b / self.rate, time.perf_counter() - 1.0)
            self.seconds += time.perf_counter() - t0

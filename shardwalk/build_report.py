"""The reports of a batch build's stages (``shardwalk.build``): each block's and task's times
on its worker, and how a stage or the build tasks spread over the workers (busy and CPU
seconds per worker, the timeline from the stage's start, the tail)."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardwalk.build import Block


def _per_worker(items: list[dict[str, Any]], by: str, field: str) -> list[float]:
    """``field`` summed per ``by`` (a worker), largest first."""
    totals: dict[Any, float] = {}
    for item in items:
        totals[item[by]] = totals.get(item[by], 0.0) + item[field]
    return sorted(totals.values(), reverse=True)


def _stats(block: Block, dim: int, timing: dict, t0: float, cpu0: float) -> dict[str, Any]:
    """A block's report: rows, vector bytes (the float32 vectors it yields: rows x dim x 4),
    process, wall and CPU seconds (this thread's: on a shared machine the CPU a step took,
    whatever else ran), when it started and ended (the epoch clock: the stage's timeline), and
    ``timing``."""
    seconds, ended = time.perf_counter() - t0, time.time()
    return {"path": block.path, "first_row": block.first_row, "rows": block.rows,
            "vector_bytes": block.rows * dim * 4, "pid": os.getpid(),
            "seconds": seconds, "cpu_seconds": time.thread_time() - cpu0,
            "started": ended - seconds, "ended": ended, **timing}  # fmt: skip


def _worker_times(started: float, cpu0: float) -> dict[str, Any]:
    """When a task ran (wall clock), its CPU seconds, and on which worker (process, thread)."""
    worker = f"{os.getpid()}-{threading.get_ident()}"
    return {"started": started, "ended": time.time(), "worker": worker,
            "cpu_seconds": time.thread_time() - cpu0}  # fmt: skip


def _schedule_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """How evenly the build tasks kept the workers busy: each worker's busy seconds and the
    tail (from the first worker running out of tasks to the end)."""
    last: dict[str, float] = {}
    busy: dict[str, float] = {}
    for r in reports:
        last[r["worker"]] = max(last.get(r["worker"], 0.0), r["ended"])
        busy[r["worker"]] = busy.get(r["worker"], 0.0) + (r["ended"] - r["started"])
    first = min((r["started"] for r in reports), default=0.0)
    return {
        "order": [r["partition"] for r in sorted(reports, key=lambda r: r["started"])],
        "busy_seconds": sorted(busy.values(), reverse=True),
        "cpu_seconds": sum(r["cpu_seconds"] for r in reports),
        "cpu_seconds_per_worker": _per_worker(reports, "worker", "cpu_seconds"),
        "span_seconds": max(last.values(), default=first) - first,
        "tail_seconds": max(last.values(), default=0.0) - min(last.values(), default=0.0),
    }


def _stage_report(
    blocks: list[dict[str, Any]], wall: float, workers: int, started: float, gathered: float
) -> dict[str, Any]:
    """Where a scan or assign stage spent its time: its blocks' worker seconds (reading,
    checking, sampling or assigning), the processes that ran them, and the rate of vector data
    per worker (decoded bytes over the stage's wall time and its workers); its timeline, in
    seconds from the stage's start (``started``, epoch clock): the first block started, the
    last one ended, the last one back in the driver (``gathered``), and the driver's work
    after it (the stage's wall time from there: the id sort of the scan)."""
    workers = max(1, min(workers, len(blocks)))
    vector_bytes = sum(b["vector_bytes"] for b in blocks)
    report = {"blocks": len(blocks), "workers": workers,
              "processes": len({b["pid"] for b in blocks}), "rows": sum(b["rows"] for b in blocks),
              "vector_bytes": vector_bytes, "wall_seconds": wall,
              "worker_seconds": sum(b["seconds"] for b in blocks),
              "cpu_seconds": sum(b["cpu_seconds"] for b in blocks),
              "slowest_block_seconds": max((b["seconds"] for b in blocks), default=0.0),
              "cpu_seconds_per_process": _per_worker(blocks, "pid", "cpu_seconds"),
              "vector_mb_per_s_per_worker": vector_bytes / 1e6 / max(wall, 1e-9) / workers,
              "first_block_started_seconds": min((b["started"] for b in blocks), default=started)
              - started,
              "last_block_ended_seconds": max((b["ended"] for b in blocks), default=started)
              - started,
              "last_block_back_seconds": gathered - started,
              "after_last_block_seconds": wall - (gathered - started)}  # fmt: skip
    for part in ("read", "check", "sample", "assign"):
        if any(part in b for b in blocks):
            report[f"{part}_seconds"] = sum(b.get(part, 0.0) for b in blocks)
    return report

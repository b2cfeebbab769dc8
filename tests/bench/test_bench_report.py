"""bench/README.md's generated tables are what bench/report.py renders from bench/results/*.json
today, and each of those results records the commit and the machine's load it ran with."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("report")
    finally:
        sys.path.remove(str(BENCH))


def _blocks(report) -> list[tuple[list[str], str]]:
    text = report.README.read_text()
    return [(m[2].split(), m[3]) for m in report.BLOCK.finditer(text)]


def test_every_generated_block_is_what_its_json_renders(report):
    text = report.README.read_text()
    assert report.blocks(text) == text, "run `python bench/report.py --readme` after a re-run"


def test_the_benchmark_sections_are_generated(report):
    stems = {stem for names, _ in _blocks(report) for stem in names}
    for prefix in ("ann-", "filtered-", "spann-", "concurrency-", "server-"):
        assert any(s.startswith(prefix) for s in stems), f"no generated {prefix}* table"


def test_every_generated_table_records_commit_and_load(report):
    for names, _ in _blocks(report):
        for stem in names:
            r = json.loads((report.RESULTS / f"{stem}.json").read_text())
            commit, start, end = report.provenance(r)
            assert len(commit) >= 7 and start >= 0 and end >= 0, stem


def test_a_hand_edited_figure_is_caught(report):
    text = report.README.read_text()
    block = next(report.BLOCK.finditer(text))
    at = text.index("\n|", block.start(3)) + 1  # the first table row of the first block
    edited = text[:at] + "| 1.000 " + text[at:]
    assert report.blocks(edited) == text != edited


def test_the_served_call_is_broken_down_by_thread(report):
    """bench/server.py --profile records the server's CPU per call by thread role; the server
    section (bench/_render_search.py) renders one row per server with each role's figure and
    their total."""
    search_tables = sys.modules["_render_search"]  # imported by report.py
    profile = {
        "server-sync": {
            "qps": 1500.0,
            "server_cpu_us_per_call_by_thread": {"handlers": 300.0, "grpc cq": 100.0},
            "inclusive_share": {"dispatcher": 0.1},
            "svg": "x.svg",
        },
        "grpc-floor": {
            "qps": 3000.0,
            "server_cpu_us_per_call_by_thread": {"handlers": 90.0, "native: event_engine": 50.0},
        },
    }
    lines = search_tables.thread_profile(profile)
    assert "| server | QPS | handlers | grpc cq | native: event_engine | total |" in lines
    assert "| server-sync | 1,500 | 300 | 100 | - | 400 |" in lines
    assert "| grpc-floor | 3,000 | 90 | - | 50 | 140 |" in lines
    assert any(line.startswith("server-sync, share of py-spy's samples") for line in lines)
    assert search_tables.thread_profile({}) == []


def test_thread_cpu_and_switches_read_every_thread():
    """The per-thread CPU and the context switches bench/server.py reads (bench/_server_cpu.py)
    count every thread of a process (psutil's switch count is the main thread's only)."""
    import os
    import threading

    sys.path.insert(0, str(BENCH))
    try:
        cpu = importlib.import_module("_server_cpu")
    finally:
        sys.path.remove(str(BENCH))
    if not os.path.isdir(f"/proc/{os.getpid()}/task"):
        pytest.skip("no /proc")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (sum(range(200_000)), done.wait(10)))
    worker.start()
    try:
        threads = cpu.thread_cpu(os.getpid())
        assert worker.native_id in threads and threading.get_native_id() in threads
        assert all(seconds >= 0 for _, seconds in threads.values())
        assert cpu.context_switches(os.getpid()) >= len(threads)
    finally:
        done.set()
        worker.join()

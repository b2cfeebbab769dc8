"""bench/README.md's generated tables are what bench/report.py renders from bench/results/*.json
today, and each of those results records the commit and the machine's load it ran with."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


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

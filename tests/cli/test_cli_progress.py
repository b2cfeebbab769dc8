"""Progress bars of ``shardwalk build``, ``graph fingerprints`` and ``quickstart`` (issue 23):
on a terminal, one tqdm bar per stage of the library's progress callback; piped, nothing on
stderr (no bar, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from shardwalk.walks.generators import power_law_graph

import shardwalk
from tests.parquet_data import write_dataset
from tests.terminal import on_a_terminal

SHARDWALK = str(Path(sys.executable).with_name("shardwalk"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parquet input, and a data directory holding a graph."""
    root = tmp_path_factory.mktemp("cli-progress")
    write_dataset(root / "in", 3000, 8, files=3, seed=1)
    with shardwalk.Engine.open(root / "db") as engine:
        engine.create_graph("g", power_law_graph(5000, 25_000, seed=2))
    return root


COMMANDS = {
    "build": ["build", "--data", "db", "--collection", "c", "--input", "in",
              "--param", "partitions=3"],
    "fingerprints": ["graph", "fingerprints", "--data", "db", "--name", "g", "--hubs", "20"],
    "quickstart": ["quickstart", "--data", "q", "--n", "2000", "--queries", "20", "--index",
                   "flat"],
}  # fmt: skip
# what each draws on a terminal: a bar per stage, named, with its units
BARS = {
    "build": ["build 'c': scan", "build 'c': assign", "build 'c': build", "rows/s"],
    "fingerprints": ["fingerprints of 'g': walks", "fingerprints of 'g': hub walks", "walks/s"],
    "quickstart": ["upsert", "fingerprints: walks"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bar_per_stage_on_a_terminal(workdir: Path, command: str) -> None:
    code, text = on_a_terminal([SHARDWALK, *COMMANDS[command]], workdir)
    assert code == 0, text
    for fragment in BARS[command]:
        assert fragment in text, (fragment, text)
    assert "%|" in text and "\r" in text  # bars, redrawn in place
    assert "Traceback" not in text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_nothing_on_stderr_when_piped(workdir: Path, command: str) -> None:
    done = subprocess.run(
        [SHARDWALK, *COMMANDS[command]], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no bar, no carriage return, no traceback
    assert done.stdout.strip()  # the summary still goes to stdout

"""Every code block of README.md and of docs/ runs as written, or is checked as what it is.

The blocks of one page run in order in one empty temporary directory: a page is one session,
so a block may read what an earlier block of the page wrote (as a reader following the page
would). By the block's language:

- ``python``: a fresh interpreter (this one's executable).
- ``bash``: ``bash -euo pipefail``, with this interpreter's ``bin`` folder first on ``PATH``
  (``shardwalk``, ``python3``: an activated virtual environment) and ``.venv`` in the directory
  pointing at this interpreter's environment (the README's ``.venv/bin/...`` commands). Every
  process a block leaves behind (a server started with ``&``) is killed with its group.
- ``toml``: a server config, written to the file its first line names (``# tls.toml``; else
  ``config.toml``) and read by ``load_config`` (every key checked, the files it names read).
- ``text``, ``mermaid``: synopses and pictures, not run.
- a block holding only a snippet include (``--8<-- "path"``): that file, which must exist.

README.md's ``ci:setup`` and ``ci:test`` blocks are the ones ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = {"text", "mermaid"}
TIMEOUT = 600  # seconds per block
FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    ci: bool  # run by .ci/run (README's ci:setup / ci:test), not here

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match["lang"].strip(),
                body=match["body"],
                ci=before.startswith("<!-- ci:"),
            )
        )
    return found


def _include(block: Block) -> Path | None:
    """The file of a block that only includes one (pymdownx.snippets, paths from the root)."""
    lines = block.body.strip().splitlines()
    if len(lines) == 1 and (match := re.fullmatch(r'--8<-- "([^"]+)"', lines[0].strip())):
        return ROOT / match[1]
    return None


def _environment(cwd: Path) -> dict[str, str]:
    (cwd / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(command: list[str], block: Block, cwd: Path, env: dict[str, str]) -> None:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: whatever it leaves running is killed
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{block.where()} ran past {TIMEOUT} s:\n{block.body}\n{out}\n{err}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{block.where()} failed:\n{block.body}\n{out}\n{err}"


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.lang == "python":
        _run([sys.executable, "-c", block.body], block, cwd, env)
    elif block.lang == "bash":
        _run(["bash", "-euo", "pipefail", "-c", block.body], block, cwd, env)
    elif block.lang == "toml":
        from shardwalk.server.config import load_config

        named = re.match(r"# ([\w.-]+\.toml)\n", block.body)
        path = cwd / (named[1] if named else "config.toml")
        path.write_text(block.body)
        load_config(path)  # raises InvalidArgumentError naming the entry
    else:
        raise AssertionError(f"{block.where()}: no rule to run this block")


def test_every_block_has_a_known_language():
    known = {"python", "bash", "toml", *NOT_RUN}
    unknown = [
        b.where()
        for page in PAGES
        for b in blocks(page)
        if b.lang not in known and _include(b) is None
    ]
    assert not unknown, f"blocks that neither run nor are pictures (label them): {unknown}"
    # a fence indented (in a list item) is not found above: none may be
    indented = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if re.match(r"\s+```", line)
    ]
    assert not indented, f"indented code fences (move them out of the list): {indented}"


def test_included_files_exist():
    included = [(b.where(), _include(b)) for page in PAGES for b in blocks(page)]
    missing = [(where, path) for where, path in included if path is not None and not path.exists()]
    assert not missing


def test_the_readme_has_one_example_per_kind_of_user():
    runnable = [b for b in blocks(ROOT / "README.md") if not b.ci and b.lang in ("python", "bash")]
    text = "\n".join(b.body for b in runnable)
    assert "shardwalk.Engine" in text  # embedded
    assert "shardwalk.Client" in text  # gRPC
    assert "ray=True" in text  # Ray
    assert [b.body.split()[-1] for b in blocks(ROOT / "README.md") if b.ci] == [
        "quickstart",
        "-q",
    ]  # ci:setup runs the main job, ci:test the suite


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if not b.ci and b.lang not in NOT_RUN and _include(b) is None]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_blocks_run_as_written(page, tmp_path):
    env = _environment(tmp_path)
    for block in runnable(page):
        run_block(block, tmp_path, env)

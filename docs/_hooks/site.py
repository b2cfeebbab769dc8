"""mkdocs hooks of the documentation site (mkdocs.yml ``hooks``).

- The API reference: mkdocstrings reads the docstrings with griffe, which finds packages by
  their folders; ``shardwalk.index``, ``.walks`` and ``.server`` live in ``index/``, ``walks/``
  and ``server/`` (setuptools' package-dir), so the hook lays out a copy of the package as it
  is installed under ``build/api-src`` (mkdocs.yml points the handler there). The copy's
  Sphinx roles (``:meth:`close```, ``:class:`~shardwalk.wal.RecoveredLog```) become code spans
  (``close``, ``RecoveredLog``): mkdocstrings renders Markdown, where a role shows as typed.
- The benchmark figures: bench/README.md, its plots and the rest of bench/ become part of the
  site as they are (docs/benchmarks.md links to them; nothing is retyped).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
API_SOURCE = REPO / "build" / "api-src"
# where each importable package of the distribution lives (pyproject.toml's package-dir)
PACKAGES = {
    "shardwalk": "shardwalk",
    "index": "shardwalk/index",
    "walks": "shardwalk/walks",
    "server": "shardwalk/server",
}


ROLE = re.compile(r":(?:meth|attr|class|func|mod|data|exc):`(~?)([^`]+)`")


def _code_span(match: re.Match[str]) -> str:
    tilde, target = match[1], match[2]
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def on_startup(command: str, dirty: bool) -> None:
    # on_startup runs before mkdocstrings starts griffe (its paths are read then)
    shutil.rmtree(API_SOURCE, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder, package in PACKAGES.items():
        shutil.copytree(REPO / folder, API_SOURCE / package, ignore=skip)
    for source in API_SOURCE.rglob("*.py"):
        text = source.read_text()
        if ROLE.search(text):
            source.write_text(ROLE.sub(_code_span, text))


def on_files(files: Files, config) -> Files:
    # all of bench/ (the scripts and the results JSON too), so that bench/README.md's relative
    # links to them resolve on the site as on GitHub
    for path in sorted((REPO / "bench").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".tmp":
            uri = path.relative_to(REPO).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files

"""The documentation covers what the code has: every error class, RPC, command and option; the
README stays a first page. (Its code blocks run in tests/test_readme.py; `mkdocs build --strict`
in .ci/run checks the site's links.)"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from shardwalk.server.config import Limits

import shardwalk.errors as errors
from shardwalk.cli import build_parser

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_readme_is_a_first_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_the_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def error_classes() -> list[type[errors.ShardwalkError]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ShardwalkError)
        and cls.__module__ == errors.__name__
    ]


def test_the_errors_page_names_every_class_with_its_status():
    rows = [line for line in (DOCS / "errors.md").read_text().splitlines() if line.startswith("|")]
    classes = error_classes()
    assert len(classes) >= 12
    for cls in classes:
        row = [r for r in rows if r.startswith(f"| `{cls.__name__}`")]
        assert row, f"docs/errors.md has no row for {cls.__name__}"
        assert f"`{cls.code}`" in row[0], f"{cls.__name__}'s row does not name {cls.code}"


def test_the_grpc_page_names_every_rpc():
    proto = (ROOT / "proto" / "shardwalk" / "v1" / "shardwalk.proto").read_text()
    rpcs = re.findall(r"^\s*rpc (\w+)\(", proto, flags=re.M)
    page = (DOCS / "grpc.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rpcs) >= 17
    missing = [rpc for rpc in rpcs if not any(f"`{rpc}`" in row.split("|")[1] for row in table)]
    assert not missing, f"docs/grpc.md's table lacks the RPCs {missing}"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, list[str]]]:
    """Every leaf command of the CLI with the long options its --help shows."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))
            return
    options = [
        o
        for a in parser._actions
        if a.help is not argparse.SUPPRESS  # hidden (an old name kept working) as in --help
        for o in a.option_strings
        if o.startswith("--") and o != "--help"
    ]
    yield " ".join(path), options


def synopsis() -> dict[str, str]:
    """The CLI page's synopsis block: command -> its lines."""
    page = (DOCS / "cli.md").read_text()
    block = re.search(r"^```text\n(.*?)^```", page, flags=re.S | re.M)
    assert block, "docs/cli.md starts with a ```text synopsis"
    entries: dict[str, str] = {}
    current = ""
    for line in block[1].splitlines():
        if line.startswith("shardwalk "):
            words = []
            for word in line.split()[1:]:
                if word.startswith(("-", "[")) or word.isupper():
                    break
                words.append(word)
            current = " ".join(words)
        entries[current] = entries.get(current, "") + " " + line
    return entries


def shown(option: str, text: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def test_the_cli_page_shows_every_command_and_option():
    entries = synopsis()
    found = list(commands(build_parser()))
    assert len(found) >= 12
    # an option every command has is shown once, anywhere on the page
    common = set.intersection(*(set(options) for _, options in found))
    page = (DOCS / "cli.md").read_text()
    assert [o for o in common if not shown(o, page)] == []
    for command, options in found:
        assert command in entries, f"docs/cli.md's synopsis lacks `shardwalk {command}`"
        missing = [o for o in options if o not in common and not shown(o, entries[command])]
        assert not missing, f"docs/cli.md's synopsis of `shardwalk {command}` lacks {missing}"


def test_every_page_is_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)\s*$", config, flags=re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), "pages no menu leads to"
    assert nav - pages == {"bench/README.md"}  # added by docs/_hooks/site.py


def test_the_config_page_shows_every_limit():
    page = (DOCS / "concepts" / "server.md").read_text()
    block = re.search(r"^```toml\n(# server\.toml\n.*?)^```", page, flags=re.S | re.M)
    assert block, "docs/concepts/server.md shows the config file (# server.toml)"
    shown = set(tomllib.loads(block[1])["limits"])
    assert shown == set(Limits.__dataclass_fields__), "the [limits] settings shown drifted"


def test_the_progress_hook_and_every_stage_are_documented():
    """Every public call that takes ``progress=`` and every stage the library reports (the
    ``Stage(progress, "...")`` of its sources) are named in docs/concepts/ray.md#progress."""
    import inspect

    from shardwalk import jobs
    from shardwalk.graph import Graph

    page = (DOCS / "concepts" / "ray.md").read_text()
    section = page[page.index("### Progress") :]
    section = section[: section.index("\n## ")]
    calls = {f"jobs.{name}": getattr(jobs, name) for name in jobs.__all__}
    calls.update({f"Graph.{name}": fn for name, fn in vars(Graph).items()})
    hooked = [
        name
        for name, fn in calls.items()
        if inspect.isfunction(fn)
        and not name.split(".")[1].startswith("_")
        and "progress" in inspect.signature(fn).parameters
    ]
    assert len(hooked) >= 3, hooked
    assert [name for name in hooked if f"`{name}`" not in section] == []
    sources = [*(ROOT / "shardwalk").glob("*.py"), *(ROOT / "walks").glob("*.py")]
    stages = {
        stage
        for path in sources
        for stage in re.findall(r'Stage\(\s*progress, "([^"]+)"', path.read_text())
    }
    assert {"scan", "assign", "build", "walks", "hub walks"} <= stages
    assert [stage for stage in sorted(stages) if f"`{stage}`" not in section] == []

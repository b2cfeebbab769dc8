"""What every results JSON records about its run, so a table in bench/README.md can say which
code, which command and how busy a machine produced it.

    meta = runinfo.start()          # before the work: command, commit, load at the start
    ...
    result["run"] = runinfo.finish(meta)   # after it: load at the end
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import package_version

_PACKAGES = ("numpy", "numba", "faiss-cpu", "hnswlib", "pyarrow")


def _git(*cmd: str) -> str:
    """Run git in the checkout the engine was imported from (the interpreter's shardwalk)."""
    try:
        import shardwalk

        root = Path(shardwalk.__file__).resolve().parent.parent
    except ImportError:
        root = Path(__file__).resolve().parent
    done = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True)
    return done.stdout.rstrip()


def start(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """The command line, the engine's commit (and its uncommitted files, which a figure from a
    dirty tree must own up to), the machine and its load averages now."""
    return {
        "command": shlex.join(["python", *sys.argv]),
        "commit": _git("rev-parse", "HEAD"),
        # code only: results written earlier in a session are not the code that ran
        "uncommitted_files": _git(
            "status", "--porcelain", "--", "shardwalk/*.py", "bench/*.py"
        ).splitlines(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "packages": {p: package_version(p) for p in (*_PACKAGES, *extra_packages)},
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }


def finish(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the load averages at the end of the run."""
    return {**meta, "load_end": [round(x, 2) for x in os.getloadavg()]}

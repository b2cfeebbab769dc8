"""The committed generated gRPC code is what the pinned generators make of proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr + run.stdout


def test_import_shardwalk_loads_no_grpc() -> None:
    code = "import sys, shardwalk; shardwalk.Engine.memory(); assert 'grpc' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

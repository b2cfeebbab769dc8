"""shardwalk, shardwalk.index, shardwalk.walks and shardwalk.jobs import and build without Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.parquet_data import write_dataset

BLOCK_RAY = """
import importlib.abc, sys

class BlockRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, BlockRay())
"""


def test_library_imports_and_builds_without_ray(tmp_path: Path) -> None:
    write_dataset(tmp_path / "in", 600, 8, files=2, seed=1)
    code = BLOCK_RAY + textwrap.dedent(
        f"""
        import shardwalk, shardwalk.index, shardwalk.walks, shardwalk.jobs
        from shardwalk.errors import FailedPreconditionError
        report = shardwalk.jobs.build_collection({str(tmp_path / "db")!r}, "c",
                                                 {str(tmp_path / "in")!r}, partitions=2)
        assert report["rows"] == 600 and report["executor"] == "threads"
        try:
            shardwalk.jobs.build_collection({str(tmp_path / "db")!r}, "d",
                                            {str(tmp_path / "in")!r}, ray=True)
        except FailedPreconditionError as exc:
            print("refused:", exc)
        try:
            shardwalk.Engine.open({str(tmp_path / "db")!r}, ray=True)
        except FailedPreconditionError as exc:
            print("engine refused:", exc)
        with shardwalk.Engine.open({str(tmp_path / "db")!r}) as engine:  # not left locked
            assert len(engine.collection("c")) == 600
        assert not [m for m in sys.modules if m == "ray" or m.startswith("ray.")]
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "refused: this job runs on Ray, which is not installed" in done.stdout
    assert "pip install 'shardwalk[ray]'" in done.stdout
    assert "engine refused: Engine.open(ray=...) needs Ray" in done.stdout

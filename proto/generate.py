"""Regenerate the Python code of the gRPC service from proto/shardwalk/v1/*.proto.

    python proto/generate.py            # write shardwalk/v1/*_pb2*.py(i)
    python proto/generate.py --check    # exit 1 if the committed code differs from a fresh run

The generators are pinned (the same .proto gives byte-identical code only with the same
versions): grpcio-tools (bundles protoc and the protobuf runtime version the code asks for) and
mypy-protobuf (the .pyi stubs). `pip install -e '.[test]'` installs exactly these.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "proto"
TARGET = ROOT / "shardwalk" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def check_versions() -> None:
    for package, version in PINNED.items():
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != version:
            sys.exit(
                f"{package} {version} is required to generate the gRPC code, found {found}; "
                f"run: pip install '{package}=={version}' (or pip install -e '.[test]')"
            )


def generate(out: Path) -> list[Path]:
    """Run protoc over every .proto into ``out``; returns the generated files (relative)."""
    protos = sorted(p.relative_to(SOURCES) for p in SOURCES.rglob("*.proto"))
    bindir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{SOURCES}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *map(str, protos),
    ]
    subprocess.run(command, check=True, cwd=SOURCES)
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.name.endswith(GENERATED))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    check_versions()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(
            p.relative_to(ROOT) for p in TARGET.iterdir() if p.name.endswith(GENERATED)
        )
        if args.check:
            differ = [
                str(p)
                for p in fresh
                if not (ROOT / p).exists() or not filecmp.cmp(Path(tmp) / p, ROOT / p, False)
            ] + [str(p) for p in committed if p not in fresh]
            if differ:
                print("generated code is out of date: " + ", ".join(differ), file=sys.stderr)
                print("run: python proto/generate.py", file=sys.stderr)
                return 1
            return 0
        for p in committed:
            if p not in fresh:
                os.remove(ROOT / p)
        for p in fresh:
            shutil.copyfile(Path(tmp) / p, ROOT / p)
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

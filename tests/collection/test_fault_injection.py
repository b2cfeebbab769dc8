"""ENOSPC and EIO at every write and fsync site of a scenario that touches every kind of
storage file (collection logs and snapshots, spann posting files, graph logs, CSR and
fingerprint generations, the manifest), through the fault-injecting file system
(tests/faultfs.py). The sites are enumerated by counting the calls of a reference run; by
default an evenly spread sample of them fails in turn (SHARDWALK_FAULT_SITES=all: every one)."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shardwalk import _fs
from shardwalk.errors import (
    FailedPreconditionError,
    OutcomeUnknownError,
    ResourceExhaustedError,
    ShardwalkError,
)
from tests.collection.test_power_loss import World
from tests.faultfs import FaultFS

SAMPLE = 8  # sites per kind in the default suite


def _scenario(world: World) -> None:
    world.upsert("h", list(range(20)), 1)
    world.flush()
    world.upsert("h", list(range(10, 30)), 2)
    world.delete("h", [0, 1, 2])
    world.upsert("s", list(range(24)), 3)
    world.add_edges([(2, 3), (3, 4)])
    world.flush()
    world.compact_graph()
    world.compact("h")
    world.upsert("h", list(range(30, 40)), 4)


def _sites(tmp_path: Path) -> dict[str, int]:
    """How many writes and fsyncs the scenario makes (a reference run)."""
    fs = FaultFS(tmp_path / "reference")
    with _fs.use(fs):
        world = World(fs)
        before = dict(fs.ops)
        _scenario(world)
        sites = {k: fs.ops[k] - before.get(k, 0) for k in ("write", "fsync")}
        world.engine.close()
    return sites


def _works_on(world: World, *, checkpoint: bool = False) -> None:
    world.upsert("h", [150, 151], 7)
    world.upsert("s", [150], 8)
    world.add_edges([(20, 21)])
    if checkpoint:
        world.flush()


def _pick(n: int) -> list[int]:
    if os.environ.get("SHARDWALK_FAULT_SITES") == "all":
        return list(range(1, n + 1))
    return sorted(set(np.linspace(1, n, num=min(n, SAMPLE), dtype=int).tolist()))


@pytest.mark.parametrize("kind,code", [("write", "ENOSPC"), ("fsync", "EIO"), ("write", "EIO")])
def test_every_write_and_fsync_site_fails_cleanly(tmp_path, kind, code):
    """The failed call raises a clear error: no space is ResourceExhaustedError and the
    engine works on (the log append was cut back); an I/O error (or any failed fsync) is
    FailedPreconditionError and the engine is read-only until reopened. Either way, after a
    power cut and a reopen every acknowledged write is there, the failed one whole or not at
    all."""
    outcomes: Counter[str] = Counter()
    sites = _sites(tmp_path)[kind]
    assert sites > 10
    number = getattr(errno, code)
    for n in _pick(sites):
        fs = FaultFS(tmp_path / f"{kind}-{code}-{n}")
        with _fs.use(fs):
            world = World(fs)
            fs.fail(kind, n, number)
            error = None
            try:
                _scenario(world)
            except ShardwalkError as exc:
                error = exc
            if error is not None:
                outcomes[type(error).__name__] += 1
                if isinstance(error, ResourceExhaustedError):
                    assert code == "ENOSPC" and "no space left" in str(error), (n, error)
                    _works_on(world, checkpoint=True)  # space is back: no reopen needed
                elif isinstance(error, OutcomeUnknownError):
                    # a posting-file write of the apply, after the log append: durable
                    assert kind == "write" and "outcome unknown" in str(error), (n, error)
                else:
                    assert isinstance(error, FailedPreconditionError), (n, error)
                    assert "reopen" in str(error)
            world.crash_and_reopen()
            _works_on(world)
            world.crash_and_reopen()
            world.engine.close()
    print(f"{kind} {code}: {dict(outcomes)} ({len(_pick(sites))} of {sites} sites)")
    # no failure is swallowed: each one reached the call that made it
    assert sum(outcomes.values()) == len(_pick(sites)), outcomes

"""One local Ray for the session (2 CPUs, 127.0.0.1 only), and process helpers for the tests
that kill a worker in the middle of a job."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# before ray is imported: a Ray started here binds to 127.0.0.1 (see connect's loopback_only)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    from shardwalk.index.distributed import connect

    if not ray.is_initialized():
        connect(None, 2)
    nodes = ray.nodes()
    assert all(node["NodeManagerAddress"] == "127.0.0.1" for node in nodes), nodes
    yield
    ray.shutdown()


def task_pids(name: str) -> list[int]:
    """Worker processes of this machine running the task ``shardwalk-<name>`` now (Ray titles a
    worker ``ray::<task name>`` while it runs a task)."""
    title = f"ray::shardwalk-{name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(title):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def run_and_kill(job: Callable[[], Any], task: str, *, after: float = 0.3) -> tuple[Any, int]:
    """Run ``job`` in a thread; SIGKILL the first worker seen running ``task`` once it ran
    ``after`` seconds; returns (the job's result, the pid killed)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = job()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = 0
    seen: dict[int, float] = {}
    while thread.is_alive() and not killed:
        now = time.monotonic()
        for pid in task_pids(task):
            if now - seen.setdefault(pid, now) >= after:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.02)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    assert killed, f"no worker ran {task} long enough to be killed"
    return outcome["result"], killed

"""One local Ray for the session (2 CPUs, 127.0.0.1 only), and process helpers for the tests
that kill a worker in the middle of a job."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# before ray is imported: a Ray started here binds to 127.0.0.1 (see connect's loopback_only)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")
# the helpers a test hands to Ray tasks travel by value (the workers need not import tests/)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


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


def _stops_once(where: tuple[str, str], marker: str, address: str, item: Any, **kwargs: Any) -> Any:
    """``step(item, **kwargs)``, ``step`` the function ``where`` names (module, name); in the job's first run of it (the one that creates ``marker``;
    a retry does not), the worker stops right after the step's first file is renamed into
    place (``shardwalk._fs.replace``: the step is part-way through its output), tells the test
    its pid over the Unix socket at ``address`` and waits there to be killed."""
    step = getattr(importlib.import_module(where[0]), where[1])  # the worker's: not wrapped
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return step(item, **kwargs)
    from shardwalk import _fs

    replace = _fs.replace

    def replace_then_wait(src: Any, dst: Any) -> None:
        replace(src, dst)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(address)
            conn.sendall(str(os.getpid()).encode())
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # nothing comes: the test kills this process
        raise RuntimeError("the test closed the socket without killing this worker")

    _fs.replace = replace_then_wait
    return step(item, **kwargs)


def run_and_kill_step(job: Callable[[], Any], module: Any, step: str) -> tuple[Any, int]:
    """Run ``job`` in a thread with ``module.<step>`` (a function the job runs as Ray tasks)
    wrapped so that its first task stops part-way through its output and says so; SIGKILL
    that worker then (no polling, no timing: the task says where it is); returns (the job's
    result, the pid killed). Ray runs the task again on another worker."""
    outcome: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sw-kill-") as tmp:  # short: AF_UNIX paths are
        address = str(Path(tmp) / "s")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen(2)
        original = getattr(module, step)
        where = (module.__name__, step)
        wrapped = functools.partial(_stops_once, where, str(Path(tmp) / "ran"), address)

        def run() -> None:
            try:
                outcome["result"] = job()
            except BaseException as exc:
                outcome["error"] = exc
            finally:  # wakes the accept below if no task ever stopped
                with socket.socket(socket.AF_UNIX) as wake:
                    wake.connect(address)

        setattr(module, step, wrapped)
        try:
            thread = threading.Thread(target=run)
            thread.start()
            conn, _ = listener.accept()
            with conn:
                said = conn.recv(32)
            killed = int(said) if said else 0
            if killed:
                os.kill(killed, signal.SIGKILL)
            thread.join()
        finally:
            setattr(module, step, original)
            listener.close()
    if "error" in outcome:
        raise outcome["error"]
    assert killed, f"no task of {step} stopped to be killed"
    return outcome["result"], killed

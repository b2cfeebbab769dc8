"""A Ray address that does not answer: Engine.open, the batch jobs and `shardwalk serve` give up
after the connect timeout with FAILED_PRECONDITION naming the address, instead of ray.init
retrying for minutes. No Ray cluster is started: the address is probed before ray.init.

Each case runs in a child process with a time limit, so a hang fails the test instead of
stalling the suite (and the child's process group is killed, leaving nothing behind)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

LIMIT = 90  # seconds a child may take (imports included) before the test calls it a hang


@pytest.fixture
def silent_address() -> Iterator[str]:
    """127.0.0.1:PORT where a TCP connection is never accepted: a listener with a backlog of
    one, already taken, so further connections wait for an answer that never comes (as a
    firewalled or unroutable host does)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)  # fills the backlog
    yield f"127.0.0.1:{port}"
    filler.close()
    listener.close()


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group: killed whole if it hangs
    )
    try:
        out, err = child.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"still waiting after {LIMIT} s:\n{out}\n{err[-3000:]}")
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def test_engine_and_jobs_give_up_on_an_unanswered_address(
    tmp_path: Path, silent_address: str
) -> None:
    code = textwrap.dedent(
        f"""
        import threading, time
        import shardwalk, shardwalk.jobs
        from shardwalk.errors import FailedPreconditionError

        data = {str(tmp_path / "db")!r}
        for name, call in [
            ("engine", lambda: shardwalk.Engine.open(data, ray={silent_address!r})),
            ("job", lambda: shardwalk.jobs.build_collection(
                data, "c", data, address={silent_address!r})),
        ]:
            start = time.monotonic()
            try:
                call()
            except FailedPreconditionError as exc:
                print(name, "refused after", round(time.monotonic() - start, 1), "s:", exc)
            else:
                raise SystemExit(name + " joined an address that does not answer")
        import ray
        assert not ray.is_initialized()
        with shardwalk.Engine.open(data) as engine:  # the data directory was not left locked
            assert engine.collections() == []
        assert threading.active_count() == 1, threading.enumerate()
        """
    )
    done = run([sys.executable, "-c", code], {"SHARDWALK_RAY_CONNECT_TIMEOUT": "1.5"})
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["engine", "job"], done.stdout
    for line in lines:
        assert f"the Ray cluster at '{silent_address}' does not answer" in line
        assert "within 1.5 s" in line and "SHARDWALK_RAY_CONNECT_TIMEOUT" in line
        seconds = float(line.split("refused after ")[1].split()[0])
        assert seconds >= 1.4  # it waited for the answer, as long as configured


def test_serve_refuses_an_address_that_does_not_answer(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[[api_keys]]\nkey = "admin-key-0000"\nrole = "admin"\n')
    argv = [sys.executable, "-m", "shardwalk.cli", "serve", "--data", str(tmp_path / "db")]
    argv += ["--create", "--config", str(config), "--port", "0", "--address", "127.0.0.1:1"]
    done = run(argv, {})
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert "the Ray cluster at '127.0.0.1:1' does not answer (Connection refused" in done.stderr
    assert "(FAILED_PRECONDITION)" in done.stderr
    assert "serving" not in done.stdout


def test_a_bad_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from shardwalk.index.distributed import connect_timeout

    from shardwalk.errors import FailedPreconditionError

    assert connect_timeout(None) == 10.0
    assert connect_timeout(0.25) == 0.25
    monkeypatch.setenv("SHARDWALK_RAY_CONNECT_TIMEOUT", "3")
    assert connect_timeout(None) == 3.0
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv("SHARDWALK_RAY_CONNECT_TIMEOUT", bad)
        with pytest.raises(FailedPreconditionError, match="SHARDWALK_RAY_CONNECT_TIMEOUT"):
            connect_timeout(None)

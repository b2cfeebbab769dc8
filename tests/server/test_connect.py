"""The client's connect window (issue 23, item 1): a call made before the server listens waits
for it (up to ``connect_timeout``) instead of failing UNAVAILABLE "Connection refused", as the
README's gRPC block does when pasted as one script (`shardwalk serve ... &` then a query)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from shardwalk.server.app import Server
from shardwalk.server.config import parse_config

import shardwalk
from shardwalk.errors import UnavailableError

from .conftest import ADMIN

CONFIG = {"api_keys": [{"key": ADMIN, "role": "admin"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_later(engine: shardwalk.Engine, port: int, delay: float) -> tuple[threading.Thread, list]:
    """A server on ``port`` that starts ``delay`` seconds from now (in a thread)."""
    started: list[Server] = []

    def run() -> None:
        time.sleep(delay)
        started.append(Server(engine, parse_config(CONFIG), host="127.0.0.1", port=port).start())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started


@pytest.mark.parametrize("model", ["sync", "async"])
def test_a_call_made_before_the_server_listens_waits_for_it(model: str) -> None:
    engine = shardwalk.Engine.memory()
    port = free_port()
    thread, started = start_later(engine, port, 1.5)  # longer than the old retries' ~1.5 s
    address = f"127.0.0.1:{port}"
    try:
        if model == "sync":
            with shardwalk.Client(address, api_key=ADMIN) as client:
                # a write (never retried): it waits for the connection, nothing was sent before
                client.create_collection("docs", dim=4)
                names = client.collections()
        else:

            async def main() -> list[str]:
                async with shardwalk.AsyncClient(address, api_key=ADMIN) as client:
                    await client.create_collection("docs", dim=4)
                    return await client.collections()

            names = asyncio.run(main())
        assert names == ["docs"]
    finally:
        thread.join()
        for server in started:
            server.stop(grace=1)
        engine.close()


@pytest.mark.parametrize("model", ["sync", "async"])
def test_nothing_listening_fails_after_the_window_naming_it(model: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(UnavailableError) as raised:
        if model == "sync":
            shardwalk.Client(address, connect_timeout=0.3, retries=0).collections()
        else:

            async def main() -> None:
                async with shardwalk.AsyncClient(address, connect_timeout=0.3, retries=0) as c:
                    await c.collections()

            asyncio.run(main())
    message = str(raised.value)
    assert f"server {address} unavailable" in message
    assert "waited 0.3 s for it to accept connections" in message
    assert "connect_timeout= waits longer" in message


def test_connect_timeout_is_checked() -> None:
    with pytest.raises(shardwalk.InvalidArgumentError, match="connect_timeout is the seconds"):
        shardwalk.Client("127.0.0.1:1", connect_timeout=-1)


def test_the_readme_block_as_one_script(tmp_path: Path) -> None:
    """`shardwalk serve ... &` and a query right after it, in one shell script."""
    data = tmp_path / "demo"
    with shardwalk.Engine.open(data) as engine:
        docs = engine.create_collection("docs", dim=4, index="flat")
        docs.upsert(
            np.arange(10), np.arange(10, dtype=np.float32)[:, None] * np.ones(4, np.float32)
        )
    (tmp_path / "server.toml").write_text(f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n')
    port = free_port()
    bindir = Path(sys.executable).parent
    script = (
        f"{bindir}/shardwalk serve --data demo --config server.toml --port {port} "
        "--log-level WARNING > serve.log 2>&1 &\n"
        "echo $! > serve.pid\n"
        f"{sys.executable} -c \"import shardwalk; print(shardwalk.Client('127.0.0.1:{port}', "
        f"api_key='{ADMIN}').collection('docs').search([0.1] * 4, k=2).ids.tolist())\"\n"
    )
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    finally:
        pid_file = tmp_path / "serve.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
    assert done.returncode == 0, done.stderr + (tmp_path / "serve.log").read_text()
    assert done.stdout.strip() == "[[0, 1]]"

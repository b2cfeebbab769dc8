"""What the server shows and to whom: error messages without server paths, pids or internal
exception text (the detail is in the server's log), reflection only when configured, metrics on
loopback unless told otherwise, a warning for plaintext off loopback, mutual TLS; one server
per port, and ports in range."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from shardwalk.server.app import AioServer, Server
from shardwalk.server.config import Config, load_config, parse_config

import shardwalk
from shardwalk.errors import UnavailableError

from .conftest import ADMIN, key_of

CONFIG = {"api_keys": [{"key": ADMIN, "role": "admin"}, {"key": key_of("t0"), "tenant": "t0"}]}
REF = re.compile(r"the server logged the details \(ref ([0-9a-f]{8})\)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[shardwalk.Engine, Server]]:
    engine = shardwalk.Engine.open(tmp_path / "data")
    server = Server(engine, parse_config(CONFIG)).start()
    yield engine, server
    server.stop(grace=1)
    with contextlib.suppress(shardwalk.FailedPreconditionError):  # a collection closed by a test
        engine.close()


def client(server: Server, key: str = ADMIN, **options) -> shardwalk.Client:
    options = {"timeout": 20, **options}
    return shardwalk.Client(f"127.0.0.1:{server.port}", api_key=key, **options)


def assert_tells_nothing_internal(message: str, data: Path, *, ref: bool = True) -> str:
    """The message names no path, pid or exception text, and (``ref``) carries a log
    reference."""
    for secret in (str(data), os.path.realpath(data), "pid", "Errno", "Error:", "/"):
        assert secret not in message, message
    found = REF.search(message)
    assert found or not ref, message
    return found.group(1) if found else ""


# -- item 7: error messages --------------------------------------------------------------------
def test_corruption_is_reported_without_the_path_which_goes_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    with shardwalk.Engine.open(data) as engine:
        engine.create_collection("docs", dim=4, index="flat")
        engine.collection("docs").upsert(np.arange(50), np.ones((50, 4)), tenants="t0")
        engine.flush()
    snapshot = sorted(
        p
        for p in (data / "collections").rglob("*")
        if p.is_file() and p.stat().st_size > 64 and p.suffix != ".json" and "wal" not in p.name
    )[0]
    raw = bytearray(snapshot.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, wrong checksum
    snapshot.write_bytes(bytes(raw))

    engine = shardwalk.Engine.open(data)  # collections load on first use
    server = Server(engine, parse_config(CONFIG)).start()
    try:
        with pytest.raises(shardwalk.CorruptionError) as embedded_style:
            engine.collection("docs")  # the library keeps its detail for embedded users
        assert str(snapshot) in str(embedded_style.value)
        with pytest.raises(shardwalk.CorruptionError) as operator:
            client(server, ADMIN).collection("docs").search(np.ones((1, 4)))
        assert str(operator.value) == str(embedded_style.value)  # an admin key: the operator's
        for key in (key_of("t0"),):
            with caplog.at_level(logging.WARNING, logger="shardwalk.server"):
                with pytest.raises(shardwalk.CorruptionError) as remote:
                    client(server, key).collection("docs").search(np.ones((1, 4)))
            ref = assert_tells_nothing_internal(str(remote.value), data)
            assert str(remote.value).startswith("Search failed: stored data on the server")
            logged = [r for r in caplog.records if f"ref {ref}" in r.getMessage()]
            assert logged and str(snapshot) in logged[0].getMessage()
    finally:
        server.stop(grace=1)
        engine.close()


def test_a_failed_write_tells_the_client_nothing_internal(
    served: tuple[shardwalk.Engine, Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, server = served
    admin = client(server)
    admin.create_collection("docs", dim=4, index="flat")
    admin.collection("docs").upsert([1, 2], np.ones((2, 4)), tenants="t0")
    wal = engine.collection("docs")._wal
    where = str(wal.path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)

    monkeypatch.setattr(wal, "append_encoded", full_disk)
    tenant = client(server, key_of("t0")).collection("docs")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(shardwalk.ShardwalkError) as failed:
            tenant.upsert([3], np.ones((1, 4)))
        # the collection keeps the OSError out of its message (chained, and logged): the
        # message is sent as it is, and the server's log has the detail
        assert_tells_nothing_internal(str(failed.value), tmp_path, ref=False)
        assert str(failed.value) == "collection 'docs' stopped at a failed write; reopen the engine"
        assert [r for r in caplog.records if r.exc_info and where in str(r.exc_info[1])]
        with pytest.raises(shardwalk.ShardwalkError) as closed:
            tenant.search(np.ones((1, 4)))
        assert_tells_nothing_internal(str(closed.value), tmp_path, ref=False)
    # a message with nothing internal is sent as the library wrote it
    with pytest.raises(shardwalk.NotFoundError) as here:
        engine.collection("nope")
    with pytest.raises(shardwalk.NotFoundError) as there:
        admin.collection("nope").search(np.ones((1, 4)))
    assert str(there.value) == str(here.value)


def test_a_lock_error_naming_the_directory_and_pid_stays_in_the_log(
    served: tuple[shardwalk.Engine, Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A data directory locked by another process: the library's error names the directory
    and the holder's pid; a handler that meets it tells the tenant neither."""
    engine, server = served
    other = tmp_path / "other"
    other.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(other / "LOCK")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(shardwalk.FailedPreconditionError) as locked:
            shardwalk.Engine.open(other)
        detail = str(locked.value)
        assert f"pid {holder.pid}" in detail and str(other) in detail

        def blocked(name):
            raise locked.value

        monkeypatch.setattr(engine, "collection", blocked)
        with caplog.at_level(logging.WARNING, logger="shardwalk.server"):
            with pytest.raises(shardwalk.FailedPreconditionError) as remote:
                client(server, key_of("t0")).collection("docs").search(np.ones((1, 4)))
        ref = assert_tells_nothing_internal(str(remote.value), other)
        assert str(holder.pid) not in str(remote.value)
        assert any(
            f"ref {ref}" in r.getMessage() and detail in r.getMessage() for r in caplog.records
        )
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+b")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.truncate(0); f.write(f"{os.getpid()}\\n".encode()); f.flush()
print("locked", flush=True)
time.sleep(120)
"""


# -- item 7: reflection, metrics, plaintext, mutual TLS ----------------------------------------
def _reflected_services(port: int) -> set[str] | grpc.StatusCode:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            answers = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        except grpc.RpcError as exc:
            return exc.code()
    return {s.name for a in answers for s in a.list_services_response.service}


@pytest.mark.parametrize("kind", [Server, AioServer])
def test_reflection_only_when_configured(kind: type) -> None:
    engine = shardwalk.Engine.memory()
    off = kind(engine, parse_config(CONFIG)).start()
    on = kind(engine, parse_config({**CONFIG, "server": {"reflection": True}})).start()
    try:
        assert _reflected_services(off.port) == grpc.StatusCode.UNIMPLEMENTED
        assert "shardwalk.v1.Shardwalk" in _reflected_services(on.port)
    finally:
        off.stop(grace=1)
        on.stop(grace=1)
    with pytest.raises(shardwalk.InvalidArgumentError, match=r"\[server\] reflection must be"):
        parse_config({**CONFIG, "server": {"reflection": "yes"}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_listen_on_loopback_unless_configured(tmp_path: Path) -> None:
    """`serve --host 127.0.0.2`: gRPC there, the metrics on 127.0.0.1 (they have no API key)."""
    config = tmp_path / "server.toml"
    config.write_text(f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n')
    metrics = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shardwalk.cli", "serve", "--data", str(tmp_path / "data"),
         "--create", "--config", str(config), "--host", "127.0.0.2", "--port", "0",
         "--metrics-port", str(metrics), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "on 127.0.0.2:" in line, line + process.stderr.read()
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        assert b"shardwalk_requests" in body
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", metrics), timeout=5).close()
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_plaintext_off_loopback_warns() -> None:
    from shardwalk.server.app import plaintext_warning

    plain = parse_config(CONFIG)
    for host in ("0.0.0.0", "::", "10.1.2.3", "[2001:db8::1]", "example.com"):
        warning = plaintext_warning(plain, host, 50051)
        assert warning is not None and "plaintext" in warning and "[tls]" in warning
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert plaintext_warning(plain, host, 50051) is None
    tls = Config(keys=plain.keys, tls_cert=b"x", tls_key=b"y")
    assert plaintext_warning(tls, "0.0.0.0", 50051) is None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(where: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and two client
    certificates: one the CA signed, one self-signed."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=where)  # fmt: skip
    (where / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (where / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=where)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=where)  # fmt: skip
    _openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=stranger",
             "-keyout", "stranger.key", "-out", "stranger.crt", cwd=where)  # fmt: skip


@pytest.mark.parametrize("kind", [Server, AioServer])
def test_mutual_tls(tmp_path: Path, kind: type) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    _certificates(tmp_path)
    (tmp_path / "server.toml").write_text(
        f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n\n'
        '[tls]\ncert = "server.crt"\nkey = "server.key"\nclient_ca = "ca.crt"\n'
    )
    pem = {p.name: p.read_bytes() for p in tmp_path.glob("*.*")}
    engine = shardwalk.Engine.memory()
    server = kind(engine, load_config(tmp_path / "server.toml")).start()
    try:
        options = dict(tls=pem["ca.crt"], timeout=5, retries=0)
        with client(
            server, **options, client_cert=pem["client.crt"], client_key=pem["client.key"]
        ) as ok:
            assert ok.collections() == []

        async def asynchronous() -> list[str]:
            async with shardwalk.AsyncClient(
                f"127.0.0.1:{server.port}",
                api_key=ADMIN,
                **options,
                client_cert=pem["client.crt"],
                client_key=pem["client.key"],
            ) as aio:
                return await aio.collections()

        assert asyncio.run(asynchronous()) == []
        # a refused handshake fails only once the client's connect window has passed
        wait = {"connect_timeout": 1}
        for refused in (
            client(server, **options, **wait),  # no client certificate
            client(
                server,
                **options,
                **wait,
                client_cert=pem["stranger.crt"],
                client_key=pem["stranger.key"],
            ),
            client(server, timeout=5, retries=0, **wait),  # plaintext
        ):
            with pytest.raises(UnavailableError):
                refused.collections()
            refused.close()
    finally:
        server.stop(grace=1)
    with pytest.raises(shardwalk.InvalidArgumentError, match="both client_cert and client_key"):
        shardwalk.Client("127.0.0.1:1", tls=True, client_cert=pem["client.crt"])
    with pytest.raises(shardwalk.InvalidArgumentError, match="are for mutual TLS"):
        shardwalk.Client("127.0.0.1:1", client_cert=pem["client.crt"], client_key=pem["client.key"])
    (tmp_path / "bad.toml").write_text(
        f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n\n[tls]\nclient_ca = "ca.crt"\n'
    )
    with pytest.raises(shardwalk.InvalidArgumentError, match=r"\[tls\] needs both cert and key"):
        load_config(tmp_path / "bad.toml")


# -- item 8: one server per port, ports in range -------------------------------------------------
@pytest.mark.parametrize("first", [Server, AioServer])
@pytest.mark.parametrize("second", [Server, AioServer])
def test_a_second_server_on_a_taken_port_fails_at_start(first: type, second: type) -> None:
    engine = shardwalk.Engine.memory()
    running = first(engine, parse_config(CONFIG)).start()
    try:
        with pytest.raises(shardwalk.FailedPreconditionError) as taken:
            second(engine, parse_config(CONFIG), port=running.port)
        message = str(taken.value)
        assert (
            f"cannot listen on 127.0.0.1:{running.port}: port {running.port} is in use" in message
        )
        assert "--port" in message
        with client(running) as still:  # the first one serves on
            assert still.collections() == []
    finally:
        running.stop(grace=1)


@pytest.mark.parametrize("kind", [Server, AioServer])
@pytest.mark.parametrize("port", [99999, 65536, -1])
def test_ports_out_of_range_are_refused(kind: type, port: int) -> None:
    with pytest.raises(shardwalk.InvalidArgumentError, match="from 0 to 65535"):
        kind(shardwalk.Engine.memory(), parse_config(CONFIG), port=port)


def test_the_cli_refuses_a_port_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n')
    serve = ["serve", "--data", str(tmp_path / "d"), "--config", str(config)]
    try:  # as a process: it exits at once (before, it served on a random port)
        done = subprocess.run(
            [sys.executable, "-m", "shardwalk.cli", *serve, "--port", "99999"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("serve --port 99999 started instead of refusing")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "argument --port: expected a port from 0 to 65535 (0 picks a free one)" in done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was opened
    from shardwalk.cli import build_parser

    for flag, value in [("--metrics-port", "65536"), ("--port", "-1"), ("--port", "http")]:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*serve, flag, value])
        assert exited.value.code == 2
        assert f"argument {flag}: expected a port" in capsys.readouterr().err

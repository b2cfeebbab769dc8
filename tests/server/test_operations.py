"""What an operator sees (issue 23, item 7): v1 reflection besides v1alpha, the latency
histogram by status code, failed calls logged with their error, the start-up line naming the
metrics endpoint, and distinct names for the two thread settings."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from shardwalk.server.config import parse_config

import shardwalk

from .conftest import ADMIN, start


@pytest.mark.parametrize("model", ["sync", "aio"])
def test_reflection_v1_and_v1alpha(model: str) -> None:
    engine = shardwalk.Engine.memory()
    server = start(engine, model=model)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            for version in ("v1", "v1alpha"):
                # the same messages, field for field, in both versions of the protocol
                info = channel.stream_stream(
                    f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
                )
                asks = [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="shardwalk.v1.Shardwalk"
                    ),
                ]
                listed, found = list(info(iter(asks), timeout=10))
                names = {s.name for s in listed.list_services_response.service}
                assert {
                    "shardwalk.v1.Shardwalk",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                } <= names, version
                assert found.file_descriptor_response.file_descriptor_proto, version
    finally:
        server.stop(grace=1)
        engine.close()


def test_failed_calls_are_counted_by_code_and_logged_with_their_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = shardwalk.Engine.memory()
    server = start(engine)
    try:
        client = shardwalk.Client(f"127.0.0.1:{server.port}", api_key=ADMIN)
        with caplog.at_level(logging.INFO, logger="shardwalk.server"):
            with pytest.raises(shardwalk.NotFoundError):
                client.collection("nope").search([[0.0, 1.0]], k=1)
            assert client.collections() == []
        client.close()
        failed = server.registry.get_sample_value(
            "shardwalk_request_seconds_count",
            {"rpc": "Search", "tenant": "admin", "code": "NOT_FOUND"},
        )
        ok = server.registry.get_sample_value(
            "shardwalk_request_seconds_count",
            {"rpc": "ListCollections", "tenant": "admin", "code": "OK"},
        )
        assert failed == 1 and ok == 1
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rpc=")]
        assert len(lines) == 1, lines  # the successful call logs at DEBUG only
        assert re.fullmatch(
            r'rpc=Search tenant=admin status=NOT_FOUND ms=[\d.]+ error="no collection .*nope.*"',
            lines[0],
        ), lines[0]
    finally:
        server.stop(grace=1)
        engine.close()


def test_limits_threads_is_now_rpc_threads(caplog: pytest.LogCaptureFixture) -> None:
    keys = [{"key": ADMIN, "role": "admin"}]
    assert parse_config({"api_keys": keys, "limits": {"rpc_threads": 3}}).limits.rpc_threads == 3
    with caplog.at_level(logging.WARNING, logger="shardwalk.server"):
        old = parse_config({"api_keys": keys, "limits": {"threads": 5}})
    assert old.limits.rpc_threads == 5
    assert any("[limits] threads is deprecated: it is now rpc_threads" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    with pytest.raises(shardwalk.InvalidArgumentError, match="old name of rpc_threads"):
        parse_config({"api_keys": keys, "limits": {"threads": 5, "rpc_threads": 3}})


def test_start_up_line_names_the_metrics_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[[api_keys]]\nkey = "{ADMIN}"\nrole = "admin"\n')
    argv = [sys.executable, "-m", "shardwalk.cli", "serve", "--data", str(tmp_path / "d")]
    argv += ["--create", "--config", str(config), "--port", "0", "--log-level", "WARNING"]
    process = subprocess.Popen(
        [*argv, "--metrics-port", "0", "--threads", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        found = re.search(r"Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)$", line)
        assert found and re.search(r"on 127\.0\.0\.1:\d+ \(plaintext\)", line), line
        body = urllib.request.urlopen(found.group(1), timeout=10).read()
        assert b"shardwalk_request_seconds" in body
    finally:
        process.terminate()
        process.wait(timeout=60)
    err = process.stderr.read()
    assert "--threads is deprecated: it is now --engine-threads" in err
